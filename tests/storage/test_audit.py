"""flowctl audit: every stored history replays to its live row, or the odd one is named."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from engine import CompiledFlow, FrozenClock, Runtime, load_text
from engine.loader import build_flow
from engine.replay import AuditFinding, audit
from storage import PgStore
from tests.sample_flows import SAMPLE_YAML, sample_registry
from web.cli import main as flowctl

DETAILS = {"name": "Ada", "password": "pw-Secret-1", "agree": True}


async def _run_audit(store: PgStore, **filters: Any) -> tuple[Any, list[AuditFinding]]:
    registry = sample_registry()
    findings: list[AuditFinding] = []

    async def compiled(version: str) -> CompiledFlow:
        content = await store.definition(version)
        assert content is not None
        return CompiledFlow(build_flow(content), registry)

    summary = await audit(store.histories(batch=2, **filters), compiled, findings.append)
    return summary, findings


async def _three_instances(store: PgStore, clock: FrozenClock) -> list[str]:
    registry = sample_registry()
    runtime = Runtime(store, clock, registry, load_text(SAMPLE_YAML, registry=registry))
    await runtime.publish()
    ids = []
    for n in range(3):
        iid = (await runtime.start("signup")).instance.id
        ids.append(iid)
        if n >= 1:
            await runtime.advance(iid, "submit", DETAILS)
            await runtime.advance(iid, "confirm", {"code": "000000"})
        if n == 2:
            await runtime.advance(iid, "confirm", {"code": "123456"})
        clock.advance(timedelta(hours=1))
    return ids


async def test_untouched_histories_all_verify_page_by_page(store: PgStore,
                                                          clock: FrozenClock) -> None:
    ids = await _three_instances(store, clock)
    summary, findings = await _run_audit(store)
    assert findings == []
    assert summary.ok
    assert (summary.instances, summary.events, len(summary.versions)) == (3, 1 + 3 + 4, 1)
    # Filters by start time: the first instance started an hour before the second.
    first = (await store.load(ids[0]))[0].created_at
    summary, _ = await _run_audit(store, since=first + timedelta(minutes=30))
    assert summary.instances == 2
    summary, _ = await _run_audit(store, until=first + timedelta(minutes=30))
    assert summary.instances == 1
    summary, _ = await _run_audit(store, flow="nothing_here")
    assert summary.instances == 0


async def test_a_changed_event_and_a_changed_row_are_each_named(store: PgStore,
                                                               clock: FrozenClock,
                                                               own_db: str) -> None:
    ids = await _three_instances(store, clock)
    conn = await asyncpg.connect(own_db)
    try:
        # History refuses changes; only someone who can switch that off could do this.
        await conn.execute("ALTER TABLE flow_events DISABLE TRIGGER USER")
        await conn.execute("UPDATE flow_events SET facts = '{\"check_code\": {\"ok\": true}}'"
                           " WHERE instance_id = $1 AND seq = 3", uuid.UUID(ids[1]))
        await conn.execute("UPDATE flow_instances SET state = 'done' WHERE id = $1",
                           uuid.UUID(ids[0]))
    finally:
        await conn.close()
    summary, findings = await _run_audit(store)
    assert not summary.ok
    assert summary.findings == 2
    found = {f.instance_id: (f.seq, f.what) for f in findings}
    assert found == {ids[0]: (1, "state"), ids[1]: (3, "hash")}


@pytest.mark.usefixtures("keep_logging")
async def test_flowctl_audit_prints_findings_and_a_summary(
        store: PgStore, clock: FrozenClock, own_db: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    await _three_instances(store, clock)
    monkeypatch.setenv("DATABASE_URL", own_db)
    monkeypatch.setenv("FLOW_MODULES", "tests.sample_flows")
    # The CLI runs its own event loop: call it from a thread, as a shell would.
    code = await asyncio.to_thread(flowctl, ["audit"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 instance(s), 8 event(s), 1 definition version(s): every chain verifies" in out
    conn = await asyncpg.connect(own_db)
    try:
        await conn.execute("UPDATE flow_instances SET context = '{}' WHERE state = 'done'")
    finally:
        await conn.close()
    code = await asyncio.to_thread(flowctl, ["audit", "--json", "--flow", "signup"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert [x["kind"] for x in lines] == ["finding", "summary"]
    assert lines[0]["what"] == "context"
    assert lines[1] == {"kind": "summary", "ok": False, "instances": 3, "events": 8,
                        "versions": 1, "findings": 1}
    assert await asyncio.to_thread(flowctl, ["audit", "--since", "yesterday"]) == 2


async def test_parts_of_the_histories_are_disjoint_and_cover_every_instance(
        store: PgStore, clock: FrozenClock) -> None:
    ids = [*await _three_instances(store, clock), *await _three_instances(store, clock)]
    seen: list[str] = []
    for k in range(3):
        seen += [instance.id async for instance, _ in store.histories(batch=2, part=(k, 3))]
    assert sorted(seen) == sorted(ids)


@pytest.mark.usefixtures("keep_logging")
async def test_flowctl_audit_with_jobs_finds_and_counts_what_one_process_does(
        store: PgStore, clock: FrozenClock, own_db: str, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    for _ in range(3):
        await _three_instances(store, clock)
    conn = await asyncpg.connect(own_db)
    try:
        await conn.execute("UPDATE flow_instances SET context = '{}' WHERE state = 'done'")
    finally:
        await conn.close()
    monkeypatch.setenv("DATABASE_URL", own_db)
    monkeypatch.setenv("FLOW_MODULES", "tests.sample_flows")
    answers = []
    for jobs in ("1", "3"):
        code = await asyncio.to_thread(flowctl, ["audit", "--json", "--jobs", jobs])
        lines = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
        answers.append((code, sorted(x["instance_id"] for x in lines[:-1]), lines[-1]))
    assert answers[0] == answers[1]
    assert answers[0][0] == 1
    assert len(answers[0][1]) == 3
    assert answers[0][2] == {"kind": "summary", "ok": False, "instances": 9, "events": 24,
                             "versions": 1, "findings": 3}
    with pytest.raises(SystemExit) as refused:
        await asyncio.to_thread(flowctl, ["audit", "--jobs", "0"])
    assert refused.value.code == 2
