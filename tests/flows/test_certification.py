"""Changing an organisation's certification data (SPEC 10.1.1), end to end over HTTP:
``change_certification`` in flows.yaml, on flows/certification.py and the face and
deposit building blocks of organisation verification.

Organisations are inserted through the Accounts port (tests/flows/test_verification.py)
and signed in with their session cookie; signing in as a browser does (legal_login)
shows which data is in force.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from engine import FrozenClock, OutboxMessage
from flows.certification import labelled
from flows.pii import MOBILE, RESIDENT_ID
from flows.sessions import RENAMED, rename_sender
from tests.flows.test_legal import errors_of, field
from tests.flows.test_legal import sign_in as legal_sign_in
from tests.flows.test_phones import second_browser
from tests.flows.test_verification import (
    REP_NAME,
    Who,
    a_branch,
    credited_amount,
    history,
    new_account_number,
    new_organisation,
    new_person,
    organisation_row,
    sign_in,
    wrong_amounts,
    yuan,
)
from tests.platform import Platform, new_credit_code, new_id_number, new_mobile
from web import keys

FLOW = "change_certification"
OLD_NAME = "测试科技有限公司"  # what new_organisation names every organisation
NEW_NAME = "新名称科技有限公司"
NEW_REP = "王芳"


def masked_id(id_number: str) -> str:
    return id_number[:3] + "*" * 11 + id_number[-4:]


def masked_mobile(phone: str) -> str:
    return phone[:3] + "****" + phone[-4:]


async def start(p: Platform, org: Who) -> dict[str, Any]:
    sign_in(p, org)
    view = await p.start(FLOW)
    assert view["state"] == "edit"
    return view


def form(view: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The edit step's form as the client got it (sensitive fields left empty: kept),
    with ``changes``."""
    body = {f["name"]: f["value"] for f in view["ui"]["fields"]
            if f["name"] in ("org_name", "credit_code", "legal_rep_name")}
    return {**body, **changes}


async def changes(pool: asyncpg.Pool, organisation_id: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch(
            "SELECT * FROM certification_changes WHERE organisation_id = $1 ORDER BY created_at",
            uuid.UUID(organisation_id)))


async def display_name_after_sign_in(p: Platform, org: Who) -> tuple[str, list[str]]:
    """Sign the organisation in as a browser does (its primary agent, SMS code): the
    session's display name, and the agents the sign-in offered."""
    assert org.phone is not None
    async with second_browser(p) as browser:
        signed = await legal_sign_in(browser, org.login_name)
        choices = field(signed["view"], "agent")["choices"]
        code = await browser.sms_code(org.phone)
        view = await browser.ok(signed["id"], "submit", {"agent": choices[0]["value"],
                                                         "sms_code": code})
        assert view["state"] == "signed_in"
        me = await (await browser.client.get("/api/session")).json()
        return str(me["display_name"]), [c["label"] for c in choices]


async def audit(p: Platform, organisation_id: str) -> list[dict[str, Any]]:
    entries = await p.app[keys.SERVICES].accounts.audit_page(target=f"account:{organisation_id}")
    return list(reversed(entries))


def assert_no_personal_data(text: str, *values: str | None) -> None:
    for value in values:
        assert value is None or value not in text


# -- unverified: the change applies at once --------------------------------------------------

