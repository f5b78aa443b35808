"""The engine's Store port on PostgreSQL, through asyncpg.

A step is one statement: a CTE that updates the instance only if its version is still
the one loaded, appends the event, cancels and schedules timers and queues outbox
messages. One round trip, one implicit transaction, prepared by asyncpg's cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from engine import jsonio
from engine.errors import ConcurrencyConflict, DuplicateKey, FlowNotFound, InstanceNotFound
from engine.model import Flow
from engine.ports import NewTimer, StepCommit, Timer
from engine.replay import StoredHistory
from engine.values import Event, Instance, OutboxMessage, Write

# Compact, exact JSON; key order does not matter here (hashes are taken over the
# canonical form of the values read back), so no sorting on the hot path. Written with
# orjson, read as the standard library reads it (every integer exactly).
_encode = jsonio.dumps_text


async def _init_connection(conn: asyncpg.Connection) -> None:
    # `json` columns keep the text as written: hashed values come back unchanged.
    await conn.set_type_codec("json", encoder=_encode, decoder=jsonio.loads_column,
                              schema="pg_catalog")
    await conn.set_type_codec("jsonb", encoder=_encode, decoder=jsonio.loads_column,
                              schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Reset nothing when a connection goes back to the pool.

    asyncpg's default runs `RESET ALL; CLOSE ALL; UNLISTEN *; ...` on every release: a
    round trip per acquire, two per step. Nothing here leaves session state behind
    (no SET, LISTEN or advisory locks on pooled connections; migrations use their own
    connection), and an unfinished transaction is still rolled back by asyncpg.
    Measured: +55% engine steps per second (bench/steps.py).
    """


class _Pool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg ships no types
    """A pool whose ``acquire()`` gives up after ``acquire_timeout`` seconds.

    asyncpg waits for a free connection for ever unless each call names a timeout; with
    PostgreSQL frozen every request would queue behind the hung ones. The bound is
    here, once, not at each of the repositories' calls.

    The wait is bounded only when no connection is idle: else the acquire cannot wait
    (a new connection is bounded by the connect timeout, a statement by the command
    timeout), and a bounded acquire costs, on Python 3.11, a task of its own. Measured
    with 16 clients on a pool of 16, acquire-SELECT 1-release: 17 000/s unbounded,
    14 000/s bounded every time, 16 000/s bounded only without an idle connection.
    """

    __slots__ = ("_acquire_timeout",)

    def __init__(self, *args: Any, acquire_timeout: float | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        if timeout is None and self._acquire_timeout is not None and not self.get_idle_size():
            timeout = self._acquire_timeout
        return super().acquire(timeout=timeout)

    def release(self, connection: Any, *, timeout: float | None = None) -> Awaitable[None]:
        # After a statement timed out on our side (a frozen server) asyncpg waits for
        # its cancel request to be answered before it gives the connection back; the
        # frozen server never answers. The same bound, then the connection is dropped.
        return super().release(  # type: ignore[no-any-return]
            connection, timeout=self._acquire_timeout if timeout is None else timeout)


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10,
                      acquire_timeout: float | None = None,
                      command_timeout: float | None = None,
                      statement_timeout: float | None = None,
                      transaction_pooling: bool = False) -> asyncpg.Pool:
    """Open a pool; each bound (seconds) is off when None.

    ``acquire_timeout`` also bounds connecting. ``command_timeout`` is asyncpg's, on
    our side: it ends a wait on a frozen or unreachable server. ``statement_timeout``
    is PostgreSQL's own, sent once as a connection setting (a startup parameter, no
    SET that a pooler would have to track): the server cancels a slow statement
    itself and the connection stays usable. Keep it below ``command_timeout``.
    PgBouncer refuses startup parameters it does not track: behind one, set it to
    None (0 in DB_STATEMENT_TIMEOUT) and set statement_timeout on the role instead.

    ``transaction_pooling``: a pooler in transaction mode (PgBouncer before 1.21, or
    without ``max_prepared_statements``) hands each transaction to any server
    connection, where a statement prepared on another one does not exist. asyncpg then
    prepares every statement unnamed, in the same round trip as its execution (Parse,
    Describe, Flush, then Bind, Execute, Sync: one server connection throughout).
    Measured: 5% fewer engine steps per second than with the statement cache.
    """
    if transaction_pooling and statement_timeout:
        raise ValueError("statement_timeout is a startup parameter a transaction pooler "
                         "refuses: set it on the role instead")
    settings = ({"statement_timeout": str(int(statement_timeout * 1000))}
                if statement_timeout else {})
    connect: dict[str, Any] = {"server_settings": settings} if settings else {}
    if transaction_pooling:
        connect["statement_cache_size"] = 0
    if acquire_timeout is not None:
        connect["timeout"] = acquire_timeout
    pool = _Pool(dsn, min_size=min_size, max_size=max_size, max_queries=50000,
                 max_inactive_connection_lifetime=300.0, init=_init_connection,
                 reset=_keep_session, loop=None, connection_class=asyncpg.Connection,
                 record_class=asyncpg.Record, acquire_timeout=acquire_timeout,
                 command_timeout=command_timeout, **connect)
    await pool  # connects min_size connections, as asyncpg.create_pool does
    return pool


