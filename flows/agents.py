"""Building blocks for an organisation's agents (SPEC 10.3, agent management): who acts,
a new agent, removing one, handing over the primary role.

Only the organisation's primary agent (主经办人) may manage its agents. The step's actor
is the organisation (``account:<id>``); which agent takes the step is the one its
session carries (``ActionInput.session``, looked up with ``Sessions.by_ref``). That is
checked three times: when the flow starts (``load_agents``), on every step
(``check_primary_agent``, first among a transition's actions) and, last, inside the
step's own transaction with the organisation's row locked (the writes of
``add_agent``, ``remove_agent`` and ``transfer_primary``), because the role can move
to someone else between the steps. A refusal is ``primary_agent_required`` (403) and
changes nothing.

The database keeps exactly one primary agent per organisation
(storage/migrations/0007_agents.sql); the writes take turns on the organisation's row,
so concurrent transfers and removals each see what the previous one did. A removed
agent's sessions for the organisation end when the removal is written
(``Sessions.end_agent``). Every change goes to the audit log with the acting agent, the
agent concerned and what changed, phones and ID numbers masked; the actions' facts put
the same in the flow's history.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
import structlog

from engine import (
    ActionInput,
    DuplicateKey,
    EngineError,
    FieldError,
    Forbidden,
    Param,
    Refusal,
    Registry,
    ValidationFailed,
)
from engine.values import Write
from flows.accounts import (
    AGENT_IS_PRIMARY,
    AGENT_UNKNOWN,
    NOT_PRIMARY,
    Account,
    Agent,
    AgentWrite,
)
from flows.identity import mask_mobile, mask_resident_id
from flows.personal import REALNAME_MISMATCH
from flows.pii import MOBILE, RESIDENT_ID
from flows.profile import ACCOUNT_REQUIRED, AccountKindRefused, signed_in_account
from flows.sessions import Session
from flows.sms import BAD_PHONE, PHONE, phone_in
from flows.support import Services, refuse_as, services, signed_in_account_id

log = structlog.get_logger("flows.agents")

PRIMARY_MARK = ("（主经办人）", " (primary)")


class PrimaryAgentRequired(EngineError, PermissionError):
    """An agent who is not (or no longer) the organisation's primary one tried to
    manage its agents."""

    status: ClassVar[int] = 403
    error_id: ClassVar[str] = "primary_agent_required"
    zh: ClassVar[str] = "只有主经办人可以管理经办人"
    en: ClassVar[str] = "Only the organisation's primary agent may manage its agents"


NAME = Param("name", "field", "The field that holds the new agent's name.", default="name",
             scope="flow")
ID_NUMBER = Param("id_number", "field", "The field that holds the new agent's resident ID "
                  "number.", default="id_number", scope="flow")
NEW_AGENT_PHONE = Param("phone", "field", "The field, proven by an SMS code in this step or "
                        "an earlier one, that holds the new agent's mobile number.",
                        default="mobile", scope="flow")
AGENT = Param("agent", "field", "The choice field that holds the agent picked (an agent "
              "id, one of `load_agents`' choices).", default="agent")

AGENT_PHONE_TAKEN = Refusal("agent_phone_taken", "该手机号码已是本单位的经办人",
                            "This mobile number is already one of the organisation's agents",
                            param="phone")
AGENT_ID_TAKEN = Refusal("agent_id_taken", "此人已是本单位的经办人",
                         "This person is already one of the organisation's agents",
                         param="id_number")
AGENT_UNKNOWN_REFUSAL = Refusal("agent_unknown", "本单位没有该经办人，请刷新后重新选择",
                                "The organisation has no such agent; reload and choose again",
                                param="agent")
AGENT_IS_PRIMARY_REFUSAL = Refusal(
    "agent_is_primary", "不能对主经办人进行此操作，请先将主经办人身份移交给其他经办人",
    "Not for the primary agent: hand the primary role to another agent first",
    param="agent")

# The unique keys a new agent may hit, and which refusal each one is.
_TAKEN = {"agents_organisation_id_phone_index_key": AGENT_PHONE_TAKEN,
          "agents_one_person": AGENT_ID_TAKEN}
# What a removal or a hand-over may find changed in its locked transaction.
_STALE = {AGENT_UNKNOWN: AGENT_UNKNOWN_REFUSAL, AGENT_IS_PRIMARY: AGENT_IS_PRIMARY_REFUSAL}


@attrs.frozen
class Acting:
    """The organisation taking the step, the agent whose session takes it, its agents."""

    organisation: Account
    agent: Agent
    agents: tuple[Agent, ...]


# Where a step keeps what _acting_agent read (ActionInput.scratch): its actions ask in
# turn (check_primary_agent first, the add or the removal last).
_ACTING = "flows.agents.acting"


async def _acting_agent(a: ActionInput) -> Acting:
    """The signed-in organisation and its primary agent taking this step; refused unless
    the session's agent is that organisation's primary agent now.

    Read once a step, for all its actions: the writes check again, in the step's
    transaction, that the agent is still primary (a hand-over meanwhile is refused)."""
    known: Acting | None = a.scratch.get(_ACTING)
    if known is not None:
        return known
    a.scratch[_ACTING] = acting = await _read_acting_agent(a)
    return acting


async def _read_acting_agent(a: ActionInput) -> Acting:
    s = services(a)
    account = await signed_in_account(a)
    if account.kind != "organisation":
        raise AccountKindRefused()
    session: Session | None = await s.sessions.by_ref(a.session)
    if session is None or session.account_id != account.id or session.agent_id is None:
        raise PrimaryAgentRequired()
    agents = tuple(await s.accounts.agents(account.id))
    me = next((g for g in agents if g.id == session.agent_id), None)
    if me is None or not me.is_primary:
        raise PrimaryAgentRequired()
    return Acting(account, me, agents)


def agent_list(s: Services, agents: tuple[Agent, ...] | list[Agent],
               signed_in: str | None = None) -> list[dict[str, Any]]:
    """An organisation's agents as a page shows them: id, name, phone masked, whether
    primary, whether the session's (``signed_in``: its agent id)."""
    found = []
    for g in agents:
        mobile = mask_mobile(s.vault.open(MOBILE, g.phone_sealed))
        marks = PRIMARY_MARK if g.is_primary else ("", "")
        found.append({"id": g.id, "name": g.name, "mobile": mobile, "primary": g.is_primary,
                      "signed_in": g.id == signed_in,
                      # How a client names the agent, in either language.
                      "label": {"zh": f"{g.name} {mobile}{marks[0]}",
                                "en": f"{g.name} {mobile}{marks[1]}"}})
    return found


