"""Binding a phone (SPEC 10.2, 8), end to end over HTTP: ``change_phone``, written in
flows.yaml from building blocks only (flows/profile.py, flows/phones.py, flows/sms.py).

People are inserted through the Accounts port and sign in with ``personal_login``, as a
browser does; a second browser of the same person holds a session of its own.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from engine import ActionInput, ValidationFailed
from flows.pii import MOBILE
from tests.flows.test_verification import new_organisation
from tests.platform import PASSWORD, Platform, new_login_name, new_mobile
from web import keys

FLOW = "change_phone"


def masked(phone: str) -> str:
    return f"{phone[:3]}****{phone[-4:]}"


async def new_account(p: Platform, *, kind: str = "personal",
                      phone: str | None = None) -> dict[str, Any]:
    """An account of ``kind`` (with ``phone``, if any), written as registration writes one."""
    s = p.app[keys.SERVICES]
    account_id, login = str(uuid.uuid4()), new_login_name()
    write = s.accounts.create_person(
        account_id=account_id, kind=kind, login_name=login, display_name="赵六",
        password_hash=await s.hasher.hash(PASSWORD), id_number_sealed=None,
        id_number_index=None,
        phone_sealed=s.vault.seal(MOBILE, phone) if phone else None,
        phone_index=s.vault.index(MOBILE, phone) if phone else None,
        must_change_password=False, now=p.app[keys.CLOCK].now())
    async with p.app[keys.POOL].acquire() as conn:
        await write(conn)
    return {"id": account_id, "login": login, "phone": phone}


async def sign_in(p: Platform, identifier: str, password: str = PASSWORD) -> int:
    """Sign in with personal_login in this platform's browser; the answer's status."""
    iid = (await p.start("personal_login"))["id"]
    status, view = await p.step(iid, "submit", {"identifier": identifier, "password": password,
                                                "captcha": await p.captcha(iid)})
    assert status != 200 or view["state"] == "signed_in", view
    return status


@contextlib.asynccontextmanager
async def second_browser(p: Platform) -> AsyncIterator[Platform]:
    """The same server through another browser: cookies (a session, a device) of its own."""
    async with p.another_browser() as client:
        yield Platform(client, p.app)


async def signed_in_as(p: Platform) -> bool:
    return (await p.client.get("/api/session")).status == 200


async def start(p: Platform) -> dict[str, Any]:
    view = await p.start(FLOW)
    assert view["state"] == "overview"
    return view


async def to_verify_new(p: Platform, current: str) -> str:
    """Start change_phone and prove the current number; the instance id."""
    view = await start(p)
    iid = str(view["id"])
    await p.ok(iid, "next")
    await p.ok(iid, "send_code")
    code = await p.sms_code(current)
    assert (await p.ok(iid, "next", {"sms_code": code}))["state"] == "verify_new"
    return iid


async def prove_new(p: Platform, iid: str, phone: str) -> tuple[int, dict[str, Any]]:
    await p.ok(iid, "send_code", {"mobile": phone})
    return await p.step(iid, "submit", {"mobile": phone, "sms_code": await p.sms_code(phone)})


async def account_row(pool: asyncpg.Pool, account_id: str) -> asyncpg.Record:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM accounts WHERE id = $1", uuid.UUID(account_id))
    assert row is not None
    return row


async def test_a_person_proves_both_numbers_and_the_new_one_signs_in_and_resets(
        platform: Platform, pool: asyncpg.Pool) -> None:
    old, new = new_mobile(), new_mobile()
    person = await new_account(platform, phone=old)
    assert await sign_in(platform, person["login"]) == 200
    async with second_browser(platform) as other:
        assert await sign_in(other, old) == 200
        view = await start(platform)
        iid = view["id"]
        assert view["ui"]["data"] == {"mobile": masked(old)}
        view = await platform.ok(iid, "next")
        assert view["state"] == "verify_current"
        current = next(f for f in view["ui"]["fields"] if f["name"] == "current_mobile")
        assert (current["value"], current["locked"]) == (masked(old), True)
        # The code goes to the account's own number; the client never sends it.
        view = await platform.ok(iid, "send_code")
        assert view["ui"]["data"]["sent_to"] == masked(old)
        code = await platform.sms_code(old)
        assert code is not None
        status, body = await platform.step(iid, "next", {"sms_code": "000000" if code != "000000"
                                                         else "111111"})
        assert (status, body["errors"][0]["field"], body["errors"][0]["error_id"]) == (
            422, "sms_code", "sms_code_wrong")
        view = await platform.ok(iid, "next", {"sms_code": code})
        assert view["state"] == "verify_new"
        # The current number is shown masked in the new number's place: not the same field.
        assert next(f for f in view["ui"]["fields"] if f["name"] == "mobile")["value"] is None
        status, body = await prove_new(platform, iid, new)
        assert status == 200, body
        assert body["state"] == "done"
        assert body["ui"]["data"] == {"mobile": masked(new)}
        # Every other session of the account ended; this browser's goes on.
        assert await signed_in_as(platform)
        assert not await signed_in_as(other)
        assert await sign_in(other, new) == 200
        assert await sign_in(other, old) == 422
    row = await account_row(pool, person["id"])
    vault = platform.app[keys.SERVICES].vault
    assert row["phone_index"] == vault.index(MOBILE, new)
    assert vault.open(MOBILE, row["phone_sealed"]) == new
    async with pool.acquire() as conn:
        audit = await conn.fetchrow("SELECT * FROM audit_log WHERE target = $1",
                                    f"account:{person['id']}")
    assert audit["action"] == "change_phone"
    assert audit["actor"] == f"account:{person['id']}"
    assert audit["details"] == {"from": masked(old), "to": masked(new),
                                            "instance_id": iid}
    history = await (await platform.client.get(f"/api/flows/{iid}/history")).text()
    assert old not in history
    assert new not in history
    # The new number resets the password; the old one gets a code that is never sent.
    reset = (await platform.start("personal_password_reset"))["id"]
    await platform.ok(reset, "send_code", {"mobile": new})
    assert await platform.sms_code(new) is not None
    stale = (await platform.start("personal_password_reset"))["id"]
    before = await platform.sms_code(old)
    await platform.ok(stale, "send_code", {"mobile": old})
    assert await platform.sms_code(old) == before


async def test_another_accounts_number_is_told_only_once_its_code_proves_it(
        platform: Platform) -> None:
    mine, theirs = new_mobile(), new_mobile()
    person = await new_account(platform, phone=mine)
    await new_account(platform, phone=theirs)
    await sign_in(platform, person["login"])
    iid = await to_verify_new(platform, mine)
    await platform.ok(iid, "send_code", {"mobile": theirs})
    status, body = await platform.step(iid, "send_code", {"mobile": theirs})
    assert (status, body["error_id"]) == (429, "sms_resend_too_soon")
    status, body = await platform.step(iid, "submit", {"mobile": theirs, "sms_code": "12345"})
    assert [e["error_id"] for e in body["errors"]] == ["sms_code_wrong"]
    status, body = await platform.step(iid, "submit", {
        "mobile": theirs, "sms_code": await platform.sms_code(theirs)})
    assert (status, [(e["field"], e["error_id"]) for e in body["errors"]]) == (
        422, [("mobile", "mobile_registered")])
    assert (await platform.get(iid))["state"] == "verify_new"


async def test_the_accounts_own_number_is_no_change(platform: Platform) -> None:
    """(Over HTTP the minute between two codes to one number comes first: the own
    number's code in the new-number step is refused as too soon.)"""
    phone = new_mobile()
    person = await new_account(platform, phone=phone)
    registry = platform.app[keys.REGISTRY]
    a = ActionInput(instance_id=str(uuid.uuid4()), flow="any", seq=2, state="any",
                    trigger="submit", context={}, input={"mobile": phone},
                    now=platform.app[keys.CLOCK].now(),
                    services=platform.app[keys.SERVICES].by_type(),
                    actor=f"account:{person['id']}", action="check_phone_free",
                    params=registry.spec("action", "check_phone_free").resolve({}))
    with pytest.raises(ValidationFailed) as refused:
        await registry.actions["check_phone_free"](a)
    assert [(e.field, e.error_id) for e in refused.value.errors] == [
        ("mobile", "mobile_unchanged")]
    a.actor = "anonymous"  # anybody else is told it is registered
    with pytest.raises(ValidationFailed) as refused:
        await registry.actions["check_phone_free"](a)
    assert [e.error_id for e in refused.value.errors] == ["mobile_registered"]


async def code_sent_to_the_current_number(p: Platform) -> tuple[str, str]:
    """A person signed in, in change_phone, a code sent to the current number: the
    instance id and the number."""
    phone = new_mobile()
    person = await new_account(p, phone=phone)
    await sign_in(p, person["login"])
    iid = str((await start(p))["id"])
    await p.ok(iid, "next")
    await p.ok(iid, "send_code")
    return iid, phone


async def test_the_minute_between_codes_counts_the_current_number_across_instances(
        platform: Platform) -> None:
    """The current number is a locked field, recorded sealed: limits count the number
    itself, not the sealed text (which differs in every instance)."""
    first, phone = await code_sent_to_the_current_number(platform)
    status, body = await platform.step(first, "send_code")
    assert (status, body["error_id"]) == (429, "sms_resend_too_soon")
    second = (await start(platform))["id"]
    await platform.ok(second, "next")
    status, body = await platform.step(second, "send_code")
    assert (status, body["error_id"]) == (429, "sms_resend_too_soon")
    # The minute is per procedure: a reset may send the number a code.
    other = (await platform.start("personal_password_reset"))["id"]
    assert (await platform.step(other, "send_code", {"mobile": phone}))[0] == 200


async def test_five_wrong_codes_for_the_current_number_end_its_proof(
        platform: Platform) -> None:
    iid, phone = await code_sent_to_the_current_number(platform)
    code = await platform.sms_code(phone)
    assert code is not None
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    answers = [(await platform.step(iid, "next", {"sms_code": wrong}))[1]["errors"][0]["error_id"]
               for _ in range(5)]
    assert answers == ["sms_code_wrong"] * 4 + ["sms_code_dead"]
    assert (await platform.step(iid, "next", {"sms_code": code}))[1]["errors"][0][
        "error_id"] == "sms_code_dead"
    assert (await platform.get(iid))["state"] == "verify_current"


async def test_a_supervisor_without_a_phone_binds_one_then_signs_in_and_resets_with_it(
        platform: Platform, pool: asyncpg.Pool) -> None:
    supervisor = await new_account(platform, kind="supervisor")
    await sign_in(platform, supervisor["login"])
    view = await start(platform)
    assert view["ui"]["data"] == {"mobile": None}
    view = await platform.ok(view["id"], "next")
    assert view["state"] == "verify_new"  # no current number to prove
    phone = new_mobile()
    status, body = await prove_new(platform, view["id"], phone)
    assert (status, body["state"]) == (200, "done")
    async with pool.acquire() as conn:
        audit = await conn.fetchrow("SELECT details FROM audit_log WHERE target = $1",
                                    f"account:{supervisor['id']}")
    assert audit["details"]["from"] is None
    async with second_browser(platform) as other:
        assert await sign_in(other, phone) == 200
        assert (await (await other.client.get("/api/session")).json())["kind"] == "supervisor"
    reset = (await platform.start("personal_password_reset"))["id"]
    await platform.ok(reset, "send_code", {"mobile": phone})
    code = await platform.sms_code(phone)
    assert (await platform.ok(reset, "submit", {"mobile": phone, "sms_code": code})
            )["state"] == "new_password"


async def test_only_personal_and_supervisor_accounts_may_start_it(platform: Platform) -> None:
    org = await new_organisation(platform)
    resp = await platform.client.post(f"/api/flows/{FLOW}", headers=org.auth)
    assert resp.status == 403
    assert (await resp.json())["error_id"] == "account_kind_not_allowed"
    async with second_browser(platform) as anonymous:
        resp = await anonymous.client.post(f"/api/flows/{FLOW}")
        assert resp.status == 403
