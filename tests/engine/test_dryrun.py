"""Dry runs: a scripted walk through a flow, decided as live steps are, nothing stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine import CompiledFlow, Invalid, Registry, load_file, load_text
from engine.dryrun import ScriptError, describe_step, dry_run, parse_script
from tests.sample_flows import SAMPLE_YAML, sample_registry
from web.cli import main as flowctl

ROOT = Path(__file__).resolve().parents[2]
DETAILS = {"name": "Ada", "password": "pw-Secret-1", "agree": True}


def run(script: str) -> Any:
    registry = sample_registry()
    flow = load_text(SAMPLE_YAML, registry=registry).flows["signup"]
    return dry_run(CompiledFlow(flow, registry), parse_script(script))


def test_a_script_walks_the_flow_as_live_steps_would() -> None:
    result = run("""
steps:
  - {trigger: submit, input: {name: Ada, password: pw-Secret-1, agree: true},
     facts: {note_password: {length: 11}, send_code: {sent: true}}, expect: code}
  - {trigger: confirm, input: {code: "000000"}, facts: {check_code: {ok: false}}}
  - {trigger: confirm, input: {code: "123456"}, facts: {check_code: {ok: true}},
     expect: done}
""")
    assert result.ok
    assert [(s.from_state, s.to_state, s.outcome) for s in result.steps] == [
        ("details", "code", "moved"), ("code", "code", "stayed"), ("code", "done", "moved")]
    assert result.steps[1].detail["error"]["error_id"] == "code_wrong"
    assert result.state == "done"
    assert result.final
    # Secrets are dropped as they are from history; facts are folded in.
    assert "password" not in result.context["values"]
    assert result.context["facts"]["check_code"] == {"ok": True}
    assert describe_step(result.steps[0]).startswith("ok  1. submit: details -> code")


def test_the_guards_see_the_attempts_like_a_live_step() -> None:
    wrong = '  - {trigger: confirm, input: {code: "0"}, facts: {check_code: {ok: false}}}\n'
    result = run(f"""
steps:
  - {{trigger: submit, input: {{name: Ada, password: pw, agree: true}}}}
{wrong}{wrong}{wrong}""")
    assert [s.to_state for s in result.steps] == ["code", "code", "code", "details"]
    assert result.steps[-1].detail["error"]["error_id"] == "code_dead"


def test_a_step_that_is_refused_stops_the_run_unless_expected() -> None:
    result = run("""
steps:
  - {trigger: confirm, input: {code: "1"}}
  - {trigger: submit, input: {name: Ada, password: pw, agree: true}}
""")
    assert not result.ok
    assert len(result.steps) == 1
    step = result.steps[0]
    assert (step.outcome, step.to_state, step.detail["available"]) == (
        "unavailable", "details", ["submit"])

    result = run("""
steps:
  - {trigger: submit, input: {name: bad, agree: true}, expect: invalid}
  - {trigger: submit, input: {name: Ada, password: pw, agree: true}, expect: code}
""")
    assert result.ok
    errors = {e["field"]: e["error_id"] for e in result.steps[0].detail["errors"]}
    assert errors == {"name": "name_bad", "password": "required"}
    assert result.state == "code"


def test_missing_facts_are_named_and_refusals_name_the_failed_guards() -> None:
    result = run("""
steps:
  - {trigger: submit, input: {name: Ada, password: pw, agree: true}}
  - {trigger: confirm, input: {code: "1"}, expect: refused}
""")
    # No facts: check_code returned nothing, so code_ok fails and !code_ok holds.
    assert result.steps[0].detail["actions_without_facts"] == ["note_password", "send_code"]
    assert not result.ok
    assert result.steps[1].outcome == "stayed"
    assert "expected refused" in describe_step(result.steps[1])


def test_the_clock_and_expected_states() -> None:
    result = run("""
steps:
  - {trigger: submit, input: {name: Ada, password: pw, agree: true}}
  - {trigger: expire, expect: lapsed}
  - {trigger: back, expect: unavailable}