def _choice(shown: Mapping[str, Any]) -> dict[str, Any]:
    return {"value": str(shown["id"]), "label": shown["label"]}


async def load_agents(a: ActionInput) -> dict[str, Any] | None:
    """On entering the initial state at start: the signed-in organisation, if the agent
    of the session is its primary one (else the start is refused); its agents, to show
    and to choose from, and the primary agent's phone, sealed and masked.

    Re-entering the state later records nothing new: the facts of the start stay.
    """
    if a.fact(a.action) is not None:
        return None
    if signed_in_account_id(a) is None:
        raise Forbidden("this flow needs a signed-in organisation")
    acting = await _acting_agent(a)
    s = services(a)
    shown = agent_list(s, acting.agents, acting.agent.id)
    phone = s.vault.open(MOBILE, acting.agent.phone_sealed)
    return {"organisation_id": acting.organisation.id, "agent_id": acting.agent.id,
            "agents": shown, "choices": [_choice(g) for g in shown],
            "others": [_choice(g) for g in shown if not g["primary"]],
            # Sealed like a sensitive field: a locked field shows it masked, actions open it.
            "mobile": a.sealer.seal(MOBILE, phone), "mobile_masked": mask_mobile(phone)}


async def check_primary_agent(a: ActionInput) -> None:
    """Action: the session taking this step is the organisation's primary agent's now
    (the role may have moved since the flow started)."""
    await _acting_agent(a)


async def _agent_with(a: ActionInput, organisation_id: str, **index: bytes) -> bool:
    return await services(a).accounts.agent_with(organisation_id, **index) is not None


async def check_agent_phone_free(a: ActionInput) -> dict[str, Any]:
    """Action: the mobile number in the field ``phone`` is none of the organisation's
    agents' (before a code is sent to it)."""
    acting = await _acting_agent(a)
    phone = phone_in(a)
    if await _agent_with(a, acting.organisation.id,
                         phone_index=services(a).vault.index(MOBILE, phone)):
        refuse_as(a, AGENT_PHONE_TAKEN)
    return {"mobile": mask_mobile(phone)}


