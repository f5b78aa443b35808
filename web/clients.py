"""Who a request comes from, for per-client limits: an address, or an IPv6 /64.

Behind a proxy the peer is the proxy. Its header (``X-Forwarded-For`` or RFC 7239
``Forwarded``) is believed only when the peer is one of the trusted proxies, and then
only as far as the hops that trusted proxies added: the list grows to the right, each
proxy appending the address it received the request from, so the client is the last
hop (from the right) that is not a trusted proxy. Everything to its left was written by
the client and proves nothing. A header sent as several lines counts as one list, in
order, as RFC 9110 says for repeated list headers.

An IPv6 client is counted by its /64: one subscriber usually holds a whole /64 and can
take a new address from it for every request. An IPv4 address written as IPv6
(``::ffff:192.0.2.1``) is that IPv4 address.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

FORWARDED = "forwarded"
# One forwarded-pair of RFC 7239 (token=token or token=quoted-string); the parameters of
# one element are separated by ';', elements by ','. Commas and semicolons inside a
# quoted string are kept by matching quoted strings whole.
_PAIR = re.compile(r'\s*([A-Za-z0-9!#$%&\'*+.^_`|~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*')
_ELEMENT_END = re.compile(r"\s*([;,]|$)")
_PORT = re.compile(r"^(.*?)(?::\d{1,5})?$")


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Networks from CIDR strings; raises ValueError naming the bad one."""
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an address or network: {value!r}") from None
    return tuple(out)


def _address(text: str) -> IPAddress | None:
    """An address from one hop as a proxy writes it: bare, with a port, or in brackets."""
    text = text.strip().strip('"')
    if text.startswith("["):  # [2001:db8::1] or [2001:db8::1]:4711
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:  # 192.0.2.1:4711
        text = _PORT.match(text).group(1)  # type: ignore[union-attr]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forwarded_for(values: Sequence[str]) -> list[str] | None:
    """The ``for=`` hops of RFC 7239 ``Forwarded`` lines, in order; None if malformed.

    An element without ``for`` counts as a hop nobody can name ("unknown").
    """
    hops: list[str] = []
    for line in values:
        pos, length = 0, len(line)
        current: str | None = None
        while pos < length:
            pair = _PAIR.match(line, pos)
            if pair is None:
                return None
            name, value = pair.group(1).lower(), pair.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            if name == "for":
                current = value
            end = _ELEMENT_END.match(line, pair.end())
            if end is None:
                return None
            pos = end.end()
            if end.group(1) in (",", ""):
                hops.append(current if current is not None else "unknown")
                current = None
    return hops


def forwarded_hops(header: str, values: Sequence[str]) -> list[str] | None:
    """The hops a proxy header lists, left to right; None if it cannot be read."""
    if header.lower() == FORWARDED:
        return forwarded_for(values)
    return [hop.strip() for line in values for hop in line.split(",") if hop.strip()]


def client_of(peer: str | None, header: str | None, values: Sequence[str],
              trusted: Sequence[IPNetwork]) -> IPAddress | None:
    """The client's address: the peer, or the last untrusted hop a trusted peer names."""
    address = _address(peer) if peer else None
    if address is None or not header or not values:
        return address

    def is_trusted(a: IPAddress) -> bool:
        return any(a.version == n.version and a in n for n in trusted)

    if not is_trusted(address):
        return address
    hops = forwarded_hops(header, values)
    if not hops:
        return address
    for hop in reversed(hops):
        found = _address(hop)
        if found is None:
            # A hop no trusted proxy would write ("unknown", garbage): whoever sent it
            # is the nearest address we can vouch for, the last trusted one.
            return address
        if not is_trusted(found):
            return found
        address = found
    return address


def limit_key(address: IPAddress | None) -> str | None:
    """The text per-client limits count: the address, or for IPv6 its /64."""
    if address is None:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
