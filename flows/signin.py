"""Signing in: one generic answer for any wrong part, lockouts, sessions.

Shared by personal, legal-entity and back-office log-in. A failed attempt never tells
which part was wrong (captcha, account or password).

Failures count against the *account*, whatever was typed to name it: the identifier is
normalised first (``flows.identity.identifier``: +86, spaces, full-width digits, case),
then resolved, so an ID number, a mobile number and a login name of one person share one
count and one lock. An identifier that names no account of the kinds this sign-in
accepts is counted under its normalised form instead, by the same rules, so answers and
lockouts never tell who is registered.

An attempt is *reserved* before its password is checked: the count goes up first, and an
attempt past ``max_failures`` in the window is refused without checking. However many
requests race, at most ``max_failures`` passwords are checked against one account per
window. A right password gives its reservation back (the count is cleared). The failure
that reaches ``max_failures`` locks for ``lock``; where the policy's ``window`` is longer
than that, attempts stay refused until the window ends too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, NoReturn

import structlog

from engine import ActionInput, GuardInput, Param, Refusal, Registry
from flows.accounts import Account
from flows.identity import MOBILE_KIND, RESIDENT_ID_KIND, identifier_kind, normalise_identifier
from flows.passwords import CONFIRM, NEW_PASSWORD_REFUSALS, PASSWORD, UNCHANGED
from flows.pii import MOBILE, RESIDENT_ID
from flows.policies import LockoutPolicy
from flows.ports import Batch
from flows.sessions import generation_of
from flows.support import Services, refuse, replace_password, services

log = structlog.get_logger("flows.signin")

# The facts of the actions that sign someone in, one per kind of log-in.
AUTHENTICATED = ("authenticate_person", "authenticate_organisation", "authenticate_admin")

LOGIN_FAILED = ("login_failed", "账号、密码或验证码错误",
                "The account, password or captcha is wrong")
# The vault purpose whose keyed hash names an unknown identifier's counter: a plain
# hash of a phone number is no secret (there are only so many phone numbers).
_SUBJECT_PURPOSE = "login_subject"
# Where check_credentials leaves the account it signed in, for start_session, and the
# account's session generation as it read it before checking the password.
_SIGNED_IN_ACCOUNT = "signin.account"
_SIGNED_IN_GENERATION = "signin.generation"
# The failure count a right password clears, until the step's end or start_session,
# which clears it in the round trip that stores the session.
_FAILURES_TO_CLEAR = "signin.failures_to_clear"

# What the sign-in actions take: which fields hold what was typed.
IDENTIFIER = Param("identifier", "field", "The field that holds the ID number, mobile "
                   "number or login name typed.", default="identifier")
LOGIN_NAME = Param("login_name", "field", "The field that holds the login name typed.",
                   default="login_name")
SIGN_IN_PASSWORD = Param("password", "field", "The field that holds the password typed.",
                         default="password")
CAPTCHA = Param("captcha", "field", "The field that holds the captcha's answer.",
                default="captcha")
SIGN_IN_REFUSALS = (Refusal(*LOGIN_FAILED),
                    Refusal("login_locked", "登录失败次数过多，请稍后再试",
                            "Too many failed sign-ins; try again in a while"))
SIGNED_IN = {"account_id": "The account signed in.",
             "kind": "Its kind: personal, organisation, supervisor or admin.",
             "login_name": "Its login name.",
             "must_change": "Whether its password is a one-time one that must be changed "
                            "first."}


async def find_account(s: Services, normalised: str, *,
                       kinds: tuple[str, ...]) -> Account | None:
    """The account of one of ``kinds`` that a normalised identifier names, if any.

    ID and mobile numbers name personal accounts (a supervisor's too, by mobile);
    anything else is a login name, of any kind of account.
    """
    kind = identifier_kind(normalised)
    found: Account | None
    if kind == RESIDENT_ID_KIND:
        found = await s.accounts.by_id_index(s.vault.index(RESIDENT_ID, normalised))
    elif kind == MOBILE_KIND:
        found = await s.accounts.by_phone_index(s.vault.index(MOBILE, normalised))
    else:
        found = await s.accounts.by_login_name(normalised)
    return found if found is not None and found.kind in kinds else None


def _subject(s: Services, account: Account | None, normalised: str) -> str:
    """Whom the failures count against: the account, else the normalised identifier."""
    if account is not None:
        return f"account:{account.id}"
    return "unknown:" + s.vault.index(_SUBJECT_PURPOSE, normalised).hex()[:32]


def _refuse_locked(left: timedelta) -> NoReturn:
    minutes = max(1, int(left.total_seconds() // 60) + 1)
    refuse(None, "login_locked", f"登录失败次数过多，请{minutes}分钟后再试",
           f"Too many failed sign-ins; try again in {minutes} minute(s)")


async def locked_for(s: Services, subject: str) -> timedelta | None:
    """How long the subject's password checks stay locked; None if they are not."""
    return await s.ephemeral.ttl(f"login_lock:{subject}")


async def counted_check(s: Services, subject: str, policy: LockoutPolicy,
                        check: Callable[[], Awaitable[bool]], *,
                        step: ActionInput | None = None) -> bool | timedelta:
    """Count a password check against the subject's failures, then make it: True if it is
    right (the count is cleared), False if wrong, or the time left when the subject is
    over the limit (refused unchecked). The failure that reaches the limit locks.

    The attempt is reserved before checking: parallel guesses each take a number, and
    those past the limit are refused unchecked. ``step``: the action's input, to clear
    the count at the end of its step's actions (:func:`clear_failures_in` lets a later
    action of the step send it with its own commands) rather than at once; a step that
    fails before its end leaves this attempt counted, as a failure.
    """
    lock_key, fail_key = f"login_lock:{subject}", f"login_fail:{subject}"
    failures = await s.ephemeral.incr(fail_key, policy.window)
    if failures > policy.max_failures:
        return (await s.ephemeral.ttl(lock_key) or await s.ephemeral.ttl(fail_key)
                or policy.lock)
    if await check():
        if step is None:
            await s.ephemeral.delete(fail_key)
        else:
            _clear_at_end(s, step, fail_key)
        return True
    if failures == policy.max_failures:
        await s.ephemeral.put(lock_key, b"1", policy.lock)
        log.info("login_locked", subject=subject)
    return False


def _clear_at_end(s: Services, a: ActionInput, fail_key: str) -> None:
    a.scratch[_FAILURES_TO_CLEAR] = fail_key

    async def clear() -> None:
        key = a.scratch.pop(_FAILURES_TO_CLEAR, None)
        if key is not None:  # no later action of the step took it over
            await s.ephemeral.delete(key)

    a.at_end.append(clear)


def clear_failures_in(a: ActionInput, batch: Batch) -> None:
    """Queue in ``batch`` the clearing of the failure count that a right password left
    for the end of this step (see :func:`counted_check`), if there is one."""
    key = a.scratch.pop(_FAILURES_TO_CLEAR, None)
    if key is not None:
        batch.delete(key)


async def check_credentials(a: ActionInput, typed: str, *, kinds: tuple[str, ...]) -> Account:
    """Captcha, lockout, password: the account, or the one generic refusal.

    ``typed``: the identifier as the field gave it (any spelling); ``kinds``: the
    kinds of account this sign-in is for. The password and the captcha are in the fields
    the ``password`` and ``captcha`` parameters name.
    """
    s = services(a)
    policy = LockoutPolicy.from_mapping(a.policies.get("login_lockout"))
    normalised = normalise_identifier(typed)
    account = await find_account(s, normalised, kinds=kinds)
    subject = _subject(s, account, normalised)
    # One round trip for what the checks below read: the lock, the captcha (used up
    # whatever comes of this attempt, as a wrong answer uses it up) and the account's
    # session generation, for the session a right password starts.
    batch = s.ephemeral.batch()
    batch.ttl(f"login_lock:{subject}")
    s.captchas.use_up_in(batch, a.instance_id)
    if account is not None:
        s.sessions.read_generation_in(batch, account.id)
    left, stored, *generation = await batch.run()
    if left is not None:
        _refuse_locked(left)
    password = str(a.input.get(a.params["password"]) or "")
    if s.captchas.judge(a.instance_id, stored,
                        str(a.input.get(a.params["captcha"]) or "")) is not None:
        # Only failures past the captcha count: nobody locks an account for free. The
        # check costs what a password check costs, against no account.
        await s.hasher.verify_dummy(password)
        refuse(None, *LOGIN_FAILED)

    async def check() -> bool:
        if account is None:
            return await s.hasher.verify_dummy(password)  # the same cost as a real check
        return await s.hasher.verify(account.password_hash, password)

    # A flood is refused here, before a failure is counted for a check never made.
    s.hasher.check_capacity()
    outcome = await counted_check(s, subject, policy, check, step=a)
    if isinstance(outcome, timedelta):
        _refuse_locked(outcome)
    if outcome and account is not None:
        a.scratch[_SIGNED_IN_ACCOUNT] = account
        a.scratch[_SIGNED_IN_GENERATION] = generation_of(generation[0])
        return account
    return refuse(None, *LOGIN_FAILED)


async def authenticate_person(a: ActionInput) -> dict[str, Any]:
    """Action: sign a person in by ID number, mobile number or login name."""
    account = await check_credentials(a, str(a.input.get(a.params["identifier"]) or ""),
                                      kinds=("personal", "supervisor"))
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
    """The account this sign-in flow authenticated (still there, or the generic refusal).

    Authenticated in this very step (the session starts on entering the signed-in
    state): the account its password was just checked against, not read again."""
    account_id = _signed_in(a)["account_id"]
    checked: Account | None = a.scratch.get(_SIGNED_IN_ACCOUNT)
    if checked is not None and checked.id == account_id:
        return checked
    account = await services(a).accounts.by_id(account_id)
    if account is None:
        refuse(None, *LOGIN_FAILED)
    return account


async def change_initial_password(a: ActionInput) -> dict[str, Any]:
    """Action: replace a one-time password set by an administrator."""
    await replace_password(a, await _signed_in_account(a))
    return {"changed": True}


async def start_session(a: ActionInput) -> dict[str, Any]:
    """On entering the signed-in state: create the session, hand its token to the reply."""
    s = services(a)
    account = await _signed_in_account(a)
    agent = a.context.get("facts", {}).get("check_agent_code") or a.facts.get(
        "check_agent_code")
    agent_id = agent.get("agent_id") if isinstance(agent, dict) else None
    # The generation read before the password was checked, when that was in this step:
    # anything that ended the account's sessions since ends this one too.
    checked = a.scratch.get(_SIGNED_IN_ACCOUNT) is account
    token = await s.sessions.create(
        account_id=account.id, kind=account.kind, display_name=account.display_name,
        now=a.now, agent_id=agent_id,
        # Every sign-in checks a password; an agent's sign-in also a code sent by SMS.
        amr=("pwd", "sms") if agent_id else ("pwd",),
        generation=a.scratch.get(_SIGNED_IN_GENERATION) if checked else None,
        # The failure count the password just cleared goes in the same round trip.
        also=lambda batch: clear_failures_in(a, batch))
    a.reply("session", token)
    return {"signed_in": account.kind}


def register(registry: Registry) -> None:
    registry.action("authenticate_person", params=[IDENTIFIER, SIGN_IN_PASSWORD, CAPTCHA],
                    results=SIGNED_IN, refusals=SIGN_IN_REFUSALS)(authenticate_person)
    registry.action("change_initial_password", params=[PASSWORD, CONFIRM],
                    results={"changed": "True: the password was changed."},
                    refusals=[SIGN_IN_REFUSALS[0], *NEW_PASSWORD_REFUSALS, UNCHANGED],
                    )(change_initial_password)
    registry.action("start_session", params=[],
                    results={"signed_in": "The kind of account signed in."},
                    refusals=[SIGN_IN_REFUSALS[0]])(start_session)
    registry.guard("must_change_password", params=[])(must_change_password)
