"""The loader and linter: every problem at once, each at its ``file:line:col``.

Positions are asserted exactly; ``spot`` finds them by searching the text for a
unique snippet, so a test reads as "reported at *this* value" and survives edits of
the surrounding YAML.
"""

from __future__ import annotations

import copy
import itertools
import json
import textwrap
from datetime import timedelta
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import DefinitionError, Diagnostic, Registry, check_text, load_file, load_text
from engine.canonical import content_hash
from engine.loader import build_flow
from engine.model import Guard

# -- a registry of the names the test flows use ----------------------------------

REGISTRY = Registry()


@REGISTRY.guard("code_ok")
def _code_ok(g: Any) -> bool:
    return True


@REGISTRY.guard("too_many")
def _too_many(g: Any) -> bool:
    return False


@REGISTRY.action("send_code")
async def _send_code(a: Any) -> None:
    return None


@REGISTRY.action("check_code")
async def _check_code(a: Any) -> None:
    return None


@REGISTRY.validator("phone")
def _phone(value: Any) -> Any:
    return value


VALID = """\
flows:
  signup:
    title: {zh: 注册, en: Sign up}
    initial: details
    expires_in: 7d
    states:
      details:
        label: {zh: 资料, en: Details}
        on_enter: [send_code]
        fields:
          phone:
            label: {zh: 手机号, en: Phone}
            format: phone
            required: true
          kind:
            type: choice
            choices: [person, company]
            label: {zh: 类型, en: Kind}
          code:
            label: {zh: 验证码, en: Code}
            secret: true
            locked: too_many
        timeout: {after: 72h, trigger: expire}
      done:
        final: true
      lapsed:
        final: true
    transitions:
      - trigger: submit
        source: details
        dest: done
        guards: [code_ok]
        actions: [check_code]
        fields: [phone, code]
      - trigger: submit
        source: details
        dest: details
        guards: ["!code_ok"]
        actions: [check_code]
        error: {id: code_wrong, field: code, zh: 验证码错误, en: The code is wrong}
      - trigger: expire
        source: details
        dest: lapsed
"""


# -- helpers ------------------------------------------------------------------------


def lint(text: str, registry: Registry | None = REGISTRY) -> list[Diagnostic]:
    return check_text(text, "flows.yaml", registry)[1]