async def test_an_unverified_organisation_changes_at_once_and_signs_in_with_the_new_data(
        platform: Platform, pool: asyncpg.Pool) -> None:
    org = await new_organisation(platform)
    assert org.rep_id is not None
    view = await start(platform, org)
    iid = view["id"]
    fields = {f["name"]: f for f in view["ui"]["fields"]}
    assert fields["org_name"]["value"] == OLD_NAME
    assert fields["credit_code"]["value"] == org.credit_code
    assert fields["legal_rep_name"]["value"] == REP_NAME
    assert fields["legal_rep_id"]["value"] == masked_id(org.rep_id)
    assert (fields["legal_rep_id"]["locked"], fields["legal_rep_id"]["sensitive"]) == (False, True)
    assert fields["mobile"]["value"] is None  # no contact phone yet
    assert view["ui"]["data"]["status"] == {"zh": "未认证", "en": "Not verified"}
    credit = new_credit_code()
    view = await platform.ok(iid, "submit", form(view, org_name=NEW_NAME, credit_code=credit))
    assert view["state"] == "applied"
    assert view["ui"]["data"] == {"organisation": NEW_NAME, "method": None,
                                  "status": {"zh": "未认证", "en": "Not verified"},
                                  "changed": labelled(["name", "credit_code"])}
    row = await organisation_row(platform, org.account_id)
    assert (row["name"], row["credit_code"], row["legal_rep_name"]) == (NEW_NAME, credit,
                                                                        REP_NAME)
    assert not row["verified"]
    assert await changes(pool, org.account_id) == []  # nothing waits
    # Signing in shows the new name; the agents are the same.
    name, agents = await display_name_after_sign_in(platform, org)
    assert name == NEW_NAME
    assert org.phone is not None
    assert agents == [f"{REP_NAME} {masked_mobile(org.phone)}"]
    [entry] = await audit(platform, org.account_id)
    assert (entry["action"], entry["actor"]) == ("change_certification",
                                                 f"account:{org.account_id}")
    assert entry["details"]["changed"] == ["name", "credit_code"]
    text = json.dumps(await history(platform, iid), ensure_ascii=False)
    assert_no_personal_data(text, org.rep_id, org.phone)
    verify = await (await platform.client.get(f"/api/flows/{iid}/verify")).json()
    assert verify["ok"], verify


async def test_the_organisations_sessions_show_its_new_name_once_the_change_commits(
        platform: Platform) -> None:
    """Its sessions were made under the old name: each shows the new one from its next
    request once the step's message is delivered (the header, GET /api/session)."""
    org = await new_organisation(platform)
    view = await start(platform, org)
    session = await platform.client.get("/api/session")
    assert (await session.json())["display_name"] == OLD_NAME
    view = await platform.ok(view["id"], "submit", form(view, org_name=NEW_NAME))
    assert view["state"] == "applied"
    await platform.deliver_outbox()
    session = await platform.client.get("/api/session")
    assert (await session.json())["display_name"] == NEW_NAME
    header = (await (await platform.client.get("/account")).text()).split("</header>")[0]
    assert NEW_NAME in header
    assert OLD_NAME not in header


async def test_a_rename_shows_the_name_the_database_has_when_delivered(
        platform: Platform) -> None:
    """Two renames' messages may arrive in either order: each shows the name in force
    when it is delivered, not the one it was sent with."""
    org = await new_organisation(platform)
    sign_in(platform, org)
    services = platform.app[keys.SERVICES]
    names = iter(["第二个名称有限公司"])

    async def now_called(account_id: str) -> str | None:
        assert account_id == org.account_id
        return next(names)

    renamed = rename_sender(services.sessions, now_called)
    await renamed(OutboxMessage(1, str(uuid.uuid4()), 2, RENAMED,
                                {"account_id": org.account_id}, "k", 0))
    session = await platform.client.get("/api/session")
    assert (await session.json())["display_name"] == "第二个名称有限公司"
    # An account gone since: nothing shown changes.
    gone = rename_sender(services.sessions, lambda _: _none())
    await gone(OutboxMessage(2, str(uuid.uuid4()), 2, RENAMED,
                             {"account_id": org.account_id}, "k2", 0))
    session = await platform.client.get("/api/session")
    assert (await session.json())["display_name"] == "第二个名称有限公司"


async def _none() -> None:
    return None


