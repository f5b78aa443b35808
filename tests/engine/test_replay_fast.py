"""The audit's fast path finds exactly what the reference replay finds, on every flow.

Histories of every flow in flows.yaml are made with the live step's own functions
(engine.step: ``begin``, ``decide``, ``settle``) from random facts, then many are
tampered with as an intruder or a bad migration might. The audit with ``fast=False``
(every history through :func:`engine.replay.replay`) is the oracle. Each is audited as
objects in memory, and read back from the JSON document the stores build (orjson first,
then the standard library where the fast path cannot vouch for what orjson read).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest

import flows
from bench.audit import walk
from engine import CompiledFlow, Registry, jsonio, load_file
from engine.canonical import GENESIS, canonical_json
from engine.ports import FrozenClock, NewTimer
from engine.replay import (
    AuditFinding,
    AuditSummary,
    StoredHistory,
    _vouched,
    audit,
    compare_live,
    micros,
    replay,
    verify,
)
from engine.step import TIMER_ACTOR
from engine.values import Event, Instance

ROOT = Path(__file__).resolve().parents[2]
FACT_VALUES: list[Any] = [
    {"ok": True}, {"ok": False}, {"ok": False, "reason": "wrong"}, {"ok": True, "found": True},
    {"ok": True, "kind": "personal", "account_id": 7}, {}, {"ok": True, "count": 3},
]
INPUTS: list[dict[str, Any]] = [{}, {"method": "password"}, {"answer": "yes", "n": 1},
                                {"name": "李雷", "agree": True}, {"x": 1.5},
                                {"account": "f2a4c1de-6b1e-4c55-9d7e-0b7c8f3e2a11"},
                                {"at": "2026-03-01T09:00:00.000000+00:00", "sealed": "a+e+1/Z"}]
History = tuple[Instance, list[Event]]
# A history with the instance's rows in flow_timers, as the audit reads it.
Audited = tuple[Instance, list[Event], list[NewTimer]]
# When the audit reads them: some walks' timers due by then, some instances expired.
NOW = datetime(2026, 3, 9, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def compiled() -> dict[str, CompiledFlow]:
    registry = Registry()
    flows.register(registry)
    flow_set = load_file(str(ROOT / "flows.yaml"), registry=registry)
    return {f.version: CompiledFlow(f, registry) for f in flow_set.flows.values()}


def _walk(c: CompiledFlow, rng: random.Random, steps: int) -> History:
    """One history of ``c``'s flow, as the live step would have stored it."""
    start = datetime(2026, 3, 1, 9, tzinfo=UTC) + timedelta(seconds=rng.randrange(10**6))
    return walk(c, rng, steps, start, fact_values=FACT_VALUES, inputs=INPUTS,
                gap_us=(10**6, 4000 * 10**6))


def _resealed(events: list[Event], start: int) -> list[Event]:
    """The chain recomputed from ``start`` on, as someone rewriting history would."""
    out = events[:start]
    for ev in events[start:]:
        fields = attrs.asdict(ev, recurse=False)
        del fields["hash"]
        fields["prev_hash"] = out[-1].hash if out else GENESIS
        out.append(Event.sealed(**fields))
    return out


