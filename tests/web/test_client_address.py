"""Whose address counts against per-client limits: the peer, or a trusted proxy's header."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

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



def _request(header: str, values: list[str], peer: str,
             trusted: tuple[str, ...] = ("127.0.0.1/32", "::1/128", "10.0.0.0/8")) -> str | None:
    app = web.Application()
    app[SETTINGS] = Settings(trusted_proxy_header=header, trusted_proxies=trusted)
    headers = CIMultiDict((header, v) for v in values)
    req = make_mocked_request("GET", "/", headers=headers, app=app)
    req._transport_peername = (peer, 12345)  # type: ignore[attr-defined]
    return client_address(req)


def test_every_x_forwarded_for_line_counts_and_the_last_untrusted_hop_wins() -> None:
    # The client wrote the first line; our proxies appended the second.
    lines = ["198.51.100.66", "203.0.113.9, 10.1.2.3"]
    assert _request("X-Forwarded-For", lines, "127.0.0.1") == "203.0.113.9"
    # Whatever the client puts first, it cannot choose the address that is counted.
    for forged in ("1.1.1.1", "1.1.1.1, 2.2.2.2", "unknown", "10.0.0.1"):
        assert _request("X-Forwarded-For", [forged, "203.0.113.9"], "127.0.0.1") \
            == "203.0.113.9"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (['for=192.0.2.60;proto=http;by=203.0.113.43'], "192.0.2.60"),
        (['for="[2001:db8:cafe::17]:4711"'], "2001:db8:cafe::/64"),
        (['for=192.0.2.43, for=198.51.100.17'], "198.51.100.17"),
        (['for=192.0.2.43', 'for=198.51.100.17;proto=https'], "198.51.100.17"),
        (['for="_hidden", for=10.0.0.5'], "10.0.0.5"),  # only proxies of ours: the nearest
        (['for=198.51.100.17, for=unknown'], "127.0.0.1"),  # a hop nobody can name
        (['for=192.0.2.60;by="a;b,c", for=203.0.113.5'], "203.0.113.5"),
        (['proto=https'], "127.0.0.1"),  # an element without for
        (['for=192.0.2.1; garbage'], "127.0.0.1"),  # malformed: believe only the peer
        (['For="192.0.2.9:8080"'], "192.0.2.9"),
    ],
)
def test_rfc_7239_forwarded_is_read_like_x_forwarded_for(values: list[str],
                                                        expected: str) -> None:
    assert _request("Forwarded", values, "127.0.0.1") == expected


def test_ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() -> None:
    one = _request("X-Forwarded-For", ["2001:db8:1:2::a"], "127.0.0.1")
    other = _request("X-Forwarded-For", ["2001:db8:1:2:ffff::b"], "127.0.0.1")
    assert one == other == "2001:db8:1:2::/64"
    assert _request("X-Forwarded-For", ["2001:db8:1:3::a"], "127.0.0.1") != one
    assert _request("X-Forwarded-For", ["::ffff:203.0.113.9"], "127.0.0.1") == "203.0.113.9"
    assert _request("X-Forwarded-For", [], "2001:db8:9:9::1") == "2001:db8:9:9::/64"
    assert _request("X-Forwarded-For", ["203.0.113.9"], "::ffff:127.0.0.1") == "203.0.113.9"
