"""Dry runs: walk a flow through a scripted sequence of steps, with nothing stored.

An analyst who edits ``flows.yaml`` writes down what happens, step by step, and what
the outside world answers, and sees where the flow goes::

    flow: personal_login
    now: 2026-03-01T09:00:00+08:00       # optional: the time dated validators see
    prefill: {method: password}          # optional: the start's values
    effects: {load_account: {kind: personal}}  # optional: the initial state's on_enter
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

An action can also refuse, as a live one does when, say, the SMS code is wrong:
``refuse: {check_sms_code: sms_code_wrong}`` (or ``{error: ..., field: ...}``) refuses
the step with that error, like a 422 with nothing stored (``expect: invalid``). Where
the action declares its refusals, the error must be one of them, and it goes under the
field the declaration says (the field its parameter names in this use of the action).

A step that is refused stops the run, unless the script expected it (``expect:
invalid``, ``refused`` or ``unavailable``); then the state stays and the run goes on.
Every step is decided by the live step's own functions (engine.step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import yaml

from engine.errors import (
    FieldError,
    FlowFinished,
    TransitionRefused,
    TriggerNotAllowed,
    ValidationFailed,
)
from engine.machine import CompiledFlow
from engine.model import ActionRef, Transition
from engine.registry import Registry
from engine.step import (
    PROVIDER_PREFIX,
    TIMER_ACTOR,
    actions_for,
    admit,
    begin,
    choose,
    read_input,
    settle,
)
from engine.values import GuardInput, Instance

OUTCOMES = frozenset({"invalid", "refused", "unavailable"})
_STEP_KEYS = frozenset({"trigger", "input", "facts", "effects", "refuse", "expect", "note"})


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
    unknown = sorted(set(data) - {"flow", "prefill", "effects", "steps", "now"})
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
    if not isinstance(data.get("effects", {}), dict):
        raise ScriptError(f"{source}: 'effects' must be a mapping of fact names to results")
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
        for key in ("input", "facts", "effects", "refuse"):
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


DRY_RUN_ACTOR = "dry-run"


def _refusal(action: ActionRef, given: Any, registry: Registry) -> FieldError:
    """What a script says an action refuses with: ``error_id``, or ``{error, field}``;
    where the action declares its refusals, one of those, under its field."""
    written = dict(given) if isinstance(given, Mapping) else {"error": given}
    error_id = str(written.get("error"))
    default = FieldError(None, error_id, "", f"{action.fact} refused")
    if registry.declared("action", action.name):
        refusals = registry.spec("action", action.name).refusals
        declared = next((r for r in refusals if r.error_id == error_id), None)
        if declared is None:
            known = ", ".join(r.error_id for r in refusals) or "none"
            raise ScriptError(f"{action.fact!r} ({action.name}) does not refuse with "
                              f"{error_id!r} (it refuses with: {known})")
        default = declared.error(action.param_map)
    return FieldError(written.get("field", default.field), error_id,
                      str(written.get("zh", default.zh)), str(written.get("en", default.en)))


def dry_run(compiled: CompiledFlow, script: Mapping[str, Any],
            now: datetime | None = None) -> DryRun:
    """Walk ``compiled`` through a parsed script (see :func:`parse_script`).

    Each step goes through the live step's own decisions (engine.step): admit, read the
    input, choose, settle; only the actions' results come from the script.

    ``now`` is the time dated validators see (a birth date "not after today"): the
    script's ``now`` if it has one, else this argument (the CLI passes the current time).
    """
    now = script.get("now") or now or datetime.now(UTC)
    flow = compiled.flow
    for n, step in enumerate(script["steps"], start=1):
        expect = step.get("expect")
        if expect is not None and expect not in OUTCOMES and expect not in flow.states:
            raise ScriptError(f"step {n}: expect {expect!r} is neither a state of "
                              f"{flow.name!r} nor one of {', '.join(sorted(OUTCOMES))}")
    prefill = dict(script.get("prefill") or {})
    unknown = sorted(k for k in prefill if k not in flow.all_fields())
    if unknown:
        raise ScriptError(f"prefill: no field(s) {', '.join(unknown)} in {flow.name!r}")
    # What the initial state's on_enter actions found when the flow started, by fact name.
    entering = {a.fact for a in flow.states[flow.initial].on_enter}
    effects = dict(script.get("effects") or {})
    unknown = sorted(k for k in effects if k not in entering)
    if unknown:
        runs = ", ".join(sorted(entering)) or "none"
        raise ScriptError(f"effects: {', '.join(unknown)} not run on entering "
                          f"{flow.initial!r} (its on_enter: {runs})")
    instance = begin(flow, "dry-run", prefill, effects, actor=DRY_RUN_ACTOR, now=now).instance
    done: list[DryStep] = []
    for n, step in enumerate(script["steps"], start=1):
        result, instance = _dry_step(compiled, instance, n, step, now)
        done.append(result)
        if not result.ok:
            break
    return DryRun(flow.name, flow.version, tuple(done), instance.state,
                  flow.states[instance.state].final, instance.context)


@attrs.frozen
class _Taken:
    transition: Transition
    after: Instance
    entering: tuple[str, ...]


def _take(compiled: CompiledFlow, instance: Instance, n: int, step: Mapping[str, Any],
          now: datetime, actions: list[ActionRef]) -> _Taken:
    """One scripted step through admit, read_input, choose and settle; their refusals
    propagate. ``actions``: the trigger's actions, whose results the script gives."""
    flow, here, trigger = compiled.flow, instance.state, step["trigger"]
    timeout = flow.states[here].timeout
    by_clock = bool(timeout and trigger == timeout.trigger)
    # Callbacks are fired like any trigger: as the provider would.
    actor = (TIMER_ACTOR if by_clock else f"{PROVIDER_PREFIX}dry-run"
             if trigger in flow.callback_triggers(here) else DRY_RUN_ACTOR)
    admit(flow, instance, trigger, now=now, actor=actor, by_clock=by_clock)
    if by_clock and step.get("input"):
        raise ScriptError(f"step {n}: {trigger!r} is the clock's: it takes no input")
    _, recorded = read_input(flow, here, trigger, step.get("input") or {}, instance.context,
                             compiled.registry, now, _dry_seal, by_clock=by_clock)
    refusals = dict(step.get("refuse") or {})
    _refuse_if_scripted(actions, refusals, compiled.registry, n)
    facts = dict(step.get("facts") or {})
    taken = choose(compiled, GuardInput(here, trigger, instance.context, recorded, facts,
                                        flow.policies))
    dest = taken.target(here)
    # Scripts give what actions return (and refuse) by fact name: the action's, or its as:.
    entering = list(flow.states[dest].on_enter) if dest != here else []
    _refuse_if_scripted(entering, refusals, compiled.registry, n)
    effects = {k: v for k, v in (step.get("effects") or {}).items()
               if k in {a.fact for a in entering}}
    after = settle(flow, instance, taken, trigger=trigger, recorded_input=recorded,
                   facts=facts, effects=effects, actor=actor, now=now,
                   by_clock=by_clock).instance
    return _Taken(taken, after, tuple(a.fact for a in entering))


