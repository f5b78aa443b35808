"""Parameters of actions and guards: what the file may give, lint, defaults, the step."""

from __future__ import annotations

from typing import Any

import asyncpg
import attrs
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import (
    ActionInput,
    CompiledFlow,
    DefinitionError,
    FrozenClock,
    GuardInput,
    Registry,
    Runtime,
    check_text,
    load_text,
)
from engine.dryrun import dry_run
from engine.loader import build_flow
from engine.model import ActionRef
from engine.registry import REQUIRED, Param, Refusal
from storage import PgStore

SEEN: list[tuple[str, str, dict[str, Any]]] = []


def declaring() -> Registry:
    """Names with declarations: a code sender and checker, a guard that reads a policy."""
    registry = Registry()

    @registry.action("send", params=[
        Param("phone", "field", "Where the phone is.", default="mobile"),
        Param("purpose", "string", "What the code is for.", default=None),
        Param("channel", "enum", "How it goes.", default="sms", choices=("sms", "voice")),
        Param("wait", "number", "Seconds between two.", default=60),
    ], results={"sent_to": "The phone, masked."},
        refusals=[Refusal("phone_bad", "号码不对", "Bad number", param="phone")])
    async def send(a: ActionInput) -> dict[str, Any]:
        SEEN.append(("action", a.action, dict(a.params)))
        return {"sent_to": a.params["phone"]}

    @registry.action("lookup", params=[Param("table", "string", "Which table.")])
    async def lookup(a: ActionInput) -> dict[str, Any]:
        SEEN.append(("action", a.action, dict(a.params)))
        return {"found": a.params["table"]}

    @registry.action("plain")
    async def plain(a: ActionInput) -> None:
        SEEN.append(("action", a.action, dict(a.params)))

    @registry.guard("under", params=[Param("policy", "policy", "The limit.",
                                           default="tries.max")])
    def under(g: GuardInput) -> bool:
        SEEN.append(("guard", "under", dict(g.params)))
        section, key = g.params["policy"].split(".")
        return int(g.attempts) < int(g.policies.get(section, {}).get(key, 3))

    @registry.guard("ok")
    def ok(g: GuardInput) -> bool:
        return True

    @registry.policy("tries")
    def tries(section: Any) -> dict[str, Any]:
        return {"max": 3, **(section or {})}

    return registry


REGISTRY = declaring()

FLOW = """\
flows:
  f:
    initial: a
    states:
      a:
        fields:
          mobile: {label: {zh: 手机, en: Mobile}}
          new_mobile: {label: {zh: 新手机, en: New mobile}}
      b:
        on_enter: [{lookup: {table: people}}]
        show: {sent: facts.second.sent_to, found: facts.lookup.found}
      done: {final: true}
    transitions:
      - trigger: send
        source: a
        dest: a
        actions:
          - send
          - send: {phone: new_mobile, purpose: new_phone}
            as: second
        guards: [{under: {policy: tries.max}}]
      - trigger: send
        source: a
        dest: b
        guards: [{"!under": {}}]
        actions: [send, {send: {phone: new_mobile, purpose: new_phone}, as: second}]
      - {trigger: go, source: b, dest: done, actions: plain}
"""


def messages(text: str, registry: Registry | None = REGISTRY) -> list[str]:
    return [d.message for d in check_text(text, "f.yaml", registry)[1]]


def lint_at(text: str) -> list[tuple[int, int, str]]:
    return [(d.line, d.col, d.message) for d in check_text(text, "f.yaml", REGISTRY)[1]]


def test_actions_and_guards_with_parameters_lint_clean() -> None:
    assert messages(FLOW) == []


def test_the_loader_fills_in_defaults_and_remembers_what_was_written() -> None:
    flow = load_text(FLOW, registry=REGISTRY).flows["f"]
    first, second = flow.transitions[0].actions
    assert first == ActionRef("send", (("channel", "sms"), ("phone", "mobile"),
                                       ("purpose", None), ("wait", 60)))
    assert second.fact == "second"
    assert second.param_map == {"channel": "sms", "phone": "new_mobile",
                                "purpose": "new_phone", "wait": 60}
    assert second.written == ("phone", "purpose")
    assert str(second) == "send {phone: new_mobile, purpose: new_phone} as second"
    [guard] = flow.transitions[1].guards
    assert (str(guard), guard.param_map) == ("!under", {"policy": "tries.max"})
    assert flow.states["b"].on_enter == (ActionRef("lookup", (("table", "people"),),
                                                   ("table",)),)


