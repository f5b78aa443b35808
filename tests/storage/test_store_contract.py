"""The Store port's contract: every test runs against PgStore and against MemoryStore.

Where the two disagree, one of them is wrong. The tests speak to the port only, but
for what the port never reads back (a timer's lease, a message's last error) and for
what a step's writes change: there each store has a small probe of its own
(:class:`Harness`).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import attrs
import pytest

from engine import (
    ConcurrencyConflict,
    DuplicateKey,
    Event,
    FlowNotFound,
    Instance,
    InstanceNotFound,
    MemoryStore,
    NewTimer,
    StepCommit,
    Store,
    load_text,
)
from engine.canonical import GENESIS
from engine.memory import MemoryTransaction
from engine.replay import StoredHistory, micros
from engine.values import Write
from storage import PgStore, create_pool
from storage.scratch import create_database, drop_database
from tests.conftest import ADMIN_URL
from tests.sample_flows import SAMPLE_YAML, sample_registry

FLOWS = load_text(SAMPLE_YAML, registry=sample_registry())
SIGNUP = FLOWS.flows["signup"]
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


class Refused(Exception):
    """What a write raises to refuse its step."""


@attrs.define
class Harness:
    """A store under test, and what the port cannot tell about it."""

    store: Any  # PgStore | MemoryStore: the port, and the reads the CLI uses
    # (instance, state, trigger, due_at, leased_until) of every pending timer, by due time.
    timers: Callable[[], Awaitable[list[tuple[Any, ...]]]]
    # Every outbox row by id: (instance, seq, topic, payload, key, attempts,
    # next_attempt_at, leased_until, sent_at, dead_at, last_error).
    messages: Callable[[], Awaitable[list[tuple[Any, ...]]]]
    # A write that records ``tag`` in the step's own transaction, and what was recorded.
    landing: Callable[[str], Write]
    landed: Callable[[], Awaitable[list[str]]]


async def _pg(dsn: str) -> tuple[Harness, Callable[[], Awaitable[None]]]:
    pool = await create_pool(dsn, min_size=1, max_size=25)
    async with pool.acquire() as conn, conn.transaction():
        # Empty, as a new database would be, in a thirtieth of the time. The history's
        # append-only triggers guard the service's connections; this is the test's own
        # database, emptied by its owner with ordinary triggers off.
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS contract_writes (n serial PRIMARY KEY, tag text);"
            " TRUNCATE flow_events, flow_timers, outbox, flow_sets, flow_instances,"
            " flow_definitions, contract_writes RESTART IDENTITY CASCADE")

    async def timers() -> list[tuple[Any, ...]]:
        rows = await pool.fetch("SELECT instance_id::text, state, trigger, due_at, leased_until"
                                " FROM flow_timers ORDER BY due_at, id")
        return [tuple(r) for r in rows]

    async def messages() -> list[tuple[Any, ...]]:
        rows = await pool.fetch(
            "SELECT instance_id::text, seq, topic, payload, idempotency_key, attempts,"
            " next_attempt_at, leased_until, sent_at, dead_at, last_error FROM outbox"
            " ORDER BY id")
        return [tuple(r) for r in rows]

    def landing(tag: str) -> Write:
        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute("INSERT INTO contract_writes (tag) VALUES ($1)", tag)
        return write

    async def landed() -> list[str]:
        return [r["tag"] for r in await pool.fetch("SELECT tag FROM contract_writes ORDER BY n")]

    return Harness(PgStore(pool), timers, messages, landing, landed), pool.close


def _memory() -> Harness:
    # Each call yields once, as a round trip would: concurrent callers interleave.
    store = MemoryStore(interleave=True)
    done: list[str] = []

    async def timers() -> list[tuple[Any, ...]]:
        return [(t.instance_id, t.state, t.trigger, t.due_at, t.leased_until)
                for t in store.timers()]

    async def messages() -> list[tuple[Any, ...]]:
        return [(m.instance_id, m.seq, m.topic, m.payload, m.idempotency_key, m.attempts,
                 m.next_attempt_at, m.leased_until, m.sent_at, m.dead_at, m.last_error)
                for m in store.messages()]

    def landing(tag: str) -> Write:
        async def write(tx: MemoryTransaction) -> None:
            tx.on_commit(lambda: done.append(tag))
        return write

    async def landed() -> list[str]:
        return list(done)

    return Harness(store, timers, messages, landing, landed)


@pytest.fixture(scope="module")
def contract_db() -> Iterator[str]:
    """A database of these tests' own: claims and counts see every row in it."""
    name = f"flows_test_{os.getpid()}_contract"
    dsn = asyncio.run(create_database(ADMIN_URL, name))
    yield dsn
    asyncio.run(drop_database(ADMIN_URL, name))


