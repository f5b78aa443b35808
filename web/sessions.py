"""Who is asking: a signed-in session, or a device; their cookies; cross-site refusals.

A signed-in user is their session (cookie or bearer token). Anyone else who starts a
flow gets a **device**: 256 random bits in an HttpOnly cookie, the same across flow
instances; the instances it starts belong to ``device:<hash>`` and nobody else can see
or step them, whoever learns their ids. A request with neither owns nothing.

Cookies are sent by the browser whichever page makes the request, so every unsafe
request that a cookie authenticates must come from our own pages: a foreign
``Origin`` (or ``Referer``), or a browser saying the request is cross-site, is refused.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from engine import Forbidden
from flows.sessions import Session, ref
from web.keys import SERVICES, SESSION, SESSION_UNKNOWN, SETTINGS
from web.outages import dependency_of, unavailable
from web.problems import HttpProblem

log = structlog.get_logger("web.sessions")

COOKIE = "session"
DEVICE_COOKIE = "device"
# Long enough to outlive every anonymous procedure and the face-verification window.
DEVICE_DAYS = 30
# What secrets.token_urlsafe(32) makes; anything else is no device at all.
_DEVICE_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")
_NEW_DEVICE = web.RequestKey("new_device", str)
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Endpoints that other sites' pages may POST to by design and that treat such a POST
# like the GET anyone's link can make: OpenID Connect RP-initiated logout (web/oidc/
# logout.py) must accept a business system's form POST, and signs nobody out on it
# without an ID token of this very session or the person's confirmation.
CROSS_SITE_POSTS = frozenset({"/logout"})
# `Prefer: session-token`: a client that keeps no cookies gets the token in the body.
TOKEN_PREFERENCE = "session-token"  # noqa: S105 - a preference name, not a secret


def _bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return None


def session_token(request: web.Request) -> str | None:
    """The session token the request carries: a bearer token first, else the cookie."""
    return _bearer(request) or request.cookies.get(COOKIE) or None


def _device_token(request: web.Request) -> str | None:
    token = request.get(_NEW_DEVICE) or request.cookies.get(DEVICE_COOKIE)
    return token if token and _DEVICE_TOKEN.match(token) else None


@functools.lru_cache(maxsize=4096)
def device_actor(token: str) -> str:
    """How histories and instance owners name a device: never the token itself.

    Cached: a browser sends the same token with every request of a flow."""
    return "device:" + hashlib.sha256(token.encode("ascii")).hexdigest()[:32]


@web.middleware
async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse cross-site requests that cookies would authenticate; attach the session."""
    if request.method in _UNSAFE and _cookie_authenticated(request) and not (
            request.method == "POST" and request.path in CROSS_SITE_POSTS):
        _same_origin_only(request)
    token = session_token(request)
    if token and SERVICES in request.app:
        await _look_up(request, token)
    return await handler(request)


async def _look_up(request: web.Request, token: str) -> None:
    """Attach the token's session; with Redis down, note that it is unknown.

    A request that never asks who is calling (the list of flows, health) is answered
    without Redis; one that asks (``session_of``) gets a 503, never "anonymous": a
    signed-in user treated as a stranger would be both wrong and confusing.
    """
    try:
        session = await request.app[SERVICES].sessions.get(token)
    except Exception as exc:
        kind = dependency_of(exc)
        if kind is None:
            raise
        log.warning("session_lookup_failed", exc_info=exc)
        request[SESSION_UNKNOWN] = kind
        return
    if session is not None:
        request[SESSION] = session


def _cookie_authenticated(request: web.Request) -> bool:
    """Would a cookie say who this is? (A bearer token is never sent by a browser on its
    own, so a request carrying one is not a forgery.)"""
    if _bearer(request):
        return False
    return bool(request.cookies.get(COOKIE) or request.cookies.get(DEVICE_COOKIE))


def _origin(value: str) -> str | None:
    parts = urlsplit(value)
    return parts.netloc.lower() if parts.scheme in ("http", "https") and parts.netloc else None


