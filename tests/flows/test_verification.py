"""Organisation real-name verification, end to end over HTTP (SPEC 5).

Organisations are inserted through the Accounts port and the vault (the legal-entity
registration flow is not needed); their session is made the way sign-in makes it.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import attrs
from yarl import URL

from engine import FrozenClock
from flows.pii import MOBILE, RESIDENT_ID
from flows.providers import DEV_CALLBACK_SECRET
from flows.providers.signing import CallbackSigner, encode_body
from tests.platform import (
    PASSWORD,
    Platform,
    new_credit_code,
    new_id_number,
    new_login_name,
    new_mobile,
)
from web import keys

REP_NAME = "张伟"
FLOW = "organisation_verification"


@attrs.frozen
class Who:
    account_id: str
    login_name: str
    token: str
    credit_code: str | None = None
    rep_id: str | None = None
    phone: str | None = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def _write(p: Platform, *writes: Any) -> None:
    async with p.app[keys.POOL].acquire() as conn, conn.transaction():
        for write in writes:
            await write(conn)


async def _session(p: Platform, account_id: str, kind: str, name: str,
                   agent_id: str | None = None) -> str:
    return await p.app[keys.SERVICES].sessions.create(
        account_id=account_id, kind=kind, display_name=name, now=p.app[keys.CLOCK].now(),
        agent_id=agent_id)


async def new_organisation(p: Platform, *, verified: bool = False) -> Who:
    """An organisation account with its primary agent, and a signed-in session of it."""
    s = p.app[keys.SERVICES]
    vault = s.vault
    account_id, agent_id = str(uuid.uuid4()), str(uuid.uuid4())
    login, credit, rep_id, phone = (new_login_name(), new_credit_code(), new_id_number(),
                                    new_mobile())
    now = p.app[keys.CLOCK].now()
    writes = [s.accounts.create_organisation(
        account_id=account_id, login_name=login, name="测试科技有限公司", credit_code=credit,
        password_hash=await s.hasher.hash(PASSWORD), legal_rep_name=REP_NAME,
        legal_rep_id_sealed=vault.seal(RESIDENT_ID, rep_id),
        legal_rep_id_index=vault.index(RESIDENT_ID, rep_id), agent_id=agent_id,
        agent_name=REP_NAME, agent_id_sealed=vault.seal(RESIDENT_ID, rep_id),
        agent_id_index=vault.index(RESIDENT_ID, rep_id),
        agent_phone_sealed=vault.seal(MOBILE, phone),
        agent_phone_index=vault.index(MOBILE, phone), now=now)]
    if verified:
        writes.append(s.accounts.mark_verified(account_id, by="deposit", note=None, now=now))
    await _write(p, *writes)
    token = await _session(p, account_id, "organisation", "测试科技有限公司", agent_id)
    return Who(account_id, login, token, credit, rep_id, phone)


async def new_person(p: Platform, *, kind: str = "personal") -> Who:
    """A personal (or other kind of) account with a phone, and a session of it."""
    s = p.app[keys.SERVICES]
    account_id, login, phone = str(uuid.uuid4()), new_login_name(), new_mobile()
    id_number = new_id_number() if kind == "personal" else None
    await _write(p, s.accounts.create_person(
        account_id=account_id, kind=kind, login_name=login, display_name="李四",
        password_hash=await s.hasher.hash(PASSWORD),
        id_number_sealed=s.vault.seal(RESIDENT_ID, id_number) if id_number else None,
        id_number_index=s.vault.index(RESIDENT_ID, id_number) if id_number else None,
        phone_sealed=s.vault.seal(MOBILE, phone), phone_index=s.vault.index(MOBILE, phone),
        must_change_password=False, now=p.app[keys.CLOCK].now()))
    return Who(account_id, login, await _session(p, account_id, kind, "李四"), phone=phone)


def sign_in(p: Platform, who: Who) -> None:
    """Make ``who`` the client's signed-in session (the cookie sign-in sets)."""
    p.client.session.cookie_jar.update_cookies({"session": who.token},
                                               response_url=URL(str(p.client.make_url("/"))))


async def organisation_row(p: Platform, account_id: str) -> asyncpg.Record:
    async with p.app[keys.POOL].acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM organisations WHERE account_id = $1",
                                  uuid.UUID(account_id))
    assert row is not None
    return row


