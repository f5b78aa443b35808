"""The HttpClient port of flows.providers on aiohttp: provider calls and sandbox callbacks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

MAX_ANSWER_BYTES = 1024 * 1024


class AiohttpClient:
    """POST JSON with a timeout; transport failures become ConnectionError.

    One ClientSession (connection pool) per client, opened on first use inside the
    running event loop; close it with ``aclose()`` (from the app's cleanup context).
    """

    def __init__(self, session: aiohttp.ClientSession | None = None, *,
                 max_answer_bytes: int = MAX_ANSWER_BYTES) -> None:
        self._session = session
        self._owned = session is None
        self.max_answer_bytes = max_answer_bytes

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100), raise_for_status=False)
            self._owned = True
        return self._session

    async def post_json(self, url: str, body: bytes, headers: Mapping[str, str], *,
                        timeout: float,  # noqa: ASYNC109 - aiohttp's own per-request limit
                        ) -> tuple[int, dict[str, Any]]:
        session = self._open()
        try:
            async with session.post(url, data=body, headers=dict(headers),
                                    timeout=aiohttp.ClientTimeout(total=timeout),
                                    allow_redirects=False) as resp:
                # Read at most the limit: an answer too big to be ours is no answer.
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > self.max_answer_bytes:
                        return resp.status, {}
                    chunks.append(chunk)
                return resp.status, _json_object(b"".join(chunks))
        except TimeoutError:
            raise
        except aiohttp.ClientError as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # e.g. a URL aiohttp cannot parse
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._owned and self._session is not None and not self._session.closed:
            await self._session.close()


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}