@pytest.fixture(params=["pg", "memory"])
async def harness(request: pytest.FixtureRequest, contract_db: str) -> AsyncIterator[Harness]:
    """Each store empty, with the sample flows' definitions saved."""
    if request.param == "memory":
        made = _memory()
        await made.store.save_definitions(FLOWS.flows.values())
        yield made
        return
    made, close = await _pg(contract_db)
    try:
        await made.store.save_definitions(FLOWS.flows.values())
        yield made
    finally:
        await close()


@pytest.fixture
def store(harness: Harness) -> Store:
    return harness.store  # type: ignore[no-any-return]


# -- building steps by hand ---------------------------------------------------------------

def started(*, at: datetime = T0, owner: str = "anonymous",
            context: dict[str, Any] | None = None,
            deadline: datetime | None = None) -> tuple[Instance, Event]:
    """A new signup instance in its first state, and its first event."""
    iid = str(uuid.uuid4())
    event = Event.sealed(
        instance_id=iid, seq=1, trigger="start", from_state=None, to_state="details",
        input={"name": "Ada"}, facts={}, effects={"welcome": {"n": 1}}, actor=owner,
        at=at.isoformat(), definition_hash=SIGNUP.version, prev_hash=GENESIS)
    instance = Instance(
        id=iid, flow=SIGNUP.name, definition_hash=SIGNUP.version, state="details",
        context=context if context is not None else {
            "values": {"name": "Ada"}, "facts": {}, "attempts": 0, "error": None},
        version=1, status="active", created_at=at, updated_at=at,
        expires_at=at + timedelta(days=7), last_hash=event.hash, deadline_at=deadline,
        owner=owner)
    return instance, event


def step(before: Instance, *, to: str = "code", key: str | None = None,
         at: datetime | None = None, timer: NewTimer | None = None,
         fired: int | None = None, cancel: bool | None = None,
         outbox: tuple[tuple[str, dict[str, Any]], ...] = (), writes: tuple[Write, ...] = (),
         status: str = "active") -> StepCommit:
    """The commit of one step from ``before`` to ``to``."""
    at = at or before.updated_at + timedelta(minutes=1)
    seq = before.version + 1
    moved = to != before.state
    event = Event.sealed(
        instance_id=before.id, seq=seq, trigger="submit", from_state=before.state,
        to_state=to, input={"n": seq}, facts={"check": {"ok": True}}, effects={},
        actor=before.owner, at=at.isoformat(), definition_hash=before.definition_hash,
        prev_hash=before.last_hash)
    deadline = timer.due_at if timer else (None if moved else before.deadline_at)
    after = attrs.evolve(
        before, state=to, context={**before.context, "attempts": seq}, version=seq,
        status=status, updated_at=at, last_hash=event.hash, deadline_at=deadline)
    return StepCommit(instance=after, expected_version=before.version, event=event,
                      idempotency_key=key, cancel_timers=moved if cancel is None else cancel,
                      new_timer=timer, fired_timer_id=fired, outbox=outbox, writes=writes)


async def create(store: Store, *, key: str | None = None, timer: NewTimer | None = None,
                 outbox: tuple[tuple[str, dict[str, Any]], ...] = (),
                 **kwargs: Any) -> Instance:
    instance, event = started(deadline=timer.due_at if timer else None, **kwargs)
    await store.create(instance, event, timer, outbox, key)
    return instance


async def refuse(tx: Any) -> None:
    raise Refused("no")


# -- creating and loading -----------------------------------------------------------------

async def test_a_created_instance_loads_as_it_was_given(store: Store) -> None:
    instance, event = started(owner="account:7")
    await store.create(instance, event, None, (), None)
    loaded, prior = await store.load(instance.id)
    assert loaded == instance
    assert prior is None
    assert await store.events(instance.id) == [event]


async def test_what_a_store_gives_back_is_never_the_callers_own_dict(store: Store) -> None:
    context = {"values": {"name": "Ada", "tags": ("a", "b")}, "facts": {}, "attempts": 0,
               "error": None}
    instance, event = started(context=context)
    await store.create(instance, event, None, (), None)
    context["values"]["name"] = "changed after create"
    event.input["name"] = "changed after create"
    loaded, _ = await store.load(instance.id)
    # JSON round trip: a tuple comes back as the list PostgreSQL gives.
    assert loaded.context["values"] == {"name": "Ada", "tags": ["a", "b"]}
    loaded.context["values"]["name"] = "changed after load"
    (first,) = await store.events(instance.id)
    first.input["name"] = "changed after load"
    again, _ = await store.load(instance.id)
    assert again.context["values"]["name"] == "Ada"
    assert (await store.events(instance.id))[0].input == {"name": "Ada"}


async def test_times_come_back_in_utc(store: Store) -> None:
    beijing = timezone(timedelta(hours=8))
    instance = await create(store, at=T0.astimezone(beijing))
    loaded, _ = await store.load(instance.id)
    assert loaded.created_at == T0
    assert loaded.created_at.utcoffset() == timedelta(0)
    assert loaded.expires_at.isoformat() == (T0 + timedelta(days=7)).isoformat()