def test_only_what_the_file_writes_is_in_the_version() -> None:
    content, _ = check_text(FLOW, "f.yaml", REGISTRY)
    actions = content["f"]["transitions"][0]["actions"]
    assert actions == ["send", {"name": "send", "params": {
        "phone": "new_mobile", "purpose": "new_phone"}, "as": "second"}]
    assert content["f"]["transitions"][1]["guards"] == ["!under"]
    # Without a registry the file reads the same: the version does not depend on the code.
    assert check_text(FLOW, "f.yaml", None)[0] == content


def test_a_name_without_parameters_keeps_its_version_however_it_is_written() -> None:
    versions = {load_text(FLOW.replace("actions: plain", spelling),
                          registry=REGISTRY).flows["f"].version
                for spelling in ("actions: plain", "actions: [plain]", "actions: [plain: {}]",
                                 "actions: [{plain: }]", "actions: {plain: {}}")}
    assert len(versions) == 1


def test_changing_a_default_in_the_code_keeps_every_version() -> None:
    other = declaring()
    other.action_specs["send"] = attrs.evolve(other.action_specs["send"], params=(
        Param("phone", "field", "Where the phone is.", default="new_mobile"),
        *other.action_specs["send"].params[1:]))
    before = load_text(FLOW, registry=REGISTRY).flows["f"]
    after = load_text(FLOW, registry=other).flows["f"]
    assert before.version == after.version
    assert after.transitions[0].actions[0].param_map["phone"] == "new_mobile"


def test_a_parameter_the_action_does_not_declare_is_reported_at_its_key() -> None:
    text = FLOW.replace("{lookup: {table: people}}", "{lookup: {table: people, colour: red}}")
    line = "        on_enter: [{lookup: {table: people, colour: red}}]"
    assert lint_at(text) == [(text.splitlines().index(line) + 1, line.index("colour") + 1,
                              "unknown parameter 'colour' of action 'lookup' (known: table)")]
    text = FLOW.replace("actions: plain", "actions: {plain: {x: 1}}")
    assert messages(text) == ["unknown parameter 'x' of action 'plain' (it takes none)"]


@pytest.mark.parametrize(("value", "problem"), [
    ("{channel: fax}", "parameter 'channel' of action 'send': one of sms, voice is expected, "
                       "not 'fax'"),
    ("{wait: soon}", "parameter 'wait' of action 'send': a number is expected, not 'soon'"),
    ("{wait: true}", "parameter 'wait' of action 'send': a number is expected, not True"),
    ("{purpose: 5}", "parameter 'purpose' of action 'send': a text is expected, not 5"),
    ("{phone: New-Mobile}", "parameter 'phone' of action 'send': a field name "
                            "(lower_snake_case) is expected, not 'New-Mobile'"),
])
def test_a_parameter_of_the_wrong_kind_is_reported(value: str, problem: str) -> None:
    text = FLOW.replace("      - {trigger: go, source: b, dest: done, actions: plain}",
                        f"      - {{trigger: go, source: b, dest: done, actions: [{{send: "
                        f"{value}}}]}}")
    assert problem in messages(text)


def test_a_required_parameter_left_out_is_reported_at_the_action() -> None:
    text = FLOW.replace("[{lookup: {table: people}}]", "[lookup]")
    line = text.splitlines().index("        on_enter: [lookup]") + 1
    assert (line, 20, "action 'lookup' needs parameter 'table'") in lint_at(text)


def test_a_field_parameter_names_a_field_of_the_state_that_its_trigger_takes() -> None:
    text = FLOW.replace("{phone: new_mobile, purpose: new_phone}",
                        "{phone: new_phnoe, purpose: new_phone}")
    assert messages(text) == ["action 'send' reads field 'new_phnoe' (parameter 'phone'): "
                              "state 'a' has no such field"] * 2
    text = FLOW.replace("        guards: [{under: {policy: tries.max}}]",
                        "        fields: [new_mobile]\n"
                        "        guards: [{under: {policy: tries.max}}]")
    # The default counts too: `send` alone reads `mobile`, which `send` no longer takes.
    assert messages(text) == ["action 'send' reads field 'mobile' (parameter 'phone'), which "
                              "trigger 'send' does not take (add it to 'fields')"]


