"""``flowctl audit`` at volume: events verified per second of the audit's own CPU.

``python -m bench.audit`` fills a fresh database (``audit_bench_<pid>``, dropped at the
end) with ``--instances`` histories of every flow in flows.yaml, written as the live
step writes them (engine.step's ``begin`` and ``settle`` over random facts, the rows
through the store's own JSON codec, and the timer the last step left pending), then runs
``flowctl audit --json`` on it ``--rounds`` times as a subprocess and prints one JSON
object last on stdout:

- ``audit_events_per_s_cpu``: events divided by the CPU seconds (user + system) of
  the audit process and its children, the best of the rounds; what one core does,
  however loaded the machine is;
- ``audit_events_per_s_wall``: the same over the wall-clock time of the command;
- ``audit_max_rss_mib``: the largest resident size of an audit process;
- ``load_average`` at the start and the end.

``--keep NAME`` fills a database of that name and leaves it (for profiling); ``--reuse
NAME`` audits one filled before, and leaves it. Nothing here asserts a time.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import flows
from bench import compile_project, options
from engine import CompiledFlow, Registry, jsonio, load_file
from engine.step import PROVIDER_PREFIX, TIMER_ACTOR, actions_for, begin, settle
from engine.values import Event, GuardInput, Instance
from storage import PgStore, create_pool
from storage.scratch import create_database, drop_database, dsn_for

ROOT = Path(__file__).resolve().parents[1]

# What actions record, in the shapes they have: verdicts, ids, and sealed numbers (as
# flows.support.VaultSealer writes them: base64 of format, key id, nonce, text and tag).
_SEALED = {"kind": "id_number", "sealed": "AXq3+0Hk2c9bVqJ8/1mE0eQw4ZJtYf+o9b2nCk7sRjH1a6Lp"
           "Uy3Dq8WvXg5Ne0TzK4c2hB9xFm7=", "masked": "450***********1234"}
# The histories' payload: "sealed", as above; "small", verdicts and short inputs only
# (the differential test's, tests/engine/test_replay_fast.py).
SMALL_FACT_VALUES: list[Any] = [
    {"ok": True}, {"ok": False}, {"ok": False, "reason": "wrong"}, {"ok": True, "found": True},
    {"ok": True, "kind": "personal", "account_id": 7}, {}, {"ok": True, "count": 3},
]
SMALL_INPUTS: list[dict[str, Any]] = [{}, {"method": "password"}, {"answer": "yes", "n": 1},
                                      {"name": "李雷", "agree": True}, {"x": 1.5}]
FACT_VALUES: list[Any] = [
    {"ok": True}, {"ok": False}, {"ok": False, "reason": "wrong"}, {"ok": True, "found": True},
    {"ok": True, "kind": "personal", "account_id": 70211}, {},
    {"ok": True, "count": 3, "left": 2},
    {"ok": True, "session": "f2a4c1d0-6b1e-4c55-9d7e-0b7c8f3e2a11", "until": 1767225600},
    {"ok": True, "account_id": "9c1e0b7e-3f5a-4d2e-8b6c-1a2b3c4d5e6f", "kind": "personal"},
]
INPUTS: list[dict[str, Any]] = [
    {}, {"method": "password"}, {"identifier": _SEALED}, {"name": "李雷", "agree": True},
    {"id_number": _SEALED, "name": "韩梅梅", "mobile": _SEALED}, {"code_sent": True},
]


@dataclass
class Options:
    instances: int = 300_000
    payload: str = "sealed"
    rounds: int = 3
    jobs: int = 1
    seed: int = 12
    admin_url: str = options.DEFAULT_ADMIN_URL
    keep: str | None = None
    reuse: str | None = None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _compiled() -> list[CompiledFlow]:
    registry = Registry()
    flows.register(registry)
    flow_set = load_file(str(ROOT / "flows.yaml"), registry=registry)
    return [CompiledFlow(f, registry) for f in flow_set.flows.values()]


def walk(c: CompiledFlow, rng: random.Random, steps: int, start: datetime, *,
         fact_values: Sequence[Any], inputs: Sequence[dict[str, Any]],
         gap_us: tuple[int, int] = (10**6, 400 * 10**6)) -> tuple[Instance, list[Event]]:
    """One history of ``c``'s flow, as the live step would have stored it: random
    triggers its guards allow, facts and input drawn from ``fact_values`` and
    ``inputs``, steps ``gap_us`` microseconds apart (also the fast path's differential
    test's histories: tests/engine/test_replay_fast.py)."""
    flow = c.flow
    now = start
    done = begin(flow, str(uuid.UUID(int=rng.getrandbits(128))), dict(rng.choice(inputs)),
                 {a.fact: rng.choice(fact_values)
                  for a in flow.states[flow.initial].on_enter}, actor="account:1", now=now)
    instance, events = done.instance, [done.event]
    for _ in range(steps):
        if flow.states[instance.state].final:
            break
        now += timedelta(microseconds=rng.randrange(*gap_us))
        for _attempt in range(12):
            trigger = rng.choice(flow.triggers_from(instance.state))
            timeout = flow.states[instance.state].timeout
            by_clock = timeout is not None and trigger == timeout.trigger
            actor = TIMER_ACTOR if by_clock else (
                PROVIDER_PREFIX + "face" if trigger in flow.callback_triggers(instance.state)
                else "account:1")
            facts = {a.fact: rng.choice(fact_values)
                     for a in actions_for(flow, instance.state, trigger)}
            if by_clock:
                facts["timer"] = {"id": rng.randrange(10**6), "due_at": now.isoformat()}
            given = dict(rng.choice(inputs))
            try:
                taken = c.decide(GuardInput(instance.state, trigger, instance.context, given,
                                            facts, flow.policies))
            except Exception:  # noqa: BLE001 - a guard that cannot read these facts
                taken = None
            if taken is None:
                continue
            dest = flow.states[taken.target(instance.state)]
            effects = {a.fact: rng.choice(fact_values) for a in dest.on_enter} \
                if dest.name != instance.state else {}
            done = settle(flow, instance, taken, trigger=trigger, recorded_input=given,
                          facts=facts, effects=effects, actor=actor, now=now,
                          by_clock=by_clock)
            instance = done.instance
            events.append(done.event)
            break
    return instance, events


_INSTANCE_COLUMNS = ("id", "flow", "definition_version", "state", "context", "version",
                     "status", "created_at", "updated_at", "expires_at", "deadline_at",
                     "last_hash", "owner")
_EVENT_COLUMNS = ("instance_id", "seq", "trigger", "from_state", "to_state", "input",
                  "facts", "effects", "actor", "at", "definition_version", "prev_hash",
                  "hash")


_INSTANCE_TYPES = dict(zip(_INSTANCE_COLUMNS, (
    "uuid", "text", "text", "text", "json", "int", "text", "timestamptz", "timestamptz",
    "timestamptz", "timestamptz", "text", "text"), strict=True))
_EVENT_TYPES = dict(zip(_EVENT_COLUMNS, (
    "uuid", "int", "text", "text", "text", "json", "json", "json", "text", "text", "text",
    "text", "text"), strict=True))
_TIMER_TYPES = {"instance_id": "uuid", "state": "text", "trigger": "text",
                "due_at": "timestamptz"}


def _insert(table: str, types: dict[str, str]) -> str:
    """Many rows in one statement, a parameter array a column (json sent as its text,
    written by the store's own encoder, as a step writes it)."""
    arrays = ", ".join(f"${n}::{'text' if t == 'json' else t}[]"
                       for n, t in enumerate(types.values(), start=1))
    picks = ", ".join(f"{c}::json" if t == "json" else c for c, t in types.items())
    return (f"INSERT INTO {table} ({', '.join(types)}) SELECT {picks}"
            f" FROM unnest({arrays}) AS r({', '.join(types)})")


def _columns(rows: list[tuple[Any, ...]], types: dict[str, str]) -> list[list[Any]]:
    return [[jsonio.dumps_text(v) for v in col] if t == "json" else list(col)
            for col, t in zip(zip(*rows, strict=True), types.values(), strict=True)]


async def fill(dsn: str, n: int, seed: int, payload: str = "sealed") -> int:
    """Write ``n`` histories, most of them short, as sign-ins are; return the events."""
    rng = random.Random(seed)  # noqa: S311 - benchmark data, not secrets
    compiled = _compiled()
    pool = await create_pool(dsn, min_size=1, max_size=2)
    events_written = 0
    try:
        await PgStore(pool).save_definitions(c.flow for c in compiled)
        start = datetime(2026, 3, 1, 9, tzinfo=UTC)
        values, inputs = (SMALL_FACT_VALUES, SMALL_INPUTS) if payload == "small" \
            else (FACT_VALUES, INPUTS)
        chunk = 5000
        for lo in range(0, n, chunk):
            instances: list[tuple[Any, ...]] = []
            events: list[tuple[Any, ...]] = []
            timers: list[tuple[Any, ...]] = []
            for k in range(lo, min(n, lo + chunk)):
                c = rng.choice(compiled)
                steps = rng.choice((0, 0, 0, 1, 1, 1, 2, 3))
                instance, history = walk(c, rng, steps, start + timedelta(
                    seconds=k, microseconds=rng.randrange(10**6)),
                    fact_values=values, inputs=inputs)
                instances.append((uuid.UUID(instance.id), instance.flow,
                                  instance.definition_hash, instance.state, instance.context,
                                  instance.version, instance.status, instance.created_at,
                                  instance.updated_at, instance.expires_at,
                                  instance.deadline_at, instance.last_hash, instance.owner))
                events += [(uuid.UUID(e.instance_id), e.seq, e.trigger, e.from_state,
                            e.to_state, e.input, e.facts, e.effects, e.actor, e.at,
                            e.definition_hash, e.prev_hash, e.hash) for e in history]
                # The timer the last step arming one left pending, as the step writes it.
                timeout = c.flow.states[instance.state].timeout
                if instance.deadline_at is not None and timeout is not None:
                    timers.append((uuid.UUID(instance.id), instance.state, timeout.trigger,
                                   instance.deadline_at))
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(_insert("flow_instances", _INSTANCE_TYPES),
                                   *_columns(instances, _INSTANCE_TYPES))
                await conn.execute(_insert("flow_events", _EVENT_TYPES),
                                   *_columns(events, _EVENT_TYPES))
                if timers:
                    await conn.execute(_insert("flow_timers", _TIMER_TYPES),
                                       *_columns(timers, _TIMER_TYPES))
            events_written += len(events)
            if (lo // chunk) % 10 == 0:
                log(f"filled {lo + len(instances)} instances, {events_written} events")
        async with pool.acquire() as conn:
            await conn.execute("VACUUM ANALYZE flow_instances")
            await conn.execute("VACUUM ANALYZE flow_events")
            await conn.execute("VACUUM ANALYZE flow_timers")
    finally:
        await pool.close()
    return events_written


def audit_once(dsn: str, jobs: int) -> dict[str, Any]:
    """``flowctl audit --json --jobs N`` over the database: its CPU, wall time and RSS."""
    compile_project()
    flowctl = Path(sys.executable).with_name("flowctl")
    cmd = [str(flowctl)] if flowctl.exists() else [sys.executable, "-m", "web.cli"]
    env = {**os.environ, "DATABASE_URL": dsn, "FLOWS_FILE": str(ROOT / "flows.yaml"),
           "FLOW_MODULES": "flows", "LOG_LEVEL": "warning"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([*cmd, "audit", "--json", "--jobs", str(jobs)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=7200, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    if out.returncode != 0 or not summary.get("ok"):
        raise RuntimeError(f"the audit failed: {out.stdout[-2000:]} {out.stderr[-2000:]}")
    return {"events": summary["events"], "instances": summary["instances"],
            "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
            # ru_maxrss of children: the largest of any that ended so far, in KiB.
            "max_rss_mib": round(after.ru_maxrss / 1024, 1)}


async def _run(opts: Options) -> dict[str, Any]:
    result: dict[str, Any] = {"load_average": list(os.getloadavg())}
    name = opts.reuse or opts.keep or f"audit_bench_{os.getpid()}"
    if opts.reuse:
        dsn = dsn_for(opts.admin_url, name)
    else:
        dsn = await create_database(opts.admin_url, name, leftovers_of="audit_bench")
        log(f"filling {name} with {opts.instances} instances")
        await fill(dsn, opts.instances, opts.seed, opts.payload)
    try:
        rounds = []
        for k in range(opts.rounds):
            log(f"audit round {k + 1} of {opts.rounds}")
            rounds.append(await asyncio.to_thread(audit_once, dsn, opts.jobs))
        best = min(rounds, key=lambda r: r["cpu_s"])
        result.update(
            instances=best["instances"], events=best["events"], jobs=opts.jobs,
            payload=opts.payload if not opts.reuse else None,
            audit_events_per_s_cpu=round(best["events"] / best["cpu_s"], 1),
            audit_events_per_s_wall=round(best["events"] / min(r["wall_s"] for r in rounds),
                                          1),
            audit_max_rss_mib=max(r["max_rss_mib"] for r in rounds), rounds=rounds,
            load_average_after=list(os.getloadavg()))
        return result
    finally:
        if not (opts.keep or opts.reuse):
            await drop_database(opts.admin_url, name)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p, d = options.parser("bench.audit", __doc__), Options()
    options.flag(p, d, "instances")
    options.flag(p, d, "payload", choices=("sealed", "small"),
                 help="what the events carry: sealed numbers and ids, or verdicts only")
    options.flag(p, d, "rounds")
    options.flag(p, d, "jobs")
    options.flag(p, d, "seed")
    options.servers(p, redis=False)
    options.flag(p, d, "keep", metavar="NAME", help="fill a database of this name, keep it")
    options.flag(p, d, "reuse", metavar="NAME", help="audit a database filled before")
    return options.parsed(Options, p, argv)

def main(argv: Sequence[str] | None = None) -> int:
    print(json.dumps(asyncio.run(_run(parse_args(argv)))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
