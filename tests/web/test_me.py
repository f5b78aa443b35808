"""The personal center's page, ``GET /api/me`` (SPEC 10): who is signed in, masked; an
organisation's registration, verification, agents; the flows each account may start now.
"""

from __future__ import annotations

import uuid
from typing import Any

from flows.pii import MOBILE, RESIDENT_ID
from tests.flows.test_phones import masked
from tests.flows.test_seals import create
from tests.flows.test_verification import (
    REP_NAME,
    Who,
    _session,
    _write,
    new_organisation,
    new_person,
    sign_in,
)
from tests.platform import Platform, new_id_number, new_mobile
from web import keys


def masked_id(id_number: str) -> str:
    return f"{id_number[:3]}{'*' * 11}{id_number[-4:]}"


async def me(p: Platform, who: Who | None = None) -> tuple[int, dict[str, Any]]:
    headers = who.auth if who is not None else {}
    answer = await p.client.get("/api/me", headers=headers)
    return answer.status, await answer.json()


def flow_names(page: dict[str, Any]) -> list[str]:
    return [f["name"] for f in page["flows"]]


async def test_nobody_signed_in_gets_a_401_problem(platform: Platform) -> None:
    answer = await platform.client.get("/api/me")
    assert answer.status == 401
    assert answer.content_type == "application/problem+json"
    assert (await answer.json())["error_id"] == "not_signed_in"
    answer = await platform.client.get("/api/me", headers={"Authorization": "Bearer nope"})
    assert answer.status == 401


async def test_a_person_sees_the_account_masked_and_the_flows_offered_to_persons(
        platform: Platform) -> None:
    person = await new_person(platform)
    status, page = await me(platform, person)
    assert status == 200, page
    id_number = platform.app[keys.SERVICES].vault.open(
        RESIDENT_ID, (await platform.app[keys.SERVICES].accounts.by_id(
            person.account_id)).id_number_sealed)
    assert page["kind"] == "personal"
    assert page["login_name"] == person.login_name
    assert page["id_number_masked"] == masked_id(id_number)
    assert page["mobile_masked"] == masked(person.phone or "")
    assert "organisation" not in page
    assert page["seals"] == []
    assert flow_names(page) == ["change_phone", "change_password", "create_seal"]
    assert page["flows"][0]["title"] == {"zh": "绑定手机号", "en": "Change the mobile number"}
    # Nothing whole: neither the ID number nor the phone.
    text = await (await platform.client.get("/api/me", headers=person.auth)).text()
    assert id_number not in text
    assert (person.phone or "") not in text
    answer = await platform.client.get("/api/me", headers=person.auth)
    assert answer.headers["Cache-Control"] == "no-store"


async def test_every_flow_offered_starts_for_its_audience(platform: Platform) -> None:
    """The listing and the gate agree: what the page offers, the account can start."""
    accounts = [await new_person(platform), await new_person(platform, kind="supervisor"),
                await new_organisation(platform), await new_organisation(platform,
                                                                        verified=True)]
    for who in accounts:
        status, page = await me(platform, who)
        assert status == 200
        for flow in page["flows"]:
            answer = await platform.client.post(flow["start"], headers=who.auth, json={})
            assert answer.status == 201, (who, flow["name"], await answer.text())


async def test_flows_not_offered_are_refused_to_the_account(platform: Platform) -> None:
    """And what it does not offer an account kind, the flow's first action refuses."""
    org = await new_organisation(platform, verified=True)
    person = await new_person(platform)
    for who, name, refusal in (
            (org, "change_phone", "account_kind_not_allowed"),
            (org, "organisation_verification", "organisation_already_verified"),
            (person, "organisation_verification", "organisation_account_required")):
        _, page = await me(platform, who)
        assert name not in flow_names(page)
        answer = await platform.client.post(f"/api/flows/{name}", headers=who.auth, json={})
        assert answer.status in (403, 409), (name, await answer.text())
        assert (await answer.json())["error_id"] == refusal


async def test_a_supervisor_without_a_phone_sees_theirs(platform: Platform) -> None:
    s = platform.app[keys.SERVICES]
    account_id = str(uuid.uuid4())
    await _write(platform, s.accounts.create_person(
        account_id=account_id, kind="supervisor", login_name=f"sup{account_id[:8]}",
        display_name="王监督", password_hash=await s.hasher.hash("Aa-12345678"),
        id_number_sealed=None, id_number_index=None, phone_sealed=None, phone_index=None,
        must_change_password=True, now=platform.app[keys.CLOCK].now()))
    token = await _session(platform, account_id, "supervisor", "王监督")
    answer = await platform.client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    page = await answer.json()
    assert page["kind"] == "supervisor"
    assert page["mobile_masked"] is None
    assert page["id_number_masked"] is None
    assert page["must_change_password"] is True
    assert flow_names(page) == ["change_phone", "change_password", "create_seal"]


