"""Sandbox providers: behave like the real services, for development and tests.

All their state lives in the Ephemeral store (Redis), so every server process sees the
same inbox, sessions and bank statements. Results come back the way the real services
send them: as signed callbacks over real HTTP (``CallbackSender``). The developer plays
the outside world on the pages of ``web/sandbox.py``: reads the SMS inbox, presses
Pass or Fail on the face "phone" page, reads the amount on the bank statement, marks
name/ID pairs as mismatching, and switches a provider "down" to see the failure path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import unicodedata
from collections.abc import Coroutine, Iterable
from datetime import timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import attrs
import structlog

from engine import Clock, EngineError
from flows.identity import mask_mobile, mask_resident_id
from flows.ports import Ephemeral
from flows.providers.http import HttpClient
from flows.providers.ports import (
    BranchDirectory,
    FaceSession,
    ProviderRefused,
    ProviderUnavailable,
)
from flows.providers.signing import CallbackSigner, encode_body

log = structlog.get_logger("flows.providers.sandbox")

# Long enough for the three days a deposit is valid, and then some.
SANDBOX_TTL = timedelta(days=7)
INBOX_SIZE = 500
STATEMENT_SIZE = 200
# The providers a developer can switch "down"; the branch directory is a file, not a service.
SWITCHABLE = ("sms", "realname", "face", "payment")

FaceResult = Literal["pass", "fail"]


class SandboxError(EngineError):
    """Refusals of the sandbox pages and API (development only)."""

    status: ClassVar[int] = 400
    error_id: ClassVar[str] = "sandbox_error"
    zh: ClassVar[str] = "沙箱请求有误"
    en: ClassVar[str] = "The sandbox cannot do this"


class SandboxNotFound(SandboxError, LookupError):
    status = 404
    error_id = "sandbox_not_found"
    zh = "沙箱中没有该记录（可能已过期）"
    en = "The sandbox has no such record (it may have expired)"


class SandboxFaceFinished(SandboxError, ValueError):
    status = 409
    error_id = "sandbox_face_finished"
    zh = "该人脸核验会话已有结果"
    en = "This face session already has a different result"


class SandboxBadRequest(SandboxError, ValueError):
    status = 400
    error_id = "sandbox_bad_request"
    zh = "沙箱请求参数有误"
    en = "The sandbox request is not valid"


def _digest(key: str) -> str:
    """Bound a caller's key to a fixed-size Redis key."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _load(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else None


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise SandboxBadRequest(f"callback_url must be an http(s) URL, not {url[:100]!r}")
    return url


# -- failures on demand, callbacks ------------------------------------------------------


class Switches:
    """A provider switched "down" answers ProviderUnavailable, in every process."""

    def __init__(self, ephemeral: Ephemeral) -> None:
        self._ephemeral = ephemeral

    async def is_down(self, provider: str) -> bool:
        return await self._ephemeral.get(f"sandbox:down:{provider}") is not None

    async def set_down(self, provider: str, down: bool) -> None:
        if provider not in SWITCHABLE:
            raise SandboxBadRequest(f"no provider {provider!r}")
        if down:
            await self._ephemeral.put(f"sandbox:down:{provider}", b"1", SANDBOX_TTL)
        else:
            await self._ephemeral.delete(f"sandbox:down:{provider}")

    async def down(self) -> dict[str, bool]:
        return {p: await self.is_down(p) for p in SWITCHABLE}

    async def check(self, provider: str) -> None:
        if await self.is_down(provider):
            raise ProviderUnavailable(provider, "switched down on the sandbox page")


@attrs.frozen
class Delivery:
    """How one callback went: the receiver's HTTP status, or why there was none."""

    url: str
    at: str
    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def final(self) -> bool:
        """No point sending again: accepted, or refused for good (4xx, e.g. a replay)."""
        return self.status is not None and self.status < 500

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


