"""create_app with an invalid flows file: the set last served, from the database, or no start.

Each test has a database of its own: which set was served last is the point.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import attrs
import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from engine import DefinitionError, FrozenClock, load_text
from storage.scratch import create_database, drop_database
from tests.conftest import ADMIN_URL
from tests.sample_flows import SAMPLE_YAML, sample_registry
from web import keys
from web.app import create_app
from web.serve import _check_flows
from web.settings import Settings

V2_YAML = SAMPLE_YAML.replace("en: Test sign-up}", "en: Test sign-up v2}")
BROKEN_YAML = SAMPLE_YAML.replace("        dest: lapsed", "        dest: nowhere")


def version(text: str) -> str:
    return load_text(text, registry=sample_registry()).flows["signup"].version


@pytest.fixture
async def fresh_settings(settings: Settings) -> AsyncIterator[Settings]:
    """The run's settings on a database no server has served from yet."""
    name = f"flows_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    dsn = await create_database(ADMIN_URL, name)
    yield attrs.evolve(settings, database_url=dsn)
    await drop_database(ADMIN_URL, name)


def write_flows(settings: Settings, text: str) -> None:
    Path(settings.flows_file).write_text(text, encoding="utf-8")


async def served(settings: Settings, text: str, clock: FrozenClock) -> str:
    """Start a server on ``text`` and stop it; the signup version it served."""
    write_flows(settings, text)
    async with TestClient(TestServer(create_app(settings, clock=clock))) as client:
        flows = (await (await client.get("/api/flows")).json())["flows"]
        return str(flows[0]["version"])


async def test_an_invalid_file_at_start_serves_the_set_served_last(
        fresh_settings: Settings, clock: FrozenClock) -> None:
    v1, v2 = version(SAMPLE_YAML), version(V2_YAML)
    assert await served(fresh_settings, SAMPLE_YAML, clock) == v1
    assert await served(fresh_settings, V2_YAML, clock) == v2
    # Back to the first: the newest set served, not the newest version stored.
    assert await served(fresh_settings, SAMPLE_YAML, clock) == v1

    write_flows(fresh_settings, BROKEN_YAML)
    app = create_app(fresh_settings, clock=clock)  # no longer refuses here
    with structlog.testing.capture_logs() as logs:
        async with TestClient(TestServer(app)) as client:
            flows = (await (await client.get("/api/flows")).json())["flows"]
            assert [(f["name"], f["version"]) for f in flows] == [("signup", v1)]
            resp = await client.post("/api/flows/signup")
            assert resp.status == 201, await resp.text()
            assert (await resp.json())["definition_version"] == v1
            assert b"flows_file_invalid 1.0" in app[keys.METRICS].render()

            # A reload of the still broken file keeps it; once fixed, the file serves.
            assert await app[keys.RELOAD]() is False
            write_flows(fresh_settings, V2_YAML)
            assert await app[keys.RELOAD]() is True
            flows = (await (await client.get("/api/flows")).json())["flows"]
            assert flows[0]["version"] == v2
            assert b"flows_file_invalid 0.0" in app[keys.METRICS].render()
    (fallback,) = [e for e in logs if e["event"] == "flows_file_invalid_serving_stored"]
    assert fallback["log_level"] == "error"
    assert fallback["file"] == fresh_settings.flows_file
    assert any("undefined state 'nowhere'" in e for e in fallback["errors"]), fallback
    assert fallback["versions"] == {"signup": v1}

    # The set reloaded is the one served last now.
    write_flows(fresh_settings, BROKEN_YAML)
    async with TestClient(TestServer(create_app(fresh_settings, clock=clock))) as client:
        flows = (await (await client.get("/api/flows")).json())["flows"]
        assert flows[0]["version"] == v2


async def test_an_invalid_file_and_nothing_served_before_refuse_to_start(
        fresh_settings: Settings, clock: FrozenClock) -> None:
    write_flows(fresh_settings, BROKEN_YAML)
    with pytest.raises(DefinitionError) as refused:
        await _check_flows(fresh_settings)  # what `serve --workers N` checks before forking
    assert "undefined state 'nowhere'" in str(refused.value)
    server = TestServer(create_app(fresh_settings, clock=clock))
    with pytest.raises(DefinitionError):
        await server.start_server()
    await server.close()

    # Once a valid file has served, the same broken file starts.
    await served(fresh_settings, SAMPLE_YAML, clock)
    write_flows(fresh_settings, BROKEN_YAML)
    await _check_flows(fresh_settings)


async def test_served_sets_are_recorded_once_each_time_they_change(
        fresh_settings: Settings, clock: FrozenClock) -> None:
    """Restarts on the same file add no rows: the table is a log of what changed."""
    for text in (SAMPLE_YAML, SAMPLE_YAML, V2_YAML, V2_YAML, SAMPLE_YAML):
        await served(fresh_settings, text, clock)
    conn = await asyncpg.connect(fresh_settings.database_url)
    try:
        rows = await conn.fetch("SELECT versions FROM flow_sets ORDER BY id")
    finally:
        await conn.close()
    assert [r["versions"] for r in rows] == [[version(SAMPLE_YAML)], [version(V2_YAML)],
                                            [version(SAMPLE_YAML)]]
