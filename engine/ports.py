"""The ports the engine needs from the outside world, as small Protocols."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import attrs

from engine.model import Flow
from engine.values import Event, Instance, OutboxMessage, Write


class Clock(Protocol):
    def now(self) -> datetime:
        """Return the current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@attrs.define
class FrozenClock:
    """A clock tests move by hand."""

    current: datetime = attrs.field(factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta


@attrs.frozen
class Timer:
    id: int
    instance_id: str
    trigger: str
    due_at: datetime


@attrs.frozen
class NewTimer:
    state: str
    trigger: str
    due_at: datetime


@attrs.frozen
class StepCommit:
    """Everything one step writes, in one transaction."""

    instance: Instance  # the instance as it is after the step
    expected_version: int
    event: Event
    idempotency_key: str | None
    cancel_timers: bool
    new_timer: NewTimer | None
    fired_timer_id: int | None
    outbox: tuple[tuple[str, dict[str, Any]], ...]
    writes: tuple[Write, ...] = ()


class Store(Protocol):
    """Persistence of definitions, instances, histories, timers and the outbox."""

    async def save_definitions(self, flows: Iterable[Flow]) -> None: ...

    async def definition(self, version: str) -> dict[str, Any] | None: ...

    async def create(self, instance: Instance, event: Event, timer: NewTimer | None,
                     outbox: tuple[tuple[str, dict[str, Any]], ...],
                     start_key: str | None, writes: tuple[Write, ...] = ()) -> None:
        """Store a new instance and its first event; DuplicateKey if start_key is taken."""
        ...

    async def instance_by_start_key(self, key: str) -> Instance | None: ...

    async def load(self, instance_id: str,
                   idempotency_key: str | None = None) -> tuple[Instance, Event | None]:
        """Return the instance and, if given a key, the event committed under it."""
        ...

    async def commit(self, step: StepCommit) -> None:
        """Apply a step if the instance is still at expected_version.

        Raises ConcurrencyConflict when it is not, DuplicateKey when the idempotency key
        was already used.
        """
        ...

    async def load_many(self, requests: Sequence[tuple[str, str | None]],
                        ) -> list[tuple[Instance, Event | None] | None]:
        """``load`` for each (instance id, key) at once; None where no such instance."""
        ...

    async def commit_many(self, steps: Sequence[StepCommit]) -> list[bool]:
        """Apply each step whose instance is still at its expected_version, together.

        One transaction for all; says which were applied (the others changed nothing).
        The steps are of distinct instances and carry no writes (ValueError). Raises
        DuplicateKey when a key was already used, ConcurrencyConflict when the steps
        could not be applied together (a deadlock with another batch): then nothing
        was, and each may be committed on its own.
        """
        ...

    async def events(self, instance_id: str) -> list[Event]: ...

    async def versions_in_use(self) -> list[tuple[str, str, int]]:
        """(version, flow, active instances) for every version an active instance runs."""
        ...

    async def pending_timers(self, instance_id: str) -> list[NewTimer]:
        """The instance's timers, as (state, trigger, due_at), by due time."""
        ...

    async def snapshot(self, instance_id: str,
                       ) -> tuple[Instance, list[Event], list[NewTimer]]:
        """The live row, its events and its pending timers, as of one moment: a step
        committed meanwhile is in all three or in none (what an export or a replay of
        one instance compares). Raises InstanceNotFound."""
        ...

    async def due_timers(self, instance_id: str, now: datetime) -> list[Timer]: ...

    async def claim_timers(self, now: datetime, lease: timedelta, limit: int) -> list[Timer]: ...

    async def next_timer_due(self, now: datetime) -> datetime | None:
        """When the earliest timer not yet due at ``now`` falls due; None if none."""
        ...

    async def drop_timer(self, timer_id: int) -> None: ...

    async def claim_outbox(self, now: datetime, lease: timedelta,
                           limit: int) -> list[OutboxMessage]: ...

    async def outbox_sent(self, message_id: int, now: datetime) -> None: ...

    async def outbox_failed(self, message_id: int, retry_at: datetime, error: str) -> None: ...

    async def outbox_dead(self, message_id: int, now: datetime, error: str) -> None:
        """Give up on a message: kept for inspection, never sent again."""
        ...


class Sealer(Protocol):
    """Seals personal data before it is recorded; opens it for the actions that need it."""

    def seal(self, kind: str, value: str) -> dict[str, str]:
        """Return {"sealed": ..., "masked": ...}; kind is the field's format or name."""
        ...

    def open(self, kind: str, sealed: Mapping[str, str]) -> str: ...


class NoSealer:
    """For flows without sensitive fields: refuses to record one in clear."""

    def seal(self, kind: str, value: str) -> dict[str, str]:
        raise RuntimeError(f"a sensitive {kind} field needs a Sealer; none is configured")

    def open(self, kind: str, sealed: Mapping[str, str]) -> str:
        raise RuntimeError("no Sealer is configured")


# One limit to count a step against: its counter's key, how many it allows, per window.
Hit = tuple[str, int, timedelta]


class Limiter(Protocol):
    async def hit_each(self, hits: Sequence[Hit]) -> tuple[int, timedelta] | None:
        """Count one step against each limit in order, stopping at the first one over:
        its index and the time until allowed again, the ones after it left as they
        were; None when none is over. Counted in one go, this answers as counting one
        limit after the other would (a limit past the one over may show the step for a
        moment: stricter, never looser, meanwhile).
        """
        ...


class NoLimits:
    """For tests of the bare engine: nothing is ever limited."""

    async def hit_each(self, hits: Sequence[Hit]) -> tuple[int, timedelta] | None:
        return None


class Observer(Protocol):
    def step(self, flow: str, trigger: str, outcome: str, seconds: float) -> None: ...


class NullObserver:
    def step(self, flow: str, trigger: str, outcome: str, seconds: float) -> None:
        return None
