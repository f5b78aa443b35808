"""The password policy, and Argon2id hashing off the event loop.

Passwords are compared, counted and hashed in their NFKC form (NIST SP 800-63B 5.1.1.2),
so a password typed in full-width mode by a Chinese input method (``Ｐａｓｓ１``) is the
same password as its half-width form, and composed and decomposed accents are equal.
Before anything else, a password over ``MAX_PASSWORD_BYTES`` of UTF-8 is refused, so
neither the policy nor Argon2 ever work on a huge input.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.resources
import os
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

import attrs
from argon2 import PasswordHasher, Type
from argon2.exceptions import VerifyMismatchError

from engine import EngineError, Invalid, Param, Refusal, Registry

__all__ = [
    "CONFIRM",
    "MAX_PASSWORD_BYTES",
    "MISMATCH",
    "NEW_PASSWORD_REFUSALS",
    "PASSWORD",
    "POLICY_REFUSALS",
    "UNCHANGED",
    "Hasher",
    "HashingBusy",
    "HashingSpent",
    "PasswordPolicy",
    "check",
    "check_size",
    "cores",
    "is_blocklisted",
    "normalise",
    "password_size",
    "register",
]

MAX_PASSWORD_BYTES = 1024
# The longest max_length a policy may set: 256 characters of at most 4 UTF-8 bytes each
# still fit in MAX_PASSWORD_BYTES, so the size guard never refuses a compliant password.
MAX_POLICY_LENGTH = MAX_PASSWORD_BYTES // 4

_BLOCKLIST_RESOURCE = ("data", "common-passwords.txt")

T = TypeVar("T")


def _positive_int(_: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"password policy: {attribute.name} must be a whole number >= 1, "
                         f"not {value!r}")


def _boolean(_: Any, attribute: attrs.Attribute[bool], value: bool) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"password policy: {attribute.name} must be true or false, "
                         f"not {value!r}")


@attrs.frozen
class PasswordPolicy:
    """What a new password must be (SPEC: Password). Defaults are the SPEC's."""

    min_length: int = attrs.field(default=8, validator=_positive_int)
    max_length: int = attrs.field(default=64, validator=_positive_int)
    # Of the four classes: lower-case letter, upper-case letter, digit, symbol.
    min_classes: int = attrs.field(default=3, validator=_positive_int)
    blocklist: bool = attrs.field(default=True, validator=_boolean)
    # Refuse a password equal to the login name, ignoring case.
    forbid_login_name: bool = attrs.field(default=True, validator=_boolean)

    def __attrs_post_init__(self) -> None:
        if self.min_length > self.max_length:
            raise ValueError(f"password policy: min_length ({self.min_length}) is more than "
                             f"max_length ({self.max_length})")
        if self.max_length > MAX_POLICY_LENGTH:
            raise ValueError(f"password policy: max_length may be at most {MAX_POLICY_LENGTH}, "
                             f"not {self.max_length}")
        if self.min_classes > 4:
            raise ValueError(f"password policy: min_classes is at most 4 (lower, upper, "
                             f"digit, symbol), not {self.min_classes}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> PasswordPolicy:
        """Build a policy from its ``flows.yaml`` mapping; absent keys keep the defaults."""
        if mapping is None:
            return cls()
        if not isinstance(mapping, Mapping):
            raise ValueError(f"password policy: a mapping is expected, not "
                             f"{type(mapping).__name__}")
        known = [a.name for a in attrs.fields(cls)]
        unknown = sorted(str(k) for k in mapping if k not in known)
        if unknown:
            raise ValueError(f"password policy: unknown key(s) {', '.join(unknown)}; "
                             f"known keys are {', '.join(known)}")
        return cls(**dict(mapping))


def normalise(password: str) -> str:
    """Return the form a password is checked and hashed in: NFKC."""
    return unicodedata.normalize("NFKC", password)


def check_size(password: str) -> None:
    """Refuse a password over MAX_PASSWORD_BYTES of UTF-8 (``password_too_large``)."""
    # surrogatepass: measure a lone surrogate instead of failing on it; it is refused
    # later by check() and can never be hashed.
    if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        raise Invalid("password_too_large", "密码过长",
                      f"The password is longer than {MAX_PASSWORD_BYTES} bytes")


def _hashable(password: str) -> str | None:
    """Return the NFKC form to hash, or None when the password is over the size limit or
    is not valid text (a lone surrogate has no UTF-8 form, so it can never be hashed)."""
    try:
        raw = password.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return normalise(password) if len(raw) <= MAX_PASSWORD_BYTES else None


def _classes(password: str) -> int:
    lower = upper = digit = symbol = False
    for ch in password:
        cat = unicodedata.category(ch)
        if cat == "Ll":
            lower = True
        elif cat == "Lu":
            upper = True
        elif cat == "Nd":
            digit = True
        elif cat[0] in "PSZ":
            # Punctuation, symbols and spaces. Letters with no case (汉字), other
            # numbers, marks and invisible format characters belong to no class: they
            # neither help nor hurt.
            symbol = True
    return lower + upper + digit + symbol


@functools.cache
def _blocklist() -> frozenset[str]:
    resource = importlib.resources.files("flows").joinpath(*_BLOCKLIST_RESOURCE)
    lines = resource.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().casefold() for line in lines
                     if line.strip() and not line.lstrip().startswith("#"))


