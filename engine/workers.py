"""Background work every server process runs: due timers and the outbox.

Both claim rows with ``FOR UPDATE SKIP LOCKED`` (in the store) so any number of
processes can run them; both take time from the injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog

from engine.canonical import instance_ref
from engine.ports import Clock, Store, Timer
from engine.registry import Registry
from engine.runtime import Runtime

log = structlog.get_logger("engine.workers")


def backoff(attempts: int, *, base: float = 2.0, cap: float = 3600.0,
            rng: random.Random | None = None) -> timedelta:
    """Exponential backoff with full jitter: attempt n waits up to base**n seconds."""
    ceiling = min(cap, base ** max(attempts, 1))
    r = (rng or random).uniform(ceiling / 2, ceiling)
    return timedelta(seconds=r)


async def _round(work: Callable[[], Awaitable[int]], event: str,
                 stopping: Callable[[], bool] = lambda: False) -> int:
    """One round of a worker's loop; a failure is logged and the loop goes on.

    Once the worker is stopping, a failure is what stopping does to a round in flight
    (the pool closing under it): not logged."""
    try:
        return await work()
    except asyncio.CancelledError:
        raise
    except Exception:
        if not stopping():
            log.exception(event)
        return 0


class _Loop:
    """What both workers share: a wake-up, and a stop their loop obeys even when a
    cancellation is swallowed below it (asyncpg can, with the database frozen)."""

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self.stopping = False

    def stop(self) -> None:
        """Finish the round in flight, then leave the loop."""
        self.stopping = True
        self._wake.set()


class TimerWorker(_Loop):
    """Fire due timers: claim a batch, then fire it together.

    Firing a timer is a step. One by one, each is a load and a commit: two round trips
    and a transaction, most of what a timer cost. So a claimed batch fires through
    ``Runtime.fire_timers``: one load and one commit for all of its instances. Timers of
    one instance fire in due order, one batch after another: they would only race for
    its version.

    When idle, the worker sleeps until the next timer falls due, but not less than
    ``gather`` seconds (timers falling due meanwhile fire together) and not more than
    ``interval`` (a timer armed by another process, or a lease run out). A step of this
    process that arms a timer due sooner wakes it (``notify``).
    """

    def __init__(self, runtime: Runtime, store: Store, clock: Clock, *,
                 interval: float = 1.0, lease: timedelta = timedelta(seconds=30),
                 batch: int = 200, concurrency: int = 8, gather: float = 0.05) -> None:
        super().__init__()
        self.runtime = runtime
        self.store = store
        self.clock = clock
        self.interval = interval
        self.lease = lease
        self.batch = batch
        self.concurrency = max(1, concurrency)
        self.gather = min(gather, interval)
        self.fired = 0
        self._wake_at: datetime | None = None

    def notify(self, due_at: datetime) -> None:
        """A timer was armed: wake the worker if it would sleep past its due time."""
        if self._wake_at is not None and due_at < self._wake_at:
            self._wake.set()

    async def run_once(self) -> int:
        """Fire every timer due now that no other process holds; return how many."""
        timers = await self.store.claim_timers(self.clock.now(), self.lease, self.batch)
        by_instance: dict[str, deque[Timer]] = {}
        for timer in timers:  # claimed earliest first
            by_instance.setdefault(timer.instance_id, deque()).append(timer)
        waiting = list(by_instance.values())
        while waiting:
            heads = [same_instance.popleft() for same_instance in waiting]
            outcomes = await self.runtime.fire_timers(heads, concurrency=self.concurrency)
            for timer, outcome in zip(heads, outcomes, strict=True):
                if outcome is not None and not outcome.replayed:
                    self.fired += 1
                    log.info("timer_fired", timer_id=timer.id,
                             instance=instance_ref(timer.instance_id), trigger=timer.trigger)
            waiting = [same_instance for same_instance in waiting if same_instance]
        return len(timers)

    def pause(self, now: datetime, next_due: datetime | None) -> float:
        """Seconds to sleep when idle at ``now``, the next timer falling due at
        ``next_due``: until then, at least ``gather``, at most ``interval``."""
        if next_due is None:
            return self.interval
        return min(self.interval, max(self.gather, (next_due - now).total_seconds()))

    async def _idle(self) -> None:
        now = self.clock.now()
        # Awake to notices from here on: a timer armed while the next due time is read
        # may be one that read does not see.
        self._wake.clear()
        self._wake_at = now + timedelta(seconds=self.interval)
        try:
            try:
                next_due = await self.store.next_timer_due(now)
            except asyncio.CancelledError:
                raise
            except Exception:
                if not self.stopping:
                    log.exception("timer_round_failed")
                next_due = None
            pause = self.pause(now, next_due)
            self._wake_at = now + timedelta(seconds=pause)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
        finally:
            self._wake_at = None

    async def run(self) -> None:
        while not self.stopping:
            if await _round(self.run_once, "timer_round_failed",
                            lambda: self.stopping) < self.batch and not self.stopping:
                await self._idle()


class OutboxDispatcher(_Loop):
    def __init__(self, store: Store, clock: Clock, registry: Registry, *,
                 interval: float = 1.0, lease: timedelta = timedelta(seconds=60),
                 batch: int = 50, max_attempts: int = 20) -> None:
        super().__init__()
        self.store = store
        self.clock = clock
        self.registry = registry
        self.interval = interval
        self.lease = lease
        self.batch = batch
        self.max_attempts = max_attempts
        self.sent = 0

    def notify(self) -> None:
        """Wake the dispatcher: a step just committed messages."""
        self._wake.set()

    async def run_once(self) -> int:
        messages = await self.store.claim_outbox(self.clock.now(), self.lease, self.batch)
        for msg in messages:
            sender = self.registry.senders.get(msg.topic)
            try:
                if sender is None:
                    raise LookupError(f"no sender for topic {msg.topic!r}")
                await sender(msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure is retried later
                error = f"{type(exc).__name__}: {exc}"
                if msg.attempts >= self.max_attempts:
                    await self.store.outbox_dead(msg.id, self.clock.now(), error)
                    log.error("outbox_message_dead", message_id=msg.id, topic=msg.topic,
                              attempts=msg.attempts)
                    continue
                retry_at = self.clock.now() + backoff(msg.attempts)
                await self.store.outbox_failed(msg.id, retry_at, error)
                log.warning("outbox_send_failed", message_id=msg.id, topic=msg.topic,
                            attempts=msg.attempts, retry_at=retry_at.isoformat())
            else:
                await self.store.outbox_sent(msg.id, self.clock.now())
                self.sent += 1
        return len(messages)

    async def run(self) -> None:
        while not self.stopping:
            if await _round(self.run_once, "outbox_round_failed",
                            lambda: self.stopping) < self.batch and not self.stopping:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