async def check_new_agent(a: ActionInput) -> dict[str, Any]:
    """Action: the real-name registry says the name and ID number (fields ``name``,
    ``id_number``) belong together; the person and the phone (field ``phone``) are none
    of the organisation's agents yet. Every finding at once."""
    s = services(a)
    acting = await _acting_agent(a)
    name, id_number = str(a.value(a.params["name"])), str(a.value(a.params["id_number"]))
    phone = phone_in(a)
    if not await s.providers.realname.check(name, id_number,
                                            idempotency_key=a.idempotency_key):
        refuse_as(a, REALNAME_MISMATCH)
    errors: list[FieldError] = []
    org = acting.organisation.id
    if await _agent_with(a, org, id_number_index=s.vault.index(RESIDENT_ID, id_number)):
        errors.append(AGENT_ID_TAKEN.error(a.params))
    if await _agent_with(a, org, phone_index=s.vault.index(MOBILE, phone)):
        errors.append(AGENT_PHONE_TAKEN.error(a.params))
    if errors:
        raise ValidationFailed(errors)
    return {"match": True, "id_number": mask_resident_id(id_number),
            "mobile": mask_mobile(phone)}


def _refusing(a: ActionInput, write: AgentWrite, refusals: Mapping[str, Refusal]) -> Write:
    """The agent write as the step's write: refused as the action declares it, by what
    the write answered or the unique key it hit (``refusals``: by reason or constraint;
    the field errors are made now, while the action's parameters are known)."""
    errors = {key: r.error(a.params) for key, r in refusals.items()}

    async def guarded(tx: Any) -> None:
        try:
            refused = await write(tx)
        except DuplicateKey as exc:
            error = errors.get(str(exc.extra.get("constraint")))
            if error is None:
                raise
            raise ValidationFailed([error]) from None
        if refused == NOT_PRIMARY:
            raise PrimaryAgentRequired()
        if refused is not None:
            raise ValidationFailed([errors[refused]])

    return guarded


def _audit(a: ActionInput, acting: Acting, action: str, details: dict[str, Any]) -> None:
    a.write(services(a).accounts.audit(
        actor=a.actor, action=action, target=f"account:{acting.organisation.id}",
        reason="self-service", now=a.now,
        details={"by_agent": acting.agent.id, **details, "instance_id": a.instance_id}))


async def add_agent(a: ActionInput) -> dict[str, Any]:
    """Action: the person in the fields ``name`` and ``id_number``, with the phone in the
    field ``phone``, becomes an ordinary agent of the organisation; audited. Put it after
    the checks of the code and of the person (``check_sms_code``, ``check_new_agent``)."""
    s = services(a)
    acting = await _acting_agent(a)
    name, id_number = str(a.value(a.params["name"])), str(a.value(a.params["id_number"]))
    phone = phone_in(a)
    agent_id = str(uuid.uuid4())
    a.write(_refusing(a, s.accounts.add_agent(
        acting.organisation.id, acting_agent_id=acting.agent.id, agent_id=agent_id,
        name=name, id_number_sealed=s.vault.seal(RESIDENT_ID, id_number),
        id_number_index=s.vault.index(RESIDENT_ID, id_number),
        phone_sealed=s.vault.seal(MOBILE, phone), phone_index=s.vault.index(MOBILE, phone),
        now=a.now), _TAKEN))
    added = {"agent_id": agent_id, "name": name, "mobile": mask_mobile(phone),
             "id_number": mask_resident_id(id_number)}
    _audit(a, acting, "add_agent", added)
    log.info("agent_added", organisation_id=acting.organisation.id, agent_id=agent_id)
    return added


def _picked(a: ActionInput, acting: Acting) -> Agent:
    """The agent in the field ``agent``: one of the organisation's now, else refused as
    unknown (an agent of another organisation too: nothing is told about it)."""
    chosen = str(a.input.get(a.params["agent"]) or "")
    found = next((g for g in acting.agents if g.id == chosen), None)
    if found is None:
        refuse_as(a, AGENT_UNKNOWN_REFUSAL)
    return found


async def remove_agent(a: ActionInput) -> dict[str, Any]:
    """Action: the agent picked (field ``agent``), not the primary one, is removed; its
    sessions for the organisation end when the removal is written; audited."""
    s = services(a)
    acting = await _acting_agent(a)
    agent = _picked(a, acting)
    if agent.is_primary:
        refuse_as(a, AGENT_IS_PRIMARY_REFUSAL)
    a.write(_refusing(a, s.accounts.remove_agent(
        acting.organisation.id, acting_agent_id=acting.agent.id, agent_id=agent.id), _STALE))
    removed = {"agent_id": agent.id, "name": agent.name,
               "mobile": mask_mobile(s.vault.open(MOBILE, agent.phone_sealed))}
    _audit(a, acting, "remove_agent", removed)

    async def end_sessions(_: Any) -> None:
        # The step's last write: the removal and the audit passed every check in the
        # database, so only a failed COMMIT could leave an agent signed out who stays.
        await s.sessions.end_agent(acting.organisation.id, agent.id)

    a.write(end_sessions)
    log.info("agent_removed", organisation_id=acting.organisation.id, agent_id=agent.id)
    return removed


