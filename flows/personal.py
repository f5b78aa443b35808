"""Personal registration (SPEC 1) and personal password reset (SPEC 3)."""

from __future__ import annotations

import uuid
from typing import Any

import structlog

from engine import ActionInput, DuplicateKey, FieldError, GuardInput, Registry, ValidationFailed
from engine.steps import Write
from flows.identity import mask_mobile, mask_resident_id, mobile
from flows.pii import MOBILE, RESIDENT_ID
from flows.policies import AttemptsPolicy
from flows.sms import codes_for, send_code_unrevealing
from flows.sms import field_error as sms_field_error
from flows.support import check_new_password, refuse, services

log = structlog.get_logger("flows.personal")

# Which unique key a duplicate hit, and what to tell the user about it.
DUPLICATES: dict[str, FieldError] = {
    "accounts_login_key_key": FieldError("login_name", "login_name_taken", "该登录名已被使用",
                                         "This login name is taken"),
    "accounts_personal_id": FieldError(
        "id_number", "resident_id_registered", "该身份证号码已注册",
        "This ID number is already registered"),
    "accounts_personal_phone": FieldError("mobile", "mobile_registered", "该手机号码已注册",
                                          "This mobile number is already registered"),
    "organisations_credit_code_key": FieldError(
        "credit_code", "credit_code_registered", "该统一社会信用代码已注册",
        "This unified social credit code is already registered"),
}


def refusing_duplicates(write: Write) -> Write:
    """Turn a unique key hit inside the step's transaction into a field error."""

    async def guarded(tx: Any) -> None:
        try:
            await write(tx)
        except DuplicateKey as exc:
            error = DUPLICATES.get(str(exc.extra.get("constraint")))
            if error is None:
                raise
            raise ValidationFailed([error]) from None

    return guarded


def person_index(a: ActionInput, name: str, id_number: str) -> bytes:
    return services(a).vault.index("face_person", f"{name.strip()}\x00{id_number}")


# -- registration: basic info and the real-name registry -----------------------------

async def verify_real_name(a: ActionInput) -> dict[str, Any]:
    """Action: ID not yet registered, and the registry says name and ID belong together."""
    s = services(a)
    name, id_number = str(a.value("name")), str(a.value("id_number"))
    if await s.accounts.by_id_index(s.vault.index(RESIDENT_ID, id_number)) is not None:
        raise ValidationFailed([DUPLICATES["accounts_personal_id"]])
    if not await s.providers.realname.check(name, id_number,
                                            idempotency_key=a.idempotency_key):
        refuse("name", "realname_mismatch", "姓名与身份证号码不匹配",
               "This name does not belong to this ID number")
    passed = await s.accounts.face_passed(person_index(a, name, id_number))
    return {"match": True, "face_passed_before": passed}


def face_passed_before(g: GuardInput) -> bool:
    """This name and ID number passed face verification in an earlier registration."""
    fact = g.fact("verify_real_name") or {}
    return bool(fact.get("face_passed_before"))


# -- face verification ---------------------------------------------------------------

async def start_face_session(a: ActionInput) -> dict[str, Any]:
    """On entering face verification: open a provider session, remember whose it is."""
    s = services(a)
    name = str(a.value("legal_rep_name") if a.flow == "organisation_verification"
               else a.value("name"))
    id_number = str(a.value("legal_rep_id") if a.flow == "organisation_verification"
                    else a.value("id_number"))
    before = a.context.get("facts", {}).get("start_face_session") or {}
    session = await s.providers.face.create_session(
        name, id_number, callback_url=f"{s.public_url}/api/callbacks/face",
        idempotency_key=a.idempotency_key)
    a.write(s.accounts.link_provider_ref("face", session.session_id, a.instance_id, a.now))
    return {"session_id": session.session_id, "qr_url": session.qr_url,
            "n": int(before.get("n", 0)) + 1}


async def record_face_result(a: ActionInput) -> dict[str, Any]:
    """Action (provider callback): a pass is remembered for later registrations."""
    passed = a.input.get("result") == "pass"
    if passed and a.flow == "personal_registration":
        s = services(a)
        index = person_index(a, str(a.value("name")), str(a.value("id_number")))
        a.write(s.accounts.record_face_pass(index, a.instance_id, a.now))
    return {"passed": passed}


def face_passed(g: GuardInput) -> bool:
    return g.input.get("result") == "pass"


def face_sessions_left(g: GuardInput) -> bool:
    """Fewer face sessions opened in this flow than the policy allows."""
    opened = int((g.fact("start_face_session") or {}).get("n", 0))
    return opened < AttemptsPolicy.from_mapping(g.policies.get("attempts")).face_sessions


# -- registration: account info --------------------------------------------------------

async def check_account_fields(a: ActionInput, errors: list[FieldError]) -> dict[str, Any]:
    """Login name free and passwords within policy, with any errors found before; all of
    them at once, so the user fixes everything in one go."""
    s = services(a)
    login_name = str(a.input.get("login_name") or "")
    if await s.accounts.by_login_name(login_name) is not None:
        errors.insert(0, DUPLICATES["accounts_login_key_key"])
    try:
        check_new_password(a, login_name=login_name)
    except ValidationFailed as exc:
        errors.extend(exc.errors)
    if errors:
        raise ValidationFailed(errors)
    return {"login_name": login_name}


async def check_new_account(a: ActionInput) -> dict[str, Any]:
    """Action: login name free, mobile not registered, passwords equal and within policy."""
    s = services(a)
    errors: list[FieldError] = []
    phone = mobile(a.input.get("mobile"))
    if await s.accounts.by_phone_index(s.vault.index(MOBILE, phone)) is not None:
        errors.append(DUPLICATES["accounts_personal_phone"])
    return await check_account_fields(a, errors)


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
    for fn in (verify_real_name, start_face_session, record_face_result, check_new_account,
               create_personal_account, send_reset_code, check_reset_code, reset_password):
        registry.action(fn.__name__)(fn)
    for guard in (face_passed_before, face_passed, face_sessions_left):
        registry.guard(guard.__name__)(guard)
