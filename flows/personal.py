"""Personal registration (SPEC 1) and personal password reset (SPEC 3)."""

from __future__ import annotations

import uuid
from typing import Any

import structlog

from engine import ActionInput, FieldError, Registry, ValidationFailed
from flows.face import passed_before
from flows.identity import mask_mobile, mask_resident_id, mobile
from flows.pii import MOBILE, RESIDENT_ID
from flows.registration import DUPLICATES, check_account_fields, refusing_duplicates
from flows.sms import codes_for, send_code_unrevealing
from flows.sms import field_error as sms_field_error
from flows.support import check_new_password, refuse, services

log = structlog.get_logger("flows.personal")


# -- registration: basic info and the real-name registry -----------------------------

async def verify_real_name(a: ActionInput) -> dict[str, Any]:
    """Action: the registry says name and ID belong together; only then, whether the ID is
    registered, and whether this owner passed face verification for them lately."""
    s = services(a)
    name, id_number = str(a.value("name")), str(a.value("id_number"))
    # The registry first: "this ID is registered" is for whoever knows the name with it.
    if not await s.providers.realname.check(name, id_number,
                                            idempotency_key=a.idempotency_key):
        refuse("name", "realname_mismatch", "姓名与身份证号码不匹配",
               "This name does not belong to this ID number")
    if await s.accounts.by_id_index(s.vault.index(RESIDENT_ID, id_number)) is not None:
        raise ValidationFailed([DUPLICATES["accounts_personal_id"]])
    return {"match": True, "face_passed_before": await passed_before(a, name, id_number)}


# -- registration: account info --------------------------------------------------------

async def check_new_account(a: ActionInput) -> dict[str, Any]:
    """Action: passwords equal and within policy, then the SMS code, then login name free
    and mobile not registered (flows.registration says why in this order)."""
    s = services(a)

    async def registered() -> list[FieldError]:
        phone = mobile(a.input.get("mobile"))
        taken = await s.accounts.by_phone_index(s.vault.index(MOBILE, phone)) is not None
        return [DUPLICATES["accounts_personal_phone"]] if taken else []

    return await check_account_fields(a, registered)


async def create_personal_account(a: ActionInput) -> dict[str, Any]:
    """On entering done: create the account in the step's own transaction."""
    s = services(a)
    name, id_number = str(a.value("name")), str(a.value("id_number"))
    phone = mobile(a.value("mobile"))
    login_name = str(a.value("login_name"))
    account_id = str(uuid.uuid4())
    password_hash = await s.hasher.hash(str(a.input["password"]))
    a.write(refusing_duplicates(s.accounts.create_person(
        account_id=account_id, kind="personal", login_name=login_name, display_name=name,
        password_hash=password_hash,
        id_number_sealed=s.vault.seal(RESIDENT_ID, id_number),
        id_number_index=s.vault.index(RESIDENT_ID, id_number),
        phone_sealed=s.vault.seal(MOBILE, phone), phone_index=s.vault.index(MOBILE, phone),
        must_change_password=False, now=a.now)))
    log.info("personal_account_created", account_id=account_id)
    return {"account_id": account_id, "login_name": login_name,
            "id_number": mask_resident_id(id_number), "mobile": mask_mobile(phone)}


# -- password reset --------------------------------------------------------------------

async def send_reset_code(a: ActionInput) -> dict[str, Any]:
    """Action: a code goes only to a registered number, a decoy to any other; the work
    and the answer are the same either way."""
    s = services(a)
    phone = mobile(a.input.get("mobile"))
    account = await s.accounts.by_phone_index(s.vault.index(MOBILE, phone))
    return await send_code_unrevealing(a, s.vault, phone, registered=account is not None)


async def check_reset_code(a: ActionInput) -> dict[str, Any]:
    """Action: the code sent to this number; only a registered number ever got one that
    can be right (any other has a decoy, counted and refused alike)."""
    s = services(a)
    phone = mobile(a.input.get("mobile"))
    error_id = await codes_for(a).verify(a.instance_id, a.state, phone,
                                        str(a.input.get("sms_code") or ""))
    if error_id is not None:
        raise ValidationFailed([sms_field_error(error_id)])
    account = await s.accounts.by_phone_index(s.vault.index(MOBILE, phone))
    if account is None:  # deleted meanwhile: answer like a wrong code
        raise ValidationFailed([sms_field_error("sms_code_wrong")])
    return {"account_id": account.id}


async def reset_password(a: ActionInput) -> dict[str, Any]:
    """Action: the new password, and every other session of the account ended."""
    s = services(a)
    fact = a.context.get("facts", {}).get("check_reset_code") or {}
    account = await s.accounts.by_id(str(fact.get("account_id")))
    if account is None:
        refuse(None, "account_gone", "账号不存在", "The account no longer exists")
    password = check_new_password(a, login_name=account.login_name)
    a.write(s.accounts.set_password(account.id, await s.hasher.hash(password),
                                    must_change=False, now=a.now))
    await s.sessions.end_all(account.id)
    return {"reset": True}


def register(registry: Registry) -> None:
    for fn in (verify_real_name, check_new_account, create_personal_account,
               send_reset_code, check_reset_code, reset_password):
        registry.action(fn.__name__)(fn)