async def test_an_id_is_found_however_it_is_spelled_and_comes_back_as_postgresql_spells_it(
        store: Store) -> None:
    instance = await create(store)
    loaded, _ = await store.load(instance.id.upper())
    assert loaded.id == instance.id
    assert [e.instance_id for e in await store.events(instance.id.upper())] == [instance.id]


async def test_an_id_that_is_no_uuid_or_unknown_is_no_instance(store: Store) -> None:
    for bad in ("nope", "", "12345678-1234-1234-1234-12345678901z"):
        with pytest.raises(InstanceNotFound):
            await store.load(bad)
        with pytest.raises(InstanceNotFound):
            await store.events(bad)
        with pytest.raises(InstanceNotFound):
            await store.due_timers(bad, T0)
    with pytest.raises(InstanceNotFound):
        await store.load(str(uuid.uuid4()))
    assert await store.events(str(uuid.uuid4())) == []


async def test_a_start_key_starts_one_instance_only(store: Store) -> None:
    first = await create(store, key="alice k1")
    second, event = started()
    with pytest.raises(DuplicateKey):
        await store.create(second, event, None, (), "alice k1")
    with pytest.raises(InstanceNotFound):
        await store.load(second.id)
    assert await store.instance_by_start_key("alice k1") == first
    assert await store.instance_by_start_key("bob k1") is None
    # Without a key, as many starts as asked.
    await create(store)
    await create(store)
    await store.create(second, event, None, (), "bob k1")
    assert await store.instance_by_start_key("bob k1") == second


async def test_an_instance_id_is_stored_once(store: Store) -> None:
    instance, event = started()
    await store.create(instance, event, None, (), None)
    with pytest.raises(DuplicateKey):
        await store.create(attrs.evolve(instance, state="code"), event, None, (), "k")
    assert (await store.load(instance.id))[0].state == "details"
    assert await store.instance_by_start_key("k") is None


async def test_an_instance_of_a_version_never_saved_is_refused(harness: Harness) -> None:
    instance, event = started()
    unsaved = attrs.evolve(instance, definition_hash="f" * 64)
    with pytest.raises(FlowNotFound):
        await harness.store.create(unsaved, event, NewTimer("details", "expire", T0), (), "k")
    with pytest.raises(InstanceNotFound):
        await harness.store.load(instance.id)
    assert await harness.store.instance_by_start_key("k") is None
    assert await harness.timers() == []


# -- steps --------------------------------------------------------------------------------

async def test_a_commit_stores_the_step_and_appends_its_event(store: Store) -> None:
    instance = await create(store, owner="account:7")
    commit = step(instance, key="account:7 k")
    await store.commit(commit)
    loaded, prior = await store.load(instance.id, "account:7 k")
    assert loaded == commit.instance
    assert prior == commit.event
    assert [e.seq for e in await store.events(instance.id)] == [1, 2]
    assert (await store.events(instance.id))[1] == commit.event


async def test_a_commit_changes_only_what_a_step_changes(store: Store) -> None:
    instance = await create(store, owner="account:7")
    commit = step(instance)
    # What a step never changes, changed in the commit's instance all the same.
    meddled = attrs.evolve(commit.instance, flow="other", owner="account:8",
                           created_at=T0 + timedelta(days=1),
                           expires_at=T0 + timedelta(days=30))
    await store.commit(attrs.evolve(commit, instance=meddled))
    assert (await store.load(instance.id))[0] == commit.instance


async def test_a_commit_at_a_version_the_instance_left_is_a_conflict(store: Store) -> None:
    instance = await create(store)
    await store.commit(step(instance))
    late = step(instance, to="details", key="k")
    with pytest.raises(ConcurrencyConflict):
        await store.commit(late)
    loaded, prior = await store.load(instance.id, "k")
    assert (loaded.version, loaded.state, prior) == (2, "code", None)
    assert len(await store.events(instance.id)) == 2


async def test_a_commit_to_an_instance_never_created_is_a_conflict(store: Store) -> None:
    instance, _ = started()
    with pytest.raises(ConcurrencyConflict):
        await store.commit(step(instance))
    assert await store.events(instance.id) == []


async def test_of_twenty_concurrent_commits_on_one_instance_exactly_one_wins(
        harness: Harness) -> None:
    store = harness.store
    instance = await create(store, timer=NewTimer("details", "expire", T0 + timedelta(hours=1)))
    steps = [step(instance, key=f"k{n}",
                  timer=NewTimer("code", "expire", T0 + timedelta(hours=n + 2)),
                  outbox=(("sms", {"n": n}),), writes=(harness.landing(f"w{n}"),))
             for n in range(20)]
    results = await asyncio.gather(*(store.commit(s) for s in steps), return_exceptions=True)
    winners = [n for n, r in enumerate(results) if r is None]
    assert len(winners) == 1, results
    assert all(isinstance(r, ConcurrencyConflict) for r in results if r is not None), results
    (n,) = winners
    loaded, prior = await store.load(instance.id, f"k{n}")
    assert loaded == steps[n].instance
    assert prior == steps[n].event
    assert len(await store.events(instance.id)) == 2
    assert [t[3] for t in await harness.timers()] == [T0 + timedelta(hours=n + 2)]
    assert [m[3] for m in await harness.messages()] == [{"n": n}]
    assert await harness.landed() == [f"w{n}"]


