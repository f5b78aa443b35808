"""Dry runs: walk a flow through a scripted sequence of steps, with nothing stored.

An analyst who edits ``flows.yaml`` writes down what happens, step by step, and what
the outside world answers, and sees where the flow goes::

    flow: personal_login
    now: 2026-03-01T09:00:00+08:00       # optional: the time dated validators see
    prefill: {method: password}          # optional: the start's values
    steps:
      - trigger: submit
        input: {account: "13800138000", password: "x", captcha: "ABCD"}
        facts: {check_captcha: {ok: true}, sign_in: {ok: false, reason: wrong}}
        expect: credentials             # a state, or: invalid, refused, unavailable

Each step is checked like a live one: the trigger must leave the current state, the
input is validated against the form, and the machine decides from the guards over
(context, input, facts). What actions would have returned is not computed (no SMS is
sent, no registry asked): the script gives it as ``facts`` (a trigger's actions) and
``effects`` (``on_enter`` actions of the state entered). Timeouts and callbacks may be
fired like any trigger. Limits are not counted.

A step that is refused stops the run, unless the script expected it (``expect:
invalid``, ``refused`` or ``unavailable``); then the state stays and the run goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
import yaml

from engine.errors import ValidationFailed
from engine.forms import redact, validate_input
from engine.machine import CompiledFlow, initial_context, next_context
from engine.steps import GuardInput

OUTCOMES = frozenset({"invalid", "refused", "unavailable"})
_STEP_KEYS = frozenset({"trigger", "input", "facts", "effects", "expect", "note"})


class ScriptError(ValueError):
    """The script itself is wrong: the message says where."""


@attrs.frozen
class DryStep:
    n: int
    trigger: str
    from_state: str
    to_state: str
    outcome: str  # moved | stayed | invalid | refused | unavailable
    expected: str | None = None
    ok: bool = True
    detail: dict[str, Any] = attrs.field(factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class DryRun:
    flow: str
    version: str
    steps: tuple[DryStep, ...]
    state: str
    final: bool
    context: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {"flow": self.flow, "version": self.version, "ok": self.ok,
                "state": self.state, "final": self.final,
                "steps": [s.as_dict() for s in self.steps], "context": self.context}


def parse_script(text: str, source: str = "<script>") -> dict[str, Any]:
    """Read a dry-run script (YAML) and check its shape; ScriptError says what is wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScriptError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ScriptError(f"{source}: a mapping with 'steps' is expected")
    unknown = sorted(set(data) - {"flow", "prefill", "steps", "now"})
    if unknown:
        raise ScriptError(f"{source}: unknown key(s): {', '.join(map(str, unknown))}")
    if "flow" in data and not isinstance(data["flow"], str):
        raise ScriptError(f"{source}: 'flow' must be a flow's name")
    if "now" in data:
        when = data["now"]  # YAML reads an unquoted timestamp as a datetime already
        try:
            when = when if isinstance(when, datetime) else datetime.fromisoformat(str(when))
        except ValueError:
            raise ScriptError(f"{source}: 'now' must be an ISO date and time") from None
        data["now"] = when if when.tzinfo else when.replace(tzinfo=UTC)
    if not isinstance(data.get("prefill", {}), dict):
        raise ScriptError(f"{source}: 'prefill' must be a mapping of field values")
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ScriptError(f"{source}: 'steps' must be a non-empty list")
    for n, step in enumerate(steps, start=1):
        where = f"{source}: step {n}"
        if not isinstance(step, dict):
            raise ScriptError(f"{where}: a mapping with 'trigger' is expected")
        unknown = sorted(set(map(str, step)) - _STEP_KEYS)
        if unknown:
            raise ScriptError(f"{where}: unknown key(s): {', '.join(unknown)}")
        if not isinstance(step.get("trigger"), str):
            raise ScriptError(f"{where}: 'trigger' is required")
        for key in ("input", "facts", "effects"):
            if not isinstance(step.get(key, {}), dict):
                raise ScriptError(f"{where}: '{key}' must be a mapping")
        if "expect" in step and not isinstance(step["expect"], str):
            raise ScriptError(f"{where}: 'expect' must be a state or one of "
                              f"{', '.join(sorted(OUTCOMES))}")
    return data


def _dry_seal(kind: str, value: str) -> dict[str, str]:
    """Stand-in for the vault: personal data shown masked, never sealed for real."""
    shown = value[:3] + "*" * max(len(value) - 7, 0) + value[-4:] if len(value) > 7 \
        else "*" * len(value)
    return {"sealed": "dry-run", "masked": shown}


