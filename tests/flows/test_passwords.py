"""The password policy (SPEC: Password) and Argon2id hashing off the event loop."""

from __future__ import annotations

import asyncio
import importlib.resources
import string
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError
from hypothesis import assume, given
from hypothesis import strategies as st

from engine import Invalid, Registry
from flows import passwords
from flows.passwords import (
    MAX_PASSWORD_BYTES,
    Hasher,
    HashingBusy,
    PasswordPolicy,
    check,
    cores,
    is_blocklisted,
)

POLICY = PasswordPolicy()
GOOD = "Tiger-Lake-42"


def cheap_hasher() -> Hasher:
    # The smallest parameters argon2 allows: the tests check behaviour, not strength.
    return Hasher(time_cost=1, memory_cost=8, parallelism=1)


def refusal(password: str, policy: PasswordPolicy = POLICY, **kw: Any) -> Invalid | None:
    try:
        check(policy, password, **kw)
    except Invalid as exc:
        return exc
    return None


def error_id(password: str, policy: PasswordPolicy = POLICY, **kw: Any) -> str | None:
    """The refusal's error id, having checked it speaks both languages; None if accepted."""
    exc = refusal(password, policy, **kw)
    if exc is None:
        return None
    assert exc.zh
    assert exc.en
    return exc.error_id


