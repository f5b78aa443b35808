"""The step runtime against a real PostgreSQL: timers, versions, outbox, secrets."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import timedelta
from typing import Any

import asyncpg
import attrs
import pytest
from structlog.testing import capture_logs

from engine import (
    ConcurrencyConflict,
    FlowExpired,
    FlowFinished,
    FrozenClock,
    Invalid,
    OutboxDispatcher,
    RateLimited,
    Registry,
    Runtime,
    TimerWorker,
    TransitionRefused,
    TriggerNotAllowed,
    ValidationFailed,
    load_text,
    replay,
)
from engine.values import Instance
from storage import PgStore, create_pool
from tests.sample_flows import SAMPLE_YAML, sample_registry

DETAILS = {"name": "Ada", "password": "hunter2-Secret", "agree": True}


@pytest.fixture(autouse=True)
async def only_this_tests_timers(pool: asyncpg.Pool) -> None:
    """The tests here count the timers that fire. Earlier tests' timers in this run's
    database fall due at the same frozen times: they are cleared first (no other test
    runs in a process's database meanwhile)."""
    await pool.execute("DELETE FROM flow_timers")


async def at_code(runtime: Runtime) -> str:
    iid = (await runtime.start("signup")).instance.id
    await runtime.advance(iid, "submit", DETAILS)
    return iid


async def test_secret_fields_never_reach_the_database(runtime: Runtime,
                                                      pool: asyncpg.Pool) -> None:
    iid = await at_code(runtime)
    await runtime.advance(iid, "confirm", {"code": "123456"})
    async with pool.acquire() as conn:
        dumped = json.dumps([dict(r) for r in await conn.fetch(
            "SELECT e.input::text, e.facts::text, i.context::text FROM flow_events e"
            " JOIN flow_instances i ON i.id = e.instance_id WHERE i.id = $1", iid)])
    assert "hunter2-Secret" not in dumped
    assert "123456" not in dumped
    assert '"length": 14' in dumped or '\\"length\\":14' in dumped


async def test_history_refuses_update_and_delete(runtime: Runtime, pool: asyncpg.Pool) -> None:
    iid = await at_code(runtime)
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE flow_events SET to_state = 'done' WHERE instance_id = $1",
                               iid)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM flow_events WHERE instance_id = $1", iid)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("TRUNCATE flow_events CASCADE")
        assert await conn.fetchval("SELECT count(*) FROM flow_events WHERE instance_id = $1",
                                   iid) == 2


async def test_guards_refusing_every_transition_store_nothing(runtime: Runtime) -> None:
    registry = runtime.registry
    text = SAMPLE_YAML.replace("dest: code\n        actions: [note_password, send_code]",
                               "dest: code\n        guards: [never]\n"
                               "        actions: [note_password, send_code]")
    registry.guards["never"] = lambda g: False
    rt = Runtime(runtime.store, runtime.clock, registry, load_text(text, registry=registry))
    await rt.publish()
    iid = (await rt.start("signup")).instance.id
    with pytest.raises(TransitionRefused) as info:
        await rt.advance(iid, "submit", DETAILS)
    assert info.value.extra["failed"] == ["never"]
    assert (await rt.get(iid)).version == 1
    assert len(await rt.history(iid)) == 1


async def test_validation_reports_every_field_at_once(runtime: Runtime) -> None:
    iid = (await runtime.start("signup")).instance.id
    with pytest.raises(ValidationFailed) as info:
        await runtime.advance(iid, "submit", {"name": "", "agree": False, "extra": 1})
    fields = sorted(e.field for e in info.value.errors)
    assert fields == ["agree", "extra", "name", "password"]


async def test_three_wrong_codes_send_the_user_back(runtime: Runtime) -> None:
    iid = await at_code(runtime)
    states = [(await runtime.advance(iid, "confirm", {"code": "0"})).instance.state
              for _ in range(3)]
    assert states == ["code", "code", "details"]
    instance = await runtime.get(iid)
    assert instance.context["error"]["error_id"] == "code_dead"


async def test_overdue_timeout_fires_on_read_without_a_worker(runtime: Runtime,
                                                              clock: FrozenClock) -> None:
    iid = await at_code(runtime)
    clock.advance(timedelta(hours=71, minutes=59))
    assert (await runtime.get(iid)).state == "code"
    clock.advance(timedelta(minutes=1))
    instance = await runtime.get(iid)
    assert instance.state == "lapsed"
    events = await runtime.history(iid)
    assert [(e.trigger, e.actor) for e in events][-1] == ("expire", "timer")
    assert events[-1].facts["timer"]["due_at"].startswith("2026-03-04T09:00")
    with pytest.raises(FlowFinished):
        await runtime.advance(iid, "confirm", {"code": "123456"})


