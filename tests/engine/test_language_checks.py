"""Lint checks added with the platform's procedures: callers, limits, sensitive fields."""

from __future__ import annotations

from engine import Registry, check_text

BASE = """\
flows:
  f:
    initial: a
    states:
      a:
        fields:
          phone: {type: string, label: {zh: 电话, en: Phone}}
          note: {type: string, label: {zh: 备注, en: Note}}
      b: {final: true}
    transitions:
{transitions}
"""


def lint(transitions: str) -> list[str]:
    registry = Registry()
    registry.guard("g")(lambda g: True)
    return [d.message for d in check_text(BASE.replace("{transitions}", transitions), "f.yaml",
                                          registry)[1]]


def test_a_trigger_is_fired_by_one_kind_of_caller() -> None:
    messages = lint("""\
      - {trigger: go, source: a, dest: b, guards: [g]}
      - {trigger: go, source: a, dest: a, guards: ["!g"], via: callback}
""")
    assert messages == ["trigger 'go' from state 'a' is 'via: user' in one transition and "
                        "'via: callback' in another"]


def test_a_limit_counts_only_by_fields_its_trigger_takes() -> None:
    messages = lint("""\
      - trigger: go
        source: a
        dest: b
        fields: [note]
        limits: [{name: l, by: [field:phone], max: 1, per: 1m}]
""")
    assert messages == ["limit counts by field 'phone', which trigger 'go' does not take "
                        "(add it to 'fields')"]


def test_a_field_is_not_both_secret_and_sensitive() -> None:
    text = BASE.replace("{transitions}", "      - {trigger: go, source: a, dest: b}").replace(
        "phone: {type: string,", "phone: {type: string, secret: true, sensitive: true,")
    messages = [d.message for d in check_text(text, "f.yaml", Registry())[1]]
    assert messages == ["a field is secret (never recorded) or sensitive (recorded sealed), "
                        "not both"]


def test_context_paths_name_fields_and_actions_of_the_flow() -> None:
    registry = Registry()
    registry.action("lookup")(lambda a: None)
    text = """\
flows:
  f:
    initial: a
    states:
      a:
        on_enter: [lookup]
        show: {org: facts.lookup.name, gone: facts.lokup.name, when: facts.timer.due_at}
        fields:
          phone: {type: string, label: {zh: 电话, en: Phone}}
          copy: {type: string, value_from: values.phnoe, label: {zh: 副本, en: Copy}}
          pick:
            type: choice
            choices_from: facts.nothing.options
            label: {zh: 选择, en: Pick}
      b: {final: true, show: {phone: values.phone}}
    transitions:
      - {trigger: go, source: a, dest: b}
"""
    found = [(d.line, d.message) for d in check_text(text, "f.yaml", registry)[1]]
    assert found == [
        (7, "'facts.lokup.name' reads what 'lokup' returned, but no transition or on_enter "
            "of this flow runs it"),
        (10, "'values.phnoe' reads field 'phnoe', which no state of this flow has"),
        (13, "'facts.nothing.options' reads what 'nothing' returned, but no transition or "
             "on_enter of this flow runs it"),
    ]
