"""Which dependency an exception says is down, and the 503 a client gets for it.

PostgreSQL and Redis failing is not a bug of ours: the client gets a 503 with
Retry-After, the log one short line per kind (web/logs.py), never a traceback a
request.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:  # at run time only where a 503 is made: not in flowctl's start
    from web.problems import HttpProblem

DATABASE = "database"
CACHE = "cache"

# Seconds a client is asked to wait: a restart or a failover takes about this long.
RETRY_AFTER = 5

_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,       # class 08: refused, lost, broken
    asyncpg.CannotConnectNowError,         # starting up, shutting down, in recovery
    asyncpg.AdminShutdownError,            # stopped under a running statement
    asyncpg.CrashShutdownError,
    asyncpg.QueryCanceledError,            # statement_timeout (DB_STATEMENT_TIMEOUT)
    asyncpg.TooManyConnectionsError,
    asyncpg.ReadOnlySQLTransactionError,   # a standby, before a failover has finished
)


def _cache_errors() -> tuple[type[BaseException], ...]:
    """The redis errors that say it is down. Importing redis costs flowctl a fifth of a
    second, and while it is not imported no error is one of them."""
    errors = sys.modules.get("redis.exceptions")
    if errors is None:
        return ()
    return (
        errors.ConnectionError,      # refused, lost, still loading its data
        errors.TimeoutError,         # REDIS_TIMEOUT
        errors.ReadOnlyError,        # a replica, before a failover has finished
        errors.ClusterDownError,
        errors.TryAgainError,
        errors.MasterDownError,
    )


def _passes_through(tb: TracebackType | None, package: str) -> bool:
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(package):
            return True
        tb = tb.tb_next
    return False


def dependency_of(exc: BaseException) -> str | None:
    """Return ``database`` or ``cache`` if ``exc`` says that one is down, else None.

    asyncpg raises the socket's own OSError or TimeoutError when it cannot connect, a
    pool acquire or a command times out: those count when they were raised inside
    asyncpg (or redis). An error raised ``from`` an outage (an action wrapping it) is one.
    """
    seen: BaseException | None = exc
    cache_errors = _cache_errors()
    for _ in range(5):  # a chain of causes is short; never loop on a cycle
        if seen is None:
            return None
        if isinstance(seen, _DATABASE_ERRORS):
            return DATABASE
        if isinstance(seen, cache_errors):
            return CACHE
        if isinstance(seen, OSError):  # TimeoutError is one too
            if _passes_through(seen.__traceback__, "asyncpg"):
                return DATABASE
            if _passes_through(seen.__traceback__, "redis"):
                return CACHE
        seen = seen.__cause__
    return None


def unavailable(kind: str) -> HttpProblem:
    """The 503 for a dependency that is down: a stable id per dependency."""
    from web.problems import HttpProblem

    if kind == DATABASE:
        return HttpProblem(503, "database_unavailable", "数据库暂时不可用，请稍后再试",
                           "The database is unavailable at the moment; try again shortly",
                           retry_after=RETRY_AFTER)
    return HttpProblem(503, "cache_unavailable", "缓存服务暂时不可用，请稍后再试",
                       "The cache is unavailable at the moment; try again shortly",
                       retry_after=RETRY_AFTER)


def describe(exc: BaseException) -> str:
    """The exception in one short line, for a log (no traceback, no query text)."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
