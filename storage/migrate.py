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
    """Apply the migrations not yet applied; return their names."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        applied = []
        for name, sql in migration_files():
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            log.info("migration_applied", name=name)
            applied.append(name)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)


async def migrate_database(dsn: str) -> list[str]:
    """Connect to ``dsn``, apply what is not applied yet, disconnect; return the names."""
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