async def test_user_step_after_deadline_sees_the_timeout_first(runtime: Runtime,
                                                               clock: FrozenClock) -> None:
    iid = await at_code(runtime)
    clock.advance(timedelta(hours=73))
    with pytest.raises(FlowFinished):
        await runtime.advance(iid, "confirm", {"code": "123456"})
    assert [e.trigger for e in await runtime.history(iid)] == ["start", "submit", "expire"]


async def test_leaving_a_state_cancels_its_timer(runtime: Runtime, clock: FrozenClock,
                                                 pool: asyncpg.Pool) -> None:
    iid = await at_code(runtime)
    await runtime.advance(iid, "back", {})
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM flow_timers WHERE instance_id = $1",
                                   iid) == 0
    clock.advance(timedelta(hours=80))
    assert (await runtime.get(iid)).state == "details"


async def test_wrong_tries_keep_the_original_deadline(runtime: Runtime,
                                                      clock: FrozenClock) -> None:
    iid = await at_code(runtime)
    first = (await runtime.get(iid)).deadline_at
    clock.advance(timedelta(hours=10))
    await runtime.advance(iid, "confirm", {"code": "0"})
    assert (await runtime.get(iid)).deadline_at == first


async def test_timer_fires_exactly_once_with_two_competing_workers(
        database_url: str, backends: dict[str, Any], clock: FrozenClock,
        registry: Registry) -> None:
    flows = load_text(SAMPLE_YAML, registry=registry)
    pooling = backends.get("db_transaction_pooling", False)
    pools = [await create_pool(database_url, min_size=1, max_size=8,
                               transaction_pooling=pooling) for _ in range(2)]
    try:
        runtimes = [Runtime(PgStore(p), clock, registry, flows) for p in pools]
        await runtimes[0].publish()
        ids = [await at_code(runtimes[0]) for _ in range(12)]
        workers = [TimerWorker(rt, rt.store, clock, batch=3) for rt in runtimes]
        clock.advance(timedelta(hours=72, seconds=1))
        # Rounds of both at once until neither finds a timer due (other tests' timers
        # in this run's database may be due too: a fixed number of rounds may not do).
        for _ in range(1000):
            if not any(await asyncio.gather(*(w.run_once() for w in workers))):
                break
        for iid in ids:
            events = await runtimes[1].history(iid)
            assert [e.trigger for e in events].count("expire") == 1
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert events[-1].to_state == "lapsed"
    finally:
        for p in pools:
            await p.close()