def _refuse_if_scripted(actions: Sequence[ActionRef], refusals: Mapping[str, Any],
                        registry: Registry, n: int) -> None:
    """The first of these actions the script says refuses, refuses the step (a 422)."""
    refusing = next((a for a in actions if a.fact in refusals), None)
    if refusing is not None:
        try:
            error = _refusal(refusing, refusals[refusing.fact], registry)
        except ScriptError as exc:
            raise ScriptError(f"step {n}: {exc}") from None
        raise ValidationFailed([error])


def _dry_step(compiled: CompiledFlow, instance: Instance, n: int, step: Mapping[str, Any],
              now: datetime) -> tuple[DryStep, Instance]:
    """One step of a script: what happened, and the instance after it."""
    flow, here, trigger = compiled.flow, instance.state, step["trigger"]
    expect = step.get("expect")

    def record(outcome: str, to: str, **detail: Any) -> DryStep:
        ok = (outcome in ("moved", "stayed") and expect in (None, to)) or expect == outcome
        return DryStep(n, trigger, here, to, outcome, expect, ok, detail)

    actions = actions_for(flow, here, trigger) if trigger in flow.triggers_from(here) else []
    # An action that declares it returns nothing has no facts to give.
    not_given = [a.fact for a in actions if a.fact not in (step.get("facts") or {})
                 and compiled.registry.spec("action", a.name).results != {}]
    try:
        taken = _take(compiled, instance, n, step, now, actions)
    except (FlowFinished, TriggerNotAllowed) as exc:
        return record("unavailable", here,
                      available=exc.extra.get("available", list(flow.triggers_from(here))),
                      reason="final" if isinstance(exc, FlowFinished) else "not_from_here"), \
            instance
    except ValidationFailed as exc:
        return record("invalid", here, errors=[e.as_dict() for e in exc.errors]), instance
    except TransitionRefused as exc:
        return record("refused", here, failed_guards=list(exc.extra["failed"]),
                      actions_without_facts=not_given), instance
    t = taken.transition
    detail: dict[str, Any] = {"guards": [str(g) for g in t.guards]}
    if not_given:
        detail["actions_without_facts"] = not_given
    if taken.entering:
        detail["on_enter"] = list(taken.entering)
    if t.error:
        detail["error"] = t.error.as_dict()
    dest = t.target(here)
    return record("moved" if dest != here else "stayed", dest, **detail), taken.after


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
        # An error of the whole step (no field) is named alone.
        errors = ", ".join(f"{e['field']}: {e['error_id']}" if e["field"] else e["error_id"]
                           for e in s.detail["errors"])
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
