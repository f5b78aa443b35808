"""One flow version compiled once: a ``transitions`` machine that decides steps.

The machine is built once per definition version and reused for every step: deciding
sets a single probe model to the instance's state and fires the trigger, and the
guards (pure functions) pick the transition. Nothing awaits inside ``decide``, so the
shared probe is never seen half-way by another task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from transitions import Machine

from engine.errors import DefinitionError
from engine.loader import Diagnostic
from engine.model import Flow, Guard, Transition
from engine.params import problems as param_problems
from engine.params import with_defaults
from engine.registry import GuardFn, Registry
from engine.values import GuardInput


class _Probe:
    """The model the machine moves; it also remembers which transition fired."""

    state: str
    taken: Transition | None = None


class CompiledFlow:
    """A flow version with its guards bound, ready to decide and to fold context.

    ``flow`` is the version with its parameters' defaults filled in from ``registry``.
    """

    def __init__(self, flow: Flow, registry: Registry) -> None:
        self.registry = registry
        # Every name the version uses must be registered now: a version stored long ago
        # may name something the code no longer has, and must say so before a step.
        fields = [f for s in flow.states.values() for f in s.fields]
        guards = {g.name for t in flow.transitions for g in t.guards}
        guards |= {f.locked.name for f in fields if not isinstance(f.locked, bool)}
        actions = {a.name for t in flow.transitions for a in t.actions}
        actions |= {a.name for s in flow.states.values() for a in s.on_enter}
        validators = {f.format for f in fields if f.format}
        missing = [f"unknown {kind} '{name}'" for kind, names, known in (
            ("guard", guards, registry.guards), ("action", actions, registry.actions),
            ("validator", validators, registry.validators))
            for name in sorted(names) if name not in known]
        # ... and so must every parameter it gives, or the code now requires.
        missing += param_problems(flow, registry)
        if missing:
            raise DefinitionError([Diagnostic(flow.name, 1, 1, m) for m in missing])
        self.flow = flow = with_defaults(flow, registry)
        self.triggers = frozenset(t.trigger for t in flow.transitions)
        # The same choice without the machine, for replay at volume: per (state, trigger),
        # the transitions in the order the machine tries them, each with its guards as
        # the machine checks them (conditions first, then the negated ones).
        routes: dict[tuple[str, str], list[tuple[Transition, tuple[Any, ...]]]] = {}
        for spec in flow.transitions:
            for source in spec.sources:
                taken = spec if spec.dest is not None else attrs.evolve(spec, dest=source)
                checks = tuple((registry.guards[g.name], g.param_map, g.negated)
                               for g in (*[g for g in spec.guards if not g.negated],
                                         *[g for g in spec.guards if g.negated]))
                routes.setdefault((source, spec.trigger), []).append((taken, checks))
        self._routes = {k: tuple(v) for k, v in routes.items()}
        self._probe = _Probe()
        self._machine = Machine(
            model=self._probe,
            states=[{"name": s.name, "final": s.final} for s in flow.states.values()],
            initial=flow.initial,
            auto_transitions=False,
            send_event=True,
            ignore_invalid_triggers=True,
        )
        for spec in flow.transitions:
            for source in spec.sources:
                # A stay is decided as the self-loop it is from this source: whoever reads
                # the decision gets a transition with its destination.
                taken = spec if spec.dest is not None else attrs.evolve(spec, dest=source)
                self._machine.add_transition(
                    spec.trigger, source, taken.dest,
                    conditions=[self._bind(registry.guards[g.name], g) for g in spec.guards
                                if not g.negated],
                    unless=[self._bind(registry.guards[g.name], g) for g in spec.guards
                            if g.negated],
                    before=[self._tagger(taken)],
                )

    @staticmethod
    def _bind(fn: GuardFn, guard: Guard) -> Any:
        params = guard.param_map

        def condition(event: Any) -> bool:
            guard_input = event.kwargs["guard_input"]
            return bool(fn(with_params(guard_input, params)))
        return condition

    @staticmethod
    def _tagger(spec: Transition) -> Any:
        def tag(event: Any) -> None:
            event.model.taken = spec
        return tag

    def decide(self, guard_input: GuardInput) -> Transition | None:
        """Return the transition the guards allow for this trigger, or None.

        A transition that stays (``stay: true``) comes back with ``dest`` set to the state
        it fired from.
        """
        probe = self._probe
        self._machine.set_state(guard_input.state, probe)
        probe.taken = None
        event = self._machine.events.get(guard_input.trigger)
        if event is None:
            return None
        event.trigger(probe, guard_input=guard_input)
        taken = probe.taken
        probe.taken = None
        return taken

    def decide_directly(self, state: str, trigger: str, context: Mapping[str, Any],
                        input: Mapping[str, Any], facts: Mapping[str, Any],
                        ) -> Transition | None:
        """What :meth:`decide` returns for ``GuardInput(state, trigger, context, input,
        facts, flow.policies)``, found without the ``transitions`` machine.

        The first transition from the state on the trigger whose guards all allow it, its
        guards called in the machine's order (a guard that raises raises here too). A
        transition without guards is taken without making a guard input.
        """
        policies = self.flow.policies
        for taken, checks in self._routes.get((state, trigger), ()):
            for fn, params, negated in checks:
                if bool(fn(GuardInput(state, trigger, context, input, facts, policies,
                                      params))) == negated:
                    break
            else:
                return taken
        return None

    def holds(self, guard: Guard, guard_input: GuardInput) -> bool:
        """Whether one guard (negated or not, with its parameters) holds."""
        fn = self.registry.guards[guard.name]
        return bool(fn(with_params(guard_input, guard.param_map))) != guard.negated


def with_params(guard_input: GuardInput, params: Mapping[str, Any]) -> GuardInput:
    """The guard input one guard gets: the step's, with that guard's parameters."""
    if not params and not guard_input.params:
        return guard_input
    return attrs.evolve(guard_input, params=params)


def initial_context(values: Mapping[str, Any], effects: Mapping[str, Any]) -> dict[str, Any]:
    return {"values": dict(values), "facts": dict(effects), "attempts": 0, "error": None}


def next_context(context: Mapping[str, Any], *, from_state: str, to_state: str,
                 input: Mapping[str, Any], facts: Mapping[str, Any],
                 effects: Mapping[str, Any], transition: Transition | None) -> dict[str, Any]:
    """Fold one step into the context; pure, so replay reproduces it exactly."""
    same = from_state == to_state
    return {
        "values": {**context.get("values", {}), **input},
        "facts": {**context.get("facts", {}), **facts, **effects},
        "attempts": int(context.get("attempts", 0)) + 1 if same else 0,
        "error": transition.error.as_dict() if transition and transition.error else None,
    }