def _tamper(c: CompiledFlow, history: History, rng: random.Random) -> History:
    instance, events = history
    states = list(c.flow.states)
    events = list(events)
    i = rng.randrange(len(events))
    ev = events[i]
    kind = rng.randrange(20)
    change: Callable[[Event], Event]
    if kind == 0:  # the facts changed, the chain left as it was
        events[i] = attrs.evolve(ev, facts={**ev.facts, "check": {"ok": True}})
        return instance, events
    if kind == 1:  # an event taken out
        del events[i]
        return instance, _resealed(events, i) if rng.random() < 0.5 else events
    if kind == 2:  # two events swapped, the chain made good
        j = rng.randrange(len(events))
        events[i], events[j] = events[j], events[i]
        return instance, _resealed(events, min(i, j))
    if kind == 9:  # the live row's context: a number that is a boolean in JSON
        return attrs.evolve(instance, context={**instance.context, "attempts": True
                                               if instance.context.get("attempts") == 1
                                               else 1.0}), events
    if kind == 10:  # the live row's state, or its version
        return attrs.evolve(instance, state=rng.choice(states),
                            version=instance.version + rng.choice([0, 1])), events
    if kind == 11:  # the live row's last hash
        return attrs.evolve(instance, last_hash=GENESIS), events
    if kind in (14, 15, 16):
        return _forged(c, instance, events, i, kind, rng)
    changes: dict[int, Callable[[Event], Event]] = {
        3: lambda e: attrs.evolve(e, facts={k: {"ok": not v.get("ok")} if isinstance(v, dict)
                                            else v for k, v in e.facts.items()}),
        4: lambda e: attrs.evolve(e, to_state=rng.choice(states)),
        5: lambda e: attrs.evolve(e, seq=float(e.seq)),  # type: ignore[arg-type]
        6: lambda e: attrs.evolve(e, at=rng.choice(["not a time", "9999-12-31T23:59:59+00:00",
                                                    "2026-03-01"])),
        7: lambda e: attrs.evolve(e, definition_hash="0" * 64,
                                  input={**e.input, "n": 1.0, "x": 2}),
        8: lambda e: attrs.evolve(e, facts={**e.facts, "sign_in": {"ok": True}},
                                  trigger=rng.choice(["start", "submit", e.trigger])),
        12: lambda e: attrs.evolve(e, actor=TIMER_ACTOR, facts={**e.facts, "timer": {}}),
        13: lambda e: attrs.evolve(e, input={**e.input, "n": True}, from_state=None),
        # Values each reader reads, or writes, its own way; the chain made good.
        17: lambda e: attrs.evolve(e, facts={**e.facts, "n": {"big": 2**70, "neg": -(2**64),
                                                             "edge": 2**63 - 1}}),
        18: lambda e: attrs.evolve(e, input={**e.input, "tiny": 1e-7, "small": 0.00001,
                                             "large": 1e20, "e": "9e-5", "t": "1e+22"}),
        19: lambda e: attrs.evolve(e, effects={**e.effects, "f": [5e-324, -1.5e-9, 1e16]}),
    }
    change = changes[kind]
    events[i] = change(ev)
    # Rewritten with the chain made good (the live row's hash too, now and then; for the
    # values each reader reads its own way, the whole live row, as a careful forger would).
    events = _resealed(events, i)
    if kind >= 17:
        return _relived(c, instance, events), events
    if rng.random() < 0.5:
        instance = attrs.evolve(instance, last_hash=events[-1].hash)
    return instance, events


def _relived(c: CompiledFlow, instance: Instance, events: list[Event],
             chain: list[Event] | None = None) -> Instance:
    """The live row as ``events`` leave it (its hash: ``chain``'s last), if they can."""
    done = verify(c, StoredHistory.of(instance, _resealed(events, 0)))
    if done is None:
        return instance
    return attrs.evolve(instance, state=done.state, context=done.context,
                        version=done.events, last_hash=(chain or events)[-1].hash)


def _forged(c: CompiledFlow, instance: Instance, events: list[Event], i: int,
            kind: int, rng: random.Random) -> History:
    """Where orjson and the standard library part ways, a history and live row made to
    pass if the audit read as orjson does or hashed over what orjson writes."""
    ev = events[i]
    if kind == 14:  # a float in the history, the integer orjson reads as it in the row
        events[i] = attrs.evolve(ev, input={**ev.input, "n": 2.0**64})
        events = _resealed(events, i)
        live = _relived(c, instance, events)
        values = {**live.context.get("values", {}), "n": 2**64}
        return attrs.evolve(live, context={**live.context, "values": values}), events
    # Each way orjson writes a float differently alone: "1e-7", "0.00005", "-2.5e-6".
    odd: dict[str, Any] = {**ev.input, "n": 2**64 + 1} if kind == 16 \
        else {**ev.input, "x": rng.choice([1e-7, 0.00005, -2.5e-6])}

    def text(body: dict[str, Any]) -> bytes:
        if kind == 16:  # the huge integer hashed as the float orjson reads
            return canonical_json({**body, "input": {**body["input"],
                                                     "n": float(2**64 + 1)}}).encode()
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)

    events[i] = _sealed_over(ev, odd, text)
    forged = _resealed(events, i + 1)
    return _relived(c, instance, [*events[:i], attrs.evolve(ev, input=odd),
                                  *events[i + 1:]], forged), forged