""")
    assert result.ok
    assert result.steps[1].to_state == "lapsed"
    assert result.steps[2].detail["reason"] == "final"


@pytest.mark.parametrize(("script", "message"), [
    ("steps: []", "non-empty list"),
    ("[1, 2]", "a mapping"),
    ("steps:\n  - {input: {}}", "step 1: 'trigger' is required"),
    ("steps:\n  - {trigger: submit, inputs: {}}", "unknown key(s): inputs"),
    ("steps:\n  - {trigger: submit, facts: [1]}", "'facts' must be a mapping"),
    ("flow: [x]\nsteps: [{trigger: a}]", "'flow' must be"),
    ("steps: [{trigger: a}\n", "not valid YAML"),
])
def test_a_wrong_script_says_what_is_wrong(script: str, message: str) -> None:
    with pytest.raises(ScriptError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_script(script)


def test_an_unknown_expected_state_or_prefill_field_is_refused_before_running() -> None:
    with pytest.raises(ScriptError, match="expect 'nowhere'"):
        run("steps:\n  - {trigger: submit, expect: nowhere}")
    with pytest.raises(ScriptError, match="no field"):
        run("prefill: {nick: x}\nsteps:\n  - {trigger: submit}")


@pytest.mark.usefixtures("keep_logging")
def test_the_documented_example_runs_on_the_real_flows(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)
    example = ROOT / "docs" / "examples" / "deposit_expires.dry.yaml"
    assert flowctl(["dry-run", str(example)]) == 0
    out = capsys.readouterr().out
    assert "ok  4. expire: awaiting_deposit -> choose_method  error deposit_expired" in out
    assert out.rstrip().endswith("ok: ends in choose_method")
    # The same script, told to expect something else, fails with exit 1.
    changed = example.read_text(encoding="utf-8").replace(
        "expect: choose_method", "expect: verified")
    other = tmp_path / "other.dry.yaml"
    other.write_text(changed, encoding="utf-8")
    capsys.readouterr()
    assert flowctl(["dry-run", str(other), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["steps"][-1]["expected"] == "verified"
    # A script that names no flow, or a missing one, is a usage error (exit 2).
    (tmp_path / "none.yaml").write_text("steps: [{trigger: go}]\n", encoding="utf-8")
    assert flowctl(["dry-run", str(tmp_path / "none.yaml")]) == 2
    assert flowctl(["dry-run", str(tmp_path / "none.yaml"), "--flow", "nope"]) == 2
    # Every example in docs/examples goes as its script expects; with several scripts the
    # exit code is the worst of them.
    examples = sorted(str(p) for p in (ROOT / "docs" / "examples").glob("*.dry.yaml"))
    assert len(examples) >= 3
    capsys.readouterr()
    assert flowctl(["dry-run", *examples]) == 0
    out = capsys.readouterr().out
    assert out.count("== ") == len(examples)
    assert "NOT as expected" not in out
    assert flowctl(["dry-run", *examples, str(other)]) == 1
    assert flowctl(["dry-run", str(other), str(tmp_path / "missing.yaml")]) == 2


def test_dated_validators_see_the_scripts_now_or_the_callers() -> None:
    registry = Registry()
    seen: list[datetime] = []

    @registry.validator("not_future", dated=True)
    def not_future(value: Any, *, now: datetime) -> Any:
        seen.append(now)
        if value > now.date().isoformat():
            raise Invalid("in_future", "日期晚于今天", "The date is after today")
        return value

    text = """\
flows:
  f:
    initial: a
    states:
      a:
        fields:
          day: {type: string, format: not_future, label: {zh: 日期, en: Day}}
      b: {final: true}
    transitions:
      - {trigger: go, source: a, dest: b}
"""
    flow = load_text(text, registry=registry).flows["f"]
    compiled = CompiledFlow(flow, registry)
    step = "steps:\n  - {trigger: go, input: {day: '2026-03-02'}, expect: %s}\n"
    pinned = dry_run(compiled, parse_script("now: 2026-03-01T23:30:00+08:00\n"
                                            + step % "invalid"))
    assert pinned.ok
    assert seen[-1] == datetime(2026, 3, 1, 15, 30, tzinfo=UTC)
    later = dry_run(compiled, parse_script(step % "b"), datetime(2026, 3, 2, 12, tzinfo=UTC))
    assert later.ok
    with pytest.raises(ScriptError, match="'now' must be an ISO date and time"):
        parse_script("now: yesterday\n" + step % "b")


def test_the_guide_shows_the_example_as_it_is() -> None:
    guide = (ROOT / "docs" / "flows.md").read_text(encoding="utf-8")
    example = ROOT / "docs" / "examples" / "deposit_expires.dry.yaml"
    shown = guide.split("# docs/examples/deposit_expires.dry.yaml\n", 1)[1].split("```", 1)[0]
    script = "".join(line for line in example.read_text(encoding="utf-8").splitlines(True)
                     if not line.startswith("#"))
    assert shown == script


def test_a_script_can_say_that_an_action_refuses() -> None:
    """Every path, not only the happy one: an action's refusal is a 422, nothing stored."""
    result = run("""
steps:
  - {trigger: submit, input: {name: Ada, password: pw, agree: true}}
  - {trigger: confirm, input: {code: "1"},
     refuse: {check_code: {error: code_expired, field: code}}, expect: invalid}
  - {trigger: confirm, input: {code: "123456"}, facts: {check_code: {ok: true}},
     expect: done}
""")
    assert result.ok
    refused = result.steps[1]
    assert (refused.outcome, refused.to_state) == ("invalid", "code")
    assert refused.detail["errors"][0]["error_id"] == "code_expired"
    assert refused.detail["errors"][0]["field"] == "code"
    assert "invalid input (code: code_expired)" in describe_step(refused)
    # The refused step counted no attempt: the next one is the first.
    assert result.context["attempts"] == 0


def test_the_clocks_trigger_takes_no_input_in_a_script() -> None:
    with pytest.raises(ScriptError, match="the clock's"):
        run("""
steps:
  - {trigger: submit, input: {name: Ada, password: pw, agree: true}}
  - {trigger: expire, input: {code: "1"}}
""")


