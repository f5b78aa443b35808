"""PostgreSQL or Redis down, or frozen: 503 with Retry-After, short logs, recovery.

The outages are real: servers of the tests' own (tests/throwaway.py) killed with
SIGKILL, stopped like a crash, or frozen with SIGSTOP; or a Redis URL nobody listens on.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import attrs
import pytest
import redis
import structlog
from aiohttp import web

from engine import FrozenClock
from storage import migrate_database
from tests.sample_flows import SAMPLE_YAML
from tests.throwaway import Postgres, Redis, free_port
from tests.web import test_processes as processes
from tests.web.test_processes import (
    DETAILS,
    HOUR,
    Server,
    base_env,
    db,
    set_offset,
    start_servers,
    wait_for,
)
from web.app import create_app
from web.settings import Settings

# Starting needs Redis (its limit counts there); stepping the sample flow does not.
LIMITED_YAML = SAMPLE_YAML.replace(
    "    expires_in: 7d\n",
    "    expires_in: 7d\n    start_limits:\n"
    "      - {name: starts, by: [client], max: 1000, per: 1m}\n")
COOKIE = {"Cookie": "session=a-token-from-before-the-outage"}
PROBLEM = "application/problem+json"


def assert_unavailable(status: int, headers: Any, body: dict[str, Any], error_id: str) -> None:
    assert status == 503, body
    assert headers["Content-Type"].startswith(PROBLEM)
    assert int(headers["Retry-After"]) > 0
    assert body["error_id"] == error_id
    assert body["message"]["zh"]
    assert body["message"]["en"]


# -- in process: Redis at an address nobody listens on ----------------------------------


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """The log events, captured (and not rendered: tracebacks in a console take long)."""
    with structlog.testing.capture_logs() as captured:
        yield captured


@pytest.fixture
def no_redis_app(settings: Settings, clock: FrozenClock, tmp_path: Path) -> web.Application:
    flows = tmp_path / "limited.yaml"
    flows.write_text(LIMITED_YAML, encoding="utf-8")
    return create_app(attrs.evolve(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0",
                                   flows_file=str(flows), redis_timeout=2.0), clock=clock)


async def test_without_redis_what_needs_no_redis_answers_and_the_rest_gets_503(
        aiohttp_client: Any, no_redis_app: web.Application,
        logs: list[dict[str, Any]]) -> None:
    client = await aiohttp_client(no_redis_app)

    # Listing flows, health, reading and stepping an instance: no Redis needed, even
    # with a session cookie on a route that never asks who is calling.
    for headers in ({}, COOKIE):
        resp = await client.get("/api/flows", headers=headers)
        assert resp.status == 200, await resp.text()
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["checks"]["database"] == "ok"
    assert (await resp.json())["checks"]["redis"].startswith("down")

    # Starting counts the start against a limit, in Redis.
    resp = await client.post("/api/flows/signup")
    assert_unavailable(resp.status, resp.headers, await resp.json(), "cache_unavailable")

    # A cookie whose session cannot be read: not "anonymous", a 503, where it matters.
    resp = await client.get("/api/session", headers=COOKIE)
    assert_unavailable(resp.status, resp.headers, await resp.json(), "cache_unavailable")
    resp = await client.get("/api/session")
    assert resp.status == 401
    failed = [e for e in logs if e["event"] == "session_lookup_failed"]
    assert failed
    assert [e["event"] for e in logs if e["event"] == "request_failed"] == []


async def test_with_redis_down_a_signed_in_step_is_refused_not_taken_as_anonymous(
        aiohttp_client: Any, app: web.Application, settings: Settings,
        clock: FrozenClock, logs: list[dict[str, Any]]) -> None:
    # Started while Redis was there (the sample flow starts without a limit).
    client = await aiohttp_client(app)
    resp = await client.post("/api/flows/signup")
    assert resp.status == 201
    iid = (await resp.json())["id"]
    # The same browser, on a server whose Redis is gone: its cookies, and the session's.
    kept = {m.key: m.value for m in client.session.cookie_jar}
    signed_in = {**kept, "session": "a-token-from-before-the-outage"}

    down = create_app(attrs.evolve(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"),
                      clock=clock)
    client = await aiohttp_client(down)
    resp = await client.post(f"/api/flows/{iid}/events/submit", json=DETAILS,
                             cookies=signed_in)
    assert_unavailable(resp.status, resp.headers, await resp.json(), "cache_unavailable")
    resp = await client.get(f"/api/flows/{iid}", cookies=signed_in)
    assert_unavailable(resp.status, resp.headers, await resp.json(), "cache_unavailable")
    # Nothing was stepped; without a session the same step needs no Redis and is taken.
    resp = await client.get(f"/api/flows/{iid}", cookies=kept)
    assert (await resp.json())["state"] == "details"
    resp = await client.post(f"/api/flows/{iid}/events/submit", json=DETAILS, cookies=kept)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["state"] == "code"


# -- server processes on throwaway servers ----------------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    try:
        asyncio.run(migrate_database(server.dsn))
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def cache() -> Iterator[Redis]:
    server = Redis()
    try:
        yield server
    finally:
        server.close()


servers = processes.servers  # a fixture, shared


# Short bounds, so frozen servers answer soon; the workers' rounds are fast, so an
# outage would flood the log if nothing kept it short.
TIMEOUTS = {"DB_ACQUIRE_TIMEOUT": "1", "DB_COMMAND_TIMEOUT": "1.5",
            "DB_STATEMENT_TIMEOUT": "1", "REDIS_TIMEOUT": "1"}


@pytest.fixture
def outage_env(postgres: Postgres, cache: Redis, tmp_path: Path) -> dict[str, str]:
    flows = tmp_path / "limited.yaml"
    flows.write_text(LIMITED_YAML, encoding="utf-8")
    clock = tmp_path / "clock"
    set_offset(clock, 0)
    data = tmp_path / "data"
    data.mkdir()
    return {**base_env(), **TIMEOUTS, "DATABASE_URL": postgres.dsn, "REDIS_URL": cache.url,
            "REDIS_PREFIX": "outage:", "FLOWS_FILE": str(flows), "PORT": str(free_port()),
            "CLOCK_FILE": str(clock), "DATA_DIR": str(data), "TIMER_INTERVAL": "0.05",
            "OUTBOX_INTERVAL": "0.05"}


# One client, which keeps the cookies a server hands out (as a browser does).
_CLIENT = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))


def call(server: Server, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, Any], float]:
    """(status, headers, body, seconds): a call that waits long enough to see a hang.

    A ``Cookie`` header given here replaces the cookies the client keeps."""
    request = urllib.request.Request(  # noqa: S310 - our own server
        server.url + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})})
    started = time.monotonic()
    try:
        with _CLIENT.open(request, timeout=60) as resp:
            status, head, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        status, head, raw = exc.code, exc.headers, exc.read()
    return status, head, json.loads(raw or b"{}"), time.monotonic() - started


def start_at_code(server: Server) -> str:
    status, _, body, _ = call(server, "POST", "/api/flows/signup")
    server.expect(201, status, body)
    iid = str(body["id"])
    status, _, body, _ = call(server, "POST", f"/api/flows/{iid}/events/submit", DETAILS)
    server.expect(200, status, body)
    return iid


def starts_again(server: Server, what: str) -> None:
    """Wait until a flow starts again (which needs the database and Redis)."""
    wait_for(f"{what} to serve again",
             lambda: call(server, "POST", "/api/flows/signup")[0] == 201)


def outage_lines(server: Server) -> dict[tuple[str, str], int]:
    """How many lines each (event, dependency) got; fails on any traceback."""
    counts: dict[tuple[str, str], int] = {}
    for line in server.log():
        assert "exception" not in line, line
        if "dependency" in line:
            key = (line["event"], line["dependency"])
            counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.mark.slow
def test_a_dead_database_or_redis_answers_503_logs_little_and_the_server_recovers(
        servers: list[Server], outage_env: dict[str, str], postgres: Postgres,
        cache: Redis, tmp_path: Path) -> None:
    (server,) = start_servers(servers, [outage_env], tmp_path)
    began = time.monotonic()
    waiting = start_at_code(server)
    status, _, fresh, _ = call(server, "POST", "/api/flows/signup")
    assert status == 201

    # PostgreSQL stops as in a crash: what needs it gets 503, the rest answers.
    postgres.kill()
    try:
        for _ in range(20):
            status, head, body, _ = call(server, "POST", "/api/flows/signup")
            assert_unavailable(status, head, body, "database_unavailable")
            status, head, body, _ = call(server, "POST",
                                         f"/api/flows/{fresh['id']}/events/submit", DETAILS)
            assert_unavailable(status, head, body, "database_unavailable")
        assert call(server, "GET", "/api/flows")[0] == 200
        assert call(server, "GET", "/healthz")[0] == 200
        status, _, body, _ = call(server, "GET", "/readyz")
        assert (status, body["checks"]["redis"]) == (503, "ok")
        # The timer and outbox workers go round (every 50 ms) and fail all along.
        wait_for("the workers to fail", lambda: {("timer_round_failed", "database"),
                                                 ("outbox_round_failed", "database")}
                 <= set(outage_lines(server)))
    finally:
        postgres.start()
    starts_again(server, "the database")

    # Redis gone (SIGKILL): starting (its limit) and whoever shows a session cookie get
    # 503; a step without a cookie and the list of flows need no Redis.
    cache.kill()
    try:
        for _ in range(20):
            status, head, body, _ = call(server, "POST", "/api/flows/signup")
            assert_unavailable(status, head, body, "cache_unavailable")
            status, head, body, _ = call(server, "GET", f"/api/flows/{waiting}",
                                         headers=COOKIE)
            assert_unavailable(status, head, body, "cache_unavailable")
        status, _, body, _ = call(server, "POST", f"/api/flows/{fresh['id']}/events/submit",
                                  DETAILS)
        server.expect(200, status, body)
        assert body["state"] == "code"
        assert call(server, "GET", "/api/flows", headers=COOKIE)[0] == 200
        wait_for("the reload listener to notice",
                 lambda: ("reload_listener_lost_redis", "cache") in outage_lines(server))
    finally:
        cache.start()
    starts_again(server, "Redis")

    # Each kind of failure was a line or so, however many requests and rounds failed.
    lines = outage_lines(server)
    assert set(lines) >= {("dependency_unavailable", "database"),
                          ("dependency_unavailable", "cache"),
                          ("timer_round_failed", "database"),
                          ("session_lookup_failed", "cache")}, lines
    windows = 1 + int((time.monotonic() - began) // 30)
    assert max(lines.values()) <= windows, lines

    # Everything in the background resumed: the reload listener...
    wait_for("the listener to resume", lambda: server.events("reload_listener_resumed"))
    redis.Redis.from_url(cache.url).publish("outage:reload", "reload")
    wait_for("a reload over Redis", lambda: server.events("flows_reloaded"))
    # ...the outbox (it tries to send the text message of a step taken now; the sample
    # message is no real one, and the platform's SMS sender refuses it)...
    after = start_at_code(server)
    wait_for("the outbox to try", lambda: db(
        postgres.dsn, "SELECT 1 FROM outbox WHERE instance_id = $1::uuid"
                      " AND attempts >= 1", after))
    # ...and the timers: the instance waiting since before the outages lapses.
    set_offset(Path(outage_env["CLOCK_FILE"]), 72 * HOUR + 60)
    wait_for("the timeout to fire", lambda: db(
        postgres.dsn, "SELECT 1 FROM flow_events WHERE instance_id = $1::uuid"
                      " AND trigger = 'expire'", waiting))
    assert server.proc.poll() is None


# Acquire, command and Redis bounds are 1-1.5 s: "no hang" is well under a minute.
FROZEN_BOUND = 15.0


def answers_503_soon(server: Server, method: str, path: str, error_id: str) -> None:
    status, head, body, took = call(server, method, path)
    assert_unavailable(status, head, body, error_id)
    assert took < FROZEN_BOUND, f"{method} {path}: {took:.1f} s"


@pytest.mark.slow
def test_a_frozen_database_or_redis_answers_503_within_the_bounds(
        servers: list[Server], outage_env: dict[str, str], postgres: Postgres,
        cache: Redis, tmp_path: Path) -> None:
    (server,) = start_servers(servers, [outage_env], tmp_path)
    iid = start_at_code(server)

    postgres.freeze()
    try:
        answers_503_soon(server, "POST", "/api/flows/signup", "database_unavailable")
        answers_503_soon(server, "GET", f"/api/flows/{iid}", "database_unavailable")
        assert call(server, "GET", "/api/flows")[0] == 200
    finally:
        postgres.thaw()
    wait_for("the database to serve again",
             lambda: call(server, "GET", f"/api/flows/{iid}")[0] == 200)

    cache.freeze()
    try:
        answers_503_soon(server, "POST", "/api/flows/signup", "cache_unavailable")
        status, _, body, _ = call(server, "GET", f"/api/flows/{iid}")
        assert (status, body["state"]) == (200, "code")
    finally:
        cache.thaw()
    starts_again(server, "Redis")

    # Stopped while the database is frozen: it stops, cleanly, all the same.
    postgres.freeze()
    try:
        began = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - began < FROZEN_BOUND
    finally:
        postgres.thaw()
    tracebacks = [line[-1500:] for line in server.tail(200).splitlines() if "Traceback" in line]
    assert tracebacks == []
