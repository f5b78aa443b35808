"""structlog, configured once: JSON in production, readable on a terminal."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson
import structlog

from web.outages import dependency_of, describe


def _json_line(event: Any, default: Callable[[Any], Any] | None = None, **_: Any) -> str:
    """One log line: orjson (a step logs twice at info), the standard library for what
    orjson refuses (integers beyond 64 bits, non-string keys)."""
    try:
        return orjson.dumps(event, default=default).decode("utf-8")
    except TypeError:
        return json.dumps(event, default=default, ensure_ascii=False)


class LineLogger:
    """Write each line and its newline in one ``write`` system call.

    structlog's PrintLogger prints the line, then the newline: two writes, and with
    several processes on one pipe (``serve --workers``, PYTHONUNBUFFERED=1) another
    process's line lands between them (``{...}{...}``). One write of a line under
    PIPE_BUF (4 KiB on Linux) is never split on a pipe, and an O_APPEND file takes each
    write whole.
    """

    def __init__(self, file: TextIO) -> None:
        self._file = file
        try:
            self._fd: int | None = file.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is one
            self._fd = None  # a stream in memory (a test's capture): write to it
        self._lock = threading.Lock()  # a long line may take more than one write

    def msg(self, message: str) -> None:
        data = (message + "\n").encode("utf-8", errors="replace")
        with self._lock:
            if self._fd is None:
                self._file.write(message + "\n")
                self._file.flush()
                return
            self._file.flush()  # whatever print() left in the stream goes first
            while data:
                data = data[os.write(self._fd, data):]

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def _line_logger_factory(file: TextIO) -> Callable[..., LineLogger]:
    logger = LineLogger(file)

    def factory(*args: Any) -> LineLogger:
        return logger

    return factory


def _exception(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple):
        return exc_info[1] if len(exc_info) > 1 else None
    return sys.exc_info()[1] if exc_info else None


class QuietOutages:
    """A processor: a line about PostgreSQL or Redis being down, short and seldom.

    An outage fails every request and every worker round: logged with its traceback
    each time that was megabytes a minute. A line that carries such an exception loses
    the traceback for ``dependency`` and ``error``, and goes out at most once every
    ``every`` seconds per event and dependency; the next one says how many were left
    out (``repeated``). Any other exception keeps its traceback.
    """

    def __init__(self, every: float = 30.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.monotonic = monotonic
        self._last: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def __call__(self, logger: Any, method: str,
                 event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
        exc = _exception(event_dict.get("exc_info"))
        kind = dependency_of(exc) if exc is not None else None
        if exc is None or kind is None:
            return event_dict
        del event_dict["exc_info"]
        event_dict["dependency"] = kind
        event_dict["error"] = describe(exc)
        key = (str(event_dict.get("event")), kind)
        now = self.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last[0] < self.every:
                self._last[key] = (last[0], last[1] + 1)
                raise structlog.DropEvent
            self._last[key] = (now, 0)
        if last is not None and last[1]:
            event_dict["repeated"] = last[1]
        return event_dict


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
            QuietOutages(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)),
        logger_factory=_line_logger_factory(sys.stderr),
        # Loggers bind their processors once, not on every call (a step logs each time).
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        if _LIBRARY_OUTAGES not in handler.filters:
            handler.addFilter(_LIBRARY_OUTAGES)


class _LibraryOutages(logging.Filter):
    """A library's own log line about PostgreSQL or Redis being down (asyncpg's pool
    failing to reconnect, with a traceback, again and again): through structlog
    instead, where QuietOutages makes it one short line now and then."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or dependency_of(exc) is None:
            return True
        structlog.get_logger(record.name).warning(
            record.name.replace(".", "_") + "_failed", message=record.getMessage()[:200],
            exc_info=exc)
        return False


_LIBRARY_OUTAGES = _LibraryOutages()


class _MalformedRequests(logging.Filter):
    """aiohttp logs a client's malformed request (a bad header, request line or body
    framing) as an ERROR with a traceback. It is the client's fault and any client can
    send it: one warning line instead, without the request's bytes (a header line may
    hold a token)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Only on aiohttp's server logger, so aiohttp is imported: not in flowctl's start.
        from aiohttp.http_exceptions import HttpProcessingError

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