def edit(old: str, new: str, text: str = VALID) -> str:
    """Return ``text`` with its only occurrence of ``old`` replaced by ``new``."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def spot(text: str, context: str, target: str | None = None) -> tuple[int, int]:
    """Return the 1-based (line, col) of ``target`` in the only occurrence of ``context``."""
    assert text.count(context) == 1, f"{context!r} occurs {text.count(context)} times"
    offset = text.index(context)
    if target is not None:
        assert target in context
        offset += context.index(target)
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col


def only(diags: list[Diagnostic], fragment: str) -> Diagnostic:
    """Return the one diagnostic whose message contains ``fragment``."""
    found = [d for d in diags if fragment in d.message]
    assert len(found) == 1, f"{fragment!r} in {[str(d) for d in diags]}"
    return found[0]


def at(d: Diagnostic) -> tuple[int, int]:
    return d.line, d.col


def version(text: str) -> str:
    return load_text(text, "flows.yaml", REGISTRY).flows["signup"].version


def content_version(text: str) -> str:
    """The version the content would have, whether or not the file lints."""
    return content_hash(check_text(text, "flows.yaml", REGISTRY)[0]["signup"])


# -- a valid file -------------------------------------------------------------------


def test_valid_file_has_no_diagnostics() -> None:
    assert lint(VALID) == []


def test_valid_file_loads_into_the_model() -> None:
    flow = load_text(VALID, "flows.yaml", REGISTRY).flows["signup"]

    assert flow.initial == "details"
    assert set(flow.states) == {"details", "done", "lapsed"}
    assert flow.expires_in == timedelta(days=7)
    assert flow.states["details"].timeout is not None
    assert flow.states["details"].timeout.after == timedelta(hours=72)
    assert [f.name for f in flow.states["details"].fields] == ["phone", "kind", "code"]
    code = flow.states["details"].field("code")
    assert code is not None
    assert code.locked == Guard("too_many")
    assert flow.transitions[1].guards == (Guard("code_ok", negated=True),)
    assert flow.transitions[1].error is not None
    assert flow.transitions[1].error.field == "code"
    assert flow.fields_for("details", "expire") == flow.states["details"].fields


def test_file_without_registry_is_linted_for_structure_only() -> None:
    text = edit("on_enter: [send_code]", "on_enter: [nope]").replace("phone", "nope")

    assert lint(text, registry=None) == []
    assert lint(text) != []


# -- YAML itself --------------------------------------------------------------------


def test_yaml_syntax_error_is_reported_at_its_position() -> None:
    text = edit("    initial: details\n", "    initial: details: x\n")

    content, diags = check_text(text, "flows.yaml", REGISTRY)

    assert content == {}
    assert len(diags) == 1
    assert diags[0].message.startswith("YAML syntax: mapping values are not allowed")
    assert at(diags[0]) == spot(text, "initial: details: x", ": x")


def test_duplicate_state_is_reported_at_the_second_key() -> None:
    text = edit("      lapsed:\n        final: true\n",
                "      lapsed:\n        final: true\n      done: {final: true}\n")

    d = only(lint(text), "duplicate key 'done'")

    assert at(d) == spot(text, "      done: {final: true}", "done")


def test_duplicate_key_in_a_transition_is_reported_at_the_second_key() -> None:
    text = edit("        dest: lapsed\n", "        dest: lapsed\n        dest: done\n")

    d = only(lint(text), "duplicate key 'dest'")

    assert at(d) == spot(text, "dest: lapsed\n        dest: done", "dest: done")


def test_unquoted_negated_guard_is_a_diagnostic_with_a_hint_not_a_crash() -> None:
    # YAML reads an unquoted `!code_ok` as a tag; analysts will write it anyway.
    text = edit('guards: ["!code_ok"]', "guards:\n          - !code_ok")

    d = only(lint(text), "unknown YAML tag '!code_ok'")

    assert 'quote it: "!code_ok"' in d.message
    assert at(d) == spot(text, "- !code_ok", "!code_ok")


@pytest.mark.parametrize(
    "written",
    [
        "guards: [!code_ok]",            # the tag eats the ']': the parse fails at the end
        "guards: [too_many, !code_ok]",
        "guards: [!code_ok ]",
        "guards: [!code_ok, too_many]",  # the tag eats the ',': no syntax error at all
    ],
)
def test_unquoted_negated_guard_in_a_flow_list_says_quote_it_at_the_guard(
        written: str) -> None:
    text = edit('guards: ["!code_ok"]', written)

    d = only(lint(text), "unknown YAML tag '!code_ok")

    assert d.message.endswith('to name a negated guard, quote it: "!code_ok"')
    assert "YAML syntax" not in d.message
    assert at(d) == spot(text, written, "!code_ok")


def test_unquoted_negated_guard_in_a_flow_mapping_says_quote_it_at_the_guard() -> None:
    # Inside { } the '}' after the tag is a scanner error, reported past the tag.
    text = edit('guards: ["!code_ok"]', "{guards: [!code_ok], label: {zh: 否, en: No}}"
                ).replace("        {guards:", "        x-flow: {guards:")

    d = only(lint(text), "quote it")

    assert d.message == "unknown YAML tag '!code_ok': to name a negated guard, quote it: " \
        '"!code_ok"'
    assert at(d) == spot(text, "{guards: [!code_ok]", "!code_ok")


def test_a_syntax_error_without_a_bare_guard_keeps_the_parsers_message() -> None:
    text = edit('guards: ["!code_ok"]', 'guards: ["!code_ok"')

    d = only(lint(text), "YAML syntax")

    assert "quote it" not in d.message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!int abc", "'abc' is not a valid '!!int' value"),
        ("!!float x", "'x' is not a valid '!!float' value"),
        ("!!timestamp soon", "'soon' is not a valid '!!timestamp' value"),
        ("!!python/name:os.system x", "'x' is not a valid '!!python/name:os.system' value"),
    ],
)
def test_badly_tagged_value_is_a_diagnostic_at_the_value(value: str, message: str) -> None:
    text = edit("expires_in: 7d", f"expires_in: {value}")

    d = only(lint(text), message)

    assert at(d) == spot(text, f"expires_in: {value}", value)


def test_unsupported_tag_on_a_mapping_is_reported() -> None:
    text = edit("      done:\n        final: true\n",
                "      done: !!python/object:os.Foo\n        final: true\n")

    d = only(lint(text), "unsupported YAML tag '!!python/object:os.Foo'")

    assert at(d) == spot(text, "done: !!python", "!!python")


def test_recursive_alias_is_a_diagnostic_not_a_crash() -> None:
    diags = lint("flows: &loop\n  f: *loop\n")

    d = only(diags, "an alias refers to a value that contains it")
    assert at(d) == spot("flows: &loop\n  f: *loop\n", "f: *loop", "f")


def test_alias_bomb_is_refused_without_expanding_it() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]

    diags = lint("\n".join(lines) + "\n")

    assert len(diags) == 1
    assert "expands (through aliases)" in diags[0].message


def test_deeply_nested_document_is_a_diagnostic_not_a_crash() -> None:
    diags = lint("flows: " + "[" * 1000 + "]" * 1000 + "\n")

    assert len(diags) == 1
    assert "nested too deeply" in diags[0].message


def test_non_scalar_key_is_reported_at_the_key() -> None:
    text = edit("title: {zh: 注册, en: Sign up}", "title: {zh: 注册, en: Sign up, [x]: 1}")

    d = only(lint(text), "a key must be a plain name")

    assert at(d) == spot(text, "[x]: 1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
        ("- a\n- b\n", "the file must be a mapping with 'flows'"),
        ("flows: {}\n", "'flows' must be a mapping of flow names to flows"),
        ("flowz: {}\n", "'flows' must be a mapping of flow names to flows"),
    ],
)
def test_file_without_flows_is_reported(text: str, message: str) -> None:
    assert message in " ".join(d.message for d in lint(text))


# -- names from the registry --------------------------------------------------------


def test_unknown_guard_is_reported_at_its_position() -> None:
    text = edit("guards: [code_ok]", "guards: [code_ok, nope]")

    d = only(lint(text), "unknown guard 'nope'")

    assert d.message == "unknown guard 'nope' (known: code_ok, too_many)"
    assert at(d) == spot(text, "[code_ok, nope]", "nope")


def test_unknown_negated_guard_is_reported_at_its_position() -> None:
    text = edit('guards: ["!code_ok"]', 'guards: ["!nope"]')

    d = only(lint(text), "unknown guard")

    assert "'nope'" in d.message
    assert at(d) == spot(text, '["!nope"]', '"!nope"')


def test_unknown_guard_given_as_a_single_name_is_reported_at_it() -> None:
    text = edit("guards: [code_ok]", "guards: nope")

    d = only(lint(text), "unknown guard 'nope'")

    assert at(d) == spot(text, "guards: nope", "nope")


def test_unknown_lock_guard_is_reported_at_its_position() -> None:
    text = edit("locked: too_many", "locked: '!nope'")

    d = only(lint(text), "unknown guard 'nope'")

    assert at(d) == spot(text, "locked: '!nope'", "'!nope'")


def test_unknown_action_in_transition_is_reported_at_its_position() -> None:
    text = edit('guards: ["!code_ok"]\n        actions: [check_code]',
                'guards: ["!code_ok"]\n        actions: [check_code, nope_action]')

    d = only(lint(text), "unknown action 'nope_action'")

    assert d.message == "unknown action 'nope_action' (known: check_code, send_code)"
    assert at(d) == spot(text, "nope_action")


def test_unknown_action_in_on_enter_is_reported_at_its_position() -> None:
    text = edit("on_enter: [send_code]", "on_enter: [send_code, send_cod]")

    d = only(lint(text), "unknown action 'send_cod'")

    assert at(d) == spot(text, "send_cod]")


def test_unknown_validator_is_reported_at_the_format() -> None:
    text = edit("format: phone", "format: phon")

    d = only(lint(text), "unknown validator 'phon'")

    assert d.message == "unknown validator 'phon' (known: phone)"
    assert at(d) == spot(text, "format: phon", "phon")


# -- fields -------------------------------------------------------------------------


def personal(*formats: str) -> Registry:
    """REGISTRY's names, with the given formats registered as carrying personal data."""
    registry = Registry()
    registry.guards.update(REGISTRY.guards)
    registry.actions.update(REGISTRY.actions)
    for name, fn in REGISTRY.validators.items():
        registry.validator(name, personal=name in formats)(fn)
    return registry