def _same_origin_only(request: web.Request) -> None:
    """Refuse a cookie-authenticated request that another site's page could have sent."""
    ours = {request.host.lower()}
    public = request.app[SETTINGS].public_url
    if public:
        ours.add(_origin(public) or "")
    origin = request.headers.get("Origin")
    if origin is None and "Referer" in request.headers:
        origin = request.headers["Referer"]
    fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
    if origin is None:
        # No Origin and no Referer: not a browser's cross-site request, unless the
        # browser says so itself.
        if fetch_site in ("cross-site", "same-site"):
            raise _cross_site()
        return
    if _origin(origin) not in ours:  # "null" (a sandboxed frame, a data: page) too
        raise _cross_site()


def _cross_site() -> HttpProblem:
    return HttpProblem(403, "cross_site_request", "拒绝来自其他网站的请求",
                       "This request came from another site's page and is refused",
                       field="Origin")


def session_of(request: web.Request) -> Session | None:
    """The caller's session; a 503 if there is a token whose session could not be read."""
    unknown = request.get(SESSION_UNKNOWN)
    if unknown is not None:
        raise unavailable(unknown)
    return request.get(SESSION)


def signed_in(request: web.Request) -> Session:
    """The caller's session; 401 ``not_signed_in`` without one."""
    session = session_of(request)
    if session is None:
        raise HttpProblem(401, "not_signed_in", "未登录", "Not signed in")
    return session


def session_ref_of(request: web.Request) -> str | None:
    """The caller's valid session, named without its token (flows.sessions.ref)."""
    token = session_token(request)
    return ref(token) if token and session_of(request) is not None else None


def actor_of(request: web.Request) -> str:
    """Who the request is: a signed-in account, a device, or ``anonymous`` (nobody)."""
    session = session_of(request)
    if session is not None:
        return session.actor
    token = _device_token(request)
    return device_actor(token) if token else "anonymous"


def identities_of(request: web.Request) -> tuple[str, ...]:
    """Every identity the request holds, the signed-in account first, then its device:
    a flow instance is theirs if it belongs to either."""
    found = []
    session = session_of(request)
    if session is not None:
        found.append(session.actor)
    token = _device_token(request)
    if token:
        found.append(device_actor(token))
    if not found:
        # An instance id alone opens nothing: without a session or a device there is
        # nobody it could belong to.
        raise Forbidden("no session and no device: this flow belongs to someone else")
    return tuple(found)


def starter_of(request: web.Request, access: str) -> str:
    """Who a new flow instance will belong to.

    A flow for the signed in belongs to their account. A flow open to anyone belongs to
    the device, also when someone is signed in: signing in, out or being signed out by a
    password reset in the middle of it must not take it away. A client without a device
    gets one now (its cookie goes out with the answer: ``device_cookie``).
    """
    session = session_of(request)
    if access != "anyone" and session is not None:
        return session.actor
    return ensure_device(request)


def ensure_device(request: web.Request) -> str:
    """The request's device, a new one if it has none (its cookie goes out with the
    answer: ``device_cookie``). Reads no session: it needs no Redis."""
    token = _device_token(request)
    if token is None:
        token = request[_NEW_DEVICE] = secrets.token_urlsafe(32)
    return device_actor(token)


def prefers(request: web.Request, name: str) -> bool:
    """Did the client ask for ``name`` in a ``Prefer`` header (RFC 7240: preferences
    separated by commas, in any case, parameters after a semicolon ignored)?"""
    prefer = ",".join(request.headers.getall("Prefer", []))
    return any(p.split(";", 1)[0].split("=", 1)[0].strip().lower() == name
               for p in prefer.split(","))


def wants_token(request: web.Request) -> bool:
    """Did the client ask for its session token in the body (it keeps no cookies)?"""
    return prefers(request, TOKEN_PREFERENCE)


def _set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str,
                max_age: int) -> None:
    settings = request.app[SETTINGS]
    response.set_cookie(name, value, httponly=True, samesite="Lax",
                        secure=settings.cookie_secure, path="/", max_age=max_age)


def device_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """Send the device cookie (again) when the request's owner is a device: each new
    flow renews it, so it does not expire in the middle of one."""
    token = _device_token(request)
    if token is not None:
        _set_cookie(request, response, DEVICE_COOKIE, token, DEVICE_DAYS * 86400)


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    _set_cookie(request, response, COOKIE, token,
                int(request.app[SETTINGS].session_hours * 3600))


def clear_session_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")
