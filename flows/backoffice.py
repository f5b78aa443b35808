"""The back office (SPEC 8, 9): administrators sign in, reset passwords, verify
organisations and create supervisor accounts.

Every administrator action writes its ``audit_log`` row (who, when, what, why) in the
same transaction as the change itself: there is never a change without its row, nor a
row without its change. A one-time password is handed to the administrator's reply
once (``a.reply``), hashed with Argon2id for the account, and never recorded: not in
history, not in the audit log, not in a log line.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import structlog

from engine import ActionInput, FieldError, Forbidden, Refusal, Registry, ValidationFailed
from flows.identity import mask_mobile
from flows.passwords import check
from flows.pii import MOBILE
from flows.registration import (
    DUPLICATES,
    LOGIN_NAME_TAKEN,
    PHONE_REGISTERED,
    duplicates,
    refusing_duplicates,
    under,
)
from flows.signin import (
    CAPTCHA,
    LOGIN_NAME,
    SIGN_IN_PASSWORD,
    SIGN_IN_REFUSALS,
    SIGNED_IN,
    check_credentials,
)
from flows.support import password_policy, refuse, services
from flows.verification import VERIFIED

log = structlog.get_logger("flows.backoffice")

ADMIN_PREFIX = "admin:"
# No look-alikes (0/O, 1/l/I): the administrator reads it out or writes it down.
_LOWER = "abcdefghijkmnpqrstuvwxyz"
_UPPER = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_DIGITS = "23456789"
_SYMBOLS = "-_.!@#%+="
ONE_TIME_LENGTH = 14

# What the back office's actions may refuse.
ADMIN_ONLY = Refusal.of(Forbidden)
REASON_REQUIRED = Refusal("reason_required", "请填写原因", "Give the reason", field="reason")
ACCOUNT_NOT_FOUND = Refusal("account_not_found", "没有使用该登录名的账号",
                            "No account has this login name", field="login_name")
ORGANISATION_NOT_FOUND = Refusal("organisation_not_found",
                                 "没有使用该统一社会信用代码注册的企业",
                                 "No organisation is registered with this credit code",
                                 field="credit_code")
ALREADY_VERIFIED = Refusal("organisation_already_verified", "该企业已完成实名认证",
                           "This organisation is already verified", field="credit_code")
SUPERVISOR_DUPLICATES = duplicates("accounts_login_key_key", "accounts_personal_phone")
NEW_SUPERVISOR_REFUSALS = (under(LOGIN_NAME_TAKEN, "login_name"),
                           under(PHONE_REGISTERED, "mobile"))


def one_time_password(a: ActionInput, login_name: str | None = None) -> str:
    """A random password that meets the policy: every character class, 14 characters."""
    policy = password_policy(a)
    alphabet = _LOWER + _UPPER + _DIGITS + _SYMBOLS
    length = max(ONE_TIME_LENGTH, policy.min_length)
    while True:
        chars = [secrets.choice(cls) for cls in (_LOWER, _UPPER, _DIGITS, _SYMBOLS)]
        chars += [secrets.choice(alphabet) for _ in range(length - len(chars))]
        # A uniform shuffle, so the classes are not always in the first four places.
        for i in range(len(chars) - 1, 0, -1):
            j = secrets.randbelow(i + 1)
            chars[i], chars[j] = chars[j], chars[i]
        password = "".join(chars)
        try:
            check(policy, password, login_name=login_name)
        except ValueError:
            continue
        return password


def _admin(a: ActionInput) -> str:
    """The acting administrator's actor name; the engine already enforces access."""
    if not a.actor.startswith(ADMIN_PREFIX):
        raise Forbidden("only an administrator may do this")
    return a.actor


def _reason(a: ActionInput) -> str:
    reason = str(a.value("reason") or "").strip()
    if not reason:
        refuse("reason", "reason_required", "请填写原因", "Give the reason")
    return reason


# -- sign-in -------------------------------------------------------------------------------