_INSTANCE_COLS = ("i.id, i.flow, i.definition_version, i.state, i.context, i.version, "
                  "i.status, i.created_at, i.updated_at, i.expires_at, i.deadline_at, "
                  "i.last_hash, i.owner")
_EVENT_COLS = ("e.instance_id, e.seq, e.trigger, e.from_state, e.to_state, e.input, e.facts, "
               "e.effects, e.actor, e.at, e.definition_version, e.prev_hash, e.hash")

_EVENT_NAMES = [c.strip().removeprefix("e.") for c in _EVENT_COLS.split(",")]
# Built from the constant column lists above, never from input.
LOAD_SQL = f"""
SELECT {_INSTANCE_COLS}, {", ".join(f"e.{c} AS e_{c}" for c in _EVENT_NAMES)}
FROM flow_instances i
LEFT JOIN flow_events e ON e.instance_id = i.id AND e.idempotency_key = $2
WHERE i.id = $1
"""

# One page of whole histories for the audit: one JSON document (UTF-8 bytes) an instance,
# [id, flow, definition_version, state, context, version, last_hash, events, status,
# expires_at, deadline_at, owner, timers], each event as its Event fields in order, each
# pending timer as [state, trigger, due_at] by due time (engine.replay.StoredHistory.read).
# Times as whole microseconds since 1970 (UTC), integers (extract gives numeric: exact):
# exact in any reader, whatever the session's time zone (json writes a timestamptz in
# it). The json columns go in as stored; the last row's keyset comes back beside the
# documents. Two statements, the first page's and the next ones': "($4 IS NULL OR
# (created_at, id) > ($4, $5))" in one statement gets, once PostgreSQL plans it
# generically (from its sixth run), an index scan from the first row on every page, each
# page slower than the one before. The timers of a page's instances are read with one
# index scan for all their ids (= ANY of an array made once): measured on 1,000-instance
# pages, a subquery an instance (as the events') took 40-110 ms a page where this takes
# 29-55 ms, with 160 and with 300,000 timers in the table; a join with the page instead
# read the whole table each page once it was large (1 s a page at 300,000).
_TIMERS_SQL = ("SELECT state, trigger, due_at FROM flow_timers WHERE instance_id = $1"
               " ORDER BY due_at, id")
_EVENTS_SQL = f"SELECT {_EVENT_COLS} FROM flow_events e WHERE e.instance_id = $1 ORDER BY e.seq"