async def transfer_primary(a: ActionInput) -> dict[str, Any]:
    """Action: the agent picked (field ``agent``) becomes the primary agent, the one taking
    the step an ordinary agent (still signed in); audited. Put it after the check of the
    code sent to the primary agent's own phone."""
    s = services(a)
    acting = await _acting_agent(a)
    agent = _picked(a, acting)
    if agent.is_primary:
        refuse_as(a, AGENT_IS_PRIMARY_REFUSAL)
    a.write(_refusing(a, s.accounts.transfer_primary(
        acting.organisation.id, acting_agent_id=acting.agent.id, to_agent_id=agent.id),
        _STALE))
    moved = {"from_agent": acting.agent.id, "from_name": acting.agent.name,
             "to_agent": agent.id, "to_name": agent.name}
    _audit(a, acting, "transfer_primary", moved)
    log.info("primary_agent_transferred", organisation_id=acting.organisation.id,
             from_agent=acting.agent.id, to_agent=agent.id)
    return moved


_ACTING_REFUSALS = (ACCOUNT_REQUIRED, Refusal.of(AccountKindRefused),
                    Refusal.of(PrimaryAgentRequired))


def register(registry: Registry) -> None:
    """Register this module's actions."""
    registry.action(
        "load_agents", params=[],
        results={"organisation_id": "The signed-in organisation's id.",
                 "agent_id": "The primary agent taking the step.",
                 "agents": "The organisation's agents: [{id, name, mobile (masked), "
                           "primary, signed_in, label}], label {zh, en}: name, masked "
                           "phone and a primary mark.",
                 "choices": "Every agent, to choose from: [{value: agent id, label}].",
                 "others": "The same, the primary agent left out.",
                 "mobile": "The primary agent's mobile number, sealed (for a locked "
                           "sensitive field's value_from, shown masked).",
                 "mobile_masked": "The primary agent's mobile number, masked."},
        refusals=[Refusal.of(Forbidden),
                  *_ACTING_REFUSALS])(load_agents)
    registry.action("check_primary_agent", params=[], results={},
                    refusals=list(_ACTING_REFUSALS))(check_primary_agent)
    registry.action("check_agent_phone_free", params=[PHONE],
                    results={"mobile": "The number, none of the agents', masked."},
                    refusals=[*_ACTING_REFUSALS, BAD_PHONE, AGENT_PHONE_TAKEN],
                    )(check_agent_phone_free)
    registry.action(
        "check_new_agent", params=[NAME, ID_NUMBER, NEW_AGENT_PHONE],
        results={"match": "True: the registry says the name and the ID number belong "
                          "together.",
                 "id_number": "The ID number, masked.",
                 "mobile": "The mobile number, masked."},
        refusals=[*_ACTING_REFUSALS, BAD_PHONE, REALNAME_MISMATCH, AGENT_ID_TAKEN,
                  AGENT_PHONE_TAKEN])(check_new_agent)
    registry.action(
        "add_agent", params=[NAME, ID_NUMBER, NEW_AGENT_PHONE],
        results={"agent_id": "The new agent's id.", "name": "Its name.",
                 "mobile": "Its mobile number, masked.",
                 "id_number": "Its ID number, masked."},
        refusals=[*_ACTING_REFUSALS, BAD_PHONE, AGENT_ID_TAKEN, AGENT_PHONE_TAKEN],
    )(add_agent)
    registry.action(
        "remove_agent", params=[AGENT],
        results={"agent_id": "The removed agent's id.", "name": "Its name.",
                 "mobile": "Its mobile number, masked."},
        refusals=[*_ACTING_REFUSALS, AGENT_UNKNOWN_REFUSAL, AGENT_IS_PRIMARY_REFUSAL],
    )(remove_agent)
    registry.action(
        "transfer_primary", params=[AGENT],
        results={"from_agent": "The agent who was primary (now an ordinary agent).",
                 "from_name": "Its name.",
                 "to_agent": "The new primary agent.", "to_name": "Its name."},
        refusals=[*_ACTING_REFUSALS, AGENT_UNKNOWN_REFUSAL, AGENT_IS_PRIMARY_REFUSAL],
    )(transfer_primary)
