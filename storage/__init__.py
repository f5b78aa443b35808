"""PostgreSQL and Redis behind the engine's ports."""

from storage.accounts import PgAccounts
from storage.ephemeral import RedisClient, RedisEphemeral, RedisLimiter, create_redis
from storage.migrate import migrate, migrate_database
from storage.oidc import EnteredSystem, PgOidc, SigningKeyRow
from storage.pg import PgStore, create_pool
from storage.seals import PgSeals

__all__ = ["EnteredSystem", "PgAccounts", "PgOidc", "PgSeals", "PgStore", "RedisClient",
           "RedisEphemeral",
           "RedisLimiter", "SigningKeyRow", "create_pool", "create_redis", "migrate",
           "migrate_database"]
