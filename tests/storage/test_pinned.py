"""A version active instances are pinned to must still run with the code deployed."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from engine import FlowSet, FrozenClock, Registry, Runtime, load_text
from storage import PgStore
from tests.sample_flows import SAMPLE_YAML, register, sample_registry
from web.cli import main as flowctl

DETAILS = {"name": "Ada", "password": "pw-Secret-1", "agree": True}


def _registry_without(*names: str) -> Registry:
    """The sample names, less some: what a deploy that dropped them would register."""
    registry = Registry()
    register(registry)
    for table in (registry.guards, registry.actions, registry.validators):
        for name in names:
            table.pop(name, None)
    return registry


async def _instances(store: PgStore, clock: FrozenClock) -> Runtime:
    registry = sample_registry()
    runtime = Runtime(store, clock, registry, load_text(SAMPLE_YAML, registry=registry))
    await runtime.publish()
    active = (await runtime.start("signup")).instance.id
    await runtime.advance(active, "submit", DETAILS)
    return runtime


async def test_a_dropped_guard_or_action_is_named_with_the_instances_it_strands(
        store: PgStore, clock: FrozenClock) -> None:
    runtime = await _instances(store, clock)
    assert await runtime.check_pinned() == []
    # The file no longer has this version (or the flow); its instances still run on it.
    later = Runtime(store, clock, _registry_without("code_ok", "send_code", "nonempty"),
                    FlowSet({}))
    (problem,) = await later.check_pinned()
    assert (problem.flow, problem.version, problem.active_instances) == (
        "signup", runtime.flows.flows["signup"].version, 1)
    for missing in ("unknown guard 'code_ok'", "unknown action 'send_code'",
                    "unknown validator 'nonempty'"):
        assert missing in problem.problem


async def test_finished_instances_pin_nothing(store: PgStore, clock: FrozenClock) -> None:
    runtime = await _instances(store, clock)
    (active,) = [v for v, _, _ in await store.versions_in_use()]
    iid = (await runtime.start("signup")).instance.id
    await runtime.advance(iid, "submit", DETAILS)
    await runtime.advance(iid, "confirm", {"code": "123456"})
    assert [(v, n) for v, _, n in await store.versions_in_use()] == [(active, 1)]


@pytest.mark.usefixtures("keep_logging")
async def test_flowctl_versions_check(store: PgStore, clock: FrozenClock, own_db: str,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    await _instances(store, clock)
    monkeypatch.setenv("DATABASE_URL", own_db)
    monkeypatch.setenv("FLOW_MODULES", "tests.sample_flows")
    assert await asyncio.to_thread(flowctl, ["versions", "--check"]) == 0
    captured: Any = capsys.readouterr()
    assert "every version with active instances runs" in captured.err
    # Code that registers other names (the benchmark's) cannot run the sample flow.
    monkeypatch.setenv("FLOW_MODULES", "bench.flow")
    assert await asyncio.to_thread(flowctl, ["versions", "--check"]) == 1
    captured = capsys.readouterr()
    line = captured.out.strip()
    assert line.startswith("signup\t")
    assert "\t1 active\t" in line
    assert "unknown guard 'code_ok'" in line


async def test_stored_content_this_code_cannot_build_is_a_problem_not_a_crash(
        store: PgStore, clock: FrozenClock, own_db: str) -> None:
    runtime = await _instances(store, clock)
    version = runtime.flows.flows["signup"].version
    conn = await asyncpg.connect(own_db)
    try:
        # As if an older loader had written it: a key this code needs is missing.
        await conn.execute("UPDATE flow_definitions SET content = content::jsonb - 'states'"
                           " WHERE version = $1", version)
    finally:
        await conn.close()
    later = Runtime(store, clock, sample_registry(), FlowSet({}))
    (problem,) = await later.check_pinned()
    assert problem.version == version
    assert problem.problem.startswith("cannot build: KeyError")
