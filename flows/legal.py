"""Legal-entity procedures: registration (SPEC 4), sign-in (SPEC 6), password reset (SPEC 7).

An organisation account (法人账号) is signed into by its login name and password, then
by one of its agents (经办人) with an SMS code sent to that agent's phone; the session
then carries the agent. Agents' phones are stored sealed: they are opened here only to
send a code, and shown masked. Which fields hold what, and what a code is for, are the
actions' parameters, with these procedures' field names (and, for a code, the state it
is sent and checked in) as defaults.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import structlog

from engine import ActionInput, FieldError, GuardInput, Param, Refusal, Registry, ValidationFailed
from flows.accounts import Account, Agent
from flows.identity import mask_credit_code, mask_mobile
from flows.passwords import CONFIRM, NEW_PASSWORD_REFUSALS, PASSWORD
from flows.pii import MOBILE, RESIDENT_ID
from flows.registration import (
    ACCOUNT_PARAMS,
    ACCOUNT_REFUSALS,
    ACCOUNT_RESULTS,
    CREDIT_CODE_REGISTERED,
    LOGIN_NAME_TAKEN,
    check_account_fields,
    duplicates,
    refusing_duplicates,
    under,
)
from flows.signin import CAPTCHA, SIGN_IN_PASSWORD, SIGN_IN_REFUSALS, SIGNED_IN, check_credentials
from flows.signin import LOGIN_NAME as SIGN_IN_LOGIN_NAME
from flows.sms import (
    BAD_PHONE,
    CODE,
    CODE_REFUSALS,
    MESSAGES,
    PHONE,
    PURPOSE,
    SENT_TO,
    SMS_CODE_DEAD,
    VERIFIED,
    check_code,
    codes_for,
    phone_in,
    purpose_of,
    queue_sms,
    send_code_unrevealing,
)
from flows.support import check_new_password, refuse_as, services

log = structlog.get_logger("flows.legal")

LEGAL_REP = "legal_rep"

CREDIT_CODE = Param("credit_code", "field", "The field that holds the unified social credit "
                    "code.", default="credit_code")
REGISTERED_CREDIT_CODE = Param("credit_code", "field", "The field, entered in an earlier "
                               "step, that holds the unified social credit code.",
                               default="credit_code", scope="flow")
APPLICANT_TYPE = Param("field", "field", "The choice field that says who applies: "
                       "`legal_rep` (the legal representative in person) or an agent.",
                       default="applicant_type", scope="flow")
AGENT = Param("agent", "field", "The choice field that holds the agent picked (one of "
              "`authenticate_organisation`'s agents).", default="agent")
ORGANISATION_LOGIN_NAME = Param("login_name", "field", "The field that holds the "
                                "organisation account's login name.", default="login_name")
VERIFIED_PHONE = Param("phone", "field", "The field, proven in an earlier step, that holds "
                       "the agent's mobile number.", default="mobile", scope="flow")

AGENT_GONE = Refusal("agent_gone", "该经办人已不属于本单位，请重新登录",
                     "This agent no longer belongs to the organisation; sign in again",
                     param="agent")
AGENT_CODE_DEAD = Refusal(SMS_CODE_DEAD, *MESSAGES[SMS_CODE_DEAD], param="agent")
NO_AGENT = Refusal("organisation_without_agent", "该单位没有经办人，请联系服务台",
                   "This organisation has no agent; call the service desk")
NOT_AN_AGENT_ORG = Refusal(
    "login_name_not_agent_org", "该登录名不属于此手机号码担任经办人的单位，请核对登录名",
    "This login name is not that of an organisation this mobile number is an agent of; "
    "check the login name", param="login_name")

# The unique keys a new organisation account may hit.
ORGANISATION_DUPLICATES = duplicates("accounts_login_key_key",
                                     "organisations_credit_code_key")


# -- registration (SPEC 4) -----------------------------------------------------------

def applicant_is_legal_rep(g: GuardInput) -> bool:
    """The legal representative applies in person: their data of step 1 is locked."""
    return g.values.get(g.params["field"]) == LEGAL_REP


async def check_credit_code_free(a: ActionInput) -> dict[str, Any]:
    """Action: the credit code has no organisation account yet."""
    s = services(a)
    if await s.accounts.credit_code_registered(str(a.value(a.params["credit_code"]))):
        refuse_as(a, CREDIT_CODE_REGISTERED)
    return {"credit_code_free": True}


def _applicant(a: ActionInput) -> tuple[str, str]:
    """The applicant's name and ID number: the legal representative's, or the agent's."""
    if a.value("applicant_type") == LEGAL_REP:
        return str(a.value("legal_rep_name")), str(a.value("legal_rep_id"))
    return str(a.value("applicant_name")), str(a.value("applicant_id"))