async def test_a_new_contact_phone_is_proven_by_an_sms_code_and_stored_sealed(
        platform: Platform) -> None:
    org = await new_organisation(platform)
    view = await start(platform, org)
    iid = view["id"]
    phone = new_mobile()
    status, answer = await platform.step(iid, "submit", form(view, mobile=phone))
    assert (status, errors_of(answer)) == (422, {"sms_code_required": "sms_code"})
    await platform.ok(iid, "send_code", {"mobile": phone})
    code = await platform.sms_code(phone)
    assert code is not None
    status, answer = await platform.step(iid, "submit", form(
        view, mobile=phone, sms_code="000000" if code != "000000" else "111111"))
    assert (status, errors_of(answer)) == (422, {"sms_code_wrong": "sms_code"})
    # A code sent to another number does not prove this one.
    other = new_mobile()
    status, answer = await platform.step(iid, "submit", form(view, mobile=other, sms_code=code))
    assert (status, errors_of(answer)) == (422, {"sms_code_expired": "sms_code"})
    view = await platform.ok(iid, "submit", form(view, mobile=phone, sms_code=code))
    assert (view["state"], view["ui"]["data"]["changed"]) == ("applied",
                                                             labelled(["contact_phone"]))
    row = await organisation_row(platform, org.account_id)
    vault = platform.app[keys.SERVICES].vault
    assert vault.open(MOBILE, row["contact_phone_sealed"]) == phone
    assert row["contact_phone_index"] == vault.index(MOBILE, phone)
    assert phone.encode() not in row["contact_phone_sealed"]
    # The next change shows it masked and keeps it when left empty.
    view = await platform.start(FLOW)
    assert field(view, "mobile")["value"] == masked_mobile(phone)
    assert view["ui"]["data"]["contact_phone"] == masked_mobile(phone)
    view = await platform.ok(view["id"], "submit", form(view, org_name=NEW_NAME))
    assert view["ui"]["data"]["changed"] == labelled(["name"])
    row = await organisation_row(platform, org.account_id)
    assert vault.open(MOBILE, row["contact_phone_sealed"]) == phone
    text = json.dumps(await history(platform, iid), ensure_ascii=False)
    assert_no_personal_data(text, phone, org.rep_id)


# -- refusals ---------------------------------------------------------------------------------

async def test_bad_formats_taken_credit_codes_and_no_change_are_refused_leaving_all_as_it_was(
        platform: Platform) -> None:
    other = await new_organisation(platform)
    org = await new_organisation(platform)
    view = await start(platform, org)
    iid = view["id"]
    assert org.credit_code is not None
    bad_code = org.credit_code[:17] + ("0" if org.credit_code[17] != "0" else "1")
    assert org.rep_id is not None
    bad_id = org.rep_id[:17] + ("0" if org.rep_id[17] != "0" else "1")
    status, answer = await platform.step(iid, "submit", form(
        view, credit_code=bad_code, legal_rep_id=bad_id, mobile="12345", org_name=""))
    assert status == 422
    assert errors_of(answer) == {"credit_code_check": "credit_code",
                                 "resident_id_check": "legal_rep_id",
                                 "mobile_invalid": "mobile", "required": "org_name"}
    assert all(e["zh"] and e["en"] for e in answer["errors"])
    status, answer = await platform.step(iid, "submit", form(view))
    assert (status, answer["errors"][0]["error_id"], answer["errors"][0]["field"]) == (
        422, "certification_unchanged", None)
    # Another organisation's credit code, however it is typed.
    assert other.credit_code is not None
    typed = " ".join((other.credit_code[:9].lower(), other.credit_code[9:]))
    status, answer = await platform.step(iid, "submit", form(view, credit_code=typed))
    assert (status, errors_of(answer)) == (422, {"credit_code_registered": "credit_code"})
    # A representative the registry does not know with that ID number.
    new_rep_id = new_id_number()
    await platform.app[keys.SERVICES].providers.sandbox.realname.add_pair(NEW_REP, new_rep_id)
    status, answer = await platform.step(iid, "submit", form(
        view, legal_rep_name=NEW_REP, legal_rep_id=new_rep_id))
    assert (status, errors_of(answer)) == (422, {"realname_mismatch": "legal_rep_name"})
    got = await platform.get(iid)
    assert (got["state"], got["version"]) == ("edit", 1)
    row = await organisation_row(platform, org.account_id)
    assert (row["name"], row["credit_code"]) == (OLD_NAME, org.credit_code)


