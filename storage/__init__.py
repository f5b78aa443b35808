"""PostgreSQL and Redis behind the engine's ports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storage.accounts import PgAccounts
from storage.migrate import migrate, migrate_database
from storage.oidc import EnteredSystem, PgOidc, SigningKeyRow
from storage.pg import PgStore, create_pool
from storage.seals import PgSeals

if TYPE_CHECKING:
    from storage.ephemeral import RedisClient, RedisEphemeral, RedisLimiter, create_redis

# Importing redis costs a fifth of a second of CPU, and most flowctl commands (audit,
# migrate, versions) never talk to it: its names are imported when first asked for.
_EPHEMERAL = frozenset({"RedisClient", "RedisEphemeral", "RedisLimiter", "create_redis"})


def __getattr__(name: str) -> Any:
    if name in _EPHEMERAL:
        from storage import ephemeral

        return getattr(ephemeral, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EnteredSystem", "PgAccounts", "PgOidc", "PgSeals", "PgStore", "RedisClient",
           "RedisEphemeral",
           "RedisLimiter", "SigningKeyRow", "create_pool", "create_redis", "migrate",
           "migrate_database"]