async def test_a_worker_fires_a_claimed_batch_with_one_load_and_one_commit(
        runtime: Runtime, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [await at_code(runtime) for _ in range(10)]
    store = runtime.store
    calls: dict[str, int] = {"load": 0, "commit": 0, "load_many": 0, "commit_many": 0}
    for name in calls:
        monkeypatch.setattr(store, name, counted(getattr(store, name), calls, name))
    worker = TimerWorker(runtime, store, clock, batch=1000)
    clock.advance(timedelta(hours=72, seconds=1))
    assert await worker.run_once() == 10
    assert calls == {"load": 0, "commit": 0, "load_many": 1, "commit_many": 1}
    assert await worker.run_once() == 0
    assert worker.fired == 10
    for iid in ids:
        events = await runtime.history(iid)
        assert [e.trigger for e in events].count("expire") == 1
        assert events[-1].to_state == "lapsed"
        compiled = await runtime.compiled(events[0].definition_hash)
        assert replay(compiled, events).state == "lapsed"


def counted(method: Any, calls: dict[str, int], name: str) -> Any:
    async def counting(*args: Any, **kwargs: Any) -> Any:
        calls[name] += 1
        return await method(*args, **kwargs)
    return counting


async def test_a_timer_overtaken_between_its_load_and_the_batch_commit_fires_afresh(
        runtime: Runtime, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A person's step between the batch's load and its commit: that instance's timer
    step is not applied; decided again on the instance as it is now, it fires (the step
    stayed in the state) or is dropped (the step left it), once, and the rest fire."""
    stays, leaves, other = [await at_code(runtime) for _ in range(3)]
    store = runtime.store
    commit_many = store.commit_many
    applied: list[list[bool]] = []

    async def overtaken(steps: Any) -> list[bool]:
        if not applied:  # the batch's own commit, not a retry's
            # Taken just before the deadline (after it, a step fires the timer first).
            clock.advance(timedelta(seconds=-2))
            await runtime.advance(stays, "confirm", {"code": "0"})
            await runtime.advance(leaves, "back", {})
            clock.advance(timedelta(seconds=2))
        applied.append(await commit_many(steps))
        return applied[-1]

    monkeypatch.setattr(store, "commit_many", overtaken)
    clock.advance(timedelta(hours=72, seconds=1))
    # Other tests' timers may be due in this run's database too: only these three count.
    ours = {stays, leaves, other}
    timers = await store.claim_timers(clock.now(), timedelta(seconds=30), 1000)
    by_id = {t.instance_id: t for t in timers if t.instance_id in ours}
    outcomes = await runtime.fire_timers([by_id[stays], by_id[leaves], by_id[other]])
    assert applied[0] == [False, False, True]
    assert [o.instance.state if o else None for o in outcomes] == ["lapsed", None, "lapsed"]
    histories = {iid: [e.trigger for e in await runtime.history(iid)]
                 for iid in (stays, leaves, other)}
    assert histories == {stays: ["start", "submit", "confirm", "expire"],
                         leaves: ["start", "submit", "back"],
                         other: ["start", "submit", "expire"]}
    left = await store.claim_timers(clock.now() + timedelta(days=1), timedelta(seconds=30),
                                    1000)
    assert [t for t in left if t.instance_id in ours] == []


async def test_a_batch_that_cannot_commit_together_commits_each_on_its_own(
        runtime: Runtime, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """As after a deadlock with another batch: nothing of it was applied, so each step
    goes on its own, exactly once."""
    ids = [await at_code(runtime) for _ in range(4)]

    async def deadlocked(steps: Any) -> list[bool]:
        raise ConcurrencyConflict()

    monkeypatch.setattr(runtime.store, "commit_many", deadlocked)
    clock.advance(timedelta(hours=72, seconds=1))
    worker = TimerWorker(runtime, runtime.store, clock)
    assert await worker.run_once() == 4
    assert worker.fired == 4
    for iid in ids:
        assert [e.trigger for e in await runtime.history(iid)].count("expire") == 1


async def test_a_batch_drops_the_timers_of_instances_that_moved_on_and_fires_the_rest(
        runtime: Runtime, clock: FrozenClock) -> None:
    ids = [await at_code(runtime) for _ in range(3)]
    clock.advance(timedelta(hours=72, seconds=1))
    timers = await runtime.store.claim_timers(clock.now(), timedelta(seconds=30), 10)
    # After the claim, a step taken just before the deadline cancels a timer claimed.
    clock.advance(timedelta(seconds=-2))
    await runtime.advance(ids[1], "back", {})
    clock.advance(timedelta(seconds=2))
    outcomes = await runtime.fire_timers(timers)
    assert [o is not None for o in outcomes] == [True, False, True]
    assert (await runtime.get(ids[1])).state == "details"
    with pytest.raises(ValueError, match="one timer an instance"):
        await runtime.fire_timers([timers[0], timers[0]])


async def test_a_timer_whose_step_fails_is_left_for_later_and_the_rest_of_its_batch_fires(
        runtime: Runtime, clock: FrozenClock, registry: Registry) -> None:
    failing: set[str] = set()

    async def provider_down(ai: Any) -> None:
        if ai.instance_id in failing:
            raise ConnectionError("the provider is down")

    registry.actions["provider_down"] = provider_down
    text = SAMPLE_YAML.replace("      - trigger: expire\n        source: code\n"
                               "        dest: lapsed\n",
                               "      - trigger: expire\n        source: code\n"
                               "        dest: lapsed\n        actions: [provider_down]\n")
    rt = Runtime(runtime.store, clock, registry, load_text(text, registry=registry))
    await rt.publish()
    ids = [await at_code(rt) for _ in range(3)]
    failing.add(ids[1])
    clock.advance(timedelta(hours=72, seconds=1))
    worker = TimerWorker(rt, rt.store, clock)
    assert await worker.run_once() == 3
    assert worker.fired == 2
    assert [(await rt.store.load(iid))[0].state for iid in ids] == ["lapsed", "code", "lapsed"]
    # Still there, leased: tried again once the lease runs out, and then it fires.
    assert await worker.run_once() == 0
    failing.clear()
    clock.advance(worker.lease)
    assert await worker.run_once() == 1
    assert (await rt.store.load(ids[1]))[0].state == "lapsed"


async def test_a_timer_armed_sooner_than_an_idle_workers_pause_wakes_it(
        runtime: Runtime, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker would sleep an hour (nothing is due, none is armed); the timer a step
    arms wakes it, and it fires it (its clock is past the due time already)."""
    later = FrozenClock(clock.now() + timedelta(hours=73))
    worker = TimerWorker(runtime, runtime.store, later, interval=3600)
    runtime.on_timer = worker.notify
    fired = asyncio.Event()
    fire_timers = runtime.fire_timers

    async def firing(timers: Any, **kwargs: Any) -> Any:
        outcomes = await fire_timers(timers, **kwargs)
        fired.set()
        return outcomes

    runtime.fire_timers = firing  # type: ignore[method-assign]
    idle = asyncio.Event()
    next_timer_due = runtime.store.next_timer_due

    async def looking(now: Any) -> Any:
        try:
            return await next_timer_due(now)
        finally:
            idle.set()  # it goes to sleep now, with nothing to wait for

    monkeypatch.setattr(runtime.store, "next_timer_due", looking)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(idle.wait(), 60)
        iid = await at_code(runtime)
        await asyncio.wait_for(fired.wait(), 60)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert worker.fired == 1
    assert (await runtime.store.load(iid))[0].state == "lapsed"


def test_an_idle_worker_sleeps_until_the_next_timer_within_its_bounds(
        runtime: Runtime, clock: FrozenClock) -> None:
    worker = TimerWorker(runtime, runtime.store, clock, interval=0.5, gather=0.05)
    now = clock.now()
    assert worker.pause(now, None) == 0.5
    assert worker.pause(now, now + timedelta(seconds=0.2)) == pytest.approx(0.2)
    assert worker.pause(now, now + timedelta(hours=72)) == 0.5
    assert worker.pause(now, now + timedelta(milliseconds=1)) == 0.05
    assert worker.pause(now, now - timedelta(seconds=1)) == 0.05  # leased by another


async def test_edited_definition_pins_old_instances_to_their_version(
        runtime: Runtime, registry: Registry) -> None:
    old_id = await at_code(runtime)
    old_version = (await runtime.get(old_id)).definition_hash
    # The edit: a right code now leads to a new review state instead of done.
    edited = SAMPLE_YAML.replace(
        "      - trigger: confirm\n        source: code\n        dest: done\n",
        "      - trigger: confirm\n        source: code\n        dest: review\n").replace(
        "      done:\n        final: true\n",
        "      done:\n        final: true\n      review:\n        fields: {}\n")
    edited += ("      - trigger: approve\n        source: review\n        dest: done\n")
    changed = await runtime.reload(load_text(edited, registry=registry))
    assert changed == ["signup"]
    new_id = await at_code(runtime)
    new_instance = await runtime.get(new_id)
    assert new_instance.definition_hash != old_version
    assert (await runtime.advance(old_id, "confirm", {"code": "123456"})).instance.state == "done"
    assert (await runtime.advance(new_id, "confirm", {"code": "123456"})).instance.state == \
        "review"
    for iid in (old_id, new_id):
        inst = await runtime.get(iid)
        compiled = await runtime.compiled(inst.definition_hash)
        assert replay(compiled, await runtime.history(iid)).state == inst.state


async def test_a_runtime_started_later_loads_old_versions_from_the_database(
        runtime: Runtime, registry: Registry, pool: asyncpg.Pool, clock: FrozenClock) -> None:
    iid = await at_code(runtime)
    edited = SAMPLE_YAML.replace("title: {zh: 测试注册, en: Test sign-up}",
                                 "title: {zh: 测试注册二, en: Test sign-up 2}")
    fresh = Runtime(PgStore(pool), clock, registry, load_text(edited, registry=registry))
    await fresh.publish()
    assert fresh.flows.flows["signup"].version != (await fresh.get(iid)).definition_hash
    outcome = await fresh.advance(iid, "confirm", {"code": "123456"})
    assert outcome.instance.state == "done"
    assert outcome.event.definition_hash == (await fresh.get(iid)).definition_hash


async def test_expired_instance_refuses_steps_with_restart_hint(runtime: Runtime,
                                                                clock: FrozenClock) -> None:
    iid = (await runtime.start("signup", {"name": "Ada"})).instance.id
    clock.advance(timedelta(days=7))
    with pytest.raises(FlowExpired) as info:
        await runtime.advance(iid, "submit", DETAILS)
    assert info.value.extra["restart"]["body"] == {"prefill": {"name": "Ada"}}


async def test_prefill_refuses_secret_and_unknown_fields(runtime: Runtime) -> None:
    with pytest.raises(ValidationFailed) as info:
        await runtime.start("signup", {"password": "x", "bogus": 1})
    assert sorted(e.field for e in info.value.errors) == ["bogus", "password"]


async def test_trigger_from_wrong_state_is_refused(runtime: Runtime) -> None:
    iid = (await runtime.start("signup")).instance.id
    with pytest.raises(TriggerNotAllowed) as info:
        await runtime.advance(iid, "confirm", {"code": "1"})
    assert info.value.extra["available"] == ["submit"]


async def test_outbox_is_sent_after_commit_and_retried_with_a_stable_key(
        runtime: Runtime, clock: FrozenClock, pool: asyncpg.Pool) -> None:
    failures = {"left": 2}
    seen: list[str] = []
    mine: dict[str, str] = {}

    async def flaky(message: Any) -> None:
        if message.instance_id != mine.get("id"):
            return  # other tests' messages share the table
        seen.append(message.idempotency_key)
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("gateway down")

    registry = runtime.registry
    registry.senders["sms"] = flaky
    iid = await at_code(runtime)
    mine["id"] = iid
    dispatcher = OutboxDispatcher(runtime.store, clock, registry)
    for _ in range(3):
        # Drain every due message, then move past the backoff.
        while await dispatcher.run_once():
            pass
        clock.advance(timedelta(hours=2))
    assert seen == [f"{iid}:2:1"] * 3
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT attempts, sent_at, last_error FROM outbox"
                                  " WHERE instance_id = $1", iid)
    assert row["attempts"] == 3
    assert row["sent_at"] is not None
    assert row["last_error"] is None


WAKES_YAML = """\
flows:
  wakes:
    initial: a
    states:
      a: {on_enter: [notify]}
      b: {final: true}
    transitions:
      - {trigger: go, source: a, dest: b}
"""


async def test_only_steps_that_queue_messages_wake_the_dispatcher(
        runtime: Runtime) -> None:
    registry = sample_registry()

    @registry.action("notify")
    async def notify(a: Any) -> None:
        a.emit("sms", {"to": "x", "template": "code"})

    woken: list[str] = []
    rt = Runtime(runtime.store, runtime.clock, registry,
                 load_text(SAMPLE_YAML, registry=registry), on_commit=lambda: woken.append("x"))
    await rt.publish()
    iid = (await rt.start("signup")).instance.id
    assert woken == []  # a start that queues nothing: nothing to send
    await rt.advance(iid, "submit", DETAILS)  # send_code queues the code's message
    assert woken == ["x"]
    noisy = Runtime(runtime.store, runtime.clock, registry,
                    load_text(WAKES_YAML, registry=registry),
                    on_commit=lambda: woken.append("start"))
    await noisy.publish()
    await noisy.start("wakes")
    assert woken == ["x", "start"]


EFFECTS_YAML = """\
flows:
  effects:
    initial: a
    states:
      a: {}
      b:
        on_enter: [mark]
        timeout: {after: 1h, trigger: tick}
      c: {final: true}
    transitions:
      - {trigger: go, source: a, dest: b, guards: ["!marked"]}
      - {trigger: go, source: a, dest: c, guards: [marked]}
      - {trigger: tick, source: b, dest: b}
      - {trigger: finish, source: b, dest: c}
"""


def effects_registry() -> Registry:
    registry = Registry()

    @registry.action("mark")
    async def mark(a: Any) -> dict[str, Any]:
        return {"key": a.idempotency_key}

    @registry.guard("marked")
    def marked(g: Any) -> bool:
        return "mark" in g.facts

    return registry


async def test_on_enter_effects_are_recorded_apart_and_never_seen_by_guards(
        pool: asyncpg.Pool, clock: FrozenClock) -> None:
    registry = effects_registry()
    rt = Runtime(PgStore(pool), clock, registry, load_text(EFFECTS_YAML, registry=registry))
    await rt.publish()
    iid = (await rt.start("effects")).instance.id
    outcome = await rt.advance(iid, "go", {})
    assert outcome.instance.state == "b"
    assert outcome.event.facts == {}
    assert outcome.event.effects == {"mark": {"key": f"{iid}:2:mark"}}
    compiled = await rt.compiled(outcome.instance.definition_hash)
    assert replay(compiled, await rt.history(iid)).state == "b"


AT_END_YAML = """\
flows:
  at_end:
    initial: a
    states:
      a: {on_enter: [leave]}
      b: {on_enter: [take]}
      c: {final: true}
    transitions:
      - {trigger: go, source: a, dest: b, actions: [leave]}
      - {trigger: fail, source: a, dest: c, actions: [leave, boom]}
      - {trigger: finish, source: b, dest: c}
"""


async def test_work_left_for_the_steps_end_runs_after_every_action_unless_one_raised(
        pool: asyncpg.Pool, clock: FrozenClock) -> None:
    registry = Registry()
    done: list[str] = []

    @registry.action("leave")
    async def leave(a: Any) -> None:
        async def work() -> None:
            done.append(f"end of {a.trigger}: {sorted(a.scratch)}")
        a.scratch["left"] = True
        a.at_end.append(work)

    @registry.action("take")
    async def take(a: Any) -> None:
        done.append(f"take: {a.scratch.pop('left', None)}")

    @registry.action("boom")
    async def boom(a: Any) -> None:
        raise RuntimeError("boom")

    rt = Runtime(PgStore(pool), clock, registry, load_text(AT_END_YAML, registry=registry))
    await rt.publish()
    iid = (await rt.start("at_end")).instance.id
    assert done == ["end of start: ['left']"]
    done.clear()
    await rt.advance(iid, "go", {})
    # The entered state's action ran first, and took what was left.
    assert done == ["take: True", "end of go: []"]
    other = (await rt.start("at_end")).instance.id
    done.clear()
    with pytest.raises(RuntimeError):
        await rt.advance(other, "fail", {})
    assert done == []
    assert (await rt.get(other)).state == "a"


async def test_a_timeout_that_loops_back_is_armed_again(pool: asyncpg.Pool,
                                                        clock: FrozenClock) -> None:
    registry = effects_registry()
    rt = Runtime(PgStore(pool), clock, registry, load_text(EFFECTS_YAML, registry=registry))
    await rt.publish()
    iid = (await rt.start("effects")).instance.id
    await rt.advance(iid, "go", {})
    for _ in range(3):
        clock.advance(timedelta(hours=1))
        instance = await rt.get(iid)
        assert instance.state == "b"
        assert instance.deadline_at == clock.now() + timedelta(hours=1)
    assert [e.trigger for e in await rt.history(iid)] == ["start", "go", "tick", "tick", "tick"]


WRITES_YAML = """\
flows:
  writes:
    initial: a
    states:
      a:
        fields:
          n: {type: integer, required: true, label: {zh: 数, en: Number}}
      b: {final: true}
    transitions:
      - {trigger: go, source: a, dest: b, actions: [save]}
"""


async def test_a_write_that_fails_refuses_the_whole_step(pool: asyncpg.Pool,
                                                         clock: FrozenClock) -> None:
    from engine import EngineError

    class Taken(EngineError):
        status = 409
        error_id = "number_taken"

    registry = Registry()

    @registry.action("save")
    async def save(a: Any) -> dict[str, Any]:
        async def insert(conn: Any) -> None:
            try:
                await conn.execute("INSERT INTO writes_test (n) VALUES ($1)", a.input["n"])
            except asyncpg.UniqueViolationError:
                raise Taken() from None
        a.write(insert)
        a.reply("token", f"t-{a.input['n']}")
        return None

    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS writes_test (n int PRIMARY KEY)")
    rt = Runtime(PgStore(pool), clock, registry, load_text(WRITES_YAML, registry=registry))
    await rt.publish()
    first = (await rt.start("writes")).instance.id
    second = (await rt.start("writes")).instance.id
    n = 1000 + int(clock.now().timestamp()) % 1000
    outcome = await rt.advance(first, "go", {"n": n})
    assert outcome.replies == {"token": f"t-{n}"}
    assert all("t-" not in str(e.as_dict()) for e in await rt.history(first))
    with pytest.raises(Taken):
        await rt.advance(second, "go", {"n": n})
    assert (await rt.get(second)).version == 1
    assert len(await rt.history(second)) == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM writes_test WHERE n = $1", n) == 1


async def test_a_message_that_never_goes_out_is_given_up_after_max_attempts(
        runtime: Runtime, clock: FrozenClock, pool: asyncpg.Pool) -> None:
    mine: dict[str, str] = {}

    async def broken(message: Any) -> None:
        if message.instance_id == mine.get("id"):
            raise ConnectionError("never")

    runtime.registry.senders["sms"] = broken
    mine["id"] = await at_code(runtime)
    dispatcher = OutboxDispatcher(runtime.store, clock, runtime.registry, max_attempts=3)
    for _ in range(5):
        while await dispatcher.run_once():
            pass
        clock.advance(timedelta(hours=2))
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT attempts, sent_at, dead_at FROM outbox"
                                  " WHERE instance_id = $1", mine["id"])
    assert (row["attempts"], row["sent_at"]) == (3, None)
    assert row["dead_at"] is not None