def is_blocklisted(password: str) -> bool:
    """Tell whether a password is a common one: the list ignoring case, also without a
    trailing run of '!' and '.' (``Password1!`` is ``password1``)."""
    folded = normalise(password).casefold()
    listed = _blocklist()
    return folded in listed or folded.rstrip("!.") in listed


def _invalid_characters() -> Invalid:
    return Invalid("password_invalid_characters", "密码不能包含控制字符或无效字符",
                   "The password cannot contain control or invalid characters")


def check(policy: PasswordPolicy, password: str, *, login_name: str | None = None) -> None:
    """Raise ``engine.Invalid`` when ``password`` breaks ``policy``; return None when it is fine.

    Lengths are counted in characters (code points) of the NFKC form.
    """
    check_size(password)
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in password):
        raise _invalid_characters()
    password = normalise(password)
    if len(password) < policy.min_length:
        raise Invalid("password_too_short", f"密码至少需要 {policy.min_length} 个字符",
                      f"The password needs at least {policy.min_length} characters")
    if len(password) > policy.max_length:
        raise Invalid("password_too_long", f"密码不能超过 {policy.max_length} 个字符",
                      f"The password can have at most {policy.max_length} characters")
    if _classes(password) < policy.min_classes:
        raise Invalid("password_too_few_classes",
                      f"密码须包含小写字母、大写字母、数字、符号中的至少 {policy.min_classes} 种",
                      f"The password needs at least {policy.min_classes} of: lower-case "
                      "letters, upper-case letters, digits, symbols")
    if (policy.forbid_login_name and login_name
            and password.casefold() == normalise(login_name).casefold()):
        raise Invalid("password_equals_login_name", "密码不能与登录名相同",
                      "The password cannot be the same as the login name")
    if policy.blocklist and is_blocklisted(password):
        raise Invalid("password_too_common", "密码过于常见，容易被猜到，请换一个",
                      "This password is too common and easy to guess; choose another")


# What an action that takes a new password declares (flows.support.check_new_password
# reads them): the two fields, and the refusals, each under its field. The words of a
# refusal are the policy's own when it is given (``password_too_short`` says how short).
PASSWORD = Param("password", "field", "The field that holds the new password.",
                 default="password")
CONFIRM = Param("confirm", "field", "The field that holds the new password typed again.",
                default="password_confirm")
POLICY_REFUSALS = tuple(Refusal(error_id, zh, en, param="password") for error_id, zh, en in (
    ("password_too_large", "密码过长", "The password is too large to be checked"),
    ("password_invalid_characters", "密码不能包含控制字符或无效字符",
     "The password cannot contain control or invalid characters"),
    ("password_too_short", "密码太短", "The password is shorter than the policy allows"),
    ("password_too_long", "密码太长", "The password is longer than the policy allows"),
    ("password_too_few_classes", "密码须混合使用大写字母、小写字母、数字、符号",
     "The password needs more kinds of characters: lower case, upper case, digits, "
     "symbols"),
    ("password_equals_login_name", "密码不能与登录名相同",
     "The password cannot be the same as the login name"),
    ("password_too_common", "密码过于常见，容易被猜到，请换一个",
     "This password is too common and easy to guess; choose another"),
))
MISMATCH = Refusal("password_mismatch", "两次输入的密码不一致", "The two passwords differ",
                   param="confirm")
UNCHANGED = Refusal("password_unchanged", "新密码不能与原密码相同",
                    "The new password must differ from the old one", param="password")
NEW_PASSWORD_REFUSALS = (*POLICY_REFUSALS, MISMATCH)


def password_size(value: Any) -> Any:
    """Validator: refuse a password field over MAX_PASSWORD_BYTES; the value is unchanged."""
    if isinstance(value, str):
        check_size(value)
    return value


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _threads(n: int) -> ThreadPoolExecutor:
    """The process's hashing threads, ``n`` of them: shared by every Hasher (an app's,
    a command's), so that the cores are counted once however many there are."""
    if n not in _POOLS:
        _POOLS[n] = ThreadPoolExecutor(n, thread_name_prefix=f"argon2x{n}")
    return _POOLS[n]


@attrs.frozen
class HashingSpent:
    """What a Hasher has spent so far: ``hashes`` made (verifies, hashes and dummy
    verifies), the CPU seconds its threads spent in Argon2 (``cpu_seconds``: the hash as
    this server pays it under its load, where another core hashing at once shares the
    caches and the memory bandwidth), and ``refused``: hashes asked for and refused
    as ``HashingBusy``."""

    hashes: int
    cpu_seconds: float
    refused: int


class HashingBusy(EngineError, RuntimeError):
    """Every hashing slot is taken and the queue is full: a flood, answered at once."""

    status: ClassVar[int] = 503
    error_id: ClassVar[str] = "server_busy"
    zh: ClassVar[str] = "服务器繁忙，请稍后再试"
    en: ClassVar[str] = "The server is busy; try again in a moment"

    # A queue of a few hundred milliseconds drains in about that.
    RETRY_AFTER: ClassVar[int] = 1

    def __init__(self) -> None:
        super().__init__(retry_after=self.RETRY_AFTER)