async def test_an_unverified_organisation_sees_verification_first(platform: Platform) -> None:
    org = await new_organisation(platform)
    sign_in(platform, org)  # by cookie this time
    status, page = await me(platform)
    assert status == 200
    assert page["kind"] == "organisation"
    assert flow_names(page)[0] == "organisation_verification"
    assert "change_password" in flow_names(page)
    info = page["organisation"]
    assert info["name"] == "测试科技有限公司"
    assert info["credit_code"] == org.credit_code
    assert info["legal_representative"] == {"name": REP_NAME,
                                            "id_number_masked": masked_id(org.rep_id or "")}
    assert info["verification"] == {"status": "unverified",
                                    "label": {"zh": "未认证", "en": "Not verified"},
                                    "method": None, "method_label": None, "at": None}
    assert "add_agent" in flow_names(page)
    # With no other agent, there is nobody to remove or hand the role to.
    assert not {"remove_agent", "transfer_primary"} & set(flow_names(page))
    [agent] = info["agents"]
    assert (agent["name"], agent["primary"], agent["signed_in"]) == (REP_NAME, True, True)
    assert agent["mobile_masked"] == masked(org.phone or "")


async def test_a_verified_organisation_sees_how_and_when_and_its_agents(
        platform: Platform) -> None:
    org = await new_organisation(platform, verified=True)
    s = platform.app[keys.SERVICES]
    other_id, other_phone, other_number = str(uuid.uuid4()), new_mobile(), new_id_number()
    async with platform.app[keys.POOL].acquire() as conn:
        await conn.execute(
            "INSERT INTO agents (id, organisation_id, name, id_number_sealed, id_number_index,"
            " phone_sealed, phone_index, is_primary, created_at)"
            " VALUES ($1, $2, '李娜', $3, $4, $5, $6, false, now())",
            uuid.UUID(other_id), uuid.UUID(org.account_id),
            s.vault.seal(RESIDENT_ID, other_number), s.vault.index(RESIDENT_ID, other_number),
            s.vault.seal(MOBILE, other_phone), s.vault.index(MOBILE, other_phone))
    # Signed in as the second agent: the page says which one that is.
    token = await _session(platform, org.account_id, "organisation", "测试科技有限公司",
                           other_id)
    answer = await platform.client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    page = await answer.json()
    verification = page["organisation"]["verification"]
    assert verification["status"] == "verified"
    assert verification["label"] == {"zh": "已认证", "en": "Verified"}
    assert verification["method"] == "deposit"
    assert verification["at"] == platform.app[keys.CLOCK].now().isoformat()
    agents = page["organisation"]["agents"]
    assert [(a["name"], a["primary"], a["signed_in"]) for a in agents] == [
        (REP_NAME, True, False), ("李娜", False, True)]
    assert agents[1]["mobile_masked"] == masked(other_phone)
    assert "organisation_verification" not in flow_names(page)
    # Agent management is the primary agent's: not offered to the second one...
    assert not {"add_agent", "remove_agent", "transfer_primary"} & set(flow_names(page))
    # ...and offered to the primary one, who has another agent to remove or hand over to;
    # each starts.
    _, page = await me(platform, org)
    assert {"add_agent", "remove_agent", "transfer_primary"} <= set(flow_names(page))
    for name in ("add_agent", "remove_agent", "transfer_primary"):
        started = await platform.client.post(f"/api/flows/{name}", headers=org.auth, json={})
        assert started.status == 201, await started.text()
    text = await answer.text()
    for secret in (other_phone, other_number, org.rep_id or "", org.phone or ""):
        assert secret not in text


async def test_seals_are_listed_and_offer_their_changes_once_there_is_one(
        platform: Platform) -> None:
    person = await new_person(platform)
    seal = await create(platform, person)
    status, page = await me(platform, person)
    assert status == 200
    [listed] = page["seals"]
    assert listed["id"] == seal["seal_id"]
    assert listed["svg_url"] == f"/api/me/seals/{seal['seal_id']}.svg"
    assert listed["content_hash"] == seal["content_hash"]
    # A person holds one seal: it can be restyled or deleted, not made again.
    assert flow_names(page) == ["change_phone", "change_password", "change_seal_style",
                                "delete_seal"]
    assert listed["outdated"] is False
    org = await new_organisation(platform)
    await create(platform, org)
    _, page = await me(platform, org)
    assert {"create_seal", "change_seal_style", "delete_seal"} <= set(flow_names(page))
    assert [s["outdated"] for s in page["seals"]] == [False]
    # Renamed (a certification change applied): the seal shows the old name until restyled.
    async with platform.app[keys.POOL].acquire() as conn:
        await conn.execute("UPDATE organisations SET name = '新名称有限公司' WHERE account_id = $1",
                           uuid.UUID(org.account_id))
    _, page = await me(platform, org)
    assert [s["outdated"] for s in page["seals"]] == [True]


async def test_a_seal_is_not_offered_to_a_name_that_cannot_make_one(
        platform: Platform) -> None:
    """A supervisor named for its department (more than a person's four characters) would
    be refused at the start: the page does not offer it."""
    supervisor = await new_person(platform, kind="supervisor")
    _, page = await me(platform, supervisor)
    assert "create_seal" in flow_names(page)
    async with platform.app[keys.POOL].acquire() as conn:
        await conn.execute("UPDATE accounts SET display_name = '市住建局监督科' WHERE id = $1",
                           uuid.UUID(supervisor.account_id))
    _, page = await me(platform, supervisor)
    assert flow_names(page) == ["change_phone", "change_password"]