async def test_an_idempotency_key_is_used_once_per_instance(store: Store) -> None:
    instance = await create(store)
    other = await create(store)
    first = step(instance, key="alice k")
    await store.commit(first)
    again = step(first.instance, to="done", key="alice k", status="finished")
    with pytest.raises(DuplicateKey):
        await store.commit(again)
    assert (await store.load(instance.id))[0] == first.instance
    # The same key on another instance, or another sender's key: a new step.
    await store.commit(step(other, key="alice k"))
    await store.commit(step(first.instance, key="bob k"))
    assert (await store.load(instance.id, "alice k"))[1] == first.event
    assert (await store.load(instance.id, "bob k"))[1].seq == 3  # type: ignore[union-attr]
    assert (await store.load(instance.id, "carol k"))[1] is None
    assert (await store.load(instance.id))[1] is None


async def test_a_used_key_sent_at_a_stale_version_is_a_conflict(store: Store) -> None:
    instance = await create(store)
    await store.commit(step(instance, key="k"))
    with pytest.raises(ConcurrencyConflict):
        await store.commit(step(instance, key="k"))


# -- timers -------------------------------------------------------------------------------

async def test_a_timer_is_due_from_its_time_on(harness: Harness) -> None:
    store = harness.store
    due = T0 + timedelta(hours=72)
    instance = await create(store, timer=NewTimer("details", "expire", due))
    assert await store.due_timers(instance.id, due - timedelta(microseconds=1)) == []
    (timer,) = await store.due_timers(instance.id, due)
    assert (timer.instance_id, timer.trigger, timer.due_at) == (instance.id, "expire", due)
    assert await harness.timers() == [(instance.id, "details", "expire", due, None)]


async def test_leaving_a_state_cancels_its_timers_and_arms_the_next_ones(
        harness: Harness) -> None:
    store = harness.store
    instance = await create(store, timer=NewTimer("details", "expire", T0 + timedelta(hours=1)))
    commit = step(instance, to="code", timer=NewTimer("code", "expire", T0 + timedelta(hours=72)))
    await store.commit(commit)
    assert await harness.timers() == [
        (instance.id, "code", "expire", T0 + timedelta(hours=72), None)]
    await store.commit(step(commit.instance, to="done", status="finished"))
    assert await harness.timers() == []


async def test_a_step_that_stays_keeps_its_timer(harness: Harness) -> None:
    store = harness.store
    instance = await create(store, timer=NewTimer("details", "expire", T0 + timedelta(hours=1)))
    await store.commit(step(instance, to="details"))
    assert [t[3] for t in await harness.timers()] == [T0 + timedelta(hours=1)]


async def test_a_fired_timer_goes_with_its_step_and_a_rearmed_one_takes_its_place(
        harness: Harness) -> None:
    store = harness.store
    instance = await create(store, timer=NewTimer("details", "poll", T0 + timedelta(hours=1)))
    (timer,) = await store.due_timers(instance.id, T0 + timedelta(hours=1))
    await store.commit(step(instance, to="details", fired=timer.id,
                            timer=NewTimer("details", "poll", T0 + timedelta(hours=2))))
    (rearmed,) = await store.due_timers(instance.id, T0 + timedelta(hours=2))
    assert rearmed.id != timer.id
    assert rearmed.due_at == T0 + timedelta(hours=2)


async def test_a_step_never_deletes_another_instances_timer(harness: Harness) -> None:
    store = harness.store
    mine = await create(store)
    theirs = await create(store, timer=NewTimer("details", "expire", T0))
    (timer,) = await store.due_timers(theirs.id, T0)
    await store.commit(step(mine, fired=timer.id))
    assert await store.due_timers(theirs.id, T0) == [timer]


async def test_a_refused_commit_leaves_the_timers_alone(harness: Harness) -> None:
    store = harness.store
    instance = await create(store, timer=NewTimer("details", "expire", T0))
    stayed = step(instance, to="details", key="k")
    await store.commit(stayed)
    with pytest.raises(DuplicateKey):
        await store.commit(step(stayed.instance, key="k", timer=NewTimer("code", "x", T0)))
    with pytest.raises(ConcurrencyConflict):
        await store.commit(step(instance, timer=NewTimer("code", "x", T0)))
    assert await harness.timers() == [(instance.id, "details", "expire", T0, None)]