async def authenticate_admin(a: ActionInput) -> dict[str, Any]:
    """Action: an administrator's login name and password, with captcha and lockout."""
    account = await check_credentials(a, str(a.input.get(a.params["login_name"]) or ""),
                                      kinds=("admin",))
    return {"account_id": account.id, "kind": account.kind,
            "login_name": account.login_name, "must_change": account.must_change_password}


# -- password reset -------------------------------------------------------------------

async def find_reset_target(a: ActionInput) -> dict[str, Any]:
    """Action: the account whose password is to be reset."""
    _admin(a)
    _reason(a)
    account = await services(a).accounts.by_login_name(str(a.input.get("login_name") or ""))
    if account is None:
        refuse("login_name", "account_not_found", "没有使用该登录名的账号",
               "No account has this login name")
    return {"account_id": account.id, "login_name": account.login_name, "kind": account.kind}


async def reset_account_password(a: ActionInput) -> dict[str, Any]:
    """On entering done: a one-time password, must be changed, audited; shown once."""
    s = services(a)
    actor = _admin(a)
    target = a.fact("find_reset_target", {})
    account = await s.accounts.by_id(str(target.get("account_id")))
    if account is None:
        refuse("login_name", "account_not_found", "没有使用该登录名的账号",
               "No account has this login name")
    password = one_time_password(a, account.login_name)
    a.write(s.accounts.set_password(account.id, await s.hasher.hash(password),
                                    must_change=True, now=a.now))
    a.write(s.accounts.audit(
        actor=actor, action="reset_password", target=f"account:{account.id}",
        reason=_reason(a), now=a.now,
        details={"login_name": account.login_name, "kind": account.kind,
                 "must_change_password": True, "instance_id": a.instance_id}))
    # Whoever was signed in with the old password is signed out everywhere.
    await s.sessions.end_all(account.id)
    a.reply("one_time_password", password)
    log.info("admin_password_reset", actor=actor, account_id=account.id)
    return {"account_id": account.id, "login_name": account.login_name,
            "kind": account.kind, "must_change_password": True}


# -- verify an organisation -----------------------------------------------------------

async def find_organisation_to_verify(a: ActionInput) -> dict[str, Any]:
    """Action: a registered organisation, not verified yet."""
    _admin(a)
    _reason(a)
    code = str(a.input.get("credit_code") or "")
    organisation = await services(a).accounts.organisation_by_credit_code(code)
    if organisation is None:
        refuse("credit_code", "organisation_not_found", "没有使用该统一社会信用代码注册的企业",
               "No organisation is registered with this credit code")
    if organisation.verified:
        refuse("credit_code", "organisation_already_verified", "该企业已完成实名认证",
               "This organisation is already verified")
    return {"organisation_id": organisation.account_id, "name": organisation.name,
            "credit_code": organisation.credit_code}


async def verify_organisation_by_admin(a: ActionInput) -> dict[str, Any]:
    """On entering done: verified by this administrator, with the reason; audited."""
    s = services(a)
    actor = _admin(a)
    target = a.fact("find_organisation_to_verify", {})
    organisation_id = str(target.get("organisation_id"))
    reason = _reason(a)
    a.write(s.accounts.mark_verified(organisation_id, by=actor, note=reason, now=a.now))
    a.write(s.accounts.audit(
        actor=actor, action="verify_organisation", target=f"organisation:{organisation_id}",
        reason=reason, now=a.now,
        details={"name": target.get("name"), "credit_code": target.get("credit_code"),
                 "instance_id": a.instance_id}))
    log.info("admin_organisation_verified", actor=actor, organisation_id=organisation_id)
    return {"organisation_id": organisation_id, "status": dict(VERIFIED)}


# -- supervisor accounts --------------------------------------------------------------

