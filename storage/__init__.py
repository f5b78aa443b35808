"""PostgreSQL and Redis behind the engine's ports."""

from storage.migrate import migrate
from storage.pg import PgStore, create_pool

__all__ = ["PgStore", "create_pool", "migrate"]
