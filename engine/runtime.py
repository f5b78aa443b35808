"""The step: load, validate, gather facts, decide, commit.

See docs/design.md, "What one step is". Everything external the engine needs comes through
the ports in :mod:`engine.ports`; time comes only from the injected clock.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs
import structlog

from engine.canonical import canonical_json, instance_ref, sha256_hex
from engine.errors import (
    ConcurrencyConflict,
    DefinitionError,
    DuplicateKey,
    EngineError,
    FlowExpired,
    FlowFinished,
    FlowNotFound,
    IdempotencyKeyReused,
    InstanceNotFound,
    RateLimited,
    ReplayDivergence,
    TransitionRefused,
    TriggerNotAllowed,
    ValidationFailed,
)
from engine.forms import describe
from engine.loader import FlowSet, build_flow
from engine.machine import CompiledFlow, initial_context
from engine.model import ActionRef, Flow, Limit
from engine.ports import (
    Clock,
    Limiter,
    NoLimits,
    NoSealer,
    NullObserver,
    Observer,
    Sealer,
    StepCommit,
    Store,
    Timer,
)
from engine.registry import Registry
from engine.replay import replay
from engine.step import (
    PROVIDER_PREFIX,
    TIMER_ACTOR,
    acting,
    actions_for,
    admit,
    begin,
    check_access,
    check_prefill,
    choose,
    iso,
    limits_for,
    read_input,
    restart_hint,
    settle,
)
from engine.values import ActionInput, Event, GuardInput, Instance

log = structlog.get_logger("engine.runtime")



def scoped_key(actor: str, key: str | None) -> str | None:
    """An Idempotency-Key as stored: bound to whoever sent it.

    Keys are visible ASCII without spaces, so the space keeps every (actor, key) apart.
    """
    return None if key is None else f"{actor} {key}"


@attrs.frozen
class PinnedProblem:
    """A stored version that active instances run on and this code cannot run."""

    version: str
    flow: str
    active_instances: int
    problem: str


@attrs.frozen
class StepOutcome:
    instance: Instance
    event: Event
    replayed: bool = False
    # For this response only (never stored): what actions handed over with ai.reply().
    replies: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class _Decided:
    """A step decided and not yet committed."""

    step: StepCommit
    replies: Mapping[str, Any]


class Runtime:
    """Runs flow instances: one object per process, shared by all requests."""

    def __init__(self, store: Store, clock: Clock, registry: Registry, flows: FlowSet,
                 *, services: Mapping[type, Any] | None = None,
                 observer: Observer | None = None,
                 limiter: Limiter | None = None,
                 sealer: Sealer | None = None,
                 key_digest: Callable[[str], str] | None = None,
                 on_commit: Callable[[], None] | None = None,
                 on_timer: Callable[[datetime], None] | None = None) -> None:
        self.store = store
        self.clock = clock
        self.registry = registry
        self.services: Mapping[type, Any] = services or {}
        self.observer = observer or NullObserver()
        self.limiter: Limiter = limiter or NoLimits()
        self.sealer: Sealer = sealer or NoSealer()
        # What limit counters are keyed by: a limit's values (phone numbers) hashed. Give
        # a keyed hash: a plain one of an 11-digit number is undone by trying them all.
        self.key_digest = key_digest or sha256_hex
        self.on_commit = on_commit or (lambda: None)
        # Told each timer a step arms, by its due time: the timer worker's wake-up.
        self.on_timer: Callable[[datetime], None] = on_timer or (lambda due_at: None)
        self._compiled: dict[str, CompiledFlow] = {}
        self.flows = flows
        for flow in flows.flows.values():
            self._compiled[flow.version] = CompiledFlow(flow, registry)

    # -- definitions -------------------------------------------------------------
    async def publish(self) -> None:
        """Record every version of the current flows in the store."""
        await self.store.save_definitions(self.flows.flows.values())

    async def reload(self, flows: FlowSet) -> list[str]:
        """Swap in a new set of flows atomically; return the names whose version changed."""
        compiled = {f.version: CompiledFlow(f, self.registry) for f in flows.flows.values()}
        await self.store.save_definitions(flows.flows.values())
        changed = [name for name, f in flows.flows.items()
                   if name not in self.flows.flows or self.flows.flows[name].version != f.version]
        self._compiled.update(compiled)
        self.flows = flows
        return changed

    async def compiled(self, version: str) -> CompiledFlow:
        found = self._compiled.get(version)
        if found is None:
            content = await self.store.definition(version)
            if content is None:
                raise FlowNotFound(f"definition version {version} is not stored")
            found = CompiledFlow(build_flow(content), self.registry)
            self._compiled[version] = found
        return found

    async def check_pinned(self) -> list[PinnedProblem]:
        """Every version an active instance is pinned to must still run with this code.

        A version lives as long as its instances; a deploy that drops a guard, action or
        validator an old version names would break those instances at their next step.
        This says so up front (servers check when they start; `flowctl versions --check`
        before a deploy), with what is missing.
        """
        problems = []
        for version, flow, active in await self.store.versions_in_use():
            try:
                await self.compiled(version)
            except (DefinitionError, FlowNotFound) as exc:
                problems.append(PinnedProblem(version, flow, active, str(exc)))
            except (KeyError, TypeError, ValueError) as exc:
                # Stored content this code cannot even build (written by another loader).
                problems.append(PinnedProblem(version, flow, active,
                                              f"cannot build: {type(exc).__name__}: {exc}"))
        return problems

    def current(self, name: str) -> Flow:
        flow = self.flows.get(name)
        if flow is None:
            raise FlowNotFound(f"no flow named {name!r}")
        return flow

    # -- starting ----------------------------------------------------------------
    async def start(self, name: str, prefill: Mapping[str, Any] | None = None, *,
                    actor: str = "anonymous", idempotency_key: str | None = None,
                    client: str | None = None, session: str | None = None) -> StepOutcome:
        """Start an instance of the flow; ``session``: the caller's signed-in session as
        the web layer names it, for the initial state's actions (as ``advance`` has it)."""
        flow = self.current(name)
        check_access(flow, actor)
        values = check_prefill(flow, prefill or {}, self.registry, self.clock.now())
        # A key is the sender's own: another sender's same key is a new request.
        start_key = scoped_key(actor, idempotency_key)
        if flow.start_limits:
            # A start sent again with its key is the first one's answer, not a new start.
            if start_key is not None and (await self.store.instance_by_start_key(
                    start_key)) is not None:
                return await self._replayed_start(name, start_key)
            await self.hit_limits(flow.start_limits, {"client": client, "actor": actor,
                                                       "flow": flow.name}, {})
        now = self.clock.now()
        instance_id = str(uuid.uuid4())
        state = flow.states[flow.initial]
        ai = ActionInput(instance_id=instance_id, flow=flow.name, seq=1, state=flow.initial,
                         trigger="start", context=initial_context(values, {}), input=values,
                         now=now, services=self.services, actor=actor, client=client,
                         owner=actor, policies=flow.policies, sealer=self.sealer,
                         session=session)
        effects = await self._run_actions(state.on_enter, ai)
        await _run_at_end(ai)
        first = begin(flow, instance_id, values, effects, actor=actor, now=now)
        instance, event = first.instance, first.event
        try:
            await self.store.create(instance, event, first.new_timer, tuple(ai.outbox),
                                    start_key, tuple(ai.writes))
        except DuplicateKey:
            assert start_key is not None
            return await self._replayed_start(name, start_key)
        if ai.outbox:
            # As a step: only messages wake the dispatcher. Woken by every start, it
            # asked PostgreSQL for messages once a sign-in, and found none.
            self.on_commit()
        if first.new_timer is not None:
            self.on_timer(first.new_timer.due_at)
        log.info("flow_started", flow=flow.name, instance=instance_ref(instance_id),
                 state=flow.initial)
        return StepOutcome(instance, event, replies=dict(ai.replies))

    async def _replayed_start(self, name: str, start_key: str) -> StepOutcome:
        existing = await self.store.instance_by_start_key(start_key)
        if existing is None or existing.flow != name:
            raise IdempotencyKeyReused()
        first = (await self.store.events(existing.id))[0]
        return StepOutcome(await self._as_it_was(existing, first), first, replayed=True)

    # The owner check, for the web layer's reads (the step calls it itself).
    check_owner = staticmethod(acting)

    # -- reading -----------------------------------------------------------------
    async def get(self, instance_id: str) -> Instance:
        """Load an instance, firing any timeout that is already due."""
        instance, _ = await self.store.load(instance_id)
        return await self._catch_up(instance)

    async def _catch_up(self, instance: Instance) -> Instance:
        now = self.clock.now()
        if instance.deadline_at is None or instance.deadline_at > now \
                or instance.status != "active":
            return instance
        for timer in await self.store.due_timers(instance.id, now):
            await self.fire_timer(timer)
        instance, _ = await self.store.load(instance.id)
        return instance

    async def view(self, instance: Instance, *, now: datetime | None = None) -> dict[str, Any]:
        """The instance as a client sees it (at ``now``), with the step's UI description."""
        compiled = await self.compiled(instance.definition_hash)
        now = now or self.clock.now()
        status = "expired" if instance.expired(now) else instance.status
        return {
            "id": instance.id,
            "flow": instance.flow,
            "version": instance.version,
            "definition_version": instance.definition_hash,
            "state": instance.state,
            "status": status,
            "created_at": iso(instance.created_at),
            "updated_at": iso(instance.updated_at),
            "expires_at": iso(instance.expires_at),
            "deadline_at": iso(instance.deadline_at) if instance.deadline_at else None,
            "ui": describe(compiled.flow, instance.state, instance.context, self.registry),
            # The one shape of every error, refused (422 problem+json) or recorded (here,
            # after a step taken with an `error:`): {field (null: the step's), error_id,
            # zh, en}. A recorded error stays until the next step.
            "errors": [instance.context["error"]] if instance.context.get("error") else [],
        }

    async def history(self, instance_id: str) -> list[Event]:
        events = await self.store.events(instance_id)
        if not events:
            raise InstanceNotFound()
        return events

    # -- stepping ----------------------------------------------------------------
    async def advance(self, instance_id: str, trigger: str, raw_input: Mapping[str, Any], *,
                      idempotency_key: str | None = None, expected_version: int | None = None,
                      actor: str = "anonymous", client: str | None = None,
                      also: Sequence[str] = (), session: str | None = None,
                      fired_timer: Timer | None = None) -> StepOutcome:
        """Take one step; see docs/design.md. Raises an EngineError for every refusal.

        ``also``: other identities of the caller (see ``check_owner``); the step is
        taken, and its key scoped, as whichever of them owns the instance. ``session``:
        the caller's signed-in session, as the web layer names it (opaque here), for
        actions that must tell it from the account's other sessions.
        """
        started = time.perf_counter()
        flow_name = "?"
        # Metric labels come from the definition, never from what a client typed.
        trigger_label = "unknown"
        outcome = "error"
        key = scoped_key(actor, idempotency_key)
        try:
            instance, prior = await self.store.load(instance_id, key)
            flow_name = instance.flow
            if trigger in self._known_triggers(instance.definition_hash):
                trigger_label = trigger
            # Who may act comes before any shortcut: a replay answers the owner only.
            who = acting(instance, actor, also)
            if who != actor:
                actor, key = who, scoped_key(who, idempotency_key)
                instance, prior = await self.store.load(instance_id, key)
            if prior is not None:
                outcome = "replayed"
                return await self._replay_outcome(instance, prior, trigger)
            if fired_timer is None and instance.deadline_at is not None:
                instance = await self._catch_up(instance)
            result = await self._step(instance, trigger, raw_input, key,
                                      expected_version, actor, client, fired_timer, session)
            outcome = "replayed" if result.replayed else "applied"
            return result
        except EngineError as exc:
            outcome = exc.error_id
            raise
        finally:
            self.observer.step(flow_name, trigger_label, outcome, time.perf_counter() - started)

    def _known_triggers(self, version: str) -> frozenset[str]:
        compiled = self._compiled.get(version)
        if compiled is None:
            return frozenset()
        return compiled.triggers

    async def _replay_outcome(self, instance: Instance, prior: Event,
                              trigger: str) -> StepOutcome:
        if prior.trigger != trigger:
            raise IdempotencyKeyReused(
                f"the key was used for trigger {prior.trigger!r}, not {trigger!r}")
        return StepOutcome(await self._as_it_was(instance, prior), prior, replayed=True)

    async def _as_it_was(self, instance: Instance, event: Event) -> Instance:
        """The instance as the step that recorded ``event`` left it: a replayed request
        gets the answer it got the first time, not today's state."""
        if event.seq == instance.version:
            return instance
        compiled = await self.compiled(instance.definition_hash)
        events = [e for e in await self.store.events(instance.id) if e.seq <= event.seq]
        try:
            then = replay(compiled, events)
        except ReplayDivergence as exc:
            # A history that does not replay is an auditor's finding (flowctl audit), not
            # the client's problem: answer with the instance as it is now.
            log.error("replayed_answer_not_rebuilt", instance=instance_ref(instance.id),
                      seq=event.seq, diverged_at=exc.seq, what=exc.what)
            return instance
        return then.instance or instance

    async def _step(self, instance: Instance, trigger: str, raw_input: Mapping[str, Any],
                    idempotency_key: str | None, expected_version: int | None, actor: str,
                    client: str | None, fired_timer: Timer | None,
                    session: str | None = None) -> StepOutcome:
        """The step's I/O around the pure decisions of engine.step."""
        return await self._commit(await self._decide(
            instance, trigger, raw_input, idempotency_key, expected_version, actor, client,
            fired_timer, session))

    async def _decide(self, instance: Instance, trigger: str, raw_input: Mapping[str, Any],
                      idempotency_key: str | None, expected_version: int | None,
                      actor: str, client: str | None, fired_timer: Timer | None,
                      session: str | None = None) -> _Decided:
        """Everything of a step but its commit: what it will write, if still in time."""
        now = self.clock.now()
        # The version is almost always compiled already: no coroutine for the common case.
        compiled = self._compiled.get(instance.definition_hash) or \
            await self.compiled(instance.definition_hash)
        flow = compiled.flow
        by_clock = fired_timer is not None
        admit(flow, instance, trigger, now=now, actor=actor, by_clock=by_clock,
              expected_version=expected_version, current=self.flows.get(instance.flow))
        clean, recorded_input = read_input(flow, instance.state, trigger, raw_input,
                                           instance.context, self.registry, now,
                                           self.sealer.seal, by_clock=by_clock)
        if not by_clock and not actor.startswith(PROVIDER_PREFIX):
            # Limits are for people: the clock and providers' callbacks are never throttled.
            await self.hit_limits(limits_for(flow, instance.state, trigger),
                                  {"instance": instance.id, "client": client, "actor": actor,
                                   "flow": flow.name}, clean)
        ai = ActionInput(instance_id=instance.id, flow=flow.name, seq=instance.version + 1,
                         state=instance.state, trigger=trigger, context=instance.context,
                         input=clean, now=now, services=self.services, actor=actor,
                         client=client, owner=instance.owner, policies=flow.policies,
                         sealer=self.sealer, session=session)
        if fired_timer is not None:
            ai.facts["timer"] = {"id": fired_timer.id, "due_at": iso(fired_timer.due_at)}
        facts = {**ai.facts, **await self._run_actions(
            actions_for(flow, instance.state, trigger), ai)}
        taken = choose(compiled, GuardInput(instance.state, trigger, instance.context,
                                            recorded_input, facts, flow.policies))
        dest = flow.states[taken.target(instance.state)]
        effects: dict[str, Any] = {}
        if dest.name != instance.state and dest.on_enter:
            ai.state = dest.name
            effects = await self._run_actions(dest.on_enter, ai)
        await _run_at_end(ai)
        done = settle(flow, instance, taken, trigger=trigger, recorded_input=recorded_input,
                      facts=facts, effects=effects, actor=actor, now=now, by_clock=by_clock)
        step = StepCommit(instance=done.instance, expected_version=instance.version,
                          event=done.event, idempotency_key=idempotency_key,
                          cancel_timers=done.cancel_timers, new_timer=done.new_timer,
                          fired_timer_id=fired_timer.id if fired_timer else None,
                          outbox=tuple(ai.outbox), writes=tuple(ai.writes))
        return _Decided(step, dict(ai.replies))

    async def _commit(self, decided: _Decided) -> StepOutcome:
        """Commit one decided step; a lost race is the step's earlier outcome (same key)
        or ConcurrencyConflict."""
        step = decided.step
        try:
            await self.store.commit(step)
        except (ConcurrencyConflict, DuplicateKey):
            if step.idempotency_key is not None:
                current, prior = await self.store.load(step.instance.id, step.idempotency_key)
                if prior is not None:
                    return await self._replay_outcome(current, prior, step.event.trigger)
            raise ConcurrencyConflict() from None
        return self._committed(decided)

    def _committed(self, decided: _Decided) -> StepOutcome:
        step = decided.step
        after, event = step.instance, step.event
        if step.outbox:
            self.on_commit()
        if step.new_timer is not None:
            self.on_timer(step.new_timer.due_at)
        log.info("step_committed", flow=after.flow, instance=instance_ref(after.id),
                 state=event.from_state, trigger=event.trigger, to=event.to_state,
                 seq=event.seq)
        return StepOutcome(after, event, replies=decided.replies)

    async def hit_limits(self, limits: Iterable[Limit], who: Mapping[str, str | None],
                          clean: Mapping[str, Any]) -> None:
        """Count one hit against each limit in order; raise RateLimited at the first one
        over (the ones after it are not counted)."""
        limits = tuple(limits)
        hits = []
        for limit in limits:
            parts = []
            for part in limit.by:
                value = clean.get(part[6:]) if part.startswith("field:") else who.get(part)
                if isinstance(value, Mapping) and "sealed" in value:
                    # A locked sensitive field comes as it was recorded, sealed: count the
                    # number itself, or every instance would count a phone apart.
                    value = self.sealer.open(part[6:], value)
                parts.append("" if value is None else str(value))
            # Values such as phone numbers never appear in keys in clear. The key has no
            # flow name: limits of one name count together in every flow (ten codes a
            # phone a day, whichever procedure sends them).
            digest = self.key_digest(canonical_json(parts))[:32]
            hits.append((f"limit:{limit.name}:{digest}", limit.max, limit.per))
        if not hits:
            return
        # One round trip for all of them (a captcha image counts two, an SMS code three).
        refused = await self.limiter.hit_each(hits)
        if refused is not None:
            over, wait = limits[refused[0]], refused[1]
            seconds = max(1, math.ceil(wait.total_seconds()))
            error = over.error
            raise RateLimited(
                error.en if error else None, retry_after=seconds, limit=over.name,
                **({"error_id": error.error_id,
                    "message": {"zh": error.zh, "en": error.en}} if error else {}))

    async def _run_actions(self, calls: Sequence[ActionRef],
                           ai: ActionInput) -> dict[str, Any]:
        """Run actions in order, each with its parameters; return what each returned, by
        fact name (None: nothing)."""
        results: dict[str, Any] = {}
        for call in calls:
            ai.action, ai.params = call.fact, call.param_map
            result = await self.registry.actions[call.name](ai)
            if result is not None:
                results[call.fact] = result
                ai.facts[call.fact] = result
        ai.action, ai.params = "", {}
        return results

    def restart_hint(self, instance: Instance) -> dict[str, Any]:
        """What a client needs to start over, prefilled with the non-secret input."""
        return restart_hint(self.flows.get(instance.flow), instance)

    # -- time --------------------------------------------------------------------
    async def fire_timer(self, timer: Timer) -> StepOutcome | None:
        """Fire one due timer through the ordinary step, keyed by the timer id."""
        try:
            return await self.advance(timer.instance_id, timer.trigger, {},
                                      idempotency_key=_timer_key(timer), actor=TIMER_ACTOR,
                                      fired_timer=timer)
        except ConcurrencyConflict:
            return None  # a user step won the race; the timer is still there if still due
        except _TIMER_REFUSALS as exc:
            await self._drop(timer, exc)
            return None

    async def _drop(self, timer: Timer, refusal: EngineError) -> None:
        log.warning("timer_dropped", timer_id=timer.id,
                    instance=instance_ref(timer.instance_id), reason=refusal.error_id)
        await self.store.drop_timer(timer.id)

    async def fire_timers(self, timers: Sequence[Timer], *,
                          concurrency: int = 8) -> list[StepOutcome | None]:
        """Fire due timers of distinct instances together: one load, one commit for all.

        Each is decided as ``fire_timer`` decides it (``concurrency`` at a time: an
        action may wait on a provider) and applied only if its instance is still at the
        version it was decided on; the one a person's step overtook meanwhile is fired
        again on its own. Returns each one's outcome; None where it did not fire (refused
        and dropped, or failed: logged, and tried again when its lease runs out).

        One by one, a timer is two round trips and a transaction of its own, and most of
        its cost was those (socket sends, PostgreSQL's per-statement and per-commit
        work): measured, 0.9-1.1 ms of CPU a timer, this process and PostgreSQL
        together; in batches of 200, 0.23-0.29 ms (docs/operations.md).
        """
        if len({t.instance_id for t in timers}) != len(timers):
            raise ValueError("one timer an instance in a batch")
        started = time.perf_counter()
        keys = [scoped_key(TIMER_ACTOR, _timer_key(t)) for t in timers]
        loaded = await self.store.load_many(
            [(t.instance_id, key) for t, key in zip(timers, keys, strict=True)])
        outcomes: list[StepOutcome | None] = [None] * len(timers)
        decided: dict[int, _Decided] = {}
        labels: list[tuple[str, str]] = [("?", "unknown")] * len(timers)

        async def decide(i: int) -> None:
            timer, found = timers[i], loaded[i]
            try:
                if found is None:
                    raise InstanceNotFound()
                instance, prior = found
                if timer.trigger in self._known_triggers(instance.definition_hash):
                    labels[i] = (instance.flow, timer.trigger)
                if prior is not None:
                    outcomes[i] = await self._replay_outcome(instance, prior, timer.trigger)
                    self._observe(labels[i], "replayed", started)
                    return
                decided[i] = await self._decide(instance, timer.trigger, {}, keys[i], None,
                                                TIMER_ACTOR, None, timer)
            except _TIMER_REFUSALS as exc:
                self._observe(labels[i], exc.error_id, started)
                try:
                    await self._drop(timer, exc)
                except Exception:
                    log.exception("timer_failed", **_timer_ref(timer))
            except Exception:
                self._observe(labels[i], "error", started)
                log.exception("timer_failed", **_timer_ref(timer))

        lanes = iter(range(len(timers)))

        async def lane() -> None:
            for i in lanes:
                await decide(i)

        await asyncio.gather(*(lane() for _ in range(min(max(1, concurrency), len(timers)))))
        # A step with writes of its own (an account, a seal) runs them in a transaction
        # of its own, as it would have when a person took it.
        together = [i for i in sorted(decided) if not decided[i].step.writes]
        alone = [i for i in sorted(decided) if decided[i].step.writes]
        again: list[int] = []
        try:
            applied = await self.store.commit_many(
                [decided[i].step for i in together]) if together else []
        except (ConcurrencyConflict, DuplicateKey):
            # Nothing of the batch was applied: each on its own, as a lone step is.
            alone, applied = sorted(decided), []
        for i, done in zip(together, applied, strict=False):
            if done:
                outcomes[i] = self._committed(decided[i])
                self._observe(labels[i], "applied", started)
            else:
                again.append(i)
        for i in alone:
            try:
                outcome = await self._commit(decided[i])
            except ConcurrencyConflict:
                again.append(i)
            except Exception:
                # A write that failed: this timer's own trouble, not the batch's.
                self._observe(labels[i], "error", started)
                log.exception("timer_failed", **_timer_ref(timers[i]))
            else:
                outcomes[i] = outcome
                self._observe(labels[i], "replayed" if outcome.replayed else "applied",
                              started)
        for i in sorted(again):
            # Overtaken since it was loaded: decided afresh on what the instance is now.
            try:
                outcomes[i] = await self.fire_timer(timers[i])
            except Exception:
                log.exception("timer_failed", **_timer_ref(timers[i]))
        return outcomes

    def _observe(self, label: tuple[str, str], outcome: str, started: float) -> None:
        self.observer.step(label[0], label[1], outcome, time.perf_counter() - started)


def _timer_ref(timer: Timer) -> dict[str, Any]:
    """How logs name a timer that failed: its lease runs out and it is tried again."""
    return {"timer_id": timer.id, "instance": instance_ref(timer.instance_id)}


def _timer_key(timer: Timer) -> str:
    """The Idempotency-Key a timer's step is taken under: it fires at most once."""
    return f"timer:{timer.id}"


# A timer whose instance moved on, finished or expired meanwhile: it is dropped.
_TIMER_REFUSALS = (TriggerNotAllowed, FlowFinished, FlowExpired, TransitionRefused,
                   InstanceNotFound, ValidationFailed)


async def _run_at_end(ai: ActionInput) -> None:
    """What the step's actions left for its end (``ActionInput.at_end``), in order."""
    for work in ai.at_end:
        await work()
