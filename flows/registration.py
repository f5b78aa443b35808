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
in the ephemeral store, bound to the instance, the purpose and the phone, so history and
replay see one step with its facts, as before.

Which fields hold the login name, the passwords, the phone and the code are the action's
parameters (``ACCOUNT_PARAMS``), with the registrations' field names as defaults.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from engine import ActionInput, DuplicateKey, FieldError, Param, Refusal, ValidationFailed
from engine.values import Write
from flows.passwords import CONFIRM, NEW_PASSWORD_REFUSALS, PASSWORD
from flows.sms import BAD_PHONE, CODE, CODE_REFUSALS, PHONE, PURPOSE, VERIFIED, prove_phone
from flows.support import check_new_password, services

LOGIN_NAME = Param("login_name", "field", "The field that holds the login name chosen.",
                   default="login_name")

# What a registration finds taken, under the field its parameter names.
LOGIN_NAME_TAKEN = Refusal("login_name_taken", "该登录名已被使用", "This login name is taken",
                           param="login_name")
ID_REGISTERED = Refusal("resident_id_registered", "该身份证号码已注册",
                        "This ID number is already registered", param="id_number")
PHONE_REGISTERED = Refusal("mobile_registered", "该手机号码已注册",
                           "This mobile number is already registered", param="phone")
CREDIT_CODE_REGISTERED = Refusal("credit_code_registered", "该统一社会信用代码已注册",
                                 "This unified social credit code is already registered",
                                 param="credit_code")


def under(refusal: Refusal, field: str) -> Refusal:
    """The same refusal under a fixed field (for an action without that parameter)."""
    return attrs.evolve(refusal, field=field, param=None)


# Which unique key a duplicate hit, and what to tell the user about it, under the
# registrations' own field names.
DUPLICATES: dict[str, FieldError] = {
    "accounts_login_key_key": LOGIN_NAME_TAKEN.error({"login_name": "login_name"}),
    "accounts_personal_id": ID_REGISTERED.error({"id_number": "id_number"}),
    "accounts_personal_phone": PHONE_REGISTERED.error({"phone": "mobile"}),
    "organisations_credit_code_key": CREDIT_CODE_REGISTERED.error(
        {"credit_code": "credit_code"}),
}

# What the account step of a registration takes, and what it may refuse (besides what
# its own ``registered`` finds).
ACCOUNT_PARAMS = (LOGIN_NAME, PASSWORD, CONFIRM, PHONE, CODE, PURPOSE)
ACCOUNT_REFUSALS = (*NEW_PASSWORD_REFUSALS, BAD_PHONE, *CODE_REFUSALS.values(),
                    LOGIN_NAME_TAKEN)
ACCOUNT_RESULTS = {"login_name": "The login name, free when the step was taken.", **VERIFIED}

# What a registration finds already registered, once the phone is proven.
Registered = Callable[[], Awaitable[list[FieldError]]]


def duplicates(*constraints: str) -> dict[str, FieldError]:
    """The errors of these unique keys, for ``refusing_duplicates``."""
    return {c: DUPLICATES[c] for c in constraints}


def refusing_duplicates(write: Write, errors: Mapping[str, FieldError]) -> Write:
    """Turn a unique key hit inside the step's transaction into its field error; ``errors``:
    by constraint, the unique keys this write may hit."""

    async def guarded(tx: Any) -> None:
        try:
            await write(tx)
        except DuplicateKey as exc:
            error = errors.get(str(exc.extra.get("constraint")))
            if error is None:
                raise
            raise ValidationFailed([error]) from None

    return guarded


async def check_account_fields(a: ActionInput, registered: Registered) -> dict[str, Any]:
    """Passwords, then the SMS code, then what is registered already: the login name, and
    whatever ``registered`` finds; every error of a stage at once."""
    login_name = str(a.input.get(a.params["login_name"]) or "")
    check_new_password(a, login_name=login_name)
    proven = await prove_phone(a)
    errors = await registered()
    if await services(a).accounts.by_login_name(login_name) is not None:
        errors.insert(0, LOGIN_NAME_TAKEN.error(a.params))
    if errors:
        raise ValidationFailed(errors)
    return {"login_name": login_name, **proven}
