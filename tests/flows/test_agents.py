"""Agent management (SPEC 10.3), end to end over HTTP: ``add_agent``, ``remove_agent`` and
``transfer_primary``, written in flows.yaml from building blocks (flows/agents.py).

Organisations are inserted through the Accounts port with their primary agent, and more
agents through the port's own agent write; each agent's session is made as sign-in
makes it (tests/flows/test_verification.py) and sent as a bearer token.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import attrs
import pytest

from engine import FrozenClock
from flows.pii import MOBILE, RESIDENT_ID
from tests.flows.test_legal import errors_of, field
from tests.flows.test_legal import sign_in as legal_sign_in
from tests.flows.test_verification import (
    REP_NAME,
    Who,
    _session,
    new_organisation,
    new_person,
)
from tests.platform import Platform, new_id_number, new_mobile
from web import keys

ORG_NAME = "测试科技有限公司"


def masked(phone: str) -> str:
    return f"{phone[:3]}****{phone[-4:]}"


@attrs.frozen
class AgentWho:
    id: str
    name: str
    phone: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def primary_of(p: Platform, org: Who) -> AgentWho:
    agents = await p.app[keys.SERVICES].accounts.agents(org.account_id)
    assert agents[0].is_primary
    assert org.phone is not None
    return AgentWho(agents[0].id, agents[0].name, org.phone, org.token)


async def new_agent(p: Platform, org: Who, name: str = "李四") -> AgentWho:
    """Another agent of ``org``, written by the port's agent write, and a session of it."""
    s = p.app[keys.SERVICES]
    primary = await primary_of(p, org)
    agent_id, phone, id_number = str(uuid.uuid4()), new_mobile(), new_id_number()
    write = s.accounts.add_agent(
        org.account_id, acting_agent_id=primary.id, agent_id=agent_id, name=name,
        id_number_sealed=s.vault.seal(RESIDENT_ID, id_number),
        id_number_index=s.vault.index(RESIDENT_ID, id_number),
        phone_sealed=s.vault.seal(MOBILE, phone), phone_index=s.vault.index(MOBILE, phone),
        now=p.app[keys.CLOCK].now())
    async with p.app[keys.POOL].acquire() as conn, conn.transaction():
        assert await write(conn) is None
    # Agents are listed in the order they were added: the clock is frozen otherwise.
    clock = p.app[keys.CLOCK]
    assert isinstance(clock, FrozenClock)
    clock.advance(timedelta(seconds=1))
    token = await _session(p, org.account_id, "organisation", ORG_NAME, agent_id)
    return AgentWho(agent_id, name, phone, token)


async def agents_of(p: Platform, org: Who) -> dict[str, bool]:
    """The organisation's agents now: id -> primary."""
    return {g.id: g.is_primary
            for g in await p.app[keys.SERVICES].accounts.agents(org.account_id)}


async def audit_of(pool: asyncpg.Pool, org: Who) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch("SELECT * FROM audit_log WHERE target = $1 ORDER BY id",
                                     f"account:{org.account_id}"))


async def history_text(p: Platform, iid: str, auth: dict[str, str]) -> str:
    resp = await p.client.get(f"/api/flows/{iid}/history", headers=auth)
    assert resp.status == 200, await resp.text()
    return await resp.text()


async def state_of(p: Platform, iid: str, who: Who | AgentWho) -> str:
    resp = await p.client.get(f"/api/flows/{iid}", headers=who.auth)
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["state"])


async def start(p: Platform, flow: str, who: Who | AgentWho) -> tuple[int, dict[str, Any]]:
    resp = await p.client.post(f"/api/flows/{flow}", headers=who.auth)
    return resp.status, dict(await resp.json())


async def started(p: Platform, flow: str, who: Who | AgentWho) -> dict[str, Any]:
    status, view = await start(p, flow, who)
    assert status == 201, view
    return view


async def signed_in(p: Platform, who: Who | AgentWho) -> bool:
    return (await p.client.get("/api/session", headers=who.auth)).status == 200