async def test_timers_are_claimed_earliest_first_and_leased(harness: Harness) -> None:
    store = harness.store
    # Armed in the reverse order of their due times.
    ids = [(await create(store, timer=NewTimer("details", "expire", T0 + timedelta(
        minutes=m)))).id for m in (30, 20, 10, 0)]
    now = T0 + timedelta(minutes=25)
    first = await store.claim_timers(now, LEASE, 2)
    assert [(t.instance_id, t.due_at) for t in first] == [
        (ids[3], T0), (ids[2], T0 + timedelta(minutes=10))]
    assert [t[4] for t in await harness.timers()] == [now + LEASE, now + LEASE, None, None]
    # Leased ones are not claimed again while the lease runs; not yet due ones never.
    assert [t.instance_id for t in await store.claim_timers(now, LEASE, 10)] == [ids[1]]
    assert await store.claim_timers(now + LEASE - timedelta(seconds=1), LEASE, 10) == []
    later = now + LEASE
    assert [t.instance_id for t in await store.claim_timers(later, LEASE, 10)] == [
        ids[3], ids[2], ids[1]]
    # A lease does not hide a timer from its own instance's reads.
    assert [t.id for t in await store.due_timers(ids[3], later)] == [first[0].id]


async def test_a_dropped_timer_is_gone(harness: Harness) -> None:
    store = harness.store
    instance = await create(store, timer=NewTimer("details", "expire", T0))
    (timer,) = await store.claim_timers(T0, LEASE, 10)
    await store.drop_timer(timer.id)
    await store.drop_timer(timer.id)  # twice: nothing more happens
    assert await store.due_timers(instance.id, T0 + timedelta(days=1)) == []
    assert await store.claim_timers(T0 + timedelta(days=1), LEASE, 10) == []


async def test_an_instances_due_timers_come_in_due_order(store: Store) -> None:
    instance = await create(store, timer=NewTimer("details", "a", T0 + timedelta(hours=3)))
    commit = step(instance, to="details", timer=NewTimer("details", "b", T0 + timedelta(hours=1)))
    await store.commit(commit)
    await store.commit(step(commit.instance, to="details",
                            timer=NewTimer("details", "c", T0 + timedelta(hours=2))))
    due = await store.due_timers(instance.id, T0 + timedelta(hours=3))
    assert [t.trigger for t in due] == ["b", "c", "a"]


async def test_the_next_timer_due_is_the_earliest_not_yet_due(harness: Harness) -> None:
    store = harness.store
    assert await store.next_timer_due(T0) is None
    for minutes in (30, 10, 20):
        await create(store, timer=NewTimer("details", "expire", T0 + timedelta(minutes=minutes)))
    assert await store.next_timer_due(T0) == T0 + timedelta(minutes=10)
    assert await store.next_timer_due(T0 + timedelta(minutes=10)) == T0 + timedelta(minutes=20)
    assert await store.next_timer_due(T0 + timedelta(minutes=30)) is None


# -- steps of many instances at once --------------------------------------------------------

async def test_many_loads_at_once_come_in_the_order_asked_none_for_no_instance(
        store: Store) -> None:
    first, second = await create(store), await create(store)
    done = step(second, key="k")
    await store.commit(done)
    found = await store.load_many([(second.id.upper(), "k"), ("not-a-uuid", None),
                                   (str(uuid.uuid4()), "k"), (first.id, "k"),
                                   (second.id, None)])
    assert found[0] == await store.load(second.id, "k")
    assert found[0] is not None
    assert found[0][1] is not None
    assert found[0][1].seq == 2
    assert found[1:3] == [None, None]
    assert found[3] == (first, None)
    assert found[4] == (done.instance, None)
    assert await store.load_many([]) == []


async def test_steps_committed_together_each_go_only_where_their_version_still_is(
        harness: Harness) -> None:
    store = harness.store
    due = T0 + timedelta(hours=1)
    a, b, c = [await create(store, timer=NewTimer("details", "expire", due)) for _ in range(3)]
    timers = {t.instance_id: t for t in await store.claim_timers(due, LEASE, 10)}
    overtaken = step(b, to="details", key="person")
    await store.commit(overtaken)
    steps = [step(a, to="code", key="timer:a", fired=timers[a.id].id,
                  timer=NewTimer("code", "expire", due + timedelta(hours=72)),
                  outbox=(("sms", {"to": "a"}), ("mail", {"to": "a"}))),
             step(b, to="code", key="timer:b", fired=timers[b.id].id,
                  outbox=(("sms", {"to": "b"}),)),
             step(c, to="details", key="timer:c", fired=timers[c.id].id)]
    assert await store.commit_many(steps) == [True, False, True]
    assert [e.seq for e in await store.events(a.id)] == [1, 2]
    assert (await store.load(a.id, "timer:a"))[1] == steps[0].event
    assert await store.load(a.id) == (steps[0].instance, None)
    assert await store.load(b.id) == (overtaken.instance, None)
    assert (await store.events(b.id))[1:] == [overtaken.event]
    assert (await store.load(c.id))[0] == steps[2].instance
    # The fired timers went with their steps; the overtaken one's stays; a's is re-armed.
    assert await harness.timers() == [
        (b.id, "details", "expire", due, due + LEASE),
        (a.id, "code", "expire", due + timedelta(hours=72), None)]
    claimed = await store.claim_outbox(steps[0].instance.updated_at, LEASE, 10)
    assert [(m.instance_id, m.seq, m.topic, m.payload, m.idempotency_key) for m in claimed] \
        == [(a.id, 2, "sms", {"to": "a"}, f"{a.id}:2:1"),
            (a.id, 2, "mail", {"to": "a"}, f"{a.id}:2:2")]
    assert await store.commit_many([]) == []