def test_a_stay_from_several_states_is_dry_run_as_a_step_that_stays() -> None:
    from tests.engine.test_language_checks import STAY

    registry = Registry()
    registry.action("hello")(lambda a: None)
    compiled = CompiledFlow(load_text(STAY, registry=registry).flows["f"], registry)
    run = dry_run(compiled, {"steps": [
        {"trigger": "send_code", "expect": "old"},
        {"trigger": "next", "expect": "new"},
        {"trigger": "send_code", "expect": "new"},
        {"trigger": "next", "expect": "done"}]})
    assert run.ok
    assert [s.outcome for s in run.steps] == ["stayed", "moved", "stayed", "moved"]
    assert run.steps[2].detail["error"]["error_id"] == "sent"


def test_a_declared_refusal_comes_with_its_field_and_messages() -> None:
    """An action that declares its refusals refuses only with those, under the field its
    parameters name, in its own words."""
    registry = Registry().load_modules(["flows"])
    flow = load_text("""
flows:
  bind:
    initial: new_phone
    states:
      new_phone:
        fields:
          new_mobile: {type: string, format: mobile, sensitive: true, max_length: 20,
                       label: {zh: 新手机号码, en: New mobile number}}
      done: {final: true}
    transitions:
      - trigger: send_code
        source: new_phone
        stay: true
        actions: [{send_sms_code: {phone: new_mobile}}]
      - trigger: submit
        source: new_phone
        dest: done
""", registry=registry).flows["bind"]
    compiled = CompiledFlow(flow, registry)
    step = {"trigger": "send_code", "input": {"new_mobile": "13800138000"},
            "expect": "invalid"}
    result = dry_run(compiled, parse_script(json.dumps({"steps": [
        {**step, "refuse": {"send_sms_code": "sms_code_dead"}}]})))
    refused = result.steps[0]
    assert refused.ok, describe_step(refused)
    assert refused.detail["errors"][0]["field"] == "new_mobile"
    assert refused.detail["errors"][0]["zh"]
    with pytest.raises(ScriptError, match="does not refuse with"):
        dry_run(compiled, parse_script(json.dumps({"steps": [
            {**step, "refuse": {"send_sms_code": "no_such_error"}}]})))


def _real(script: str) -> Any:
    """A script run on the project's flows.yaml, with the flows package's names."""
    registry = Registry().load_modules(["flows"])
    flows = load_file(str(ROOT / "flows.yaml"), registry)
    parsed = parse_script(script)
    return dry_run(CompiledFlow(flows.flows[parsed["flow"]], registry), parsed)


HAS_PHONE = """\
flow: change_phone
effects: {load_account: {has_phone: true, mobile: "13800138000"}}
steps:
  - {trigger: next, expect: verify_current}
"""


def test_a_declared_refusal_goes_under_the_field_its_parameter_names() -> None:
    result = _real(HAS_PHONE + """\
  - {trigger: next, input: {sms_code: "1"}, refuse: {current_number_proven: sms_code_wrong},
     expect: invalid}
  - {trigger: next, input: {sms_code: "1"}, expect: verify_new}
  - {trigger: submit, input: {mobile: "13912345678", sms_code: "1"},
     refuse: {check_phone_free: mobile_registered}, expect: invalid}
""")
    assert result.ok
    errors = [result.steps[n].detail["errors"][0] for n in (1, 3)]
    assert [(e["field"], e["error_id"]) for e in errors] == [
        ("sms_code", "sms_code_wrong"), ("mobile", "mobile_registered")]
    assert errors[1]["en"] == "This mobile number is already registered"


def test_a_refusal_the_action_does_not_declare_is_a_wrong_script() -> None:
    with pytest.raises(ScriptError, match=r"step 2: 'current_number_proven' \(check_sms_code\) "
                                          r"does not refuse with 'sms_code_wrng' \(it refuses "
                                          r"with: mobile_invalid, sms_code_wrong"):
        _real(HAS_PHONE + """\
  - {trigger: next, input: {sms_code: "1"}, refuse: {current_number_proven: sms_code_wrng}}
""")


def test_the_initial_states_effects_come_from_the_script() -> None:
    """What the initial state's on_enter found at the start decides the first step."""
    without = _real(HAS_PHONE.replace("has_phone: true", "has_phone: false"))
    assert (without.ok, without.state) == (False, "verify_new")
    with pytest.raises(ScriptError, match=r"effects: load_acount not run on entering "
                                          r"'overview' \(its on_enter: load_account\)"):
        _real(HAS_PHONE.replace("{load_account:", "{load_acount:"))
    with pytest.raises(ScriptError, match="'effects' must be a mapping"):
        parse_script("effects: [1]\nsteps: [{trigger: go}]")


def test_an_action_that_returns_nothing_is_not_named_as_missing_its_facts() -> None:
    result = _real("""\
flow: change_password
steps:
  - trigger: submit
    input: {current_password: "Correct-Horse-7", password: "Fresh-Lantern-58",
            password_confirm: "Fresh-Lantern-58"}
    expect: done
""")
    assert result.steps[0].detail["actions_without_facts"] == ["set_password"]
