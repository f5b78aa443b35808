"""SMS verification codes (短信验证码): issue, verify, and send through the outbox.

A code belongs to a *binding*: (flow instance, purpose, phone). The actions take the
purpose from flows.yaml (``purpose: new_phone``), by default the current state's name,
so a code sent for one step (verify the old phone) never passes another (verify the new
phone); with the default, the sending and the checking trigger must be in the same state
(``send_sms_code`` on a self-loop or as the state's ``on_enter``, ``check_sms_code`` on
the trigger that leaves it). Which fields hold the phone and the code are parameters
too (``phone``, ``code``; by default ``mobile`` and ``sms_code``). A code checked for
another binding is not found: ``sms_code_expired``, and no try is counted anywhere.

Only an HMAC of the code is stored, for ``ttl`` (5 minutes), in the ephemeral store.
A new code for the same binding replaces the previous one, but not its count of wrong
tries: that count lives under a key of its own for ``tries_ttl`` (24 hours from the
first wrong try). The ``max_tries``-th wrong try (the 5th) kills the binding: that try
and every later one answer ``sms_code_dead``, even with the right code, and a new code
does not revive it (``send_sms_code`` refuses to send one) until the count expires or
the user starts a new flow instance, whose binding is a new one. 24 hours because it
matches the window of the daily cap on codes a phone gets (10, enforced by the engine):
every binding tried needs a code sent and allows 5 wrong tries, so a phone's codes face
at most about 50 guesses of a million a day, however often an attacker restarts flows;
and a day outlives the instances of the procedures that send codes, so within one
instance a dead binding stays dead (keep ``tries_ttl`` >= a flow's ``expires_in``).

A number that must not learn whether it is registered (a password reset for a phone
no account has) gets a *decoy*: ``issue(..., deliverable=False)`` stores, under the same
key and for the same time, a random value that no code hashes to. It is counted, dies
and expires exactly like a real code, so every answer is the same, but no guess can
ever be right; its message is queued like any other, sealed, and dropped unsent by
``deliver``.

A right code is taken (used up) and clears the count. Verification takes the stored
hash before comparing and puts it back only after a wrong try is counted, so parallel
guesses cannot compare more than once per stored code (the others see no code) and the
number of comparisons per binding never exceeds ``max_tries``.

A step may check a code and still be refused by what it checks next (registration:
the login name is taken). ``prove`` remembers a right code for ``ttl``: the binding's
phone is proven, and a step of the same binding passes again without a new code, so
the user fixes the login name and submits again. ``check_sms_code`` proves this way;
the memo is bound to instance, purpose and phone like the code was.

The message goes out through the engine's outbox (topic ``sms``): phone and text are
sealed with the vault, so the code is never at rest in clear in the outbox table, and
``deliver`` opens them for the SMS gateway. No code and no unmasked phone is ever logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, Protocol

import attrs
import structlog

from engine import (
    ActionInput,
    Invalid,
    OutboxMessage,
    Param,
    Refusal,
    Registry,
    ValidationFailed,
    parse_duration,
)
from flows.identity import MOBILE_INVALID, mask_mobile, mobile
from flows.pii import Vault
from flows.ports import Ephemeral

__all__ = [
    "BAD_PHONE",
    "CODE",
    "CODE_REFUSALS",
    "DEAD_PHONE",
    "MESSAGES",
    "OUTBOX_PURPOSE",
    "PHONE",
    "PURPOSE",
    "SENT_TO",
    "SMS_CODE_DEAD",
    "SMS_CODE_EXPIRED",
    "SMS_CODE_WRONG",
    "SMS_TOPIC",
    "VERIFIED",
    "SmsCodes",
    "SmsGateway",
    "SmsPayloadError",
    "SmsPolicy",
    "check_code",
    "codes_for",
    "deliver",
    "phone_in",
    "prove_phone",
    "purpose_of",
    "queue_sms",
    "register",
    "send_code_unrevealing",
    "sender",
]

log = structlog.get_logger("flows.sms")

SMS_CODE_WRONG = "sms_code_wrong"
SMS_CODE_EXPIRED = "sms_code_expired"
SMS_CODE_DEAD = "sms_code_dead"

MESSAGES: dict[str, tuple[str, str]] = {
    SMS_CODE_WRONG: ("短信验证码不正确，请核对后重新输入",
                     "The SMS code is wrong; check it and try again"),
    SMS_CODE_EXPIRED: ("短信验证码已失效，请重新获取",
                       "The SMS code has expired or was already used; request a new one"),
    SMS_CODE_DEAD: ("短信验证码错误次数过多，已无法继续验证，请重新办理",
                    "Too many wrong SMS codes: this phone cannot be verified in this "
                    "procedure any more; start again"),
}

SMS_TOPIC = "sms"
OUTBOX_PURPOSE = "sms_outbox"
_OUTBOX_FORMAT = 1

# Instance ids (UUIDs) and purposes (state names) go into keys in clear, for operators:
# nothing that could hold a ':' or spaces, so no two bindings share a key.
_KEY_PART = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
# Full-width digits typed with a Chinese IME, as in flows.identity.
_FULL_WIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}
_SIGNATURE = re.compile(r"^[^\s【】\[\]]{2,16}$")


def _int_in(low: int, high: int) -> Callable[[Any, attrs.Attribute[int], int], None]:
    def check(_: Any, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"sms policy: {attribute.name} must be a whole number "
                             f"{low}-{high}, not {value!r}")
    return check


def _duration(value: Any) -> timedelta:
    # flows.yaml writes durations as analysts do ("5m", "24h"); Python passes timedeltas.
    if isinstance(value, timedelta):
        return value
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"sms policy: {exc}") from None


def _positive(_: Any, attribute: attrs.Attribute[timedelta], value: timedelta) -> None:
    if value <= timedelta(0):
        raise ValueError(f"sms policy: {attribute.name} must be positive, not {value}")


def _signature(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _SIGNATURE.match(value):
        raise ValueError(f"sms policy: {attribute.name} is 2-16 characters without spaces "
                         f"or brackets, not {value!r}")


@attrs.frozen
class SmsPolicy:
    """How codes are made and checked (SPEC: SMS code). Defaults are the SPEC's."""

    length: int = attrs.field(default=6, validator=_int_in(4, 10))
    ttl: timedelta = attrs.field(default=timedelta(minutes=5), converter=_duration,
                                 validator=_positive)
    max_tries: int = attrs.field(default=5, validator=_int_in(1, 100))
    # How long wrong tries are remembered, from the first one: see the module docstring.
    tries_ttl: timedelta = attrs.field(default=timedelta(hours=24), converter=_duration,
                                       validator=_positive)
    # The sender's name in 【】 that Chinese SMS carriers require at the head of a text.
    signature: str = attrs.field(default="统一身份认证", validator=_signature)

    def __attrs_post_init__(self) -> None:
        if self.tries_ttl < self.ttl:
            raise ValueError(f"sms policy: tries_ttl ({self.tries_ttl}) must be at least "
                             f"ttl ({self.ttl}), or a new code would revive a dead one")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> SmsPolicy:
        """Build a policy from its ``flows.yaml`` mapping; absent keys keep the defaults."""
        if mapping is None:
            return cls()
        if not isinstance(mapping, Mapping):
            raise ValueError(f"sms policy: a mapping is expected, not {type(mapping).__name__}")
        known = [a.name for a in attrs.fields(cls)]
        unknown = sorted(str(k) for k in mapping if k not in known)
        if unknown:
            raise ValueError(f"sms policy: unknown key(s) {', '.join(unknown)}; "
                             f"known keys are {', '.join(known)}")
        return cls(**dict(mapping))

    def text(self, code: str) -> str:
        """Return the message that carries ``code``."""
        minutes = max(1, int(self.ttl.total_seconds()) // 60)
        return f"【{self.signature}】您的验证码为{code}，{minutes}分钟内有效。请勿泄露。"



def _key_part(name: str, value: str) -> str:
    if not isinstance(value, str) or not _KEY_PART.match(value):
        raise ValueError(f"an SMS code's {name} is 1-128 letters, digits, '_', '.', '-'")
    return value


class SmsCodes:
    """Issue and verify SMS codes per (flow instance, purpose, phone)."""

    def __init__(self, ephemeral: Ephemeral, vault: Vault, *,
                 policy: SmsPolicy | None = None) -> None:
        self._ephemeral = ephemeral
        self.policy = policy or SmsPolicy()
        # A key of this module's own, derived from the vault's secret index key (an HMAC
        # output under a secret key is itself a secret key): hashes of codes and phones
        # cannot be computed, nor checked by brute force, without it.
        self._key = vault.index("sms_codes", "code-and-phone-hmac-key")

    def with_policy(self, policy: SmsPolicy) -> SmsCodes:
        """The same store and keys under another policy (the one a flow version pins)."""
        twin = object.__new__(SmsCodes)
        twin.__dict__.update(self.__dict__)
        twin.policy = policy
        return twin

    def __repr__(self) -> str:
        return f"<SmsCodes {self.policy!r}>"

    def _mac(self, *parts: str) -> bytes:
        message = b"\x00".join(p.encode("utf-8") for p in parts)
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _binding(self, instance_id: str, purpose: str, phone: str) -> tuple[str, str]:
        """Return the code's key and the try counter's key. Raises Invalid on a bad phone."""
        number = mobile(phone)
        tag = self._mac("phone", number)[:16].hex()
        base = f"sms:{_key_part('instance id', instance_id)}:{_key_part('purpose', purpose)}" \
               f":{tag}"
        return base, base + ":tries"

    def _hash(self, key: str, code: str) -> bytes:
        return self._mac("code", key, code)

    def _clean(self, code: object) -> str | None:
        if not isinstance(code, str):
            return None
        text = code.translate(_FULL_WIDTH).strip()
        ok = len(text) == self.policy.length and text.isascii() and text.isdigit()
        return text if ok else None

    async def issue(self, instance_id: str, purpose: str, phone: str, *,
                    deliverable: bool = True) -> str:
        """Make a new code for the binding, replacing the previous one; return it.

        Its wrong-try count is kept. ``deliverable=False`` stores a decoy instead (see
        the module docstring): the code returned is never right, and the same work is
        done either way. Raises ``engine.Invalid`` if ``phone`` is not a mainland
        mobile number.
        """
        key, _ = self._binding(instance_id, purpose, phone)
        n = self.policy.length
        code = f"{secrets.randbelow(10**n):0{n}d}"
        digest = self._hash(key, code)
        if not deliverable:
            # Random bytes the size of an HMAC: no code's hash is ever equal to them.
            digest = secrets.token_bytes(len(digest))
        await self._ephemeral.put(key, digest, self.policy.ttl)
        return code

    async def exhausted(self, instance_id: str, purpose: str, phone: str) -> bool:
        """Tell whether the binding has had ``max_tries`` wrong tries (its codes are dead)."""
        _, tries_key = self._binding(instance_id, purpose, phone)
        return await self._tries(tries_key) >= self.policy.max_tries

    async def _tries(self, tries_key: str) -> int:
        raw = await self._ephemeral.get(tries_key)
        return int(raw) if raw is not None else 0

    async def verify(self, instance_id: str, purpose: str, phone: str,
                     code: str) -> str | None:
        """Check a code; return None if right (it is used up), else an error id.

        ``sms_code_dead``: ``max_tries`` wrong tries for this binding (answered from the
        last of them on, the right code included). ``sms_code_expired``: no code stored
        for this binding (expired, used, or never sent to this phone for this purpose
        and instance). ``sms_code_wrong``: another code, counted as a wrong try; text
        that is not a code at all (wrong length, not digits) is refused uncounted.
        Raises ``engine.Invalid`` if ``phone`` is not a mainland mobile number.
        """
        key, tries_key = self._binding(instance_id, purpose, phone)
        if await self._tries(tries_key) >= self.policy.max_tries:
            return SMS_CODE_DEAD
        left = await self._ephemeral.ttl(key)
        if left is None:
            return SMS_CODE_EXPIRED
        clean = self._clean(code)
        if clean is None:
            return SMS_CODE_WRONG
        stored = await self._ephemeral.take(key)
        if stored is None:
            return SMS_CODE_EXPIRED  # it expired just now, or a parallel check holds it
        if hmac.compare_digest(stored, self._hash(key, clean)):
            await self._ephemeral.delete(tries_key)
            return None
        if await self._ephemeral.incr(tries_key, self.policy.tries_ttl) >= self.policy.max_tries:
            return SMS_CODE_DEAD  # the code stays used up
        # only_new: a code issued meanwhile is the newer one and stays.
        await self._ephemeral.put(key, stored, min(left, self.policy.ttl), only_new=True)
        return SMS_CODE_WRONG

    async def prove(self, instance_id: str, purpose: str, phone: str,
                    code: str) -> str | None:
        """Check a code like ``verify``, unless the binding's phone is proven already.

        A right code proves the phone for ``ttl``: until then the binding passes whatever
        code comes with it. Return None if proven, else ``verify``'s error id.
        """
        key, _ = self._binding(instance_id, purpose, phone)
        proven = key + ":proven"
        if await self._ephemeral.get(proven) is not None:
            return None
        error_id = await self.verify(instance_id, purpose, phone, code)
        if error_id is None:
            await self._ephemeral.put(proven, b"1", self.policy.ttl)
        return error_id


# -- sending ------------------------------------------------------------------------


class SmsGateway(Protocol):
    """The SMS provider port (implemented in flows/providers/).

    ``send`` must be idempotent per ``idempotency_key`` (the outbox retries), and must
    never put the phone or the text into an exception message: the outbox stores
    failure messages.
    """

    async def send(self, phone: str, text: str, *, idempotency_key: str) -> None: ...


class SmsPayloadError(ValueError):
    """An ``sms`` outbox message that does not open (the message says why, never what)."""


def queue_sms(a: ActionInput, vault: Vault, phone: str, text: str, *,
              send: bool = True) -> None:
    """Queue ``text`` for ``phone`` in the step's outbox, sealed: sent after the commit.

    ``send=False`` queues a decoy, the same row to anyone who reads the outbox table,
    which ``deliver`` drops unsent: a step that must not tell whether a number is
    registered does the same work either way.
    """
    body: dict[str, Any] = {"phone": phone, "text": text}
    if not send:
        body["send"] = False
    sealed = vault.seal(OUTBOX_PURPOSE, json.dumps(body, ensure_ascii=False))
    a.emit(SMS_TOPIC, {"v": _OUTBOX_FORMAT, "to": mask_mobile(phone),
                       "sealed": base64.b64encode(sealed).decode("ascii")})


def _open(message: OutboxMessage, vault: Vault) -> tuple[str, str, bool]:
    payload = message.payload
    if not isinstance(payload, Mapping) or payload.get("v") != _OUTBOX_FORMAT \
            or not isinstance(payload.get("sealed"), str):
        raise SmsPayloadError(f"outbox message {message.id} is not a sealed SMS (format "
                              f"{_OUTBOX_FORMAT})")
    try:
        blob = base64.b64decode(payload["sealed"], validate=True)
    except (binascii.Error, ValueError):
        raise SmsPayloadError(f"outbox message {message.id}: sealed is not base64") from None
    body = json.loads(vault.open(OUTBOX_PURPOSE, blob))
    return str(body["phone"]), str(body["text"]), body.get("send", True) is not False


async def deliver(message: OutboxMessage, vault: Vault, gateway: SmsGateway) -> None:
    """Open a queued SMS and hand it to the gateway, keyed by the message's idempotency key;
    a decoy is dropped."""
    phone, text, send = _open(message, vault)
    if not send:
        log.debug("sms_decoy_dropped", message_id=message.id)
        return
    await gateway.send(phone, text, idempotency_key=message.idempotency_key)
    log.info("sms_delivered", message_id=message.id, to=mask_mobile(phone))


def sender(vault: Vault, gateway: SmsGateway) -> Callable[[OutboxMessage], Awaitable[None]]:
    """Return the outbox sender for topic ``sms``: ``registry.sender("sms")(sender(v, g))``."""

    async def send_sms(message: OutboxMessage) -> None:
        await deliver(message, vault, gateway)

    return send_sms


# -- actions ------------------------------------------------------------------------


def codes_for(a: ActionInput) -> SmsCodes:
    """The SMS codes under the policy pinned with the flow's definition version."""
    codes = a.service(SmsCodes)
    pinned = a.policies.get("sms")
    return codes.with_policy(SmsPolicy.from_mapping(pinned)) if pinned is not None else codes


# What flows.yaml may say about the actions that send and check codes (docs/flows.md,
# "Parameters"); the platform's other code actions take the same.
PHONE = Param("phone", "field", "The field of this step's form that holds the mobile number.",
              default="mobile")
CODE = Param("code", "field", "The field of this step's form that holds the code typed.",
             default="sms_code")
PURPOSE = Param("purpose", "string", "What the code is for: a code sent for one purpose "
                "never passes a check for another. Without it, the name of the state the "
                "action runs in (send and check from the same state).", default=None,
                pattern=r"[a-z][a-z0-9_]*")

# The refusals, under the field that holds the phone or the code.
BAD_PHONE = Refusal(*MOBILE_INVALID, param="phone")
CODE_REFUSALS = {error_id: Refusal(error_id, zh, en, param="code")
                 for error_id, (zh, en) in MESSAGES.items()}
DEAD_PHONE = Refusal(SMS_CODE_DEAD, *MESSAGES[SMS_CODE_DEAD], param="phone")


def phone_in(a: ActionInput, param: str = "phone") -> str:
    """The mobile number in the field the parameter names: typed in this step, or recorded
    (a locked field's sealed value, opened); refused under that field if it is none."""
    try:
        return mobile(a.value(a.params[param]))
    except Invalid:
        raise ValidationFailed([BAD_PHONE.error({"phone": a.params[param]})]) from None


def purpose_of(a: ActionInput) -> str:
    """The code's purpose: the parameter, else the state the action runs in."""
    purpose: str | None = a.params.get("purpose")
    return purpose or a.state


async def send_sms_code(a: ActionInput) -> dict[str, Any]:
    """Action: send a code to the phone (field ``phone``) for ``purpose``; the fact names
    the phone masked."""
    codes = codes_for(a)
    phone = phone_in(a)
    purpose = purpose_of(a)
    if await codes.exhausted(a.instance_id, purpose, phone):
        log.info("sms_code_refused", reason=SMS_CODE_DEAD, to=mask_mobile(phone))
        raise ValidationFailed([DEAD_PHONE.error(a.params)])
    code = await codes.issue(a.instance_id, purpose, phone)
    queue_sms(a, a.service(Vault), phone, codes.policy.text(code))
    log.info("sms_code_issued", to=mask_mobile(phone))
    return {"sent_to": mask_mobile(phone)}


async def send_code_unrevealing(a: ActionInput, phone: str, *,
                                registered: bool) -> dict[str, Any]:
    """Send a code to a registered number and a decoy to any other (SPEC 3, 7): the same
    work, the same fact and the same answer either way. A dead binding gets neither,
    silently; the check then answers ``sms_code_dead`` either way. The purpose is the
    action's (``purpose_of``)."""
    codes = codes_for(a)
    purpose = purpose_of(a)
    if not await codes.exhausted(a.instance_id, purpose, phone):
        code = await codes.issue(a.instance_id, purpose, phone, deliverable=registered)
        queue_sms(a, a.service(Vault), phone, codes.policy.text(code), send=registered)
    return {"sent_to": mask_mobile(phone)}


async def check_code(a: ActionInput, phone: str) -> None:
    """Refuse the step, under the ``code`` field, unless its code is the one sent to
    ``phone`` for the action's purpose; a right code is used up (SmsCodes.verify)."""
    error_id = await codes_for(a).verify(a.instance_id, purpose_of(a), phone,
                                        str(a.input.get(a.params["code"]) or ""))
    if error_id is not None:
        log.info("sms_code_refused", reason=error_id, to=mask_mobile(phone))
        raise ValidationFailed([CODE_REFUSALS[error_id].error(a.params)])


async def check_sms_code(a: ActionInput) -> dict[str, Any]:
    """Action: refuse the step unless the code (field ``code``) is the one sent to the phone
    (field ``phone``) for ``purpose`` (or was, in a step refused after the code was checked)."""
    return await prove_phone(a)


async def prove_phone(a: ActionInput) -> dict[str, Any]:
    """Refuse the step unless the code in the ``code`` parameter's field proves the phone in
    the ``phone`` parameter's field for the action's purpose; return the fact
    ``check_sms_code`` gives. A proven phone stays proven for the code's lifetime."""
    codes = codes_for(a)
    phone = phone_in(a)
    error_id = await codes.prove(a.instance_id, purpose_of(a), phone,
                                 a.input.get(a.params["code"], ""))
    if error_id is not None:
        log.info("sms_code_refused", reason=error_id, to=mask_mobile(phone))
        raise ValidationFailed([CODE_REFUSALS[error_id].error(a.params)])
    return {"verified": mask_mobile(phone)}


SENT_TO = {"sent_to": "The phone number the code went to, masked (138****8000)."}
VERIFIED = {"verified": "The phone number the code proved, masked (138****8000)."}


def register(registry: Registry) -> None:
    registry.action("send_sms_code", params=[PHONE, PURPOSE], results=SENT_TO,
                    refusals=[BAD_PHONE, DEAD_PHONE])(send_sms_code)
    registry.action("check_sms_code", params=[PHONE, CODE, PURPOSE], results=VERIFIED,
                    refusals=[BAD_PHONE, *CODE_REFUSALS.values()])(check_sms_code)