async def test_prefill_cannot_set_a_locked_or_derived_field(pool: asyncpg.Pool,
                                                            clock: FrozenClock) -> None:
    text = """\
flows:
  locked:
    initial: a
    states:
      a:
        fields:
          official: {type: string, locked: true, label: {zh: 官方, en: Official}}
          copy: {type: string, value_from: values.name, label: {zh: 副本, en: Copy}}
          name: {type: string, label: {zh: 名, en: Name}}
      b: {final: true}
    transitions:
      - {trigger: go, source: a, dest: b}
"""
    registry = Registry()
    rt = Runtime(PgStore(pool), clock, registry, load_text(text, registry=registry))
    await rt.publish()
    with pytest.raises(ValidationFailed) as info:
        await rt.start("locked", {"official": "FORGED", "copy": "x", "name": "ok"})
    assert sorted(e.field for e in info.value.errors) == ["copy", "official"]
    outcome = await rt.start("locked", {"name": "ok"})
    view = await rt.view(outcome.instance)
    assert [f["value"] for f in view["ui"]["fields"]] == [None, "ok", "ok"]


async def test_dated_validators_get_the_engine_clock(pool: asyncpg.Pool,
                                                     clock: FrozenClock) -> None:
    registry = Registry()
    seen: list[Any] = []

    @registry.validator("not_future", dated=True)
    def not_future(value: Any, *, now: Any) -> Any:
        seen.append(now)
        if value > now.date().isoformat():
            raise Invalid("in_future", "日期晚于今天", "The date is after today")
        return value

    @registry.validator("plain")
    def plain(value: Any) -> Any:
        return value

    text = """\
flows:
  dated:
    initial: a
    expires_in: 7d
    states:
      a:
        fields:
          day: {type: string, format: not_future, label: {zh: 日期, en: Day}}
          note: {type: string, format: plain, label: {zh: 备注, en: Note}}
      b: {final: true}
    transitions:
      - {trigger: go, source: a, dest: b}
"""
    runtime = Runtime(PgStore(pool), clock, registry, load_text(text, registry=registry))
    await runtime.publish()
    iid = (await runtime.start("dated")).instance.id
    tomorrow = (clock.now() + timedelta(days=1)).date().isoformat()
    with pytest.raises(ValidationFailed) as refused:
        await runtime.advance(iid, "go", {"day": tomorrow, "note": "x"})
    assert refused.value.errors[0].error_id == "in_future"
    assert seen == [clock.now()]
    clock.advance(timedelta(days=1))
    outcome = await runtime.advance(iid, "go", {"day": tomorrow, "note": "x"})
    assert outcome.instance.state == "b"