async def test_only_a_signed_in_organisation_may_change_its_data(platform: Platform) -> None:
    resp = await platform.client.post(f"/api/flows/{FLOW}")
    assert resp.status == 403
    person = await new_person(platform)
    resp = await platform.client.post(f"/api/flows/{FLOW}", headers=person.auth)
    assert resp.status == 403
    assert (await resp.json())["error_id"] == "organisation_account_required"
    org = await new_organisation(platform)
    view = await start(platform, org)
    other = await new_organisation(platform)
    resp = await platform.client.post(f"/api/flows/{view['id']}/events/submit",
                                      json=form(view, org_name=NEW_NAME), headers=other.auth)
    assert resp.status == 403
    assert (await organisation_row(platform, org.account_id))["name"] == OLD_NAME


# -- verified: pending until verified again ------------------------------------------------------

async def propose(p: Platform, org: Who, **changes: Any) -> str:
    """Start a change of a verified organisation and submit ``changes``: the instance,
    waiting for re-verification."""
    view = await start(p, org)
    assert view["ui"]["data"]["status"] == {"zh": "已认证", "en": "Verified"}
    view = await p.ok(view["id"], "submit", form(view, **changes))
    assert view["state"] == "choose_method", view
    return str(view["id"])


async def test_a_verified_organisations_change_waits_and_the_old_data_stays_in_force(
        platform: Platform, pool: asyncpg.Pool, clock: FrozenClock) -> None:
    org = await new_organisation(platform, verified=True)
    assert org.rep_id is not None
    assert org.phone is not None
    before = await organisation_row(platform, org.account_id)
    new_rep_id, phone = new_id_number(), new_mobile()
    view = await start(platform, org)
    iid = view["id"]
    await platform.ok(iid, "send_code", {"mobile": phone})
    code = await platform.sms_code(phone)
    view = await platform.ok(iid, "submit", form(
        view, org_name=NEW_NAME, legal_rep_name=NEW_REP, legal_rep_id=new_rep_id,
        mobile=phone, sms_code=code))
    assert view["state"] == "choose_method"
    assert view["ui"]["data"]["changed"] == labelled(["name", "legal_rep_name",
                                                      "legal_rep_id", "contact_phone"])
    rep = {f["name"]: f for f in view["ui"]["fields"]}
    assert (rep["rep_name"]["value"], rep["rep_name"]["locked"]) == (NEW_REP, True)
    assert rep["rep_id"]["value"] == masked_id(new_rep_id)
    # Nothing of the organisation changed: its data in force is the old one.
    assert dict(await organisation_row(platform, org.account_id)) == dict(before)
    name, agents = await display_name_after_sign_in(platform, org)
    assert name == OLD_NAME
    assert agents == [f"{REP_NAME} {masked_mobile(org.phone)}"]
    # What the personal center shows of it.
    pending = await platform.app[keys.SERVICES].accounts.pending_change(
        org.account_id, now=clock.now())
    assert pending is not None
    assert (pending.status, pending.instance_id) == ("pending", iid)
    assert pending.changed == ("name", "legal_rep_name", "legal_rep_id", "contact_phone")
    assert pending.shown == {"name": NEW_NAME, "credit_code": org.credit_code,
                             "legal_rep_name": NEW_REP, "legal_rep_id": masked_id(new_rep_id),
                             "contact_phone": masked_mobile(phone)}
    assert pending.expires_at == pending.created_at + timedelta(days=7)
    page = await (await platform.client.get("/api/me")).json()
    info = page["organisation"]
    assert (info["name"], info["legal_representative"]["name"]) == (OLD_NAME, REP_NAME)
    assert info["pending_change"] == {
        "changed": ["name", "legal_rep_name", "legal_rep_id", "contact_phone"],
        "new": pending.shown, "created_at": pending.created_at.isoformat(),
        "expires_at": pending.expires_at.isoformat(), "flow": FLOW,
        "instance": f"/api/flows/{iid}"}
    [offer] = [f for f in page["flows"] if f["name"] == FLOW]
    assert (offer["start"], offer["resume"]) == (None, f"/api/flows/{iid}")
    assert_no_personal_data(json.dumps(page, ensure_ascii=False), new_rep_id, phone)
    # One at a time: another start is refused, with the pending change named.
    resp = await platform.client.post(f"/api/flows/{FLOW}")
    assert resp.status == 409
    assert (await resp.json())["error_id"] == "certification_change_pending"

    # The face of the legal representative named in the change applies it.
    view = await platform.ok(iid, "choose", {"method": "face"})
    assert view["state"] == "face_scan"
    session = await (await platform.client.get(
        "/sandbox/face/" + view["ui"]["data"]["qr_url"].rsplit("/", 1)[1] + ".json")).json()
    assert session["name"] == NEW_REP
    await platform.face(iid, "pass")
    view = await platform.wait_for(iid, "applied")
    assert view["ui"]["data"]["method"] == {"zh": "法定代表人刷脸认证",
                                            "en": "Face scan of the legal representative"}
    assert view["ui"]["data"]["status"] == {"zh": "已认证", "en": "Verified"}
    row = await organisation_row(platform, org.account_id)
    vault = platform.app[keys.SERVICES].vault
    assert (row["name"], row["legal_rep_name"], row["verified"], row["verified_by"]) == (
        NEW_NAME, NEW_REP, True, "face")
    assert row["verified_at"] == clock.now()
    assert vault.open(RESIDENT_ID, row["legal_rep_id_sealed"]) == new_rep_id
    assert row["legal_rep_id_index"] == vault.index(RESIDENT_ID, new_rep_id)
    assert vault.open(MOBILE, row["contact_phone_sealed"]) == phone
    assert [r["status"] for r in await changes(pool, org.account_id)] == ["applied"]
    assert await platform.app[keys.SERVICES].accounts.pending_change(
        org.account_id, now=clock.now()) is None
    page = await (await platform.client.get("/api/me")).json()
    assert page["organisation"]["name"] == NEW_NAME
    assert page["organisation"]["contact_mobile_masked"] == masked_mobile(phone)
    assert page["organisation"]["pending_change"] is None
    assert page["organisation"]["verification"]["method"] == "face"
    [offer] = [f for f in page["flows"] if f["name"] == FLOW]
    assert (offer["start"], offer["resume"]) == (f"/api/flows/{FLOW}", None)
    # What the next sign-in shows (one sign-in code a minute: read where it reads it).
    account = await platform.app[keys.SERVICES].accounts.by_id(org.account_id)
    assert account is not None
    assert account.display_name == NEW_NAME
    assert [e["action"] for e in await audit(platform, org.account_id)] == [
        "propose_certification_change", "change_certification"]
    events = await history(platform, iid)
    assert [e["trigger"] for e in events] == ["start", "send_code", "submit", "choose",
                                              "face_result"]
    text = json.dumps(events, ensure_ascii=False) + json.dumps(
        await audit(platform, org.account_id), ensure_ascii=False, default=str)
    assert_no_personal_data(text, org.rep_id, new_rep_id, phone, org.phone)
    verify = await (await platform.client.get(f"/api/flows/{iid}/verify")).json()
    assert verify["ok"], verify


