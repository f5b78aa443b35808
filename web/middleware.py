"""Request ids, access logs, metrics and the one error middleware."""

from __future__ import annotations

import os
import re
import time

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from engine import EngineError, FlowExpired
from web.keys import METRICS, REQUEST_ID
from web.outages import dependency_of, unavailable
from web.problems import INTERNAL, from_http_exception, problem_response

log = structlog.get_logger("web")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id to every log line of this request and echo it back."""
    given = request.headers.get("X-Request-Id", "")
    rid = given if _REQUEST_ID.match(given) else os.urandom(16).hex()
    request[REQUEST_ID] = rid
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=rid)
    started = time.perf_counter()
    response: web.StreamResponse | None = None
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # a redirect raised by a handler
        status = exc.status
        raise
    finally:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        request.app[METRICS].request(request.method, name, status)
        if response is not None:
            response.headers["X-Request-Id"] = rid
        log.info("request_handled", method=request.method, route=name, status=status,
                 ms=round((time.perf_counter() - started) * 1000, 2))


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every refusal into problem+json; never let an exception become a bare 500."""
    try:
        return await handler(request)
    except EngineError as exc:
        body = exc.problem()
        if isinstance(exc, FlowExpired):
            log.info("flow_expired_answered")
        headers = ({"Retry-After": str(body["retry_after"])} if "retry_after" in body
                   else None)
        return problem_response(body, request, headers=headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem_response(from_http_exception(exc), request,
                                headers={k: v for k, v in exc.headers.items()
                                         if k.lower() == "allow"})
    except Exception as exc:
        kind = dependency_of(exc)
        if kind is None:
            log.exception("request_failed")
            return problem_response(dict(INTERNAL), request)
        # One short line now and then, not a traceback a request (web/logs.py).
        log.error("dependency_unavailable", exc_info=exc)
        body = unavailable(kind).problem()
        return problem_response(body, request, headers={"Retry-After": str(body["retry_after"])})