async def test_a_step_carries_over_every_field_it_does_not_change(runtime: Runtime) -> None:
    before = (await runtime.start("signup", actor="account:someone")).instance
    after = (await runtime.advance(before.id, "submit", DETAILS,
                                   actor="account:someone")).instance
    changed = {"state", "context", "version", "status", "updated_at", "last_hash",
               "deadline_at"}
    for field in attrs.fields(Instance):
        if field.name not in changed:
            assert getattr(after, field.name) == getattr(before, field.name), field.name
    assert before.owner == "account:someone"


async def test_a_replay_whose_history_does_not_replay_answers_as_it_is_now(
        runtime: Runtime, pool: asyncpg.Pool) -> None:
    """A resent step's answer is rebuilt from the history; should the history not replay
    (an auditor's finding, here an instance row copied without its events), the client
    still gets an answer, never a 500."""
    first = (await runtime.start("signup")).instance
    copy = "0f0f0f0f-0000-4000-8000-000000000001"
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO flow_instances (id, flow, definition_version, state, context,"
            " version, status, created_at, updated_at, expires_at, deadline_at, last_hash,"
            " owner) SELECT $2, flow, definition_version, state, context, version, status,"
            " created_at, updated_at, expires_at, deadline_at, last_hash, owner"
            " FROM flow_instances WHERE id = $1", first.id, copy)
    await runtime.advance(copy, "submit", DETAILS, idempotency_key="k")
    await runtime.advance(copy, "back", {})
    again = await runtime.advance(copy, "submit", DETAILS, idempotency_key="k")
    assert again.replayed
    assert (again.instance.version, again.instance.state) == (3, "details")