class Hasher:
    """Argon2id hashing that runs in threads of its own, never on the event loop.

    The defaults are OWASP's first Argon2id configuration: 19 MiB, 2 passes, 1 lane
    (about 40 ms on one core of a small server). Tests pass cheap parameters.

    At most ``concurrency`` hashes run at once (default: this process's share of the
    cores, one hash per core), and at most ``max_waiting`` more wait for a thread
    (default: 8 per thread, a few hundred milliseconds of work). Past that a hash is
    refused at once with ``HashingBusy`` (503, Retry-After): a login flood gets fast
    answers instead of a queue that grows until every request times out, and the
    hashes admitted still finish in bounded time.
    """

    def __init__(self, *, time_cost: int = 2, memory_cost: int = 19 * 1024,
                 parallelism: int = 1, executor: Executor | None = None,
                 concurrency: int | None = None, max_waiting: int | None = None) -> None:
        self._ph = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost,
                                  parallelism=parallelism, hash_len=32, salt_len=16,
                                  type=Type.ID)
        self.concurrency = max(1, concurrency or cores())
        self.max_waiting = 8 * self.concurrency if max_waiting is None else max_waiting
        self._executor = executor  # else the process's threads for this many, at first use
        self._admitted = 0  # running or waiting; only the event loop's thread counts
        self._dummy_hash: str | None = None
        # Written by the hashing threads as each hash ends (a hash whose caller stopped
        # waiting still counts: it was spent), read by whoever reports them.
        self._spent_lock = threading.Lock()
        self._hashes = 0
        self._cpu_seconds = 0.0
        self._refused = 0  # only the event loop's thread counts

    def __repr__(self) -> str:
        p = self._ph
        return (f"<Hasher argon2id m={p.memory_cost} KiB t={p.time_cost} "
                f"p={p.parallelism}>")

    @property
    def admitted(self) -> int:
        """Hashes running or waiting for a thread now."""
        return self._admitted

    def spent(self) -> HashingSpent:
        """What the hashing threads have spent since this Hasher was made."""
        with self._spent_lock:
            return HashingSpent(self._hashes, self._cpu_seconds, self._refused)

    def check_capacity(self) -> None:
        """Raise ``HashingBusy`` if a hash asked for now would be refused.

        Call it before spending anything on a hash (a failure counted, a code used).
        """
        if self._admitted >= self.concurrency + self.max_waiting:
            self._refused += 1
            raise HashingBusy()

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        self.check_capacity()
        if self._executor is None:
            self._executor = _threads(self.concurrency)
        self._admitted += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor,
                                              functools.partial(self._timed, fn, *args))
        finally:
            self._admitted -= 1

    def _timed(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one hash in this (hashing) thread, counting its thread's CPU time."""
        started = time.thread_time()
        try:
            return fn(*args)
        finally:
            spent = time.thread_time() - started
            with self._spent_lock:
                self._hashes += 1
                self._cpu_seconds += spent

    async def hash(self, password: str) -> str:
        """Return the Argon2id hash (``$argon2id$...``) of a password.

        Raises ``engine.Invalid`` (``password_too_large``) without hashing when the
        password is over MAX_PASSWORD_BYTES.
        """
        check_size(password)
        text = _hashable(password)
        if text is None:
            raise _invalid_characters()
        return await self._off_loop(self._ph.hash, text)

    async def verify(self, hash: str, password: str) -> bool:
        """Tell whether ``password`` matches ``hash``.

        A password over MAX_PASSWORD_BYTES, or with a lone surrogate, is False without
        hashing: ``hash()`` refuses such passwords, so none can match. A malformed stored
        hash raises ``argon2.exceptions.InvalidHashError`` (a ValueError): that is damaged
        data, not a wrong password.
        """
        text = _hashable(password)
        if text is None:
            return False
        return await self._off_loop(self._verify, hash, text)

    def _verify(self, hash: str, password: str) -> bool:
        try:
            return self._ph.verify(hash, password)
        except VerifyMismatchError:
            return False

    async def verify_dummy(self, password: str) -> bool:
        """Spend what ``verify`` spends, against no account, and return False.

        Call it when the login name is unknown, so the answer's timing does not tell
        whether an account exists. The first call hashes (as costly as a verify) to
        make the dummy hash; later calls verify against it.
        """
        text = _hashable(password)
        if text is None:
            return False
        if self._dummy_hash is None:
            self._dummy_hash = await self._off_loop(self._ph.hash, secrets.token_urlsafe(16))
        else:
            await self._off_loop(self._verify, self._dummy_hash, text)
        return False

    def needs_rehash(self, hash: str) -> bool:
        """Tell whether a stored hash was made with other parameters: rehash it at login."""
        return self._ph.check_needs_rehash(hash)


def register(registry: Registry) -> None:
    registry.validator("password_size")(password_size)