_HISTORIES_SQL = """
WITH page AS (
    SELECT i.id, i.flow, i.definition_version, i.state, i.context, i.version, i.last_hash,
           i.created_at, i.status, i.expires_at, i.deadline_at, i.owner
    FROM flow_instances i
    WHERE ($1::text IS NULL OR i.flow = $1)
      AND ($2::timestamptz IS NULL OR i.created_at >= $2)
      AND ($3::timestamptz IS NULL OR i.created_at < $3)
      AND ($6::int = 1 OR mod(abs(hashtext(i.id::text)::bigint), $6) = $7)
      {after}
    ORDER BY i.created_at, i.id
    LIMIT $5
), pending AS (
    SELECT t.instance_id,
           json_agg(json_build_array(t.state, t.trigger, {due_at}) ORDER BY t.due_at, t.id)
               AS timers
    FROM flow_timers t
    WHERE t.instance_id = ANY (ARRAY(SELECT id FROM page))
    GROUP BY t.instance_id
)
SELECT array_agg(convert_to(json_build_array(
           p.id, p.flow, p.definition_version, p.state, p.context, p.version, p.last_hash,
           (SELECT coalesce(json_agg(json_build_array({events}) ORDER BY e.seq), '[]')
            FROM flow_events e WHERE e.instance_id = p.id),
           p.status, {expires_at}, {deadline_at}, p.owner,
           coalesce(t.timers, '[]'))::text, 'UTF8')
         ORDER BY p.created_at, p.id) AS histories,
       count(*) AS n,
       (array_agg(p.created_at ORDER BY p.created_at DESC, p.id DESC))[1] AS last_at,
       (array_agg(p.id ORDER BY p.created_at DESC, p.id DESC))[1] AS last_id
FROM page p LEFT JOIN pending t ON t.instance_id = p.id
"""
# A timestamptz as whole microseconds; 'infinity' (no step writes it) as its text, a
# finding rather than an error that ends the audit.
_MICROS = ("CASE WHEN isfinite({0}) THEN to_json((extract(epoch FROM {0}) * 1000000)::bigint)"
           " ELSE to_json({0}) END")
_TIMES = {"expires_at": _MICROS.format("p.expires_at"),
          "deadline_at": _MICROS.format("p.deadline_at"), "due_at": _MICROS.format("t.due_at")}
# Built from constants, never from input.
FIRST_HISTORIES_SQL = _HISTORIES_SQL.format(after="AND $4::text IS NULL",
                                            events=_EVENT_COLS, **_TIMES)
NEXT_HISTORIES_SQL = _HISTORIES_SQL.format(
    after="AND (i.created_at, i.id) > ($4::timestamptz, $8::uuid)", events=_EVENT_COLS,
    **_TIMES)

COMMIT_SQL = """
WITH upd AS (
    UPDATE flow_instances
    SET state = $3, context = $4, version = $5, status = $6, updated_at = $7,
        last_hash = $8, deadline_at = $9
    WHERE id = $1 AND version = $2
    RETURNING id
), ev AS (
    INSERT INTO flow_events (instance_id, seq, trigger, from_state, to_state, input, facts,
                             effects, actor, at, definition_version, prev_hash, hash,
                             idempotency_key)
    SELECT id, $5, $10, $11, $3, $12, $13, $26, $14, $15, $16, $17, $8, $18 FROM upd
    RETURNING seq
), cancelled AS (
    DELETE FROM flow_timers
    WHERE instance_id = $1 AND ($19 OR id = $20) AND EXISTS (SELECT 1 FROM upd)
), timer AS (
    INSERT INTO flow_timers (instance_id, state, trigger, due_at)
    SELECT id, $21, $22, $23 FROM upd WHERE $22::text IS NOT NULL
), outgoing AS (
    INSERT INTO outbox (instance_id, seq, topic, payload, idempotency_key, created_at,
                        next_attempt_at)
    SELECT upd.id, $5, m.topic, m.payload, $1::text || ':' || $5::text || ':' || m.n::text,
           $7, $7
    FROM upd, unnest($24::text[], $25::json[]) WITH ORDINALITY AS m(topic, payload, n)
)
SELECT count(*) FROM ev
"""