def test_a_field_of_a_personal_format_in_clear_is_reported_at_the_format() -> None:
    d = only(lint(VALID, personal("phone")), "personal data")

    assert d.message == ("format 'phone' carries personal data: mark the field "
                         "'sensitive: true' (recorded sealed, shown masked) or "
                         "'secret: true' (never recorded)")
    assert at(d) == spot(VALID, "format: phone", "phone")
    assert lint(VALID, personal()) == []


@pytest.mark.parametrize("flag", ["sensitive: true", "secret: true"])
def test_a_field_of_a_personal_format_may_be_sensitive_or_secret(flag: str) -> None:
    text = edit("            format: phone\n",
                f"            format: phone\n            {flag}\n")

    assert lint(text, personal("phone")) == []


def test_every_personal_field_in_clear_is_reported_with_the_files_other_problems() -> None:
    text = edit("            secret: true\n            locked: too_many\n",
                "            format: phone\n            sensitive: false\n"
                "            locked: too_many\n")
    text = edit("on_enter: [send_code]", "on_enter: [send_cod]", text)

    diags = lint(text, personal("phone"))

    assert [(at(d), "personal data" in d.message) for d in diags] == [
        (spot(text, "on_enter: [send_cod]", "send_cod"), False),
        (spot(VALID, "format: phone", "phone"), True),
        (spot(text, "format: phone\n            sensitive: false", "phone"), True),
    ]


def test_transition_naming_a_field_its_state_lacks_is_reported_at_that_name() -> None:
    text = edit("fields: [phone, code]", "fields: [phone, cod]")

    d = only(lint(text), "unknown field 'cod'")

    assert d.message == "unknown field 'cod': state 'details' has no such field"
    assert at(d) == spot(text, "[phone, cod]", "cod")


def test_error_naming_a_field_its_state_lacks_is_reported_at_that_field() -> None:
    text = edit("error: {id: code_wrong, field: code,", "error: {id: code_wrong, field: pin,")

    d = only(lint(text), "unknown field 'pin' in error")

    assert at(d) == spot(text, "field: pin", "pin")


def test_error_field_that_is_not_a_name_is_a_diagnostic_not_a_crash() -> None:
    text = edit("field: code,", "field: [code],")

    d = only(lint(text), "error's 'field' must be a field name")

    assert at(d) == spot(text, "field: [code]", "[code]")


def test_choice_field_without_choices_is_reported_at_the_field() -> None:
    text = edit("            choices: [person, company]\n", "")

    d = only(lint(text), "a choice field needs 'choices'")

    assert at(d) == spot(text, "          kind:", "kind")


def test_choice_field_with_empty_choices_is_reported_at_the_choices() -> None:
    text = edit("choices: [person, company]", "choices: []")

    d = only(lint(text), "a choice field needs 'choices'")

    assert at(d) == spot(text, "choices: []", "[]")


def test_field_without_label_is_reported_at_the_field() -> None:
    text = edit("            label: {zh: 手机号, en: Phone}\n", "")

    d = only(lint(text), "field 'phone' needs a label")

    assert at(d) == spot(text, "          phone:", "phone")


def test_label_missing_en_is_reported_at_the_label() -> None:
    text = edit("label: {zh: 资料, en: Details}", "label: {zh: 资料}")

    d = only(lint(text), "label 'en' is missing or empty")

    assert d.message == "state 'details': label 'en' is missing or empty"
    assert at(d) == spot(text, "label: {zh: 资料}", "{")