async def test_a_stay_from_several_states_stays_in_each_without_entering_it(
        runtime: Runtime) -> None:
    from tests.engine.test_language_checks import STAY

    registry = Registry()
    entered: list[str] = []

    @registry.action("hello")
    async def hello(a: Any) -> None:
        entered.append(a.state)

    rt = Runtime(runtime.store, runtime.clock, registry, load_text(STAY, registry=registry))
    await rt.publish()
    iid = (await rt.start("f")).instance.id
    for state in ("old", "new"):
        outcome = await rt.advance(iid, "send_code", {})
        assert (outcome.event.from_state, outcome.instance.state) == (state, state)
        assert outcome.instance.context["attempts"] == 1
        assert outcome.instance.context["error"]["error_id"] == "sent"
        await rt.advance(iid, "next", {})
    assert entered == ["new"]  # entering `new` once; staying there enters nothing
    flow = rt.current("f")
    replayed = replay(await rt.compiled(flow.version), await rt.history(iid))
    assert replayed.state == "done"


LOCKED_NUMBER = """\
flows:
  f:
    initial: a
    states:
      a:
        on_enter: [load_number]
        fields:
          number:
            type: string
            locked: true
            sensitive: true
            value_from: facts.load_number.number
            label: {zh: 号码, en: Number}
      b: {final: true}
    transitions:
      - trigger: go
        source: a
        dest: b
        limits: [{name: per_number, by: "field:number", max: 1, per: 1h}]
"""


