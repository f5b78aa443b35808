"""The step's decisions, as pure functions: no clock, no store, no provider.

The live step (``engine.runtime``), the dry run (``engine.dryrun``) and replay
(``engine.replay``) all take a step through these functions, in this order:

1. ``acting``: who acts, owner first (before any shortcut such as an idempotent replay);
2. ``admit``: may this trigger be fired now (expiry, finished, ``If-Match``, which
   triggers leave the state and who may fire them);
3. ``read_input``: the form validated, and the input as it will be recorded;
4. the actions run (I/O, in the runtime; given by the script in a dry run; recorded
   facts in replay);
5. ``choose``: the transition the guards allow, or a refusal naming the failed guards;
6. the destination's ``on_enter`` actions run (I/O again; recorded effects in replay);
7. ``settle``: the new instance, its sealed event, the timer to arm.

``begin`` is ``settle`` for a flow's first event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from engine.canonical import GENESIS
from engine.errors import (
    FieldError,
    FlowExpired,
    FlowFinished,
    Forbidden,
    PreconditionFailed,
    TransitionRefused,
    TriggerNotAllowed,
    ValidationFailed,
)
from engine.forms import redact, validate_input
from engine.machine import CompiledFlow, initial_context, next_context
from engine.model import ActionRef, Flow, Limit, Transition
from engine.ports import NewTimer
from engine.registry import Registry
from engine.values import Event, GuardInput, Instance

__all__ = [
    "PROVIDER_PREFIX",
    "TIMER_ACTOR",
    "Settled",
    "acting",
    "actions_for",
    "admit",
    "begin",
    "check_access",
    "check_prefill",
    "choose",
    "failed_guards",
    "iso",
    "limits_for",
    "on_behalf",
    "read_input",
    "restart_hint",
    "settle",
]

TIMER_ACTOR = "timer"
# Actors of signed provider callbacks: "provider:face", "provider:payment", ...
PROVIDER_PREFIX = "provider:"

Seal = Callable[[str, str], dict[str, str]]


def iso(t: datetime) -> str:
    """A time as events record it."""
    return t.isoformat(timespec="microseconds")


@attrs.frozen
class Settled:
    """What one step leaves behind, before anything is stored."""

    instance: Instance
    event: Event
    new_timer: NewTimer | None
    # Leaving a state cancels its timers (its timeout no longer applies).
    cancel_timers: bool


# -- who, and may they ----------------------------------------------------------------

def check_access(flow: Flow, actor: str) -> None:
    """Flows not open to anyone need a signed-in account or an administrator to start."""
    if flow.access == "anyone" or actor.startswith(f"{flow.access}:"):
        return
    raise Forbidden(f"flow {flow.name!r} needs a signed-in {flow.access}")


def on_behalf(actor: str) -> bool:
    """Whether ``actor`` is the clock or a provider's signed callback: what steps a flow
    on its owner's behalf, never a person."""
    return actor == TIMER_ACTOR or actor.startswith(PROVIDER_PREFIX)


def acting(instance: Instance, actor: str, also: Sequence[str] = ()) -> str:
    """Who acts on this instance: its owner, or the clock or a provider's signed callback,
    which step a flow on the owner's behalf. Forbidden for anyone else.

    ``also``: other identities the same caller holds (a signed-in browser is also its
    device).
    """
    if on_behalf(actor):
        return actor
    for identity in (actor, *also):
        if identity == instance.owner:
            return identity
    raise Forbidden("this flow belongs to someone else")


def restart_hint(current: Flow | None, instance: Instance) -> dict[str, Any]:
    """What a client needs to start over, prefilled with the non-secret input.

    ``current``: the flow as it is served now (a restart runs the current version).
    """
    fields = current.all_fields() if current else {}
    # Secrets never, and a required tick box (an agreement) is ticked afresh.
    values = {k: v for k, v in instance.context.get("values", {}).items()
              if k in fields and not fields[k].secret and not fields[k].sensitive
              and not (fields[k].type == "boolean" and fields[k].required)}
    return {"flow": instance.flow, "method": "POST", "href": f"/api/flows/{instance.flow}",
            "body": {"prefill": values}}


