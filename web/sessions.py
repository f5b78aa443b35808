"""Who is asking: the session from the cookie or a bearer token, and its cookie."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from flows.sessions import Session
from web.keys import SERVICES, SESSION, SETTINGS

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
        session = await request.app[SERVICES].sessions.get(token)
        if session is not None:
            request[SESSION] = session
    return await handler(request)


def session_of(request: web.Request) -> Session | None:
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
