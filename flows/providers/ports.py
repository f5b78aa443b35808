"""The ports to the outside services, their value types and the errors they raise.

Every call that changes something at a provider carries an ``idempotency_key``: the
action passes its own (``ActionInput.idempotency_key``), so a retried step never sends a
second SMS, opens a second face session or makes a second deposit.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import attrs

from engine import EngineError


@attrs.frozen
class Branch:
    """One bank branch of the directory; ``code`` is its 12-digit CNAPS-like number."""

    code: str
    name: str
    bank: str
    city: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "name": self.name, "bank": self.bank, "city": self.city}


@attrs.frozen
class FaceSession:
    """A face-verification session: the user scans ``qr_url``; the result is a callback."""

    session_id: str
    qr_url: str


class SmsGateway(Protocol):
    async def send(self, phone: str, text: str, *, idempotency_key: str) -> None:
        """Send one text message; the same key again sends nothing more."""
        ...


class RealNameRegistry(Protocol):
    async def check(self, name: str, id_number: str, *, idempotency_key: str) -> bool:
        """Answer whether this name belongs to this resident ID number."""
        ...


class FaceVerifier(Protocol):
    async def create_session(self, name: str, id_number: str, *, callback_url: str,
                             idempotency_key: str) -> FaceSession:
        """Open a session; its pass/fail arrives later as a signed callback to callback_url.

        The callback body is ``{event_id, session_id, result: "pass" | "fail", ...}``.
        The same key again returns the same session.
        """
        ...


class PaymentProvider(Protocol):
    async def send_deposit(self, account_number: str, branch_code: str, *,
                           callback_url: str, idempotency_key: str) -> str:
        """Send a random 1-99 fen micro-deposit and return its deposit id.

        The provider reports the credit as a signed callback to callback_url:
        ``{event_id, deposit_id, status: "credited", amount_fen}``. The same key again
        returns the same deposit id and moves no more money.
        """
        ...


class BranchDirectory(Protocol):
    async def search(self, text: str, limit: int = 20) -> list[Branch]:
        """Find branches by parts of their name ("工商 海淀"), best match first."""
        ...

    async def get(self, code: str) -> Branch | None:
        """Return the branch with this code, or None: how a flow refuses free text."""
        ...


# -- errors ---------------------------------------------------------------------------


class ProviderError(EngineError, RuntimeError):
    """A provider could not do what was asked. Never a 500: the fault is not ours."""

    status: ClassVar[int] = 502
    error_id: ClassVar[str] = "provider_error"
    zh: ClassVar[str] = "外部服务出错，请稍后再试"
    en: ClassVar[str] = "An external service failed; try again later"

    def __init__(self, provider: str, detail: str | None = None, *,
                 http_status: int | None = None) -> None:
        super().__init__(detail, provider=provider)
        self.provider = provider
        self.http_status = http_status  # the provider's answer, kept out of the problem body


class ProviderUnavailable(ProviderError, ConnectionError):
    """Unreachable, 5xx or 429: retrying later (with the same key) may work."""

    status = 503
    error_id = "provider_unavailable"
    zh = "外部服务暂不可用，请稍后再试"
    en = "An external service is unavailable; try again later"


class ProviderTimeout(ProviderUnavailable, TimeoutError):
    status = 503
    error_id = "provider_timeout"
    zh = "外部服务响应超时，请稍后再试"
    en = "An external service did not answer in time; try again later"


class ProviderRefused(ProviderError, ValueError):
    """The provider refused the request (4xx): a configuration or integration fault."""

    status = 502
    error_id = "provider_refused"
    zh = "外部服务拒绝了请求，请联系客服"
    en = "An external service refused the request; contact the service desk"


class ProviderBadResponse(ProviderError, ValueError):
    """The provider answered 2xx with a body we cannot use."""

    status = 502
    error_id = "provider_bad_response"
    zh = "外部服务返回了无法识别的结果，请稍后再试"
    en = "An external service gave an answer we cannot read; try again later"
