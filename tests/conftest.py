"""Fixtures: a fresh PostgreSQL database per test run, Redis, the app and a frozen clock.

Tests talk to the real servers (DATABASE_URL / REDIS_URL, else the local ones on
127.0.0.1). The run creates its own database and drops it at the end.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from engine import FrozenClock, Registry, Runtime, load_text
from storage import PgStore, create_pool
from storage.scratch import create_database, drop_database
from tests.sample_flows import SAMPLE_YAML, sample_registry
from web.app import create_app
from web.settings import Settings

ADMIN_URL = os.environ.get("TEST_DATABASE_URL") or os.environ.get(
    "DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = os.environ.get("TEST_REDIS_URL") or os.environ.get(
    "REDIS_URL") or "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database of this test run's own, migrated; dropped afterwards."""
    name = f"flows_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"

    dsn = asyncio.run(create_database(ADMIN_URL, name, leftovers_of="flows_test"))
    yield dsn
    asyncio.run(drop_database(ADMIN_URL, name))


@pytest.fixture(scope="session")
def redis_prefix() -> str:
    return f"flows-test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def redis_client(redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(REDIS_URL)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))


@pytest.fixture
def registry() -> Registry:
    return sample_registry()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, min_size=1, max_size=60)
    yield p
    await p.close()


@pytest.fixture
async def runtime(pool: asyncpg.Pool, clock: FrozenClock, registry: Registry) -> Runtime:
    rt = Runtime(PgStore(pool), clock, registry, load_text(SAMPLE_YAML, registry=registry))
    await rt.publish()
    return rt


@pytest.fixture
def flows_file(tmp_path: Path) -> Path:
    path = tmp_path / "flows.yaml"
    path.write_text(SAMPLE_YAML, encoding="utf-8")
    return path


@pytest.fixture
def settings(database_url: str, redis_prefix: str, flows_file: Path) -> Settings:
    return Settings(database_url=database_url, redis_url=REDIS_URL, redis_prefix=redis_prefix,
                    flows_file=str(flows_file), flow_modules=("tests.sample_flows",),
                    workers=False, log_format="console", pool_max=60)


@pytest.fixture
def app(settings: Settings, clock: FrozenClock) -> web.Application:
    return create_app(settings, clock=clock)


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def platform(database_url: str, redis_prefix: str,
                   clock: FrozenClock) -> AsyncIterator[Any]:
    """The whole platform on the real flows.yaml, served over HTTP on a known port."""
    from aiohttp.test_utils import TestClient, TestServer, unused_port

    from tests.platform import Platform

    port = unused_port()
    prefix = f"{redis_prefix}{uuid.uuid4().hex[:6]}:"
    settings = Settings(database_url=database_url, redis_url=REDIS_URL, redis_prefix=prefix,
                        flows_file=str(ROOT / "flows.yaml"), flow_modules=("flows",),
                        workers=False, log_format="console", pool_max=20, port=port,
                        public_url=f"http://127.0.0.1:{port}",
                        argon2_memory_kib=1024, argon2_time_cost=1)
    app = create_app(settings, clock=clock)
    client = TestClient(TestServer(app, host="127.0.0.1", port=port))
    await client.start_server()
    try:
        yield Platform(client, app)
    finally:
        await client.close()
        cleaner = aioredis.from_url(REDIS_URL)
        stale = [k async for k in cleaner.scan_iter(match=f"{prefix}*")]
        if stale:
            await cleaner.delete(*stale)
        await cleaner.aclose()
