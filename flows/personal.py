"""Personal registration (SPEC 1) and personal password reset (SPEC 3).

Which fields hold the name, the ID number, the phone and the code, and what a code is
for, are the actions' parameters; their defaults are these procedures' field names and,
for a code, the name of the state it is sent and checked in.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog

from engine import ActionInput, FieldError, Param, Refusal, Registry
from flows.face import passed_before
from flows.identity import mask_mobile, mask_resident_id
from flows.passwords import CONFIRM, NEW_PASSWORD_REFUSALS, PASSWORD
from flows.pii import MOBILE, RESIDENT_ID
from flows.registration import (
    ACCOUNT_PARAMS,
    ACCOUNT_REFUSALS,
    ACCOUNT_RESULTS,
    ID_REGISTERED,
    LOGIN_NAME_TAKEN,
    PHONE_REGISTERED,
    check_account_fields,
    duplicates,
    refusing_duplicates,
    under,
)
from flows.sms import (
    BAD_PHONE,
    CODE,
    CODE_REFUSALS,
    PHONE,
    PURPOSE,
    SENT_TO,
    check_code,
    phone_in,
    send_code_unrevealing,
)
from flows.support import check_new_password, refuse_as, services

log = structlog.get_logger("flows.personal")

NAME = Param("name", "field", "The field that holds the person's name.", default="name")
ID_NUMBER = Param("id_number", "field", "The field that holds the resident ID number.",
                  default="id_number")
REALNAME_MISMATCH = Refusal("realname_mismatch", "姓名与身份证号码不匹配",
                            "This name does not belong to this ID number", param="name")
ACCOUNT_GONE = Refusal("account_gone", "账号不存在", "The account no longer exists")

# The unique keys a new personal account may hit.
PERSON_DUPLICATES = duplicates("accounts_login_key_key", "accounts_personal_id",
                               "accounts_personal_phone")


# -- registration: basic info and the real-name registry -----------------------------

async def verify_real_name(a: ActionInput) -> dict[str, Any]:
    """Action: the registry says name and ID belong together; only then, whether the ID is
    registered, and whether this owner passed face verification for them lately."""
    s = services(a)
    name = str(a.value(a.params["name"]))
    id_number = str(a.value(a.params["id_number"]))
    # The registry first: "this ID is registered" is for whoever knows the name with it.
    if not await s.providers.realname.check(name, id_number,
                                            idempotency_key=a.idempotency_key):
        refuse_as(a, REALNAME_MISMATCH)
    if await s.accounts.by_id_index(s.vault.index(RESIDENT_ID, id_number)) is not None:
        refuse_as(a, ID_REGISTERED)
    return {"match": True, "face_passed_before": await passed_before(a, name, id_number)}


# -- registration: account info --------------------------------------------------------

async def check_new_account(a: ActionInput) -> dict[str, Any]:
    """Action: passwords equal and within policy, then the SMS code, then login name free
    and mobile not registered (flows.registration says why in this order)."""
    s = services(a)

    async def registered() -> list[FieldError]:
        phone = phone_in(a)
        taken = await s.accounts.by_phone_index(s.vault.index(MOBILE, phone)) is not None
        return [PHONE_REGISTERED.error(a.params)] if taken else []

    return await check_account_fields(a, registered)


async def create_personal_account(a: ActionInput) -> dict[str, Any]:
    """On entering done: create the account in the step's own transaction."""
    s = services(a)
    # Every value was checked by the form when it was typed, the mobile number normalised.
    name, id_number = str(a.value("name")), str(a.value("id_number"))
    phone = str(a.value("mobile"))
    login_name = str(a.value("login_name"))
    account_id = str(uuid.uuid4())
    password_hash = await s.hasher.hash(str(a.input["password"]))
    a.write(refusing_duplicates(s.accounts.create_person(
        account_id=account_id, kind="personal", login_name=login_name, display_name=name,
        password_hash=password_hash,
        id_number_sealed=s.vault.seal(RESIDENT_ID, id_number),
        id_number_index=s.vault.index(RESIDENT_ID, id_number),
        phone_sealed=s.vault.seal(MOBILE, phone), phone_index=s.vault.index(MOBILE, phone),
        must_change_password=False, now=a.now), PERSON_DUPLICATES))
    log.info("personal_account_created", account_id=account_id)
    return {"account_id": account_id, "login_name": login_name,
            "id_number": mask_resident_id(id_number), "mobile": mask_mobile(phone)}


