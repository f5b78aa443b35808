"""Replay: re-derive every state of a history from its recorded inputs and facts.

A plain fold over events with the definition version they ran on. It needs no
database, no clock and no provider: only the guards, which are pure.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import attrs
import orjson

from engine.canonical import GENESIS, canonical_json, chain_hash, content_hash
from engine.errors import ReplayDivergence
from engine.jsonio import same_as_canonical
from engine.loader import build_flow
from engine.machine import CompiledFlow, initial_context, next_context
from engine.model import Flow
from engine.ports import Clock, NewTimer
from engine.registry import Registry
from engine.step import TIMER_ACTOR, begin, iso, settle
from engine.values import EVENT_KEYS, Event, GuardInput, Instance


@attrs.frozen
class ReplayResult:
    state: str
    context: dict[str, Any]
    status: str
    events: int
    last_hash: str
    # The pending timeout after the last event, as the live step armed it.
    deadline_at: datetime | None = None
    # The instance as the last event left it, every field as the live step stored it.
    instance: Instance | None = None
    # The row in flow_timers the live step left pending (due at deadline_at), if any.
    timer: NewTimer | None = None
    # Whether that timer's step may be refused (its transitions have guards or actions):
    # the timer worker then drops it without an event (engine.runtime._TIMER_REFUSALS).
    timer_refusable: bool = False


# A forged time so late that the deadlines it arms pass the year 9999 is named, not
# an error that ends the audit.
_FOLLOWABLE = "a time whose deadlines are dates"


def replay(compiled: CompiledFlow, events: Iterable[Event]) -> ReplayResult:
    """Check the chain and re-derive every state; raise ReplayDivergence at the first gap.

    A fold of the live step's own decisions (engine.step): each recorded event is
    decided again from its recorded input and facts, settled with its recorded effects,
    actor and time, and must come out as the very event that was stored.
    """
    flow = compiled.flow
    instance: Instance | None = None
    timer: NewTimer | None = None
    count = 0
    for expected_seq, ev in enumerate(events, start=1):
        count = expected_seq
        if ev.seq != expected_seq:
            raise ReplayDivergence(expected_seq, "seq", expected_seq, ev.seq)
        if instance is not None and ev.instance_id != instance.id:
            raise ReplayDivergence(ev.seq, "instance_id", instance.id, ev.instance_id)
        prev = instance.last_hash if instance is not None else GENESIS
        if ev.prev_hash != prev:
            raise ReplayDivergence(ev.seq, "prev_hash", prev, ev.prev_hash)
        try:
            recomputed = chain_hash(prev, ev.body())
        except ValueError as exc:  # a float that is not finite, a lone surrogate
            raise ReplayDivergence(ev.seq, "hash", "a body with a canonical form",
                                   str(exc)) from None
        if recomputed != ev.hash:
            raise ReplayDivergence(ev.seq, "hash", recomputed, ev.hash)
        if ev.definition_hash != flow.version:
            raise ReplayDivergence(ev.seq, "definition_hash", flow.version, ev.definition_hash)
        try:
            at = datetime.fromisoformat(ev.at)
        except (TypeError, ValueError):
            raise ReplayDivergence(ev.seq, "at", "an ISO date and time", ev.at) from None
        if instance is None:
            if ev.trigger != "start" or ev.from_state is not None:
                raise ReplayDivergence(1, "start", "trigger 'start' from nothing",
                                       f"trigger {ev.trigger!r} from {ev.from_state!r}")
            if ev.to_state != flow.initial:
                raise ReplayDivergence(1, "to", flow.initial, ev.to_state)
            try:
                done = begin(flow, ev.instance_id, ev.input, ev.effects, actor=ev.actor,
                             now=at, at=ev.at)
            except OverflowError:  # its expiry (or deadline) beyond the year 9999
                raise ReplayDivergence(1, "at", _FOLLOWABLE, ev.at) from None
        else:
            if ev.from_state != instance.state:
                raise ReplayDivergence(ev.seq, "from", instance.state, ev.from_state)
            if flow.states[instance.state].final:
                raise ReplayDivergence(ev.seq, "to", "no step after a final state", ev.to_state)
            taken = compiled.decide(GuardInput(instance.state, ev.trigger, instance.context,
                                               ev.input, ev.facts, flow.policies))
            found = taken.dest if taken else None
            if taken is None or found != ev.to_state:
                raise ReplayDivergence(ev.seq, "to", found, ev.to_state)
            try:
                done = settle(flow, instance, taken, trigger=ev.trigger,
                              recorded_input=ev.input, facts=ev.facts, effects=ev.effects,
                              actor=ev.actor, now=at,
                              by_clock=ev.actor == TIMER_ACTOR and "timer" in ev.facts,
                              at=ev.at)
            except OverflowError:
                raise ReplayDivergence(ev.seq, "at", _FOLLOWABLE, ev.at) from None
        if done.event.hash != ev.hash:
            raise ReplayDivergence(ev.seq, "event", done.event.as_dict(), ev.as_dict())
        instance = done.instance
        # A step that arms a timer replaces the pending one; one that leaves no deadline
        # cancelled it (or fired it); any other leaves it as it was.
        if done.new_timer is not None or instance.deadline_at is None:
            timer = done.new_timer
    if instance is None:
        raise ReplayDivergence(1, "history", "at least one event", "none")
    return ReplayResult(state=instance.state, context=instance.context,
                        status=instance.status, events=count, last_hash=instance.last_hash,
                        deadline_at=instance.deadline_at, instance=instance, timer=timer,
                        timer_refusable=timer is not None
                        and _refusable(flow, timer.state, timer.trigger))


def _refusable(flow: Flow, state: str, trigger: str) -> bool:
    """Whether a timer's step may be refused, so that a due timer may be gone without an
    event: an action runs for it (any may refuse the step), or every transition for it
    has guards (which may all refuse)."""
    taken = flow.transitions_from(state, trigger)
    return any(t.actions for t in taken) or all(t.guards for t in taken)


class StoredHistory(NamedTuple):
    """One instance's history as the audit reads it in bulk: the stored values, not yet
    :class:`Instance` and :class:`Event` objects, which most histories never need.

    ``events``: one sequence a stored event, its values in the order of :class:`Event`'s
    fields, so that ``Event(*row)`` makes it. ``raw``: the JSON document it was read from
    (:meth:`read`), if any. ``plain``: read from it by orjson, not yet known to be what
    the standard library reads (:meth:`exactly`).

    The live row's other columns the replay derives: ``status``, ``expires_at``,
    ``deadline_at`` (times as whole microseconds since 1970-01-01 UTC: integers, which
    every reader reads exactly), ``owner``, and ``timers``, the instance's rows in
    flow_timers, each ``[state, trigger, due_at]`` (due_at in microseconds as above), by
    due time. ``status`` None: none of them was read (only state, context, version and
    last hash are compared); ``timers`` None: the timers were not read.

    A named tuple, not an attrs class: one is made per instance, up to 100,000 a second,
    and a tuple is made several times faster.
    """

    id: str
    flow: str
    definition_hash: str
    state: str
    context: Any
    version: int
    last_hash: str
    events: Sequence[Sequence[Any]]
    status: str | None = None
    expires_at: int | None = None
    deadline_at: int | None = None
    owner: str | None = None
    timers: Sequence[Sequence[Any]] | None = None
    raw: bytes | None = None
    plain: bool = False

    @classmethod
    def read(cls, raw: bytes) -> StoredHistory:
        """From a JSON array ``[id, flow, definition_hash, state, context, version,
        last_hash, events, status, expires_at, deadline_at, owner, timers]`` (each event
        an array of its fields; the last five may be left out), read by orjson."""
        try:
            values = orjson.loads(raw)
        except orjson.JSONDecodeError:  # 1e400, a lone surrogate: as exactly() reads it
            return cls._made(json.loads(raw), raw, plain=False)
        if type(values) is list and len(values) == 13:  # id ... timers, as above
            # The fast way, one made a history: the tuple itself, without __new__'s call.
            return tuple.__new__(cls, (*values, raw, True))
        return cls._made(values, raw, plain=True)

    @classmethod
    def _made(cls, values: Any, raw: bytes, *, plain: bool) -> StoredHistory:
        if not isinstance(values, list) or not 8 <= len(values) <= 13:
            raise ValueError("a history is an array of 8 to 13 values")
        # The live columns left out (all but the first eight) were not read: None.
        return cls._make((*values, *[None] * (13 - len(values)), raw, plain))

    @classmethod
    def of(cls, instance: Instance, events: Iterable[Event],
           timers: Iterable[NewTimer] | None = None) -> StoredHistory:
        """The history of objects already made (any Python values, taken as they are;
        times in microseconds, as :meth:`read` has them). ``timers``: the instance's
        pending timers, if they are to be compared."""
        return cls(instance.id, instance.flow, instance.definition_hash, instance.state,
                   instance.context, instance.version, instance.last_hash,
                   [attrs.astuple(ev, recurse=False) for ev in events], instance.status,
                   micros(instance.expires_at),
                   None if instance.deadline_at is None else micros(instance.deadline_at),
                   instance.owner, None if timers is None else
                   [[t.state, t.trigger, micros(t.due_at)] for t in timers])

    def exactly(self) -> StoredHistory:
        """The same, every value as :func:`json.loads` reads it (as the columns are read
        one by one elsewhere): orjson reads an integer beyond 64 bits as a float."""
        if not self.plain or self.raw is None:
            return self
        return self._made(json.loads(self.raw), self.raw, plain=False)

    def event_objects(self) -> list[Event]:
        return [Event(*row) for row in self.events]

    def live_columns(self) -> dict[str, Any]:
        """The live columns read beside state, context, version and last hash, as
        :func:`compare_live` takes them (times as datetimes)."""
        if self.status is None:
            return {}
        columns: dict[str, Any] = {
            "status": self.status, "expires_at": _from_micros(self.expires_at),
            "deadline_at": _from_micros(self.deadline_at), "owner": self.owner}
        if self.timers is not None:
            columns["timers"] = [(state, trigger, _from_micros(due))
                                 for state, trigger, due in self.timers]
        return columns


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(t: datetime) -> int:
    """A time as whole microseconds since 1970-01-01 UTC (TypeError if it has no zone)."""
    return (t - _EPOCH) // _MICROSECOND


def _from_micros(value: Any) -> Any:
    """The time of :func:`micros`; anything else (None, a value no step writes) as is."""
    if type(value) is not int:
        return value
    try:
        return _EPOCH + value * _MICROSECOND
    except OverflowError:
        return value


def _hashes_to(prev: str, body: dict[str, Any], expected: Any) -> bool:
    try:
        return bool(chain_hash(prev, body) == expected)
    except (TypeError, ValueError):  # no canonical form: replay() names it
        return False


def verify(compiled: CompiledFlow, history: StoredHistory) -> ReplayResult | None:
    """:func:`replay` at volume: the same result when the history is sound, else None.

    The audit's path. Each event is checked as :func:`replay` checks it (seq, instance,
    chain, hash over the canonical body, version, time, the guards' decision), but the
    event replay would rebuild is not built and hashed again: every field of it is
    either the stored event's own (input, facts, effects, actor, time) or one just
    compared equal to it, with the types the hash sees, so its hash is the stored one.
    Transitions are decided without the ``transitions`` machine
    (:meth:`CompiledFlow.decide_directly`). ``None`` means "not verified here": the
    caller runs :func:`replay`, which names the divergence (or, where this path was
    merely cautious, finds none): findings are :func:`replay`'s, always.

    A ``plain`` history is hashed over orjson's output, about seven times cheaper than
    the standard library's canonical form, if that output is the canonical form of
    what the standard library would read, which is looked at once for all the events'
    values (:func:`engine.jsonio.same_as_canonical`); where it may not be, None: the
    caller asks again with :meth:`StoredHistory.exactly`.
    """
    done = _folded(compiled, history)
    if done is None:
        return None
    state, context, last, _expires, deadline = done
    timeout = compiled.flow.states[state].timeout
    timer = NewTimer(state, timeout.trigger, deadline) \
        if deadline is not None and timeout is not None else None
    return ReplayResult(state=state, context=context,
                        status="finished" if compiled.flow.states[state].final else "active",
                        events=len(history.events), last_hash=last, deadline_at=deadline,
                        timer=timer, timer_refusable=timer is not None
                        and _refusable(compiled.flow, timer.state, timer.trigger))


def _folded(compiled: CompiledFlow, history: StoredHistory, live: bytes = b"null",
            ) -> tuple[str, dict[str, Any], str, datetime, datetime | None] | None:
    """:func:`verify`'s work: the state, context, last hash, expiry and pending deadline,
    or None. ``live``: orjson's output of other values orjson read with the history (the
    live context), looked at with it (:func:`engine.jsonio.same_as_canonical`).

    The expiry and each deadline are the very sums the live step computes (and
    :func:`replay` again): the recorded time plus the lifetime or the timeout."""
    flow = compiled.flow
    version, states = flow.version, flow.states
    events = history.events
    if not events:
        return None
    plain = history.plain
    decide = compiled.decide_directly
    dumps, sorted_keys, sha256 = orjson.dumps, orjson.OPT_SORT_KEYS, hashlib.sha256
    iid = events[0][0]
    last = GENESIS
    state = ""
    context: dict[str, Any] = {}
    expires: datetime | None = None
    deadline: datetime | None = None
    for expected_seq, (ev_iid, seq, trigger, from_state, to_state, input_, facts, effects,
                       actor, at, definition_hash, prev_hash, hash_) in enumerate(events, 1):
        if type(seq) is not int or seq != expected_seq or ev_iid != iid \
                or prev_hash != last or definition_hash != version \
                or type(input_) is not dict or type(facts) is not dict \
                or type(effects) is not dict or type(ev_iid) is not str \
                or type(actor) is not str:
            return None
        body = {"actor": actor, "at": at, "definition_hash": version, "effects": effects,
                "facts": facts, "from": from_state, "input": input_, "instance_id": iid,
                "prev_hash": last, "seq": seq, "to": to_state, "trigger": trigger}
        if plain:
            text = dumps(body, option=sorted_keys)
            if sha256(last.encode() + text).hexdigest() != hash_:
                return None
        elif not _hashes_to(last, body, hash_):
            return None
        try:
            when = datetime.fromisoformat(at)
        except (TypeError, ValueError):
            return None
        if expected_seq == 1:
            if trigger != "start" or from_state is not None or facts \
                    or to_state != flow.initial:
                return None
            timeout = states[to_state].timeout
            try:
                expires = when + flow.expires_in
                deadline = when + timeout.after if timeout else None
            except OverflowError:  # replay() names it
                return None
            state = flow.initial
            context = initial_context(input_, effects)
        else:
            if from_state != state or states[state].final:
                return None
            taken = decide(state, trigger, context, input_, facts)
            if taken is None or taken.dest != to_state:
                return None
            # Entering a state, or its timeout looping back to it, arms its timeout (or
            # leaves no deadline); any other step leaves the deadline as it was.
            if to_state != state or (actor == TIMER_ACTOR and "timer" in facts):
                timeout = states[to_state].timeout
                try:
                    deadline = when + timeout.after if timeout else None
                except OverflowError:
                    return None
            context = next_context(context, from_state=state, to_state=to_state,
                                   input=input_, facts=facts, effects=effects,
                                   transition=taken)
            state = to_state
        last = hash_
    # Only input, facts and effects may hold a number that orjson writes otherwise (the
    # rest is the seq, an integer, or was found equal to a string or None above): one
    # look at them all, as one JSON array, with the live values. Sorting keys moves no
    # number, nor changes how one is written.
    if plain and not same_as_canonical(
            b"[" + dumps([row[5:8] for row in events]) + b"," + live + b"]"):
        return None
    if expires is None:  # the first event sets it, or this returned
        return None
    return state, context, last, expires, deadline


class _Unread(enum.Enum):
    UNREAD = "unread"


# A live column not read (an older export's instance line, a caller that has only some).
UNREAD = _Unread.UNREAD


def compare_live(result: ReplayResult, state: str, context: Mapping[str, Any],
                 version: int, last_hash: str, *, status: Any = UNREAD,
                 owner: Any = UNREAD, expires_at: Any = UNREAD, deadline_at: Any = UNREAD,
                 timers: Any = UNREAD, now: datetime | None = None) -> None:
    """Check that a replay ends where the live instance is.

    Also, each given (as stored; times as datetimes): the row's ``status``, ``owner``
    (who started it: the first event's actor), ``expires_at`` and ``deadline_at``, as
    :func:`replay`'s instance has them, and ``timers``, the instance's rows in
    flow_timers as ``(state, trigger, due_at)``, by due time: the one the last step
    arming a timer left (none if the state has no timeout). That timer may be gone once
    due, where the timer worker may have dropped it without an event (refused: the
    instance finished or expired, or its step refusable): only as of ``now`` (None: no
    timer may be gone).
    """
    seq = result.events
    if result.events != version:
        raise ReplayDivergence(seq, "version", result.events, version)
    if result.last_hash != last_hash:
        raise ReplayDivergence(seq, "last_hash", result.last_hash, last_hash)
    if result.state != state:
        raise ReplayDivergence(seq, "state", result.state, state)
    try:
        same = canonical_json(result.context) == canonical_json(context)
    except ValueError:  # a float that is not finite, a lone surrogate: no canonical form
        same = False
    if not same:
        raise ReplayDivergence(seq, "context", result.context, context)
    if status is not UNREAD and status != result.status:
        raise ReplayDivergence(seq, "status", result.status, status)
    derived = result.instance
    if derived is None and (owner, expires_at, deadline_at, timers) != (UNREAD,) * 4:
        raise ValueError("compare_live: the live columns need replay()'s instance")
    if derived is None:
        return
    if owner is not UNREAD and owner != derived.owner:
        raise ReplayDivergence(seq, "owner", derived.owner, owner)
    for what, found, expected in (("expires_at", expires_at, derived.expires_at),
                                  ("deadline_at", deadline_at, derived.deadline_at)):
        if found is not UNREAD and not _same_time(expected, found):
            raise ReplayDivergence(seq, what, _shown(expected), _shown(found))
    if timers is UNREAD:
        return
    pending = result.timer
    armed = [] if pending is None else [(pending.state, pending.trigger, pending.due_at)]
    found = [tuple(t) if isinstance(t, list | tuple) else t for t in timers] \
        if isinstance(timers, list | tuple) else timers
    if found == armed and (pending is None or _same_time(pending.due_at, found[0][2])):
        return
    if found == [] and pending is not None and _may_be_dropped(result, derived, now):
        return
    raise ReplayDivergence(seq, "timer", [_timer_shown(t) for t in armed],
                           [_timer_shown(t) for t in found] if isinstance(found, list)
                           else found)


def _same_time(expected: datetime | None, found: Any) -> bool:
    """The same instant, both with a time zone (or both None). A datetime equals another
    of another zone at the same instant; one without a zone (which no step writes)
    equals nothing stored."""
    if expected is None or found is None:
        return expected is found
    if not isinstance(found, datetime) or expected.tzinfo is None or found.tzinfo is None:
        return False
    return expected == found


def _may_be_dropped(result: ReplayResult, derived: Instance, now: datetime | None) -> bool:
    """Whether the pending timer may be gone without an event as of ``now``: the timer
    worker drops a due timer whose step is refused (engine.runtime._TIMER_REFUSALS):
    the instance finished or expired by then, or the step refusable."""
    due = result.timer.due_at if result.timer is not None else None
    if now is None or due is None or due.tzinfo is None:
        return False
    expires = derived.expires_at
    return _droppable(due, expires if expires.tzinfo is not None else None,
                      finished=derived.status != "active",
                      refusable=result.timer_refusable, now=now)


def _droppable(due: datetime, expires: datetime | None, *, finished: bool,
               refusable: bool, now: datetime) -> bool:
    """The rule both paths apply to a missing timer: the worker may have dropped it, as
    of ``now``, if it was due and its step would be refused: the instance finished, or
    expired (``expires``, None: not known to), or the step refusable."""
    return due <= now and (finished or refusable or (expires is not None and expires <= now))


def _shown(value: Any) -> Any:
    return iso(value) if isinstance(value, datetime) else value


def _timer_shown(row: Any) -> Any:
    if isinstance(row, tuple) and len(row) == 3:
        return {"state": row[0], "trigger": row[1], "due_at": _shown(row[2])}
    return row


# -- auditing every history ------------------------------------------------------------

@attrs.frozen
class AuditFinding:
    """One instance whose history does not replay to what is stored."""

    instance_id: str
    flow: str
    definition_version: str
    seq: int
    what: str
    expected: Any
    found: Any

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class AuditSummary:
    instances: int = 0
    events: int = 0
    versions: set[str] = attrs.field(factory=set)
    findings: int = 0

    @property
    def ok(self) -> bool:
        return self.findings == 0

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "instances": self.instances, "events": self.events,
                "versions": len(self.versions), "findings": self.findings}


async def audit(histories: AsyncIterable[StoredHistory],
                compiled: Callable[[str], Awaitable[CompiledFlow]],
                report: Callable[[AuditFinding], None], *, fast: bool = True,
                clock: Clock | None = None) -> AuditSummary:
    """Replay every history against its own version and compare it with the live row:
    state, context, version and last hash, and the other columns the history was read
    with (:class:`StoredHistory`): status, owner, expiry, deadline and pending timers.

    ``clock``: asked, only where a timer is missing, for a time after the history was
    read, by which the timer worker may have dropped a due timer (:func:`compare_live`'s
    ``now``); None: no timer may be missing.

    ``histories`` yields each instance with all its events; ``compiled`` gives the
    machine of a stored version (it may raise: a version that cannot be built is a
    finding for each of its instances); ``report`` is called once per divergent instance.
    Nothing is kept between instances, so memory stays flat however many there are.
    Each history goes through :func:`verify` first (as orjson read it, then, if that
    does not vouch for it, as the standard library reads it), and through
    :func:`replay` only if that does not vouch for it (``fast=False``: :func:`replay`
    always); the findings are the same either way.
    """
    summary = AuditSummary()
    for_version: dict[str, CompiledFlow | Exception] = {}
    async for history in histories:
        summary.instances += 1
        summary.events += len(history.events)
        version = history.definition_hash
        if version not in for_version:
            summary.versions.add(version)
            try:
                for_version[version] = await compiled(version)
            except Exception as exc:  # noqa: BLE001 - reported per instance, the audit goes on
                for_version[version] = exc
        machine = for_version[version]
        try:
            if isinstance(machine, Exception):
                raise ReplayDivergence(0, "definition", "a version the registry can build",
                                       f"{type(machine).__name__}: {machine}")
            if fast and _vouched(machine, history, clock):
                continue
            exact = history.exactly()
            if not (fast and exact is not history and _vouched(machine, exact, clock)):
                # The reference path names what diverges (or finds that nothing does).
                result = replay(machine, exact.event_objects())
                compare_live(result, exact.state, exact.context, exact.version,
                             exact.last_hash, **exact.live_columns(),
                             now=clock.now() if clock is not None else None)
        except ReplayDivergence as exc:
            summary.findings += 1
            report(AuditFinding(history.id, history.flow, version, exc.seq, exc.what,
                                exc.expected, exc.found))
    return summary


def _vouched(machine: CompiledFlow, history: StoredHistory,
             clock: Clock | None = None) -> bool:
    """True only if :func:`replay` and :func:`compare_live` would find nothing (False:
    let them look).

    The contexts are compared as orjson writes them with sorted keys: for values orjson
    read that is equal exactly when their canonical JSON is, provided both are what the
    standard library reads: the replayed one came through :func:`_folded`'s checks,
    and the live one is looked at with the history's values. Not ``plain`` (values the
    standard library read, which may hold an infinity that orjson writes as null):
    False, and they look. The other live columns are compared as they were read: the
    expiry and deadline (each computed once a history) with the microseconds read, the
    timers as rows.
    """
    if not history.plain:
        return False
    live = orjson.dumps(history.context, option=orjson.OPT_SORT_KEYS)
    done = _folded(machine, history, live)
    if done is None:
        return False
    state, context, last, expires, deadline = done
    if not (len(history.events) == history.version and last == history.last_hash
            and state == history.state
            and orjson.dumps(context, option=orjson.OPT_SORT_KEYS) == live):
        return False
    if history.status is None:  # the other live columns were not read
        return True
    final = machine.flow.states[state].final
    if history.status != ("finished" if final else "active") \
            or history.owner != history.events[0][8]:  # the actor who started it
        return False
    # Compared as time spans since 1970: cheaper than making microseconds of them.
    expires_us, due = history.expires_at, history.deadline_at
    try:
        if type(expires_us) is not int or expires - _EPOCH != _MICROSECOND * expires_us:
            return False
        if deadline is None:
            if due is not None:
                return False
        elif type(due) is not int or deadline - _EPOCH != _MICROSECOND * due:
            return False
    except (TypeError, OverflowError):  # a time without a zone (no step records one)
        return False
    timers = history.timers
    if timers is None or (deadline is None and not timers):
        return True
    timeout = machine.flow.states[state].timeout
    if deadline is None or timeout is None:
        return False
    if len(timers) == 1 and timers[0] == [state, timeout.trigger, due]:
        return True
    if timers or clock is None:
        return False
    # Gone once due, where the worker may have dropped it (as compare_live allows).
    return _droppable(deadline, expires, finished=final,
                      refusable=_refusable(machine.flow, state, timeout.trigger),
                      now=clock.now())


# -- export files: JSON Lines ---------------------------------------------------------

def export_lines(definition: Mapping[str, Any], instance: Mapping[str, Any],
                 events: Iterable[Event]) -> list[str]:
    """One instance's history as JSON Lines: definition, instance, then one line an event."""
    lines = [canonical_json({"kind": "definition", "version": content_hash(definition),
                             "content": definition}),
             canonical_json({"kind": "instance", **instance})]
    lines += [canonical_json({"kind": "event", **ev.as_dict()}) for ev in events]
    return lines


