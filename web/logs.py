"""structlog, configured once: JSON in production, readable on a terminal."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError


def _json_line(event: Any, default: Callable[[Any], Any] | None = None, **_: Any) -> str:
    """One log line: orjson (a step logs twice at info), the standard library for what
    orjson refuses (integers beyond 64 bits, non-string keys)."""
    try:
        return orjson.dumps(event, default=default).decode("utf-8")
    except TypeError:
        return json.dumps(event, default=default, ensure_ascii=False)


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=_json_line) if use_json
        else structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        # Loggers bind their processors once, not on every call (a step logs each time).
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


class _MalformedRequests(logging.Filter):
    """aiohttp logs a client's malformed request (a bad header, request line or body
    framing) as an ERROR with a traceback. It is the client's fault and any client can
    send it: one warning line instead, without the request's bytes (a header line may
    hold a token)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        code = getattr(exc, "code", None)
        if isinstance(exc, HttpProcessingError) and isinstance(code, int) and code < 500:
            reason = str(exc.message).splitlines()[0][:100] if exc.message else ""
            structlog.get_logger("web").warning(
                "malformed_request", status=code, error=type(exc).__name__, reason=reason)
            return False
        return True


_QUIET = _MalformedRequests()


def quiet_malformed_requests() -> None:
    """Install the filter on aiohttp's server logger (once, however often called)."""
    logger = logging.getLogger("aiohttp.server")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)