async def test_a_used_key_in_a_batch_applies_none_of_it(harness: Harness) -> None:
    store = harness.store
    a, b = await create(store), await create(store)
    done = step(a, to="details", key="timer:1")
    await store.commit(done)
    with pytest.raises(DuplicateKey):
        await store.commit_many([step(b, key="timer:2"),
                                 step(done.instance, key="timer:1")])
    assert await store.load(b.id) == (b, None)
    assert [e.seq for e in await store.events(a.id)] == [1, 2]


async def test_a_batch_takes_one_step_an_instance_and_none_with_writes(store: Store) -> None:
    a, b = await create(store), await create(store)
    first = step(a, to="details")
    with pytest.raises(ValueError, match="one step an instance"):
        await store.commit_many([first, step(first.instance)])
    with pytest.raises(ValueError, match="writes"):
        await store.commit_many([step(b, writes=(refuse,))])
    assert await store.load(a.id) == (a, None)
    assert await store.load(b.id) == (b, None)


# -- the outbox ---------------------------------------------------------------------------

async def test_messages_are_queued_with_a_key_per_instance_step_and_place(
        harness: Harness) -> None:
    store = harness.store
    instance = await create(store, outbox=(("sms", {"to": "a"}), ("mail", {"to": "b"})))
    payload: dict[str, Any] = {"to": "c", "n": (1, 2)}
    await store.commit(step(instance, at=T0 + timedelta(minutes=5),
                            outbox=(("sms", payload),)))
    payload["to"] = "changed after commit"
    claimed = await store.claim_outbox(T0 + timedelta(minutes=5), LEASE, 10)
    assert [(m.instance_id, m.seq, m.topic, m.payload, m.idempotency_key, m.attempts)
            for m in claimed] == [
        (instance.id, 1, "sms", {"to": "a"}, f"{instance.id}:1:1", 1),
        (instance.id, 1, "mail", {"to": "b"}, f"{instance.id}:1:2", 1),
        (instance.id, 2, "sms", {"to": "c", "n": [1, 2]}, f"{instance.id}:2:1", 1)]
    assert [m[6] for m in await harness.messages()] == [T0, T0, T0 + timedelta(minutes=5)]


async def test_a_message_is_not_claimed_before_its_step(store: Store) -> None:
    await create(store, at=T0, outbox=(("sms", {}),))
    assert await store.claim_outbox(T0 - timedelta(seconds=1), LEASE, 10) == []
    assert len(await store.claim_outbox(T0, LEASE, 10)) == 1


async def test_messages_are_claimed_oldest_first_and_leased(harness: Harness) -> None:
    store = harness.store
    for n in range(3):
        await create(store, outbox=(("sms", {"n": n}),))
    (first,) = await store.claim_outbox(T0, LEASE, 1)
    assert first.payload == {"n": 0}
    assert [m.payload["n"] for m in await store.claim_outbox(T0, LEASE, 10)] == [1, 2]
    assert await store.claim_outbox(T0 + LEASE - timedelta(seconds=1), LEASE, 10) == []
    # The lease ran out, nobody said how it went: claimed again, one attempt more.
    again = await store.claim_outbox(T0 + LEASE, LEASE, 10)
    assert [(m.payload["n"], m.attempts) for m in again] == [(0, 2), (1, 2), (2, 2)]
    assert again[0].id == first.id
    assert [m[7] for m in await harness.messages()] == [T0 + 2 * LEASE] * 3


async def test_a_sent_message_is_never_claimed_again(harness: Harness) -> None:
    store = harness.store
    await create(store, outbox=(("sms", {}),))
    (message,) = await store.claim_outbox(T0, LEASE, 10)
    await store.outbox_sent(message.id, T0 + timedelta(seconds=1))
    assert await store.claim_outbox(T0 + timedelta(days=1), LEASE, 10) == []
    (row,) = await harness.messages()
    assert row[5:] == (1, T0, None, T0 + timedelta(seconds=1), None, None)


async def test_a_failed_message_is_retried_at_its_time_with_its_error_kept(
        harness: Harness) -> None:
    store = harness.store
    await create(store, outbox=(("sms", {}),))
    (message,) = await store.claim_outbox(T0, LEASE, 10)
    retry = T0 + timedelta(minutes=2)
    await store.outbox_failed(message.id, retry, "gateway down " + "x" * 3000)
    (row,) = await harness.messages()
    assert (row[6], row[7], len(row[10])) == (retry, None, 2000)
    assert await store.claim_outbox(retry - timedelta(seconds=1), LEASE, 10) == []
    (again,) = await store.claim_outbox(retry, LEASE, 10)
    assert (again.id, again.attempts) == (message.id, 2)
    await store.outbox_sent(message.id, retry)
    assert (await harness.messages())[0][10] is None  # sent: the old error is cleared