async def test_a_deposit_applies_a_pending_change(platform: Platform, pool: asyncpg.Pool) -> None:
    org = await new_organisation(platform, verified=True)
    credit = new_credit_code()
    iid = await propose(platform, org, credit_code=credit)
    view = await platform.ok(iid, "choose", {"method": "deposit"})
    assert view["state"] == "account_details"
    account = new_account_number()
    view = await platform.ok(iid, "submit", {"account_number": account,
                                             "branch_code": (await a_branch(platform))["code"]})
    assert view["state"] == "awaiting_deposit"
    amount = await credited_amount(platform, iid, account)
    view = await platform.ok(iid, "submit_amount", {"amount": yuan(wrong_amounts(amount, 1)[0])})
    assert view["state"] == "awaiting_deposit"
    assert (await organisation_row(platform, org.account_id))["credit_code"] == org.credit_code
    view = await platform.ok(iid, "submit_amount", {"amount": yuan(amount)})
    assert (view["state"], view["ui"]["data"]["method"]) == (
        "applied", {"zh": "对公账户打款认证", "en": "Corporate account deposit"})
    row = await organisation_row(platform, org.account_id)
    assert (row["credit_code"], row["verified"], row["verified_by"]) == (credit, True, "deposit")
    assert [r["status"] for r in await changes(pool, org.account_id)] == ["applied"]
    text = json.dumps(await history(platform, iid), ensure_ascii=False)
    assert_no_personal_data(text, account, org.rep_id)