async def check_new_organisation(a: ActionInput) -> dict[str, Any]:
    """Action: passwords equal and within policy, then the SMS code, then login name free
    and credit code still free (flows.registration says why in this order)."""
    s = services(a)

    async def registered() -> list[FieldError]:
        taken = await s.accounts.credit_code_registered(str(a.value(a.params["credit_code"])))
        return [CREDIT_CODE_REGISTERED.error(a.params)] if taken else []

    return await check_account_fields(a, registered)


async def create_organisation_account(a: ActionInput) -> dict[str, Any]:
    """On entering done: the organisation, its account and its primary agent, in the
    step's own transaction; a credit code or login name taken meanwhile refuses the step."""
    s = services(a)
    org_name, credit_code = str(a.value("org_name")), str(a.value("credit_code"))
    rep_name, rep_id = str(a.value("legal_rep_name")), str(a.value("legal_rep_id"))
    agent_name, agent_id_number = _applicant(a)
    # Checked and normalised by the form when it was typed.
    phone = str(a.value("mobile"))
    login_name = str(a.value("login_name"))
    account_id, agent_id = str(uuid.uuid4()), str(uuid.uuid4())
    password_hash = await s.hasher.hash(str(a.input["password"]))
    a.write(refusing_duplicates(s.accounts.create_organisation(
        account_id=account_id, login_name=login_name, name=org_name, credit_code=credit_code,
        password_hash=password_hash, legal_rep_name=rep_name,
        legal_rep_id_sealed=s.vault.seal(RESIDENT_ID, rep_id),
        legal_rep_id_index=s.vault.index(RESIDENT_ID, rep_id),
        agent_id=agent_id, agent_name=agent_name,
        agent_id_sealed=s.vault.seal(RESIDENT_ID, agent_id_number),
        agent_id_index=s.vault.index(RESIDENT_ID, agent_id_number),
        agent_phone_sealed=s.vault.seal(MOBILE, phone),
        agent_phone_index=s.vault.index(MOBILE, phone), now=a.now), ORGANISATION_DUPLICATES))
    log.info("organisation_account_created", account_id=account_id)
    return {"account_id": account_id, "agent_id": agent_id, "login_name": login_name,
            "org_name": org_name, "credit_code": mask_credit_code(credit_code),
            "mobile": mask_mobile(phone), "verified": False}


# -- sign-in (SPEC 6) ----------------------------------------------------------------

def _agent_label(a: ActionInput, agent: Agent) -> str:
    return f"{agent.name} {mask_mobile(services(a).vault.open(MOBILE, agent.phone_sealed))}"


async def authenticate_organisation(a: ActionInput) -> dict[str, Any]:
    """Action: login name, password and captcha; the agents to choose from, phones masked."""
    s = services(a)
    account = await check_credentials(a, str(a.input.get(a.params["login_name"]) or ""),
                                      kinds=("organisation",))
    agents = await s.accounts.agents(account.id)
    if not agents:
        refuse_as(a, NO_AGENT)
    return {"account_id": account.id, "kind": account.kind,
            "login_name": account.login_name, "must_change": account.must_change_password,
            "agents": [{"value": g.id, "label": _agent_label(a, g)} for g in agents]}


def _signed_in_organisation(a: ActionInput) -> Mapping[str, Any]:
    fact = a.context.get("facts", {}).get("authenticate_organisation")
    if not isinstance(fact, Mapping):
        raise RuntimeError("no authenticated organisation in this flow")
    return fact


async def _chosen_agent(a: ActionInput) -> tuple[Agent, str]:
    """The agent picked (still one of the organisation's) and their phone, opened."""
    s = services(a)
    chosen = str(a.input.get(a.params["agent"]) or "")
    for agent in await s.accounts.agents(str(_signed_in_organisation(a)["account_id"])):
        if agent.id == chosen:
            return agent, s.vault.open(MOBILE, agent.phone_sealed)
    return refuse_as(a, AGENT_GONE)


async def send_agent_code(a: ActionInput) -> dict[str, Any]:
    """Action: an SMS code to the chosen agent's phone."""
    _, phone = await _chosen_agent(a)
    codes = codes_for(a)
    if await codes.exhausted(a.instance_id, purpose_of(a), phone):
        refuse_as(a, AGENT_CODE_DEAD)
    code = await codes.issue(a.instance_id, purpose_of(a), phone)
    queue_sms(a, services(a).vault, phone, codes.policy.text(code))
    return {"sent_to": mask_mobile(phone)}


async def check_agent_code(a: ActionInput) -> dict[str, Any]:
    """Action: the code sent to the chosen agent; the session will carry that agent."""
    agent, phone = await _chosen_agent(a)
    await check_code(a, phone)
    return {"agent_id": agent.id}


# -- password reset (SPEC 7) ---------------------------------------------------------