# LOAD_SQL for many (instance, key) pairs at once, each row numbered as it was asked.
LOAD_MANY_SQL = f"""
SELECT k.n, {_INSTANCE_COLS}, {", ".join(f"e.{c} AS e_{c}" for c in _EVENT_NAMES)}
FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS k(id, key, n)
JOIN flow_instances i ON i.id = k.id
LEFT JOIN flow_events e ON e.instance_id = i.id AND e.idempotency_key = k.key
"""

# COMMIT_SQL for many steps of distinct instances: one statement, one transaction, one
# WAL flush. Each step goes only where its instance is still at the version it was
# decided on (`done`); the others change nothing. Arrays in, one element a step;
# messages are flattened, each naming its step's place (`ord`).
COMMIT_MANY_SQL = """
WITH s AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::json[], $5::int[],
                         $6::text[], $7::timestamptz[], $8::text[], $9::timestamptz[],
                         $10::text[], $11::text[], $12::json[], $13::json[], $14::text[],
                         $15::text[], $16::text[], $17::text[], $18::text[], $19::bool[],
                         $20::bigint[], $21::text[], $22::text[], $23::timestamptz[],
                         $24::json[])
        WITH ORDINALITY AS s(id, expected, state, context, version, status, updated_at,
                             last_hash, deadline_at, trigger, from_state, input, facts,
                             actor, at, definition_version, prev_hash, idempotency_key,
                             cancel_all, fired_timer, timer_state, timer_trigger,
                             timer_due, effects, ord)
), upd AS (
    UPDATE flow_instances i
    SET state = s.state, context = s.context, version = s.version, status = s.status,
        updated_at = s.updated_at, last_hash = s.last_hash, deadline_at = s.deadline_at
    FROM s
    WHERE i.id = s.id AND i.version = s.expected
    RETURNING i.id
), done AS (
    SELECT s.* FROM s JOIN upd ON upd.id = s.id
), ev AS (
    INSERT INTO flow_events (instance_id, seq, trigger, from_state, to_state, input, facts,
                             effects, actor, at, definition_version, prev_hash, hash,
                             idempotency_key)
    SELECT id, version, trigger, from_state, state, input, facts, effects, actor, at,
           definition_version, prev_hash, last_hash, idempotency_key FROM done
    RETURNING instance_id
), cancelled AS (
    DELETE FROM flow_timers t USING done
    WHERE t.instance_id = done.id AND (done.cancel_all OR t.id = done.fired_timer)
), timer AS (
    INSERT INTO flow_timers (instance_id, state, trigger, due_at)
    SELECT id, timer_state, timer_trigger, timer_due FROM done
    WHERE timer_trigger IS NOT NULL
), outgoing AS (
    INSERT INTO outbox (instance_id, seq, topic, payload, idempotency_key, created_at,
                        next_attempt_at)
    SELECT done.id, done.version, m.topic, m.payload,
           done.id::text || ':' || done.version::text || ':' || m.n::text,
           done.updated_at, done.updated_at
    FROM unnest($25::bigint[], $26::text[], $27::json[], $28::int[]) AS m(ord, topic,
                                                                          payload, n)
    JOIN done ON done.ord = m.ord
)
SELECT instance_id FROM ev
"""

# A new instance with its first event, its timer and its messages, in one statement.
# The event, timer and messages reference the instance inserted beside them: foreign
# keys are checked at the end of the statement, when it is there.
CREATE_SQL = """
WITH ins AS (
    INSERT INTO flow_instances (id, flow, definition_version, state, context, version,
                                status, created_at, updated_at, expires_at, deadline_at,
                                last_hash, start_key, owner)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
    RETURNING id
), ev AS (
    INSERT INTO flow_events (instance_id, seq, trigger, from_state, to_state, input, facts,
                             effects, actor, at, definition_version, prev_hash, hash)
    SELECT id, $15, $16, $17, $30, $18, $19, $20, $21, $22, $31, $23, $24 FROM ins
), timer AS (
    INSERT INTO flow_timers (instance_id, state, trigger, due_at)
    SELECT id, $25, $26, $27 FROM ins WHERE $26::text IS NOT NULL
)
INSERT INTO outbox (instance_id, seq, topic, payload, idempotency_key, created_at,
                    next_attempt_at)
SELECT ins.id, 1, m.topic, m.payload, ins.id::text || ':1:' || m.n::text,
       $8, $8
FROM ins, unnest($28::text[], $29::json[]) WITH ORDINALITY AS m(topic, payload, n)
"""


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise InstanceNotFound() from None