class _Sealer:
    """Seals as the vault does: the same number sealed twice is two different texts."""

    def __init__(self) -> None:
        self.n = 0

    def seal(self, kind: str, value: str) -> dict[str, str]:
        self.n += 1
        return {"kind": kind, "sealed": f"{self.n}:{value[::-1]}", "masked": "***"}

    def open(self, kind: str, sealed: Any) -> str:
        return str(sealed["sealed"]).split(":", 1)[1][::-1]


class _Limiter:
    def __init__(self) -> None:
        self.keys: list[str] = []

    async def hit_each(self, hits: Any) -> tuple[int, timedelta] | None:
        for i, (key, limit, _) in enumerate(hits):
            self.keys.append(key)
            if self.keys.count(key) > limit:
                return i, timedelta(seconds=1)
        return None


async def test_a_limit_by_a_locked_sensitive_field_counts_the_number_not_its_sealed_text(
        runtime: Runtime) -> None:
    registry = Registry()

    @registry.action("load_number")
    async def load_number(a: Any) -> dict[str, Any]:
        return {"number": a.sealer.seal("mobile", "13800138000")}

    limiter, sealer = _Limiter(), _Sealer()
    rt = Runtime(runtime.store, runtime.clock, registry,
                 load_text(LOCKED_NUMBER, registry=registry), limiter=limiter, sealer=sealer)
    await rt.publish()
    first, second = [(await rt.start("f")).instance.id for _ in range(2)]
    await rt.advance(first, "go", {})
    with pytest.raises(RateLimited):
        await rt.advance(second, "go", {})
    assert len(set(limiter.keys)) == 1