async def test_a_withdrawn_change_leaves_the_data_and_lets_a_new_one_start(
        platform: Platform, pool: asyncpg.Pool) -> None:
    org = await new_organisation(platform, verified=True)
    iid = await propose(platform, org, org_name=NEW_NAME)
    await platform.ok(iid, "choose", {"method": "face"})
    view = await platform.ok(iid, "withdraw")
    assert (view["state"], view["status"]) == ("withdrawn", "finished")
    assert [r["status"] for r in await changes(pool, org.account_id)] == ["withdrawn"]
    row = await organisation_row(platform, org.account_id)
    assert (row["name"], row["verified"], row["verified_by"]) == (OLD_NAME, True, "deposit")
    assert [e["action"] for e in await audit(platform, org.account_id)] == [
        "propose_certification_change", "withdrawn_certification_change"]
    await propose(platform, org, org_name=NEW_NAME)


async def test_a_change_expires_with_its_deposit_and_never_blocks_a_new_one(
        platform: Platform, pool: asyncpg.Pool, clock: FrozenClock) -> None:
    org = await new_organisation(platform, verified=True)
    iid = await propose(platform, org, org_name=NEW_NAME)
    await platform.ok(iid, "choose", {"method": "deposit"})
    account = new_account_number()
    await platform.ok(iid, "submit", {"account_number": account,
                                      "branch_code": (await a_branch(platform))["code"]})
    amount = await credited_amount(platform, iid, account)
    accounts = platform.app[keys.SERVICES].accounts
    pending = await accounts.pending_change(org.account_id, now=clock.now())
    assert pending is not None
    assert pending.expires_at == clock.now() + timedelta(hours=72)  # the deposit's deadline
    clock.advance(timedelta(hours=72, seconds=1))
    # Before any timer fired, the change is over for every reader.
    assert await accounts.pending_change(org.account_id, now=clock.now()) is None
    timers, store = platform.app[keys.TIMERS], platform.app[keys.STORE]
    while (await store.load(iid))[0].state == "awaiting_deposit":
        assert await timers.run_once() > 0
    view = await platform.get(iid)
    assert (view["state"], view["ui"]["error"]["error_id"]) == ("expired", "deposit_expired")
    status, answer = await platform.step(iid, "submit_amount", {"amount": yuan(amount)})
    assert (status, answer["error_id"]) == (409, "flow_finished")
    assert [r["status"] for r in await changes(pool, org.account_id)] == ["expired"]
    assert (await organisation_row(platform, org.account_id))["name"] == OLD_NAME
    await propose(platform, org, org_name=NEW_NAME)