async def history(p: Platform, iid: str) -> list[dict[str, Any]]:
    resp = await p.client.get(f"/api/flows/{iid}/history")
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["events"])


async def start(p: Platform, org: Who) -> str:
    sign_in(p, org)
    view = await p.start(FLOW)
    assert view["state"] == "choose_method"
    return str(view["id"])


# -- deposits ---------------------------------------------------------------------------

def new_account_number() -> str:
    return "6222" + "".join(random.choice("0123456789") for _ in range(12))


async def a_branch(p: Platform) -> dict[str, str]:
    """Pick a branch as the UI does: search by part of its name, take one of the list."""
    resp = await p.client.get("/api/branches", params={"q": "工商 北京"})
    branches = (await resp.json())["branches"]
    assert branches
    return dict(branches[0])


async def send_deposit(p: Platform, iid: str) -> str:
    """Choose the deposit, give the account and a branch; return the account number."""
    view = await p.ok(iid, "choose", {"method": "deposit"})
    assert view["state"] == "account_details"
    account = new_account_number()
    branch = await a_branch(p)
    view = await p.ok(iid, "submit", {"account_number": account, "branch_code": branch["code"]})
    assert view["state"] == "awaiting_deposit"
    assert view["ui"]["data"]["branch"] == branch["name"]
    assert view["ui"]["data"]["account_number"].endswith(account[-4:])
    assert account not in json.dumps(view)
    return account


