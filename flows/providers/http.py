"""The providers over HTTP: JSON requests to a configurable base URL with an API key.

The wire protocol (the sandbox serves the same one under ``/sandbox/api/``)::

    POST {SMS_URL}/messages          {phone, text}                       -> 2xx
    POST {REALNAME_URL}/checks       {name, id_number}                   -> {match: bool}
    POST {FACE_URL}/sessions         {name, id_number, callback_url}     -> {session_id, qr_url}
    POST {PAYMENT_URL}/deposits      {account_number, branch_code, callback_url}
                                                                         -> {deposit_id}
    POST {BRANCHES_URL}/search       {q, limit}                          -> {branches: [...]}
    POST {BRANCHES_URL}/get          {code}                              -> {branch: {...}|null}

with ``Authorization: Bearer <API key>`` and ``Idempotency-Key: <key>``. Everything that
goes wrong becomes a ``ProviderError`` (503 for unreachable, timed out, 5xx or 429;
502 for a refusal or an unreadable answer), never a raw exception.

``flows`` has no HTTP library of its own: the composition root injects an
``HttpClient`` (``web/httpclient.py`` implements it on aiohttp).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

import attrs
import structlog

from flows.providers.ports import (
    Branch,
    FaceSession,
    ProviderBadResponse,
    ProviderError,
    ProviderRefused,
    ProviderTimeout,
    ProviderUnavailable,
)
from flows.providers.signing import encode_body

log = structlog.get_logger("flows.providers")


class HttpClient(Protocol):
    async def post_json(self, url: str, body: bytes, headers: Mapping[str, str], *,
                        timeout: float,  # noqa: ASYNC109 - the HTTP client's own limit
                        ) -> tuple[int, dict[str, Any]]:
        """POST ``body`` (JSON, already encoded so it can be signed) and read the answer.

        Returns the status and the answer's JSON object ({} when the answer is not a
        JSON object). Raises TimeoutError when ``timeout`` seconds pass and OSError
        (ConnectionError) when the server cannot be reached.
        """
        ...


@attrs.frozen
class Endpoint:
    """One provider's base URL, API key and timeout (seconds)."""

    provider: str
    url: str
    api_key: str
    timeout: float = 5.0

    async def call(self, client: HttpClient, path: str, payload: Mapping[str, Any], *,
                   idempotency_key: str | None = None) -> dict[str, Any]:
        """POST payload to url + path; return the 2xx answer or raise a ProviderError."""
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "Accept": "application/json",
                   "Authorization": f"Bearer {self.api_key}"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        url = self.url.rstrip("/") + path
        try:
            # The client is asked for the timeout; wait_for makes sure of it.
            status, answer = await asyncio.wait_for(
                client.post_json(url, encode_body(payload), headers, timeout=self.timeout),
                timeout=self.timeout + 1.0)
        except TimeoutError:
            log.warning("provider_timed_out", provider=self.provider, path=path)
            raise ProviderTimeout(self.provider,
                                  f"no answer within {self.timeout:g} s") from None
        except OSError as exc:
            log.warning("provider_unreachable", provider=self.provider, path=path,
                        error=type(exc).__name__)
            raise ProviderUnavailable(self.provider, "the provider cannot be reached") from None
        except Exception as exc:  # an injected client's surprise is still not a 500
            log.exception("provider_client_failed", provider=self.provider, path=path)
            raise ProviderUnavailable(self.provider, type(exc).__name__) from None
        if 200 <= status < 300:
            return answer
        log.warning("provider_answered_error", provider=self.provider, path=path,
                    status=status)
        detail = f"the provider answered HTTP {status}"
        if status >= 500 or status in {408, 429}:
            raise ProviderUnavailable(self.provider, detail, http_status=status)
        raise ProviderRefused(self.provider, detail, http_status=status)


def _text(endpoint: Endpoint, answer: Mapping[str, Any], field: str) -> str:
    value = answer.get(field)
    if not isinstance(value, str) or not value or len(value) > 2000:
        raise ProviderBadResponse(endpoint.provider, f"the answer has no usable {field!r}")
    return value


class HttpSms:
    def __init__(self, endpoint: Endpoint, client: HttpClient) -> None:
        self.endpoint = endpoint
        self.client = client

    async def send(self, phone: str, text: str, *, idempotency_key: str) -> None:
        await self.endpoint.call(self.client, "/messages", {"phone": phone, "text": text},
                                 idempotency_key=idempotency_key)


class HttpRealName:
    def __init__(self, endpoint: Endpoint, client: HttpClient) -> None:
        self.endpoint = endpoint
        self.client = client

    async def check(self, name: str, id_number: str, *, idempotency_key: str) -> bool:
        answer = await self.endpoint.call(self.client, "/checks",
                                          {"name": name, "id_number": id_number},
                                          idempotency_key=idempotency_key)
        match = answer.get("match")
        if not isinstance(match, bool):
            raise ProviderBadResponse(self.endpoint.provider, "the answer has no 'match'")
        return match


class HttpFace:
    def __init__(self, endpoint: Endpoint, client: HttpClient) -> None:
        self.endpoint = endpoint
        self.client = client

    async def create_session(self, name: str, id_number: str, *, callback_url: str,
                             idempotency_key: str) -> FaceSession:
        answer = await self.endpoint.call(
            self.client, "/sessions",
            {"name": name, "id_number": id_number, "callback_url": callback_url},
            idempotency_key=idempotency_key)
        return FaceSession(session_id=_text(self.endpoint, answer, "session_id"),
                           qr_url=_text(self.endpoint, answer, "qr_url"))


class HttpPayment:
    def __init__(self, endpoint: Endpoint, client: HttpClient) -> None:
        self.endpoint = endpoint
        self.client = client

    async def send_deposit(self, account_number: str, branch_code: str, *,
                           callback_url: str, idempotency_key: str) -> str:
        answer = await self.endpoint.call(
            self.client, "/deposits",
            {"account_number": account_number, "branch_code": branch_code,
             "callback_url": callback_url},
            idempotency_key=idempotency_key)
        return _text(self.endpoint, answer, "deposit_id")


def _branch(endpoint: Endpoint, value: Any) -> Branch:
    fields = ("code", "name", "bank", "city")
    if not isinstance(value, dict) or not all(isinstance(value.get(f), str) for f in fields):
        raise ProviderBadResponse(endpoint.provider, "a branch in the answer is malformed")
    return Branch(**{f: value[f] for f in fields})


class HttpBranchDirectory:
    def __init__(self, endpoint: Endpoint, client: HttpClient) -> None:
        self.endpoint = endpoint
        self.client = client

    async def search(self, text: str, limit: int = 20) -> list[Branch]:
        answer = await self.endpoint.call(self.client, "/search", {"q": text, "limit": limit})
        found = answer.get("branches")
        if not isinstance(found, list):
            raise ProviderBadResponse(self.endpoint.provider, "the answer has no 'branches'")
        return [_branch(self.endpoint, b) for b in found[:limit]]

    async def get(self, code: str) -> Branch | None:
        try:
            answer = await self.endpoint.call(self.client, "/get", {"code": code})
        except ProviderRefused as exc:
            if exc.http_status == 404:
                return None
            raise
        found = answer.get("branch")
        return None if found is None else _branch(self.endpoint, found)


__all__ = [
    "Endpoint",
    "HttpBranchDirectory",
    "HttpClient",
    "HttpFace",
    "HttpPayment",
    "HttpRealName",
    "HttpSms",
    "ProviderError",
]
