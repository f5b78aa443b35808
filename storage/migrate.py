"""Plain SQL migrations, numbered, applied in order and recorded in a table."""

from __future__ import annotations

from importlib import resources

import asyncpg
import structlog

log = structlog.get_logger("storage.migrate")

# Any fixed number: serialises concurrent `flowctl migrate` runs on one database.
_LOCK_ID = 0x666C6F7773


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("storage") / "migrations"
    return sorted((p.name, p.read_text(encoding="utf-8")) for p in folder.iterdir()
                  if p.name.endswith(".sql"))


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations not yet applied; return their names.

    Each migration runs in a transaction of its own that first takes a transaction-level
    advisory lock and then reads what is applied. A session-level lock would not do:
    through PgBouncer in transaction pooling the lock and its unlock may reach two
    different server connections, and the lock would stay held on the first for good.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
    applied = []
    for name, sql in migration_files():
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
            if await conn.fetchval("SELECT 1 FROM schema_migrations WHERE name = $1", name):
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
        log.info("migration_applied", name=name)
        applied.append(name)
    return applied


async def migrate_database(dsn: str, *, transaction_pooling: bool = False) -> list[str]:
    """Connect to ``dsn``, apply what is not applied yet, disconnect; return the names."""
    conn = await asyncpg.connect(dsn, statement_cache_size=0 if transaction_pooling else 100)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