def test_label_with_empty_en_is_reported_at_the_en_value() -> None:
    text = edit("title: {zh: 注册, en: Sign up}", "title: {zh: 注册, en: ''}")

    d = only(lint(text), "label 'en' is missing or empty")

    assert at(d) == spot(text, "en: ''", "''")


# -- states and transitions ---------------------------------------------------------


def test_transition_from_undefined_state_is_reported_at_the_source() -> None:
    text = edit("      - trigger: expire\n        source: details\n",
                "      - trigger: expire\n        source: [details, detials]\n")

    d = only(lint(text), "from undefined state")

    assert d.message == "transition 'expire' from undefined state 'detials'"
    assert at(d) == spot(text, "detials")


def test_transition_to_undefined_state_is_reported_at_the_dest() -> None:
    text = edit("dest: lapsed", "dest: lapse")

    d = only(lint(text), "to undefined state")

    assert d.message == "transition 'expire' to undefined state 'lapse'"
    assert at(d) == spot(text, "dest: lapse", "lapse")


def test_unreachable_state_is_reported_at_its_key() -> None:
    text = edit("      lapsed:\n", "      orphan:\n        final: true\n      lapsed:\n")

    d = only(lint(text), "unreachable")

    assert d.message == "state 'orphan' is unreachable from 'details'"
    assert at(d) == spot(text, "      orphan:", "orphan")


def test_non_final_state_with_no_way_out_is_reported_at_its_key() -> None:
    text = edit("      lapsed:\n        final: true\n", "      lapsed: {}\n")

    d = only(lint(text), "no way out")

    assert d.message == "state 'lapsed' is not final and has no way out"
    assert at(d) == spot(text, "      lapsed: {}", "lapsed")


def test_final_state_with_outgoing_transitions_is_reported_at_each_transition() -> None:
    text = VALID + (
        "      - {trigger: again, source: done, dest: details}\n"
        "      - {trigger: undo, source: [lapsed, done], dest: details}\n"
    )

    diags = [d for d in lint(text) if "final state 'done'" in d.message]

    assert [(at(d), d.message) for d in diags] == [
        (spot(text, "{trigger: again"),
         "final state 'done' cannot have transitions (trigger 'again')"),
        (spot(text, "{trigger: undo"),
         "final state 'done' cannot have transitions (trigger 'undo')"),
    ]


def test_two_transitions_on_one_trigger_without_separating_guard_are_reported() -> None:
    text = edit('guards: ["!code_ok"]', "guards: [too_many]")

    d = only(lint(text), "no guard separates them")

    assert d.message == ("transitions 0 and 1 both take trigger 'submit' from state "
                         "'details' and no guard separates them (give one 'g' and the "
                         "other '!g')")
    assert at(d) == spot(text, "      - trigger: submit\n        source: details\n"
                               "        dest: details", "trigger")


def test_unguarded_transition_beside_a_guarded_one_on_one_trigger_is_ambiguous() -> None:
    text = edit('        guards: ["!code_ok"]\n', "")

    assert "no guard separates them" in only(lint(text), "both take trigger").message


def test_transitions_separated_by_g_and_not_g_are_not_ambiguous() -> None:
    # VALID has `code_ok` and `!code_ok` on trigger 'submit'; more guards do not hurt.
    text = edit('guards: ["!code_ok"]', 'guards: [too_many, "! code_ok"]')

    assert lint(text) == []


def test_three_transitions_each_pair_separated_are_not_ambiguous() -> None:
    text = edit('guards: ["!code_ok"]', 'guards: ["!code_ok", too_many]') + (
        "      - trigger: submit\n"
        "        source: details\n"
        "        dest: lapsed\n"
        '        guards: ["!code_ok", "!too_many"]\n'
    )

    assert lint(text) == []


def test_same_trigger_from_different_states_is_not_ambiguous() -> None:
    # 'expire' leaves both 'details' and the new 'review'; each state has one.
    text = edit("      done:\n", "      review: {}\n      done:\n") + (
        "      - {trigger: submit, source: details, dest: review, guards: [too_many]}\n"
        "      - {trigger: expire, source: review, dest: done}\n"
    )
    text = edit("guards: [code_ok]", 'guards: [code_ok, "!too_many"]', text)
    text = edit('guards: ["!code_ok"]', 'guards: ["!code_ok", "!too_many"]', text)

    assert lint(text) == []


def test_source_listed_twice_is_reported_once_not_as_ambiguity() -> None:
    text = edit("        source: details\n        dest: lapsed\n",
                "        source: [details, details]\n        dest: lapsed\n")

    diags = lint(text)

    assert [d.message for d in diags] == ["transition 'expire' lists source 'details' twice"]
    assert at(diags[0]) == spot(text, "[details, details]", "details]")


def test_reserved_trigger_start_is_reported() -> None:
    text = VALID.replace("trigger: expire", "trigger: start")

    d = only(lint(text), "reserved")

    assert at(d) == spot(text, "- trigger: start", "start")


def test_transition_without_trigger_is_reported_and_its_other_problems_too() -> None:
    text = edit("      - trigger: expire\n        source: details\n        dest: lapsed\n",
                "      - source: details\n        dest: lapsed\n        actions: [nope]\n"
                "      - trigger: expire\n        source: details\n        dest: lapsed\n")

    diags = lint(text)

    assert {d.message for d in diags} == {
        "a transition needs 'trigger': a lower_snake_case name",
        "unknown action 'nope' (known: check_code, send_code)",
    }
    assert at(only(diags, "needs 'trigger'")) == spot(text, "      - source: details", "source")


