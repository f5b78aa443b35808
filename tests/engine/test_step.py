"""The step's decisions, pure: no store, no clock, no provider."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine import (
    CompiledFlow,
    FlowExpired,
    Forbidden,
    PreconditionFailed,
    TransitionRefused,
    TriggerNotAllowed,
    load_text,
)
from engine.step import acting, admit, begin, choose, read_input, settle
from engine.values import GuardInput, Instance
from tests.sample_flows import SAMPLE_YAML, sample_registry

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
OWNER = "device:" + "a" * 32
REGISTRY = sample_registry()
FLOW = load_text(SAMPLE_YAML, registry=REGISTRY).flows["signup"]
COMPILED = CompiledFlow(FLOW, REGISTRY)
DETAILS = {"name": "Ada", "password": "pw-Secret-1", "agree": True}


def no_seal(kind: str, value: str) -> dict[str, str]:
    return {"sealed": "x", "masked": "*"}


def started() -> Instance:
    return begin(FLOW, "i-1", {}, {}, actor=OWNER, now=NOW).instance


def at_code() -> Instance:
    instance = started()
    _, recorded = read_input(FLOW, "details", "submit", DETAILS, instance.context, REGISTRY,
                             NOW, no_seal)
    taken = choose(COMPILED, GuardInput("details", "submit", instance.context, recorded, {},
                                        FLOW.policies))
    return settle(FLOW, instance, taken, trigger="submit", recorded_input=recorded,
                  facts={}, effects={}, actor=OWNER, now=NOW).instance


def test_only_the_owner_acts_besides_the_clock_and_providers() -> None:
    instance = started()
    assert acting(instance, OWNER) == OWNER
    assert acting(instance, "account:x", also=(OWNER,)) == OWNER
    assert acting(instance, "timer") == "timer"
    assert acting(instance, "provider:face") == "provider:face"
    with pytest.raises(Forbidden):
        acting(instance, "device:" + "b" * 32)
    with pytest.raises(Forbidden):
        acting(instance, "anonymous")


def test_admit_refuses_in_order_expiry_finished_version_then_trigger() -> None:
    instance = at_code()
    with pytest.raises(FlowExpired) as expired:
        admit(FLOW, instance, "confirm", now=NOW + timedelta(days=8), actor=OWNER,
              current=FLOW)
    assert expired.value.extra["restart"]["href"] == "/api/flows/signup"
    with pytest.raises(PreconditionFailed):
        admit(FLOW, instance, "confirm", now=NOW, actor=OWNER, expected_version=1)
    with pytest.raises(TriggerNotAllowed) as refused:
        admit(FLOW, instance, "submit", now=NOW, actor=OWNER)
    assert refused.value.extra["available"] == ["confirm", "back"]
    # The timeout is the clock's alone.
    with pytest.raises(TriggerNotAllowed):
        admit(FLOW, instance, "expire", now=NOW, actor=OWNER)
    admit(FLOW, instance, "expire", now=NOW, actor="timer", by_clock=True)
    admit(FLOW, instance, "confirm", now=NOW, actor=OWNER, expected_version=2)


def test_choose_names_every_failed_guard() -> None:
    instance = at_code()
    gi = GuardInput("code", "confirm", instance.context, {}, {}, FLOW.policies)
    assert choose(COMPILED, gi).dest == "code"  # no fact: code_ok fails, !too_many holds
    tired = {**instance.context, "attempts": 2}
    refused_gi = GuardInput("code", "confirm", tired, {}, {"check_code": {"ok": False}},
                            FLOW.policies)
    assert choose(COMPILED, refused_gi).dest == "details"
    with pytest.raises(TransitionRefused):
        choose(COMPILED, GuardInput("details", "nothing", {}, {}, {}, FLOW.policies))


def test_settle_arms_and_cancels_timers_as_states_are_entered_and_left() -> None:
    instance = at_code()
    assert instance.deadline_at == NOW + timedelta(hours=72)
    later = NOW + timedelta(hours=1)
    wrong = choose(COMPILED, GuardInput("code", "confirm", instance.context, {},
                                        {"check_code": {"ok": False}}, FLOW.policies))
    stayed = settle(FLOW, instance, wrong, trigger="confirm", recorded_input={},
                    facts={"check_code": {"ok": False}}, effects={}, actor=OWNER, now=later)
    assert (stayed.cancel_timers, stayed.new_timer) == (False, None)
    assert stayed.instance.deadline_at == instance.deadline_at  # the timeout still runs
    assert stayed.instance.context["attempts"] == 1
    assert stayed.event.prev_hash == instance.last_hash
    assert stayed.instance.last_hash == stayed.event.hash
    back = choose(COMPILED, GuardInput("code", "back", instance.context, {}, {},
                                       FLOW.policies))
    left = settle(FLOW, instance, back, trigger="back", recorded_input={}, facts={},
                  effects={}, actor=OWNER, now=later)
    assert (left.cancel_timers, left.new_timer, left.instance.deadline_at) == (True, None, None)


def test_settle_is_a_function_of_its_arguments() -> None:
    one, two = at_code(), at_code()
    assert one == two
    assert one.last_hash == two.last_hash