def _sealed_over(ev: Event, new_input: dict[str, Any],
                 text: Callable[[dict[str, Any]], bytes]) -> Event:
    """The event with this input, its hash taken over ``text`` of its body."""
    changed = attrs.evolve(ev, input=new_input)
    digest = hashlib.sha256(changed.prev_hash.encode() + text(changed.body())).hexdigest()
    return attrs.evolve(changed, hash=digest)


def _pending(c: CompiledFlow, instance: Instance) -> list[NewTimer]:
    """The timer the live step leaves pending: the state's timeout, due at the deadline."""
    timeout = c.flow.states[instance.state].timeout
    if instance.deadline_at is None or timeout is None:
        return []
    return [NewTimer(instance.state, timeout.trigger, instance.deadline_at)]


def _live_tamper(c: CompiledFlow, history: History, rng: random.Random) -> Audited:
    """The live row's other columns, or the instance's timers, changed (or, now and
    then, a timer gone as the timer worker may drop one: not a finding, if it was due)."""
    instance, events = history
    timers = _pending(c, instance)
    kind = rng.randrange(8)
    if kind == 0:  # a finished instance set back to active, or the reverse
        return attrs.evolve(instance, status="active" if instance.status == "finished"
                            else "finished"), events, timers
    if kind == 1:  # the expiry pushed back, or a microsecond off
        return attrs.evolve(instance, expires_at=instance.expires_at + rng.choice(
            [timedelta(days=3), timedelta(microseconds=-1)])), events, timers
    if kind == 2:  # the deadline moved, cleared, or set where there is none
        moved = None if instance.deadline_at is not None and rng.random() < 0.3 else \
            (instance.deadline_at or instance.expires_at) + timedelta(days=1)
        return attrs.evolve(instance, deadline_at=moved), events, timers
    if kind == 3:  # someone else's
        return attrs.evolve(instance, owner="account:2"), events, timers
    if kind == 4:  # the pending timer moved (state, trigger or due time), or added
        if timers and rng.random() < 0.7:
            t = timers[0]
            return instance, events, [rng.choice([
                attrs.evolve(t, due_at=t.due_at + timedelta(days=3)),
                attrs.evolve(t, state=rng.choice(list(c.flow.states))),
                attrs.evolve(t, trigger="submit")])]
        return instance, events, [*timers, NewTimer(instance.state, "expire",
                                                    instance.expires_at)]
    if kind == 5:  # a second timer beside the first
        return instance, events, timers * 2 or [NewTimer(instance.state, "expire", NOW)]
    # A timer deleted (by a worker that dropped it, if it was due by NOW and its step
    # refusable or the instance finished or expired; else by someone).
    return instance, events, []


def _document(history: Audited) -> bytes:
    """The history as the stores hand it to the audit: one JSON document, the values
    in it as a step writes them (jsonio.dumps: orjson, else the standard library)."""
    instance, events, timers = history
    return jsonio.dumps([instance.id, instance.flow, instance.definition_hash,
                         instance.state, instance.context, instance.version,
                         instance.last_hash, [attrs.astuple(e, recurse=False)
                                              for e in events],
                         instance.status, micros(instance.expires_at),
                         None if instance.deadline_at is None
                         else micros(instance.deadline_at),
                         instance.owner, [[t.state, t.trigger, micros(t.due_at)]
                                          for t in timers]])


def _stored(history: Audited, through_json: bool) -> StoredHistory:
    return StoredHistory.read(_document(history)) if through_json \
        else StoredHistory.of(*history)