class CallbackSender:
    """Sign a payload (its ``event_id`` is the event's) and POST it over real HTTP."""

    def __init__(self, client: HttpClient, signer: CallbackSigner, clock: Clock,
                 timeout: float = 5.0) -> None:
        self.client = client
        self.signer = signer
        self.clock = clock
        self.timeout = timeout

    async def deliver(self, url: str, payload: dict[str, Any]) -> Delivery:
        body = encode_body(payload)
        headers = {"Content-Type": "application/json; charset=utf-8",
                   **self.signer.headers(str(payload["event_id"]), body)}
        at = self.clock.now().isoformat()
        try:
            status, _ = await asyncio.wait_for(
                self.client.post_json(url, body, headers, timeout=self.timeout),
                timeout=self.timeout + 1.0)
        except TimeoutError:
            return Delivery(url, at, error="timed out")
        except Exception as exc:  # noqa: BLE001 - a failed delivery is reported, not raised
            return Delivery(url, at, error=type(exc).__name__)
        log.info("sandbox_callback_delivered", event_id=payload["event_id"], status=status)
        return Delivery(url, at, status=status)


# -- SMS ----------------------------------------------------------------------------------


class SandboxSms:
    """Messages go to an inbox (the development one: it shows phone and text in full)."""

    def __init__(self, ephemeral: Ephemeral, clock: Clock, switches: Switches) -> None:
        self._ephemeral = ephemeral
        self._clock = clock
        self._switches = switches

    async def send(self, phone: str, text: str, *, idempotency_key: str) -> None:
        await self._switches.check("sms")
        first = await self._ephemeral.put(f"sandbox:sms:key:{_digest(idempotency_key)}",
                                          b"1", SANDBOX_TTL, only_new=True)
        if not first:
            return
        message = {"id": secrets.token_hex(8), "phone": phone, "text": text,
                   "at": self._clock.now().isoformat(), "idempotency_key": idempotency_key}
        await self._ephemeral.push("sandbox:sms:inbox", encode_body(message),
                                   keep=INBOX_SIZE, ttl=SANDBOX_TTL)
        log.info("sandbox_sms_sent", phone=mask_mobile(phone), message_id=message["id"])

    async def inbox(self, phone: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest messages first, optionally only those to one phone."""
        messages = [m for raw in await self._ephemeral.items("sandbox:sms:inbox", INBOX_SIZE)
                    if (m := _load(raw)) is not None]
        if phone:
            messages = [m for m in messages if m.get("phone") == phone]
        return messages[:limit]


# -- real-name registry -------------------------------------------------------------


def _name(name: str) -> str:
    return unicodedata.normalize("NFC", name).strip()


def _id(id_number: str) -> str:
    return id_number.strip().upper()


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """Parse "name:id, name:id" (also ; or new lines between pairs)."""
    pairs = []
    for part in text.replace(";", ",").replace("\n", ",").split(","):
        name, sep, id_number = part.strip().rpartition(":")
        if sep and _name(name) and _id(id_number):
            pairs.append((_name(name), _id(id_number)))
        elif part.strip():
            raise ValueError(f"{part.strip()!r} is not name:id")
    return pairs


def parse_ids(text: str) -> list[str]:
    return [_id(p) for p in text.replace(";", ",").replace("\n", ",").split(",") if p.strip()]


@attrs.frozen
class RegistryConfig:
    """Which answers are "no": these name/ID pairs, and every name with these IDs."""

    pairs: tuple[tuple[str, str], ...] = ()
    ids: tuple[str, ...] = ()

    def matches(self, name: str, id_number: str) -> bool:
        return (_id(id_number) not in self.ids
                and (_name(name), _id(id_number)) not in self.pairs)

    @staticmethod
    def token(*parts: str) -> str:
        """Name an entry without showing it: what the page's remove buttons post."""
        return _digest("\x1f".join(parts))

    def encode(self) -> bytes:
        return encode_body({"pairs": [list(p) for p in self.pairs], "ids": list(self.ids)})

    @classmethod
    def decode(cls, raw: bytes) -> RegistryConfig:
        data = json.loads(raw)
        return cls(pairs=tuple((str(n), str(i)) for n, i in data.get("pairs", [])),
                   ids=tuple(str(i) for i in data.get("ids", [])))


class SandboxRealName:
    """Every pair matches unless configured otherwise (at start, or on the sandbox page)."""

    _KEY = "sandbox:registry"

    def __init__(self, ephemeral: Ephemeral, switches: Switches,
                 mismatch_pairs: Iterable[tuple[str, str]] = (),
                 mismatch_ids: Iterable[str] = ()) -> None:
        self._ephemeral = ephemeral
        self._switches = switches
        self.initial = RegistryConfig(
            pairs=tuple(dict.fromkeys((_name(n), _id(i)) for n, i in mismatch_pairs)),
            ids=tuple(dict.fromkeys(_id(i) for i in mismatch_ids)))

    async def check(self, name: str, id_number: str, *, idempotency_key: str) -> bool:
        await self._switches.check("realname")
        return (await self.config()).matches(name, id_number)

    async def config(self) -> RegistryConfig:
        """The configuration in force: the stored one, else the one given at start."""
        raw = await self._ephemeral.get(self._KEY)
        if raw is None:
            await self._ephemeral.put(self._KEY, self.initial.encode(), SANDBOX_TTL,
                                      only_new=True)
            raw = await self._ephemeral.get(self._KEY)
        return self.initial if raw is None else RegistryConfig.decode(raw)

    async def _save(self, config: RegistryConfig) -> RegistryConfig:
        # Read-modify-write without a lock: two developers editing at once is not a case.
        await self._ephemeral.put(self._KEY, config.encode(), SANDBOX_TTL)
        return config

    async def add_pair(self, name: str, id_number: str) -> RegistryConfig:
        pair = (_name(name), _id(id_number))
        if not pair[0] or not pair[1]:
            raise SandboxBadRequest("both name and ID number are needed")
        c = await self.config()
        return await self._save(attrs.evolve(c, pairs=tuple(dict.fromkeys([*c.pairs, pair]))))

    async def remove_pair(self, name: str, id_number: str) -> RegistryConfig:
        pair = (_name(name), _id(id_number))
        c = await self.config()
        return await self._save(attrs.evolve(c, pairs=tuple(p for p in c.pairs if p != pair)))

    async def add_id(self, id_number: str) -> RegistryConfig:
        if not _id(id_number):
            raise SandboxBadRequest("an ID number is needed")
        c = await self.config()
        return await self._save(attrs.evolve(c, ids=tuple(dict.fromkeys([*c.ids,
                                                                          _id(id_number)]))))

    async def remove_id(self, id_number: str) -> RegistryConfig:
        c = await self.config()
        return await self._save(attrs.evolve(c, ids=tuple(i for i in c.ids
                                                          if i != _id(id_number))))

    async def reset(self) -> RegistryConfig:
        return await self._save(self.initial)


# -- face verification ------------------------------------------------------------------


class SandboxFace:
    """Sessions whose result a developer chooses on the sandbox phone page."""

    def __init__(self, ephemeral: Ephemeral, clock: Clock, switches: Switches,
                 sender: CallbackSender, base_url: str) -> None:
        self._ephemeral = ephemeral
        self._clock = clock
        self._switches = switches
        self._sender = sender
        self.base_url = base_url.rstrip("/")

    def qr_url(self, session_id: str) -> str:
        return f"{self.base_url}/sandbox/face/{session_id}"

    async def create_session(self, name: str, id_number: str, *, callback_url: str,
                             idempotency_key: str) -> FaceSession:
        await self._switches.check("face")
        _check_url(callback_url)
        new_id = "fs_" + secrets.token_urlsafe(16)
        key = f"sandbox:face:key:{_digest(idempotency_key)}"
        if not await self._ephemeral.put(key, new_id.encode(), SANDBOX_TTL, only_new=True):
            existing = await self._ephemeral.get(key)
            if existing is not None:
                return FaceSession(existing.decode(), self.qr_url(existing.decode()))
            await self._ephemeral.put(key, new_id.encode(), SANDBOX_TTL)
        # Only the masked ID is kept: the page shows no more, and the callback needs none.
        session = {"session_id": new_id, "name": name,
                   "id_masked": mask_resident_id(id_number), "callback_url": callback_url,
                   "created_at": self._clock.now().isoformat()}
        await self._ephemeral.put(f"sandbox:face:session:{new_id}", encode_body(session),
                                  SANDBOX_TTL)
        log.info("sandbox_face_session_created", session_id=new_id)
        return FaceSession(new_id, self.qr_url(new_id))

    async def session(self, session_id: str) -> dict[str, Any] | None:
        """The session with its result and last delivery, if any."""
        session = _load(await self._ephemeral.get(f"sandbox:face:session:{session_id}"))
        if session is None:
            return None
        session["event"] = _load(await self._ephemeral.get(f"sandbox:face:result:{session_id}"))
        session["delivery"] = _load(
            await self._ephemeral.get(f"sandbox:face:delivery:{session_id}"))
        return session

    async def complete(self, session_id: str, result: str) -> Delivery:
        """Decide the session and send its signed callback; pressing again resends it."""
        if result not in ("pass", "fail"):
            raise SandboxBadRequest("result must be pass or fail")
        session = await self.session(session_id)
        if session is None:
            raise SandboxNotFound(f"no face session {session_id}")
        event = {"event_id": "evt_" + secrets.token_hex(12), "session_id": session_id,
                 "result": result, "completed_at": self._clock.now().isoformat()}
        key = f"sandbox:face:result:{session_id}"
        if not await self._ephemeral.put(key, encode_body(event), SANDBOX_TTL, only_new=True):
            event = _load(await self._ephemeral.get(key)) or event
            if event["result"] != result:
                raise SandboxFaceFinished(f"the session already ended with {event['result']}")
        delivery = await self._sender.deliver(session["callback_url"], event)
        await self._ephemeral.put(f"sandbox:face:delivery:{session_id}",
                                  encode_body(delivery.as_dict()), SANDBOX_TTL)
        return delivery


# -- payment (micro-deposit) ------------------------------------------------------------


class SandboxPayment:
    """Deposits credited after a delay, on a statement page, reported by signed callback."""

    def __init__(self, ephemeral: Ephemeral, clock: Clock, switches: Switches,
                 sender: CallbackSender, *, delay: timedelta = timedelta(),
                 directory: BranchDirectory | None = None, retries: int = 3,
                 retry_after: float = 1.0) -> None:
        self._ephemeral = ephemeral
        self._clock = clock
        self._switches = switches
        self._sender = sender
        self._directory = directory
        self.delay = delay
        self.retries = retries
        self.retry_after = retry_after
        self._tasks: set[asyncio.Task[None]] = set()

    async def send_deposit(self, account_number: str, branch_code: str, *,
                           callback_url: str, idempotency_key: str) -> str:
        await self._switches.check("payment")
        _check_url(callback_url)
        if self._directory is not None and await self._directory.get(branch_code) is None:
            raise ProviderRefused("payment", "the sandbox bank knows no such branch code")
        new_id = "dep_" + secrets.token_hex(10)
        key = f"sandbox:pay:key:{_digest(idempotency_key)}"
        if not await self._ephemeral.put(key, new_id.encode(), SANDBOX_TTL, only_new=True):
            existing = await self._ephemeral.get(key)
            if existing is not None:
                return existing.decode()
            await self._ephemeral.put(key, new_id.encode(), SANDBOX_TTL)
        deposit = {"deposit_id": new_id, "account_number": account_number,
                   "branch_code": branch_code, "amount_fen": secrets.randbelow(99) + 1,
                   "callback_url": callback_url, "event_id": "evt_" + secrets.token_hex(12),
                   "status": "pending", "created_at": self._clock.now().isoformat()}
        await self._save(deposit)
        log.info("sandbox_deposit_sent", deposit_id=new_id)
        self._spawn(self._credit(new_id))
        return new_id

    async def deposit(self, deposit_id: str) -> dict[str, Any] | None:
        return _load(await self._ephemeral.get(f"sandbox:pay:deposit:{deposit_id}"))

    async def statement(self, account_number: str) -> list[dict[str, Any]]:
        """Credits to this account, newest first."""
        return [e for raw in await self._ephemeral.items(f"sandbox:bank:{account_number}",
                                                         STATEMENT_SIZE)
                if (e := _load(raw)) is not None]

    async def drain(self) -> None:
        """Wait until every deposit started here is credited and reported (for tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _save(self, deposit: dict[str, Any]) -> None:
        await self._ephemeral.put(f"sandbox:pay:deposit:{deposit['deposit_id']}",
                                  encode_body(deposit), SANDBOX_TTL)

    async def _credit(self, deposit_id: str) -> None:
        try:
            if self.delay > timedelta():
                await asyncio.sleep(self.delay.total_seconds())
            await self._credit_now(deposit_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # a background task has nobody to raise to
            log.exception("sandbox_deposit_failed", deposit_id=deposit_id)

    async def _credit_now(self, deposit_id: str) -> None:
        deposit = await self.deposit(deposit_id)
        if deposit is None:
            return
        if await self._ephemeral.put(f"sandbox:pay:credited:{deposit_id}", b"1", SANDBOX_TTL,
                                     only_new=True):
            deposit.update(status="credited", credited_at=self._clock.now().isoformat())
            await self._save(deposit)
            line = {"deposit_id": deposit_id, "amount_fen": deposit["amount_fen"],
                    "branch_code": deposit["branch_code"], "at": deposit["credited_at"],
                    "memo": "小额打款验证 / verification deposit"}
            await self._ephemeral.push(f"sandbox:bank:{deposit['account_number']}",
                                       encode_body(line), keep=STATEMENT_SIZE, ttl=SANDBOX_TTL)
        event = {"event_id": deposit["event_id"], "deposit_id": deposit_id,
                 "status": "credited", "amount_fen": deposit["amount_fen"],
                 "credited_at": deposit["credited_at"]}
        for attempt in range(self.retries + 1):
            delivery = await self._sender.deliver(deposit["callback_url"], event)
            deposit["delivery"] = delivery.as_dict()
            await self._save(deposit)
            if delivery.final:
                return
            if attempt < self.retries:
                await asyncio.sleep(self.retry_after * 2**attempt)
        log.warning("sandbox_deposit_callback_undelivered", deposit_id=deposit_id)


# -- the bundle -------------------------------------------------------------------------


@attrs.define
class Sandbox:
    """Every sandbox provider, over one Ephemeral store; the sandbox pages use these."""

    sms: SandboxSms
    realname: SandboxRealName
    face: SandboxFace
    payment: SandboxPayment
    branches: BranchDirectory
    switches: Switches

    async def aclose(self) -> None:
        await self.payment.aclose()


def build_sandbox(*, ephemeral: Ephemeral, http_client: HttpClient, clock: Clock,
                  signer: CallbackSigner, base_url: str, branches: BranchDirectory,
                  mismatch_pairs: Iterable[tuple[str, str]] = (),
                  mismatch_ids: Iterable[str] = (),
                  deposit_delay: timedelta = timedelta(),
                  callback_timeout: float = 5.0) -> Sandbox:
    switches = Switches(ephemeral)
    sender = CallbackSender(http_client, signer, clock, timeout=callback_timeout)
    return Sandbox(
        sms=SandboxSms(ephemeral, clock, switches),
        realname=SandboxRealName(ephemeral, switches, mismatch_pairs, mismatch_ids),
        face=SandboxFace(ephemeral, clock, switches, sender, base_url),
        payment=SandboxPayment(ephemeral, clock, switches, sender, delay=deposit_delay,
                               directory=branches),
        branches=branches,
        switches=switches,
    )


__all__ = [
    "CallbackSender",
    "Delivery",
    "RegistryConfig",
    "Sandbox",
    "SandboxBadRequest",
    "SandboxError",
    "SandboxFace",
    "SandboxFaceFinished",
    "SandboxNotFound",
    "SandboxPayment",
    "SandboxRealName",
    "SandboxSms",
    "Switches",
    "build_sandbox",
    "parse_ids",
    "parse_pairs",
]
