"""SMS codes: bound to (instance, purpose, phone), single use, dead after 5 wrong tries
whatever new code is sent, stored hashed; sent sealed through the outbox."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from engine import ActionInput, FrozenClock, Invalid, OutboxMessage, Registry, ValidationFailed
from flows import sms
from flows.pii import Vault, VaultOpenError, generate_keys
from flows.sms import (
    OUTBOX_PURPOSE,
    SMS_CODE_DEAD,
    SMS_CODE_EXPIRED,
    SMS_CODE_WRONG,
    SmsCodes,
    SmsPayloadError,
    SmsPolicy,
    deliver,
    queue_sms,
)
from storage.ephemeral import RedisEphemeral

INSTANCE = "0b7c2a9e-8d1f-4c55-9a70-3f2e1d0c9b8a"
OTHER_INSTANCE = "6f1d3c2b-1a09-4e8f-b7d6-5c4b3a291807"
PURPOSE = "verify_phone"
PHONE = "13800138000"
OTHER_PHONE = "13912345678"


def other(code: str) -> str:
    """A different code of the same shape."""
    return f"{(int(code) + 1) % 10**len(code):0{len(code)}d}"


@pytest.fixture
def vault() -> Vault:
    return Vault.for_development()


@pytest.fixture
def eph(redis_client: aioredis.Redis, redis_prefix: str) -> RedisEphemeral:
    return RedisEphemeral(redis_client, redis_prefix)


@pytest.fixture
def codes(eph: RedisEphemeral, vault: Vault) -> SmsCodes:
    return SmsCodes(eph, vault, policy=SmsPolicy())


async def stored_keys(redis_client: aioredis.Redis, prefix: str) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    async for key in redis_client.scan_iter(match=f"{prefix}sms:*"):
        value = await redis_client.get(key)
        assert isinstance(value, bytes)
        out[key] = value
    return out


# -- the policy -----------------------------------------------------------------------


def test_policy_defaults_are_the_specs() -> None:
    policy = SmsPolicy()
    assert (policy.length, policy.ttl, policy.max_tries) == (6, timedelta(minutes=5), 5)
    assert policy.tries_ttl == timedelta(hours=24)


def test_policy_from_a_mapping_reads_durations_as_analysts_write_them() -> None:
    policy = SmsPolicy.from_mapping({"ttl": "10m", "max_tries": 3, "tries_ttl": "12h"})
    assert (policy.ttl, policy.max_tries, policy.tries_ttl) == (
        timedelta(minutes=10), 3, timedelta(hours=12))
    assert SmsPolicy.from_mapping(None) == SmsPolicy()
    assert "10分钟内有效" in policy.text("123456")


@pytest.mark.parametrize(("mapping", "match"), [
    ({"ttl_minutes": 5}, "unknown key"),
    ({"length": 3}, "length"),
    ({"length": True}, "length"),
    ({"max_tries": 0}, "max_tries"),
    ({"ttl": "soon"}, "duration"),
    ({"ttl": "1h", "tries_ttl": "30m"}, "tries_ttl"),
    ({"signature": "【x】"}, "signature"),
    ([("length", 6)], "mapping"),
])
def test_policy_refuses_bad_settings(mapping: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SmsPolicy.from_mapping(mapping)


def test_message_text() -> None:
    assert SmsPolicy().text("012345") == (
        "【统一身份认证】您的验证码为012345，5分钟内有效。请勿泄露。")


# -- issue and verify ---------------------------------------------------------------


async def test_right_code_passes_once(codes: SmsCodes) -> None:
    code = await codes.issue(INSTANCE, PURPOSE, PHONE)
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, code) is None
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, code) == SMS_CODE_EXPIRED


async def test_wrong_code_is_refused_and_the_right_one_still_passes(codes: SmsCodes) -> None:
    code = await codes.issue(INSTANCE, PURPOSE, PHONE)
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, other(code)) == SMS_CODE_WRONG
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, code) is None


async def test_wrong_code_keeps_the_code_ttl(codes: SmsCodes, eph: RedisEphemeral,
                                             redis_prefix: str,
                                             redis_client: aioredis.Redis) -> None:
    code = await codes.issue(INSTANCE, PURPOSE, PHONE)
    [key] = [k for k in await stored_keys(redis_client, redis_prefix)
             if not k.endswith(b":tries")]
    await redis_client.pexpire(key, 30_000)
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, other(code)) == SMS_CODE_WRONG
    left = await eph.ttl(key.decode().removeprefix(redis_prefix))
    assert left is not None
    assert left <= timedelta(seconds=30)


async def test_expired_code_is_expired(codes: SmsCodes, redis_client: aioredis.Redis,
                                       redis_prefix: str) -> None:
    code = await codes.issue(INSTANCE, PURPOSE, PHONE)
    for key in await stored_keys(redis_client, redis_prefix):
        await redis_client.delete(key)  # what Redis does when the TTL runs out
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, code) == SMS_CODE_EXPIRED


async def test_never_sent_is_expired(codes: SmsCodes) -> None:
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, "123456") == SMS_CODE_EXPIRED


async def test_codes_live_five_minutes_and_tries_a_day(codes: SmsCodes,
                                                       redis_client: aioredis.Redis,
                                                       redis_prefix: str) -> None:
    code = await codes.issue(INSTANCE, PURPOSE, PHONE)
    await codes.verify(INSTANCE, PURPOSE, PHONE, other(code))
    ttls = {key.endswith(b":tries"): await redis_client.pttl(key)
            for key in await stored_keys(redis_client, redis_prefix)}
    assert 290_000 < ttls[False] <= 300_000
    assert 86_390_000 < ttls[True] <= 86_400_000


@pytest.mark.parametrize(("instance", "purpose", "phone"), [
    (OTHER_INSTANCE, PURPOSE, PHONE),
    (INSTANCE, "verify_new_phone", PHONE),
    (INSTANCE, PURPOSE, OTHER_PHONE),
])
async def test_a_code_for_another_binding_is_not_found_and_costs_nothing(
        codes: SmsCodes, instance: str, purpose: str, phone: str) -> None:
    code = await codes.issue(INSTANCE, PURPOSE, PHONE)
    for _ in range(6):
        assert await codes.verify(instance, purpose, phone, code) == SMS_CODE_EXPIRED
    assert not await codes.exhausted(INSTANCE, PURPOSE, PHONE)
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, code) is None


async def test_the_fifth_wrong_try_kills_the_code_even_for_the_right_one(
        codes: SmsCodes) -> None:
    code = await codes.issue(INSTANCE, PURPOSE, PHONE)
    answers = [await codes.verify(INSTANCE, PURPOSE, PHONE, other(code)) for _ in range(5)]
    assert answers == [SMS_CODE_WRONG] * 4 + [SMS_CODE_DEAD]
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, code) == SMS_CODE_DEAD
    assert await codes.exhausted(INSTANCE, PURPOSE, PHONE)


async def test_a_new_code_does_not_revive_a_dead_binding(codes: SmsCodes) -> None:
    code = await codes.issue(INSTANCE, PURPOSE, PHONE)
    for _ in range(5):
        await codes.verify(INSTANCE, PURPOSE, PHONE, other(code))
    fresh = await codes.issue(INSTANCE, PURPOSE, PHONE)
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, fresh) == SMS_CODE_DEAD


async def test_a_new_code_does_not_reset_the_wrong_tries(codes: SmsCodes) -> None:
    code = await codes.issue(INSTANCE, PURPOSE, PHONE)
    for _ in range(3):
        assert await codes.verify(INSTANCE, PURPOSE, PHONE, other(code)) == SMS_CODE_WRONG
    fresh = await codes.issue(INSTANCE, PURPOSE, PHONE)
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, other(fresh)) == SMS_CODE_WRONG
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, other(fresh)) == SMS_CODE_DEAD
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, fresh) == SMS_CODE_DEAD


async def test_a_new_code_replaces_the_previous_one(codes: SmsCodes) -> None:
    first = await codes.issue(INSTANCE, PURPOSE, PHONE)
    second = await codes.issue(INSTANCE, PURPOSE, PHONE)
    if first != second:  # one chance in a million that they are equal
        assert await codes.verify(INSTANCE, PURPOSE, PHONE, first) == SMS_CODE_WRONG
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, second) is None


async def test_a_right_code_clears_the_wrong_tries(codes: SmsCodes) -> None:
    code = await codes.issue(INSTANCE, PURPOSE, PHONE)
    for _ in range(4):
        await codes.verify(INSTANCE, PURPOSE, PHONE, other(code))
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, code) is None
    again = await codes.issue(INSTANCE, PURPOSE, PHONE)
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, other(again)) == SMS_CODE_WRONG


async def test_parallel_guesses_compare_at_most_max_tries_times(codes: SmsCodes) -> None:
    code = await codes.issue(INSTANCE, PURPOSE, PHONE)
    guesses = [f"{(int(code) + i) % 10**6:06d}" for i in range(1, 41)]
    answers = await asyncio.gather(*(codes.verify(INSTANCE, PURPOSE, PHONE, g)
                                     for g in guesses))
    compared = [a for a in answers if a in (SMS_CODE_WRONG, SMS_CODE_DEAD)]
    assert len(compared) <= 5
    assert set(answers) <= {SMS_CODE_WRONG, SMS_CODE_DEAD, SMS_CODE_EXPIRED}


async def test_text_that_is_not_a_code_is_wrong_but_not_counted(codes: SmsCodes) -> None:
    code = await codes.issue(INSTANCE, PURPOSE, PHONE)
    for junk in ["12345", "1234567", "abcdef", "", "١٢٣٤٥٦"]:
        assert await codes.verify(INSTANCE, PURPOSE, PHONE, junk) == SMS_CODE_WRONG
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, code) is None


async def test_full_width_digits_and_spaces_are_accepted(codes: SmsCodes) -> None:
    code = await codes.issue(INSTANCE, PURPOSE, PHONE)
    typed = " " + "".join(chr(ord(d) + 0xFEE0) for d in code) + "\u3000"
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, typed) is None


async def test_phone_spellings_are_one_binding(codes: SmsCodes) -> None:
    code = await codes.issue(INSTANCE, PURPOSE, "+86 138-0013-8000")
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, code) is None


async def test_refuses_a_bad_phone_or_key_part(codes: SmsCodes) -> None:
    with pytest.raises(Invalid):
        await codes.issue(INSTANCE, PURPOSE, "12345")
    with pytest.raises(ValueError, match="purpose"):
        await codes.issue(INSTANCE, "a:b", PHONE)


async def test_codes_are_six_digits_and_spread(codes: SmsCodes) -> None:
    issued = [await codes.issue(INSTANCE, PURPOSE, PHONE) for _ in range(200)]
    assert all(len(c) == 6 and c.isascii() and c.isdigit() for c in issued)
    assert len(set(issued)) >= 190  # 200 draws of a million: a repeat is rare


async def test_small_codes_keep_their_leading_zeros(codes: SmsCodes,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "randbelow", lambda n: 42)
    code = await codes.issue(INSTANCE, PURPOSE, PHONE)
    assert code == "000042"
    assert await codes.verify(INSTANCE, PURPOSE, PHONE, "000042") is None


async def test_neither_code_nor_phone_is_stored_in_clear(codes: SmsCodes,
                                                         redis_client: aioredis.Redis,
                                                         redis_prefix: str) -> None:
    code = await codes.issue(INSTANCE, PURPOSE, PHONE)
    await codes.verify(INSTANCE, PURPOSE, PHONE, other(code))
    stored = await stored_keys(redis_client, redis_prefix)
    assert len(stored) == 2
    for key, value in stored.items():
        assert PHONE.encode() not in key
        assert code.encode() not in value
        assert INSTANCE.encode() in key  # operators can still tell whose keys they are


async def test_hashes_depend_on_the_vault_key(eph: RedisEphemeral,
                                              redis_client: aioredis.Redis,
                                              redis_prefix: str) -> None:
    keys = Vault.from_config(**generate_keys())
    a = SmsCodes(eph, Vault.for_development())
    b = SmsCodes(eph, keys)
    code = await a.issue(INSTANCE, PURPOSE, PHONE)
    # Another key, another phone tag: the code is not even found.
    assert await b.verify(INSTANCE, PURPOSE, PHONE, code) == SMS_CODE_EXPIRED
    assert await a.verify(INSTANCE, PURPOSE, PHONE, code) is None


# -- decoys: codes for numbers that must not learn whether they are registered ---------


async def test_a_decoy_is_never_right_and_dies_like_a_real_code(codes: SmsCodes) -> None:
    code = await codes.issue(INSTANCE, PURPOSE, PHONE, deliverable=False)
    real = await codes.issue(OTHER_INSTANCE, PURPOSE, PHONE)
    # Not even the code issue() returned, nor the real code of another binding.
    decoy_answers = [await codes.verify(INSTANCE, PURPOSE, PHONE, guess)
                     for guess in (code, real, other(code), code, code, code)]
    real_answers = [await codes.verify(OTHER_INSTANCE, PURPOSE, PHONE, other(real))
                    for _ in range(6)]
    assert decoy_answers == real_answers == [SMS_CODE_WRONG] * 4 + [SMS_CODE_DEAD] * 2
    assert await codes.exhausted(INSTANCE, PURPOSE, PHONE)


async def test_a_decoy_is_stored_like_a_real_code(codes: SmsCodes, eph: RedisEphemeral,
                                                  redis_client: aioredis.Redis,
                                                  redis_prefix: str) -> None:
    await codes.issue(INSTANCE, PURPOSE, PHONE, deliverable=False)
    await codes.issue(OTHER_INSTANCE, PURPOSE, PHONE)
    stored = await stored_keys(redis_client, redis_prefix)
    assert len(stored) == 2
    decoy, real = (next(v for k, v in stored.items() if i.encode() in k)
                   for i in (INSTANCE, OTHER_INSTANCE))
    assert len(decoy) == len(real) == 32
    ttls = [await eph.ttl(k.decode().removeprefix(redis_prefix)) for k in stored]
    assert all(t is not None and t > timedelta(minutes=4) for t in ttls)


async def test_a_decoy_message_is_queued_alike_and_never_sent(vault: Vault,
                                                            clock: FrozenClock) -> None:
    real, decoy = action_input(clock, {}), action_input(clock, {})
    queue_sms(real, vault, PHONE, "【统一身份认证】您的验证码为123456，5分钟内有效。请勿泄露。")
    queue_sms(decoy, vault, PHONE, "【统一身份认证】您的验证码为654321，5分钟内有效。请勿泄露。",
              send=False)
    [(_, shown_real)], [(_, shown_decoy)] = real.outbox, decoy.outbox
    assert shown_real.keys() == shown_decoy.keys()
    assert shown_real["to"] == shown_decoy["to"]
    assert abs(len(shown_real["sealed"]) - len(shown_decoy["sealed"])) <= 24
    gateway = Gateway()
    with capture_logs() as logs:
        await deliver(as_message(decoy), vault, gateway)
    assert gateway.sent == []
    assert [e["event"] for e in logs] == ["sms_decoy_dropped"]
    await deliver(as_message(real), vault, gateway)
    assert len(gateway.sent) == 1


# -- the outbox -----------------------------------------------------------------------


class Gateway:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    async def send(self, phone: str, text: str, *, idempotency_key: str) -> None:
        self.sent.append((phone, text, idempotency_key))


def action_input(clock: FrozenClock, services: dict[type, Any], *, state: str = PURPOSE,
                 instance_id: str = INSTANCE, action: str = "send_sms_code",
                 params: dict[str, Any] | None = None, **fields: Any) -> ActionInput:
    """The input the runtime hands ``action``: its parameters as the file gives them (by
    default none), with the declared defaults filled in as the loader does."""
    declared = Registry()
    sms.register(declared)
    return ActionInput(instance_id=instance_id, flow="personal_password_reset", seq=3,
                       state=state, trigger="send_code", context={}, input=fields,
                       now=clock.now(), services=services, action=action,
                       params=declared.spec("action", action).resolve(params or {}))


def as_message(ai: ActionInput, n: int = 0) -> OutboxMessage:
    topic, payload = ai.outbox[n]
    # Through JSON, as the outbox table stores it.
    return OutboxMessage(id=7, instance_id=ai.instance_id, seq=ai.seq, topic=topic,
                         payload=json.loads(json.dumps(payload)),
                         idempotency_key=f"{ai.idempotency_key}:{n}", attempts=0)


async def test_queued_sms_is_sealed_and_delivered_with_the_message_key(
        vault: Vault, clock: FrozenClock) -> None:
    ai = action_input(clock, {})
    queue_sms(ai, vault, PHONE, "【统一身份认证】您的验证码为123456，5分钟内有效。请勿泄露。")
    [(topic, payload)] = ai.outbox
    assert topic == "sms"
    dumped = json.dumps(payload, ensure_ascii=False)
    assert PHONE not in dumped
    assert "123456" not in dumped
    assert payload["to"] == "138****8000"
    gateway = Gateway()
    await deliver(as_message(ai), vault, gateway)
    assert gateway.sent == [(PHONE, "【统一身份认证】您的验证码为123456，5分钟内有效。请勿泄露。",
                             f"{ai.idempotency_key}:0")]


async def test_sender_delivers_through_the_gateway(vault: Vault, clock: FrozenClock) -> None:
    ai = action_input(clock, {})
    queue_sms(ai, vault, PHONE, "hello")
    gateway = Gateway()
    registry = Registry()
    registry.sender("sms")(sms.sender(vault, gateway))
    await registry.senders["sms"](as_message(ai))
    assert [(p, t) for p, t, _ in gateway.sent] == [(PHONE, "hello")]


@pytest.mark.parametrize("tamper", [
    lambda p: {**p, "v": 2},
    lambda p: {**p, "sealed": "not base64!"},
    lambda p: {k: v for k, v in p.items() if k != "sealed"},
])
async def test_a_malformed_payload_is_refused_without_content(
        vault: Vault, clock: FrozenClock, tamper: Any) -> None:
    ai = action_input(clock, {})
    queue_sms(ai, vault, PHONE, "secret text 654321")
    message = as_message(ai)
    bad = OutboxMessage(id=message.id, instance_id=message.instance_id, seq=message.seq,
                        topic=message.topic, payload=tamper(message.payload),
                        idempotency_key=message.idempotency_key, attempts=0)
    gateway = Gateway()
    with pytest.raises(SmsPayloadError) as info:
        await deliver(bad, vault, gateway)
    assert PHONE not in str(info.value)
    assert gateway.sent == []


async def test_a_payload_sealed_for_another_purpose_does_not_open(vault: Vault,
                                                                  clock: FrozenClock) -> None:
    sealed = vault.seal("mobile", json.dumps({"phone": PHONE, "text": "x"}))
    message = OutboxMessage(id=1, instance_id=INSTANCE, seq=1, topic="sms",
                            payload={"v": 1, "sealed": base64.b64encode(sealed).decode()},
                            idempotency_key="k", attempts=0)
    with pytest.raises(VaultOpenError):
        await deliver(message, vault, Gateway())
    assert OUTBOX_PURPOSE == "sms_outbox"


# -- the actions ----------------------------------------------------------------------


def registered() -> Registry:
    registry = Registry()
    sms.register(registry)
    return registry


@pytest.fixture
def services(codes: SmsCodes, vault: Vault) -> dict[type, Any]:
    return {SmsCodes: codes, Vault: vault}


async def send(clock: FrozenClock, services: dict[type, Any], vault: Vault,
               **kw: Any) -> tuple[ActionInput, Any, str]:
    """Run send_sms_code; return its input, its fact and the code (read from the outbox)."""
    ai = action_input(clock, services, mobile=PHONE, **kw)
    fact = await registered().actions["send_sms_code"](ai)
    gateway = Gateway()
    await deliver(as_message(ai), vault, gateway)
    [(_, text, _)] = gateway.sent
    code = text.split("验证码为")[1][:6]
    return ai, fact, code


async def check(clock: FrozenClock, services: dict[type, Any], code: str, **kw: Any) -> Any:
    ai = action_input(clock, services, action="check_sms_code", mobile=PHONE, sms_code=code,
                      **kw)
    return await registered().actions["check_sms_code"](ai)


async def test_send_action_queues_a_sealed_message_and_records_the_masked_phone(
        clock: FrozenClock, services: dict[type, Any], vault: Vault) -> None:
    with capture_logs() as logs:
        ai, fact, code = await send(clock, services, vault)
    assert fact == {"sent_to": "138****8000"}
    assert code.isdigit()
    assert len(code) == 6
    [(topic, payload)] = ai.outbox
    assert topic == "sms"
    dumped = json.dumps(payload, ensure_ascii=False)
    assert code not in dumped
    assert PHONE not in dumped
    assert code not in repr(fact)
    assert logs
    assert PHONE not in repr(logs)
    assert code not in repr(logs)


async def test_check_action_passes_the_right_code(clock: FrozenClock,
                                                  services: dict[type, Any],
                                                  vault: Vault) -> None:
    _, _, code = await send(clock, services, vault)
    with capture_logs() as logs:
        assert await check(clock, services, code) == {"verified": "138****8000"}
    assert PHONE not in repr(logs)
    assert code not in repr(logs)


async def test_the_code_is_bound_to_the_state_it_was_sent_in(clock: FrozenClock,
                                                             services: dict[type, Any],
                                                             vault: Vault) -> None:
    _, _, code = await send(clock, services, vault, state="verify_old_phone")
    with pytest.raises(ValidationFailed) as info:
        await check(clock, services, code, state="verify_new_phone")
    assert info.value.errors[0].error_id == SMS_CODE_EXPIRED
    assert await check(clock, services, code, state="verify_old_phone") is not None


async def test_check_action_refuses_on_the_sms_code_field(clock: FrozenClock,
                                                          services: dict[type, Any],
                                                          vault: Vault) -> None:
    _, _, code = await send(clock, services, vault)
    seen = []
    for _ in range(6):
        with capture_logs() as logs, pytest.raises(ValidationFailed) as info:
            await check(clock, services, other(code))
        [error] = info.value.errors
        assert error.field == "sms_code"
        assert error.zh
        assert error.en
        seen.append(error.error_id)
        assert PHONE not in repr(logs)
        assert code not in repr(logs)
    assert seen == [SMS_CODE_WRONG] * 4 + [SMS_CODE_DEAD] * 2
    with pytest.raises(ValidationFailed) as info:
        await check(clock, services, code)
    assert info.value.errors[0].error_id == SMS_CODE_DEAD


async def test_check_action_passes_again_while_the_phone_is_proven_and_nowhere_else(
        clock: FrozenClock, services: dict[type, Any], vault: Vault) -> None:
    _, _, code = await send(clock, services, vault)
    assert await check(clock, services, code) == {"verified": "138****8000"}
    # A step refused after the check (a login name taken) passes again, code used or not.
    assert await check(clock, services, code) == {"verified": "138****8000"}
    assert await check(clock, services, other(code)) == {"verified": "138****8000"}
    # The code itself is used up: another purpose or instance does not take it.
    for kw in ({"state": "other_purpose"}, {"instance_id": OTHER_INSTANCE}):
        with pytest.raises(ValidationFailed) as info:
            await check(clock, services, code, **kw)
        assert (info.value.errors[0].field, info.value.errors[0].error_id) == (
            "sms_code", SMS_CODE_EXPIRED)
    assert await services[SmsCodes].verify(INSTANCE, PURPOSE, PHONE, code) == \
        SMS_CODE_EXPIRED


async def test_a_proof_lasts_as_long_as_a_code(codes: SmsCodes, eph: RedisEphemeral,
                                               redis_client: aioredis.Redis) -> None:
    code = await codes.issue(INSTANCE, PURPOSE, PHONE)
    assert await codes.prove(INSTANCE, PURPOSE, PHONE, other(code)) == SMS_CODE_WRONG
    assert await codes.prove(INSTANCE, PURPOSE, PHONE, code) is None
    [key] = [k async for k in redis_client.scan_iter(match=f"{eph.prefix}sms:*:proven")]
    left = await redis_client.pttl(key)
    assert 0 < left <= codes.policy.ttl.total_seconds() * 1000
    assert await codes.prove(INSTANCE, PURPOSE, PHONE, "") is None
    await redis_client.delete(key)  # as when it expires
    assert await codes.prove(INSTANCE, PURPOSE, PHONE, code) == SMS_CODE_EXPIRED


async def test_send_action_refuses_a_dead_binding(clock: FrozenClock,
                                                  services: dict[type, Any],
                                                  vault: Vault) -> None:
    _, _, code = await send(clock, services, vault)
    for _ in range(5):
        with pytest.raises(ValidationFailed):
            await check(clock, services, other(code))
    ai = action_input(clock, services, mobile=PHONE)
    with pytest.raises(ValidationFailed) as info:
        await registered().actions["send_sms_code"](ai)
    assert (info.value.errors[0].field, info.value.errors[0].error_id) == (
        "mobile", SMS_CODE_DEAD)
    assert ai.outbox == []


async def test_the_actions_read_the_fields_and_the_purpose_the_file_gives(
        clock: FrozenClock, services: dict[str, Any], vault: Vault) -> None:
    sent = {"phone": "new_mobile", "purpose": "new_phone"}
    ai = action_input(clock, services, state="verify_new", params=sent, new_mobile=PHONE,
                      mobile="13900139000")
    assert await registered().actions["send_sms_code"](ai) == {"sent_to": "138****8000"}
    gateway = Gateway()
    await deliver(as_message(ai), vault, gateway)
    [(to, text, _)] = gateway.sent
    assert to == PHONE
    code = text.split("验证码为")[1][:6]
    checked = {**sent, "code": "new_code"}
    # The purpose, not the state, binds the code: any state checking that purpose may.
    with pytest.raises(ValidationFailed) as info:
        await registered().actions["check_sms_code"](action_input(
            clock, services, action="check_sms_code", state="confirm", new_mobile=PHONE,
            new_code=code, params={**checked, "purpose": "old_phone"}))
    assert (info.value.errors[0].field, info.value.errors[0].error_id) == (
        "new_code", SMS_CODE_EXPIRED)
    assert await registered().actions["check_sms_code"](action_input(
        clock, services, action="check_sms_code", state="confirm", new_mobile=PHONE,
        new_code=code, params=checked)) == {"verified": "138****8000"}


async def test_the_actions_refuse_on_the_fields_the_file_names(
        clock: FrozenClock, services: dict[str, Any]) -> None:
    ai = action_input(clock, services, params={"phone": "new_mobile"}, new_mobile="12345")
    with pytest.raises(ValidationFailed) as info:
        await registered().actions["send_sms_code"](ai)
    assert (info.value.errors[0].field, info.value.errors[0].error_id) == (
        "new_mobile", "mobile_invalid")
    with pytest.raises(ValidationFailed) as info:
        await registered().actions["check_sms_code"](action_input(
            clock, services, action="check_sms_code", params={"code": "otp"}, mobile=PHONE,
            otp="123456"))
    assert (info.value.errors[0].field, info.value.errors[0].error_id) == (
        "otp", SMS_CODE_EXPIRED)


def test_the_sms_actions_declare_their_parameters_results_and_refusals() -> None:
    registry = registered()
    send_spec = registry.spec("action", "send_sms_code")
    check_spec = registry.spec("action", "check_sms_code")
    # The defaults are what the actions did before they took parameters.
    assert send_spec.resolve({}) == {"phone": "mobile", "purpose": None}
    assert check_spec.resolve({}) == {"phone": "mobile", "code": "sms_code", "purpose": None}
    assert dict(send_spec.results or {}).keys() == {"sent_to"}
    assert dict(check_spec.results or {}).keys() == {"verified"}
    assert {(r.error_id, r.param) for r in check_spec.refusals} == {
        ("mobile_invalid", "phone"), (SMS_CODE_WRONG, "code"), (SMS_CODE_EXPIRED, "code"),
        (SMS_CODE_DEAD, "code")}
    assert {(r.error_id, r.param) for r in send_spec.refusals} == {
        ("mobile_invalid", "phone"), (SMS_CODE_DEAD, "phone")}


async def test_send_action_refuses_a_bad_phone_on_the_mobile_field(
        clock: FrozenClock, services: dict[type, Any]) -> None:
    ai = action_input(clock, services, mobile="12345")
    with pytest.raises(ValidationFailed) as info:
        await registered().actions["send_sms_code"](ai)
    assert (info.value.errors[0].field, info.value.errors[0].error_id) == (
        "mobile", "mobile_invalid")
    assert ai.outbox == []