# -- password reset --------------------------------------------------------------------

async def send_reset_code(a: ActionInput) -> dict[str, Any]:
    """Action: a code goes only to a registered number, a decoy to any other; the work
    and the answer are the same either way."""
    s = services(a)
    phone = phone_in(a)
    account = await s.accounts.by_phone_index(s.vault.index(MOBILE, phone))
    return await send_code_unrevealing(a, phone, registered=account is not None)


async def check_reset_code(a: ActionInput) -> dict[str, Any]:
    """Action: the code sent to this number; only a registered number ever got one that
    can be right (any other has a decoy, counted and refused alike)."""
    s = services(a)
    phone = phone_in(a)
    await check_code(a, phone)
    account = await s.accounts.by_phone_index(s.vault.index(MOBILE, phone))
    if account is None:  # deleted meanwhile: answer like a wrong code
        refuse_as(a, CODE_REFUSALS["sms_code_wrong"])
    return {"account_id": account.id}


async def reset_password(a: ActionInput) -> dict[str, Any]:
    """Action: the new password, and every other session of the account ended."""
    s = services(a)
    fact = a.fact("check_reset_code") or {}
    account = await s.accounts.by_id(str(fact.get("account_id")))
    if account is None:
        refuse_as(a, ACCOUNT_GONE)
    password = check_new_password(a, login_name=account.login_name)
    a.write(s.accounts.set_password(account.id, await s.hasher.hash(password),
                                    must_change=False, now=a.now))
    await s.sessions.end_all(account.id)
    return {"reset": True}


def register(registry: Registry) -> None:
    registry.action(
        "verify_real_name", params=[NAME, ID_NUMBER],
        results={"match": "True: the registry says the name and the ID number belong together.",
                 "face_passed_before": "Whether this owner passed face verification for "
                                       "this person within face_skip.within."},
        refusals=[REALNAME_MISMATCH, ID_REGISTERED])(verify_real_name)
    registry.action("check_new_account", params=ACCOUNT_PARAMS, results=ACCOUNT_RESULTS,
                    refusals=[*ACCOUNT_REFUSALS, PHONE_REGISTERED])(check_new_account)
    registry.action(
        "create_personal_account", params=[],
        results={"account_id": "The new account's id.",
                 "login_name": "Its login name.",
                 "id_number": "Its ID number, masked (450***********1234).",
                 "mobile": "Its mobile number, masked (138****8000)."},
        refusals=[under(r, f) for r, f in ((LOGIN_NAME_TAKEN, "login_name"),
                                           (ID_REGISTERED, "id_number"),
                                           (PHONE_REGISTERED, "mobile"))],
    )(create_personal_account)
    registry.action("send_reset_code", params=[PHONE, PURPOSE], results=SENT_TO,
                    refusals=[BAD_PHONE])(send_reset_code)
    registry.action("check_reset_code", params=[PHONE, CODE, PURPOSE],
                    results={"account_id": "The account whose number the code proved."},
                    refusals=[BAD_PHONE, *CODE_REFUSALS.values()])(check_reset_code)
    registry.action("reset_password", params=[PASSWORD, CONFIRM],
                    results={"reset": "True: the password was set."},
                    refusals=[ACCOUNT_GONE, *NEW_PASSWORD_REFUSALS])(reset_password)
