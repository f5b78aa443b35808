"""The engine's Store port in memory: what PostgreSQL would keep, with no server.

For dry runs and for property tests of the step. It keeps the semantics of
``storage/pg.py`` (``tests/storage/test_store_contract.py`` runs the same tests against
both), not its speed at scale: it is for one process and a few thousand instances.

- **Values come back as PostgreSQL gives them back.** JSON columns are kept as the text
  PgStore's codec writes and parsed afresh on every read, so no caller ever shares a
  dict with the store (or with another caller), and what JSON cannot say (tuples,
  integer keys) comes back as JSON says it. Times come back in UTC, a naive one read as
  UTC, as asyncpg reads a ``timestamptz``. Ids are spelled as PostgreSQL spells a uuid.
- **A step is all or nothing.** ``create`` and ``commit`` check, stage and apply with no
  await between the check and the change; a step's ``writes`` run between the two,
  under a store-wide lock (PostgreSQL's row locks, coarsened), so a second step on any
  instance waits for them and then finds the instance as they left it. Reads never
  wait: they see the store as it was before the step, as another connection would.
- **What a write means here.** There is no database beside the store for a write to
  change, so a write gets a :class:`MemoryTransaction`: it may refuse the step by
  raising (nothing of the step is kept), and it may register ``on_commit`` callbacks,
  which run only once the step is stored (an in-memory repository's change that must
  land with the step, or not at all). A write sees the store as it was before the step
  and must not call the store's ``create`` or ``commit`` itself (it would wait on its
  own step for ever, as a second connection would on PostgreSQL's row lock).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from engine import jsonio
from engine.errors import ConcurrencyConflict, DuplicateKey, FlowNotFound, InstanceNotFound
from engine.model import Flow
from engine.ports import Clock, NewTimer, StepCommit, SystemClock, Timer
from engine.replay import StoredHistory, micros
from engine.values import Event, Instance, OutboxMessage, Write

if TYPE_CHECKING:
    from engine.ports import Store

# The text a `json` column holds: the encoder of PgStore's codec, parsed back as it
# parses it (the standard library reads every integer exactly).
_dump = jsonio.dumps_text
_load = json.loads


def _utc(t: datetime) -> datetime:
    """A time as a ``timestamptz`` column gives it back."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _uuid(value: str) -> str:
    """An instance id as stored; not a uuid at all: no such instance."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise InstanceNotFound() from None


@attrs.frozen
class StoredTimer:
    """A pending timer, with its lease."""

    id: int
    instance_id: str
    state: str
    trigger: str
    due_at: datetime
    leased_until: datetime | None = None

    def as_timer(self) -> Timer:
        return Timer(self.id, self.instance_id, self.trigger, self.due_at)


@attrs.frozen
class StoredMessage:
    """An outbox message with its delivery record."""

    id: int
    instance_id: str
    seq: int
    topic: str
    payload_json: str
    idempotency_key: str
    created_at: datetime
    next_attempt_at: datetime
    attempts: int = 0
    leased_until: datetime | None = None
    sent_at: datetime | None = None
    dead_at: datetime | None = None
    last_error: str | None = None

    @property
    def payload(self) -> dict[str, Any]:
        """A fresh copy of the payload, as the dispatcher would get it."""
        payload: dict[str, Any] = _load(self.payload_json)
        return payload

    def as_message(self) -> OutboxMessage:
        return OutboxMessage(self.id, self.instance_id, self.seq, self.topic, self.payload,
                             self.idempotency_key, self.attempts)


@attrs.frozen
class _InstanceRow:
    id: str
    flow: str
    definition_hash: str
    state: str
    context: str  # JSON text
    version: int
    status: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    last_hash: str
    deadline_at: datetime | None
    owner: str
    start_key: str | None

    def instance(self) -> Instance:
        return Instance(
            id=self.id, flow=self.flow, definition_hash=self.definition_hash,
            state=self.state, context=_load(self.context), version=self.version,
            status=self.status, created_at=self.created_at, updated_at=self.updated_at,
            expires_at=self.expires_at, last_hash=self.last_hash,
            deadline_at=self.deadline_at, owner=self.owner)


@attrs.frozen
class _EventRow:
    instance_id: str
    seq: int
    trigger: str
    from_state: str | None
    to_state: str
    input: str  # JSON text, as are facts and effects
    facts: str
    effects: str
    actor: str
    at: str
    definition_hash: str
    prev_hash: str
    hash: str
    idempotency_key: str | None

    def event(self) -> Event:
        return Event(
            instance_id=self.instance_id, seq=self.seq, trigger=self.trigger,
            from_state=self.from_state, to_state=self.to_state, input=_load(self.input),
            facts=_load(self.facts), effects=_load(self.effects), actor=self.actor,
            at=self.at, definition_hash=self.definition_hash, prev_hash=self.prev_hash,
            hash=self.hash)


@attrs.frozen
class _Definition:
    version: str
    flow: str
    content: str  # JSON text
    first_seen: datetime


class MemoryTransaction:
    """What a step's writes get from a :class:`MemoryStore` (see the module's notes)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self._on_commit: list[Callable[[], None]] = []

    def on_commit(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once the step is stored; never if it is refused.

        It runs right after the step is applied, with nothing awaited in between; it
        must not raise (the step is stored by then).
        """
        self._on_commit.append(fn)

    async def _run(self, writes: Iterable[Write]) -> None:
        for write in writes:
            await write(self)

    def _committed(self) -> None:
        for fn in self._on_commit:
            fn()


class MemoryStore:
    """Store port in memory, with PgStore's semantics (see the module's notes).

    ``clock`` dates definitions when first saved (PostgreSQL's ``now()``); the system
    clock if none. ``interleave``: every call yields to the event loop once before it
    reads or changes anything, as a round trip to a server would, so concurrent steps
    interleave as they do on PostgreSQL; off, a call never yields (unless it waits for
    another step's writes) and concurrent tasks run one store call after another.
    """

    def __init__(self, clock: Clock | None = None, *, interleave: bool = False) -> None:
        self.clock: Clock = clock or SystemClock()
        self.interleave = interleave
        self._lock = asyncio.Lock()
        self._definitions: dict[str, _Definition] = {}
        self._flow_sets: list[tuple[str, ...]] = []
        self._instances: dict[str, _InstanceRow] = {}
        self._start_keys: dict[str, str] = {}
        self._events: dict[str, dict[int, _EventRow]] = {}
        self._keys: dict[tuple[str, str], int] = {}  # (instance, idempotency key) -> seq
        self._timers: dict[int, StoredTimer] = {}
        self._outbox: dict[int, StoredMessage] = {}
        self._timer_ids = itertools.count(1)
        self._message_ids = itertools.count(1)

    async def _round_trip(self) -> None:
        if self.interleave:
            await asyncio.sleep(0)

    # -- what tests and dry runs look at (PgStore has no such reads) ------------------
    def timers(self, instance_id: str | None = None) -> list[StoredTimer]:
        """Pending timers (of one instance), by due time."""
        iid = None if instance_id is None else _uuid(instance_id)
        return sorted((t for t in self._timers.values() if iid in (None, t.instance_id)),
                      key=lambda t: (t.due_at, t.id))

    def messages(self, instance_id: str | None = None) -> list[StoredMessage]:
        """Outbox messages (of one instance), sent, pending or dead, in queue order."""
        iid = None if instance_id is None else _uuid(instance_id)
        return [m for m in self._outbox.values() if iid in (None, m.instance_id)]

    # -- definitions ------------------------------------------------------------------
    async def save_definitions(self, flows: Iterable[Flow]) -> None:
        await self._round_trip()
        now = _utc(self.clock.now())
        for f in flows:
            if f.version not in self._definitions:
                self._definitions[f.version] = _Definition(f.version, f.name,
                                                           _dump(f.content), now)

    async def record_served(self, flows: Iterable[Flow]) -> None:
        """Note these flows (saved already) as the set now served, unless it still is."""
        await self._round_trip()
        versions = tuple(sorted(f.version for f in flows))
        if not self._flow_sets or self._flow_sets[-1] != versions:
            self._flow_sets.append(versions)

    async def served_definitions(self) -> list[dict[str, Any]]:
        """The content of every flow of the set served last; empty if none ever was."""
        await self._round_trip()
        if not self._flow_sets:
            return []
        return [_load(self._definitions[v].content) for v in self._flow_sets[-1]
                if v in self._definitions]

    async def definition(self, version: str) -> dict[str, Any] | None:
        await self._round_trip()
        found = self._definitions.get(version)
        if found is None:
            return None
        content: dict[str, Any] = _load(found.content)
        return content

    async def definitions(self, flow: str | None = None) -> list[dict[str, Any]]:
        await self._round_trip()
        rows = sorted((d for d in self._definitions.values() if flow in (None, d.flow)),
                      key=lambda d: (d.flow, d.first_seen))
        return [{"version": d.version, "flow": d.flow, "first_seen": d.first_seen}
                for d in rows]

    # -- instances and steps ------------------------------------------------------------
    async def create(self, instance: Instance, event: Event, timer: NewTimer | None,
                     outbox: tuple[tuple[str, dict[str, Any]], ...],
                     start_key: str | None, writes: tuple[Write, ...] = ()) -> None:
        await self._round_trip()
        iid = str(uuid.UUID(instance.id))
        async with self._lock:
            if iid in self._instances or start_key in self._start_keys:
                raise DuplicateKey("start key already used")
            if instance.definition_hash not in self._definitions:
                raise FlowNotFound(
                    f"definition version {instance.definition_hash} is not stored")
            row = _InstanceRow(
                id=iid, flow=instance.flow, definition_hash=instance.definition_hash,
                state=instance.state, context=_dump(instance.context),
                version=instance.version, status=instance.status,
                created_at=_utc(instance.created_at), updated_at=_utc(instance.updated_at),
                expires_at=_utc(instance.expires_at), last_hash=instance.last_hash,
                deadline_at=_utc(instance.deadline_at) if instance.deadline_at else None,
                owner=instance.owner, start_key=start_key)
            first = _EventRow(
                instance_id=iid, seq=event.seq, trigger=event.trigger,
                from_state=event.from_state, to_state=event.to_state,
                input=_dump(event.input), facts=_dump(event.facts),
                effects=_dump(event.effects), actor=event.actor, at=event.at,
                definition_hash=event.definition_hash, prev_hash=event.prev_hash,
                hash=event.hash, idempotency_key=None)
            messages = self._messages(iid, 1, row.created_at, outbox)
            tx = MemoryTransaction(self)
            await tx._run(writes)
            # Applied from here on with nothing awaited: no reader sees half of it.
            self._instances[iid] = row
            if start_key is not None:
                self._start_keys[start_key] = iid
            self._events[iid] = {first.seq: first}
            if timer is not None:
                self._arm(iid, timer)
            self._outbox.update((m.id, m) for m in messages)
            tx._committed()

    async def instance_by_start_key(self, key: str) -> Instance | None:
        await self._round_trip()
        iid = self._start_keys.get(key)
        return None if iid is None else self._instances[iid].instance()

    async def load(self, instance_id: str,
                   idempotency_key: str | None = None) -> tuple[Instance, Event | None]:
        iid = _uuid(instance_id)
        await self._round_trip()
        return self._loaded(iid, idempotency_key)

    async def load_many(self, requests: Sequence[tuple[str, str | None]],
                        ) -> list[tuple[Instance, Event | None] | None]:
        await self._round_trip()
        found: list[tuple[Instance, Event | None] | None] = []
        for instance_id, key in requests:
            try:
                found.append(self._loaded(_uuid(instance_id), key))
            except InstanceNotFound:
                found.append(None)
        return found

    def _loaded(self, iid: str, key: str | None) -> tuple[Instance, Event | None]:
        row = self._instances.get(iid)
        if row is None:
            raise InstanceNotFound()
        seq = None if key is None else self._keys.get((iid, key))
        return row.instance(), (None if seq is None else self._events[iid][seq].event())

    async def commit(self, step: StepCommit) -> None:
        iid = str(uuid.UUID(step.instance.id))
        await self._round_trip()
        async with self._lock:
            if not self._at_version(iid, step):
                raise ConcurrencyConflict()
            staged = self._stage(iid, step)
            tx = MemoryTransaction(self)
            await tx._run(step.writes)
            # Applied from here on with nothing awaited: no reader sees half of it.
            self._apply(iid, step, *staged)
            tx._committed()

    async def commit_many(self, steps: Sequence[StepCommit]) -> list[bool]:
        ids = [str(uuid.UUID(step.instance.id)) for step in steps]
        if len(set(ids)) != len(ids):
            raise ValueError("one step an instance in a batch")
        if any(step.writes for step in steps):
            raise ValueError("a step with writes is committed on its own")
        await self._round_trip()
        async with self._lock:
            applied = [self._at_version(iid, step) for iid, step in zip(ids, steps,
                                                                        strict=True)]
            # Every check before any change: a used key leaves all of them unapplied.
            staged = [(iid, step, self._stage(iid, step))
                      for iid, step, ok in zip(ids, steps, applied, strict=True) if ok]
            for iid, step, (after, recorded, messages) in staged:
                self._apply(iid, step, after, recorded, messages)
            return applied

    def _at_version(self, iid: str, step: StepCommit) -> bool:
        row = self._instances.get(iid)
        return row is not None and row.version == step.expected_version

    def _stage(self, iid: str, step: StepCommit,
               ) -> tuple[_InstanceRow, _EventRow, list[StoredMessage]]:
        """The rows a step writes; DuplicateKey if its key was used (nothing changes)."""
        inst, ev = step.instance, step.event
        row = self._instances[iid]
        key = step.idempotency_key
        if key is not None and (iid, key) in self._keys:
            raise DuplicateKey("idempotency key already used")
        if inst.version in self._events[iid]:
            # PostgreSQL's primary key on (instance, seq): a caller's bug, not a race.
            raise ValueError(f"event {inst.version} of {iid} is already recorded")
        now = _utc(inst.updated_at)
        deadline = _utc(inst.deadline_at) if inst.deadline_at else None
        # As COMMIT_SQL: the event's seq, destination and hash are the instance's.
        after = attrs.evolve(row, state=inst.state, context=_dump(inst.context),
                             version=inst.version, status=inst.status, updated_at=now,
                             last_hash=inst.last_hash, deadline_at=deadline)
        recorded = _EventRow(
            instance_id=iid, seq=inst.version, trigger=ev.trigger,
            from_state=ev.from_state, to_state=inst.state, input=_dump(ev.input),
            facts=_dump(ev.facts), effects=_dump(ev.effects), actor=ev.actor, at=ev.at,
            definition_hash=ev.definition_hash, prev_hash=ev.prev_hash,
            hash=inst.last_hash, idempotency_key=key)
        return after, recorded, self._messages(iid, inst.version, now, step.outbox)

    def _apply(self, iid: str, step: StepCommit, after: _InstanceRow, recorded: _EventRow,
               messages: list[StoredMessage]) -> None:
        self._instances[iid] = after
        self._events[iid][recorded.seq] = recorded
        if recorded.idempotency_key is not None:
            self._keys[(iid, recorded.idempotency_key)] = recorded.seq
        for timer in [t for t in self._timers.values() if t.instance_id == iid and (
                step.cancel_timers or t.id == step.fired_timer_id)]:
            del self._timers[timer.id]
        if step.new_timer is not None:
            self._arm(iid, step.new_timer)
        self._outbox.update((m.id, m) for m in messages)

    def _arm(self, iid: str, timer: NewTimer) -> None:
        armed = StoredTimer(next(self._timer_ids), iid, timer.state, timer.trigger,
                            _utc(timer.due_at))
        self._timers[armed.id] = armed

    def _messages(self, iid: str, seq: int, now: datetime,
                  outbox: Iterable[tuple[str, dict[str, Any]]]) -> list[StoredMessage]:
        # Keys as PgStore's: stable across retries of the sending, unique in the outbox.
        return [StoredMessage(next(self._message_ids), iid, seq, topic, _dump(payload),
                              f"{iid}:{seq}:{n}", now, now)
                for n, (topic, payload) in enumerate(outbox, start=1)]

    async def events(self, instance_id: str) -> list[Event]:
        iid = _uuid(instance_id)
        await self._round_trip()
        return [e.event() for e in self._history(iid)]

    def _history(self, iid: str) -> list[_EventRow]:
        return sorted(self._events.get(iid, {}).values(), key=lambda e: e.seq)

    async def histories(self, *, flow: str | None = None, since: datetime | None = None,
                        until: datetime | None = None, batch: int = 500,
                        ) -> AsyncIterator[StoredHistory]:
        """Every instance (oldest first) with its whole history, ``batch`` at a time.

        Pages over (created_at, id) as PgStore's do, each page read at once: an
        instance created while the pages are read shows up if it sorts after them.
        Each history is read from one JSON document with the stored JSON texts in it,
        as PostgreSQL builds them for PgStore.
        """
        since = _utc(since) if since else None
        until = _utc(until) if until else None

        def order(r: _InstanceRow) -> tuple[datetime, uuid.UUID]:
            return r.created_at, uuid.UUID(r.id)

        after: tuple[datetime, uuid.UUID] | None = None
        while True:
            await self._round_trip()
            rows = sorted((r for r in self._instances.values()
                           if flow in (None, r.flow)
                           and (since is None or r.created_at >= since)
                           and (until is None or r.created_at < until)
                           and (after is None or order(r) > after)), key=order)[:batch]
            if not rows:
                return
            page = [StoredHistory.read(self._document(r)) for r in rows]
            for item in page:
                yield item
            after = order(rows[-1])
            if len(rows) < batch:
                return

    def _document(self, r: _InstanceRow) -> bytes:
        events = [[e.instance_id, e.seq, e.trigger, e.from_state, e.to_state,
                   orjson.Fragment(e.input), orjson.Fragment(e.facts),
                   orjson.Fragment(e.effects), e.actor, e.at, e.definition_hash,
                   e.prev_hash, e.hash] for e in self._history(r.id)]
        timers = [[t.state, t.trigger, micros(t.due_at)] for t in self.timers(r.id)]
        return orjson.dumps([r.id, r.flow, r.definition_hash, r.state,
                             orjson.Fragment(r.context), r.version, r.last_hash, events,
                             r.status, micros(r.expires_at),
                             None if r.deadline_at is None else micros(r.deadline_at),
                             r.owner, timers])

    async def versions_in_use(self) -> list[tuple[str, str, int]]:
        await self._round_trip()
        counts = Counter((r.definition_hash, r.flow) for r in self._instances.values()
                         if r.status == "active")
        return [(version, flow, n) for (version, flow), n
                in sorted(counts.items(), key=lambda item: (item[0][1], item[0][0]))]

    # -- timers ---------------------------------------------------------------------
    async def pending_timers(self, instance_id: str) -> list[NewTimer]:
        iid = _uuid(instance_id)
        await self._round_trip()
        return self._pending(iid)

    def _pending(self, iid: str) -> list[NewTimer]:
        return [NewTimer(t.state, t.trigger, t.due_at) for t in self.timers(iid)]

    async def snapshot(self, instance_id: str,
                       ) -> tuple[Instance, list[Event], list[NewTimer]]:
        iid = _uuid(instance_id)
        await self._round_trip()
        # No await between the three reads: one moment, as the port asks.
        instance, _ = self._loaded(iid, None)
        return instance, [e.event() for e in self._history(iid)], self._pending(iid)

    async def due_timers(self, instance_id: str, now: datetime) -> list[Timer]:
        iid = _uuid(instance_id)
        await self._round_trip()
        now = _utc(now)
        return [t.as_timer() for t in self.timers(iid) if t.due_at <= now]

    async def claim_timers(self, now: datetime, lease: timedelta, limit: int) -> list[Timer]:
        await self._round_trip()
        now = _utc(now)
        free = [t for t in self.timers()
                if t.due_at <= now and (t.leased_until is None or t.leased_until <= now)]
        claimed = [attrs.evolve(t, leased_until=now + lease) for t in free[:max(limit, 0)]]
        self._timers.update((t.id, t) for t in claimed)
        return [t.as_timer() for t in claimed]

    async def next_timer_due(self, now: datetime) -> datetime | None:
        await self._round_trip()
        now = _utc(now)
        return min((t.due_at for t in self._timers.values() if t.due_at > now), default=None)

    async def drop_timer(self, timer_id: int) -> None:
        await self._round_trip()
        self._timers.pop(timer_id, None)

    # -- the outbox -----------------------------------------------------------------
    async def claim_outbox(self, now: datetime, lease: timedelta,
                           limit: int) -> list[OutboxMessage]:
        await self._round_trip()
        now = _utc(now)
        free = [m for m in self._outbox.values()
                if m.sent_at is None and m.dead_at is None and m.next_attempt_at <= now
                and (m.leased_until is None or m.leased_until <= now)]
        claimed = [attrs.evolve(m, leased_until=now + lease, attempts=m.attempts + 1)
                   for m in free[:max(limit, 0)]]
        self._outbox.update((m.id, m) for m in claimed)
        return [m.as_message() for m in claimed]

    async def outbox_sent(self, message_id: int, now: datetime) -> None:
        await self._round_trip()
        self._settle(message_id, sent_at=_utc(now), last_error=None)

    async def outbox_failed(self, message_id: int, retry_at: datetime, error: str) -> None:
        await self._round_trip()
        self._settle(message_id, next_attempt_at=_utc(retry_at), last_error=error[:2000])

    async def outbox_dead(self, message_id: int, now: datetime, error: str) -> None:
        await self._round_trip()
        self._settle(message_id, dead_at=_utc(now), last_error=error[:2000])

    def _settle(self, message_id: int, **changes: Any) -> None:
        found = self._outbox.get(message_id)
        if found is not None:
            self._outbox[message_id] = attrs.evolve(found, leased_until=None, **changes)

    async def ping(self) -> None:
        await self._round_trip()


if TYPE_CHECKING:
    def _is_a_store(store: MemoryStore) -> Store:  # mypy checks it implements the port
        return store
