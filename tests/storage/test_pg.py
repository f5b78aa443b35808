"""The pool's bounds: a slow statement, a frozen server, an exhausted pool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import asyncpg
import pytest

from storage import create_pool
from tests.throwaway import Postgres
from web.outages import dependency_of


async def test_a_statement_over_the_statement_timeout_is_cancelled_and_the_pool_serves_on(
        database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1, statement_timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(asyncpg.QueryCanceledError) as cancelled:
            await pool.fetchval("SELECT pg_sleep(5)")
        assert time.monotonic() - started < 4  # the server's doing, not the sleep's end
        assert dependency_of(cancelled.value) == "database"
        # The same (only) connection goes on serving: nothing to reconnect.
        assert await pool.fetchval("SHOW statement_timeout") == "200ms"
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


@pytest.fixture
def frozen_postgres() -> Iterator[Postgres]:
    server = Postgres()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.slow
async def test_with_the_server_frozen_a_statement_and_a_wait_for_a_connection_give_up(
        frozen_postgres: Postgres) -> None:
    pool = await create_pool(frozen_postgres.dsn, min_size=1, max_size=1,
                             acquire_timeout=0.5, command_timeout=1.0)

    ended: list[str] = []

    async def statement(name: str = "") -> None:
        try:
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        finally:
            ended.append(name)

    try:
        await statement()
        frozen_postgres.freeze()
        try:
            started = time.monotonic()
            # The only connection hangs in its statement; the second caller waits for it.
            first, second = await asyncio.gather(statement("first"), statement("second"),
                                                 return_exceptions=True)
            took = time.monotonic() - started
        finally:
            frozen_postgres.thaw()
        assert isinstance(first, TimeoutError), first
        assert isinstance(second, TimeoutError), second
        assert dependency_of(first) == dependency_of(second) == "database"
        assert took < 10  # bounds of 0.5 and 1 s: it did not hang
        # The waiter gave up on its own bound, before the statement it waited for did.
        assert ended[-2:] == ["second", "first"]
        await statement()  # thawed, it serves again
    finally:
        await pool.close()