class _Swallowing:
    """A store whose claims fail, and swallow a cancel, as a pool under a frozen
    database can: the loop must end by its stop flag alone."""

    def __init__(self) -> None:
        self.claims = 0

    async def _fail(self, *args: Any) -> list[Any]:
        self.claims += 1
        with contextlib.suppress(asyncio.CancelledError):  # swallowed
            await asyncio.sleep(0.01)
        raise RuntimeError("pool is closing")

    claim_outbox = claim_timers = _fail

    async def next_timer_due(self, now: Any) -> None:
        return None


async def test_stopped_workers_leave_their_loops_even_when_a_cancel_is_swallowed(
        runtime: Runtime) -> None:
    store = _Swallowing()
    clock = FrozenClock(runtime.clock.now())
    workers = [TimerWorker(runtime, store, clock, interval=0.01),  # type: ignore[arg-type]
               OutboxDispatcher(store, clock, runtime.registry,  # type: ignore[arg-type]
                                interval=0.01)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    await asyncio.sleep(0.05)
    with capture_logs() as logs:
        for worker, task in zip(workers, tasks, strict=True):
            worker.stop()
            task.cancel()
        _, pending = await asyncio.wait(tasks, timeout=5)
    assert pending == set()
    # Failures while stopping are what stopping does: none is logged.
    assert [e for e in logs if e["log_level"] in ("error", "exception")] == []
    before = store.claims
    await asyncio.sleep(0.05)
    assert store.claims == before
