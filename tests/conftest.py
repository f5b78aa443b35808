"""Fixtures: a fresh PostgreSQL database per test run, Redis, the app and a frozen clock.

Tests talk to the real servers (DATABASE_URL / REDIS_URL, else the local ones on
127.0.0.1). The run creates its own database and drops it at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp.web_app
import asyncpg
import attrs
import pytest
import structlog
from aiohttp import web

from engine import FrozenClock, Registry, Runtime, load_text
from storage import PgStore, RedisClient, create_pool, create_redis
from storage.ephemeral import warm
from storage.scratch import create_database, drop_database
from tests import leaks
from tests.sample_flows import SAMPLE_YAML, sample_registry
from web.app import create_app
from web.logs import configure_logging
from web.settings import Settings

ADMIN_URL = os.environ.get("TEST_DATABASE_URL") or os.environ.get(
    "DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = os.environ.get("TEST_REDIS_URL") or os.environ.get(
    "REDIS_URL") or "redis://127.0.0.1:6379/0"


# -- logs, and the leak scan that runs after everything -----------------------------


def pytest_configure(config: pytest.Config) -> None:
    """Log as production does (JSON), at every level, and search every line rendered for
    the ID and phone numbers the tests use (tests/leaks.py)."""
    configure_logging("json", "debug")
    structlog.configure(processors=[*structlog.get_config()["processors"], leaks.tee],
                        # Loggers read the configuration each time: a test that changes
                        # it (the CLI, a benchmark) changes it for itself only.
                        cache_logger_on_first_use=False)


@pytest.fixture(autouse=True)
def _logging_as_configured() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(autouse=True)
def _apps_let_go() -> Iterator[None]:
    """Let each test's applications go when it ends.

    aiohttp keeps the middleware chain it builds for a handler in a cache of 1,024
    entries keyed by the handler and its applications: one server has one application,
    but a worker of this suite makes a thousand, each with its pool, flows and routes,
    and that cache held them all (1.8 million objects: a full garbage collection then
    stopped the event loop for two seconds, long enough for a pool acquire to time out
    in the middle of a test).
    """
    yield
    clear = getattr(aiohttp.web_app, "_cached_build_middleware", None)
    if clear is not None:
        clear.cache_clear()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests marked ``after_everything`` last, when every other test has left its
    data and log lines behind, and the modules that start processes or browsers first."""
    slow_modules = {item.path for item in items
                    if item.get_closest_marker("slow") or item.get_closest_marker("browser")}

    def order(item: pytest.Item) -> int:
        if item.get_closest_marker("after_everything"):
            return 2
        return 0 if item.path in slow_modules else 1

    # Modules with slow tests first, so that the workers of `pytest -n` (make test) are
    # not left waiting on one long module at the end; modules stay whole (a stable sort).
    items.sort(key=order)
    leaks.SEARCHED["platform tests collected"] = sum(
        "platform" in getattr(item, "fixturenames", ()) for item in items)
    leaks.AT_REST["collected"] = any(item.path.name == "test_at_rest.py" for item in items)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Search what each test wrote to the captured stdout and stderr (log lines of any
    format, from any logger), once all of its phases are over."""
    if report.when == "teardown":
        text = "\n".join(content for name, content in report.sections
                         if name.startswith("Captured "))
        leaks.search(f"the output of {report.nodeid}", text, "tests' captured output")


async def _search_redis(client: RedisClient, prefix: str) -> None:
    """Search every value a platform test left in Redis but the sandbox's own (its SMS
    inbox, face sessions and real-name pairs show phone and ID numbers by design)."""
    async for raw_key in client.scan_iter(match=f"{prefix}*"):
        key = raw_key.decode("utf-8", "replace")
        if key.removeprefix(prefix).startswith("sandbox:"):
            continue
        kind = (await client.type(raw_key)).decode()
        if kind == "string":
            values = [await client.get(raw_key)]
        elif kind == "list":
            values = await client.lrange(raw_key, 0, -1)
        elif kind == "hash":
            values = [v for pair in (await client.hgetall(raw_key)).items() for v in pair]
        else:
            values = list(await client.smembers(raw_key)) if kind == "set" else []
        text = key + "\n" + "\n".join(v.decode("latin-1") for v in values if v is not None)
        leaks.search(f"redis key {key.removeprefix(prefix)}", text, "redis keys")


async def search_and_clear(client: RedisClient, prefix: str) -> None:
    """Search what is left under ``prefix`` (``_search_redis``), then delete it."""
    await _search_redis(client, prefix)
    left = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if left:
        await client.delete(*left)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database of this test run's own, migrated; dropped afterwards."""
    name = f"flows_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"

    dsn = asyncio.run(create_database(ADMIN_URL, name, leftovers_of="flows_test"))
    yield dsn
    search_then_drop(dsn, name)


def search_then_drop(dsn: str, name: str) -> None:
    """Drop a database of the run; first search it, on a worker that leaves its search
    to the one running tests/test_at_rest.py (which searches its own in the test)."""
    try:
        if _searching_for_another_worker():
            asyncio.run(leaks.search_database(dsn))
    finally:
        asyncio.run(drop_database(ADMIN_URL, name))


def _searching_for_another_worker() -> bool:
    """Whether this is a pytest-xdist worker that leaves its search to the worker running
    tests/test_at_rest.py (tests/leaks.py)."""
    name, count = leaks.worker()
    return bool(name) and count > 1 and leaks.AT_REST["collected"] \
        and not leaks.AT_REST["ran"]