def test_an_on_enter_field_parameter_names_a_field_of_the_flow() -> None:
    text = FLOW.replace("[{lookup: {table: people}}]", "[{lookup: {table: t}, send: {}}]")
    assert "an action with parameters is a mapping of its one name to them: {name: " \
        "{parameter: value}}" in messages(text)
    text = FLOW.replace("[{lookup: {table: people}}]",
                        "[{lookup: {table: t}}, {send: {phone: office}, as: office}]")
    assert messages(text) == ["action 'send' reads field 'office' (parameter 'phone'), which "
                              "no state of this flow has"]


def test_a_policy_parameter_names_a_registered_policy_and_key() -> None:
    assert "parameter 'policy' of guard 'under': policy 'tries' has no key 'most' (known: " \
        "max)" in messages(FLOW.replace("policy: tries.max", "policy: tries.most"))
    assert "parameter 'policy' of guard 'under': unknown policy 'lockout' (known: tries)" in \
        messages(FLOW.replace("policy: tries.max", "policy: lockout"))


def test_guards_with_other_parameters_do_not_separate_two_transitions() -> None:
    # under {tries.max} and !under {tries.other} may both hold: the trigger is ambiguous.
    text = FLOW.replace('{"!under": {}}', '{"!under": {policy: tries}}')
    assert messages(text) == ["transitions 0 and 1 both take trigger 'send' from state 'a' "
                              "and no guard separates them (give one 'g' and the other '!g')"]


def test_show_reads_only_results_an_action_declares() -> None:
    text = FLOW.replace("facts.second.sent_to", "facts.second.sent")
    assert messages(text) == ["'facts.second.sent' reads 'sent', which action 'send' does "
                              "not return (it returns: sent_to)"]
    # An action that declares no results is not checked below its name.
    assert messages(FLOW.replace("facts.lookup.found", "facts.lookup.anything")) == []


def test_one_fact_name_is_one_action_with_one_set_of_parameters() -> None:
    text = FLOW.replace("      - send: {phone: new_mobile, purpose: new_phone}\n"
                        "            as: second\n",
                        "      - send: {phone: new_mobile, purpose: new_phone}\n")
    found = messages(text)
    assert "fact 'send' would be recorded by two different actions, or one with other " \
        "parameters: name one of them with 'as: <fact>'" in found
    # The same parameters, once written and once by default, are the same fact.
    text = FLOW.replace("actions: [send, {send:", "actions: [{send: {phone: mobile}}, {send:")
    assert messages(text) == []


@pytest.mark.parametrize(("entry", "message"), [
    ("{send: {}, as: timer}", "'timer' is the fact of the clock's step: name the action's "
                              "fact otherwise"),
    ("{send: {}, as: Second}", "'as' names the action's fact: a lower_snake_case name"),
    ("{send: 5}", "the parameters of action 'send' are a mapping: {parameter: value}"),
    ("[[send]]", "actions must be a name or a list of names (or of {name: {parameters}})"),
])
def test_a_badly_written_action_is_reported(entry: str, message: str) -> None:
    text = FLOW.replace("actions: plain", f"actions: {entry}")
    assert message in messages(text)


def test_a_guard_has_no_fact_to_name() -> None:
    text = FLOW.replace('guards: [{"!under": {}}]', 'guards: [{"!under": {}, as: x}]')
    assert messages(text) == ["'as' names the fact an action records; a guard records none"]


def test_an_unquoted_negated_guard_with_parameters_says_quote_it() -> None:
    text = FLOW.replace('guards: [{"!under": {}}]',
                        "guards:\n          - !under: {policy: tries.max}")
    line = text.splitlines().index("          - !under: {policy: tries.max}") + 1
    assert (line, 13, "unknown YAML tag '!under:': to name a negated guard, quote it: "
            "\"!under\"") in lint_at(text)


def test_a_stored_version_whose_parameters_the_code_lost_cannot_run() -> None:
    content, _ = check_text(FLOW, "f.yaml", REGISTRY)
    older = declaring()
    older.action_specs["send"] = attrs.evolve(older.action_specs["send"], params=(
        Param("phone", "field", "x", default="mobile"),))
    with pytest.raises(DefinitionError) as info:
        CompiledFlow(build_flow(content["f"]), older)
    assert [d.message for d in info.value.diagnostics] == [
        "unknown parameter 'purpose' of action 'send'"]
    newer = declaring()
    newer.action_specs["plain"] = attrs.evolve(
        newer.action_specs["lookup"], params=(Param("table", "string", "now required"),))
    with pytest.raises(DefinitionError) as info:
        CompiledFlow(build_flow(content["f"]), newer)
    assert [d.message for d in info.value.diagnostics] == [
        "action 'plain' needs parameter 'table'"]