def _histories(compiled: dict[str, CompiledFlow], seed: int) -> list[Audited]:
    rng = random.Random(seed)
    out: list[Audited] = []
    for c in compiled.values():
        for _ in range(12):
            history = _walk(c, rng, rng.randrange(0, 9))
            dice = rng.random()
            if dice < 0.45:
                instance, events = _tamper(c, history, rng)
                out.append((instance, events, _pending(c, history[0])))
            elif dice < 0.7:
                out.append(_live_tamper(c, history, rng))
            else:
                out.append((*history, _pending(c, history[0])))
    return out


async def _audit(compiled: dict[str, CompiledFlow], histories: list[Audited],
                 *, fast: bool, through_json: bool = False, now: datetime = NOW,
                 ) -> tuple[AuditSummary, list[AuditFinding]]:
    async def each() -> AsyncIterator[StoredHistory]:
        for h in histories:
            yield _stored(h, through_json)

    async def machine(version: str) -> CompiledFlow:
        return compiled[version]

    findings: list[AuditFinding] = []
    summary = await audit(each(), machine, findings.append, fast=fast,
                          clock=FrozenClock(now))
    return summary, findings


@pytest.mark.parametrize("through_json", [False, True], ids=["objects", "json"])
@pytest.mark.parametrize("seed", range(6))
async def test_the_fast_path_finds_what_replay_finds(compiled: dict[str, CompiledFlow],
                                                    seed: int, through_json: bool) -> None:
    histories = _histories(compiled, seed)
    assert {i.flow for i, _, _ in histories} == {c.flow.name for c in compiled.values()}
    quick, quick_findings = await _audit(compiled, histories, fast=True,
                                         through_json=through_json)
    slow, slow_findings = await _audit(compiled, histories, fast=False)
    assert quick.as_dict() == slow.as_dict()
    assert [f.as_dict() for f in quick_findings] == [f.as_dict() for f in slow_findings]
    # Not a test that cannot fail: tampering is found, and untouched histories verify.
    assert 0 < slow.findings < len(histories)


def test_untouched_histories_of_every_flow_verify_on_the_fast_path(
        compiled: dict[str, CompiledFlow]) -> None:
    rng = random.Random(99)
    walked = armed = 0
    for c in compiled.values():
        for _ in range(10):
            instance, events = _walk(c, rng, 10)
            walked += len(events) > 1
            reference = replay(c, events)
            timers = _pending(c, instance)
            assert reference.instance == instance
            assert [reference.timer] == (timers or [None])
            armed += bool(timers)
            for through_json in (False, True):
                stored = _stored((instance, events, timers), through_json)
                assert stored.plain is through_json
                result = verify(c, stored)
                assert result is not None
                assert (result.state, result.status, result.events, result.last_hash,
                        result.deadline_at, result.timer) == (
                    reference.state, reference.status, reference.events,
                    reference.last_hash, reference.deadline_at, reference.timer)
                assert result.context == reference.context == instance.context
                # Every live column as stored, the timer too: vouched for, as it is.
                assert _vouched(c, stored) is through_json
                compare_live(reference, stored.state, stored.context, stored.version,
                             stored.last_hash, **stored.live_columns())
    assert walked > 50  # the walks do take steps beyond the start
    assert armed > 0  # and some wait on a timeout


def test_the_fast_path_declines_what_it_cannot_vouch_for(
        compiled: dict[str, CompiledFlow]) -> None:
    c = next(iter(compiled.values()))
    instance, events = _walk(c, random.Random(3), 5)

    def stored(changed: list[Event], through_json: bool = False) -> StoredHistory:
        return _stored((instance, changed, _pending(c, instance)), through_json)

    assert verify(c, stored([])) is None
    as_float = attrs.evolve(events[0], seq=1.0)  # type: ignore[arg-type]
    assert verify(c, stored(_resealed([as_float, *events[1:]], 0))) is None
    assert verify(c, stored([attrs.evolve(events[0], hash=GENESIS), *events[1:]])) is None
    # Read by orjson, a huge integer is a float, a tiny float is not written canonically:
    # not vouched for as read, vouched for as the standard library reads it.
    for odd in (2**64, 1e-7):
        changed = _resealed([attrs.evolve(events[0], input={**events[0].input, "n": odd}),
                             *events[1:]], 0)
        assert verify(c, stored(changed, through_json=True)) is None
        assert verify(c, stored(changed, through_json=True).exactly()) is not None
        assert verify(c, stored(changed)) is not None