def refused(answer: tuple[int, dict[str, Any]]) -> tuple[int, list[tuple[str | None, str]]]:
    status, body = answer
    return status, [(e["field"], e["error_id"]) for e in body.get("errors", [])]


def forbidden(answer: tuple[int, dict[str, Any]]) -> str:
    status, body = answer
    assert status == 403, body
    assert body["type"] == f"/problems/{body['error_id']}"
    return str(body["error_id"])


# -- add an agent -------------------------------------------------------------------------

async def test_the_primary_agent_adds_an_agent_who_then_signs_in_for_the_organisation(
        platform: Platform, pool: asyncpg.Pool) -> None:
    org = await new_organisation(platform)
    primary = await primary_of(platform, org)
    view = await started(platform, "add_agent", org)
    iid = view["id"]
    assert view["state"] == "agent_info"
    assert view["ui"]["data"]["agents"] == [
        {"id": primary.id, "name": REP_NAME, "mobile": masked(primary.phone), "primary": True,
         "signed_in": True, "label": {"zh": f"{REP_NAME} {masked(primary.phone)}（主经办人）",
                                      "en": f"{REP_NAME} {masked(primary.phone)} (primary)"}}]
    phone, id_number = new_mobile(), new_id_number()
    view = await platform.ok(iid, "send_code", {"mobile": phone}, headers=org.auth)
    assert view["ui"]["data"]["sent_to"] == masked(phone)
    code = await platform.sms_code(phone)
    assert code is not None
    # The registry says the name is not the ID number's: nothing is added.
    registry = platform.app[keys.SERVICES].providers.sandbox.realname
    await registry.add_pair("李鬼", id_number)
    body = {"name": "李鬼", "id_number": id_number, "mobile": phone, "sms_code": code}
    assert refused(await platform.step(iid, "submit", body, headers=org.auth)) == (
        422, [("name", "realname_mismatch")])
    assert await agents_of(platform, org) == {primary.id: True}
    # The right name, with the same code: the phone stays proven for the code's life.
    view = await platform.ok(iid, "submit", {**body, "name": "王芳"}, headers=org.auth)
    assert view["state"] == "done"
    assert view["ui"]["data"] == {"name": "王芳", "mobile": masked(phone)}
    agents = await platform.app[keys.SERVICES].accounts.agents(org.account_id)
    assert [(g.name, g.is_primary) for g in agents] == [(REP_NAME, True), ("王芳", False)]
    added = agents[1]
    # Audited and in the history, masked.
    [entry] = await audit_of(pool, org)
    assert (entry["actor"], entry["action"]) == (f"account:{org.account_id}", "add_agent")
    assert entry["details"] == {
        "by_agent": primary.id, "agent_id": added.id, "name": "王芳",
        "mobile": masked(phone), "id_number": f"{id_number[:3]}***********{id_number[-4:]}",
        "instance_id": iid}
    text = await history_text(platform, iid, org.auth)
    assert added.id in text
    assert phone not in text
    assert id_number not in text
    # The new agent signs in for the organisation with a code to their phone.
    signing = await legal_sign_in(platform, org.login_name, agent=1)
    choices = field(signing["view"], "agent")["choices"]
    assert [c["label"] for c in choices] == [f"{REP_NAME} {masked(primary.phone)}",
                                             f"王芳 {masked(phone)}"]
    view = await platform.ok(signing["id"], "submit", {
        "agent": added.id, "sms_code": await platform.sms_code(phone)})
    assert view["state"] == "signed_in"
    me = await (await platform.client.get("/api/session")).json()
    assert (me["account_id"], me["agent_id"]) == (org.account_id, added.id)


