"""problem+json (RFC 9457) answers, with a stable error id and two languages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from engine import EngineError, jsonio
from web.keys import REQUEST_ID

CONTENT_TYPE = "application/problem+json"


class HttpProblem(EngineError):
    """A refusal that belongs to HTTP itself (body, headers), not to the engine."""

    def __init__(self, status: int, error_id: str, zh: str, en: str,
                 detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self._status = status
        self._error_id = error_id
        self._zh = zh
        self._en = en

    def problem(self) -> dict[str, Any]:
        body = super().problem()
        body.update(status=self._status, error_id=self._error_id, title=self._en,
                    message={"zh": self._zh, "en": self._en})
        return body


def problem_response(body: dict[str, Any], request: web.Request,
                     headers: dict[str, str] | None = None) -> web.Response:
    error_id = body["error_id"]
    full = {"type": f"/problems/{error_id}", "instance": request.path, **body}
    rid = request.get(REQUEST_ID)
    if rid:
        full["request_id"] = rid
    return web.Response(status=int(body["status"]), headers=headers,
                        body=jsonio.dumps(full), content_type=CONTENT_TYPE, charset="utf-8")


def json_response(body: Any, *, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON answer: compact UTF-8, written by orjson (see engine/jsonio.py)."""
    return web.Response(status=status, headers=headers, body=jsonio.dumps(body),
                        content_type="application/json", charset="utf-8")


_HTTP = {
    404: ("not_found", "没有这个地址", "No such address"),
    405: ("method_not_allowed", "不支持此请求方法", "This method is not allowed here"),
    413: ("body_too_large", "请求内容过大", "The request body is too large"),
}


def from_http_exception(exc: web.HTTPException) -> dict[str, Any]:
    error_id, zh, en = _HTTP.get(exc.status, ("http_error", "请求无法处理",
                                              exc.reason or "HTTP error"))
    return {"status": exc.status, "error_id": error_id, "title": en,
            "message": {"zh": zh, "en": en}}


INTERNAL = {"status": 500, "error_id": "internal_error", "title": "Internal error",
            "message": {"zh": "服务器内部错误，请稍后再试",
                        "en": "Something went wrong on our side; try again later"}}