async def _agent_organisations(a: ActionInput, phone: str) -> list[Account]:
    s = services(a)
    return list(await s.accounts.organisations_of_agent_phone(s.vault.index(MOBILE, phone)))


async def send_legal_reset_code(a: ActionInput) -> dict[str, Any]:
    """Action: a code goes only to an agent's phone, a decoy to any other; the work and
    the answer are the same either way."""
    phone = phone_in(a)
    return await send_code_unrevealing(a, phone,
                                       registered=bool(await _agent_organisations(a, phone)))


async def check_legal_reset_code(a: ActionInput) -> dict[str, Any]:
    """Action: the code sent to this phone; only an agent's phone ever got one that can
    be right."""
    phone = phone_in(a)
    await check_code(a, phone)
    if not await _agent_organisations(a, phone):  # removed meanwhile: like a wrong code
        refuse_as(a, CODE_REFUSALS["sms_code_wrong"])
    return {"verified": mask_mobile(phone)}


async def reset_organisation_password(a: ActionInput) -> dict[str, Any]:
    """Action: the organisation named, if the verified phone is one of its agents'; the new
    password, and every session of the account ended."""
    s = services(a)
    login_key = str(a.input.get(a.params["login_name"]) or "").strip().lower()
    phone = phone_in(a)
    account = next((o for o in await _agent_organisations(a, phone)
                    if o.login_name.strip().lower() == login_key), None)
    errors: list[FieldError] = [] if account is not None else [NOT_AN_AGENT_ORG.error(a.params)]
    password = ""
    try:
        password = check_new_password(
            a, login_name=account.login_name if account is not None else login_key)
    except ValidationFailed as exc:
        errors.extend(exc.errors)
    if errors or account is None:
        raise ValidationFailed(errors)
    a.write(s.accounts.set_password(account.id, await s.hasher.hash(password),
                                    must_change=False, now=a.now))
    await s.sessions.end_all(account.id)
    log.info("organisation_password_reset", account_id=account.id)
    return {"reset": True}


def register(registry: Registry) -> None:
    """Register this module's actions and guards."""
    registry.action("check_credit_code_free", params=[CREDIT_CODE],
                    results={"credit_code_free": "True: no organisation has the code yet."},
                    refusals=[CREDIT_CODE_REGISTERED])(check_credit_code_free)
    registry.action("check_new_organisation", params=[*ACCOUNT_PARAMS, REGISTERED_CREDIT_CODE],
                    results=ACCOUNT_RESULTS,
                    refusals=[*ACCOUNT_REFUSALS, CREDIT_CODE_REGISTERED],
                    )(check_new_organisation)
    registry.action(
        "create_organisation_account", params=[],
        results={"account_id": "The organisation account's id.",
                 "agent_id": "Its primary agent's id.",
                 "login_name": "Its login name.",
                 "org_name": "The organisation's name.",
                 "credit_code": "Its credit code, masked.",
                 "mobile": "The primary agent's mobile number, masked.",
                 "verified": "False: a new organisation is not verified yet."},
        refusals=[under(LOGIN_NAME_TAKEN, "login_name"),
                  under(CREDIT_CODE_REGISTERED, "credit_code")])(create_organisation_account)
    registry.action(
        "authenticate_organisation", params=[SIGN_IN_LOGIN_NAME, SIGN_IN_PASSWORD, CAPTCHA],
        results={**SIGNED_IN, "agents": "The organisation's agents to choose from: "
                                        "[{value: agent id, label: name and masked phone}]."},
        refusals=[*SIGN_IN_REFUSALS, NO_AGENT])(authenticate_organisation)
    registry.action("send_agent_code", params=[AGENT, PURPOSE], results=SENT_TO,
                    refusals=[AGENT_GONE, AGENT_CODE_DEAD])(send_agent_code)
    registry.action("check_agent_code", params=[AGENT, CODE, PURPOSE],
                    results={"agent_id": "The agent the code proved."},
                    refusals=[AGENT_GONE, *CODE_REFUSALS.values()])(check_agent_code)
    registry.action("send_legal_reset_code", params=[PHONE, PURPOSE], results=SENT_TO,
                    refusals=[BAD_PHONE])(send_legal_reset_code)
    registry.action("check_legal_reset_code", params=[PHONE, CODE, PURPOSE], results=VERIFIED,
                    refusals=[BAD_PHONE, *CODE_REFUSALS.values()])(check_legal_reset_code)
    registry.action(
        "reset_organisation_password",
        params=[ORGANISATION_LOGIN_NAME, VERIFIED_PHONE, PASSWORD, CONFIRM],
        results={"reset": "True: the password was set."},
        refusals=[NOT_AN_AGENT_ORG, BAD_PHONE, *NEW_PASSWORD_REFUSALS],
    )(reset_organisation_password)
    registry.guard("applicant_is_legal_rep", params=[APPLICANT_TYPE])(applicant_is_legal_rep)
