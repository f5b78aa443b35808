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