def admit(flow: Flow, instance: Instance, trigger: str, *, now: datetime,
          actor: str, by_clock: bool = False, expected_version: int | None = None,
          current: Flow | None = None) -> None:
    """May ``actor`` fire ``trigger`` on the instance now? Raise the refusal if not.

    ``by_clock``: the step is a due timer firing. ``current``: the flow as served now,
    for the restart an expired instance offers.
    """
    if instance.expired(now):
        raise FlowExpired(restart=restart_hint(current, instance))
    if instance.status != "active":
        raise FlowFinished()
    if expected_version is not None and expected_version != instance.version:
        raise PreconditionFailed(current_version=instance.version)
    state = instance.state
    timeout = flow.states[state].timeout
    clock_only = timeout.trigger if timeout else None
    callbacks = flow.callback_triggers(state)
    by_provider = actor.startswith(PROVIDER_PREFIX)
    leaving = flow.triggers_from(state)
    if trigger not in leaving or (trigger == clock_only and not by_clock) or (
            (trigger in callbacks) != by_provider and trigger != clock_only):
        raise TriggerNotAllowed(
            f"trigger {trigger!r} is not available in state {state!r}",
            available=[t for t in leaving if t != clock_only and t not in callbacks])


# -- input ----------------------------------------------------------------------------

