"""Many servers: the same tests through PgBouncer in transaction pooling and on a Redis
Cluster of three masters, both started here in temporary folders (test_sentinel.py: on
the master a Redis Sentinel names instead of the cluster).

The fixtures `database_url`, `backends` (and through them `pool`, `redis_client`,
`settings`, `platform`) are replaced for the tests in this folder; each test module
here re-runs tests of the suite on them. Skipped only when pgbouncer or redis-server
is not installed (.ci/run installs both).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from storage import migrate_database
from storage.scratch import create_database
from tests import leaks
from tests.conftest import ADMIN_URL, search_then_drop
from tests.throwaway import PgBouncer, RedisCluster, RedisSentinel


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[PgBouncer]:
    upstream = urlsplit(ADMIN_URL)
    bouncer = PgBouncer(upstream.hostname or "127.0.0.1", upstream.port or 5432)
    yield bouncer
    bouncer.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster()
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinel]:
    sentinel = RedisSentinel()
    yield sentinel
    sentinel.close()


@pytest.fixture(scope="session")
def database_url(pgbouncer: PgBouncer) -> Iterator[str]:
    """A database of this run's own, created directly and migrated through PgBouncer."""
    name = f"flows_test_{os.getpid()}_{uuid.uuid4().hex[:8]}_pooled"
    direct = asyncio.run(create_database(ADMIN_URL, name, leftovers_of="flows_test",
                                         migrated=False))
    dsn = pgbouncer.dsn(name)
    asyncio.run(migrate_database(dsn, transaction_pooling=True))
    # Searched for numbers in clear like the run's own (tests/test_at_rest.py).
    leaks.DATABASES.add(direct)
    yield dsn
    leaks.DATABASES.discard(direct)
    search_then_drop(direct, name)


@pytest.fixture(scope="session")
def backends(redis_cluster: RedisCluster) -> dict[str, Any]:
    # statement_timeout is a startup parameter PgBouncer refuses: on the role, in
    # production (docs/operations.md).
    return {"redis_url": redis_cluster.url, "redis_cluster": True,
            "db_transaction_pooling": True, "db_statement_timeout": 0}
