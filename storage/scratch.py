"""Throwaway databases for test runs and benchmarks: created migrated, dropped after.

Each is named ``<prefix>_<pid>[_...]``, so a run can drop the leftovers of runs that
were killed before they could clean up, and never the database of one still running.
"""

from __future__ import annotations

import os
import re

import asyncpg

from storage.migrate import migrate_database


def dsn_for(admin_url: str, database: str) -> str:
    """The same server and credentials as admin_url, another database."""
    base, _, query = admin_url.partition("?")
    root = base.rsplit("/", 1)[0]
    return f"{root}/{database}" + (f"?{query}" if query else "")


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


async def create_database(admin_url: str, name: str, *,
                          leftovers_of: str | None = None, migrated: bool = True) -> str:
    """Create (afresh) and migrate a database (unless not ``migrated``); return its DSN.

    With leftovers_of="bench", databases named bench_<pid>... of processes no longer
    running are dropped first.
    """
    admin = await asyncpg.connect(admin_url)
    try:
        if leftovers_of is not None:
            pattern = re.compile(rf"^{re.escape(leftovers_of)}_(\d+)(_|$)")
            for row in await admin.fetch("SELECT datname FROM pg_database"):
                found = pattern.match(row["datname"])
                if found and int(found.group(1)) != os.getpid() \
                        and not _alive(int(found.group(1))):
                    await admin.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = dsn_for(admin_url, name)
    if migrated:
        await migrate_database(dsn)
    return dsn


async def drop_database(admin_url: str, name: str) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
