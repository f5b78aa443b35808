"""Face verification (flows/face.py): who may skip it, how many sessions a person gets,
and which callback decides.

Who owns an instance is chosen at start through the runtime (``actor=`` becomes the
owner; personal registration is open to anyone), so these tests do not depend on how
the web layer names an anonymous browser. The face itself is pressed on the sandbox
phone page, whose signed callback goes through ``/api/callbacks/face`` as in life.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from engine import FrozenClock, Instance, Runtime, load_text
from flows.policies import FaceSessionsPolicy, FaceSkipPolicy
from tests.conftest import ROOT
from tests.platform import PASSWORD, Platform, new_id_number, new_login_name, new_mobile
from web import keys

FLOW = "personal_registration"
DEVICE_A = "device:" + "a" * 32
DEVICE_B = "device:" + "b" * 32


def runtime(p: Platform) -> Runtime:
    return p.app[keys.RUNTIME]


async def start_as(p: Platform, owner: str) -> str:
    return (await runtime(p).start(FLOW, actor=owner)).instance.id


async def submit_person(p: Platform, iid: str, owner: str, name: str,
                        id_number: str) -> Instance:
    outcome = await runtime(p).advance(
        iid, "submit", {"name": name, "id_number": id_number, "agree": True}, actor=owner)
    return outcome.instance


def session_of(instance: Instance) -> dict[str, Any]:
    return dict(instance.context["facts"]["start_face_session"])


async def scan(p: Platform, instance: Instance, result: str) -> Instance:
    """Press ``result`` on the phone page of the instance's current face session."""
    await p.face(None, result, qr_url=session_of(instance)["qr_url"])
    return await runtime(p).get(instance.id)


async def face_passes(pool: asyncpg.Pool, instance_id: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch("SELECT owner, passed_at FROM face_passes"
                                     " WHERE instance_id = $1", uuid.UUID(instance_id)))


# -- who may skip the face step ----------------------------------------------------------

async def test_the_browser_that_passed_skips_the_face_step_within_the_window_only(
        platform: Platform, clock: FrozenClock, pool: asyncpg.Pool) -> None:
    name, id_number = "李四", new_id_number()
    first = await start_as(platform, DEVICE_A)
    halfway = await submit_person(platform, first, DEVICE_A, name, id_number)
    assert halfway.state == "real_name"
    assert (await scan(platform, halfway, "pass")).state == "account_info"
    # The callback's actor is the provider; the pass is the owner's.
    assert [r["owner"] for r in await face_passes(pool, first)] == [DEVICE_A]

    again = await submit_person(platform, await start_as(platform, DEVICE_A), DEVICE_A,
                                name, id_number)
    assert again.state == "account_info"
    assert again.context["facts"]["verify_real_name"]["face_passed_before"] is True
    assert "start_face_session" not in again.context["facts"]

    clock.advance(timedelta(days=1, seconds=1))
    later = await submit_person(platform, await start_as(platform, DEVICE_A), DEVICE_A,
                                name, id_number)
    assert later.state == "real_name"
    assert later.context["facts"]["verify_real_name"]["face_passed_before"] is False


async def test_nobody_else_skips_the_face_step(platform: Platform, pool: asyncpg.Pool) -> None:
    name, id_number = "李四", new_id_number()
    first = await submit_person(platform, await start_as(platform, DEVICE_A), DEVICE_A,
                                name, id_number)
    assert (await scan(platform, first, "pass")).state == "account_info"
    strangers = [(DEVICE_B, name), ("anonymous", name), (f"account:{uuid.uuid4()}", name),
                 (DEVICE_A, "李四四")]  # the same browser with another name: another person
    for owner, typed in strangers:
        instance = await submit_person(platform, await start_as(platform, owner), owner,
                                       typed, id_number)
        assert instance.state == "real_name", (owner, typed)
        assert instance.context["facts"]["verify_real_name"]["face_passed_before"] is False