@pytest.fixture(scope="session", autouse=True)
def _search_left_for_the_test(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Set up before, and so torn down after, every other session fixture (the database's
    search among them): leave what this worker found for tests/test_at_rest.py."""
    yield
    if _searching_for_another_worker():
        leaks.leave_for_the_search(tmp_path_factory.getbasetemp().parent / "at-rest")


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    """This process's Redis key prefix. The tests that use ``redis_client`` clear it
    after them; what other tests left after the last of those (a limit counted by an
    app under test) is searched and cleared as the run ends."""
    prefix = f"flows-test-{uuid.uuid4().hex[:8]}:"
    yield prefix

    async def clear() -> None:
        client = create_redis(REDIS_URL)
        try:
            await search_and_clear(client, prefix)
        finally:
            await client.aclose()

    asyncio.run(clear())


@pytest.fixture(scope="session")
def backends() -> dict[str, Any]:
    """Settings that say how PostgreSQL and Redis are reached; tests/scaleout/ puts
    PgBouncer and a Redis Cluster there."""
    return {"redis_url": REDIS_URL}


def redis_of(backends: dict[str, Any]) -> RedisClient:
    """A client of the tests' Redis, a single server or a cluster."""
    return create_redis(backends["redis_url"], cluster=backends.get("redis_cluster", False),
                        sentinels=backends.get("redis_sentinels", ()),
                        sentinel_master=backends.get("redis_sentinel_master", "mymaster"))


@pytest.fixture
async def redis_client(redis_prefix: str,
                       backends: dict[str, Any]) -> AsyncIterator[RedisClient]:
    client = redis_of(backends)
    await warm(client)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """flowctl configures structlog on capsys' stderr: put the suite's configuration back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))


@pytest.fixture
def registry() -> Registry:
    return sample_registry()


@pytest.fixture
async def pool(database_url: str, backends: dict[str, Any]) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, min_size=1, max_size=60,
                          transaction_pooling=backends.get("db_transaction_pooling", False))
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
def settings(database_url: str, redis_prefix: str, flows_file: Path,
             backends: dict[str, Any]) -> Settings:
    return Settings(database_url=database_url, redis_prefix=redis_prefix,
                    flows_file=str(flows_file), flow_modules=("tests.sample_flows",),
                    workers=False, log_format="console", pool_max=60, **backends)


def watch_problem_types(app: web.Application) -> list[str]:
    """Note every problem answer whose type, or a field error's id, has no page."""
    from web import keys
    from web.catalogue import catalogue

    unknown: list[str] = []

    async def check(request: web.Request, response: web.StreamResponse) -> None:
        if response.content_type != "application/problem+json" or \
                not isinstance(response, web.Response) or not isinstance(response.body, bytes):
            return
        body = json.loads(response.body)
        ids = [body["error_id"], *(e["error_id"] for e in body.get("errors", []))]
        runtime = request.app.get(keys.RUNTIME)
        known = catalogue(runtime.flows if runtime else None,
                          request.app[keys.SETTINGS].flow_modules)
        if body.get("type") != f"/problems/{body['error_id']}":
            unknown.append(f"type {body.get('type')!r} of {body['error_id']}")
        unknown.extend(i for i in ids if i not in known)

    app.on_response_prepare.append(check)
    return unknown


@pytest.fixture
def app(settings: Settings, clock: FrozenClock) -> Iterator[web.Application]:
    app = create_app(settings, clock=clock)
    unknown = watch_problem_types(app)
    yield app
    assert unknown == [], f"problem answers with no page under /problems/: {unknown}"


ROOT = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def serve_platform(database_url: str, redis_prefix: str, clock: FrozenClock,
                         **overrides: Any) -> AsyncIterator[Any]:
    """The whole platform on the real flows.yaml, served over HTTP on a known port;
    ``overrides``: settings that differ (a systems file of the test's own)."""
    from aiohttp.test_utils import TestClient, TestServer, unused_port

    from tests.platform import Platform

    port = unused_port()
    prefix = f"{redis_prefix}{uuid.uuid4().hex[:6]}:"
    settings = Settings(database_url=database_url, redis_url=REDIS_URL, redis_prefix=prefix,
                        flows_file=str(ROOT / "flows.yaml"), flow_modules=("flows",),
                        workers=False, log_format="console", pool_max=20, port=port,
                        public_url=f"http://127.0.0.1:{port}",
                        argon2_memory_kib=1024, argon2_time_cost=1)
    settings = attrs.evolve(settings, **overrides)
    app = create_app(settings, clock=clock)
    unknown = watch_problem_types(app)
    client = TestClient(TestServer(app, host="127.0.0.1", port=port))
    try:
        await client.start_server()
    except BaseException:
        # A start that failed part way (a database too slow for a statement's timeout):
        # stop what did start (its pool, its tasks), or they outlive the test and the
        # loop's end waits on them.
        await client.close()
        raise
    try:
        yield Platform(client, app)
    finally:
        await client.close()
        cleaner = create_redis(settings.redis_url or REDIS_URL, **settings.redis_topology())
        await search_and_clear(cleaner, prefix)
        await cleaner.aclose()
    assert unknown == [], f"problem answers with no page under /problems/: {unknown}"


@pytest.fixture
async def platform(database_url: str, redis_prefix: str, clock: FrozenClock,
                   backends: dict[str, Any]) -> AsyncIterator[Any]:
    """The whole platform on the real flows.yaml, served over HTTP on a known port."""
    async with serve_platform(database_url, redis_prefix, clock, **backends) as served:
        yield served