def test_bad_transition_does_not_shift_the_positions_of_later_ones() -> None:
    # The whole-flow checks once used the index among *valid* transitions, so every
    # problem after a bad transition pointed at the one before it.
    text = edit("      - trigger: submit\n        source: details\n        dest: done\n",
                "      - {trigger: Bad, source: details, dest: done}\n"
                "      - trigger: submit\n        source: details\n        dest: done\n")
    text = text.replace("fields: [phone, code]", "fields: [phone, cod]")

    d = only(lint(text), "unknown field 'cod'")

    assert at(d) == spot(text, "[phone, cod]", "cod")


def test_bad_list_item_does_not_shift_the_positions_of_later_items() -> None:
    text = edit("guards: [code_ok]", "guards: [[code_ok], nope]")

    diags = lint(text)

    assert at(only(diags, "guards must be a name")) == spot(text, "[[code_ok], nope]",
                                                             "[code_ok]")
    assert at(only(diags, "unknown guard 'nope'")) == spot(text, "[[code_ok], nope]", "nope")


# -- unknown keys -------------------------------------------------------------------


def test_misspelt_key_in_a_transition_is_reported_at_the_key() -> None:
    text = edit("        guards: [code_ok]\n", "        gaurds: [code_ok]\n")

    diags = lint(text)
    d = only(diags, "unknown key 'gaurds'")

    assert d.message.startswith("unknown key 'gaurds' in transition (known: actions, ")
    assert "guards" in d.message
    assert at(d) == spot(text, "gaurds")


@pytest.mark.parametrize(
    ("old", "new", "typo", "where"),
    [
        ("    initial: details\n", "    inital: details\n    initial: details\n",
         "inital", "flow 'signup'"),
        ("        on_enter:", "        on_entre: []\n        on_enter:", "on_entre",
         "state 'details'"),
        ("            secret: true\n", "            secert: true\n", "secert",
         "field 'code'"),
        ("{after: 72h, trigger: expire}", "{after: 72h, trigger: expire, when: now}",
         "when", "timeout"),
        ("error: {id: code_wrong,", "error: {id: code_wrong, feild: code,", "feild",
         "error"),
    ],
)
def test_misspelt_key_is_reported_at_the_key(old: str, new: str, typo: str,
                                              where: str) -> None:
    text = edit(old, new)

    d = only(lint(text), f"unknown key '{typo}'")

    assert f"in {where}" in d.message
    assert at(d) == spot(text, f"{typo}:", typo)


def test_misspelt_top_level_key_is_reported() -> None:
    text = "flowz: {}\n" + VALID

    assert at(only(lint(text), "unknown key 'flowz'")) == (1, 1)


def test_extension_and_description_keys_are_allowed() -> None:
    text = edit("        dest: lapsed\n",
                "        dest: lapsed\n        x-owner: ops\n        description: time out\n")

    assert lint(text) == []


# -- durations and timeouts -------------------------------------------------------


def test_bad_expires_in_is_reported_at_the_value() -> None:
    text = edit("expires_in: 7d", "expires_in: 3 days")

    d = only(lint(text), "duration")

    assert d.message == "a duration such as '72h' or '15m' is expected, not '3 days'"
    assert at(d) == spot(text, "expires_in: 3 days", "3 days")


def test_timeout_after_without_unit_is_reported_at_the_value() -> None:
    text = edit("after: 72h", "after: 72")

    d = only(lint(text), "unit")

    assert d.message == "a duration needs a unit (d, h, m, s): '72s'?"
    assert at(d) == spot(text, "after: 72,", "72")


@pytest.mark.parametrize("value", ["0h", "-1h", "72x", "h", "''", "[72h]", "true"])
def test_other_bad_durations_are_reported_at_the_value(value: str) -> None:
    text = edit("after: 72h", f"after: {value}")

    diags = lint(text)

    assert len(diags) == 1
    assert at(diags[0]) == spot(text, f"after: {value}", value)


def test_timeout_trigger_without_transition_is_reported_at_the_trigger() -> None:
    text = edit("trigger: expire}", "trigger: expiry}")

    d = only(lint(text), "has no transition")

    assert d.message == "timeout trigger 'expiry' has no transition from state 'details'"
    assert at(d) == spot(text, "trigger: expiry", "expiry")


def test_timeout_with_bad_after_and_unknown_trigger_reports_both() -> None:
    text = edit("{after: 72h, trigger: expire}", "{after: 72, trigger: expiry}")

    messages = {d.message for d in lint(text)}

    assert "a duration needs a unit (d, h, m, s): '72s'?" in messages
    assert "timeout trigger 'expiry' has no transition from state 'details'" in messages


# -- initial ------------------------------------------------------------------------


def test_missing_initial_is_reported_at_the_flow() -> None:
    text = edit("    initial: details\n", "")

    d = only(lint(text), "initial")

    assert d.message == "flow 'signup' needs 'initial': the state it starts in"
    assert at(d) == spot(text, "  signup:", "signup")


def test_empty_initial_is_reported_at_the_initial_key() -> None:
    text = edit("    initial: details\n", "    initial:\n")

    d = only(lint(text), "needs 'initial'")

    assert at(d) == spot(text, "    initial:", "initial")