class Spy:
    """Wraps PasswordHasher's hash and verify: records the thread each call ran in."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, int]] = []
        for name in ("hash", "verify"):
            original = getattr(PasswordHasher, name)
            monkeypatch.setattr(PasswordHasher, name, self._wrap(name, original))

    def _wrap(self, name: str, original: Any) -> Any:
        def spy(ph: PasswordHasher, *args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, threading.get_ident()))
            return original(ph, *args, **kwargs)

        return spy

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    return Spy(monkeypatch)


# -- the policy's rules ----------------------------------------------------------------

def test_defaults_are_the_specs() -> None:
    spec = PasswordPolicy(min_length=8, max_length=64, min_classes=3, blocklist=True,
                          forbid_login_name=True)
    assert spec == POLICY


def test_a_good_password_passes() -> None:
    assert error_id(GOOD, login_name="tiger") is None


@pytest.mark.parametrize(("password", "expected"), [
    ("Ab1!xyz", "password_too_short"),
    ("Ab1!xyzw", None),
    ("abcdefgh1", "password_too_few_classes"),
    ("ABCDEFGH!", "password_too_few_classes"),
    ("汉字汉字汉字汉字1a", "password_too_few_classes"),  # letters without case: no class
    ("abcdefgH1", None),
    ("abcdefgh1!", None),
    ("ABCDEFGH1 ", None),  # a space is a symbol
    ("abcdefgh1\u200b", "password_too_few_classes"),  # an invisible character is not
    ("abc\x00defG1", "password_invalid_characters"),
    ("abc\ndefG1", "password_invalid_characters"),
    ("abc\ud800defG1", "password_invalid_characters"),
])
def test_policy_errors(password: str, expected: str | None) -> None:
    assert error_id(password) == expected


def test_64_characters_pass_and_65_do_not() -> None:
    p64 = ("Ab1!" * 16)
    assert len(p64) == 64
    assert error_id(p64) is None
    assert error_id(p64 + "x") == "password_too_long"


def test_length_counts_characters_not_bytes() -> None:
    # 64 characters, 3 bytes each in UTF-8: long in bytes, fine in characters.
    p = "Ab1" + "密" * 61
    assert len(p) == 64
    assert len(p.encode()) > 64
    assert error_id(p) is None
    assert error_id(p + "码") == "password_too_long"


@pytest.mark.parametrize("password", [
    "P@ssw0rd", "P@SSW0RD", "p@SSw0rd", "Woaini1314", "wOAINI1314", "Aa123456",
    "1qaz@WSX", "Qwer1234", "Admin@123", "Password1!", "Password1.", "Password123!!",
    "Ｐ＠ｓｓｗ０ｒｄ",  # full width, as typed in a Chinese input method's full-width mode
])
def test_common_passwords_are_refused_whatever_their_case(password: str) -> None:
    assert error_id(password) == "password_too_common"


def test_blocklist_can_be_turned_off() -> None:
    assert error_id("P@ssw0rd", PasswordPolicy(blocklist=False)) is None


def test_blocklist_is_exact_not_a_substring_match() -> None:
    assert not is_blocklisted("P@ssw0rd-Tiger-Lake")
    assert is_blocklisted("PASSWORD")


@pytest.mark.parametrize("login_name", ["Zhang.Wei88", "zhang.wei88", "ZHANG.WEI88"])
def test_password_equal_to_login_name_is_refused_ignoring_case(login_name: str) -> None:
    assert error_id("zhang.Wei88", login_name=login_name) == "password_equals_login_name"


def test_password_containing_the_login_name_is_allowed() -> None:
    # SPEC says "not equal to": containing it is not refused.
    assert error_id("zhang.Wei88-tiger", login_name="zhang.wei88") is None


def test_login_name_rule_can_be_turned_off() -> None:
    policy = PasswordPolicy(forbid_login_name=False)
    assert error_id("zhang.Wei88", policy, login_name="zhang.wei88") is None


def test_messages_carry_the_configured_numbers() -> None:
    policy = PasswordPolicy(min_length=10, max_length=20, min_classes=4)
    with pytest.raises(Invalid) as short:
        check(policy, "Ab1!")
    assert "10" in short.value.zh
    assert "10" in short.value.en
    with pytest.raises(Invalid) as simple:
        check(policy, "Abcdefgh1234")
    assert simple.value.error_id == "password_too_few_classes"
    assert "4" in simple.value.zh
    assert "4" in simple.value.en


def test_over_one_kib_is_refused_as_too_large_before_any_other_rule() -> None:
    assert error_id("a" * MAX_PASSWORD_BYTES) == "password_too_long"
    assert error_id("a" * (MAX_PASSWORD_BYTES + 1)) == "password_too_large"
    # Measured in UTF-8 bytes: 342 three-byte characters are 1026 bytes.
    assert error_id("密" * 342) == "password_too_large"
    assert error_id("\x00" * 2000) == "password_too_large"


@given(st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=300))
def test_check_answers_every_text_with_none_or_invalid(password: str) -> None:
    exc = refusal(password, login_name="someone")  # anything but Invalid propagates
    assert exc is None or exc.error_id.startswith("password_")


@given(
    st.lists(st.sampled_from(string.ascii_letters + string.digits + "!@#-_ "),
             min_size=5, max_size=61).map("".join),
    st.permutations(["a", "B", "7"]).map("".join),
)
def test_any_long_enough_mixed_password_off_the_blocklist_passes(body: str,
                                                                  classes: str) -> None:
    password = classes + body
    assume(not is_blocklisted(password))
    assert error_id(password) is None


# -- the policy from flows.yaml --------------------------------------------------------

def test_policy_from_mapping_keeps_defaults_for_absent_keys() -> None:
    assert PasswordPolicy.from_mapping(None) == POLICY
    assert PasswordPolicy.from_mapping({}) == POLICY
    assert PasswordPolicy.from_mapping({"min_length": 10}) == PasswordPolicy(min_length=10)


def test_unknown_policy_key_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown key.*min_len.*known keys are min_length"):
        PasswordPolicy.from_mapping({"min_len": 10})


@pytest.mark.parametrize(("mapping", "message"), [
    ({"min_length": "8"}, "min_length must be a whole number"),
    ({"min_length": 0}, "min_length must be a whole number >= 1"),
    ({"max_length": True}, "max_length must be a whole number"),
    ({"min_classes": 5}, "min_classes is at most 4"),
    ({"min_length": 20, "max_length": 10}, r"min_length \(20\) is more than max_length"),
    ({"max_length": 300}, "max_length may be at most 256"),
    ({"blocklist": "yes"}, "blocklist must be true or false"),
    ({"forbid_login_name": 1}, "forbid_login_name must be true or false"),
])
def test_invalid_policy_values_are_refused(mapping: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PasswordPolicy.from_mapping(mapping)


def test_policy_must_be_a_mapping() -> None:
    with pytest.raises(ValueError, match="a mapping is expected"):
        PasswordPolicy.from_mapping(["min_length"])  # type: ignore[arg-type]


# -- the blocklist file ------------------------------------------------------------------

def test_blocklist_file_is_large_lower_case_and_without_duplicates() -> None:
    text = importlib.resources.files("flows").joinpath(
        "data", "common-passwords.txt").read_text(encoding="utf-8")
    entries = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(entries) >= 1000
    assert len(set(entries)) == len(entries)
    assert all(e == e.strip().lower() for e in entries)
    for common in ("123456", "password", "qwerty", "1qaz2wsx", "iloveyou", "woaini1314",
                   "a123456", "aa123456", "p@ssw0rd"):
        assert common in entries


# -- the size guard as a field validator -------------------------------------------------

def test_password_size_validator_is_registered_and_only_checks_size() -> None:
    registry = Registry()
    passwords.register(registry)
    validate = registry.validators["password_size"]
    assert validate("short") == "short"
    assert validate("a" * MAX_PASSWORD_BYTES) == "a" * MAX_PASSWORD_BYTES
    with pytest.raises(Invalid) as info:
        validate("a" * (MAX_PASSWORD_BYTES + 1))
    assert info.value.error_id == "password_too_large"


# -- hashing ------------------------------------------------------------------------------

async def test_hash_is_argon2id_and_verifies() -> None:
    hasher = cheap_hasher()
    stored = await hasher.hash(GOOD)
    assert stored.startswith("$argon2id$")
    assert GOOD not in stored
    assert await hasher.verify(stored, GOOD) is True
    assert await hasher.verify(stored, GOOD + "x") is False
    assert await hasher.verify(stored, GOOD.lower()) is False


async def test_same_password_hashes_differently_each_time() -> None:
    hasher = cheap_hasher()
    assert await hasher.hash(GOOD) != await hasher.hash(GOOD)


async def test_default_parameters_are_owasps_19_mib_2_passes_1_lane() -> None:
    stored = await Hasher().hash(GOOD)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


async def test_full_width_password_is_the_same_password() -> None:
    hasher = cheap_hasher()
    stored = await hasher.hash("Tiger-Lake-42")
    assert await hasher.verify(stored, "Ｔｉｇｅｒ－Ｌａｋｅ－４２")


async def test_hashing_and_verifying_run_off_the_event_loop_thread(spy: Spy) -> None:
    loop_thread = threading.get_ident()
    hasher = cheap_hasher()
    stored = await hasher.hash(GOOD)
    await hasher.verify(stored, GOOD)
    await hasher.verify_dummy(GOOD)
    await hasher.verify_dummy(GOOD)
    assert spy.names() == ["hash", "verify", "hash", "verify"]
    assert all(thread != loop_thread for _, thread in spy.calls)


async def test_too_large_password_is_refused_before_hashing(spy: Spy) -> None:
    hasher = cheap_hasher()
    with pytest.raises(Invalid) as info:
        await hasher.hash("a" * (MAX_PASSWORD_BYTES + 1))
    assert info.value.error_id == "password_too_large"
    stored = await cheap_hasher().hash(GOOD)
    spy.calls.clear()
    assert await hasher.verify(stored, "a" * (MAX_PASSWORD_BYTES + 1)) is False
    assert await hasher.verify_dummy("a" * (MAX_PASSWORD_BYTES + 1)) is False
    assert spy.calls == []


async def test_lone_surrogate_is_never_hashed(spy: Spy) -> None:
    hasher = cheap_hasher()
    with pytest.raises(Invalid) as info:
        await hasher.hash("Tiger\ud800Lake1")
    assert info.value.error_id == "password_invalid_characters"
    assert await hasher.verify(await cheap_hasher().hash(GOOD), "Tiger\ud800Lake1") is False
    assert spy.names() == ["hash"]


async def test_dummy_verify_costs_one_argon2_run_and_is_always_false(spy: Spy) -> None:
    hasher = cheap_hasher()
    for _ in range(3):
        assert await hasher.verify_dummy(GOOD) is False
    assert spy.names() == ["hash", "verify", "verify"]


async def test_malformed_stored_hash_is_an_error_not_a_wrong_password() -> None:
    with pytest.raises(InvalidHashError):
        await cheap_hasher().verify("not a hash", GOOD)


async def test_hash_made_with_other_parameters_needs_rehash() -> None:
    cheap = cheap_hasher()
    stored = await cheap.hash(GOOD)
    assert not cheap.needs_rehash(stored)
    assert Hasher().needs_rehash(stored)


def test_hasher_repr_shows_parameters() -> None:
    assert repr(Hasher()) == "<Hasher argon2id m=19456 KiB t=2 p=1>"


class Gate:
    """Stands in for argon2's verify: each call waits, in its hashing thread, until the
    test opens the gate; counts the calls running at once."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.running = self.most = self.done = 0

    def __call__(self, hash: str, password: str) -> bool:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.open.wait(30)
        with self.lock:
            self.running -= 1
            self.done += 1
        return True


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop (and the hashing threads) until ``condition`` holds."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("never happened")


