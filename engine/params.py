"""Parameters of actions and guards: filled in from the registry's declarations.

A flow's canonical content (its version) holds the parameters as the file wrote them;
the defaults are the code's, like the Python behind a name. So a flow is resolved
against the registry it runs with: every declared parameter gets its value, the one
written or the default, and the code reads ``a.params[name]`` without guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from engine.model import ActionRef, Field, Flow, Guard, params_of
from engine.registry import Registry, Spec


def _filled(spec: Spec, params: Mapping[str, Any], written: tuple[str, ...]) -> dict[str, Any]:
    # What the file wrote stays, even a parameter the code no longer declares (problems()
    # names it); a required one left out stays out (so does it).
    out = {k: v for k, v in params.items() if k in written}
    for p in spec.params:
        if p.name not in out and not p.required:
            out[p.name] = p.default
    return out


def _guard(g: Guard, registry: Registry) -> Guard:
    spec = registry.spec("guard", g.name)
    if not spec.params:
        return g
    return attrs.evolve(g, params=params_of(_filled(spec, g.param_map, g.written)))


def _action(a: ActionRef, registry: Registry) -> ActionRef:
    spec = registry.spec("action", a.name)
    if not spec.params:
        return a
    return attrs.evolve(a, params=params_of(_filled(spec, a.param_map, a.written)))


def _field(f: Field, registry: Registry) -> Field:
    if isinstance(f.locked, Guard):
        return attrs.evolve(f, locked=_guard(f.locked, registry))
    return f


def with_defaults(flow: Flow, registry: Registry) -> Flow:
    """The flow with every declared parameter's default filled in where none is written.

    The same flow when nothing it uses declares parameters; a flow already resolved is
    resolved again to the same one.
    """
    uses = [g.name for t in flow.transitions for g in t.guards]
    uses += [a.name for t in flow.transitions for a in t.actions]
    uses += [a.name for s in flow.states.values() for a in s.on_enter]
    uses += [f.locked.name for s in flow.states.values() for f in s.fields
             if isinstance(f.locked, Guard)]
    if not any(n in registry.guard_specs or n in registry.action_specs for n in uses):
        return flow
    states = {name: attrs.evolve(
        s, on_enter=tuple(_action(a, registry) for a in s.on_enter),
        fields=tuple(_field(f, registry) for f in s.fields)) for name, s in flow.states.items()}
    transitions = tuple(attrs.evolve(
        t, guards=tuple(_guard(g, registry) for g in t.guards),
        actions=tuple(_action(a, registry) for a in t.actions)) for t in flow.transitions)
    return attrs.evolve(flow, states=states, transitions=transitions)


def problems(flow: Flow, registry: Registry) -> list[str]:
    """What this code cannot give the flow's actions and guards: parameters it does not
    declare (any more), or declares as required and the version does not give."""
    out: list[str] = []
    refs: list[tuple[str, str, Mapping[str, Any], tuple[str, ...]]] = []
    for t in flow.transitions:
        refs += [("guard", g.name, g.param_map, g.written) for g in t.guards]
        refs += [("action", a.name, a.param_map, a.written) for a in t.actions]
    for s in flow.states.values():
        refs += [("action", a.name, a.param_map, a.written) for a in s.on_enter]
        refs += [("guard", f.locked.name, f.locked.param_map, f.locked.written)
                 for f in s.fields if isinstance(f.locked, Guard)]
    for kind, name, params, written in refs:
        if name not in (registry.actions if kind == "action" else registry.guards):
            continue  # the name itself is missing: CompiledFlow says so
        spec = registry.spec(kind, name)
        for key in written:
            if spec.param(key) is None:
                out.append(f"unknown parameter '{key}' of {kind} '{name}'")
        for p in spec.params:
            if p.required and p.name not in params:
                out.append(f"{kind} '{name}' needs parameter '{p.name}'")
    return sorted(set(out))
