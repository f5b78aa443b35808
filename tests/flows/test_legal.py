"""Legal-entity registration, sign-in and password reset, end to end over HTTP (SPEC 4, 6, 7)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from tests.platform import (
    PASSWORD,
    WRONG_CAPTCHA,
    Platform,
    new_credit_code,
    new_id_number,
    new_login_name,
    new_mobile,
)
from web import keys

REP_NAME = "张三"
AGENT_NAME = "李四"


def masked_mobile(phone: str) -> str:
    return phone[:3] + "****" + phone[-4:]


def masked_id(id_number: str) -> str:
    return id_number[:3] + "*" * 11 + id_number[-4:]


def errors_of(answer: dict[str, Any]) -> dict[str, str | None]:
    """Error id by field of a 422 answer."""
    return {e["error_id"]: e["field"] for e in answer.get("errors", [])}


def field(view: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in view["ui"]["fields"] if f["name"] == name)


async def history_text(p: Platform, iid: str) -> tuple[str, list[dict[str, Any]]]:
    resp = await p.client.get(f"/api/flows/{iid}/history")
    assert resp.status == 200
    history = await resp.json()
    return json.dumps(history, ensure_ascii=False), history["events"]


def assert_no_secret_recorded(events: list[dict[str, Any]]) -> None:
    for event in events:
        for secret in ("password", "password_confirm", "sms_code", "captcha"):
            assert secret not in event["input"], event


async def basic_info(p: Platform, *, credit_code: str | None = None,
                     rep_id: str | None = None, org_name: str = "示例科技有限公司"
                     ) -> dict[str, Any]:
    """A new registration past basic_info, on the applicant step."""
    credit_code = credit_code or new_credit_code()
    rep_id = rep_id or new_id_number()
    iid = (await p.start("legal_registration"))["id"]
    captcha = await p.captcha(iid)
    view = await p.ok(iid, "submit", {
        "org_name": org_name, "credit_code": credit_code, "legal_rep_name": REP_NAME,
        "legal_rep_id": rep_id, "captcha": captcha, "agree": True})
    assert view["state"] == "applicant"
    return {"id": iid, "credit_code": credit_code, "rep_id": rep_id, "org_name": org_name}


async def to_account_info(p: Platform, *, applicant_type: str = "legal_rep",
                          **kw: Any) -> dict[str, Any]:
    reg = await basic_info(p, **kw)
    view = await p.ok(reg["id"], "submit", {"applicant_type": applicant_type})
    assert view["state"] == "account_info"
    return {**reg, "view": view}


def final_body(reg: dict[str, Any], *, phone: str, code: str | None,
               login: str) -> dict[str, Any]:
    return {"mobile": phone, "sms_code": code, "login_name": login, "password": PASSWORD,
            "password_confirm": PASSWORD}


async def register_org(p: Platform, *, applicant_type: str = "legal_rep",
                       phone: str | None = None, login: str | None = None,
                       applicant: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
    """Register an organisation; the applicant becomes its primary agent."""
    phone = phone or new_mobile()
    login = login or new_login_name()
    reg = await to_account_info(p, applicant_type=applicant_type, **kw)
    await p.ok(reg["id"], "send_code", {"mobile": phone})
    code = await p.sms_code(phone)
    view = await p.ok(reg["id"], "submit", {**final_body(reg, phone=phone, code=code,
                                                         login=login), **(applicant or {})})
    assert view["state"] == "done", view
    return {**reg, "view": view, "phone": phone, "login": login}


async def sign_in(p: Platform, login: str, *, agent: int = 0, password: str = PASSWORD,
                  send: bool = True) -> dict[str, Any]:
    """Sign an organisation in as one of its agents (by position in the list): up to the
    agent check, with the code sent unless ``send`` is false (one a minute per agent)."""
    iid = (await p.start("legal_login"))["id"]
    captcha = await p.captcha(iid)
    view = await p.ok(iid, "submit", {"login_name": login, "password": password,
                                      "captcha": captcha})
    assert view["state"] == "agent_check"
    choice = field(view, "agent")["choices"][agent]
    if send:
        await p.ok(iid, "send_code", {"agent": choice["value"]})
    return {"id": iid, "view": view, "choice": choice}


async def agent_rows(pool: asyncpg.Pool, login: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch(
            "SELECT g.* FROM agents g JOIN accounts a ON a.id = g.organisation_id"
            " WHERE a.login_name = $1 ORDER BY g.is_primary DESC, g.created_at", login))


# -- registration ------------------------------------------------------------------


async def test_the_legal_representative_registers_with_locked_data_and_signs_in(
        platform: Platform, pool: asyncpg.Pool) -> None:
    reg = await to_account_info(platform, applicant_type="legal_rep")
    iid, view = reg["id"], reg["view"]
    name, id_field = field(view, "applicant_name"), field(view, "applicant_id")
    assert name["locked"]
    assert id_field["locked"]
    assert name["value"] == REP_NAME
    assert id_field["value"] == masked_id(reg["rep_id"])
    phone, login = new_mobile(), new_login_name()
    await platform.ok(iid, "send_code", {"mobile": phone})
    code = await platform.sms_code(phone)
    body = final_body(reg, phone=phone, code=code, login=login)
    version = (await platform.get(iid))["version"]
    for change in ({"applicant_name": "王五"}, {"applicant_id": new_id_number()},
                   {"applicant_id": reg["rep_id"][:-1] + "0"}):
        status, answer = await platform.step(iid, "submit", {**body, **change})
        assert status == 422, answer
        assert errors_of(answer) == {"field_locked": next(iter(change))}
    view = await platform.get(iid)
    assert (view["state"], view["version"]) == ("account_info", version)
    # What the form showed, sent back as it was, is no change.
    done = await platform.ok(iid, "submit", {**body, "applicant_name": name["value"],
                                             "applicant_id": id_field["value"]})
    assert done["state"] == "done"
    data = done["ui"]["data"]
    assert data == {"login_name": login, "org_name": reg["org_name"],
                    "credit_code": reg["credit_code"][:2] + "*" * 12
                    + reg["credit_code"][-4:],
                    "mobile": masked_mobile(phone), "verified": False}

    text, events = await history_text(platform, iid)
    for plain in (reg["rep_id"], phone, PASSWORD, code):
        assert plain not in text
    assert_no_secret_recorded(events)
    assert [e["trigger"] for e in events] == ["start", "submit", "submit", "send_code",
                                              "submit"]
    verify = await (await platform.client.get(f"/api/flows/{iid}/verify")).json()
    assert verify["ok"], verify

    async with pool.acquire() as conn:
        org = await conn.fetchrow(
            "SELECT o.*, a.kind, a.password_hash FROM organisations o"
            " JOIN accounts a ON a.id = o.account_id WHERE o.credit_code = $1",
            reg["credit_code"])
    assert org["kind"] == "organisation"
    assert org["verified"] is False
    assert org["name"] == reg["org_name"]
    assert org["legal_rep_name"] == REP_NAME
    assert org["password_hash"].startswith("$argon2id$")
    assert reg["rep_id"].encode() not in org["legal_rep_id_sealed"]
    agents = await agent_rows(pool, login)
    assert [(a["name"], a["is_primary"]) for a in agents] == [(REP_NAME, True)]
    vault = platform.app[keys.SERVICES].vault
    assert agents[0]["id_number_index"] == vault.index("resident_id", reg["rep_id"])
    assert agents[0]["phone_index"] == vault.index("mobile", phone)

    # Sign in: password and captcha, then the agent's SMS code.
    signed = await sign_in(platform, login)
    assert signed["choice"]["label"] == f"{REP_NAME} {masked_mobile(phone)}"
    assert signed["choice"]["value"] == str(agents[0]["id"])
    assert phone not in json.dumps(signed["view"], ensure_ascii=False)
    agent_code = await platform.sms_code(phone)
    assert agent_code != code
    view = await platform.ok(signed["id"], "submit", {"agent": signed["choice"]["value"],
                                                      "sms_code": agent_code})
    assert view["state"] == "signed_in"
    me = await (await platform.client.get("/api/session")).json()
    assert me["kind"] == "organisation"
    assert me["agent_id"] == str(agents[0]["id"])
    assert me["account_id"] == str(org["account_id"])
    text, events = await history_text(platform, signed["id"])
    for plain in (phone, PASSWORD, agent_code):
        assert plain not in text
    assert_no_secret_recorded(events)


async def test_an_authorised_agent_registers_with_their_own_data(
        platform: Platform, pool: asyncpg.Pool) -> None:
    reg = await to_account_info(platform, applicant_type="agent")
    iid, view = reg["id"], reg["view"]
    assert not field(view, "applicant_name")["locked"]
    assert not field(view, "applicant_id")["locked"]
    assert field(view, "applicant_name")["value"] == REP_NAME  # starts from step 1's data
    # Back to the choice and forward again keeps everything.
    assert (await platform.ok(iid, "back"))["state"] == "applicant"
    assert (await platform.ok(iid, "submit", {"applicant_type": "agent"}))["state"] \
        == "account_info"
    phone, login, agent_id = new_mobile(), new_login_name(), new_id_number()
    await platform.ok(iid, "send_code", {"mobile": phone})
    code = await platform.sms_code(phone)
    body = final_body(reg, phone=phone, code=code, login=login)
    status, answer = await platform.step(iid, "submit", {**body, "applicant_name": AGENT_NAME})
    assert status == 422
    assert errors_of(answer) == {"required": "applicant_id"}
    done = await platform.ok(iid, "submit", {**body, "applicant_name": AGENT_NAME,
                                             "applicant_id": agent_id})
    assert done["state"] == "done"
    text, _ = await history_text(platform, iid)
    for plain in (agent_id, reg["rep_id"], phone):
        assert plain not in text
    agents = await agent_rows(pool, login)
    assert [(a["name"], a["is_primary"]) for a in agents] == [(AGENT_NAME, True)]
    vault = platform.app[keys.SERVICES].vault
    assert agents[0]["id_number_index"] == vault.index("resident_id", agent_id)
    async with pool.acquire() as conn:
        rep_index = await conn.fetchval(
            "SELECT legal_rep_id_index FROM organisations WHERE credit_code = $1",
            reg["credit_code"])
    assert rep_index == vault.index("resident_id", reg["rep_id"])


async def test_basic_info_errors_leave_the_step_unchanged(platform: Platform) -> None:
    taken = await register_org(platform)
    iid = (await platform.start("legal_registration"))["id"]
    good = {"org_name": "另一家公司", "credit_code": new_credit_code(),
            "legal_rep_name": REP_NAME, "legal_rep_id": new_id_number(), "captcha": "ABCD",
            "agree": True}
    code = good["credit_code"]
    bad_check = code[:17] + next(c for c in "0123456789ABCDEFGHJKLMNPQRTUWXY" if c != code[17])
    for letter in "IOZSV":
        status, answer = await platform.step(iid, "submit", {
            **good, "credit_code": code[:10] + letter + code[11:]})
        assert status == 422
        assert errors_of(answer) == {"credit_code_charset": "credit_code"}
    for body, error_id, on in [
        ({**good, "credit_code": bad_check}, "credit_code_check", "credit_code"),
        ({**good, "credit_code": code[:17]}, "credit_code_length", "credit_code"),
        ({**good, "legal_rep_id": "36042619910102009X"}, "resident_id_check", "legal_rep_id"),
        ({**good, "agree": False}, "required", "agree"),
        ({**good, "captcha": None}, "required", "captcha"),
    ]:
        status, answer = await platform.step(iid, "submit", body)
        assert status == 422, answer
        assert errors_of(answer) == {error_id: on}, answer
    # No captcha fetched: expired.
    status, answer = await platform.step(iid, "submit", good)
    assert errors_of(answer) == {"captcha_expired": "captcha"}
    # A wrong answer uses the image up.
    await platform.captcha(iid)
    status, answer = await platform.step(iid, "submit", {**good, "captcha": WRONG_CAPTCHA})
    assert errors_of(answer) == {"captcha_wrong": "captcha"}
    status, answer = await platform.step(iid, "submit", good)
    assert errors_of(answer) == {"captcha_expired": "captcha"}
    # A credit code already registered, with a right captcha.
    good["captcha"] = await platform.captcha(iid)
    status, answer = await platform.step(iid, "submit", {
        **good, "credit_code": taken["credit_code"].lower()})
    assert status == 422
    assert errors_of(answer) == {"credit_code_registered": "credit_code"}
    error = answer["errors"][0]
    assert error["zh"] == "该统一社会信用代码已注册"
    assert "already registered" in error["en"]
    # That used the captcha: reusing it is refused.
    status, answer = await platform.step(iid, "submit", good)
    assert errors_of(answer) == {"captcha_expired": "captcha"}
    view = await platform.get(iid)
    assert (view["state"], view["version"]) == ("basic_info", 1)
    # The code, a fresh image: on.
    good["captcha"] = await platform.captcha(iid)
    assert (await platform.ok(iid, "submit", good))["state"] == "applicant"


async def test_a_credit_code_registered_meanwhile_is_refused_at_the_last_step(
        platform: Platform, pool: asyncpg.Pool) -> None:
    credit_code = new_credit_code()
    late = await to_account_info(platform, credit_code=credit_code)
    await register_org(platform, credit_code=credit_code)
    phone, login = new_mobile(), new_login_name()
    await platform.ok(late["id"], "send_code", {"mobile": phone})
    code = await platform.sms_code(phone)
    status, answer = await platform.step(
        late["id"], "submit", final_body(late, phone=phone, code=code, login=login))
    assert status == 422
    assert errors_of(answer) == {"credit_code_registered": "credit_code"}
    view = await platform.get(late["id"])
    assert view["state"] == "account_info"
    assert await agent_rows(pool, login) == []


@pytest.mark.parametrize("checked_first", [True, False],
                         ids=["natural-race", "both-past-the-checks"])
async def test_two_registrations_of_one_credit_code_racing_make_one_organisation(
        platform: Platform, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch,
        checked_first: bool) -> None:
    credit_code = new_credit_code()
    racers = [await to_account_info(platform, credit_code=credit_code) for _ in range(2)]
    bodies = []
    for racer in racers:
        phone, login = new_mobile(), new_login_name()
        await platform.ok(racer["id"], "send_code", {"mobile": phone})
        bodies.append(final_body(racer, phone=phone, code=await platform.sms_code(phone),
                                 login=login))
    if not checked_first:
        # Both pass the look-up before either commits: only the unique key decides.
        accounts = platform.app[keys.SERVICES].accounts

        async def never_registered(_: str) -> bool:
            return False

        monkeypatch.setattr(accounts, "credit_code_registered", never_registered)
    answers = await asyncio.gather(*(platform.step(r["id"], "submit", b)
                                     for r, b in zip(racers, bodies, strict=True)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200, 422], answers
    winner, loser = (0, 1) if answers[0][0] == 200 else (1, 0)
    assert errors_of(answers[loser][1]) == {"credit_code_registered": "credit_code"}
    assert (await platform.get(racers[loser]["id"]))["state"] == "account_info"
    assert (await platform.get(racers[winner]["id"]))["state"] == "done"
    async with pool.acquire() as conn:
        count = await conn.fetchval(
            "SELECT count(*) FROM organisations WHERE credit_code = $1", credit_code)
        stray = await conn.fetchval("SELECT count(*) FROM accounts WHERE login_name = $1",
                                    bodies[loser]["login_name"])
    assert (count, stray) == (1, 0)


async def test_sms_code_errors_at_registration(platform: Platform) -> None:
    other = await register_org(platform)
    reg = await to_account_info(platform)
    iid = reg["id"]
    # A code sent for another purpose (an agent's password reset) does not pass here.
    reset = (await platform.start("legal_password_reset"))["id"]
    await platform.ok(reset, "send_code", {"mobile": other["phone"]})
    foreign = await platform.sms_code(other["phone"])
    body = final_body(reg, phone=other["phone"], code=foreign, login=new_login_name())
    status, answer = await platform.step(iid, "submit", body)
    assert status == 422
    assert errors_of(answer) == {"sms_code_expired": "sms_code"}
    phone = new_mobile()
    body = {**body, "mobile": phone}
    await platform.ok(iid, "send_code", {"mobile": phone})
    status, answer = await platform.step(iid, "send_code", {"mobile": phone})
    assert status == 429
    assert answer["error_id"] == "sms_resend_too_soon"
    code = await platform.sms_code(phone)
    assert code != foreign
    wrong = next(c for c in ("000000", "111111") if c != code)
    for n in range(1, 6):
        status, answer = await platform.step(iid, "submit", {**body, "sms_code": wrong})
        assert status == 422
        assert errors_of(answer) == {
            "sms_code_wrong" if n < 5 else "sms_code_dead": "sms_code"}, n
    status, answer = await platform.step(iid, "submit", {**body, "sms_code": code})
    assert status == 422
    assert errors_of(answer) == {"sms_code_dead": "sms_code"}
    assert "请重新办理" in answer["errors"][0]["zh"]
    view = await platform.get(iid)
    assert view["state"] == "account_info"


async def test_account_info_refuses_taken_login_names_and_weak_passwords(
        platform: Platform) -> None:
    first = await register_org(platform)
    reg = await to_account_info(platform)
    phone = new_mobile()
    await platform.ok(reg["id"], "send_code", {"mobile": phone})
    code = await platform.sms_code(phone)
    base = final_body(reg, phone=phone, code=code, login=new_login_name())
    for body, expected in [
        ({**base, "login_name": first["login"].upper()}, {"login_name_taken": "login_name"}),
        ({**base, "password_confirm": PASSWORD + "x"}, {"password_mismatch":
                                                        "password_confirm"}),
        ({**base, "password": "P@ssw0rd", "password_confirm": "P@ssw0rd"},
         {"password_too_common": "password"}),
    ]:
        status, answer = await platform.step(reg["id"], "submit", body)
        assert status == 422
        assert errors_of(answer) == expected
    # The taken name was told once the code proved the phone; fixed, it needs no new code.
    assert (await platform.ok(reg["id"], "submit", base))["state"] == "done"


async def test_account_info_tells_nothing_taken_without_a_right_code(
        platform: Platform) -> None:
    first = await register_org(platform)
    reg = await to_account_info(platform)
    phone = new_mobile()
    await platform.ok(reg["id"], "send_code", {"mobile": phone})
    code = await platform.sms_code(phone)
    wrong = next(c for c in ("123456", "654321") if c != code)
    taken = final_body(reg, phone=phone, code=wrong, login=first["login"])
    status, answer = await platform.step(reg["id"], "submit", taken)
    assert (status, errors_of(answer)) == (422, {"sms_code_wrong": "sms_code"})
    # Registered meanwhile by somebody else: told with the name, once the phone is proven.
    await register_org(platform, credit_code=reg["credit_code"])
    status, answer = await platform.step(reg["id"], "submit", {**taken, "sms_code": code})
    assert (status, errors_of(answer)) == (422, {"login_name_taken": "login_name",
                                                 "credit_code_registered": "credit_code"})


async def test_credit_code_look_ups_are_limited_per_client_despite_captchas(
        platform: Platform) -> None:
    iid = (await platform.start("legal_registration"))["id"]
    body = {"org_name": "示例科技有限公司", "legal_rep_name": REP_NAME,
            "legal_rep_id": new_id_number(), "captcha": "WRONG", "agree": True}
    answers = [await platform.step(iid, "submit", {**body, "credit_code": new_credit_code()})
               for _ in range(31)]
    assert {status for status, _ in answers[:30]} == {422}
    status, answer = answers[30]
    assert (status, answer["error_id"], answer["limit"]) == (
        429, "too_many_registration_checks", "registration_checks_client")


# -- sign-in ---------------------------------------------------------------------------


async def test_each_of_two_agents_can_sign_in_for_the_organisation(
        platform: Platform, pool: asyncpg.Pool) -> None:
    org = await register_org(platform)
    vault = platform.app[keys.SERVICES].vault
    second_phone, second_id = new_mobile(), new_id_number()
    primary = (await agent_rows(pool, org["login"]))[0]
    async with pool.acquire() as conn:  # agent management (SPEC 10.3) is not a flow yet
        await conn.execute(
            "INSERT INTO agents (id, organisation_id, name, id_number_sealed, id_number_index,"
            " phone_sealed, phone_index, is_primary, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, false, $8)",
            uuid.uuid4(), primary["organisation_id"], AGENT_NAME,
            vault.seal("resident_id", second_id), vault.index("resident_id", second_id),
            vault.seal("mobile", second_phone), vault.index("mobile", second_phone),
            datetime.now(UTC))
    rows = await agent_rows(pool, org["login"])
    for n, (phone, row) in enumerate(zip((org["phone"], second_phone), rows, strict=True)):
        signed = await sign_in(platform, org["login"], agent=n)
        choices = field(signed["view"], "agent")["choices"]
        assert [c["label"] for c in choices] == [f"{REP_NAME} {masked_mobile(org['phone'])}",
                                                 f"{AGENT_NAME} {masked_mobile(second_phone)}"]
        code = await platform.sms_code(phone)
        other = (second_phone, org["phone"])[n]
        # The code went to the chosen agent only; the other one's code does not pass.
        status, answer = await platform.step(signed["id"], "submit", {
            "agent": choices[1 - n]["value"], "sms_code": code})
        assert status == 422
        assert errors_of(answer) == {"sms_code_expired": "sms_code"}
        view = await platform.ok(signed["id"], "submit", {"agent": choices[n]["value"],
                                                          "sms_code": code})
        assert view["state"] == "signed_in"
        me = await (await platform.client.get("/api/session")).json()
        assert me["agent_id"] == str(row["id"])
        assert other not in json.dumps(signed["view"])
    # An agent not in the list is not a choice.
    signed = await sign_in(platform, org["login"], send=False)
    status, answer = await platform.step(signed["id"], "submit", {
        "agent": str(uuid.uuid4()), "sms_code": "123456"})
    assert errors_of(answer) == {"not_choice": "agent"}


async def test_login_gives_one_generic_error(platform: Platform) -> None:
    from tests.flows.test_personal import register as register_person

    org = await register_org(platform)
    person = await register_person(platform)
    attempts = [  # the right captcha unless one is given
        {"login_name": org["login"], "password": "Wrong-Pass-1"},
        {"login_name": org["login"], "password": PASSWORD, "captcha": WRONG_CAPTCHA},
        {"login_name": "nobody" + new_login_name(), "password": PASSWORD},
        # A personal account does not sign in as an organisation.
        {"login_name": person["login"], "password": PASSWORD},
    ]
    answers = []
    for body in attempts:
        iid = (await platform.start("legal_login"))["id"]
        captcha = await platform.captcha(iid)
        status, answer = await platform.step(iid, "submit", {"captcha": captcha, **body})
        assert status == 422
        answers.append((answer["error_id"], answer["errors"]))
        assert (await platform.get(iid))["state"] == "credentials"
        text, _ = await history_text(platform, iid)
        assert "Wrong-Pass-1" not in text
    assert len({json.dumps(a) for a in answers}) == 1
    assert answers[0][1] == [{"field": None, "error_id": "login_failed",
                              "zh": "账号、密码或验证码错误",
                              "en": "The account, password or captcha is wrong"}]
    # No captcha fetched at all: the same answer.
    iid = (await platform.start("legal_login"))["id"]
    status, answer = await platform.step(iid, "submit", {
        "login_name": org["login"], "password": PASSWORD, "captcha": "ABCD"})
    assert (answer["error_id"], answer["errors"]) == answers[0]


async def test_a_one_time_password_is_changed_after_the_agent_check(
        platform: Platform, pool: asyncpg.Pool) -> None:
    org = await register_org(platform)
    async with pool.acquire() as conn:  # as an administrator's reset leaves it (SPEC 9)
        await conn.execute("UPDATE accounts SET must_change_password = true"
                           " WHERE login_name = $1", org["login"])
    signed = await sign_in(platform, org["login"])
    code = await platform.sms_code(org["phone"])
    view = await platform.ok(signed["id"], "submit", {"agent": signed["choice"]["value"],
                                                      "sms_code": code})
    assert view["state"] == "change_password"
    assert (await platform.client.get("/api/session")).status == 401
    status, answer = await platform.step(signed["id"], "submit", {
        "password": PASSWORD, "password_confirm": PASSWORD})
    assert status == 422
    assert errors_of(answer) == {"password_unchanged": "password"}
    new = "Brand-New-Secret-3"
    view = await platform.ok(signed["id"], "submit", {"password": new,
                                                      "password_confirm": new})
    assert view["state"] == "signed_in"
    me = await (await platform.client.get("/api/session")).json()
    assert me["agent_id"] == signed["choice"]["value"]
    # The guard read only recorded facts: an auditor's replay takes the same path.
    verify = await (await platform.client.get(f"/api/flows/{signed['id']}/verify")).json()
    assert verify["ok"], verify
    again = await sign_in(platform, org["login"], password=new, send=False)
    assert again["view"]["state"] == "agent_check"


# -- password reset -------------------------------------------------------------------


async def test_password_reset_answers_an_agents_and_any_other_number_alike(
        platform: Platform) -> None:
    from tests.flows.test_personal import assert_resets_answer_alike
    from tests.flows.test_verification import new_organisation

    org = await new_organisation(platform)
    assert org.phone is not None
    await assert_resets_answer_alike(platform, "legal_password_reset", org.phone)


async def test_password_reset_by_an_agents_phone(platform: Platform,
                                                 pool: asyncpg.Pool) -> None:
    first = await register_org(platform)
    phone = first["phone"]
    second = await register_org(platform)
    stranger = await register_org(platform)
    # The first one's agent is an agent of the second one too.
    vault = platform.app[keys.SERVICES].vault
    id_number = new_id_number()
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO agents (id, organisation_id, name, id_number_sealed, id_number_index,"
            " phone_sealed, phone_index, is_primary, created_at)"
            " SELECT $1, id, $2, $3, $4, $5, $6, false, $7 FROM accounts WHERE login_name = $8",
            uuid.uuid4(), AGENT_NAME, vault.seal("resident_id", id_number),
            vault.index("resident_id", id_number), vault.seal("mobile", phone),
            vault.index("mobile", phone), datetime.now(UTC), second["login"])
    signed = await sign_in(platform, second["login"])
    await platform.ok(signed["id"], "submit", {
        "agent": signed["choice"]["value"],
        "sms_code": await platform.sms_code(second["phone"])})
    assert (await platform.client.get("/api/session")).status == 200

    unknown = new_mobile()
    nobody = (await platform.start("legal_password_reset"))["id"]
    answer_unknown = await platform.ok(nobody, "send_code", {"mobile": unknown})
    iid = (await platform.start("legal_password_reset"))["id"]
    answer_known = await platform.ok(iid, "send_code", {"mobile": phone})

    def shape(view: dict[str, Any]) -> Any:
        return ([{k: v for k, v in f.items() if k != "value"} for f in view["ui"]["fields"]],
                view["ui"]["error"], view["status"], view["state"], view["version"],
                {k: v for k, v in view["event"].items() if k != "at"})

    assert shape(answer_unknown) == shape(answer_known)
    _, known_events = await history_text(platform, iid)
    _, unknown_events = await history_text(platform, nobody)
    assert {k: sorted(v) for k, v in known_events[-1]["facts"].items()} \
        == {k: sorted(v) for k, v in unknown_events[-1]["facts"].items()}
    assert await platform.sms_code(unknown) is None
    status, answer = await platform.step(nobody, "submit", {"mobile": unknown,
                                                           "sms_code": "123456"})
    assert errors_of(answer) == {"sms_code_wrong": "sms_code"}

    code = await platform.sms_code(phone)
    status, answer = await platform.step(iid, "submit", {"mobile": new_mobile(),
                                                        "sms_code": code})
    assert errors_of(answer) == {"sms_code_expired": "sms_code"}
    view = await platform.ok(iid, "submit", {"mobile": phone, "sms_code": code})
    assert view["state"] == "new_password"

    new = "Another-Secret-9"
    body = {"login_name": second["login"], "password": new, "password_confirm": new}
    for wrong_name in (stranger["login"], "nobody" + new_login_name()):
        status, answer = await platform.step(iid, "submit", {**body, "login_name": wrong_name})
        assert status == 422
        assert errors_of(answer) == {"login_name_not_agent_org": "login_name"}
        assert answer["errors"][0]["zh"]
        assert answer["errors"][0]["en"]
    status, answer = await platform.step(iid, "submit", {**body, "password_confirm": new + "x"})
    assert errors_of(answer) == {"password_mismatch": "password_confirm"}
    status, answer = await platform.step(iid, "submit", {
        **body, "password": "Short1!", "password_confirm": "Short1!"})
    assert errors_of(answer) == {"password_too_short": "password"}
    assert (await platform.get(iid))["state"] == "new_password"
    done = await platform.ok(iid, "submit", {**body, "login_name": second["login"].upper()})
    assert done["state"] == "done"
    assert (await platform.client.get("/api/session")).status == 401  # sessions ended

    text, events = await history_text(platform, iid)
    for plain in (phone, new, code):
        assert plain not in text
    assert_no_secret_recorded(events)
    text, _ = await history_text(platform, nobody)
    assert unknown not in text
    verify = await (await platform.client.get(f"/api/flows/{iid}/verify")).json()
    assert verify["ok"], verify

    # The new password signs in; the old one no longer does; the other organisation
    # this phone serves keeps its own.
    again = await sign_in(platform, second["login"], password=new, send=False)
    assert again["view"]["state"] == "agent_check"
    login = (await platform.start("legal_login"))["id"]
    captcha = await platform.captcha(login)
    status, answer = await platform.step(login, "submit", {
        "login_name": second["login"], "password": PASSWORD, "captcha": captcha})
    assert errors_of(answer) == {"login_failed": None}
    assert (await sign_in(platform, first["login"], send=False))["view"]["state"] \
        == "agent_check"