def dry_run(compiled: CompiledFlow, script: Mapping[str, Any],
            now: datetime | None = None) -> DryRun:
    """Walk ``compiled`` through a parsed script (see :func:`parse_script`).

    ``now`` is the time dated validators see (a birth date "not after today"): the
    script's ``now`` if it has one, else this argument (the CLI passes the current time).
    """
    now = script.get("now") or now
    flow = compiled.flow
    registry = compiled.registry
    for n, step in enumerate(script["steps"], start=1):
        expect = step.get("expect")
        if expect is not None and expect not in OUTCOMES and expect not in flow.states:
            raise ScriptError(f"step {n}: expect {expect!r} is neither a state of "
                              f"{flow.name!r} nor one of {', '.join(sorted(OUTCOMES))}")
    state = flow.initial
    prefill = dict(script.get("prefill") or {})
    unknown = sorted(k for k in prefill if k not in flow.all_fields())
    if unknown:
        raise ScriptError(f"prefill: no field(s) {', '.join(unknown)} in {flow.name!r}")
    context = initial_context(prefill, {})
    done: list[DryStep] = []
    for n, step in enumerate(script["steps"], start=1):
        trigger, expect = step["trigger"], step.get("expect")
        facts = dict(step.get("facts") or {})
        effects_given = dict(step.get("effects") or {})

        def record(outcome: str, to: str, *, n: int = n, trigger: str = trigger,
                   here: str = state, expect: str | None = expect,
                   **detail: Any) -> DryStep:
            ok = (outcome in ("moved", "stayed") and expect in (None, to)) or expect == outcome
            return DryStep(n, trigger, here, to, outcome, expect, ok, detail)

        if flow.states[state].final or trigger not in flow.triggers_from(state):
            reason = "final" if flow.states[state].final else "not_from_here"
            result = record("unavailable", state, reason=reason,
                            available=list(flow.triggers_from(state)))
        else:
            timeout = flow.states[state].timeout
            try:
                # A timeout is the clock's step: like a live one, it carries no input.
                clean = {} if timeout and trigger == timeout.trigger and not step.get(
                    "input") else validate_input(flow, state, trigger,
                                                 step.get("input") or {}, context, registry,
                                                 now)
            except ValidationFailed as exc:
                result = record("invalid", state, errors=[e.as_dict() for e in exc.errors])
            else:
                recorded = redact(flow, state, clean, _dry_seal)
                candidates = flow.transitions_from(state, trigger)
                actions = list(dict.fromkeys(a.fact for t in candidates for a in t.actions))
                gi = GuardInput(state, trigger, context, recorded, facts, flow.policies)
                taken = compiled.decide(gi)
                not_given = [a for a in actions if a not in facts]
                if taken is None:
                    failed = [str(g) for t in candidates for g in t.guards
                              if not compiled.holds(g, gi)]
                    result = record("refused", state, failed_guards=list(dict.fromkeys(failed)),
                                    actions_without_facts=not_given)
                else:
                    dest = flow.states[taken.target(state)]
                    moved = dest.name != state
                    effects = {k: v for k, v in effects_given.items()
                               if moved and k in {a.fact for a in dest.on_enter}}
                    context = next_context(context, from_state=state, to_state=dest.name,
                                           input=recorded, facts=facts, effects=effects,
                                           transition=taken)
                    detail: dict[str, Any] = {"guards": [str(g) for g in taken.guards]}
                    if not_given:
                        detail["actions_without_facts"] = not_given
                    if moved and dest.on_enter:
                        detail["on_enter"] = [a.fact for a in dest.on_enter]
                    if taken.error:
                        detail["error"] = taken.error.as_dict()
                    result = record("moved" if moved else "stayed", dest.name, **detail)
                    state = dest.name
        done.append(result)
        if not result.ok:
            break
    return DryRun(flow.name, flow.version, tuple(done), state, flow.states[state].final,
                  context)


def describe_step(s: DryStep) -> str:
    """One line a person reads: what the step did, and whether that was expected."""
    mark = "ok " if s.ok else "NO "
    head = f"{mark}{s.n:>2}. {s.trigger}: {s.from_state}"
    if s.outcome in ("moved", "stayed"):
        line = f"{head} -> {s.to_state}"
        if s.detail.get("guards"):
            line += f"  [{', '.join(s.detail['guards'])}]"
        if s.detail.get("error"):
            line += f"  error {s.detail['error'].get('error_id')}"
    elif s.outcome == "invalid":
        errors = ", ".join(f"{e['field']}: {e['error_id']}" for e in s.detail["errors"])
        line = f"{head}  invalid input ({errors})"
    elif s.outcome == "refused":
        line = f"{head}  refused (failed: {', '.join(s.detail['failed_guards']) or 'none'})"
    else:
        line = (f"{head}  not available here"
                f" (available: {', '.join(s.detail['available']) or 'none'})")
    if s.expected is not None and not s.ok:
        line += f"  -- expected {s.expected}"
    missing = s.detail.get("actions_without_facts")
    if missing:
        line += f"  (no facts given for: {', '.join(missing)})"
    return line
