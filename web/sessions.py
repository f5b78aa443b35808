"""Who is asking: the session from the cookie or a bearer token, and its cookie."""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from flows.sessions import Session
from web.keys import SERVICES, SESSION, SESSION_UNKNOWN, SETTINGS
from web.outages import dependency_of, unavailable

log = structlog.get_logger("web.sessions")

COOKIE = "session"


def _token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.cookies.get(COOKIE) or None


@web.middleware
async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach the signed-in session, if any; an unknown token is simply no session."""
    token = _token(request)
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


def session_of(request: web.Request) -> Session | None:
    """The caller's session; a 503 if there is a token whose session could not be read."""
    unknown = request.get(SESSION_UNKNOWN)
    if unknown is not None:
        raise unavailable(unknown)
    return request.get(SESSION)


def actor_of(request: web.Request) -> str:
    session = session_of(request)
    return session.actor if session is not None else "anonymous"


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    settings = request.app[SETTINGS]
    response.set_cookie(COOKIE, token, httponly=True, samesite="Lax",
                        secure=settings.cookie_secure, path="/",
                        max_age=int(settings.session_hours * 3600))


def clear_session_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")
