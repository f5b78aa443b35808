"""What changed for many servers: PgBouncer in transaction pooling, a Redis Cluster."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from flows.sessions import Sessions
from storage import RedisEphemeral, create_pool, create_redis, migrate_database
from storage.migrate import migration_files
from storage.scratch import create_database, drop_database
from tests.conftest import ADMIN_URL
from tests.throwaway import PgBouncer, RedisCluster, free_port
from web.app import _listen_for_reload
from web.cli import _publish_reload

pytestmark = pytest.mark.scaleout

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def forgetful() -> Any:
    """PgBouncer with one server connection, reset after every transaction: what a
    statement prepared in one transaction meets in the next under transaction pooling
    (another server connection), every time instead of now and then."""
    upstream = urlsplit(ADMIN_URL)
    bouncer = PgBouncer(upstream.hostname or "127.0.0.1", upstream.port or 5432,
                        port=free_port(), pool_size=1, reset_always=True)
    yield bouncer
    bouncer.close()


async def _twice(dsn: str, **connect: Any) -> list[int]:
    conn = await asyncpg.connect(dsn, **connect)
    try:
        return [await conn.fetchval("SELECT $1::int + 1", n) for n in range(2)]
    finally:
        await conn.close()


async def test_cached_prepared_statements_break_behind_transaction_pooling(
        forgetful: PgBouncer) -> None:
    """Why DB_TRANSACTION_POOLING exists: asyncpg's statement cache binds, in the next
    transaction, a statement prepared on a server connection it may no longer have."""
    dsn = forgetful.dsn("postgres")
    with pytest.raises(asyncpg.PostgresError, match="prepared statement"):
        await _twice(dsn)
    assert await _twice(dsn, statement_cache_size=0) == [1, 2]


async def test_pools_with_transaction_pooling_share_one_server_connection(
        forgetful: PgBouncer) -> None:
    pools = [await create_pool(forgetful.dsn("postgres"), min_size=2,
                               max_size=4, transaction_pooling=True) for _ in range(2)]
    try:
        got = await asyncio.gather(*(p.fetchval("SELECT $1::int * 2", n)
                                     for n in range(40) for p in pools))
        assert got == [n * 2 for n in range(40) for _ in pools]
    finally:
        for p in pools:
            await p.close()


async def test_a_statement_timeout_is_refused_as_a_startup_parameter_with_pooling() -> None:
    with pytest.raises(ValueError, match="on the role"):
        await create_pool("postgresql://nowhere/none", transaction_pooling=True,
                          statement_timeout=3.0)


async def test_concurrent_migrations_through_pgbouncer_apply_each_file_once_and_leave_no_lock(
        pgbouncer: PgBouncer) -> None:
    name = f"flows_test_{os.getpid()}_migrate_{uuid.uuid4().hex[:6]}"
    await create_database(ADMIN_URL, name, migrated=False)
    try:
        runs = await asyncio.gather(*(migrate_database(pgbouncer.dsn(name),
                                                       transaction_pooling=True)
                                      for _ in range(3)))
        applied = sorted(n for run in runs for n in run)
        assert applied == sorted(n for n, _ in migration_files())
        conn = await asyncpg.connect(pgbouncer.dsn(name), statement_cache_size=0)
        try:
            assert await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
            assert await migrate_database(pgbouncer.dsn(name), transaction_pooling=True) == []
        finally:
            await conn.close()
    finally:
        await drop_database(ADMIN_URL, name)


async def test_sessions_end_on_every_server_of_a_cluster(redis_cluster: RedisCluster) -> None:
    """Two servers, each with a client of its own: a session made on one is valid on the
    other, and ending an account's or an agent's sessions on one ends them on both
    (``get_many`` reads two keys of two slots, per node)."""
    prefix = f"flows-test-{uuid.uuid4().hex[:8]}:"
    clients = [create_redis(redis_cluster.url, cluster=True) for _ in range(2)]
    try:
        one, two = (Sessions(RedisEphemeral(c, prefix)) for c in clients)
        token = await one.create(account_id="a1", kind="personal", display_name="A",
                                 now=NOW)
        agent = await one.create(account_id="o1", kind="organisation", display_name="O",
                                 now=NOW, agent_id="g1")
        assert (await two.get(token)) is not None
        assert (await two.get(agent)) is not None
        await two.end_all("a1")
        await two.end_agent("o1", "g1")
        assert await one.get(token) is None
        assert await one.get(agent) is None
    finally:
        keys = [k async for k in clients[0].scan_iter(match=f"{prefix}*")]
        if keys:
            await clients[0].delete(*keys)
        for c in clients:
            await c.aclose()


async def test_flowctl_reload_reaches_a_server_listening_on_another_node(
        redis_cluster: RedisCluster) -> None:
    channel = f"flows-test-{uuid.uuid4().hex[:8]}:reload"
    listener = create_redis(redis_cluster.url, cluster=True)
    reloaded, stop = asyncio.Event(), asyncio.Event()

    async def reload() -> bool:
        reloaded.set()
        return True

    task = asyncio.create_task(_listen_for_reload(listener, channel, reload, stop))
    try:
        # Published through the last node: PUBLISH reaches every node of the cluster.
        other = f"redis://127.0.0.1:{redis_cluster.ports[-1]}/0"
        for _ in range(100):
            if await _publish_reload(other, channel, 2.0, {"cluster": True}):
                break
            await asyncio.sleep(0.05)  # until the listener has subscribed
        await asyncio.wait_for(reloaded.wait(), 10)
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await listener.aclose()