async def credited_amount(p: Platform, iid: str, account: str, *,
                          seconds: float = 15.0) -> int:
    """Wait until the bank statement shows the credit and the flow heard of it."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        statement = await (await p.client.get(f"/sandbox/bank/{account}.json")).json()
        view = await p.get(iid)
        if statement["credits"] and view["ui"]["data"]["credited"]:
            return int(statement["credits"][0]["amount_fen"])
        assert asyncio.get_running_loop().time() < deadline, (statement, view["ui"]["data"])
        await asyncio.sleep(0.05)


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def wrong_amounts(right: int, n: int) -> list[int]:
    return [a for a in range(1, 100) if a != right][:n]


# -- the tests ----------------------------------------------------------------------------

async def test_an_organisation_verifies_by_the_legal_representatives_face(
        platform: Platform) -> None:
    org = await new_organisation(platform)
    iid = await start(platform, org)
    view = await platform.get(iid)
    fields = {f["name"]: f for f in view["ui"]["fields"]}
    assert fields["legal_rep_name"]["value"] == REP_NAME
    assert fields["legal_rep_id"]["locked"]
    assert org.rep_id is not None
    assert fields["legal_rep_id"]["value"] == org.rep_id[:3] + "*" * 11 + org.rep_id[-4:]
    view = await platform.ok(iid, "choose", {"method": "face"})
    assert view["state"] == "face_scan"
    assert view["ui"]["data"]["qr_url"]
    session = await (await platform.client.get(
        "/sandbox/face/" + view["ui"]["data"]["qr_url"].rsplit("/", 1)[1] + ".json")).json()
    assert session["name"] == REP_NAME  # the representative's face, not the agent's
    await platform.face(iid, "pass")
    view = await platform.wait_for(iid, "verified")
    assert view["status"] == "finished"
    assert view["ui"]["data"]["status"] == {"zh": "已认证", "en": "Verified"}
    assert view["ui"]["data"]["method"] == {"zh": "法定代表人刷脸认证",
                                            "en": "Face scan of the legal representative"}
    row = await organisation_row(platform, org.account_id)
    assert row["verified"]
    assert row["verified_by"] == "face"
    events = await history(platform, iid)
    assert [e["trigger"] for e in events] == ["start", "choose", "face_result"]
    assert events[2]["actor"] == "provider:face"
    assert org.rep_id not in json.dumps(events, ensure_ascii=False)
    verify = await (await platform.client.get(f"/api/flows/{iid}/verify")).json()
    assert verify["ok"], verify
    # Verified now: a second verification cannot start.
    resp = await platform.client.post(f"/api/flows/{FLOW}")
    assert resp.status == 409
    assert (await resp.json())["error_id"] == "organisation_already_verified"


async def test_failed_face_scans_are_retried_within_the_policy_then_another_method(
        platform: Platform) -> None:
    org = await new_organisation(platform)
    iid = await start(platform, org)
    await platform.ok(iid, "choose", {"method": "face"})
    await platform.face(iid, "fail")
    view = await platform.wait_for(iid, "face_failed")
    assert view["ui"]["error"]["error_id"] == "face_failed"
    for n in (2, 3):
        view = await platform.ok(iid, "retry")
        assert view["ui"]["data"]["session"] == n
        await platform.face(iid, "fail")
        await platform.wait_for(iid, "face_failed")
    view = await platform.ok(iid, "retry")  # three sessions: no fourth
    assert view["state"] == "face_failed"
    assert view["ui"]["error"]["error_id"] == "face_sessions_used_up"
    view = await platform.ok(iid, "back")
    assert view["state"] == "choose_method"
    view = await platform.ok(iid, "choose", {"method": "face"})
    assert view["state"] == "choose_method"
    assert view["ui"]["fields"][0]["error"]["error_id"] == "face_sessions_used_up"
    view = await platform.ok(iid, "choose", {"method": "deposit"})
    assert view["state"] == "account_details"
    assert not (await organisation_row(platform, org.account_id))["verified"]


async def test_an_organisation_verifies_by_a_micro_deposit(platform: Platform) -> None:
    org = await new_organisation(platform)
    iid = await start(platform, org)
    account = await send_deposit(platform, iid)
    amount = await credited_amount(platform, iid, account)
    assert 1 <= amount <= 99
    wrong = wrong_amounts(amount, 1)[0]
    status, answer = await platform.step(iid, "submit_amount", {"amount": yuan(wrong)})
    assert status == 200
    assert answer["state"] == "awaiting_deposit"
    amount_field = next(f for f in answer["ui"]["fields"] if f["name"] == "amount")
    assert amount_field["error"]["error_id"] == "deposit_amount_wrong"
    assert [f["name"] for f in answer["ui"]["fields"]] == ["amount"]  # callback fields hidden
    view = await platform.ok(iid, "submit_amount", {"amount": yuan(amount)})
    assert view["state"] == "verified"
    assert view["ui"]["data"]["status"] == {"zh": "已认证", "en": "Verified"}
    row = await organisation_row(platform, org.account_id)
    assert row["verified"]
    assert row["verified_by"] == "deposit"
    events = await history(platform, iid)
    assert [e["trigger"] for e in events] == [
        "start", "choose", "submit", "deposit_credited", "submit_amount", "submit_amount"]
    credit = events[3]
    assert credit["actor"] == "provider:payment"
    assert credit["input"] == {"deposit_id": events[2]["effects"]["send_verification_deposit"][
        "deposit_id"], "status": "credited"}  # amount_fen: secret, never recorded
    assert credit["facts"]["deposit_credit"]["credited"] is True
    text = json.dumps(events, ensure_ascii=False)
    assert account not in text
    assert yuan(amount) not in text
    assert f'"amount_fen": {amount}' not in text
    assert org.rep_id is not None
    assert org.rep_id not in text
    verify = await (await platform.client.get(f"/api/flows/{iid}/verify")).json()
    assert verify["ok"], verify


async def test_three_wrong_amounts_end_the_attempt_and_a_fourth_is_refused(
        platform: Platform) -> None:
    org = await new_organisation(platform)
    iid = await start(platform, org)
    account = await send_deposit(platform, iid)
    amount = await credited_amount(platform, iid, account)
    one, two, three = wrong_amounts(amount, 3)
    for n, wrong in enumerate((one, two), start=1):
        view = await platform.ok(iid, "submit_amount", {"amount": yuan(wrong)})
        assert view["state"] == "awaiting_deposit", n
    view = await platform.ok(iid, "submit_amount", {"amount": yuan(three)})
    assert view["state"] == "choose_method"
    assert view["ui"]["error"]["error_id"] == "deposit_tries_used_up"
    version = view["version"]
    status, answer = await platform.step(iid, "submit_amount", {"amount": yuan(amount)})
    assert status == 409
    assert answer["error_id"] == "trigger_not_allowed"
    assert (await platform.get(iid))["version"] == version
    assert not (await organisation_row(platform, org.account_id))["verified"]
    # A new deposit starts the count again.
    account = await send_deposit(platform, iid)
    amount = await credited_amount(platform, iid, account)
    view = await platform.ok(iid, "submit_amount", {"amount": yuan(amount)})
    assert view["state"] == "verified"


async def test_bad_amounts_and_free_text_branches_are_refused(platform: Platform) -> None:
    org = await new_organisation(platform)
    iid = await start(platform, org)
    await platform.ok(iid, "choose", {"method": "deposit"})
    account = new_account_number()
    for branch in ("中国工商银行北京分行", "999999999999", ""):
        status, answer = await platform.step(iid, "submit", {"account_number": account,
                                                             "branch_code": branch})
        assert status == 422, answer
        errors = {e["field"]: e["error_id"] for e in answer["errors"]}
        assert errors == {"branch_code": "branch_unknown" if branch else "required"}
        assert answer["errors"][0]["zh"]
    status, answer = await platform.step(iid, "submit", {"account_number": "12ab",
                                                         "branch_code": "102100000019"})
    assert status == 422
    assert answer["errors"][0]["error_id"] == "bank_account_format"
    # The bank takes a while: an amount before the credit arrived is no try at all.
    platform.app[keys.SERVICES].providers.sandbox.payment.delay = timedelta(seconds=0.5)
    view = await platform.ok(iid, "submit", {"account_number": account,
                                             "branch_code": (await a_branch(platform))["code"]})
    assert view["state"] == "awaiting_deposit"
    assert view["ui"]["data"]["credited"] is False
    status, answer = await platform.step(iid, "submit_amount", {"amount": "0.50"})
    assert status == 422
    assert answer["errors"][0]["error_id"] == "deposit_not_credited"
    for bad, error_id in (("0.355", "amount_decimals"), ("abc", "amount_format"),
                          ("-0.10", "amount_negative")):
        status, answer = await platform.step(iid, "submit_amount", {"amount": bad})
        assert status == 422
        assert answer["errors"][0]["error_id"] == error_id
    amount = await credited_amount(platform, iid, account)
    view = await platform.ok(iid, "submit_amount", {"amount": yuan(wrong_amounts(amount, 1)[0])})
    assert view["state"] == "awaiting_deposit"
    assert view["ui"]["fields"][0]["error"]["error_id"] == "deposit_amount_wrong"
    events = await history(platform, iid)
    assert events[-1]["facts"]["check_deposit_amount"]["wrong"] == 1  # the first wrong try


async def test_a_deposit_expires_after_72_hours_without_anybody_visiting(
        platform: Platform, clock: FrozenClock) -> None:
    org = await new_organisation(platform)
    iid = await start(platform, org)
    account = await send_deposit(platform, iid)
    amount = await credited_amount(platform, iid, account)
    await platform.ok(iid, "submit_amount", {"amount": yuan(wrong_amounts(amount, 1)[0])})
    clock.advance(timedelta(hours=71, minutes=59))
    assert await platform.app[keys.TIMERS].run_once() >= 0
    store = platform.app[keys.STORE]
    assert (await store.load(iid))[0].state == "awaiting_deposit"
    clock.advance(timedelta(minutes=1, seconds=1))
    # The worker alone, no request: the timer fires through the ordinary step.
    timers = platform.app[keys.TIMERS]
    while (await store.load(iid))[0].state == "awaiting_deposit":
        assert await timers.run_once() > 0
    instance, _ = await store.load(iid)
    assert instance.state == "choose_method"
    assert instance.context["error"]["error_id"] == "deposit_expired"
    events = await history(platform, iid)
    last = events[-1]
    assert (last["trigger"], last["from"], last["to"], last["actor"]) == (
        "expire", "awaiting_deposit", "choose_method", "timer")
    assert "timer" in last["facts"]
    view = await platform.get(iid)
    assert view["ui"]["error"]["en"] == "The deposit expired; choose a method again"
    status, answer = await platform.step(iid, "submit_amount", {"amount": yuan(amount)})
    assert (status, answer["error_id"]) == (409, "trigger_not_allowed")
    assert not (await organisation_row(platform, org.account_id))["verified"]
    verify = await (await platform.client.get(f"/api/flows/{iid}/verify")).json()
    assert verify["ok"], verify


async def test_an_amount_entered_after_72_hours_is_refused(
        platform: Platform, clock: FrozenClock) -> None:
    org = await new_organisation(platform)
    iid = await start(platform, org)
    account = await send_deposit(platform, iid)
    amount = await credited_amount(platform, iid, account)
    clock.advance(timedelta(hours=72, seconds=1))
    # No worker ran: the step itself finds the deadline passed and fires it first.
    status, answer = await platform.step(iid, "submit_amount", {"amount": yuan(amount)})
    assert status == 409
    assert answer["error_id"] == "trigger_not_allowed"
    view = await platform.get(iid)
    assert view["state"] == "choose_method"
    assert view["ui"]["error"]["error_id"] == "deposit_expired"
    events = await history(platform, iid)
    assert (events[-1]["trigger"], events[-1]["actor"]) == ("expire", "timer")
    assert not (await organisation_row(platform, org.account_id))["verified"]


async def _face_session(platform: Platform, iid: str) -> str:
    view = await platform.get(iid)
    return str(view["ui"]["data"]["qr_url"]).rsplit("/", 1)[1]


async def _callback(platform: Platform, clock: FrozenClock, provider: str,
                    payload: dict[str, Any], *, secret: str = DEV_CALLBACK_SECRET,
                    tamper: bool = False) -> tuple[int, dict[str, Any]]:
    body = encode_body(payload)
    headers = {"Content-Type": "application/json",
               **CallbackSigner(secret, clock).headers(payload["event_id"], body)}
    if tamper:
        body = encode_body({**payload, "result": "pass"})
    resp = await platform.client.post(f"/api/callbacks/{provider}", data=body,
                                      headers=headers)
    return resp.status, dict(await resp.json())


async def test_callbacks_badly_signed_replayed_or_late_change_nothing(
        platform: Platform, clock: FrozenClock) -> None:
    org = await new_organisation(platform)
    iid = await start(platform, org)
    await platform.ok(iid, "choose", {"method": "face"})
    session_id = await _face_session(platform, iid)
    version = (await platform.get(iid))["version"]
    fail = {"event_id": "evt_" + uuid.uuid4().hex, "session_id": session_id, "result": "fail"}
    for kw in ({"secret": "not-the-callback-secret-at-all"}, {"tamper": True}):
        status, answer = await _callback(platform, clock, "face", fail, **kw)
        assert status == 401
        assert answer["error_id"] == "callback_signature_invalid"
    view = await platform.get(iid)
    assert (view["state"], view["version"]) == ("face_scan", version)

    status, answer = await _callback(platform, clock, "face", fail)
    assert status == 200, answer
    assert answer["state"] == "face_failed"
    status, answer = await _callback(platform, clock, "face", fail)  # the same event again
    assert status == 409
    assert answer["error_id"] == "callback_replayed"
    view = await platform.get(iid)
    assert (view["state"], view["version"]) == ("face_failed", version + 1)

    await platform.ok(iid, "retry")
    second = await _face_session(platform, iid)
    passed = {"event_id": "evt_" + uuid.uuid4().hex, "session_id": second, "result": "pass"}
    status, answer = await _callback(platform, clock, "face", passed)
    assert (status, answer["state"]) == (200, "verified")
    finished = (await platform.get(iid))["version"]
    late = {"event_id": "evt_" + uuid.uuid4().hex, "session_id": second, "result": "fail"}
    status, answer = await _callback(platform, clock, "face", late)
    assert status == 409
    assert answer["error_id"] == "flow_finished"
    view = await platform.get(iid)
    assert (view["state"], view["version"]) == ("verified", finished)
    assert (await organisation_row(platform, org.account_id))["verified_by"] == "face"


async def test_a_late_callback_of_an_earlier_deposit_is_refused(
        platform: Platform, clock: FrozenClock) -> None:
    org = await new_organisation(platform)
    iid = await start(platform, org)
    account = await send_deposit(platform, iid)
    await credited_amount(platform, iid, account)
    first = (await history(platform, iid))[2]["effects"]["send_verification_deposit"]
    await platform.ok(iid, "back")
    account = await send_deposit(platform, iid)
    amount = await credited_amount(platform, iid, account)
    version = (await platform.get(iid))["version"]
    stale = {"event_id": "evt_" + uuid.uuid4().hex, "deposit_id": first["deposit_id"],
             "status": "credited", "amount_fen": 1 if amount != 1 else 2}
    status, answer = await _callback(platform, clock, "payment", stale)
    assert status == 422
    assert answer["errors"][0]["error_id"] == "deposit_not_current"
    assert (await platform.get(iid))["version"] == version
    view = await platform.ok(iid, "submit_amount", {"amount": yuan(amount)})
    assert view["state"] == "verified"


async def test_only_an_unverified_organisation_may_start_and_only_it_may_see_its_flow(
        platform: Platform) -> None:
    resp = await platform.client.post(f"/api/flows/{FLOW}")  # not signed in
    assert resp.status == 403
    person = await new_person(platform)
    resp = await platform.client.post(f"/api/flows/{FLOW}", headers=person.auth)
    assert resp.status == 403
    answer = await resp.json()
    assert answer["error_id"] == "organisation_account_required"
    assert answer["message"]["zh"]
    verified = await new_organisation(platform, verified=True)
    resp = await platform.client.post(f"/api/flows/{FLOW}", headers=verified.auth)
    assert resp.status == 409
    assert (await resp.json())["error_id"] == "organisation_already_verified"

    org = await new_organisation(platform)
    iid = await start(platform, org)
    other = await new_organisation(platform)
    for method, path, body in (("GET", f"/api/flows/{iid}", None),
                               ("GET", f"/api/flows/{iid}/history", None),
                               ("POST", f"/api/flows/{iid}/events/choose",
                                {"method": "deposit"})):
        for who in (other, person):
            resp = await platform.client.request(method, path, json=body, headers=who.auth)
            assert resp.status == 403, (method, path)
    view = await platform.get(iid)
    assert (view["state"], view["version"]) == ("choose_method", 1)


async def test_a_late_callback_of_an_earlier_face_session_is_refused(
        platform: Platform, clock: FrozenClock) -> None:
    org = await new_organisation(platform)
    iid = await start(platform, org)
    await platform.ok(iid, "choose", {"method": "face"})
    first = await _face_session(platform, iid)
    await platform.ok(iid, "back")
    await platform.ok(iid, "choose", {"method": "face"})
    second = await _face_session(platform, iid)
    assert second != first
    version = (await platform.get(iid))["version"]
    late = {"event_id": "evt_" + uuid.uuid4().hex, "session_id": first, "result": "pass"}
    status, answer = await _callback(platform, clock, "face", late)
    assert status == 422
    assert answer["errors"][0]["error_id"] == "face_session_not_current"
    assert answer["errors"][0]["field"] == "session_id"
    view = await platform.get(iid)
    assert (view["state"], view["version"]) == ("face_scan", version)
    assert not (await organisation_row(platform, org.account_id))["verified"]
    current = {"event_id": "evt_" + uuid.uuid4().hex, "session_id": second, "result": "pass"}
    status, answer = await _callback(platform, clock, "face", current)
    assert (status, answer["state"]) == (200, "verified")


async def test_the_legal_representative_has_the_face_sessions_of_one_person(
        platform: Platform) -> None:
    org = await new_organisation(platform)
    assert org.rep_id is not None
    # Three of the person's five a day, spent registering in person.
    for _ in range(3):
        reg = (await platform.start("personal_registration"))["id"]
        view = await platform.ok(reg, "submit", {"name": REP_NAME, "id_number": org.rep_id,
                                                 "agree": True})
        assert view["state"] == "real_name"
    sign_in(platform, org)
    iid = await start(platform, org)
    for _ in range(2):
        assert (await platform.ok(iid, "choose", {"method": "face"}))["state"] == "face_scan"
        await platform.ok(iid, "back")
    view = await platform.ok(iid, "choose", {"method": "face"})
    assert view["state"] == "choose_method"
    assert view["ui"]["fields"][0]["error"]["error_id"] == "face_sessions_used_up"
    # A new instance of the verification buys none either; the deposit is still there.
    iid = await start(platform, org)
    view = await platform.ok(iid, "choose", {"method": "face"})
    assert view["ui"]["fields"][0]["error"]["error_id"] == "face_sessions_used_up"
    assert (await platform.ok(iid, "choose", {"method": "deposit"}))["state"] == \
        "account_details"
