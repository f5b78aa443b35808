"""Personal registration, sign-in and password reset, end to end over HTTP (SPEC 1-3)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from tests.platform import (
    PASSWORD,
    WRONG_CAPTCHA,
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
            return {"id": iid, "view": view}
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
        assert "session" in signed["reply"]
    me = await platform.client.get("/api/session")
    assert (await me.json())["kind"] == "personal"


async def test_a_second_registration_of_the_same_person_skips_face_verification(
        platform: Platform) -> None:
    first = await register(platform)
    # The account exists, so a new registration with that ID is refused...
    iid = (await platform.start("personal_registration"))["id"]
    status, body = await platform.step(iid, "submit", {
        "name": "王小明", "id_number": first["id_number"], "agree": True})
    assert status == 422
    assert body["errors"][0]["error_id"] == "resident_id_registered"
    # ...while a person who passed the face check but never finished skips it next time.
    other = new_id_number()
    halfway = (await platform.start("personal_registration"))["id"]
    await platform.ok(halfway, "submit", {"name": "李四", "id_number": other, "agree": True})
    await platform.face(halfway, "pass")
    await platform.wait_for(halfway, "account_info")
    again = (await platform.start("personal_registration"))["id"]
    view = await platform.ok(again, "submit", {"name": "李四", "id_number": other,
                                               "agree": True})
    assert view["state"] == "account_info"


async def test_a_failed_face_check_can_be_retried_up_to_the_policy(platform: Platform) -> None:
    first = await register(platform, face="fail")
    iid = first["id"]
    assert first["view"]["ui"]["error"]["error_id"] == "face_failed"
    for _ in range(2):
        view = await platform.ok(iid, "retry")
        assert view["state"] == "real_name"
        await platform.face(iid, "fail")
        await platform.wait_for(iid, "face_failed")
    status, body = await platform.step(iid, "retry")
    assert status == 422
    assert body["error_id"] == "transition_refused"
    view = await platform.ok(iid, "restart")
    assert view["state"] == "basic_info"


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


async def test_account_info_errors(platform: Platform) -> None:
    first = await register(platform)
    iid = (await platform.start("personal_registration"))["id"]
    id_number = new_id_number()
    await platform.ok(iid, "submit", {"name": "张三", "id_number": id_number, "agree": True})
    await platform.face(iid, "pass")
    await platform.wait_for(iid, "account_info")
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
    bad = [
        ({**base, "password": "Ab1!", "password_confirm": "Ab1!"}, "password_too_short"),
        ({**base, "password": "A1!" + "a" * 62, "password_confirm": "A1!" + "a" * 62},
         "password_too_long"),
        ({**base, "password": "P@ssw0rd", "password_confirm": "P@ssw0rd"},
         "password_too_common"),
        ({**base, "password": "Abcdefg-1", "password_confirm": "Abcdefg-2"},
         "password_mismatch"),
        ({**base, "login_name": first["login"]}, "login_name_taken"),
        ({**base, "mobile": first["phone"]}, "mobile_registered"),
        ({**base, "sms_code": "000000" if code != "000000" else "111111"}, "sms_code_wrong"),
    ]
    for body, error_id in bad:
        status, answer = await platform.step(iid, "submit", body)
        assert status == 422, answer
        assert error_id in {e["error_id"] for e in answer["errors"]}, (error_id, answer)
    same = {**base, "login_name": "Lname1234", "password": "Lname1234",
            "password_confirm": "Lname1234"}
    status, answer = await platform.step(iid, "submit", same)
    assert "password_equals_login_name" in {e["error_id"] for e in answer["errors"]}
    # The code survived four wrong tries in all: one more right one registers.
    long_ok = "Aa1!" + "b" * 60
    done = await platform.ok(iid, "submit", {**base, "password": long_ok,
                                             "password_confirm": long_ok})
    assert done["state"] == "done"


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