def test_undefined_initial_is_reported_at_the_value() -> None:
    text = edit("initial: details", "initial: detail")

    diags = lint(text)
    d = only(diags, "initial state")

    assert d.message == "initial state 'detail' is not defined"
    assert at(d) == spot(text, "initial: detail", "detail")
    # Without a start, reachability means nothing: no flood of "unreachable".
    assert not [x for x in diags if "unreachable" in x.message]


def test_flow_with_null_body_is_reported_at_its_name() -> None:
    text = "flows:\n  empty:\n"

    d = only(lint(text), "must be a mapping")

    assert at(d) == (2, 3)


def test_flow_whose_states_are_not_a_mapping_is_reported_at_key_and_value() -> None:
    text = "flows:\n  f:\n    initial: a\n    states: [a, b]\n"

    assert [(at(d), d.message) for d in lint(text)] == [
        (spot(text, "initial: a\n", "a\n"), "initial state 'a' is not defined"),
        (spot(text, "states: [a, b]"), "flow 'f' has no states"),
        (spot(text, "[a, b]"), "states must be a mapping"),
    ]


# -- every problem at once ----------------------------------------------------------


def test_every_problem_is_reported_at_once_in_position_order() -> None:
    text = textwrap.dedent("""\
        flows:
          kyc:
            initial: start_here
            expires_in: 3 days
            states:
              start_here:
                fields:
                  id_no: {label: {zh: 证件号}, format: idcard}
              middle: {}
              end: {final: true}
            transitions:
              - trigger: go
                source: start_here
                dest: end
                gaurds: [code_ok]
                actions: [nope]
              - trigger: go
                source: start_here
                dest: nowhere
        """)

    diags = lint(text)

    assert [str(d) for d in diags] == [
        "flows.yaml:4:17: a duration such as '72h' or '15m' is expected, not '3 days'",
        "flows.yaml:8:26: field 'id_no': label 'en' is missing or empty",
        "flows.yaml:8:45: unknown validator 'idcard' (known: phone)",
        "flows.yaml:9:7: state 'middle' is not final and has no way out",
        "flows.yaml:9:7: state 'middle' is unreachable from 'start_here'",
        "flows.yaml:15:9: unknown key 'gaurds' in transition (known: actions, description, "
        "dest, error, fields, guards, label, limits, source, stay, trigger, via)",
        "flows.yaml:16:19: unknown action 'nope' (known: check_code, send_code)",
        "flows.yaml:17:9: transitions 0 and 1 both take trigger 'go' from state "
        "'start_here' and no guard separates them (give one 'g' and the other '!g')",
        "flows.yaml:19:15: transition 'go' to undefined state 'nowhere'",
    ]


def test_each_flow_of_a_file_is_checked() -> None:
    second = VALID.replace("flows:\n  signup:", "  other:").replace("dest: lapsed",
                                                                   "dest: gone")
    text = VALID + second

    d = only(lint(text), "undefined state 'gone'")

    assert at(d) == spot(text, "dest: gone", "gone")


def test_diagnostic_prints_as_file_line_col_message() -> None:
    d = Diagnostic("flows.yaml", 7, 18, "unknown guard 'nope'")

    assert str(d) == "flows.yaml:7:18: unknown guard 'nope'"


def test_load_text_raises_definition_error_listing_every_problem() -> None:
    text = edit("format: phone", "format: phon").replace("actions: [check_code]",
                                                        "actions: [nope_action]")

    with pytest.raises(DefinitionError) as info:
        load_text(text, "flows.yaml", REGISTRY)

    assert info.value.diagnostics == lint(text)
    assert len(info.value.diagnostics) == 3
    assert str(info.value).splitlines() == [str(d) for d in info.value.diagnostics]
    assert isinstance(info.value, ValueError)


def test_load_file_names_the_file_in_diagnostics(tmp_path: Any) -> None:
    path = tmp_path / "flows.yaml"
    path.write_text(edit("format: phone", "format: phon"), encoding="utf-8")

    with pytest.raises(DefinitionError) as info:
        load_file(str(path), REGISTRY)

    [d] = info.value.diagnostics
    assert d.file == str(path)
    assert str(d).startswith(f"{path}:")


def test_load_file_loads_a_valid_file(tmp_path: Any) -> None:
    path = tmp_path / "flows.yaml"
    path.write_text(VALID, encoding="utf-8")

    flows = load_file(str(path), REGISTRY)

    assert flows.source == str(path)
    assert flows.get("signup") is not None
    assert flows.get("nope") is None


def test_load_file_of_a_missing_file_raises_definition_error(tmp_path: Any) -> None:
    path = str(tmp_path / "absent.yaml")

    with pytest.raises(DefinitionError) as info:
        load_file(path, REGISTRY)

    [d] = info.value.diagnostics
    assert (d.file, d.line, d.col) == (path, 1, 1)
    assert d.message.startswith("cannot read")


# -- canonical content and the version -----------------------------------------------


def test_comments_do_not_change_the_version() -> None:
    commented = "# sign-up, reviewed by ops\n" + edit(
        "        dest: lapsed\n", "        dest: lapsed   # three days\n# the end\n")

    assert version(commented) == version(VALID)


