"""The back office, end to end over HTTP (SPEC 8, 9): administrators created with
``flowctl admin create``, signed in with ``admin_login``; every action audited.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from tests.flows.test_verification import (
    Who,
    new_organisation,
    new_person,
    organisation_row,
    sign_in,
)
from tests.platform import PASSWORD, Platform, new_credit_code, new_login_name, new_mobile
from web import keys

_BIN = Path(sys.executable).parent / "flowctl"
FLOWCTL = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "web.cli"]
ROOT = str(Path(__file__).resolve().parents[2])
ADMIN_PASSWORD = "Admin-Secret-42"


async def flowctl(database_url: str, *args: str, stdin: str = "") -> tuple[int, str, str]:
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_FORMAT": "console",
           "ARGON2_MEMORY_KIB": "1024", "ARGON2_TIME_COST": "1"}
    proc = await asyncio.create_subprocess_exec(
        *FLOWCTL, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT)
    out, err = await proc.communicate(stdin.encode())
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def create_admin(database_url: str) -> str:
    login = "admin" + uuid.uuid4().hex[:8]
    code, out, err = await flowctl(database_url, "admin", "create", login, "--name", "运营小王",
                                   "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    assert code == 0, err
    assert login in out
    assert ADMIN_PASSWORD not in out + err
    return login


async def new_admin(p: Platform) -> str:
    """An administrator inserted as ``flowctl admin create`` does (faster than a process)."""
    s = p.app[keys.SERVICES]
    login = "admin" + uuid.uuid4().hex[:8]
    write = s.accounts.create_person(
        account_id=str(uuid.uuid4()), kind="admin", login_name=login, display_name="运营小王",
        password_hash=await s.hasher.hash(ADMIN_PASSWORD), id_number_sealed=None,
        id_number_index=None, phone_sealed=None, phone_index=None,
        must_change_password=False, now=p.app[keys.CLOCK].now())
    async with p.app[keys.POOL].acquire() as conn:
        await write(conn)
    return login


async def admin_sign_in(p: Platform, login: str, password: str = ADMIN_PASSWORD
                        ) -> dict[str, Any]:
    iid = (await p.start("admin_login"))["id"]
    captcha = await p.captcha(iid)
    return await p.ok(iid, "submit", {"login_name": login, "password": password,
                                      "captcha": captcha})


async def person_login(p: Platform, identifier: str, password: str
                       ) -> tuple[int, dict[str, Any]]:
    iid = (await p.start("personal_login"))["id"]
    captcha = await p.captcha(iid)
    return await p.step(iid, "submit", {"identifier": identifier, "password": password,
                                        "captcha": captcha})


async def audit(p: Platform, **params: str) -> list[dict[str, Any]]:
    resp = await p.client.get("/api/admin/audit", params=params)
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["entries"])


async def as_admin(p: Platform) -> str:
    """Create an administrator and sign in with admin_login; return the actor name."""
    login = await new_admin(p)
    view = await admin_sign_in(p, login)
    assert view["state"] == "signed_in"
    me = await (await p.client.get("/api/session")).json()
    assert me["kind"] == "admin"
    assert me["display_name"] == "运营小王"
    return f"admin:{me['account_id']}"


async def test_flowctl_creates_administrators_who_sign_in_to_the_back_office(
        platform: Platform, database_url: str, pool: asyncpg.Pool) -> None:
    login = await create_admin(database_url)
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM accounts WHERE login_name = $1", login)
        logged = await conn.fetchval("SELECT count(*) FROM audit_log WHERE action ="
                                     " 'create_admin' AND target = $1", f"account:{row['id']}")
    assert row["kind"] == "admin"
    assert row["password_hash"].startswith("$argon2id$")
    assert logged == 1
    code, _, err = await flowctl(database_url, "admin", "create", login, "--password-stdin",
                                 stdin=ADMIN_PASSWORD + "\n")
    assert code != 0
    assert "taken" in err
    code, _, err = await flowctl(database_url, "admin", "create", new_login_name(),
                                 "--password-stdin", stdin="short\n")
    assert code == 1
    assert "password" in err

    # Wrong password, or a person's account on the administrators' sign-in: one answer.
    person = await new_person(platform)
    answers = []
    for who, password in ((login, "Wrong-Pass-99"), (person.login_name, PASSWORD)):
        iid = (await platform.start("admin_login"))["id"]
        captcha = await platform.captcha(iid)
        status, answer = await platform.step(iid, "submit", {
            "login_name": who, "password": password, "captcha": captcha})
        assert status == 422
        answers.append(answer["errors"])
    assert answers[0] == answers[1]
    assert answers[0][0]["error_id"] == "login_failed"
    view = await admin_sign_in(platform, login)
    assert view["state"] == "signed_in"
    assert (await (await platform.client.get("/api/session")).json())["kind"] == "admin"
    history = await (await platform.client.get(f"/api/flows/{view['id']}/history")).json()
    assert ADMIN_PASSWORD not in json.dumps(history)


async def test_an_administrator_resets_a_password_that_works_once_and_must_be_changed(
        platform: Platform) -> None:
    person = await new_person(platform)
    actor = await as_admin(platform)
    iid = (await platform.start("admin_reset_password"))["id"]
    status, answer = await platform.step(iid, "submit", {"login_name": "nobody" + uuid.uuid4()
                                                         .hex[:6], "reason": "工单 42"})
    assert status == 422
    assert answer["errors"][0]["error_id"] == "account_not_found"
    status, answer = await platform.step(iid, "submit", {"login_name": person.login_name})
    assert status == 422
    assert answer["errors"][0] == {**answer["errors"][0], "field": "reason",
                                   "error_id": "required"}
    reason = "服务台来电，已线下核验身份证原件；工单 2026-0042"
    resp = await platform.client.post(
        f"/api/flows/{iid}/events/submit", headers={"Idempotency-Key": "reset-" + iid},
        json={"login_name": person.login_name, "reason": reason})
    view = await resp.json()
    assert resp.status == 200, view
    assert view["state"] == "done"
    assert view["ui"]["data"]["must_change_password"] is True
    one_time = view["reply"]["one_time_password"]
    assert len(one_time) >= 12
    # Shown once: the same request again gives the outcome without the password.
    again = await platform.client.post(
        f"/api/flows/{iid}/events/submit", headers={"Idempotency-Key": "reset-" + iid},
        json={"login_name": person.login_name, "reason": reason})
    assert "reply" not in await again.json()
    history = await (await platform.client.get(f"/api/flows/{iid}/history")).json()
    assert one_time not in json.dumps(history, ensure_ascii=False)
    entries = await audit(platform, target=f"account:{person.account_id}")
    assert len(entries) == 1
    entry = entries[0]
    assert (entry["actor"], entry["action"], entry["reason"]) == (actor, "reset_password",
                                                                  reason)
    assert entry["at"].startswith("2026-03-01")
    assert entry["details"]["login_name"] == person.login_name
    assert one_time not in json.dumps(entries, ensure_ascii=False)
    # Who did it to whom, as people know them (one query for the page): the
    # administrator by login name, the person by a masked name and the login name.
    admin = entry["actor_account"]
    assert (admin["id"], admin["kind"]) == (actor.partition(":")[2], "admin")
    assert admin["name"] == admin["login_name"]
    assert entry["target_account"] == {"id": person.account_id, "kind": "personal",
                                       "name": "李*", "login_name": person.login_name}
    assert "李四" not in json.dumps(entries, ensure_ascii=False)
    # The filters take a login name as well as a raw id; a login name of nobody, nothing.
    assert await audit(platform, target=person.login_name) == entries
    by_admin = await audit(platform, actor=admin["login_name"], action="reset_password")
    assert [e["id"] for e in by_admin] == [entry["id"]]
    assert await audit(platform, target="nobody" + uuid.uuid4().hex[:8]) == []
    assert await audit(platform, actor=person.login_name) == []

    # The old password is gone; the one-time one leads to change_password first.
    status, _ = await person_login(platform, person.login_name, PASSWORD)
    assert status == 422
    status, view = await person_login(platform, person.login_name, one_time)
    assert status == 200
    assert view["state"] == "change_password"
    assert "session" not in view.get("reply", {})
    new = "Brand-New-Secret-8"
    done = await platform.ok(view["id"], "submit", {"password": new, "password_confirm": new})
    assert done["state"] == "signed_in"
    assert (await (await platform.client.get("/api/session")).json())["kind"] == "personal"
    status, answer = await person_login(platform, person.login_name, one_time)
    assert status == 422
    assert answer["errors"][0]["error_id"] == "login_failed"
    status, view = await person_login(platform, person.login_name, new)
    assert view["state"] == "signed_in"


async def test_an_administrator_verifies_an_organisation_with_a_reason(
        platform: Platform) -> None:
    org = await new_organisation(platform)
    actor = await as_admin(platform)
    iid = (await platform.start("admin_verify_organisation"))["id"]
    status, answer = await platform.step(iid, "submit", {"credit_code": new_credit_code(),
                                                         "reason": "党政机关，线下核验"})
    assert status == 422
    assert answer["errors"][0]["error_id"] == "organisation_not_found"
    status, answer = await platform.step(iid, "submit", {"credit_code": "91110000ABC",
                                                         "reason": "x"})
    assert answer["errors"][0]["error_id"] == "credit_code_length"
    reason = "党政机关无法对公打款，已核验组织机构代码证原件；工单 7"
    view = await platform.ok(iid, "submit", {"credit_code": org.credit_code, "reason": reason})
    assert view["state"] == "done"
    assert view["ui"]["data"]["status"] == {"zh": "已认证", "en": "Verified"}
    row = await organisation_row(platform, org.account_id)
    assert row["verified"]
    assert row["verified_by"] == actor
    assert row["verification_note"] == reason
    entries = await audit(platform, target=f"organisation:{org.account_id}")
    assert [(e["actor"], e["action"], e["reason"]) for e in entries] == [
        (actor, "verify_organisation", reason)]
    assert entries[0]["target_account"]["kind"] == "organisation"
    assert entries[0]["target_account"]["name"] == (await organisation_row(
        platform, org.account_id))["name"]
    assert entries[0]["target_account"]["login_name"] == org.login_name
    # An organisation's login name finds what was done to it, as either target.
    assert await audit(platform, target=org.login_name) == entries
    again = (await platform.start("admin_verify_organisation"))["id"]
    status, answer = await platform.step(again, "submit", {"credit_code": org.credit_code,
                                                           "reason": reason})
    assert status == 422
    assert answer["errors"][0]["field"] == "credit_code"
    assert answer["errors"][0]["error_id"] == "organisation_already_verified"
    assert len(await audit(platform, target=f"organisation:{org.account_id}")) == 1
    # The organisation sees it: its own verification cannot start any more.
    resp = await platform.client.post("/api/flows/organisation_verification",
                                      headers=org.auth)
    assert resp.status == 409


async def test_an_administrator_creates_a_supervisor_without_a_phone(
        platform: Platform) -> None:
    actor = await as_admin(platform)
    login = new_login_name()
    iid = (await platform.start("admin_create_supervisor"))["id"]
    view = await platform.ok(iid, "submit", {"name": "市监督站", "login_name": login,
                                             "reason": "监督机构申请，函件 12 号"})
    assert view["state"] == "done"
    one_time = view["reply"]["one_time_password"]
    assert view["ui"]["data"]["mobile"] is None
    entries = await audit(platform, action="create_supervisor", actor=actor)
    assert entries[0]["details"]["login_name"] == login
    phone = new_mobile()
    other = (await platform.start("admin_create_supervisor"))["id"]
    status, answer = await platform.step(other, "submit", {
        "name": "审批员", "login_name": login, "mobile": phone, "reason": "x"})
    assert status == 422
    assert answer["errors"][0]["error_id"] == "login_name_taken"
    view = await platform.ok(other, "submit", {"name": "审批员", "login_name": new_login_name(),
                                               "mobile": phone, "reason": "审批人员"})
    assert view["ui"]["data"]["mobile"] == phone[:3] + "****" + phone[-4:]
    history = await (await platform.client.get(f"/api/flows/{other}/history")).json()
    assert phone not in json.dumps(history)
    status, view = await person_login(platform, login, one_time)
    assert status == 200
    assert view["state"] == "change_password"
    done = await platform.ok(view["id"], "submit", {"password": "Watch-Dog-2026",
                                                    "password_confirm": "Watch-Dog-2026"})
    assert done["state"] == "signed_in"
    assert (await (await platform.client.get("/api/session")).json())["kind"] == "supervisor"


async def test_only_administrators_reach_the_back_office(
        platform: Platform) -> None:
    for flow in ("admin_reset_password", "admin_verify_organisation",
                 "admin_create_supervisor"):
        resp = await platform.client.post(f"/api/flows/{flow}")
        assert resp.status == 403, flow
    assert (await platform.client.get("/api/admin/audit")).status == 401
    person = await new_person(platform)
    org: Who = await new_organisation(platform)
    for who in (person, org):
        sign_in(platform, who)
        for flow in ("admin_reset_password", "admin_verify_organisation"):
            resp = await platform.client.post(f"/api/flows/{flow}")
            assert resp.status == 403
            assert (await resp.json())["error_id"] == "forbidden"
        resp = await platform.client.get("/api/admin/audit")
        assert resp.status == 403
        assert (await resp.json())["error_id"] == "admin_only"
    # An administrator's flow is theirs alone, even for another administrator's steps.
    await as_admin(platform)
    iid = (await platform.start("admin_reset_password"))["id"]
    status, _ = await platform.step(iid, "submit", {"login_name": person.login_name,
                                                    "reason": "x"}, headers=person.auth)
    assert status == 403
    resp = await platform.client.get("/api/admin/audit", params={"limit": "0"})
    assert resp.status == 400
    assert not (await organisation_row(platform, org.account_id))["verified"]


async def test_an_administrator_whose_password_was_reset_changes_it_at_sign_in(
        platform: Platform) -> None:
    target = await new_admin(platform)
    await as_admin(platform)
    iid = (await platform.start("admin_reset_password"))["id"]
    view = await platform.ok(iid, "submit", {"login_name": target, "reason": "忘记密码"})
    one_time = view["reply"]["one_time_password"]
    view = await admin_sign_in(platform, target, one_time)
    assert view["state"] == "change_password"
    new = "Fresh-Admin-Pass-3"
    done = await platform.ok(view["id"], "submit", {"password": new, "password_confirm": new})
    assert done["state"] == "signed_in"
    me = await (await platform.client.get("/api/session")).json()
    assert me["kind"] == "admin"
