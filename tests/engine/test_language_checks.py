"""Lint checks added with the platform's procedures: callers, limits, sensitive fields."""

from __future__ import annotations

from engine import Registry, check_text
from engine.loader import build_flow

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


# -- a transition that stays where it is, from several states ----------------------------

STAY = """\
flows:
  f:
    initial: old
    states:
      old:
        fields: {code: {type: string, label: {zh: 验证码, en: Code}}}
      new:
        on_enter: [hello]
        fields: {code: {type: string, label: {zh: 验证码, en: Code}}}
      done: {final: true}
    transitions:
      - trigger: send_code
        source: [old, new]
        stay: true
        fields: []
        error: {id: sent, zh: 已发送, en: Sent}
      - {trigger: next, source: old, dest: new}
      - {trigger: next, source: new, dest: done}
"""


def stay_registry() -> Registry:
    registry = Registry()
    registry.action("hello")(lambda a: None)
    return registry


def stay_lint(text: str) -> list[str]:
    return [d.message for d in check_text(text, "f.yaml", stay_registry())[1]]


def test_a_transition_from_several_states_may_stay_in_each() -> None:
    assert stay_lint(STAY) == []
    content = check_text(STAY, "f.yaml", stay_registry())[0]["f"]
    assert content["transitions"][0]["dest"] is None


def test_a_stay_says_it_stays_or_where_it_goes_never_both_nor_neither() -> None:
    both = STAY.replace("        stay: true\n", "        stay: true\n        dest: done\n")
    assert stay_lint(both) == ["transition 'send_code' has 'dest' and 'stay: true': it leads "
                               "to 'dest' or stays where it is, not both"]
    neither = STAY.replace("        stay: true\n", "")
    assert stay_lint(neither) == ["transition 'send_code' needs 'dest' (or 'stay: true' to "
                                  "stay where it is)"]
    assert stay_lint(STAY.replace("stay: true", "stay: yes please")) == [
        "transition 'send_code' needs 'dest' (or 'stay: true' to stay where it is)",
        "stay must be true or false"]


def test_a_stay_leads_nowhere_new() -> None:
    # Only a stay leaves `new`: it is a dead end, and `done` cannot be reached.
    text = STAY.replace("      - {trigger: next, source: new, dest: done}\n", "")
    assert stay_lint(text) == ["state 'new' is not final and every transition from it stays "
                               "in it",
                               "state 'done' is unreachable from 'old'"]


def test_a_stays_error_shows_under_a_field_of_each_state_it_stays_in() -> None:
    text = STAY.replace("error: {id: sent, zh:", "error: {id: sent, field: code, zh:")
    assert stay_lint(text) == []
    text = text.replace("      new:\n        on_enter: [hello]\n        fields: {code:",
                        "      new:\n        on_enter: [hello]\n        fields: {otp:")
    assert stay_lint(text) == ["unknown field 'code' in error: state 'new', where it would "
                               "show, has no such field"]


def test_the_machine_decides_a_stay_as_a_self_loop_of_the_state_it_fires_from() -> None:
    from engine import CompiledFlow, GuardInput, load_text

    flow = load_text(STAY, registry=stay_registry()).flows["f"]
    compiled = CompiledFlow(flow, stay_registry())
    for state in ("old", "new"):
        taken = compiled.decide(GuardInput(state, "send_code", {}, {}, {}))
        assert taken is not None
        assert (taken.dest, taken.target("elsewhere")) == (state, state)
    assert flow.transitions[0].target("new") == "new"


# -- named limit sets and shared errors ---------------------------------------------------

SETS = """\
errors:
  too_soon: {zh: 请稍后再试, en: Wait a minute}
limit_sets:
  codes:
    - {name: code_resend, by: [field:phone, flow], max: 1, per: 60s, error: too_soon}
    - {name: code_daily, by: field:phone, max: 10, per: 1d, error: {id: too_soon}}
  starts:
    - {name: starts, by: client, max: 600, per: 10m}
flows:
  f:
    start_limits: starts
    initial: a
    states:
      a:
        fields:
          phone: {type: string, label: {zh: 电话, en: Phone}}
          note: {type: string, label: {zh: 备注, en: Note}}
      b: {final: true}
    transitions:
      - trigger: send
        source: a
        dest: a
        fields: [phone]
        limits: [codes, {name: code_client, by: client, max: 50, per: 1d}]
        error: {id: too_soon, field: phone}
      - {trigger: go, source: a, dest: b}
"""

INLINE = """\
flows:
  f:
    start_limits:
      - {name: starts, by: client, max: 600, per: 10m}
    initial: a
    states:
      a:
        fields:
          phone: {type: string, label: {zh: 电话, en: Phone}}
          note: {type: string, label: {zh: 备注, en: Note}}
      b: {final: true}
    transitions:
      - trigger: send
        source: a
        dest: a
        fields: [phone]
        limits:
          - name: code_resend
            by: [field:phone, flow]
            max: 1
            per: 60s
            error: {id: too_soon, zh: 请稍后再试, en: Wait a minute}
          - name: code_daily
            by: field:phone
            max: 10
            per: 1d
            error: {id: too_soon, zh: 请稍后再试, en: Wait a minute}
          - {name: code_client, by: client, max: 50, per: 1d}
        error: {id: too_soon, field: phone, zh: 请稍后再试, en: Wait a minute}
      - {trigger: go, source: a, dest: b}
"""