async def check_new_supervisor(a: ActionInput) -> dict[str, Any]:
    """Action: the login name is free, and the phone (if any) is nobody's yet."""
    _admin(a)
    _reason(a)
    s = services(a)
    login_name = str(a.input.get("login_name") or "")
    errors: list[FieldError] = []
    if await s.accounts.by_login_name(login_name) is not None:
        errors.append(DUPLICATES["accounts_login_key_key"])
    phone = a.input.get("mobile")  # optional; checked and normalised by the form
    if phone and await s.accounts.by_phone_index(s.vault.index(MOBILE, str(phone))):
        errors.append(DUPLICATES["accounts_personal_phone"])
    if errors:
        raise ValidationFailed(errors)
    return {"login_name": login_name}


async def create_supervisor_account(a: ActionInput) -> dict[str, Any]:
    """On entering done: the account, with a one-time password shown once; audited."""
    s = services(a)
    actor = _admin(a)
    login_name = str(a.value("login_name"))
    phone = str(a.value("mobile") or "") or None  # optional; checked by the form
    account_id = str(uuid.uuid4())
    password = one_time_password(a, login_name)
    a.write(refusing_duplicates(s.accounts.create_person(
        account_id=account_id, kind="supervisor", login_name=login_name,
        display_name=str(a.value("name")), password_hash=await s.hasher.hash(password),
        id_number_sealed=None, id_number_index=None,
        phone_sealed=s.vault.seal(MOBILE, phone) if phone else None,
        phone_index=s.vault.index(MOBILE, phone) if phone else None,
        must_change_password=True, now=a.now), SUPERVISOR_DUPLICATES))
    a.write(s.accounts.audit(
        actor=actor, action="create_supervisor", target=f"account:{account_id}",
        reason=_reason(a), now=a.now,
        details={"login_name": login_name, "mobile": mask_mobile(phone) if phone else None,
                 "instance_id": a.instance_id}))
    a.reply("one_time_password", password)
    log.info("admin_supervisor_created", actor=actor, account_id=account_id)
    return {"account_id": account_id, "login_name": login_name,
            "mobile": mask_mobile(phone) if phone else None}


def register(registry: Registry) -> None:
    """Register this module's actions and guards."""
    registry.action("authenticate_admin", params=[LOGIN_NAME, SIGN_IN_PASSWORD, CAPTCHA],
                    results=SIGNED_IN, refusals=SIGN_IN_REFUSALS)(authenticate_admin)
    target = {"account_id": "The account's id.", "login_name": "Its login name.",
              "kind": "Its kind."}
    registry.action("find_reset_target", params=[], results=target,
                    refusals=[ADMIN_ONLY, REASON_REQUIRED, ACCOUNT_NOT_FOUND],
                    )(find_reset_target)
    registry.action("reset_account_password", params=[],
                    results={**target, "must_change_password": "True: the one-time password "
                                                               "must be changed."},
                    refusals=[ADMIN_ONLY, REASON_REQUIRED, ACCOUNT_NOT_FOUND],
                    )(reset_account_password)
    registry.action("find_organisation_to_verify", params=[],
                    results={"organisation_id": "The organisation's account id.",
                             "name": "Its name.", "credit_code": "Its credit code."},
                    refusals=[ADMIN_ONLY, REASON_REQUIRED, ORGANISATION_NOT_FOUND,
                              ALREADY_VERIFIED])(find_organisation_to_verify)
    registry.action("verify_organisation_by_admin", params=[],
                    results={"organisation_id": "The organisation verified.",
                             "status": "{zh: 已认证, en: Verified}."},
                    refusals=[ADMIN_ONLY, REASON_REQUIRED])(verify_organisation_by_admin)
    registry.action("check_new_supervisor", params=[],
                    results={"login_name": "The login name, free when the step was taken."},
                    refusals=[ADMIN_ONLY, REASON_REQUIRED, *NEW_SUPERVISOR_REFUSALS],
                    )(check_new_supervisor)
    registry.action("create_supervisor_account", params=[],
                    results={"account_id": "The new account's id.",
                             "login_name": "Its login name.",
                             "mobile": "Its mobile number, masked, or null."},
                    refusals=[ADMIN_ONLY, REASON_REQUIRED, *NEW_SUPERVISOR_REFUSALS],
                    )(create_supervisor_account)
