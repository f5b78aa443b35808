"""The audit's fast path finds exactly what the reference replay finds, on every flow.

Histories of every flow in flows.yaml are made with the live step's own functions
(engine.step: ``begin``, ``decide``, ``settle``) from random facts, then many are
tampered with as an intruder or a bad migration might. The audit with ``fast=False``
(every history through :func:`engine.replay.replay`) is the oracle.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

import flows
from engine import CompiledFlow, Registry, load_file
from engine.canonical import GENESIS
from engine.replay import AuditFinding, AuditSummary, audit, replay, verify
from engine.step import PROVIDER_PREFIX, TIMER_ACTOR, actions_for, begin, settle
from engine.values import Event, GuardInput, Instance

ROOT = Path(__file__).resolve().parents[2]
FACT_VALUES: list[Any] = [
    {"ok": True}, {"ok": False}, {"ok": False, "reason": "wrong"}, {"ok": True, "found": True},
    {"ok": True, "kind": "personal", "account_id": 7}, {}, {"ok": True, "count": 3},
]
INPUTS: list[dict[str, Any]] = [{}, {"method": "password"}, {"answer": "yes", "n": 1},
                                {"name": "李雷", "agree": True}, {"x": 1.5}]
History = tuple[Instance, list[Event]]


@pytest.fixture(scope="module")
def compiled() -> dict[str, CompiledFlow]:
    registry = Registry()
    flows.register(registry)
    flow_set = load_file(str(ROOT / "flows.yaml"), registry=registry)
    return {f.version: CompiledFlow(f, registry) for f in flow_set.flows.values()}


def _walk(c: CompiledFlow, rng: random.Random, steps: int) -> History:
    """One history of ``c``'s flow, as the live step would have stored it."""
    flow = c.flow
    now = datetime(2026, 3, 1, 9, tzinfo=UTC) + timedelta(seconds=rng.randrange(10**6))
    done = begin(flow, str(uuid.UUID(int=rng.getrandbits(128))), dict(rng.choice(INPUTS)),
                 {a.fact: rng.choice(FACT_VALUES)
                  for a in flow.states[flow.initial].on_enter}, actor="account:1", now=now)
    instance, events = done.instance, [done.event]
    for _ in range(steps):
        if flow.states[instance.state].final:
            break
        now += timedelta(seconds=rng.randrange(1, 4000))
        for _attempt in range(12):
            trigger = rng.choice(flow.triggers_from(instance.state))
            timeout = flow.states[instance.state].timeout
            by_clock = timeout is not None and trigger == timeout.trigger
            actor = TIMER_ACTOR if by_clock else (
                PROVIDER_PREFIX + "face" if trigger in flow.callback_triggers(instance.state)
                else "account:1")
            facts = {a.fact: rng.choice(FACT_VALUES)
                     for a in actions_for(flow, instance.state, trigger)}
            if by_clock:
                facts["timer"] = {"id": rng.randrange(10**6), "due_at": now.isoformat()}
            given = dict(rng.choice(INPUTS))
            try:
                taken = c.decide(GuardInput(instance.state, trigger, instance.context, given,
                                            facts, flow.policies))
            except Exception:  # noqa: BLE001 - a guard that cannot read these facts
                taken = None
            if taken is None:
                continue
            dest = flow.states[taken.target(instance.state)]
            effects = {a.fact: rng.choice(FACT_VALUES) for a in dest.on_enter} \
                if dest.name != instance.state else {}
            done = settle(flow, instance, taken, trigger=trigger, recorded_input=given,
                          facts=facts, effects=effects, actor=actor, now=now,
                          by_clock=by_clock)
            instance = done.instance
            events.append(done.event)
            break
    return instance, events


def _resealed(events: list[Event], start: int) -> list[Event]:
    """The chain recomputed from ``start`` on, as someone rewriting history would."""
    out = events[:start]
    for ev in events[start:]:
        fields = attrs.asdict(ev, recurse=False)
        del fields["hash"]
        fields["prev_hash"] = out[-1].hash if out else GENESIS
        out.append(Event.sealed(**fields))
    return out


def _tamper(history: History, rng: random.Random, states: list[str]) -> History:
    instance, events = history
    events = list(events)
    i = rng.randrange(len(events))
    ev = events[i]
    kind = rng.randrange(14)
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
    }
    change = changes[kind]
    events[i] = change(ev)
    # Rewritten with the chain made good (the live row's hash too, now and then).
    events = _resealed(events, i)
    if rng.random() < 0.5:
        instance = attrs.evolve(instance, last_hash=events[-1].hash)
    return instance, events


def _histories(compiled: dict[str, CompiledFlow], seed: int) -> list[History]:
    rng = random.Random(seed)
    out = []
    for c in compiled.values():
        states = list(c.flow.states)
        for _ in range(12):
            history = _walk(c, rng, rng.randrange(0, 9))
            out.append(_tamper(history, rng, states) if rng.random() < 0.6 else history)
    return out


async def _audit(compiled: dict[str, CompiledFlow], histories: list[History],
                 *, fast: bool) -> tuple[AuditSummary, list[AuditFinding]]:
    async def each() -> AsyncIterator[History]:
        for h in histories:
            yield h

    async def machine(version: str) -> CompiledFlow:
        return compiled[version]

    findings: list[AuditFinding] = []
    summary = await audit(each(), machine, findings.append, fast=fast)
    return summary, findings


@pytest.mark.parametrize("seed", range(6))
async def test_the_fast_path_finds_what_replay_finds(compiled: dict[str, CompiledFlow],
                                                    seed: int) -> None:
    histories = _histories(compiled, seed)
    assert {i.flow for i, _ in histories} == {c.flow.name for c in compiled.values()}
    quick, quick_findings = await _audit(compiled, histories, fast=True)
    slow, slow_findings = await _audit(compiled, histories, fast=False)
    assert quick.as_dict() == slow.as_dict()
    assert [f.as_dict() for f in quick_findings] == [f.as_dict() for f in slow_findings]
    # Not a test that cannot fail: tampering is found, and untouched histories verify.
    assert 0 < slow.findings < len(histories)


def test_untouched_histories_of_every_flow_verify_on_the_fast_path(
        compiled: dict[str, CompiledFlow]) -> None:
    rng = random.Random(99)
    walked = 0
    for c in compiled.values():
        for _ in range(10):
            instance, events = _walk(c, rng, 10)
            walked += len(events) > 1
            result = verify(c, events)
            reference = replay(c, events)
            assert result is not None
            assert (result.state, result.status, result.events, result.last_hash) == (
                reference.state, reference.status, reference.events, reference.last_hash)
            assert result.context == reference.context == instance.context
    assert walked > 50  # the walks do take steps beyond the start


def test_the_fast_path_declines_what_it_cannot_vouch_for(
        compiled: dict[str, CompiledFlow]) -> None:
    c = next(iter(compiled.values()))
    _, events = _walk(c, random.Random(3), 5)
    assert verify(c, []) is None
    as_float = attrs.evolve(events[0], seq=1.0)  # type: ignore[arg-type]
    assert verify(c, _resealed([as_float, *events[1:]], 0)) is None
    assert verify(c, [attrs.evolve(events[0], hash=GENESIS), *events[1:]]) is None
