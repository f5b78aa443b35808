"""Whose address counts against per-client limits: the peer, or a trusted proxy's header."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from web.keys import SETTINGS
from web.routes import client_address
from web.settings import Settings


@pytest.mark.parametrize(
    ("header", "peer", "forwarded", "expected"),
    [
        (None, "127.0.0.1", "203.0.113.9", "127.0.0.1"),           # no proxy configured
        ("X-Forwarded-For", "127.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("X-Forwarded-For", "127.0.0.1", "198.51.100.1, 203.0.113.9", "203.0.113.9"),
        ("X-Forwarded-For", "127.0.0.1", "203.0.113.9, 127.0.0.1", "203.0.113.9"),
        ("X-Forwarded-For", "192.0.2.7", "203.0.113.9", "192.0.2.7"),  # peer not trusted
        ("X-Forwarded-For", "127.0.0.1", "not-an-address", "127.0.0.1"),
    ],
)
def test_client_address_trusts_the_header_only_from_a_trusted_proxy(
        header: str | None, peer: str, forwarded: str, expected: str) -> None:
    settings = Settings(trusted_proxy_header=header)
    app = web.Application()
    app[SETTINGS] = settings
    req = make_mocked_request("POST", "/", headers={"X-Forwarded-For": forwarded}, app=app)
    req._transport_peername = (peer, 12345)  # type: ignore[attr-defined]
    assert client_address(req) == expected

