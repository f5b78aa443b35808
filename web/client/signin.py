"""Signing in for a business system (single sign-on through the web client).

The provider (web/oidc) keeps an authorization request that came without a session and
sends the browser to ``/login?authorize=<id>``. This page checks that the request is
waiting and was made by this very browser, shows the sign-in tabs naming the system,
and remembers the id in a short-lived HttpOnly cookie. The step that signs in (any
sign-in flow: it is the one whose reply carries a session) then sends the browser to
``/login/continue``, and that page on to ``/authorize/resume?id=<id>``: only that path,
only an id of the provider's shape, so no link can send anyone elsewhere; and the
provider resumes only a request of the same browser (its device), as it was made.

Why a page in between, not a redirect from the step: the step is a form's POST, and
the pages' ``form-action 'self'`` covers every redirect after a form is sent, so a
redirect chain ending at the system's callback would be blocked by the browser.
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from web.client.views import (
    AUTHORIZE_COOKIE,
    REQUEST_ID,
    SIGN_IN,
    _redirect,
    _render,
    _tab,
    client_routes,
    pages,
    signing_in_for,
)
from web.keys import SETTINGS
from web.oidc import LOGIN_PATH, REQUEST_LIFETIME, pending_system
from web.problems import HttpProblem
from web.sessions import session_of

RESUME_PATH = "/authorize/resume"


def _resume(request_id: str) -> str:
    return f"{RESUME_PATH}?id={quote(request_id, safe='')}"


@client_routes.get(LOGIN_PATH)
@pages
async def login(request: web.Request) -> web.StreamResponse:
    """The sign-in tabs, for the system whose request waits; remembers the request.

    Shown even to a browser with a session: the provider sends one here only when it
    asked for a new sign-in (``prompt=login``) or the session may not enter."""
    request_id = request.query.get("authorize", "")
    if not REQUEST_ID.fullmatch(request_id):
        return _redirect(request, "/")
    system = await pending_system(request, request_id)
    response = _render(request, "home.html", {
        "tab": _tab(request), "tabs": SIGN_IN, "page": None, "hall": [],
        "for_system": dict(system.name),
        "tab_href": f"{LOGIN_PATH}?authorize={quote(request_id, safe='')}&tab="})
    response.set_cookie(AUTHORIZE_COOKIE, request_id, httponly=True, samesite="Lax",
                        path="/", max_age=int(REQUEST_LIFETIME.total_seconds()),
                        secure=request.app[SETTINGS].cookie_secure)
    return response


@client_routes.get("/login/continue")
@pages
async def continue_to_system(request: web.Request) -> web.StreamResponse:
    """Signed in: on to the provider, which answers the system's request.

    A page that goes on by itself (``<meta http-equiv=refresh>``, no script needed),
    with a link for a browser that does not."""
    request_id = signing_in_for(request)
    if request_id is None or session_of(request) is None:
        return _redirect(request, "/")
    try:
        system = await pending_system(request, request_id)
    except HttpProblem:
        # Gone (used, expired) or another browser's: nothing to continue, nothing kept.
        response = _redirect(request, "/")
        response.del_cookie(AUTHORIZE_COOKIE, path="/")
        return response
    response = _render(request, "continue.html", {"system": dict(system.name),
                                                  "href": _resume(request_id)})
    response.del_cookie(AUTHORIZE_COOKIE, path="/")
    return response
