"""Legal-entity procedures: registration (SPEC 4), sign-in (SPEC 6), password reset (SPEC 7).

An organisation account (法人账号) is signed into by its login name and password, then
by one of its agents (经办人) with an SMS code sent to that agent's phone; the session
then carries the agent. Agents' phones are stored sealed: they are opened here only to
send a code, and shown masked.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import structlog

from engine import ActionInput, FieldError, GuardInput, Registry, ValidationFailed
from flows.accounts import Account, Agent
from flows.identity import mask_credit_code, mask_mobile, mobile
from flows.pii import MOBILE, RESIDENT_ID
from flows.registration import DUPLICATES, check_account_fields, refusing_duplicates
from flows.signin import check_credentials
from flows.sms import SMS_CODE_DEAD, SMS_CODE_WRONG, codes_for, queue_sms, send_code_unrevealing
from flows.sms import field_error as sms_field_error
from flows.support import check_new_password, refuse, services

log = structlog.get_logger("flows.legal")

LEGAL_REP = "legal_rep"

NOT_AN_AGENT_ORG = FieldError(
    "login_name", "login_name_not_agent_org",
    "该登录名不属于此手机号码担任经办人的单位，请核对登录名",
    "This login name is not that of an organisation this mobile number is an agent of; "
    "check the login name")


# -- registration (SPEC 4) -----------------------------------------------------------

def applicant_is_legal_rep(g: GuardInput) -> bool:
    """The legal representative applies in person: their data of step 1 is locked."""
    return g.values.get("applicant_type") == LEGAL_REP


async def check_credit_code_free(a: ActionInput) -> dict[str, Any]:
    """Action: the credit code has no organisation account yet."""
    s = services(a)
    if await s.accounts.credit_code_registered(str(a.value("credit_code"))):
        raise ValidationFailed([DUPLICATES["organisations_credit_code_key"]])
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
        taken = await s.accounts.credit_code_registered(str(a.value("credit_code")))
        return [DUPLICATES["organisations_credit_code_key"]] if taken else []

    return await check_account_fields(a, registered)


async def create_organisation_account(a: ActionInput) -> dict[str, Any]:
    """On entering done: the organisation, its account and its primary agent, in the
    step's own transaction; a credit code or login name taken meanwhile refuses the step."""
    s = services(a)
    org_name, credit_code = str(a.value("org_name")), str(a.value("credit_code"))
    rep_name, rep_id = str(a.value("legal_rep_name")), str(a.value("legal_rep_id"))
    agent_name, agent_id_number = _applicant(a)
    phone = mobile(a.value("mobile"))
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
        agent_phone_index=s.vault.index(MOBILE, phone), now=a.now)))
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
    account = await check_credentials(a, str(a.input.get("login_name") or ""),
                                      kinds=("organisation",))
    agents = await s.accounts.agents(account.id)
    if not agents:
        refuse(None, "organisation_without_agent", "该单位没有经办人，请联系服务台",
               "This organisation has no agent; call the service desk")
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
    chosen = str(a.input.get("agent") or "")
    for agent in await s.accounts.agents(str(_signed_in_organisation(a)["account_id"])):
        if agent.id == chosen:
            return agent, s.vault.open(MOBILE, agent.phone_sealed)
    return refuse("agent", "agent_gone", "该经办人已不属于本单位，请重新登录",
                  "This agent no longer belongs to the organisation; sign in again")


async def send_agent_code(a: ActionInput) -> dict[str, Any]:
    """Action: an SMS code to the chosen agent's phone."""
    s = services(a)
    _, phone = await _chosen_agent(a)
    if await codes_for(a).exhausted(a.instance_id, a.state, phone):
        raise ValidationFailed([sms_field_error(SMS_CODE_DEAD, "agent")])
    code = await codes_for(a).issue(a.instance_id, a.state, phone)
    queue_sms(a, s.vault, phone, codes_for(a).policy.text(code))
    return {"sent_to": mask_mobile(phone)}


async def check_agent_code(a: ActionInput) -> dict[str, Any]:
    """Action: the code sent to the chosen agent; the session will carry that agent."""
    agent, phone = await _chosen_agent(a)
    error_id = await codes_for(a).verify(a.instance_id, a.state, phone,
                                        str(a.input.get("sms_code") or ""))
    if error_id is not None:
        raise ValidationFailed([sms_field_error(error_id)])
    return {"agent_id": agent.id}


# -- password reset (SPEC 7) ---------------------------------------------------------

async def _agent_organisations(a: ActionInput, phone: str) -> list[Account]:
    s = services(a)
    return list(await s.accounts.organisations_of_agent_phone(s.vault.index(MOBILE, phone)))


async def send_legal_reset_code(a: ActionInput) -> dict[str, Any]:
    """Action: a code goes only to an agent's phone, a decoy to any other; the work and
    the answer are the same either way."""
    phone = mobile(a.input.get("mobile"))
    return await send_code_unrevealing(a, services(a).vault, phone,
                                       registered=bool(await _agent_organisations(a, phone)))


async def check_legal_reset_code(a: ActionInput) -> dict[str, Any]:
    """Action: the code sent to this phone; only an agent's phone ever got one that can
    be right."""
    phone = mobile(a.input.get("mobile"))
    error_id = await codes_for(a).verify(a.instance_id, a.state, phone,
                                        str(a.input.get("sms_code") or ""))
    if error_id is not None:
        raise ValidationFailed([sms_field_error(error_id)])
    if not await _agent_organisations(a, phone):  # removed meanwhile: like a wrong code
        raise ValidationFailed([sms_field_error(SMS_CODE_WRONG)])
    return {"verified": mask_mobile(phone)}


async def reset_organisation_password(a: ActionInput) -> dict[str, Any]:
    """Action: the organisation named, if the verified phone is one of its agents'; the new
    password, and every session of the account ended."""
    s = services(a)
    login_key = str(a.input.get("login_name") or "").strip().lower()
    phone = mobile(a.value("mobile"))
    account = next((o for o in await _agent_organisations(a, phone)
                    if o.login_name.strip().lower() == login_key), None)
    errors: list[FieldError] = [] if account is not None else [NOT_AN_AGENT_ORG]
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
    for fn in (check_credit_code_free, check_new_organisation, create_organisation_account,
               authenticate_organisation, send_agent_code, check_agent_code,
               send_legal_reset_code, check_legal_reset_code, reset_organisation_password):
        registry.action(fn.__name__)(fn)
    registry.guard("applicant_is_legal_rep")(applicant_is_legal_rep)

