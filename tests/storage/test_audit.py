"""flowctl audit: every stored history replays to its live row, or the odd one is named."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg
import attrs
import orjson
import pytest

from engine import CompiledFlow, Event, FrozenClock, Runtime, load_text
from engine.canonical import GENESIS, chain_hash
from engine.loader import build_flow
from engine.replay import AuditFinding, audit, replay
from engine.step import iso
from storage import PgStore
from tests.sample_flows import SAMPLE_YAML, sample_registry
from tests.web.test_processes import FLOWCTL, ROOT, base_env
from web.cli import main as flowctl

DETAILS = {"name": "Ada", "password": "pw-Secret-1", "agree": True}


async def _run_audit(store: PgStore, clock: FrozenClock | None = None, *, batch: int = 2,
                     fast: bool = True, **filters: Any) -> tuple[Any, list[AuditFinding]]:
    registry = sample_registry()
    findings: list[AuditFinding] = []

    async def compiled(version: str) -> CompiledFlow:
        content = await store.definition(version)
        assert content is not None
        return CompiledFlow(build_flow(content), registry)

    summary = await audit(store.histories(batch=batch, **filters), compiled,
                          findings.append, fast=fast, clock=clock)
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
        seen += [history.id async for history in store.histories(batch=2, part=(k, 3))]
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


async def test_flowctl_audit_forked_jobs_name_what_one_process_names(
        store: PgStore, clock: FrozenClock, own_db: str) -> None:
    # As from a shell: a flowctl process runs no other thread, so --jobs forks its parts
    # (the test above calls flowctl in a thread, which spawns them anew instead).
    ids = [*await _three_instances(store, clock), *await _three_instances(store, clock)]
    conn = await asyncpg.connect(own_db)
    try:
        await conn.execute("ALTER TABLE flow_events DISABLE TRIGGER USER")
        await conn.execute("UPDATE flow_events SET facts = '{\"check_code\": {\"ok\": true}}'"
                           " WHERE instance_id = $1 AND seq = 3", uuid.UUID(ids[4]))
    finally:
        await conn.close()
    env = {**base_env(), "DATABASE_URL": own_db, "LOG_LEVEL": "warning"}

    async def run(jobs: str) -> tuple[int | None, list[Any]]:
        done = await asyncio.create_subprocess_exec(
            *FLOWCTL, "audit", "--json", "--jobs", jobs, env=env, cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(done.communicate(), 60)
        return done.returncode, [json.loads(line) for line in out.splitlines()]

    one, two = await asyncio.gather(run("1"), run("2"))
    assert one == two
    code, lines = two
    assert code == 1
    assert [(x["instance_id"], x["seq"], x["what"]) for x in lines[:-1]] == [(ids[4], 3, "hash")]
    assert lines[-1] == {"kind": "summary", "ok": False, "instances": 6, "events": 16,
                         "versions": 1, "findings": 1}


async def _rewrite(store: PgStore, iid: str, seq: int, change: dict[str, Any],
                   seal: Callable[[Event], str] | None = None) -> None:
    """Rewrite one stored event's input and facts, the chain after it made good and the
    live row made to agree, as only someone who can switch the trigger off could.

    ``seal`` (if given) computes the changed event's hash instead of the canonical form.
    """
    events = await store.events(iid)
    changed = attrs.evolve(events[seq - 1], input={**events[seq - 1].input, **change},
                           facts={**events[seq - 1].facts, **change})
    fields = attrs.asdict(changed, recurse=False)
    del fields["hash"]
    events[seq - 1] = attrs.evolve(changed, hash=seal(changed)) if seal \
        else Event.sealed(**fields)
    for k in range(seq, len(events)):
        fields = attrs.asdict(events[k], recurse=False)
        del fields["hash"]
        events[k] = Event.sealed(**{**fields, "prev_hash": events[k - 1].hash})
    instance, _ = await store.load(iid)
    content = await store.definition(instance.definition_hash)
    assert content is not None
    live = replay(CompiledFlow(build_flow(content), sample_registry()),
                  _canonical_chain(events))
    async with store.pool.acquire() as conn:
        await conn.execute("ALTER TABLE flow_events DISABLE TRIGGER USER")
        for ev in events[seq - 1:]:
            await conn.execute(
                "UPDATE flow_events SET input = $3, facts = $4, prev_hash = $5, hash = $6"
                " WHERE instance_id = $1 AND seq = $2", uuid.UUID(iid), ev.seq, ev.input,
                ev.facts, ev.prev_hash, ev.hash)
        await conn.execute("UPDATE flow_instances SET context = $2, last_hash = $3"
                           " WHERE id = $1", uuid.UUID(iid), live.context, events[-1].hash)


def _canonical_chain(events: list[Event]) -> list[Event]:
    """The same events, each hash as the live step computes it (to replay the row)."""
    out: list[Event] = []
    for ev in events:
        fields = attrs.asdict(ev, recurse=False)
        del fields["hash"]
        out.append(Event.sealed(**{**fields, "prev_hash": out[-1].hash if out else GENESIS}))
    return out


async def test_values_the_json_readers_read_differently_verify_and_forgeries_are_named(
        store: PgStore, clock: FrozenClock, own_db: str) -> None:
    ids = [*await _three_instances(store, clock), *await _three_instances(store, clock)]
    # Written as a step writes them: each reads back as it was hashed, and verifies.
    await _rewrite(store, ids[1], 2, {"big": 2**70, "neg": -(2**64), "tiny": 1e-7,
                                      "small": 0.00005, "large": 1e20, "e": "e-5 0.00001"})
    # Hashed over what orjson reads (a float) and what orjson writes: forged.
    as_read = {"n": float(2**64 + 1)}
    await _rewrite(store, ids[2], 3, {"n": 2**64 + 1}, seal=lambda e: chain_hash(
        e.prev_hash, {**e.body(), "input": {**e.input, **as_read},
                      "facts": {**e.facts, **as_read}}))
    await _rewrite(store, ids[4], 2, {"x": 1e-7}, seal=lambda e: hashlib.sha256(
        e.prev_hash.encode() + orjson.dumps(e.body(), option=orjson.OPT_SORT_KEYS)
    ).hexdigest())
    conn = await asyncpg.connect(own_db)
    try:
        # What json columns hold but no step writes: a finding each, not an error.
        await conn.execute("ALTER TABLE flow_events DISABLE TRIGGER USER")
        await conn.execute("UPDATE flow_events SET effects = '{\"x\": 1e400}'"
                           " WHERE instance_id = $1 AND seq = 1", uuid.UUID(ids[0]))
        await conn.execute("UPDATE flow_events SET input = '{\"x\": \"\\ud800\"}'"
                           " WHERE instance_id = $1 AND seq = 1", uuid.UUID(ids[3]))
    finally:
        await conn.close()
    summary, findings = await _run_audit(store)
    assert {f.instance_id: (f.seq, f.what) for f in findings} == {
        ids[0]: (1, "hash"), ids[2]: (3, "hash"), ids[3]: (1, "hash"), ids[4]: (2, "hash")}
    assert (summary.instances, summary.findings) == (6, 4)


async def _mixed(store: PgStore, clock: FrozenClock) -> dict[str, str]:
    """Instances of every kind a sound database holds, by name: one whose timer fired,
    one that expired (its due timer dropped by the worker, without an event), and,
    started afterwards, fresh ones: waiting on a timeout, finished, not started."""
    registry = sample_registry()
    runtime = Runtime(store, clock, registry, load_text(SAMPLE_YAML, registry=registry))
    await runtime.publish()
    ids: dict[str, str] = {}

    async def started(name: str, steps: int) -> None:
        iid = ids[name] = (await runtime.start("signup")).instance.id
        if steps >= 1:
            await runtime.advance(iid, "submit", DETAILS)
        if steps >= 2:
            await runtime.advance(iid, "confirm", {"code": "123456"})

    await started("lapsed", 1)
    await started("expired", 1)
    clock.advance(timedelta(hours=73))
    (timer,) = await store.due_timers(ids["lapsed"], clock.now())
    assert (await runtime.fire_timer(timer)) is not None
    clock.advance(timedelta(days=6))  # past the expiry (seven days)
    (timer,) = await store.due_timers(ids["expired"], clock.now())
    assert await runtime.fire_timer(timer) is None  # refused: dropped
    for name, steps in [("waiting", 1), ("finished", 2), ("details", 0), ("expiry", 1),
                        ("deadline", 1), ("owner", 0), ("due", 1), ("deleted", 1),
                        ("added", 0), ("moved", 1), ("second", 1), ("done_timer", 2)]:
        await started(name, steps)
        clock.advance(timedelta(seconds=1))
    return ids


async def test_a_sound_database_audits_clean_with_fired_dropped_and_pending_timers(
        store: PgStore, clock: FrozenClock) -> None:
    ids = await _mixed(store, clock)
    states = {name: (await store.load(iid))[0] for name, iid in ids.items()}
    assert (states["lapsed"].state, states["lapsed"].status) == ("lapsed", "finished")
    assert states["expired"].expired(clock.now())
    assert states["expired"].deadline_at is not None
    assert await store.pending_timers(ids["expired"]) == []
    assert len(await store.pending_timers(ids["waiting"])) == 1
    summary, findings = await _run_audit(store, clock)
    assert findings == []
    assert summary.instances == len(ids)
    # Read as a history is read, every live column and the pending timer.
    (history,) = [h async for h in store.histories() if h.id == ids["waiting"]]
    waiting = states["waiting"]
    assert waiting.deadline_at is not None
    assert history.live_columns() == {
        "status": "active", "owner": waiting.owner, "expires_at": waiting.expires_at,
        "deadline_at": waiting.deadline_at,
        "timers": [("code", "expire", waiting.deadline_at)]}
    # Years on, the timer still pending has not been fired or dropped: still the one
    # armed; and without a clock, the timer dropped by the worker is named.
    summary, findings = await _run_audit(store, FrozenClock(clock.now() + timedelta(days=900)))
    assert findings == []
    summary, findings = await _run_audit(store)
    assert [(f.instance_id, f.what) for f in findings] == [(ids["expired"], "timer")]


async def test_each_live_column_changed_in_the_database_is_named(
        store: PgStore, clock: FrozenClock, own_db: str) -> None:
    ids = await _mixed(store, clock)
    now = clock.now()
    conn = await asyncpg.connect(own_db)
    try:
        async def run(sql: str, name: str, *args: Any) -> None:
            await conn.execute(sql, uuid.UUID(ids[name]), *args)

        await run("UPDATE flow_instances SET status = 'active' WHERE id = $1", "finished")
        await run("UPDATE flow_instances SET expires_at = expires_at + interval '3 days'"
                  " WHERE id = $1", "expiry")
        await run("UPDATE flow_instances SET deadline_at = deadline_at + interval '1 day'"
                  " WHERE id = $1", "deadline")
        await run("UPDATE flow_instances SET owner = 'account:intruder' WHERE id = $1",
                  "owner")
        await run("UPDATE flow_timers SET due_at = due_at + interval '3 days'"
                  " WHERE instance_id = $1", "due")
        await run("DELETE FROM flow_timers WHERE instance_id = $1", "deleted")
        await run("INSERT INTO flow_timers (instance_id, state, trigger, due_at)"
                  " VALUES ($1, 'details', 'expire', $2)", "added", now)
        await run("UPDATE flow_timers SET state = 'details' WHERE instance_id = $1", "moved")
        await run("INSERT INTO flow_timers (instance_id, state, trigger, due_at)"
                  " SELECT instance_id, state, trigger, due_at FROM flow_timers"
                  " WHERE instance_id = $1", "second")
        await run("INSERT INTO flow_timers (instance_id, state, trigger, due_at)"
                  " VALUES ($1, 'code', 'expire', $2)", "done_timer", now)
    finally:
        await conn.close()
    summary, findings = await _run_audit(store, clock)
    found = {f.instance_id: f for f in findings}
    named = {name: found[iid].what for name, iid in ids.items() if iid in found}
    assert named == {"finished": "status", "expiry": "expires_at", "deadline": "deadline_at",
                     "owner": "owner", "due": "timer", "deleted": "timer", "added": "timer",
                     "moved": "timer", "second": "timer", "done_timer": "timer"}
    assert summary.findings == len(named)
    # Each names what the replay expects and what is stored, times as the step writes them.
    finished = found[ids["finished"]]
    assert (finished.seq, finished.expected, finished.found) == (3, "finished", "active")
    expiry = (await store.load(ids["expiry"]))[0].expires_at
    assert (found[ids["expiry"]].expected, found[ids["expiry"]].found) == (
        iso(expiry - timedelta(days=3)), iso(expiry))
    assert found[ids["owner"]].found == "account:intruder"
    due = (await store.load(ids["due"]))[0].deadline_at
    assert due is not None
    assert found[ids["due"]].expected == [{"state": "code", "trigger": "expire",
                                           "due_at": iso(due)}]
    assert found[ids["due"]].found == [{"state": "code", "trigger": "expire",
                                        "due_at": iso(due + timedelta(days=3))}]
    assert found[ids["deleted"]].found == []
    assert found[ids["added"]].expected == []
    # The same findings on the reference path alone.
    _, slow = await _run_audit(store, clock, batch=3, fast=False)
    assert sorted(map(AuditFinding.as_dict, slow), key=str) == \
        sorted(map(AuditFinding.as_dict, findings), key=str)


async def test_an_infinite_expiry_is_a_finding_not_an_error(
        store: PgStore, clock: FrozenClock, own_db: str) -> None:
    ids = await _three_instances(store, clock)
    conn = await asyncpg.connect(own_db)
    try:
        await conn.execute("UPDATE flow_instances SET expires_at = 'infinity' WHERE id = $1",
                           uuid.UUID(ids[0]))
        await conn.execute("UPDATE flow_timers SET due_at = '-infinity'"
                           " WHERE instance_id = $1", uuid.UUID(ids[1]))
    finally:
        await conn.close()
    _, findings = await _run_audit(store, clock)
    assert [(f.instance_id, f.what, f.found) for f in findings] == [
        (ids[0], "expires_at", "infinity"),
        (ids[1], "timer", [{"state": "code", "trigger": "expire", "due_at": "-infinity"}])]
