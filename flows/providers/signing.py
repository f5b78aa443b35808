"""Signed provider callbacks: HMAC-SHA256 over timestamp, event id and body.

The signature covers ``f"{timestamp}.{event_id}.".encode() + body`` under a shared
secret and travels in three headers::

    X-Signature: v1=<hex>          (several, comma-separated, while a secret rotates)
    X-Timestamp: <unix seconds>
    X-Event-Id:  <the event's id>

``CallbackVerifier.verify`` checks them in an order that matters: first the signature
(constant-time), then the timestamp, and only then does it remember the event id, so a
forged request can neither pass nor burn the id of a real event still to come.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar

from engine import Clock, EngineError
from flows.ports import Ephemeral

SIGNATURE = "X-Signature"
TIMESTAMP = "X-Timestamp"
EVENT_ID = "X-Event-Id"

_SCHEME = "v1"
_EVENT_ID = re.compile(r"^[\x21-\x7e]{1,200}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


class CallbackError(EngineError, PermissionError):
    """A callback that is not accepted."""

    status: ClassVar[int] = 401
    error_id: ClassVar[str] = "callback_rejected"
    zh: ClassVar[str] = "回调未被接受"
    en: ClassVar[str] = "The callback was not accepted"


class CallbackSignatureInvalid(CallbackError):
    status = 401
    error_id = "callback_signature_invalid"
    zh = "回调签名缺失或无效"
    en = "The callback's signature is missing or invalid"


class CallbackStale(CallbackError):
    status = 401
    error_id = "callback_stale"
    zh = "回调时间戳超出允许范围"
    en = "The callback's timestamp is too far from the current time"


class CallbackReplayed(CallbackError):
    status = 409
    error_id = "callback_replayed"
    zh = "该回调事件已处理过"
    en = "This callback event was already received"


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise ValueError("the callback secret must not be empty")
    return key


def signature(secret: str | bytes, timestamp: int | str, event_id: str, body: bytes) -> str:
    """Return the hex HMAC-SHA256 of one callback."""
    message = f"{timestamp}.{event_id}.".encode() + body
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """Encode a callback body as compact UTF-8 JSON: the exact bytes that are signed."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


class CallbackSigner:
    """The sending side, used by the sandbox providers (and by tests)."""

    def __init__(self, secret: str | bytes, clock: Clock) -> None:
        self._secret = _key(secret)
        self._clock = clock

    def headers(self, event_id: str, body: bytes) -> dict[str, str]:
        """Return the headers that sign ``body`` as event ``event_id`` now."""
        ts = int(self._clock.now().timestamp())
        return {SIGNATURE: f"{_SCHEME}={signature(self._secret, ts, event_id, body)}",
                TIMESTAMP: str(ts), EVENT_ID: event_id}


class CallbackVerifier:
    """The receiving side: signature, freshness, then once-only event ids.

    ``previous_secrets`` are also accepted, so the secret can be rotated without
    losing callbacks in flight.
    """

    def __init__(self, secret: str | bytes, ephemeral: Ephemeral, clock: Clock,
                 tolerance: timedelta = timedelta(minutes=5), *,
                 previous_secrets: Sequence[str | bytes] = ()) -> None:
        self._secrets = [_key(secret), *(_key(s) for s in previous_secrets)]
        self._ephemeral = ephemeral
        self._clock = clock
        self.tolerance = tolerance
        # Twice the tolerance: a replay after that is refused as stale anyway.
        self.remember = 2 * tolerance

    async def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Accept the callback or raise a CallbackError; accepting remembers its event id."""
        event_id = self._authentic(headers, body)
        if not await self._ephemeral.put(self._seen_key(event_id), b"1", self.remember,
                                         only_new=True):
            raise CallbackReplayed(f"event {event_id} was already received")

    async def verify_json(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """Verify, then return the body as a JSON object whose event_id is the header's."""
        event_id = self._authentic(headers, body)
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeError, ValueError):
            raise CallbackSignatureInvalid("the signed body is not JSON") from None
        if not isinstance(payload, dict) or payload.get("event_id") != event_id:
            raise CallbackSignatureInvalid("the body's event_id is not the signed one")
        await self.verify(headers, body)
        return payload

    async def forget(self, event_id: str) -> None:
        """Let this event be delivered again: call it when handling an accepted one failed."""
        await self._ephemeral.delete(self._seen_key(event_id))

    @staticmethod
    def _seen_key(event_id: str) -> str:
        return f"callback:event:{event_id}"

    def _authentic(self, headers: Mapping[str, str], body: bytes) -> str:
        """Check signature and timestamp; return the event id. Remembers nothing."""
        lower = {k.lower(): v for k, v in headers.items()}
        given = lower.get(SIGNATURE.lower(), "")
        ts = lower.get(TIMESTAMP.lower(), "").strip()
        event_id = lower.get(EVENT_ID.lower(), "").strip()
        if not given or not ts or not event_id:
            raise CallbackSignatureInvalid(
                f"{SIGNATURE}, {TIMESTAMP} and {EVENT_ID} are all required")
        if not _TIMESTAMP.match(ts) or not _EVENT_ID.match(event_id):
            raise CallbackSignatureInvalid(f"{TIMESTAMP} or {EVENT_ID} is malformed")
        candidates: list[bytes] = []
        for part in given.split(","):
            scheme, _, value = part.strip().partition("=")
            if scheme == _SCHEME and _HEX.match(value):
                candidates.append(value.encode())
        expected = [signature(s, ts, event_id, body).encode() for s in self._secrets]
        # Compare every pair, so the time taken says nothing about which one was close.
        matched = False
        for candidate in candidates:
            for exp in expected:
                matched |= hmac.compare_digest(candidate, exp)
        if not matched:
            raise CallbackSignatureInvalid("no v1 signature matches")
        skew = abs(self._clock.now().timestamp() - int(ts))
        if skew > self.tolerance.total_seconds():
            raise CallbackStale(f"the timestamp is {int(skew)} s away from now")
        return event_id
