"""What the registrations share (SPEC 1.3, 4.2): the account step's checks, and unique
keys hit at the last moment as field errors.

Whether a mobile number is registered, or a login name taken, is somebody else's
business until the one asking proves the phone. So the account step checks, in order:

1. what tells nothing about anybody: the two passwords equal, within the policy, not
   the login name (formats were checked by the form);
2. the SMS code, which proves the phone (``check_sms_code``: a right code is used up,
   and the phone stays proven in this step for the code's lifetime);
3. the registration facts: mobile registered, login name taken, credit code registered.

Each stage refuses the step before the next one runs. A user whose login name turns
out to be taken fixes it and submits again with the same code: the phone is proven
already, so no new code is needed. Nothing of a refused step is stored; the proof lives
in the ephemeral store, bound to the instance, the state and the phone, so history and
replay see one step with its facts, as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from engine import ActionInput, DuplicateKey, FieldError, ValidationFailed
from engine.values import Write
from flows.sms import prove_phone
from flows.support import check_new_password, services

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

# What a registration finds already registered, once the phone is proven.
Registered = Callable[[], Awaitable[list[FieldError]]]


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


async def check_account_fields(a: ActionInput, registered: Registered) -> dict[str, Any]:
    """Passwords, then the SMS code, then what is registered already: the login name, and
    whatever ``registered`` finds; every error of a stage at once."""
    login_name = str(a.input.get("login_name") or "")
    check_new_password(a, login_name=login_name)
    proven = await prove_phone(a)
    errors = await registered()
    if await services(a).accounts.by_login_name(login_name) is not None:
        errors.insert(0, DUPLICATES["accounts_login_key_key"])
    if errors:
        raise ValidationFailed(errors)
    return {"login_name": login_name, **proven}
