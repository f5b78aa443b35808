"""Building blocks for what a signed-in account does about itself (the personal center,
SPEC 10): who it is, its current password, a new password, its other sessions.

They act on the account that takes the step (``account:<id>``, as ``access: account``
flows are started and stepped by it), never on one a client names, so a flow built from
them cannot reach another account. ``load_account``, in the initial state's
``on_enter``, refuses the start to kinds of account the flow is not for, and records
what the steps show: the login name, and the mobile number sealed (for a locked
``sensitive`` field's ``value_from``) and masked (for ``show``).

A wrong current password counts against the account's sign-in failures
(``login_lockout``): a stolen session gets no guesses that signing in would not give.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar, NoReturn

import structlog

from engine import (
    ActionInput,
    EngineError,
    Forbidden,
    GuardInput,
    Param,
    Refusal,
    Registry,
    ValidationFailed,
)
from flows.accounts import Account
from flows.identity import mask_mobile
from flows.passwords import CONFIRM, NEW_PASSWORD_REFUSALS, PASSWORD, UNCHANGED
from flows.pii import MOBILE
from flows.policies import LockoutPolicy
from flows.signin import counted_check, locked_for
from flows.support import refuse_as, replace_password, services, signed_in_account_id

log = structlog.get_logger("flows.profile")

KINDS = ("personal", "organisation", "supervisor")
_KIND_WORD = "(" + "|".join(KINDS) + ")"


class AccountKindRefused(EngineError, PermissionError):
    """A signed-in account of a kind the flow is not for started it."""

    status: ClassVar[int] = 403
    error_id: ClassVar[str] = "account_kind_not_allowed"
    zh: ClassVar[str] = "此项业务不适用于您的账号类型"
    en: ClassVar[str] = "This procedure is not for your kind of account"


ACCOUNT_KINDS = Param("kinds", "string", "The kinds of account that may start the flow, "
                      "separated by spaces: personal, organisation, supervisor.",
                      default=" ".join(KINDS), pattern=f"{_KIND_WORD}( {_KIND_WORD})*")
CURRENT_PASSWORD = Param("password", "field", "The field that holds the current password.",
                         default="current_password")
ACCOUNT_REQUIRED = Refusal("account_required", "请先登录", "Sign in first")
PASSWORD_WRONG = Refusal("current_password_wrong", "当前密码不正确",
                         "The current password is wrong", param="password")
PASSWORD_LOCKED = Refusal("current_password_locked", "密码错误次数过多，请稍后再试",
                          "Too many wrong passwords; try again later", param="password")


async def signed_in_account(a: ActionInput) -> Account:
    """The account that takes this step, still there; else the step is refused."""
    account_id = signed_in_account_id(a)
    account = await services(a).accounts.by_id(account_id) if account_id else None
    if account is None:
        refuse_as(a, ACCOUNT_REQUIRED)
    return account


async def load_account(a: ActionInput) -> dict[str, Any] | None:
    """On entering the initial state at start: the signed-in account, if it is of one of
    ``kinds``; its login name and mobile number (sealed, and masked).

    Re-entering the state later records nothing new: the account was checked when the
    flow started, and its fact is recorded.
    """
    if a.fact(a.action) is not None:
        return None
    account_id = signed_in_account_id(a)
    account = await services(a).accounts.by_id(account_id) if account_id else None
    if account is None:
        raise Forbidden("this flow needs a signed-in account")
    if account.kind not in str(a.params["kinds"]).split():
        raise AccountKindRefused()
    phone = services(a).vault.open(MOBILE, account.phone_sealed) \
        if account.phone_sealed is not None else None
    return {"account_id": account.id, "kind": account.kind,
            "login_name": account.login_name, "has_phone": phone is not None,
            # Sealed like a sensitive field: a locked field shows it masked, actions open it.
            "mobile": a.sealer.seal(MOBILE, phone) if phone else None,
            "mobile_masked": mask_mobile(phone) if phone else None}


def account_has_phone(g: GuardInput) -> bool:
    """The signed-in account (the fact of ``load_account``) has a mobile number."""
    return bool((g.fact("load_account") or {}).get("has_phone"))


def _refuse_locked(a: ActionInput, left: timedelta) -> NoReturn:
    minutes = max(1, int(left.total_seconds() // 60) + 1)
    raise ValidationFailed([PASSWORD_LOCKED.error(
        a.params, zh=f"密码错误次数过多，请{minutes}分钟后再试",
        en=f"Too many wrong passwords; try again in {minutes} minute(s)")])


async def check_current_password(a: ActionInput) -> None:
    """Action: the password in the field ``password`` is the signed-in account's own.

    Each wrong one counts against the account's failed sign-ins, under the
    ``login_lockout`` policy; past its ``max_failures`` the check is refused unmade until
    the lock ends.
    """
    s = services(a)
    account = await signed_in_account(a)
    policy = LockoutPolicy.from_mapping(a.policies.get("login_lockout"))
    subject = f"account:{account.id}"
    left = await locked_for(s, subject)
    if left is not None:
        _refuse_locked(a, left)
    typed = str(a.input.get(a.params["password"]) or "")

    async def check() -> bool:
        return await s.hasher.verify(account.password_hash, typed)

    outcome = await counted_check(s, subject, policy, check)
    if isinstance(outcome, timedelta):
        _refuse_locked(a, outcome)
    if not outcome:
        refuse_as(a, PASSWORD_WRONG)


async def set_password(a: ActionInput) -> dict[str, Any]:
    """Action: the signed-in account's new password (fields ``password`` and ``confirm``),
    within the policy and not the one it has."""
    account = await signed_in_account(a)
    await replace_password(a, account)
    log.info("password_changed", account_id=account.id)
    return {"changed": True}


async def end_other_sessions(a: ActionInput) -> dict[str, Any]:
    """Action: every session of the signed-in account ends but the one taking this step
    (a step without one, by the clock or a provider, ends them all)."""
    account = await signed_in_account(a)
    kept = await services(a).sessions.end_others(account.id, keep=a.session)
    log.info("other_sessions_ended", account_id=account.id, kept_this_one=kept)
    return {"others_ended": True}


def register(registry: Registry) -> None:
    """Register this module's actions and guards."""
    registry.action(
        "load_account", params=[ACCOUNT_KINDS],
        results={"account_id": "The signed-in account's id.",
                 "kind": "Its kind: personal, organisation or supervisor.",
                 "login_name": "Its login name.",
                 "has_phone": "Whether it has a mobile number.",
                 "mobile": "Its mobile number, sealed (for a locked sensitive field's "
                           "value_from, shown masked), or null.",
                 "mobile_masked": "Its mobile number, masked (138****8000), or null."},
        refusals=[Refusal.of(Forbidden),
                  Refusal.of(AccountKindRefused)])(load_account)
    registry.action("check_current_password", params=[CURRENT_PASSWORD], results={},
                    refusals=[ACCOUNT_REQUIRED, PASSWORD_WRONG, PASSWORD_LOCKED],
                    )(check_current_password)
    registry.action("set_password", params=[PASSWORD, CONFIRM],
                    results={"changed": "True: the password was changed."},
                    refusals=[ACCOUNT_REQUIRED, *NEW_PASSWORD_REFUSALS, UNCHANGED],
                    )(set_password)
    registry.action("end_other_sessions", params=[],
                    results={"others_ended": "True: the account's other sessions ended."},
                    refusals=[ACCOUNT_REQUIRED])(end_other_sessions)
    registry.guard("account_has_phone", params=[])(account_has_phone)