def read_input(flow: Flow, state: str, trigger: str, raw: Mapping[str, Any],
               context: Mapping[str, Any], registry: Registry, now: datetime, seal: Seal,
               *, by_clock: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The form checked (ValidationFailed if not), and the input as it will be recorded:
    ``(clean, recorded)``; secrets dropped and personal data sealed in ``recorded``."""
    # A timeout is the clock's step: it carries no input, so there is no form to check.
    clean = {} if by_clock else validate_input(flow, state, trigger, raw, context,
                                               registry, now)
    return clean, redact(flow, state, clean, seal)


def check_prefill(flow: Flow, prefill: Mapping[str, Any], registry: Registry,
                  now: datetime) -> dict[str, Any]:
    """A start's prefill: each value checked like a submission of that field."""
    fields = flow.all_fields()
    # Locked and derived values come from the flow itself, never from a client.
    allowed = {k for k, f in fields.items() if not f.secret and not f.sensitive
               and f.locked is False and f.value_from is None}
    errors = [FieldError(k, "unknown_field", "不接受此字段",
                         "This field cannot be prefilled") for k in prefill
              if k not in allowed]
    if errors:
        raise ValidationFailed(errors)
    out: dict[str, Any] = {}
    for state in flow.states.values():
        names = {f.name for f in state.fields} & set(prefill) - set(out)
        if not names:
            continue
        # Checked like a submission of those fields, none of them required.
        sub = attrs.evolve(flow, states={state.name: attrs.evolve(
            state, fields=tuple(attrs.evolve(f, required=False, locked=False)
                                for f in state.fields if f.name in names))},
            transitions=())
        out.update(validate_input(sub, state.name, "", {k: prefill[k] for k in names},
                                  {}, registry, now))
    return out


def limits_for(flow: Flow, state: str, trigger: str) -> list[Limit]:
    """The limits a step of this trigger counts against; a name counts once a step."""
    limits: dict[str, Limit] = {}
    for t in flow.transitions_from(state, trigger):
        for lim in t.limits:
            limits.setdefault(lim.name, lim)
    return list(limits.values())


def actions_for(flow: Flow, state: str, trigger: str) -> list[ActionRef]:
    """The actions of every transition this trigger may take from the state, each once,
    in the order first listed: they all run before any guard decides. (One fact name is
    one action with one set of parameters in a flow: lint sees to it.)"""
    return list(dict.fromkeys(a for t in flow.transitions_from(state, trigger)
                              for a in t.actions))


# -- deciding -------------------------------------------------------------------------

def failed_guards(compiled: CompiledFlow, gi: GuardInput) -> list[str]:
    """Every guard of the trigger's transitions that does not hold, once each."""
    failed: list[str] = []
    for t in compiled.flow.transitions_from(gi.state, gi.trigger):
        for g in t.guards:
            if not compiled.holds(g, gi) and str(g) not in failed:
                failed.append(str(g))
    return failed


def choose(compiled: CompiledFlow, gi: GuardInput) -> Transition:
    """The transition whose guards hold, or TransitionRefused naming the failed guards."""
    taken = compiled.decide(gi)
    if taken is None:
        raise TransitionRefused(
            f"no transition for {gi.trigger!r} from {gi.state!r} allows this",
            failed=failed_guards(compiled, gi))
    return taken


# -- what a step leaves behind ------------------------------------------------------------

def begin(flow: Flow, instance_id: str, values: dict[str, Any],
          effects: dict[str, Any], *, actor: str, now: datetime,
          at: str | None = None) -> Settled:
    """A flow's first event and instance: in its initial state, owned by ``actor``.

    ``at``: the time as recorded, when replaying (else ``iso(now)``).
    """
    state = flow.states[flow.initial]
    event = Event.sealed(
        instance_id=instance_id, seq=1, trigger="start", from_state=None,
        to_state=flow.initial, input=values, facts={}, effects=effects,
        actor=actor, at=at or iso(now), definition_hash=flow.version, prev_hash=GENESIS)
    timer = (NewTimer(flow.initial, state.timeout.trigger, now + state.timeout.after)
             if state.timeout else None)
    instance = Instance(
        id=instance_id, flow=flow.name, definition_hash=flow.version, state=flow.initial,
        context=initial_context(values, effects), version=1,
        status="finished" if state.final else "active", created_at=now, updated_at=now,
        expires_at=now + flow.expires_in, last_hash=event.hash,
        deadline_at=timer.due_at if timer else None, owner=actor)
    return Settled(instance, event, timer, cancel_timers=False)


def settle(flow: Flow, instance: Instance, taken: Transition, *, trigger: str,
           recorded_input: dict[str, Any], facts: dict[str, Any],
           effects: dict[str, Any], actor: str, now: datetime, by_clock: bool = False,
           at: str | None = None) -> Settled:
    """The step taken: the new instance, its sealed event, the timer it arms.

    ``effects`` are the destination's ``on_enter`` results (empty on a self-loop).
    ``at``: the time as recorded, when replaying (else ``iso(now)``).
    """
    dest = flow.states[taken.target(instance.state)]
    moved = dest.name != instance.state
    seq = instance.version + 1
    context = next_context(instance.context, from_state=instance.state, to_state=dest.name,
                           input=recorded_input, facts=facts, effects=effects,
                           transition=taken)
    event = Event.sealed(
        instance_id=instance.id, seq=seq, trigger=trigger, from_state=instance.state,
        to_state=dest.name, input=recorded_input, facts=facts, effects=effects,
        actor=actor, at=at or iso(now),
        definition_hash=flow.version, prev_hash=instance.last_hash)
    new_timer = None
    deadline = instance.deadline_at
    # Entering a state arms its timeout; so does its own timeout looping back to it.
    if moved or by_clock:
        deadline = None
        if dest.timeout:
            new_timer = NewTimer(dest.name, dest.timeout.trigger, now + dest.timeout.after)
            deadline = new_timer.due_at
    # Built field by field rather than with attrs.evolve: this is the hot path.
    after = Instance(
        id=instance.id, flow=instance.flow, definition_hash=instance.definition_hash,
        state=dest.name, context=context, version=seq,
        status="finished" if dest.final else "active", created_at=instance.created_at,
        updated_at=now, expires_at=instance.expires_at, last_hash=event.hash,
        deadline_at=deadline, owner=instance.owner)
    return Settled(after, event, new_timer, cancel_timers=moved)