def sets_lint(text: str) -> list[tuple[int, str]]:
    return [(d.line, d.message) for d in check_text(text, "f.yaml", Registry())[1]]


def test_named_limit_sets_and_errors_are_the_limits_and_errors_written_out() -> None:
    from engine import load_text

    assert sets_lint(SETS) == []
    named = load_text(SETS, registry=Registry()).flows["f"]
    inline = load_text(INLINE, registry=Registry()).flows["f"]
    assert named.content == inline.content
    assert named.version == inline.version
    assert [lim.name for lim in named.transitions[0].limits] == [
        "code_resend", "code_daily", "code_client"]


def test_an_unknown_or_unused_set_or_error_is_reported_where_it_is_named() -> None:
    text = SETS.replace("limits: [codes,", "limits: [codez,").replace(
        "error: {id: too_soon, field: phone}", "error: {id: too_late, field: phone}")
    assert sets_lint(text) == [
        (4, "limit set 'codes' is declared and no transition or flow uses it"),
        (24, "unknown limit set 'codez' (known: codes, starts)"),
        (25, "unknown error 'too_late': declare it in 'errors', or give its 'zh' and 'en' "
             "here"),
    ]


def test_a_set_counts_only_by_fields_the_state_has_and_the_trigger_takes() -> None:
    text = SETS.replace("        fields: [phone]\n", "        fields: [note]\n")
    assert sets_lint(text) == [
        (24, "limit set 'codes' counts by field 'phone', which trigger 'send' does not take "
             "(add it to 'fields')")]
    text = SETS.replace("          phone: {type: string, label: {zh: 电话, en: Phone}}\n",
                        "").replace("        fields: [phone]\n", "")
    assert (22, "limit set 'codes' counts by field 'phone': state 'a' has no such "
                "field") in sets_lint(text)
    text = SETS.replace("start_limits: starts", "start_limits: [starts, codes]")
    assert sets_lint(text) == [
        (11, "limit set 'codes' counts by 'field:phone': starting a flow is counted by "
             "client, actor, flow")]


def test_an_unused_error_is_reported_at_its_name() -> None:
    text = SETS.replace("errors:\n", "errors:\n  spare: {zh: 备用, en: Spare}\n")
    assert sets_lint(text) == [
        (2, "error 'spare' is declared in 'errors' and no transition or limit uses it")]


def test_a_set_is_limits_only_and_its_own_limits_are_checked_once() -> None:
    text = SETS.replace("  starts:\n    - {name: starts, by: client, max: 600, per: 10m}",
                        "  starts:\n    - codes\n    - {name: starts, by: user, max: 600, "
                        "per: 10m}")
    assert sets_lint(text) == [
        (8, "a limit set lists limits, not other limit sets"),
        (9, "limit counts by instance, client, actor, flow or field:<name>, not 'user'"),
    ]


OFFERED = """\
flows:
  f:
    access: {access}
    offered_to: {offered_to}
    initial: a
    states:
      a: {{final: true}}
"""


def offered_lint(access: str, offered_to: str) -> list[str]:
    registry = Registry()
    registry.audience("personal", "Persons.")
    registry.audience("organisation:unverified", "Organisations not verified yet.")
    text = OFFERED.format(access=access, offered_to=offered_to)
    return [d.message for d in check_text(text, "f.yaml", registry)[1]]


def test_a_flow_is_offered_to_registered_audiences_once_and_only_if_accounts_start_it() -> None:
    assert offered_lint("account", "[personal, 'organisation:unverified']") == []
    assert offered_lint("account", "[owner]") == [
        "unknown audience 'owner' (known: organisation:unverified, personal)"]
    assert offered_lint("account", "[personal, personal]") == [
        "audience 'personal' is listed twice"]
    assert offered_lint("account", "[]") == ["offered_to must be a non-empty list of audiences"]
    assert offered_lint("account", "personal") == [
        "offered_to must be a non-empty list of audiences"]
    assert offered_lint("anyone", "[personal]") == [
        "offered_to is for flows with access: account (the personal center of a signed-in "
        "account offers them)"]


def test_offering_a_flow_is_part_of_its_version_and_absent_leaves_it_as_it_was() -> None:
    registry = Registry()
    registry.audience("personal", "Persons.")
    registry.audience("supervisor", "Supervisors.")
    plain = OFFERED.replace("    offered_to: {offered_to}\n", "").format(access="account")
    versions = [build_flow(check_text(text, "f.yaml", registry)[0]["f"]).version for text in (
        plain, OFFERED.format(access="account", offered_to="[personal]"),
        OFFERED.format(access="account", offered_to="[personal, supervisor]"))]
    assert len(set(versions)) == 3
    flow = build_flow(check_text(OFFERED.format(access="account",
                                                offered_to="[supervisor, personal]"),
                                 "f.yaml", registry)[0]["f"])
    assert flow.offered_to == ("supervisor", "personal")