def test_quoting_and_anchors_do_not_change_the_version() -> None:
    text = edit("        actions: [check_code]\n        fields:",
                "        actions: &check [check_code]\n        fields:")
    text = edit("        actions: [check_code]\n        error:",
                "        actions: *check\n        error:", text)
    text = edit("dest: lapsed", "dest: 'lapsed'", text)

    assert version(text) == version(VALID)


def test_state_order_is_part_of_the_version() -> None:
    # docs/flows.md: the order of states, fields and transitions changes the version.
    text = edit("      done:\n        final: true\n      lapsed:\n        final: true\n",
                "      lapsed:\n        final: true\n      done:\n        final: true\n")

    flow = load_text(text, "flows.yaml", REGISTRY).flows["signup"]

    assert list(flow.states) == ["details", "lapsed", "done"]
    assert flow.version != version(VALID)


def test_equal_durations_spelt_differently_keep_the_version() -> None:
    text = edit("after: 72h", "after: 3d").replace("expires_in: 7d", "expires_in: 168h")

    assert version(text) == version(VALID)


def test_default_lifetime_spelt_out_keeps_the_version() -> None:
    without = edit("    expires_in: 7d\n", "")

    assert content_version(without) == content_version(edit("expires_in: 7d", "expires_in: 1d"))
    assert content_version(without) == content_version(
        edit("expires_in: 7d", "expires_in: 23h60m"))


def test_single_name_and_one_item_list_keep_the_version() -> None:
    text = edit("guards: [code_ok]", "guards: code_ok").replace(
        "on_enter: [send_code]", "on_enter: send_code")

    assert version(text) == version(VALID)


def test_description_does_not_change_the_version() -> None:
    text = edit("        dest: lapsed\n", "        dest: lapsed\n        description: why\n")

    assert version(text) == version(VALID)


def test_changing_a_transition_dest_changes_the_version() -> None:
    text = edit("        dest: details\n", "        dest: lapsed\n")

    assert content_version(text) != version(VALID)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("after: 72h", "after: 71h"),
        ('guards: ["!code_ok"]', 'guards: ["!code_ok", "!too_many"]'),
        ("required: true", "required: false"),
        ("en: The code is wrong", "en: Wrong code"),
        ("fields: [phone, code]", "fields: [code]"),
    ],
)
def test_changing_what_a_flow_does_or_shows_changes_the_version(old: str, new: str) -> None:
    assert version(edit(old, new)) != version(VALID)


def test_field_order_is_part_of_the_version() -> None:
    phone = ("          phone:\n            label: {zh: 手机号, en: Phone}\n"
             "            format: phone\n            required: true\n")
    text = edit(phone, "").replace("            locked: too_many\n",
                                   "            locked: too_many\n" + phone)

    flow = load_text(text, "flows.yaml", REGISTRY).flows["signup"]

    assert [f.name for f in flow.states["details"].fields] == ["kind", "code", "phone"]
    assert flow.version != version(VALID)


def test_version_is_the_hash_of_the_canonical_content() -> None:
    content, _ = check_text(VALID, "flows.yaml", REGISTRY)

    flow = build_flow(content["signup"])

    assert flow.version == content_hash(content["signup"])
    assert flow.content == content["signup"]


def test_canonical_content_round_trips_through_yaml_and_json() -> None:
    content = check_text(VALID, "flows.yaml", REGISTRY)[0]["signup"]

    via_yaml = yaml.safe_load(yaml.safe_dump(content, allow_unicode=True))
    via_json = json.loads(json.dumps(content))

    assert via_yaml == content
    assert content_hash(via_yaml) == content_hash(via_json) == content_hash(content)


# -- properties over generated flows ----------------------------------------------------

NAMES = st.text(alphabet="abcdefgh", min_size=1, max_size=6)
UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


@st.composite
def spellings(draw: st.DrawFn, seconds: int) -> str:
    """Draw one of the many ways to write ``seconds`` as a duration."""
    out = []
    rest = seconds
    for unit, size in UNITS.items():
        n = rest // size if unit == "s" else draw(st.integers(0, rest // size))
        rest -= n * size
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


@st.composite
def flows(draw: st.DrawFn) -> dict[str, Any]:
    """Draw a small valid flow as the data an analyst would write.

    The states form a chain to a final state, so each is reachable and has a way out;
    extra transitions use a trigger of their own per source, so none is ambiguous.
    """
    names = draw(st.lists(NAMES, min_size=2, max_size=6, unique=True))
    chain, final = names[:-1], names[-1]
    states: dict[str, Any] = {
        s: {"label": {"zh": f"步骤{s}", "en": s.title()}} for s in chain
    }
    states[final] = {"final": True}
    transitions = [{"trigger": "next", "source": a, "dest": b}
                   for a, b in itertools.pairwise(names)]
    for k in range(draw(st.integers(0, 4))):
        source = draw(st.sampled_from(chain))
        dest = draw(st.sampled_from(names))
        t: dict[str, Any] = {"trigger": f"jump_{k}", "source": source, "dest": dest}
        if draw(st.booleans()):
            t["guards"] = [draw(st.sampled_from(["code_ok", "!code_ok", "too_many"]))]
        transitions.append(t)
    if draw(st.booleans()):
        states[chain[0]]["timeout"] = {"after": "2h", "trigger": "next"}
        states[chain[0]]["fields"] = {"code": {"label": {"zh": "码", "en": "Code"},
                                               "secret": True}}
    return {"flows": {"signup": {"initial": names[0], "expires_in": "1d",
                                 "states": states, "transitions": transitions}}}


