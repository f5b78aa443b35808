"""The personal center's page: ``GET /api/me`` (SPEC 10), for a signed-in account."""

from __future__ import annotations

from aiohttp import web

from flows.center import account_page
from web.keys import CLOCK, RUNTIME, SERVICES
from web.problems import HttpProblem, json_response
from web.sessions import session_of

me_routes = web.RouteTableDef()


def _not_signed_in() -> HttpProblem:
    return HttpProblem(401, "not_signed_in", "未登录", "Not signed in")


@me_routes.get("/api/me")
async def me(request: web.Request) -> web.Response:
    """Who the signed-in account is, what it holds, and the flows it may start now."""
    session = session_of(request)
    if session is None:
        raise _not_signed_in()
    page = await account_page(request.app[SERVICES], session,
                              request.app[RUNTIME].flows.flows.values(),
                              now=request.app[CLOCK].now())
    if not page:  # the account went away under a session that was still valid
        raise _not_signed_in()
    response = json_response(page)
    # Personal data, however masked: never kept by a shared cache or the browser's.
    response.headers["Cache-Control"] = "no-store"
    return response