def _live_columns(live: Mapping[str, Any]) -> dict[str, Any]:
    """The live columns an export's instance line carries (an older one, only some), as
    :func:`compare_live` takes them; a value no export writes is passed on as it is, to
    be named."""
    columns = {k: live[k] for k in ("status", "owner") if k in live}
    columns |= {k: _time_read(live[k]) for k in ("expires_at", "deadline_at") if k in live}
    if "timers" in live:
        timers = live["timers"]
        columns["timers"] = [
            (t["state"], t["trigger"], _time_read(t["due_at"]))
            if isinstance(t, dict) and set(t) == {"state", "trigger", "due_at"} else t
            for t in timers] if isinstance(timers, list) else timers
    return columns


def _time_read(value: Any) -> Any:
    """An ISO time as a datetime; anything else as it is."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def export_columns(instance: Instance, timers: Iterable[NewTimer],
                   exported_at: datetime) -> dict[str, Any]:
    """The instance line's columns (:func:`export_lines`): every live column the replay
    derives, its pending timers, and when they were read (which timers may be gone)."""
    return {"id": instance.id, "flow": instance.flow, "state": instance.state,
            "status": instance.status, "version": instance.version,
            "context": instance.context, "last_hash": instance.last_hash,
            "owner": instance.owner, "expires_at": iso(instance.expires_at),
            "deadline_at": None if instance.deadline_at is None
            else iso(instance.deadline_at),
            "timers": [{"state": t.state, "trigger": t.trigger, "due_at": iso(t.due_at)}
                       for t in timers],
            "exported_at": iso(exported_at)}


@attrs.frozen
class ReplayReport:
    ok: bool
    events: int
    state: str | None
    divergence: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def replay_export(data: bytes, registry: Registry) -> ReplayReport:
    """Replay an exported file; report the first divergence, if any."""
    lines = data.split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()

    def fail(seq: int, what: str, expected: Any, found: Any) -> ReplayReport:
        return ReplayReport(False, max(seq - 1, 0), None,
                            {"seq": seq, "what": what, "expected": expected, "found": found})

    def parse(i: int) -> Any:
        return json.loads(lines[i].decode("utf-8"))

    if len(lines) < 2:
        return fail(0, "file", "a definition line and an instance line", f"{len(lines)} lines")
    try:
        head = parse(0)
        content = head["content"]
        if head.get("kind") != "definition" or content_hash(content) != head["version"]:
            return fail(0, "definition", head.get("version"), content_hash(content))
        compiled = CompiledFlow(build_flow(content), registry)
    except (ValueError, KeyError, TypeError) as exc:
        return fail(0, "definition", "a valid definition line", str(exc))
    try:
        live = parse(1)
        if live.get("kind") != "instance":
            raise ValueError("not an instance line")
    except ValueError as exc:
        return fail(0, "instance", "a valid instance line", str(exc))
    events = []
    for n, i in enumerate(range(2, len(lines)), start=1):
        try:
            raw = parse(i)
            if not isinstance(raw, dict) or raw.get("kind") != "event" or \
                    set(raw) != {"kind", *EVENT_KEYS}:
                raise ValueError("not an event line with exactly the event's keys")
            events.append(Event.from_dict(raw))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            return fail(n, "event", "a valid event line", str(exc))
    exported_at = _time_read(live.get("exported_at"))
    try:
        result = replay(compiled, events)
        compare_live(result, live.get("state"), live.get("context"), live.get("version"),
                     live.get("last_hash"), **_live_columns(live),
                     now=exported_at if isinstance(exported_at, datetime) else None)
    except ReplayDivergence as exc:
        return fail(exc.seq, exc.what, exc.expected, exc.found)
    return ReplayReport(True, result.events, result.state)