async def test_a_step_reads_the_acting_agent_once_for_all_its_actions(
        platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """check_primary_agent, check_new_agent and add_agent each ask who acts: one read
    of the organisation's agents for the step, not one each."""
    org = await new_organisation(platform)
    iid = (await started(platform, "add_agent", org))["id"]
    phone = new_mobile()
    await platform.ok(iid, "send_code", {"mobile": phone}, headers=org.auth)
    code = await platform.sms_code(phone)
    accounts = platform.app[keys.SERVICES].accounts
    reads: list[str] = []
    agents = accounts.agents

    async def counted(account_id: str) -> Any:
        reads.append(account_id)
        return await agents(account_id)

    monkeypatch.setattr(accounts, "agents", counted)
    view = await platform.ok(iid, "submit", {"name": "王芳", "id_number": new_id_number(),
                                             "mobile": phone, "sms_code": code},
                             headers=org.auth)
    assert view["state"] == "done"
    assert reads == [org.account_id]


async def test_the_same_phone_or_person_is_not_added_twice(platform: Platform) -> None:
    org = await new_organisation(platform)
    assert org.phone is not None
    assert org.rep_id is not None
    other = await new_agent(platform, org)
    iid = (await started(platform, "add_agent", org))["id"]
    # No code goes to a number that is an agent's already.
    for taken in (org.phone, other.phone):
        assert refused(await platform.step(iid, "send_code", {"mobile": taken},
                                           headers=org.auth)) == (
            422, [("mobile", "agent_phone_taken")])
        assert await platform.sms_code(taken) is None
    # The primary agent (the legal representative) again, under a new number.
    phone = new_mobile()
    await platform.ok(iid, "send_code", {"mobile": phone}, headers=org.auth)
    body = {"name": REP_NAME, "id_number": org.rep_id, "mobile": phone,
            "sms_code": await platform.sms_code(phone)}
    assert refused(await platform.step(iid, "submit", body, headers=org.auth)) == (
        422, [("id_number", "agent_id_taken")])
    assert len(await agents_of(platform, org)) == 2
    # Another organisation may have the same person as its agent (with another number:
    # the number had its code for this minute).
    elsewhere, phone = await new_organisation(platform), new_mobile()
    iid = (await started(platform, "add_agent", elsewhere))["id"]
    await platform.ok(iid, "send_code", {"mobile": phone}, headers=elsewhere.auth)
    view = await platform.ok(iid, "submit", {**body, "mobile": phone,
                                             "sms_code": await platform.sms_code(phone)},
                             headers=elsewhere.auth)
    assert view["state"] == "done"


async def test_a_code_sent_to_another_phone_adds_nobody(platform: Platform) -> None:
    org = await new_organisation(platform)
    iid = (await started(platform, "add_agent", org))["id"]
    sent, typed = new_mobile(), new_mobile()
    await platform.ok(iid, "send_code", {"mobile": sent}, headers=org.auth)
    code = await platform.sms_code(sent)
    body = {"name": "王芳", "id_number": new_id_number(), "mobile": typed, "sms_code": code}
    assert refused(await platform.step(iid, "submit", body, headers=org.auth)) == (
        422, [("sms_code", "sms_code_expired")])
    assert len(await agents_of(platform, org)) == 1


# -- only the primary agent ---------------------------------------------------------------

async def test_an_agent_who_is_not_primary_may_not_start_any_of_them(
        platform: Platform, pool: asyncpg.Pool) -> None:
    org = await new_organisation(platform)
    agent = await new_agent(platform, org)
    before = await agents_of(platform, org)
    for flow in ("add_agent", "remove_agent", "transfer_primary"):
        assert forbidden(await start(platform, flow, agent)) == "primary_agent_required"
    # Nor may a person, nor an organisation session without an agent.
    person = await new_person(platform)
    assert forbidden(await start(platform, "add_agent", person)) == "account_kind_not_allowed"
    agentless = await _session(platform, org.account_id, "organisation", ORG_NAME)
    assert forbidden(await start(platform, "transfer_primary", AgentWho(
        "", "", "", agentless))) == "primary_agent_required"
    assert await agents_of(platform, org) == before
    assert await audit_of(pool, org) == []


async def test_an_agent_who_is_not_primary_may_not_step_the_primarys_flows(
        platform: Platform) -> None:
    """The instances are the organisation's, so any of its agents may open them; each step
    is still refused to anyone but the primary agent, and nothing changes."""
    org = await new_organisation(platform)
    agent = await new_agent(platform, org)
    other = await new_agent(platform, org, "王五")
    before = await agents_of(platform, org)
    add = (await started(platform, "add_agent", org))["id"]
    assert forbidden(await platform.step(add, "send_code", {"mobile": new_mobile()},
                                         headers=agent.auth)) == "primary_agent_required"
    remove = (await started(platform, "remove_agent", org))["id"]
    assert forbidden(await platform.step(remove, "submit", {"agent": other.id},
                                         headers=agent.auth)) == "primary_agent_required"
    moving = (await started(platform, "transfer_primary", org))["id"]
    assert forbidden(await platform.step(moving, "send_code", {},
                                         headers=agent.auth)) == "primary_agent_required"
    assert forbidden(await platform.step(moving, "submit", {
        "agent": agent.id, "sms_code": "123456"}, headers=agent.auth)) \
        == "primary_agent_required"
    assert await agents_of(platform, org) == before
    for iid, state in ((add, "agent_info"), (remove, "choose"), (moving, "choose")):
        assert await state_of(platform, iid, org) == state


async def test_a_primary_who_handed_the_role_over_meanwhile_is_refused_at_the_last_step(
        platform: Platform, pool: asyncpg.Pool) -> None:
    org = await new_organisation(platform)
    primary = await primary_of(platform, org)
    heir, leaving = await new_agent(platform, org), await new_agent(platform, org, "王五")
    remove = (await started(platform, "remove_agent", org))["id"]
    add = (await started(platform, "add_agent", org))["id"]
    phone = new_mobile()
    await platform.ok(add, "send_code", {"mobile": phone}, headers=org.auth)
    code = await platform.sms_code(phone)
    await transfer(platform, org, primary, heir)
    assert forbidden(await platform.step(remove, "submit", {"agent": leaving.id},
                                         headers=org.auth)) == "primary_agent_required"
    assert forbidden(await platform.step(add, "submit", {
        "name": "赵六", "id_number": new_id_number(), "mobile": phone, "sms_code": code},
        headers=org.auth)) == "primary_agent_required"
    assert await agents_of(platform, org) == {primary.id: False, heir.id: True,
                                              leaving.id: False}
    assert [e["action"] for e in await audit_of(pool, org)] == ["transfer_primary"]


# -- remove an agent ----------------------------------------------------------------------

async def test_the_primary_agent_removes_an_agent_whose_sessions_end_at_once(
        platform: Platform, pool: asyncpg.Pool) -> None:
    org = await new_organisation(platform)
    primary = await primary_of(platform, org)
    leaving, staying = await new_agent(platform, org), await new_agent(platform, org, "王五")
    # The agent signed in twice: on the way, and with a code as sign-in does.
    signing = await legal_sign_in(platform, org.login_name, agent=1)
    assert field(signing["view"], "agent")["choices"][1]["value"] == leaving.id
    await platform.ok(signing["id"], "submit", {
        "agent": leaving.id, "sms_code": await platform.sms_code(leaving.phone)})
    assert (await (await platform.client.get("/api/session")).json())["agent_id"] == leaving.id
    view = await started(platform, "remove_agent", org)
    iid = view["id"]
    assert [c["label"]["zh"] for c in field(view, "agent")["choices"]] == [
        f"{REP_NAME} {masked(primary.phone)}（主经办人）", f"李四 {masked(leaving.phone)}",
        f"王五 {masked(staying.phone)}"]
    assert [(g["name"], g["primary"], g["signed_in"]) for g in view["ui"]["data"]["agents"]] \
        == [(REP_NAME, True, True), ("李四", False, False), ("王五", False, False)]
    view = await platform.ok(iid, "submit", {"agent": leaving.id}, headers=org.auth)
    assert view["state"] == "done"
    assert view["ui"]["data"] == {"name": "李四", "mobile": masked(leaving.phone)}
    assert await agents_of(platform, org) == {primary.id: True, staying.id: False}
    # Both of the removed agent's sessions ended; the others' go on.
    assert not await signed_in(platform, leaving)
    assert (await platform.client.get("/api/session")).status != 200
    assert await signed_in(platform, org)
    assert await signed_in(platform, staying)
    # The removed agent can no longer sign in for the organisation.
    signing = await legal_sign_in(platform, org.login_name, send=False)
    assert [c["value"] for c in field(signing["view"], "agent")["choices"]] == [
        primary.id, staying.id]
    assert errors_of((await platform.step(signing["id"], "send_code",
                                          {"agent": leaving.id}))[1]) == {"not_choice": "agent"}
    [entry] = await audit_of(pool, org)
    assert (entry["actor"], entry["action"]) == (f"account:{org.account_id}", "remove_agent")
    assert entry["details"] == {"by_agent": primary.id, "agent_id": leaving.id, "name": "李四",
                                "mobile": masked(leaving.phone), "instance_id": iid}
    text = await history_text(platform, iid, org.auth)
    assert leaving.id in text
    assert leaving.phone not in text


async def test_the_primary_agent_and_strangers_are_not_removed(platform: Platform) -> None:
    org = await new_organisation(platform)
    primary = await primary_of(platform, org)
    agent = await new_agent(platform, org)
    stranger = await new_agent(platform, await new_organisation(platform))
    before = await agents_of(platform, org)
    iid = (await started(platform, "remove_agent", org))["id"]
    assert refused(await platform.step(iid, "submit", {"agent": primary.id},
                                       headers=org.auth)) == (
        422, [("agent", "agent_is_primary")])
    # Another organisation's agent is no choice, as any unknown id.
    for unknown in (stranger.id, str(uuid.uuid4())):
        assert refused(await platform.step(iid, "submit", {"agent": unknown},
                                           headers=org.auth)) == (
            422, [("agent", "not_choice")])
    assert await agents_of(platform, org) == before
    assert await signed_in(platform, stranger)
    # An agent removed in another instance meanwhile is unknown now.
    first = (await started(platform, "remove_agent", org))["id"]
    await platform.ok(first, "submit", {"agent": agent.id}, headers=org.auth)
    assert refused(await platform.step(iid, "submit", {"agent": agent.id},
                                       headers=org.auth)) == (
        422, [("agent", "agent_unknown")])


# -- hand over the primary role -----------------------------------------------------------

async def transfer(p: Platform, org: Who, primary: AgentWho, heir: AgentWho) -> dict[str, Any]:
    iid = (await started(p, "transfer_primary", org if primary.token == org.token
                         else primary))["id"]
    await p.ok(iid, "send_code", {}, headers=primary.auth)
    return await p.ok(iid, "submit", {"agent": heir.id,
                                      "sms_code": await p.sms_code(primary.phone)},
                      headers=primary.auth)


async def test_the_primary_agent_hands_the_role_over_with_a_code_to_their_own_phone(
        platform: Platform, pool: asyncpg.Pool) -> None:
    org = await new_organisation(platform)
    primary = await primary_of(platform, org)
    heir = await new_agent(platform, org)
    view = await started(platform, "transfer_primary", org)
    iid = view["id"]
    assert [c["value"] for c in field(view, "agent")["choices"]] == [heir.id]
    current = field(view, "current_mobile")
    assert (current["value"], current["locked"]) == (masked(primary.phone), True)
    # A code sent to another phone (the heir's, by a sign-in) does not pass.
    signing = await legal_sign_in(platform, org.login_name, agent=1)
    assert field(signing["view"], "agent")["choices"][1]["value"] == heir.id
    heirs_code = await platform.sms_code(heir.phone)
    assert refused(await platform.step(iid, "submit", {"agent": heir.id,
                                                       "sms_code": heirs_code},
                                       headers=org.auth)) == (
        422, [("sms_code", "sms_code_expired")])
    # Nor is the code sent anywhere but to the primary agent's own phone.
    assert refused(await platform.step(iid, "send_code", {"current_mobile": heir.phone},
                                       headers=org.auth)) == (
        422, [("current_mobile", "field_locked")])
    view = await platform.ok(iid, "send_code", {}, headers=org.auth)
    assert view["ui"]["data"]["sent_to"] == masked(primary.phone)
    code = await platform.sms_code(primary.phone)
    assert code is not None
    assert code != heirs_code
    view = await platform.ok(iid, "submit", {"agent": heir.id, "sms_code": code},
                             headers=org.auth)
    assert view["state"] == "done"
    assert view["ui"]["data"] == {"primary": "李四"}
    assert await agents_of(platform, org) == {primary.id: False, heir.id: True}
    # The old primary is still signed in, as an ordinary agent; the heir acts now.
    assert await signed_in(platform, org)
    assert forbidden(await start(platform, "add_agent", org)) == "primary_agent_required"
    view = await started(platform, "remove_agent", heir)
    assert [c["label"]["zh"] for c in field(view, "agent")["choices"]] == [
        f"李四 {masked(heir.phone)}（主经办人）", f"{REP_NAME} {masked(primary.phone)}"]
    [entry] = await audit_of(pool, org)
    assert entry["details"] == {"by_agent": primary.id, "from_agent": primary.id,
                                "from_name": REP_NAME, "to_agent": heir.id,
                                "to_name": "李四", "instance_id": iid}
    text = await history_text(platform, iid, org.auth)
    assert heir.id in text
    assert primary.phone not in text
    assert json.loads(text)["events"][-1]["facts"]["transfer_primary"]["to_agent"] == heir.id


async def test_the_role_goes_to_no_agent_of_another_organisation(platform: Platform) -> None:
    org = await new_organisation(platform)
    primary = await primary_of(platform, org)
    await new_agent(platform, org)
    stranger = await new_agent(platform, await new_organisation(platform))
    iid = (await started(platform, "transfer_primary", org))["id"]
    await platform.ok(iid, "send_code", {}, headers=org.auth)
    code = await platform.sms_code(primary.phone)
    for unknown in (stranger.id, primary.id):
        assert refused(await platform.step(iid, "submit", {"agent": unknown, "sms_code": code},
                                           headers=org.auth)) == (
            422, [("agent", "not_choice")])
    assert (await agents_of(platform, org))[primary.id] is True


# -- races ----------------------------------------------------------------------------------

async def test_a_transfer_racing_removals_over_http_leaves_exactly_one_primary(
        platform: Platform) -> None:
    org = await new_organisation(platform)
    primary = await primary_of(platform, org)
    agents = [await new_agent(platform, org, f"经办人{n}") for n in range(5)]
    heir = agents[0]
    moving = (await started(platform, "transfer_primary", org))["id"]
    await platform.ok(moving, "send_code", {}, headers=org.auth)
    code = await platform.sms_code(primary.phone)
    removals = [(await started(platform, "remove_agent", org))["id"] for _ in agents]
    answers = await asyncio.gather(
        platform.step(moving, "submit", {"agent": heir.id, "sms_code": code},
                      headers=org.auth),
        *(platform.step(iid, "submit", {"agent": agent.id}, headers=org.auth)
          for iid, agent in zip(removals, agents, strict=True)))
    # Every answer is a clean one: done, or a problem with its id.
    for status, body in answers:
        assert status in (200, 403, 409, 422), body
        assert status == 200 or body["type"] == f"/problems/{body['error_id']}"
    removed = {agent.id for agent, (status, _) in zip(agents, answers[1:], strict=True)
               if status == 200}
    found = await agents_of(platform, org)
    assert sum(found.values()) == 1, found
    assert set(found) == {primary.id, *(g.id for g in agents)} - removed
    moved = answers[0][0] == 200
    assert found[heir.id if moved else primary.id] is True
    if moved:
        assert heir.id not in removed
