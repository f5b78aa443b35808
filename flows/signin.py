"""Signing in: one generic answer for any wrong part, lockouts, sessions.

Shared by personal and legal-entity log-in. A failed attempt never tells which part was
wrong (captcha, account or password); failures are counted per identifier whether or
not an account has it, so neither the answer nor the lockout reveals who is registered.
"""

from __future__ import annotations

import hashlib
from typing import Any

import structlog

from engine import ActionInput, GuardInput, Invalid, Registry
from flows.accounts import Account
from flows.identity import mobile, resident_id
from flows.pii import MOBILE, RESIDENT_ID
from flows.policies import LockoutPolicy
from flows.support import check_new_password, refuse, services

log = structlog.get_logger("flows.signin")

# The facts of the actions that sign someone in, one per kind of log-in.
AUTHENTICATED = ("authenticate_person", "authenticate_organisation", "authenticate_admin")

LOGIN_FAILED = ("login_failed", "账号、密码或验证码错误",
                "The account, password or captcha is wrong")


def _subject(identifier: str) -> str:
    return hashlib.sha256(identifier.strip().lower().encode()).hexdigest()[:32]


async def find_person(a: ActionInput, identifier: str) -> Account | None:
    """A personal (or supervisor) account by ID number, mobile number or login name."""
    s = services(a)
    try:
        id_number = resident_id(identifier)
    except Invalid:
        pass
    else:
        return await s.accounts.by_id_index(s.vault.index(RESIDENT_ID, id_number))
    try:
        phone = mobile(identifier)
    except Invalid:
        pass
    else:
        return await s.accounts.by_phone_index(s.vault.index(MOBILE, phone))
    found = await s.accounts.by_login_name(identifier)
    return found if found is not None and found.kind in ("personal", "supervisor") else None


async def check_credentials(a: ActionInput, account: Account | None, *, identifier: str,
                            kinds: tuple[str, ...]) -> Account:
    """Captcha, lockout, password: the account, or the one generic refusal."""
    s = services(a)
    policy = LockoutPolicy.from_mapping(a.policies.get("login_lockout"))
    subject = _subject(identifier)
    lock_key = f"login_lock:{subject}"
    left = await s.ephemeral.ttl(lock_key)
    if left is not None:
        minutes = max(1, int(left.total_seconds() // 60) + 1)
        refuse(None, "login_locked", f"登录失败次数过多，请{minutes}分钟后再试",
               f"Too many failed sign-ins; try again in {minutes} minute(s)")
    captcha_error = await s.captchas.check(a.instance_id, str(a.input.get("captcha") or ""))
    if account is not None and account.kind not in kinds:
        account = None
    password = str(a.input.get("password") or "")
    if account is None:
        ok = await s.hasher.verify_dummy(password)  # the same cost as a real check
    else:
        ok = await s.hasher.verify(account.password_hash, password)
    if captcha_error is None and ok and account is not None:
        await s.ephemeral.delete(f"login_fail:{subject}")
        return account
    if captcha_error is None:
        # Only failures past the captcha count: nobody locks an account for free.
        failures = await s.ephemeral.incr(f"login_fail:{subject}", policy.window)
        if failures >= policy.max_failures:
            await s.ephemeral.put(lock_key, b"1", policy.lock)
            log.info("login_locked", subject=subject)
    return refuse(None, *LOGIN_FAILED)


async def authenticate_person(a: ActionInput) -> dict[str, Any]:
    """Action: sign a person in by ID number, mobile number or login name."""
    identifier = str(a.input.get("identifier") or "")
    account = await check_credentials(a, await find_person(a, identifier),
                                      identifier=identifier, kinds=("personal", "supervisor"))
    return {"account_id": account.id, "kind": account.kind,
            "login_name": account.login_name,
            "must_change": account.must_change_password}


def must_change_password(g: GuardInput) -> bool:
    """The administrator reset the password: it must be changed before going on."""
    for name in AUTHENTICATED:
        fact = g.fact(name)
        if isinstance(fact, dict):
            return bool(fact.get("must_change"))
    return False


def _signed_in(a: ActionInput) -> dict[str, Any]:
    facts = a.context.get("facts", {})
    fact = next((found for name in AUTHENTICATED
                 if (found := facts.get(name) or a.facts.get(name))), None)
    if not isinstance(fact, dict):
        raise RuntimeError("no authenticated account in this flow")
    return fact


async def _signed_in_account(a: ActionInput) -> Account:
    """The account this sign-in flow authenticated (still there, or the generic refusal)."""
    account = await services(a).accounts.by_id(_signed_in(a)["account_id"])
    if account is None:
        refuse(None, *LOGIN_FAILED)
    return account


async def change_initial_password(a: ActionInput) -> dict[str, Any]:
    """Action: replace a one-time password set by an administrator."""
    s = services(a)
    account = await _signed_in_account(a)
    password = check_new_password(a, login_name=account.login_name)
    if await s.hasher.verify(account.password_hash, password):
        refuse("password", "password_unchanged", "新密码不能与原密码相同",
               "The new password must differ from the old one")
    a.write(s.accounts.set_password(account.id, await s.hasher.hash(password),
                                    must_change=False, now=a.now))
    return {"changed": True}


async def start_session(a: ActionInput) -> dict[str, Any]:
    """On entering the signed-in state: create the session, hand its token to the reply."""
    s = services(a)
    account = await _signed_in_account(a)
    agent = a.context.get("facts", {}).get("check_agent_code") or a.facts.get(
        "check_agent_code")
    token = await s.sessions.create(
        account_id=account.id, kind=account.kind, display_name=account.display_name,
        now=a.now, agent_id=agent.get("agent_id") if isinstance(agent, dict) else None)
    a.reply("session", token)
    return {"signed_in": account.kind}



def register(registry: Registry) -> None:
    registry.action("authenticate_person")(authenticate_person)
    registry.action("change_initial_password")(change_initial_password)
    registry.action("start_session")(start_session)
    registry.guard("must_change_password")(must_change_password)