async def test_a_dead_message_is_never_claimed_again_and_keeps_its_error(
        harness: Harness) -> None:
    store = harness.store
    await create(store, outbox=(("sms", {"n": 1}),))
    (message,) = await store.claim_outbox(T0, LEASE, 10)
    await store.outbox_dead(message.id, T0 + timedelta(seconds=3), "LookupError: no sender")
    assert await store.claim_outbox(T0 + timedelta(days=30), LEASE, 10) == []
    (row,) = await harness.messages()
    assert (row[3], row[5], row[7], row[8], row[9], row[10]) == (
        {"n": 1}, 1, None, None, T0 + timedelta(seconds=3), "LookupError: no sender")


# -- definitions --------------------------------------------------------------------------

async def test_a_definition_is_saved_once_and_read_back_as_saved(store: Store) -> None:
    await store.save_definitions(FLOWS.flows.values())  # saved by the fixture already
    (row,) = await store.definitions("signup")  # type: ignore[attr-defined]
    assert (row["version"], row["flow"]) == (SIGNUP.version, "signup")
    assert row["first_seen"].utcoffset() == timedelta(0)
    content = await store.definition(SIGNUP.version)
    assert content == SIGNUP.content
    content["initial"] = "changed"  # type: ignore[index]
    assert await store.definition(SIGNUP.version) == SIGNUP.content
    assert await store.definition("0" * 64) is None
    assert await store.definitions("nothing") == []  # type: ignore[attr-defined]


async def test_the_set_served_last_is_what_a_server_serves_when_its_file_is_bad(
        store: Store) -> None:
    other = load_text(SAMPLE_YAML.replace("Test sign-up", "Test sign-up again"),
                      registry=sample_registry())
    assert await store.served_definitions() == []  # type: ignore[attr-defined]
    await store.record_served(FLOWS.flows.values())  # type: ignore[attr-defined]
    assert await store.served_definitions() == [SIGNUP.content]  # type: ignore[attr-defined]
    await store.save_definitions(other.flows.values())
    await store.record_served(other.flows.values())  # type: ignore[attr-defined]
    assert await store.served_definitions() == [  # type: ignore[attr-defined]
        other.flows["signup"].content]
    await store.record_served(FLOWS.flows.values())  # type: ignore[attr-defined]
    assert await store.served_definitions() == [SIGNUP.content]  # type: ignore[attr-defined]


# -- reading everything -------------------------------------------------------------------

async def test_histories_page_through_every_instance_oldest_first(store: Store) -> None:
    made = []
    for n, minutes in enumerate((5, 0, 5, 3, 5, 9, 1)):
        at = T0 + timedelta(minutes=minutes)
        instance = await create(store, at=at, owner=f"account:{n}")
        # Some wait on a timeout (due at an odd microsecond), some finished.
        commit = step(instance, timer=NewTimer("code", "expire", at + timedelta(
            hours=72, microseconds=n)) if n % 2 else None,
                      status="finished" if n == 4 else "active")
        await store.commit(commit)
        made.append((commit.instance, await store.events(instance.id)))
    in_order = sorted(made, key=lambda m: (m[0].created_at, uuid.UUID(m[0].id)))

    async def read(**kwargs: Any) -> list[StoredHistory]:
        return [h async for h in store.histories(**kwargs)]  # type: ignore[attr-defined]

    # Each as the audit reads it: the live row's fields it checks, every event as stored,
    # read by orjson; times as whole microseconds, the pending timers as rows.
    assert [(*h[:7], h.event_objects(), h.plain) for h in await read()] == [
        (i.id, i.flow, i.definition_hash, i.state, i.context, i.version, i.last_hash,
         events, True) for i, events in in_order]
    assert [(h.status, h.expires_at, h.deadline_at, h.owner, h.timers)
            for h in await read()] == [
        (i.status, micros(i.expires_at), i.deadline_at and micros(i.deadline_at), i.owner,
         [["code", "expire", micros(i.deadline_at)]] if i.deadline_at else [])
        for i, _ in in_order]
    assert {h.status for h in await read()} == {"active", "finished"}
    assert [h.live_columns()["timers"] for h in await read()] == [
        [(t.state, t.trigger, t.due_at) for t in await store.pending_timers(i.id)]
        for i, _ in in_order]
    assert await read(batch=2) == await read(batch=3) == await read()
    assert [h.id for h in await read(since=T0 + timedelta(minutes=3),
                                     until=T0 + timedelta(minutes=9), batch=2)] == \
        [i.id for i, _ in in_order if T0 + timedelta(minutes=3) <= i.created_at
         < T0 + timedelta(minutes=9)]
    assert await read(flow="another") == []