async def test_a_change_abandoned_until_its_flow_expires_is_marked_expired_by_the_next(
        platform: Platform, pool: asyncpg.Pool, clock: FrozenClock) -> None:
    org = await new_organisation(platform, verified=True)
    iid = await propose(platform, org, org_name=NEW_NAME)
    clock.advance(timedelta(days=7, seconds=1))
    assert await platform.app[keys.SERVICES].accounts.pending_change(
        org.account_id, now=clock.now()) is None
    status, answer = await platform.step(iid, "choose", {"method": "face"})
    assert (status, answer["error_id"]) == (410, "flow_expired")
    assert [r["status"] for r in await changes(pool, org.account_id)] == ["pending"]
    second = await propose(platform, org, org_name="第三个名称有限公司")
    rows = await changes(pool, org.account_id)
    assert [(r["status"], str(r["instance_id"])) for r in rows] == [
        ("expired", iid), ("pending", second)]


async def test_two_changes_submitted_at_once_make_one_pending_change(
        platform: Platform, pool: asyncpg.Pool) -> None:
    org = await new_organisation(platform, verified=True)
    sign_in(platform, org)
    first, second = await asyncio.gather(platform.start(FLOW), platform.start(FLOW))
    answers = await asyncio.gather(
        platform.step(first["id"], "submit", form(first, org_name="甲有限公司")),
        platform.step(second["id"], "submit", form(second, org_name="乙有限公司")))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200, 409], answers
    refused = next(answer for status, answer in answers if status == 409)
    assert refused["error_id"] == "certification_change_pending"
    assert refused["message"]["zh"]
    rows = await changes(pool, org.account_id)
    assert [r["status"] for r in rows] == ["pending"]
    won = next(view for status, view in answers if status == 200)
    assert str(rows[0]["instance_id"]) == won["id"]


async def test_two_organisations_cannot_both_claim_one_new_credit_code(
        platform: Platform) -> None:
    one = await new_organisation(platform, verified=True)
    two = await new_organisation(platform, verified=True)
    credit = new_credit_code()
    await propose(platform, one, credit_code=credit)
    view = await start(platform, two)
    status, answer = await platform.step(view["id"], "submit", form(view, credit_code=credit))
    assert (status, errors_of(answer)) == (422, {"credit_code_registered": "credit_code"})


@pytest.mark.parametrize("checked_first", [True, False],
                         ids=["natural-race", "both-past-the-checks"])
async def test_two_organisations_racing_for_one_credit_code_end_with_one_holder(
        platform: Platform, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch,
        checked_first: bool) -> None:
    orgs = [await new_organisation(platform) for _ in range(2)]
    views = []
    for org in orgs:
        views.append(await start(platform, org))
    credit = new_credit_code()
    if not checked_first:
        # Both pass the look-up before either commits: only the unique key decides.
        async def nobody(_: str) -> None:
            return None

        monkeypatch.setattr(platform.app[keys.SERVICES].accounts,
                            "organisation_by_credit_code", nobody)
    answers = await asyncio.gather(*(
        platform.client.post(f"/api/flows/{view['id']}/events/submit",
                             json=form(view, credit_code=credit), headers=org.auth)
        for org, view in zip(orgs, views, strict=True)))
    bodies = [await resp.json() for resp in answers]
    statuses = sorted(resp.status for resp in answers)
    assert statuses == [200, 422], bodies
    loser = next(body for resp, body in zip(answers, bodies, strict=True)
                 if resp.status == 422)
    assert errors_of(loser) == {"credit_code_registered": "credit_code"}
    async with pool.acquire() as conn:
        holders = await conn.fetchval(
            "SELECT count(*) FROM organisations WHERE credit_code = $1", credit)
    assert holders == 1
