"""Personal registration, sign-in and password reset, end to end over HTTP (SPEC 1-3)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import asyncpg

from engine import FrozenClock
from engine.canonical import canonical_json, sha256_hex
from flows.identity import mask_mobile
from flows.pii import MOBILE, RESIDENT_ID
from tests.platform import (
    PASSWORD,
    WRONG_CAPTCHA,
    Answer,
    Platform,
    new_id_number,
    new_login_name,
    new_mobile,
)
from web import keys


async def register(p: Platform, *, name: str = "王小明", id_number: str | None = None,
                   phone: str | None = None, login: str | None = None,
                   face: str = "pass") -> dict[str, Any]:
    id_number = id_number or new_id_number()
    phone = phone or new_mobile()
    login = login or new_login_name()
    iid = (await p.start("personal_registration"))["id"]
    view = await p.ok(iid, "submit", {"name": name, "id_number": id_number, "agree": True})
    if view["state"] == "real_name":
        assert view["ui"]["data"]["qr_url"].endswith(view["ui"]["data"]["qr_url"][-10:])
        await p.face(iid, face)
        view = await p.wait_for(iid, "account_info" if face == "pass" else "face_failed")
        if face != "pass":
            return {"id": iid, "view": view, "id_number": id_number}
    assert view["state"] == "account_info"
    await p.ok(iid, "send_code", {"mobile": phone})
    code = await p.sms_code(phone)
    view = await p.ok(iid, "submit", {"login_name": login, "password": PASSWORD,
                                      "password_confirm": PASSWORD, "mobile": phone,
                                      "sms_code": code})
    return {"id": iid, "view": view, "id_number": id_number, "phone": phone, "login": login}


async def test_a_person_registers_with_face_verification_and_signs_in(
        platform: Platform, pool: asyncpg.Pool) -> None:
    done = await register(platform)
    view = done["view"]
    assert view["state"] == "done"
    data = view["ui"]["data"]
    assert data["login_name"] == done["login"]
    assert data["id_number"] == done["id_number"][:3] + "*" * 11 + done["id_number"][-4:]
    assert data["mobile"] == done["phone"][:3] + "****" + done["phone"][-4:]
    history = await (await platform.client.get(f"/api/flows/{done['id']}/history")).json()
    text = json.dumps(history, ensure_ascii=False)
    assert done["id_number"] not in text
    assert done["phone"] not in text
    assert PASSWORD not in text
    assert [e["trigger"] for e in history["events"]] == [
        "start", "submit", "face_result", "send_code", "submit"]
    assert history["events"][2]["actor"] == "provider:face"
    verify = await (await platform.client.get(f"/api/flows/{done['id']}/verify")).json()
    assert verify["ok"], verify
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM accounts WHERE login_name = $1", done["login"])
    assert row["password_hash"].startswith("$argon2id$")
    assert done["id_number"].encode() not in row["id_number_sealed"]

    for identifier in (done["login"], done["id_number"], done["phone"]):
        iid = (await platform.start("personal_login"))["id"]
        captcha = await platform.captcha(iid)
        signed = await platform.ok(iid, "submit", {"identifier": identifier,
                                                   "password": PASSWORD, "captcha": captcha})
        assert signed["state"] == "signed_in"
        # A browser's session is its HttpOnly cookie, never in the body.
        assert "reply" not in signed
    me = await platform.client.get("/api/session")
    assert (await me.json())["kind"] == "personal"


async def test_a_wrong_name_never_reveals_that_an_id_number_is_registered(
        platform: Platform) -> None:
    first = await register(platform)
    registry = platform.app[keys.SERVICES].providers.sandbox.realname
    await registry.add_pair("李鬼", first["id_number"])
    iid = (await platform.start("personal_registration"))["id"]
    status, body = await platform.step(iid, "submit", {
        "name": "李鬼", "id_number": first["id_number"], "agree": True})
    assert status == 422
    assert [(e["field"], e["error_id"]) for e in body["errors"]] == [
        ("name", "realname_mismatch")]
    # Whoever knows the name that goes with the ID learns that it is registered.
    status, body = await platform.step(iid, "submit", {
        "name": "王小明", "id_number": first["id_number"], "agree": True})
    assert status == 422
    assert [e["error_id"] for e in body["errors"]] == ["resident_id_registered"]
    assert (await platform.get(iid))["version"] == 1


async def test_another_client_with_a_name_and_id_that_passed_scans_its_face(
        platform: Platform) -> None:
    id_number = new_id_number()
    halfway = (await platform.start("personal_registration"))["id"]
    await platform.ok(halfway, "submit", {"name": "李四", "id_number": id_number, "agree": True})
    await platform.face(halfway, "pass")
    await platform.wait_for(halfway, "account_info")
    # A stranger's browser (no cookie of the first one) who knows the name and the ID.
    platform.client.session.cookie_jar.clear()
    again = (await platform.start("personal_registration"))["id"]
    view = await platform.ok(again, "submit", {"name": "李四", "id_number": id_number,
                                               "agree": True})
    assert view["state"] == "real_name"


async def test_a_failed_face_check_can_be_retried_up_to_the_policy(platform: Platform) -> None:
    first = await register(platform, face="fail")
    iid = first["id"]
    assert first["view"]["ui"]["error"]["error_id"] == "face_failed"
    for _ in range(2):
        view = await platform.ok(iid, "retry")
        assert view["state"] == "real_name"
        await platform.face(iid, "fail")
        await platform.wait_for(iid, "face_failed")
    view = await platform.ok(iid, "retry")  # three sessions: no fourth
    assert view["state"] == "face_failed"
    assert view["ui"]["error"]["error_id"] == "face_sessions_used_up"
    view = await platform.ok(iid, "restart")
    assert view["state"] == "basic_info"
    # Nor a fourth by going back: the flow has had its three.
    view = await platform.ok(iid, "submit", {"name": "王小明", "id_number": first["id_number"],
                                             "agree": True})
    assert view["state"] == "basic_info"
    errors = {f["name"]: f["error"] for f in view["ui"]["fields"] if f["error"]}
    assert errors["id_number"]["error_id"] == "face_sessions_used_up"


async def test_registration_refuses_bad_input_and_changes_nothing(platform: Platform) -> None:
    iid = (await platform.start("personal_registration"))["id"]
    cases = [
        ({"name": "甲", "id_number": "36042619910102009X", "agree": True}, "resident_id_check"),
        ({"name": "甲", "id_number": "360426199113010079", "agree": True},
         "resident_id_birth_date"),
        ({"name": "甲", "id_number": "360426910101007", "agree": True},
         "resident_id_legacy_15"),
        ({"name": "甲", "id_number": new_id_number(), "agree": False}, "required"),
        ({"name": "甲", "id_number": new_id_number(), "agree": True, "verified": True},
         "unknown_field"),
    ]
    for body, error_id in cases:
        status, answer = await platform.step(iid, "submit", body)
        assert status == 422, answer
        assert error_id in {e["error_id"] for e in answer["errors"]}, answer
    view = await platform.get(iid)
    assert view["version"] == 1
    assert view["state"] == "basic_info"


async def to_account_info(p: Platform) -> str:
    iid = (await p.start("personal_registration"))["id"]
    await p.ok(iid, "submit", {"name": "张三", "id_number": new_id_number(), "agree": True})
    await p.face(iid, "pass")
    await p.wait_for(iid, "account_info")
    return str(iid)


def error_ids(answer: dict[str, Any]) -> list[str]:
    return [e["error_id"] for e in answer.get("errors", [])]


async def test_account_info_errors(platform: Platform) -> None:
    first = await register(platform)
    iid = await to_account_info(platform)
    phone = new_mobile()
    status, body = await platform.step(iid, "send_code", {"mobile": "12812345678"})
    assert status == 422
    assert body["errors"][0]["error_id"] == "mobile_invalid"
    await platform.ok(iid, "send_code", {"mobile": phone})
    status, body = await platform.step(iid, "send_code", {"mobile": phone})
    assert status == 429
    assert body["error_id"] == "sms_resend_too_soon"
    code = await platform.sms_code(phone)
    base = {"login_name": new_login_name(), "password": PASSWORD,
            "password_confirm": PASSWORD, "mobile": phone, "sms_code": code}
    # What tells nothing about anybody is checked before the code, and uses no try of it.
    bad = [
        ({**base, "password": "Ab1!", "password_confirm": "Ab1!"}, "password_too_short"),
        ({**base, "password": "A1!" + "a" * 62, "password_confirm": "A1!" + "a" * 62},
         "password_too_long"),
        ({**base, "password": "P@ssw0rd", "password_confirm": "P@ssw0rd"},
         "password_too_common"),
        ({**base, "password": "Abcdefg-1", "password_confirm": "Abcdefg-2"},
         "password_mismatch"),
        ({**base, "login_name": "Lname1234", "password": "Lname1234",
          "password_confirm": "Lname1234"}, "password_equals_login_name"),
        ({**base, "sms_code": "000000" if code != "000000" else "111111"}, "sms_code_wrong"),
    ]
    for body, error_id in bad:
        status, answer = await platform.step(iid, "submit", body)
        assert status == 422, answer
        assert error_id in error_ids(answer), (error_id, answer)
    # The right code proves the phone; then what is taken is told, and fixed.
    status, answer = await platform.step(iid, "submit", {**base, "login_name": first["login"]})
    assert (status, error_ids(answer)) == (422, ["login_name_taken"])
    long_ok = "Aa1!" + "b" * 60
    done = await platform.ok(iid, "submit", {**base, "password": long_ok,
                                             "password_confirm": long_ok})
    assert done["state"] == "done"


async def seed_person(p: Platform) -> dict[str, str]:
    """A personal account made through the Accounts port: no code was sent to its phone."""
    s = p.app[keys.SERVICES]
    login, phone, id_number = new_login_name(), new_mobile(), new_id_number()
    write = s.accounts.create_person(
        account_id=str(uuid.uuid4()), kind="personal", login_name=login, display_name="甲",
        password_hash=await s.hasher.hash(PASSWORD),
        id_number_sealed=s.vault.seal(RESIDENT_ID, id_number),
        id_number_index=s.vault.index(RESIDENT_ID, id_number),
        phone_sealed=s.vault.seal(MOBILE, phone), phone_index=s.vault.index(MOBILE, phone),
        must_change_password=False, now=p.app[keys.CLOCK].now())
    async with p.app[keys.POOL].acquire() as conn, conn.transaction():
        await write(conn)
    return {"login": login, "phone": phone}


async def test_account_info_tells_nothing_registered_without_a_right_code(
        platform: Platform) -> None:
    first = await seed_person(platform)
    iid = await to_account_info(platform)
    base = {"login_name": first["login"], "password": PASSWORD, "password_confirm": PASSWORD,
            "mobile": first["phone"], "sms_code": "123456"}
    # No code was sent to that phone here: whatever is typed, the code is all that is said.
    status, answer = await platform.step(iid, "submit", base)
    assert (status, error_ids(answer)) == (422, ["sms_code_expired"])
    await platform.ok(iid, "send_code", {"mobile": first["phone"]})
    code = await platform.sms_code(first["phone"])
    wrong = next(c for c in ("123456", "654321") if c != code)
    status, answer = await platform.step(iid, "submit", {**base, "sms_code": wrong})
    assert (status, error_ids(answer)) == (422, ["sms_code_wrong"])
    status, answer = await platform.step(iid, "submit", {**base, "sms_code": code,
                                                        "password_confirm": "Other-Pass-8"})
    assert (status, error_ids(answer)) == (422, ["password_mismatch"])
    # The phone's owner learns that both are taken, at once.
    status, answer = await platform.step(iid, "submit", {**base, "sms_code": code})
    assert status == 422
    assert {(e["field"], e["error_id"]) for e in answer["errors"]} == {
        ("login_name", "login_name_taken"), ("mobile", "mobile_registered")}
    assert (await platform.get(iid))["version"] == 4  # start, submit, face, send_code


async def test_a_corrected_login_name_passes_without_a_new_code(platform: Platform) -> None:
    first = await register(platform)
    iid = await to_account_info(platform)
    phone = new_mobile()
    await platform.ok(iid, "send_code", {"mobile": phone})
    code = await platform.sms_code(phone)
    body = {"login_name": first["login"].upper(), "password": PASSWORD,
            "password_confirm": PASSWORD, "mobile": phone, "sms_code": code}
    status, answer = await platform.step(iid, "submit", body)
    assert (status, error_ids(answer)) == (422, ["login_name_taken"])
    # The code is used up, but the phone is proven: the same form with another name passes.
    other = new_mobile()
    status, answer = await platform.step(iid, "submit", {**body, "login_name": new_login_name(),
                                                        "mobile": other})
    assert (status, error_ids(answer)) == (422, ["sms_code_expired"])  # not that phone
    login = new_login_name()
    done = await platform.ok(iid, "submit", {**body, "login_name": login})
    assert done["state"] == "done"
    assert done["ui"]["data"]["login_name"] == login
    history = await (await platform.client.get(f"/api/flows/{iid}/history")).json()
    assert history["events"][-1]["facts"]["check_new_account"] == {
        "login_name": login, "verified": phone[:3] + "****" + phone[-4:]}
    assert (await (await platform.client.get(f"/api/flows/{iid}/verify")).json())["ok"]


async def test_registration_look_ups_are_limited_per_client(platform: Platform) -> None:
    registry = platform.app[keys.SERVICES].providers.sandbox.realname
    first = await to_account_info(platform)  # one look-up
    answers = []
    for n in range(29):
        if n % 10 == 0:  # a registration alone would be allowed twenty
            iid = (await platform.start("personal_registration"))["id"]
        id_number = new_id_number()
        await registry.add_id(id_number)
        answers.append(await platform.step(iid, "submit", {"name": "甲", "id_number": id_number,
                                                           "agree": True}))
    assert {(s, b["errors"][0]["error_id"]) for s, b in answers} == {
        (422, "realname_mismatch")}
    # The 31st, whichever step of whichever registration from that address asks.
    phone = new_mobile()
    resp = await platform.client.post(f"/api/flows/{first}/events/submit", json={
        "login_name": new_login_name(), "password": PASSWORD, "password_confirm": PASSWORD,
        "mobile": phone, "sms_code": "123456"})
    assert resp.status == 429
    body = await resp.json()
    assert body["error_id"] == "too_many_registration_checks"
    assert body["limit"] == "registration_checks_client"
    assert "请稍后再试" in body["message"]["zh"]
    assert "try again later" in body["message"]["en"]
    assert 1 <= int(resp.headers["Retry-After"]) <= 600
    status, body = await platform.step(iid, "submit", {"name": "甲", "id_number": new_id_number(),
                                                       "agree": True})
    assert (status, body["error_id"]) == (429, "too_many_registration_checks")
    assert (await platform.get(first))["state"] == "account_info"


async def test_registration_look_ups_are_limited_per_id_number(
        platform: Platform) -> None:
    id_number = new_id_number()
    registry = platform.app[keys.SERVICES].providers.sandbox.realname
    await registry.add_id(id_number)
    statuses = []
    for n in range(11):
        iid = (await platform.start("personal_registration"))["id"]
        status, body = await platform.step(iid, "submit", {"name": f"甲{n}",
                                                           "id_number": id_number,
                                                           "agree": True})
        statuses.append((status, body.get("error_id")))
    assert statuses[:10] == [(422, "validation_failed")] * 10
    assert statuses[10] == (429, "realname_checks_id_limit")
async def test_registration_look_ups_are_limited_per_registration(platform: Platform) -> None:
    registry = platform.app[keys.SERVICES].providers.sandbox.realname
    iid = (await platform.start("personal_registration"))["id"]
    answers = []
    for _ in range(21):
        id_number = new_id_number()
        await registry.add_id(id_number)
        status, body = await platform.step(iid, "submit", {"name": "甲", "id_number": id_number,
                                                           "agree": True})
        answers.append((status, body.get("limit")))
    assert answers[:20] == [(422, None)] * 20
    assert answers[20] == (429, "registration_checks_flow")
    # Another registration from the same address goes on.
    other = (await platform.start("personal_registration"))["id"]
    view = await platform.ok(other, "submit", {"name": "甲", "id_number": new_id_number(),
                                               "agree": True})
    assert view["state"] == "real_name"


async def test_login_gives_one_generic_error_and_locks_after_five_failures(
        platform: Platform) -> None:
    person = await register(platform)
    attempts = [  # the right captcha unless one is given
        {"identifier": person["login"], "password": "Wrong-Pass-1"},
        {"identifier": person["login"], "password": PASSWORD, "captcha": WRONG_CAPTCHA},
        {"identifier": "nobody" + new_login_name(), "password": PASSWORD},
    ]
    answers = []
    for body in attempts:
        iid = (await platform.start("personal_login"))["id"]
        captcha = await platform.captcha(iid)
        status, answer = await platform.step(iid, "submit", {"captcha": captcha, **body})
        assert status == 422
        answers.append((answer["error_id"], answer["errors"]))
    assert len({json.dumps(a) for a in answers}) == 1
    assert answers[0][1][0]["error_id"] == "login_failed"
    for _ in range(4):
        iid = (await platform.start("personal_login"))["id"]
        captcha = await platform.captcha(iid)
        await platform.step(iid, "submit", {"identifier": person["login"],
                                            "password": "Wrong-Pass-1", "captcha": captcha})
    iid = (await platform.start("personal_login"))["id"]
    captcha = await platform.captcha(iid)
    status, answer = await platform.step(iid, "submit", {
        "identifier": person["login"], "password": PASSWORD, "captcha": captcha})
    assert status == 422
    assert answer["errors"][0]["error_id"] == "login_locked"


async def test_captcha_is_single_use_and_bound_to_its_flow(platform: Platform) -> None:
    person = await register(platform)
    one = (await platform.start("personal_login"))["id"]
    two = (await platform.start("personal_login"))["id"]
    body = {"identifier": person["login"], "password": PASSWORD,
            "captcha": await platform.captcha(one)}
    status, answer = await platform.step(two, "submit", body)  # other flow's captcha
    assert answer["errors"][0]["error_id"] == "login_failed"
    assert (await platform.ok(one, "submit", body))["state"] == "signed_in"
    three = (await platform.start("personal_login"))["id"]
    status, answer = await platform.step(three, "submit", body)  # none fetched: reuse
    assert status == 422


async def test_password_reset_answers_alike_for_unknown_numbers_and_ends_sessions(
        platform: Platform) -> None:
    person = await register(platform)
    login = (await platform.start("personal_login"))["id"]
    captcha = await platform.captcha(login)
    await platform.ok(login, "submit", {"identifier": person["login"], "password": PASSWORD,
                                        "captcha": captcha})
    assert (await platform.client.get("/api/session")).status == 200

    unknown = new_mobile()
    stranger = (await platform.start("personal_password_reset"))["id"]
    answer_unknown = await platform.ok(stranger, "send_code", {"mobile": unknown})
    iid = (await platform.start("personal_password_reset"))["id"]
    answer_known = await platform.ok(iid, "send_code", {"mobile": person["phone"]})
    assert answer_unknown["event"]["to"] == answer_known["event"]["to"]
    def shape(view: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in f.items() if k != "value"} for f in view["ui"]["fields"]]

    assert shape(answer_unknown) == shape(answer_known)
    assert answer_unknown["status"] == answer_known["status"]
    assert await platform.sms_code(unknown) is None
    code = await platform.sms_code(person["phone"])
    view = await platform.ok(iid, "submit", {"mobile": person["phone"], "sms_code": code})
    assert view["state"] == "new_password"
    new = "Another-Secret-9"
    status, body = await platform.step(iid, "submit", {"password": new,
                                                      "password_confirm": new + "x"})
    assert status == 422
    assert body["errors"][0]["error_id"] == "password_mismatch"
    done = await platform.ok(iid, "submit", {"password": new, "password_confirm": new})
    assert done["state"] == "done"
    assert (await platform.client.get("/api/session")).status == 401
    login = (await platform.start("personal_login"))["id"]
    captcha = await platform.captcha(login)
    signed = await platform.ok(login, "submit", {"identifier": person["phone"],
                                                 "password": new, "captcha": captcha})
    assert signed["state"] == "signed_in"


async def reset_answers(p: Platform, flow: str, phone: str) -> list[Answer]:
    """Every answer a password reset gives one number, step by step: a code checked
    before any was sent, a code sent, sent again at once, four wrong codes, the fifth,
    one more, a code asked for once the cooldown is over, and one more check."""
    iid = (await p.start(flow))["id"]
    hide = {mask_mobile(phone): "<phone>"}

    async def step(trigger: str, **body: str) -> Answer:
        return await p.answer(iid, trigger, {"mobile": phone, **body}, placeholders=hide)

    answers = [await step("submit", sms_code="123456"), await step("send_code"),
               await step("send_code")]
    sent = await p.sms_code(phone)
    wrong = "123456" if sent != "123456" else "654321"
    answers += [await step("submit", sms_code=wrong) for _ in range(6)]
    # The cooldown is over (as a minute later): a dead binding gets no new code.
    prefix = p.app[keys.SETTINGS].redis_prefix
    redis = p.app[keys.REDIS]
    await redis.delete(*[k async for k in redis.scan_iter(match=f"{prefix}limit:sms_resend:*")])
    answers += [await step("send_code"), await step("submit", sms_code=wrong)]
    return answers


async def assert_resets_answer_alike(p: Platform, flow: str, registered: str) -> None:
    unregistered = new_mobile()
    known = await reset_answers(p, flow, registered)
    unknown = await reset_answers(p, flow, unregistered)
    assert [(a.status, a.error_ids or a.body.get("error_id")) for a in known] == [
        (422, ["sms_code_expired"]), (200, None), (429, "sms_resend_too_soon"),
        *[(422, ["sms_code_wrong"])] * 4, (422, ["sms_code_dead"]), (422, ["sms_code_dead"]),
        (200, None), (422, ["sms_code_dead"])]
    for n, (mine, theirs) in enumerate(zip(known, unknown, strict=True)):
        assert mine == theirs, n
    assert await p.sms_code(unregistered) is None
    assert await p.sms_code(registered) is not None


async def test_password_reset_answers_a_registered_and_an_unregistered_number_alike(
        platform: Platform) -> None:
    person = await register(platform)
    await assert_resets_answer_alike(platform, "personal_password_reset", person["phone"])


async def test_a_decoy_code_is_queued_like_a_real_one_but_never_sent(
        platform: Platform, pool: asyncpg.Pool) -> None:
    person = await register(platform)
    shapes = []
    for phone in (person["phone"], new_mobile()):
        iid = (await platform.start("personal_password_reset"))["id"]
        await platform.ok(iid, "send_code", {"mobile": phone})
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT topic, payload FROM outbox WHERE instance_id = $1",
                                    iid)
        shapes.append([(r["topic"], sorted(r["payload"])) for r in rows])
        await platform.deliver_outbox()
    assert shapes[0] == shapes[1] == [("sms", ["sealed", "to", "v"])]


async def test_two_registrations_racing_for_one_id_number_create_one_account(
        platform: Platform, pool: asyncpg.Pool) -> None:
    import asyncio

    id_number = new_id_number()
    flows = []
    for _ in range(2):
        iid = (await platform.start("personal_registration"))["id"]
        view = await platform.ok(iid, "submit", {"name": "赵六", "id_number": id_number,
                                                 "agree": True})
        if view["state"] == "real_name":
            await platform.face(iid, "pass")
            await platform.wait_for(iid, "account_info")
        phone = new_mobile()
        await platform.ok(iid, "send_code", {"mobile": phone})
        flows.append((iid, phone, await platform.sms_code(phone)))

    async def finish(iid: str, phone: str, code: str | None) -> tuple[int, dict[str, Any]]:
        return await platform.step(iid, "submit", {
            "login_name": new_login_name(), "password": PASSWORD,
            "password_confirm": PASSWORD, "mobile": phone, "sms_code": code})

    results = await asyncio.gather(*(finish(*f) for f in flows))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 422], results
    refused = next(body for status, body in results if status == 422)
    assert refused["errors"][0]["error_id"] == "resident_id_registered"
    loser = next(iid for (iid, _, _), (status, _) in zip(flows, results, strict=True)
                 if status == 422)
    assert (await platform.get(loser))["state"] == "account_info"
    index = platform.app[keys.SERVICES].vault.index("resident_id", id_number)
    async with pool.acquire() as conn:
        count = await conn.fetchval("SELECT count(*) FROM accounts WHERE id_number_index = $1",
                                    index)
    assert count == 1


async def test_sms_limits_hold_across_procedures(platform: Platform) -> None:
    phone = new_mobile()
    reset = (await platform.start("personal_password_reset"))["id"]
    await platform.ok(reset, "send_code", {"mobile": phone})
    again = (await platform.start("personal_password_reset"))["id"]
    status, body = await platform.step(again, "send_code", {"mobile": phone})
    assert status == 429
    assert body["error_id"] == "sms_resend_too_soon"
    assert 1 <= body["retry_after"] <= 60
    other = new_mobile()
    assert (await platform.step(again, "send_code", {"mobile": other}))[0] == 200


async def test_the_browser_that_passed_skips_the_face_step_for_a_day_and_nobody_else(
        platform: Platform, clock: FrozenClock) -> None:
    """SPEC 1.2 with its safety: an earlier pass skips the face step only for the device
    (the browser's cookie) that passed it, and only within the policy's day."""
    basic = {"name": "赵六", "id_number": new_id_number(), "agree": True}
    first = (await platform.start("personal_registration"))["id"]
    await platform.ok(first, "submit", basic)
    await platform.face(first, "pass")
    await platform.wait_for(first, "account_info")
    again = (await platform.start("personal_registration"))["id"]
    assert (await platform.ok(again, "submit", basic))["state"] == "account_info"
    async with platform.another_browser() as stranger:
        resp = await stranger.post("/api/flows/personal_registration")
        theirs = (await resp.json())["id"]
        resp = await stranger.post(f"/api/flows/{theirs}/events/submit", json=basic)
        assert (resp.status, (await resp.json())["state"]) == (200, "real_name")
    clock.advance(timedelta(days=1, seconds=1))
    later = (await platform.start("personal_registration"))["id"]
    assert (await platform.ok(later, "submit", basic))["state"] == "real_name"


async def test_limit_counters_are_keyed_by_a_keyed_hash_of_the_number(
        platform: Platform) -> None:
    """A plain hash of an 11-digit number is undone by trying them all: the counters of
    limits by phone number are keyed by an HMAC under the vault's index key."""
    phone = new_mobile()
    iid = (await platform.start("personal_password_reset"))["id"]
    await platform.ok(iid, "send_code", {"mobile": phone})
    redis = platform.app[keys.REDIS]
    prefix = platform.app[keys.SETTINGS].redis_prefix
    found = {k.decode().removeprefix(prefix) async for k in redis.scan_iter(
        match=f"{prefix}limit:sms_daily:*")}
    plain = sha256_hex(canonical_json([phone]))[:32]
    keyed = platform.app[keys.SERVICES].vault.index("limit_key",
                                                    canonical_json([phone])).hex()[:32]
    assert f"limit:sms_daily:{keyed}" in found
    assert f"limit:sms_daily:{plain}" not in found