def _pending(rows: Sequence[asyncpg.Record]) -> list[NewTimer]:
    return [NewTimer(r["state"], r["trigger"], r["due_at"]) for r in rows]


def _instance(r: asyncpg.Record) -> Instance:
    return Instance(
        id=str(r["id"]), flow=r["flow"], definition_hash=r["definition_version"],
        state=r["state"], context=r["context"], version=r["version"], status=r["status"],
        created_at=r["created_at"], updated_at=r["updated_at"], expires_at=r["expires_at"],
        last_hash=r["last_hash"], deadline_at=r["deadline_at"], owner=r["owner"])


def _event(r: asyncpg.Record, p: str = "") -> Event:
    return Event(
        instance_id=str(r[p + "instance_id"]), seq=r[p + "seq"], trigger=r[p + "trigger"],
        from_state=r[p + "from_state"], to_state=r[p + "to_state"], input=r[p + "input"],
        facts=r[p + "facts"], effects=r[p + "effects"], actor=r[p + "actor"], at=r[p + "at"],
        definition_hash=r[p + "definition_version"], prev_hash=r[p + "prev_hash"],
        hash=r[p + "hash"])


def _outbox_args(outbox: Iterable[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[Any]]:
    items = list(outbox)
    return [t for t, _ in items], [p for _, p in items]


class PgStore:
    """Store port over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def save_definitions(self, flows: Iterable[Flow]) -> None:
        rows = [(f.version, f.name, f.content) for f in flows]
        async with self.pool.acquire() as conn:
            await conn.executemany(
                "INSERT INTO flow_definitions (version, flow, content) VALUES ($1, $2, $3)"
                " ON CONFLICT (version) DO NOTHING", rows)

    async def record_served(self, flows: Iterable[Flow]) -> None:
        """Note these flows (saved already) as the set now served, unless it still is."""
        versions = sorted(f.version for f in flows)
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO flow_sets (versions) SELECT $1::text[] WHERE $1::text[] IS"
                " DISTINCT FROM (SELECT versions FROM flow_sets ORDER BY id DESC LIMIT 1)",
                versions)

    async def served_definitions(self) -> list[dict[str, Any]]:
        """The content of every flow of the set served last; empty if none ever was."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT content FROM flow_definitions WHERE version = ANY("
                " (SELECT versions FROM flow_sets ORDER BY id DESC LIMIT 1)::text[])")
        return [r["content"] for r in rows]

    async def definition(self, version: str) -> dict[str, Any] | None:
        async with self.pool.acquire() as conn:
            content: dict[str, Any] | None = await conn.fetchval(
                "SELECT content FROM flow_definitions WHERE version = $1", version)
            return content

    async def definitions(self, flow: str | None = None) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT version, flow, first_seen FROM flow_definitions"
                " WHERE $1::text IS NULL OR flow = $1 ORDER BY flow, first_seen", flow)
            return [dict(r) for r in rows]

    async def create(self, instance: Instance, event: Event, timer: NewTimer | None,
                     outbox: tuple[tuple[str, dict[str, Any]], ...],
                     start_key: str | None, writes: tuple[Write, ...] = ()) -> None:
        topics, payloads = _outbox_args(outbox)
        args = (uuid.UUID(instance.id), instance.flow, instance.definition_hash,
                instance.state, instance.context, instance.version, instance.status,
                instance.created_at, instance.updated_at, instance.expires_at,
                instance.deadline_at, instance.last_hash, start_key, instance.owner,
                event.seq, event.trigger, event.from_state, event.input, event.facts,
                event.effects, event.actor, event.at, event.prev_hash, event.hash,
                timer.state if timer else None, timer.trigger if timer else None,
                timer.due_at if timer else None, topics, payloads, event.to_state,
                event.definition_hash)
        try:
            async with self.pool.acquire() as conn:
                if not writes:
                    # The common start: one statement, one round trip, implicit
                    # transaction (was BEGIN, two INSERTs and COMMIT: four).
                    await conn.execute(CREATE_SQL, *args)
                else:
                    async with conn.transaction():
                        await conn.execute(CREATE_SQL, *args)
                        for write in writes:
                            await write(conn)
        except asyncpg.UniqueViolationError:
            raise DuplicateKey("start key already used") from None
        except asyncpg.ForeignKeyViolationError:
            raise FlowNotFound(f"definition version {instance.definition_hash}"
                               " is not stored") from None

    async def instance_by_start_key(self, key: str) -> Instance | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {_INSTANCE_COLS} FROM flow_instances i"
                " WHERE i.start_key = $1", key)
            return _instance(row) if row else None

    async def load(self, instance_id: str,
                   idempotency_key: str | None = None) -> tuple[Instance, Event | None]:
        iid = _uuid(instance_id)
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(LOAD_SQL, iid, idempotency_key)
        if row is None:
            raise InstanceNotFound()
        return _instance(row), (_event(row, "e_") if row["e_seq"] is not None else None)

    async def commit(self, step: StepCommit) -> None:
        inst, ev = step.instance, step.event
        topics, payloads = _outbox_args(step.outbox)
        timer = step.new_timer
        args = (uuid.UUID(inst.id), step.expected_version, inst.state,
                inst.context, inst.version, inst.status, inst.updated_at, inst.last_hash,
                inst.deadline_at, ev.trigger, ev.from_state, ev.input, ev.facts, ev.actor,
                ev.at, ev.definition_hash, ev.prev_hash, step.idempotency_key,
                step.cancel_timers, step.fired_timer_id,
                timer.state if timer else None, timer.trigger if timer else None,
                timer.due_at if timer else None, topics, payloads, ev.effects)
        try:
            async with self.pool.acquire() as conn:
                if not step.writes:
                    # The common step: one statement, one round trip, implicit transaction.
                    n = await conn.fetchval(COMMIT_SQL, *args)
                else:
                    async with conn.transaction():
                        n = await conn.fetchval(COMMIT_SQL, *args)
                        if n != 1:
                            raise ConcurrencyConflict()
                        for write in step.writes:
                            await write(conn)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "flow_events_idempotency":
                raise DuplicateKey("idempotency key already used") from None
            raise
        if n != 1:
            raise ConcurrencyConflict()

    async def load_many(self, requests: Sequence[tuple[str, str | None]],
                        ) -> list[tuple[Instance, Event | None] | None]:
        found: list[tuple[Instance, Event | None] | None] = [None] * len(requests)
        ids: list[uuid.UUID | None] = []
        for instance_id, _ in requests:
            try:
                ids.append(_uuid(instance_id))
            except InstanceNotFound:
                ids.append(None)  # no such instance: joins nothing
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(LOAD_MANY_SQL, ids, [key for _, key in requests])
        for row in rows:
            found[row["n"] - 1] = (_instance(row), _event(row, "e_")
                                   if row["e_seq"] is not None else None)
        return found

    async def commit_many(self, steps: Sequence[StepCommit]) -> list[bool]:
        if len({step.instance.id for step in steps}) != len(steps):
            raise ValueError("one step an instance in a batch")
        if any(step.writes for step in steps):
            raise ValueError("a step with writes is committed on its own")
        if not steps:
            return []
        columns: list[list[Any]] = [[] for _ in range(24)]
        order, topics, payloads, places = [], [], [], []
        for n, step in enumerate(steps, start=1):
            inst, ev, timer = step.instance, step.event, step.new_timer
            for column, value in zip(columns, (
                    uuid.UUID(inst.id), step.expected_version, inst.state, inst.context,
                    inst.version, inst.status, inst.updated_at, inst.last_hash,
                    inst.deadline_at, ev.trigger, ev.from_state, ev.input, ev.facts,
                    ev.actor, ev.at, ev.definition_hash, ev.prev_hash, step.idempotency_key,
                    step.cancel_timers, step.fired_timer_id,
                    timer.state if timer else None, timer.trigger if timer else None,
                    timer.due_at if timer else None, ev.effects), strict=True):
                column.append(value)
            for place, (topic, payload) in enumerate(step.outbox, start=1):
                order.append(n)
                topics.append(topic)
                payloads.append(payload)
                places.append(place)
        try:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(COMMIT_MANY_SQL, *columns, order, topics, payloads,
                                        places)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "flow_events_idempotency":
                raise DuplicateKey("idempotency key already used") from None
            raise
        except asyncpg.DeadlockDetectedError:
            # Two batches that share instances, locking them in another order.
            raise ConcurrencyConflict() from None
        applied = {str(r["instance_id"]) for r in rows}
        return [str(uuid.UUID(step.instance.id)) in applied for step in steps]

    async def events(self, instance_id: str) -> list[Event]:
        iid = _uuid(instance_id)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_EVENTS_SQL, iid)
        return [_event(r) for r in rows]

    async def histories(self, *, flow: str | None = None, since: datetime | None = None,
                        until: datetime | None = None, batch: int = 1000,
                        part: tuple[int, int] | None = None,
                        ) -> AsyncIterator[StoredHistory]:
        """Every instance (oldest first) with its whole history, ``batch`` at a time.

        Keyset pages over (created_at, id), one row a page: each instance with all its
        events as one JSON document that PostgreSQL builds (the ``json`` columns in it
        as stored), which this process parses in one call (decoding the rows field by
        field, and each ``json`` column on its own, cost more than the audit's checks).
        Memory is two pages (the one being read, and the next, asked for meanwhile on a
        connection of its own, so that the database works while the caller does),
        however many instances there are. ``since``/``until`` bound
        created_at (until excluded). ``part=(k, n)``: only the k-th of n disjoint parts
        (by a hash of the instance id), so that n processes share the work.
        """
        k, n = part or (0, 1)

        async def page(after: tuple[datetime, uuid.UUID] | None) -> asyncpg.Record:
            async with self.pool.acquire() as conn:
                if after is None:
                    return await conn.fetchrow(FIRST_HISTORIES_SQL, flow, since, until,
                                               None, batch, n, k)
                return await conn.fetchrow(NEXT_HISTORIES_SQL, flow, since, until,
                                           after[0], batch, n, k, after[1])

        coming: asyncio.Task[asyncpg.Record] | None = asyncio.ensure_future(page(None))
        try:
            while coming is not None:
                row = await coming
                coming = None
                if not row["n"]:
                    return
                if row["n"] == batch:
                    coming = asyncio.ensure_future(page((row["last_at"], row["last_id"])))
                    # Let it send its query now: the caller's checks between the
                    # histories below never wait for anything, so the loop would not
                    # run the task until this page is done, and the database would
                    # only start on the next page then.
                    await asyncio.sleep(0)
                documents = row["histories"]
                del row
                for i, document in enumerate(documents, 1):
                    yield StoredHistory.read(document)
                    if not i % 64:
                        # And read what the database has sent meanwhile.
                        await asyncio.sleep(0)
        finally:
            if coming is not None:
                coming.cancel()
                # Whatever became of the page no one reads any more does not matter now.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await coming

    async def versions_in_use(self) -> list[tuple[str, str, int]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT definition_version, flow, count(*) AS n FROM flow_instances"
                " WHERE status = 'active' GROUP BY definition_version, flow"
                " ORDER BY flow, definition_version")
        return [(r["definition_version"], r["flow"], int(r["n"])) for r in rows]

    async def pending_timers(self, instance_id: str) -> list[NewTimer]:
        """The instance's rows in flow_timers, by due time (for an export)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_TIMERS_SQL, _uuid(instance_id))
        return _pending(rows)

    async def snapshot(self, instance_id: str,
                       ) -> tuple[Instance, list[Event], list[NewTimer]]:
        """The three reads in one read-only REPEATABLE READ transaction: one snapshot
        for all (read one by one, a step landing between them made a sound instance
        disagree with itself). A transaction of its own: it holds under PgBouncer's
        transaction pooling too."""
        iid = _uuid(instance_id)
        async with self.pool.acquire() as conn, \
                conn.transaction(isolation="repeatable_read", readonly=True):
            row = await conn.fetchrow(LOAD_SQL, iid, None)
            if row is None:
                raise InstanceNotFound()
            events = await conn.fetch(_EVENTS_SQL, iid)
            timers = await conn.fetch(_TIMERS_SQL, iid)
        return _instance(row), [_event(r) for r in events], _pending(timers)

    async def due_timers(self, instance_id: str, now: datetime) -> list[Timer]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, instance_id, trigger, due_at FROM flow_timers"
                " WHERE instance_id = $1 AND due_at <= $2 ORDER BY due_at",
                _uuid(instance_id), now)
        return [Timer(r["id"], str(r["instance_id"]), r["trigger"], r["due_at"]) for r in rows]

    async def claim_timers(self, now: datetime, lease: timedelta, limit: int) -> list[Timer]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "UPDATE flow_timers SET leased_until = $2 WHERE id IN ("
                " SELECT id FROM flow_timers WHERE due_at <= $1"
                " AND (leased_until IS NULL OR leased_until <= $1)"
                " ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED)"
                " RETURNING id, instance_id, trigger, due_at", now, now + lease, limit)
        # RETURNING comes in no particular order: the worker fires them earliest first.
        return [Timer(r["id"], str(r["instance_id"]), r["trigger"], r["due_at"])
                for r in sorted(rows, key=lambda r: (r["due_at"], r["id"]))]

    async def next_timer_due(self, now: datetime) -> datetime | None:
        async with self.pool.acquire() as conn:
            due: datetime | None = await conn.fetchval(
                "SELECT min(due_at) FROM flow_timers WHERE due_at > $1", now)
        return due

    async def drop_timer(self, timer_id: int) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute("DELETE FROM flow_timers WHERE id = $1", timer_id)

    async def claim_outbox(self, now: datetime, lease: timedelta,
                           limit: int) -> list[OutboxMessage]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "UPDATE outbox SET leased_until = $2, attempts = attempts + 1 WHERE id IN ("
                " SELECT id FROM outbox WHERE sent_at IS NULL AND dead_at IS NULL"
                " AND next_attempt_at <= $1"
                " AND (leased_until IS NULL OR leased_until <= $1)"
                " ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)"
                " RETURNING id, instance_id, seq, topic, payload, idempotency_key, attempts",
                now, now + lease, limit)
        return [OutboxMessage(r["id"], str(r["instance_id"]), r["seq"], r["topic"],
                              r["payload"], r["idempotency_key"], r["attempts"])
                for r in sorted(rows, key=lambda r: r["id"])]

    async def outbox_sent(self, message_id: int, now: datetime) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute("UPDATE outbox SET sent_at = $2, leased_until = NULL,"
                               " last_error = NULL WHERE id = $1", message_id, now)

    async def outbox_failed(self, message_id: int, retry_at: datetime, error: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute("UPDATE outbox SET next_attempt_at = $2, leased_until = NULL,"
                               " last_error = $3 WHERE id = $1", message_id, retry_at,
                               error[:2000])

    async def outbox_dead(self, message_id: int, now: datetime, error: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute("UPDATE outbox SET dead_at = $2, leased_until = NULL,"
                               " last_error = $3 WHERE id = $1", message_id, now, error[:2000])

    async def ping(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