def _timed_walks(compiled: dict[str, CompiledFlow], n: int,
                 seed: int) -> list[tuple[CompiledFlow, History]]:
    """``n`` histories that end waiting on a timeout (some after a timer fired)."""
    rng = random.Random(seed)
    timed = [c for c in compiled.values() if any(s.timeout for s in c.flow.states.values())]
    found: list[tuple[CompiledFlow, History]] = []
    for _ in range(100 * n):
        c = rng.choice(timed)
        history = _walk(c, rng, rng.randrange(2, 14))
        if _pending(c, history[0]):
            found.append((c, history))
            if len(found) == n:
                break
    return found


async def _named(compiled: dict[str, CompiledFlow], history: Audited,
                 now: datetime) -> list[str]:
    """What each path names, as objects and as read from JSON: the same, or this fails."""
    answers = []
    for fast, through_json in ((False, False), (True, False), (True, True)):
        _, findings = await _audit(compiled, [history], fast=fast,
                                   through_json=through_json, now=now)
        answers.append([(f.seq, f.what, f.expected, f.found) for f in findings])
    assert answers[0] == answers[1] == answers[2]
    return [what for _, what, _, _ in answers[0]]


async def test_each_live_column_changed_is_named_alike_on_both_paths(
        compiled: dict[str, CompiledFlow]) -> None:
    walks = _timed_walks(compiled, 24, seed=5)
    assert len(walks) == 24
    assert any("timer" in e.facts for _, (_, events) in walks for e in events)
    for c, (instance, events) in walks:
        timers = _pending(c, instance)
        timer = timers[0]
        due, expires = timer.due_at, instance.expires_at
        before = due - timedelta(microseconds=1)
        for changed, what in [
                ((instance, events, timers), []),
                ((attrs.evolve(instance, status="finished"), events, timers), ["status"]),
                ((attrs.evolve(instance, expires_at=expires + timedelta(days=3)), events,
                  timers), ["expires_at"]),
                ((attrs.evolve(instance, deadline_at=due + timedelta(days=3)), events,
                  timers), ["deadline_at"]),
                ((attrs.evolve(instance, deadline_at=None), events, timers), ["deadline_at"]),
                ((attrs.evolve(instance, owner="account:2"), events, timers), ["owner"]),
                ((instance, events, [attrs.evolve(timer, due_at=due + timedelta(days=3))]),
                 ["timer"]),
                ((instance, events, [attrs.evolve(timer, trigger="submit")]), ["timer"]),
                ((instance, events, [timer, timer]), ["timer"]),
                # Deleted before it was due: no worker drops a timer then.
                ((instance, events, []), ["timer"])]:
            assert await _named(compiled, changed, before) == what, (c.flow.name, what)
        # Gone once due: the worker drops it if the instance expired by then (its step,
        # an unguarded timeout, is never refused), else it must have fired.
        gone = (instance, events, [])
        assert await _named(compiled, gone, max(due, expires)) == []
        assert _vouched(c, _stored(gone, through_json=True), FrozenClock(max(due, expires)))
        if due < expires:
            assert await _named(compiled, gone, due) == ["timer"]
        # Whatever the time, a timer still there is the one armed.
        assert await _named(compiled, (instance, events, timers), max(due, expires)) == []
        # An instance whose state has no timeout has no timer.
        ended = attrs.evolve(instance, deadline_at=None)
        assert await _named(compiled, (ended, events, [timer]), due) != []