async def test_versions_in_use_count_the_active_instances_of_each(store: Store) -> None:
    assert await store.versions_in_use() == []
    instance = await create(store)
    await create(store)
    assert await store.versions_in_use() == [(SIGNUP.version, "signup", 2)]
    await store.commit(step(instance, to="done", status="finished"))
    assert await store.versions_in_use() == [(SIGNUP.version, "signup", 1)]


# -- a step's writes ----------------------------------------------------------------------

async def test_a_steps_writes_run_in_its_transaction_and_land_with_it(
        harness: Harness) -> None:
    store = harness.store
    instance, event = started()
    await store.create(instance, event, None, (), None,
                       (harness.landing("created"), harness.landing("again")))
    await store.commit(step(instance, writes=(harness.landing("stepped"),)))
    assert await harness.landed() == ["created", "again", "stepped"]


async def test_a_failing_write_leaves_nothing_of_a_start(harness: Harness) -> None:
    store = harness.store
    instance, event = started()
    with pytest.raises(Refused):
        await store.create(instance, event, NewTimer("details", "expire", T0),
                           (("sms", {}),), "k", (harness.landing("before"), refuse))
    with pytest.raises(InstanceNotFound):
        await store.load(instance.id)
    assert await store.instance_by_start_key("k") is None
    assert (await harness.timers(), await harness.messages(), await harness.landed()) == (
        [], [], [])
    await store.create(instance, event, None, (), "k")  # the key is still free


async def test_a_failing_write_leaves_nothing_of_a_step(harness: Harness) -> None:
    store = harness.store
    instance = await create(store, timer=NewTimer("details", "expire", T0))
    (timer,) = await store.due_timers(instance.id, T0)
    failing = step(instance, key="k", fired=timer.id, outbox=(("sms", {}),),
                   timer=NewTimer("code", "expire", T0 + timedelta(hours=1)),
                   writes=(harness.landing("before"), refuse))
    with pytest.raises(Refused):
        await store.commit(failing)
    assert await store.load(instance.id, "k") == (instance, None)
    assert len(await store.events(instance.id)) == 1
    assert await harness.timers() == [(instance.id, "details", "expire", T0, None)]
    assert (await harness.messages(), await harness.landed()) == ([], [])
    await store.commit(attrs.evolve(failing, writes=()))  # the key is still free


async def test_a_commit_that_lost_its_race_runs_no_write(harness: Harness) -> None:
    store = harness.store
    instance = await create(store)
    await store.commit(step(instance))
    ran: list[Any] = []

    async def note(tx: Any) -> None:
        ran.append(tx)

    with pytest.raises(ConcurrencyConflict):
        await store.commit(step(instance, writes=(note, harness.landing("late"))))
    assert (ran, await harness.landed()) == ([], [])


async def test_a_snapshot_is_the_row_its_events_and_its_timers_read_together(
        store: Store) -> None:
    instance = await create(store, timer=NewTimer("details", "expire", T0 + timedelta(hours=1)))
    moved = step(instance, timer=NewTimer("code", "expire", T0 + timedelta(days=3)))
    await store.commit(moved)
    live, events, timers = await store.snapshot(instance.id)
    assert live == (await store.load(instance.id))[0] == moved.instance
    assert events == await store.events(instance.id)
    assert [e.seq for e in events] == [1, 2]
    assert timers == await store.pending_timers(instance.id) \
        == [NewTimer("code", "expire", T0 + timedelta(days=3))]
    with pytest.raises(InstanceNotFound):
        await store.snapshot(str(uuid.uuid4()))


async def test_a_step_committed_between_a_snapshots_reads_is_in_none_of_them(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: the row, the events and the timers are read in one transaction of
    one snapshot; a step landing after the row was read is in none of the three."""
    if not isinstance(harness.store, PgStore):
        pytest.skip("the memory store reads the three with no await between them")
    store = harness.store
    instance = await create(store, timer=NewTimer("details", "expire", T0 + timedelta(hours=1)))
    late = step(instance, timer=NewTimer("code", "expire", T0 + timedelta(days=3)))
    fetch = asyncpg.connection.Connection.fetch
    landed: list[bool] = []

    async def step_lands_first(self: Any, query: str, *args: Any, **kw: Any) -> Any:
        if "FROM flow_events" in query and not landed:
            landed.append(True)
            await store.commit(late)  # on another connection of the pool, committed
        return await fetch(self, query, *args, **kw)

    monkeypatch.setattr(asyncpg.connection.Connection, "fetch", step_lands_first)
    live, events, timers = await store.snapshot(instance.id)
    monkeypatch.undo()
    assert landed
    assert (live.version, live.state) == (1, "details")
    assert [e.seq for e in events] == [1]
    assert timers == [NewTimer("details", "expire", T0 + timedelta(hours=1))]
    # Read again, the step is in all three.
    live, events, timers = await store.snapshot(instance.id)
    assert (live.version, [e.seq for e in events], timers) == \
        (2, [1, 2], [NewTimer("code", "expire", T0 + timedelta(days=3))])
