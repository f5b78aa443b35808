"""Flow lookups are memoised per version: the answers are those of a fresh computation."""

from __future__ import annotations

from pathlib import Path

import attrs

from engine import Registry, load_file, load_text
from engine.model import Flow, Transition

ROOT = Path(__file__).resolve().parents[2]


def _fresh_from(flow: Flow, state: str, trigger: str | None) -> tuple[Transition, ...]:
    return tuple(t for t in flow.transitions
                 if state in t.sources and (trigger is None or t.trigger == trigger))


def test_every_lookup_of_the_real_flows_matches_a_fresh_computation() -> None:
    flows = load_file(str(ROOT / "flows.yaml"), Registry().load_modules(("flows",)))
    checked = 0
    for flow in flows.flows.values():
        for _ in range(2):  # the second pass answers from the memo
            for state in flow.states:
                assert flow.transitions_from(state) == _fresh_from(flow, state, None)
                triggers = tuple(dict.fromkeys(t.trigger for t in _fresh_from(flow, state, None)))
                assert flow.triggers_from(state) == triggers
                timeout = flow.states[state].timeout
                callbacks = {t.trigger for t in _fresh_from(flow, state, None)
                             if t.via == "callback"}
                assert flow.callback_triggers(state) == callbacks
                assert flow.user_triggers(state) == tuple(
                    t for t in triggers
                    if not (timeout and t == timeout.trigger) and t not in callbacks)
                for trigger in triggers:
                    assert flow.transitions_from(state, trigger) == _fresh_from(
                        flow, state, trigger)
                    assert flow.fields_for(state, trigger) == flow._fields_for(state, trigger)
                    checked += 1
    assert checked > 50


def test_an_evolved_flow_does_not_inherit_the_memo() -> None:
    text = """\
flows:
  f:
    initial: a
    states:
      a: {}
      b: {final: true}
    transitions:
      - {trigger: go, source: a, dest: b}
"""
    flow = load_text(text, registry=Registry()).flows["f"]
    assert flow.triggers_from("a") == ("go",)
    other = attrs.evolve(flow, transitions=())
    assert other.triggers_from("a") == ()
    assert flow.triggers_from("a") == ("go",)