async def test_a_flood_is_refused_at_once_past_the_queue_and_one_hash_runs_per_slot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = Hasher(time_cost=1, memory_cost=8, concurrency=2, max_waiting=3)
    gate = Gate()
    monkeypatch.setattr(hasher, "_verify", gate)
    tasks = [asyncio.create_task(hasher.verify("$argon2id$...", GOOD)) for _ in range(12)]
    await until(lambda: sum(t.done() for t in tasks) == 7)
    refused = [t for t in tasks if t.done()]
    # Refused without waiting for any hash: none has finished, two are running.
    assert all(isinstance(t.exception(), HashingBusy) for t in refused)
    assert gate.done == 0
    await until(lambda: gate.running == 2)
    assert hasher.admitted == 5
    with pytest.raises(HashingBusy) as caught:
        hasher.check_capacity()
    assert caught.value.status == 503
    assert caught.value.problem()["retry_after"] == 1
    gate.open.set()
    assert await asyncio.gather(*(t for t in tasks if t not in refused)) == [True] * 5
    assert gate.most == 2
    assert hasher.admitted == 0
    hasher.check_capacity()  # room again
    # Seven refused as they came, one asked: counted; the five that ran, counted too.
    assert hasher.spent().refused == 8
    assert hasher.spent().hashes == 5


async def test_a_hashers_cpu_is_its_threads_cpu_not_the_time_it_took(
        monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = Hasher(time_cost=1, memory_cost=8 * 1024, concurrency=1)
    stored = await hasher.hash(GOOD)
    assert await hasher.verify(stored, GOOD)
    assert not await hasher.verify(stored, GOOD + "x")
    await hasher.verify_dummy(GOOD)  # makes the dummy hash
    await hasher.verify_dummy(GOOD)
    worked = hasher.spent()
    assert worked.hashes == 5
    assert worked.cpu_seconds > 0

    def waiting(hash: str, password: str) -> bool:
        time.sleep(0.3)  # a thread that waits spends no CPU
        return True

    monkeypatch.setattr(hasher, "_verify", waiting)
    assert await hasher.verify(stored, GOOD)
    waited = hasher.spent()
    assert waited.hashes == 6
    assert waited.cpu_seconds - worked.cpu_seconds < 0.1


async def test_by_default_one_hash_runs_per_core() -> None:
    hasher = Hasher()
    assert hasher.concurrency == cores()
    assert hasher.max_waiting == 8 * cores()
