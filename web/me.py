"""The personal center's page: ``GET /api/me`` (SPEC 10), for a signed-in account."""

from __future__ import annotations

from aiohttp import web

from flows.center import account_page
from web.keys import CLOCK, RUNTIME, SERVICES
from web.problems import HttpProblem, json_response
from web.sessions import signed_in

me_routes = web.RouteTableDef()


@me_routes.get("/api/me")
async def me(request: web.Request) -> web.Response:
    """Who the signed-in account is, what it holds, and the flows it may start now."""
    session = signed_in(request)
    page = await account_page(request.app[SERVICES], session,
                              request.app[RUNTIME].flows.flows.values(),
                              now=request.app[CLOCK].now())
    if not page:  # the account went away under a session that was still valid
        raise HttpProblem(401, "not_signed_in", "未登录", "Not signed in")
    response = json_response(page)
    # Personal data, however masked: never kept by a shared cache or the browser's.
    response.headers["Cache-Control"] = "no-store"
    return response