async def test_an_owner_that_is_no_browser_or_account_records_no_pass(
        platform: Platform, pool: asyncpg.Pool) -> None:
    name, id_number = "王五", new_id_number()
    instance = await submit_person(platform, await start_as(platform, "anonymous"),
                                   "anonymous", name, id_number)
    assert (await scan(platform, instance, "pass")).state == "account_info"
    assert await face_passes(pool, instance.id) == []
    again = await submit_person(platform, await start_as(platform, "anonymous"), "anonymous",
                                name, id_number)
    assert again.state == "real_name"


# -- how many sessions a person gets -----------------------------------------------------

def fields_by_name(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in view["ui"]["fields"]}


async def test_restart_loops_open_no_more_face_sessions_than_the_limits(
        platform: Platform) -> None:
    person = {"name": "赵六", "id_number": new_id_number(), "agree": True}
    qr_urls = set()
    iid = (await platform.start(FLOW))["id"]
    for _ in range(3):  # a flow opens three at most (attempts.face_sessions)
        view = await platform.ok(iid, "submit", person)
        assert view["state"] == "real_name"
        qr_urls.add(view["ui"]["data"]["qr_url"])
        assert (await platform.ok(iid, "restart"))["state"] == "basic_info"
    view = await platform.ok(iid, "submit", person)
    assert view["state"] == "basic_info"
    error = fields_by_name(view)["id_number"]["error"]
    assert error["error_id"] == "face_sessions_used_up"
    # Replay decides as live did: the guards read only what the history recorded.
    assert (await (await platform.client.get(f"/api/flows/{iid}/verify")).json())["ok"]
    assert "人脸识别次数已用完" in error["zh"]
    assert "No face verification attempts are left" in error["en"]
    # New instances get what is left of the person's five a day (face_sessions.per_person).
    for _ in range(2):
        view = await platform.ok((await platform.start(FLOW))["id"], "submit", person)
        assert view["state"] == "real_name"
        qr_urls.add(view["ui"]["data"]["qr_url"])
    for spelling in (person, {**person, "name": "赵 六"}):
        view = await platform.ok((await platform.start(FLOW))["id"], "submit", spelling)
        assert view["state"] == "basic_info"
        assert fields_by_name(view)["id_number"]["error"]["error_id"] == "face_sessions_used_up"
    assert len(qr_urls) == 5
    # Somebody else is not held up by it.
    other = {**person, "id_number": new_id_number()}
    view = await platform.ok((await platform.start(FLOW))["id"], "submit", other)
    assert view["state"] == "real_name"


async def test_ten_submits_at_once_for_one_person_open_five_sessions(
        platform: Platform) -> None:
    person = {"name": "钱七", "id_number": new_id_number(), "agree": True}
    ids = [(await platform.start(FLOW))["id"] for _ in range(10)]
    answers = await asyncio.gather(*(platform.step(iid, "submit", person) for iid in ids))
    assert all(status == 200 for status, _ in answers), answers
    states = sorted(body["state"] for _, body in answers)
    assert states == ["basic_info"] * 5 + ["real_name"] * 5
    opened = {body["ui"]["data"]["qr_url"] for _, body in answers
              if body["state"] == "real_name"}
    assert len(opened) == 5


async def test_a_retry_after_a_failed_scan_counts_against_the_person_too(
        platform: Platform) -> None:
    person = {"name": "孙八", "id_number": new_id_number(), "agree": True}
    for _ in range(4):  # four of the person's five, in other instances
        view = await platform.ok((await platform.start(FLOW))["id"], "submit", person)
        assert view["state"] == "real_name"
    iid = (await platform.start(FLOW))["id"]
    assert (await platform.ok(iid, "submit", person))["state"] == "real_name"
    await platform.face(iid, "fail")
    await platform.wait_for(iid, "face_failed")
    view = await platform.ok(iid, "retry")
    assert view["state"] == "face_failed"
    assert view["ui"]["error"]["error_id"] == "face_sessions_used_up"


# -- which callback decides --------------------------------------------------------------