@st.composite
def shuffled(draw: st.DrawFn, value: Any, path: tuple[str, ...] = ()) -> Any:
    """Draw ``value`` with the keys of its mappings reordered.

    The order of states and of a state's fields is meaningful (the form's order) and
    part of the version (docs/flows.md), so those two mappings keep theirs.
    """
    if isinstance(value, list):
        return [draw(shuffled(v, path)) for v in value]
    if not isinstance(value, dict):
        return value
    keys = list(value)
    if path[-1:] not in (("states",), ("fields",)):
        keys = draw(st.permutations(keys))
    return {k: draw(shuffled(value[k], (*path, k))) for k in keys}


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.data())
def test_generated_flows_lint_clean_and_keep_their_version_when_keys_are_reordered(
        data: st.DataObject) -> None:
    flow = data.draw(flows())
    reordered = data.draw(shuffled(flow))

    assert lint(dump(flow)) == []
    assert version(dump(reordered)) == version(dump(flow))


@FAST
@given(st.data())
def test_valid_file_keeps_its_version_when_keys_are_reordered(data: st.DataObject) -> None:
    reordered = data.draw(shuffled(yaml.safe_load(VALID)))

    assert version(dump(reordered)) == version(VALID)


@FAST
@given(st.data(), st.integers(1, 30 * 86400))
def test_equal_durations_keep_the_version_however_they_are_spelt(
        data: st.DataObject, seconds: int) -> None:
    flow = data.draw(flows())
    respelt = copy.deepcopy(flow)
    flow["flows"]["signup"]["expires_in"] = data.draw(spellings(seconds))
    respelt["flows"]["signup"]["expires_in"] = data.draw(spellings(seconds))

    assert content_version(dump(respelt)) == content_version(dump(flow))


@FAST
@given(st.data())
def test_changing_one_dest_changes_the_version(data: st.DataObject) -> None:
    flow = data.draw(flows())
    body = flow["flows"]["signup"]
    k = data.draw(st.integers(0, len(body["transitions"]) - 1))
    old = body["transitions"][k]["dest"]
    new = data.draw(st.sampled_from(sorted(set(body["states"]) - {old})))
    changed = copy.deepcopy(flow)
    changed["flows"]["signup"]["transitions"][k]["dest"] = new

    # The changed flow may no longer lint (a state left unreachable); its canonical
    # content is built all the same, and its hash is what the version would be.
    before = check_text(dump(flow), "flows.yaml", REGISTRY)[0]["signup"]
    after = check_text(dump(changed), "flows.yaml", REGISTRY)[0]["signup"]

    assert content_hash(after) != content_hash(before)


@FAST
@given(flows())
def test_canonical_content_of_generated_flows_round_trips_through_yaml(
        flow: dict[str, Any]) -> None:
    content = check_text(dump(flow), "flows.yaml", REGISTRY)[0]["signup"]

    again = yaml.safe_load(yaml.safe_dump(content, allow_unicode=True))

    assert again == content
    assert build_flow(again).version == build_flow(content).version


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=8,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_value_anywhere_gives_diagnostics_inside_the_file_never_an_exception(
        data: st.DataObject) -> None:
    doc = yaml.safe_load(VALID)
    where = data.draw(st.sampled_from(paths(doc)[1:]))
    parent = doc
    for part in where[:-1]:
        parent = parent[part]
    parent[where[-1]] = data.draw(JUNK)
    text = dump(doc)

    diags = lint(text)

    n_lines = text.count("\n") + 1
    for d in diags:
        assert 1 <= d.line <= n_lines
        assert d.col >= 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_diagnostics_never_an_exception(text: str) -> None:
    content, diags = check_text(text, "flows.yaml", REGISTRY)

    assert isinstance(content, dict)
    assert all(isinstance(d, Diagnostic) for d in diags)


# -- start limits -----------------------------------------------------------------------

def test_start_limits_are_counted_by_who_starts_and_checked_like_limits() -> None:
    text = edit("    expires_in: 7d\n", """\
    expires_in: 7d
    start_limits:
      - {name: starts, by: [client, flow], max: 5, per: 1m}
      - {name: by_phone, by: [instance, field:phone], max: 1, per: 1m}
      - {name: starts, by: [actor], max: 0, per: 1m}
""")
    assert [(d.line, d.col, d.message) for d in lint(text)] == [
        (7, 7, "limit 'starts' is declared twice"),
        (8, 31, "starting a flow is counted by client, actor, flow, not 'instance'"),
        (8, 41, "starting a flow is counted by client, actor, flow, not 'field:phone'"),
        (9, 42, "a limit needs 'max': a positive whole number"),
    ]


def test_start_limits_load_and_change_the_version_only_when_there_are_some() -> None:
    limited = edit("    expires_in: 7d\n", """\
    expires_in: 7d
    start_limits: [{name: starts, by: [client], max: 5, per: 10m}]
""")
    flow = load_text(limited, "flows.yaml", REGISTRY).flows["signup"]
    (limit,) = flow.start_limits
    assert (limit.name, limit.by, limit.max, limit.per) == ("starts", ("client",), 5,
                                                            timedelta(minutes=10))
    assert version(limited) != version(VALID)
    # An empty list is no limit: the version stays what it was without the key.
    assert version(edit("    expires_in: 7d\n", "    expires_in: 7d\n    start_limits: []\n")) \
        == version(VALID)