def test_a_declaration_must_hold_together() -> None:
    registry = Registry()
    with pytest.raises(ValueError, match="kind is one of"):
        Param("x", "colour", "?")
    with pytest.raises(ValueError, match="default"):
        Param("x", "number", "?", default="many")
    with pytest.raises(ValueError, match="not a field parameter"):
        registry.action("a", refusals=[Refusal("e", "错", "wrong", param="phone")])
    with pytest.raises(ValueError, match="keyword"):
        registry.action("as")(lambda a: None)
    assert Param("x", "string", "?").default is REQUIRED


def test_each_guard_is_asked_with_its_own_parameters() -> None:
    flow = load_text(FLOW, registry=REGISTRY).flows["f"]
    compiled = CompiledFlow(flow, REGISTRY)
    SEEN.clear()
    gi = GuardInput("a", "send", {"attempts": 3}, {}, {}, {"tries": {"max": 3}})
    taken = compiled.decide(gi)
    assert taken is not None
    assert taken.dest == "b"
    assert ("guard", "under", {"policy": "tries.max"}) in SEEN
    assert gi.params == {}  # the step's input is not changed for the next guard


async def test_the_runtime_hands_each_action_its_parameters_and_records_its_fact(
        pool: asyncpg.Pool, clock: FrozenClock) -> None:
    runtime = Runtime(PgStore(pool), clock, REGISTRY, load_text(FLOW, registry=REGISTRY))
    await runtime.publish()
    SEEN.clear()
    iid = (await runtime.start("f")).instance.id
    outcome = await runtime.advance(iid, "send", {"mobile": "m1", "new_mobile": "m2"})
    assert outcome.instance.state == "a"
    assert [s for s in SEEN if s[0] == "action"] == [
        ("action", "send", {"channel": "sms", "phone": "mobile", "purpose": None,
                            "wait": 60}),
        ("action", "second", {"channel": "sms", "phone": "new_mobile",
                              "purpose": "new_phone", "wait": 60})]
    assert outcome.event.facts == {"send": {"sent_to": "mobile"},
                                   "second": {"sent_to": "new_mobile"}}


def test_a_dry_run_takes_facts_by_the_name_as_gives() -> None:
    flow = load_text(FLOW, registry=REGISTRY).flows["f"]
    run = dry_run(CompiledFlow(flow, REGISTRY), {"steps": [
        {"trigger": "send", "input": {"mobile": "m"}, "facts": {"send": {"sent_to": "x"}},
         "expect": "a"}]})
    assert run.ok
    assert run.steps[0].detail["actions_without_facts"] == ["second"]


def test_stored_flows_get_their_defaults_from_the_registry_they_are_served_with() -> None:
    from engine.loader import flows_from_contents

    content, _ = check_text(FLOW, "f.yaml", REGISTRY)
    served = flows_from_contents(content.values(), REGISTRY).flows["f"]
    assert served.transitions[0].actions[0].param_map["phone"] == "mobile"
    assert served == load_text(FLOW, registry=REGISTRY).flows["f"]
    # Without a registry, what the file wrote; compiling fills in the rest.
    bare = flows_from_contents(content.values()).flows["f"]
    assert bare.transitions[0].actions[0].params == ()
    assert CompiledFlow(bare, REGISTRY).flow.transitions[0].actions[0] == \
        served.transitions[0].actions[0]


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.sampled_from(["send", "!under", "as", "mobile", "tries.max", "codes", "timer"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6) | st.sampled_from(["as", "send", "phone", "!under"]),
                      inner, max_size=3), max_leaves=8)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_value_in_actions_guards_or_limits_gives_diagnostics_never_an_exception(
        data: st.DataObject) -> None:
    doc = yaml.safe_load(FLOW.replace("flows:\n", "limit_sets:\n  codes: [{name: c, by: "
                                      "client, max: 1, per: 1m}]\nflows:\n"))
    where = data.draw(st.sampled_from(_paths(doc)[1:]))
    parent = doc
    for part in where[:-1]:
        parent = parent[part]
    parent[where[-1]] = data.draw(JUNK)
    text = yaml.safe_dump(doc, allow_unicode=True)
    diags = check_text(text, "f.yaml", REGISTRY)[1]
    for d in diags:
        assert 1 <= d.line <= text.count("\n") + 1
    if not diags:  # what lints clean loads and compiles
        for flow in load_text(text, registry=REGISTRY).flows.values():
            CompiledFlow(flow, REGISTRY)