async def test_a_late_callback_of_a_superseded_face_session_changes_nothing(
        platform: Platform) -> None:
    person = {"name": "周九", "id_number": new_id_number(), "agree": True}
    iid = (await platform.start(FLOW))["id"]
    old = (await platform.ok(iid, "submit", person))["ui"]["data"]["qr_url"]
    await platform.ok(iid, "restart")
    view = await platform.ok(iid, "submit", person)
    current = view["ui"]["data"]["qr_url"]
    assert current != old
    version = view["version"]

    await platform.face(None, "pass", qr_url=old)  # the old session passes, late
    session = await (await platform.client.get(
        "/sandbox/face/" + old.rsplit("/", 1)[1] + ".json")).json()
    assert session["delivery"]["status"] == 422
    view = await platform.get(iid)
    assert (view["state"], view["version"]) == ("real_name", version)

    await platform.face(iid, "pass")  # the current one still decides
    view = await platform.wait_for(iid, "account_info")
    events = (await (await platform.client.get(f"/api/flows/{iid}/history")).json())["events"]
    callbacks = [e for e in events if e["trigger"] == "face_result"]
    assert len(callbacks) == 1
    assert callbacks[0]["input"]["session_id"] == current.rsplit("/", 1)[1]


SESSION_ID_FIELD = """\
          session_id:
            type: string
            required: true
            max_length: 2000
            label: {zh: 人脸识别会话, en: Face session}
"""
BEFORE = ((SESSION_ID_FIELD, ""), ("        fields: [result, session_id]\n", ""),
          ("actions: [check_new_account]", "actions: [check_new_account, check_sms_code]"))


def before_session_ids(text: str) -> str:
    """flows.yaml as it was before face callbacks carried their session id and the account
    step checked the code itself, as far as these two go."""
    for old, new in BEFORE:
        assert old in text
        text = text.replace(old, new)
    return text


async def test_an_instance_of_a_version_from_before_still_finishes(platform: Platform) -> None:
    rt = runtime(platform)
    current = rt.flows
    text = (ROOT / "flows.yaml").read_text(encoding="utf-8")
    await rt.reload(load_text(before_session_ids(text), registry=platform.app[keys.REGISTRY]))
    try:
        iid = await start_as(platform, DEVICE_A)
    finally:
        await rt.reload(current)
    pinned = (await rt.get(iid)).definition_hash
    assert pinned != current.flows[FLOW].version
    halfway = await submit_person(platform, iid, DEVICE_A, "吴十", new_id_number())
    # The callback gives the old version only what its trigger takes: no session id.
    after = await scan(platform, halfway, "pass")
    assert after.state == "account_info"
    phone = new_mobile()
    await rt.advance(iid, "send_code", {"mobile": phone}, actor=DEVICE_A)
    code = await platform.sms_code(phone)
    outcome = await rt.advance(iid, "submit", {
        "login_name": new_login_name(), "password": PASSWORD, "password_confirm": PASSWORD,
        "mobile": phone, "sms_code": code}, actor=DEVICE_A)
    # check_new_account checked the code; check_sms_code after it finds the phone proven.
    assert outcome.instance.state == "done"
    assert outcome.instance.definition_hash == pinned


# -- the policies ------------------------------------------------------------------------

def test_the_face_policies_take_their_keys_and_defaults() -> None:
    assert FaceSkipPolicy.from_mapping(None).within == timedelta(days=1)
    assert FaceSkipPolicy.from_mapping({"within": "2h"}).within == timedelta(hours=2)
    sessions = FaceSessionsPolicy.from_mapping({"per_person": 2, "within": "12h"})
    assert (sessions.per_person, sessions.within) == (2, timedelta(hours=12))
    for bad, message in (({"per_person": 0}, "positive whole number"),
                         ({"per_person": True}, "positive whole number"),
                         ({"within": "1.5h"}, "a duration such as"), ({"max": 3}, "unknown key")):
        with pytest.raises(ValueError, match=message):
            FaceSessionsPolicy.from_mapping(bad)
    with pytest.raises(ValueError, match="unknown key"):
        FaceSkipPolicy.from_mapping({"window": "1d"})
