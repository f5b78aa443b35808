"""What a UI description tells a generic client: choice and shown-data labels, a final
state's next actions, waits for a provider, button cooldowns; and their lint checks."""

from __future__ import annotations

from engine import Registry, check_text, load_text
from engine.forms import POLL_SECONDS, describe

FLOWS = """\
flows:
  f:
    initial: a
    states:
      a:
        label: {zh: 甲, en: A}
        show:
          who: values.name
          plain: values.name
        show_labels:
          who: {zh: 姓名, en: Name}
        fields:
          name: {type: string, label: {zh: 姓名, en: Name}}
          method:
            type: choice
            choices: [face, deposit]
            choice_labels:
              face: {zh: 刷脸, en: Face}
            label: {zh: 方式, en: Method}
      waiting:
        fields:
          result: {type: string, label: {zh: 结果, en: Result}}
      done:
        final: true
        reply_labels:
          one_time_password: {zh: 一次性密码, en: One-time password}
        next:
          - {flow: g, label: {zh: 登录, en: Sign in}, after: 6s}
          - {page: home, label: {zh: 首页, en: Home}}
    transitions:
      - {trigger: go, source: a, dest: waiting}
      - trigger: ping
        source: a
        stay: true
        fields: [name]
        limits:
          - {name: once, by: [instance], max: 1, per: 60s}
          - {name: many, by: [instance], max: 5, per: 1h}
      - {trigger: result, source: waiting, dest: done, via: callback}
      - {trigger: back, source: waiting, dest: a, fields: []}
  g:
    initial: s
    states:
      s: {final: true}
"""


def view(state: str, context: dict[str, object] | None = None) -> dict[str, object]:
    registry = Registry()
    flow = load_text(FLOWS, registry=registry).flows["f"]
    return describe(flow, state, context or {}, registry)


def test_choices_carry_their_labels_and_a_value_without_one_shows_none() -> None:
    method = next(f for f in view("a")["fields"] if f["name"] == "method")  # type: ignore
    assert method["choices"] == [{"value": "face", "label": {"zh": "刷脸", "en": "Face"}},
                                 {"value": "deposit", "label": None}]


def test_shown_data_comes_captioned_in_the_files_order() -> None:
    ui = view("a", {"values": {"name": "王小明"}})
    assert ui["data"] == {"who": "王小明", "plain": "王小明"}
    assert ui["shown"] == [
        {"name": "who", "label": {"zh": "姓名", "en": "Name"}, "value": "王小明"},
        {"name": "plain", "label": None, "value": "王小明"}]


def test_a_one_per_window_limit_is_the_buttons_cooldown() -> None:
    triggers = {t["trigger"]: t for t in view("a")["triggers"]}  # type: ignore
    assert triggers["ping"]["cooldown_seconds"] == 60
    assert triggers["go"]["cooldown_seconds"] is None


def test_a_step_a_providers_callback_moves_on_waits_and_says_how_often_to_ask() -> None:
    assert view("waiting")["waits"] == {"for": "provider", "poll_seconds": POLL_SECONDS}
    assert view("a")["waits"] is None


def test_a_final_state_offers_its_next_actions_one_of_them_timed() -> None:
    ui = view("done")
    assert ui["next"] == [
        {"flow": "g", "page": None, "label": {"zh": "登录", "en": "Sign in"},
         "after_seconds": 6},
        {"flow": None, "page": "home", "label": {"zh": "首页", "en": "Home"},
         "after_seconds": None}]


def test_a_state_says_what_the_reply_entering_it_carries_once_and_its_caption() -> None:
    assert view("done")["replies"] == [
        {"name": "one_time_password", "label": {"zh": "一次性密码", "en": "One-time password"}}]
    assert view("a")["replies"] == []


def test_reply_labels_are_linted() -> None:
    bad = FLOWS.replace("one_time_password: {zh: 一次性密码, en: One-time password}",
                        "One-Time: {zh: 一次性密码}")
    assert lint(bad) == ["reply name 'One-Time' must be lower_snake_case"]
    no_en = FLOWS.replace("one_time_password: {zh: 一次性密码, en: One-time password}",
                          "one_time_password: {zh: 一次性密码}")
    assert lint(no_en) == ["reply label 'one_time_password': label 'en' is missing or empty"]


def test_flows_without_the_new_keys_keep_their_versions() -> None:
    plain = "flows:\n  g:\n    initial: s\n    states:\n      s: {final: true}\n"
    with_hints = FLOWS
    assert load_text(plain).flows["g"].version == load_text(with_hints).flows["g"].version


def lint(text: str) -> list[str]:
    return [d.message for d in check_text(text, "f.yaml", Registry())[1]]


def test_the_new_keys_are_linted() -> None:
    bad = (FLOWS.replace("who: {zh: 姓名, en: Name}", "nobody: {zh: 谁, en: Who}")
           .replace("face: {zh: 刷脸, en: Face}", "maybe: {zh: 也许, en: Maybe}")
           .replace("{flow: g,", "{flow: nowhere,")
           .replace("{page: home,", "{page: elsewhere, after: 1s,"))
    assert sorted(lint(bad)) == sorted([
        "show_labels names 'nobody', which is not shown (no such name in 'show')",
        "choice_labels names 'maybe', which is not one of 'choices'",
        "next action's flow 'nowhere' is not a flow of this file",
        "page must be one of home, account, admin",
        "at most one next action goes on its own ('after')",
    ])
    not_final = FLOWS.replace("      waiting:\n", "      waiting:\n        next: [{page: home, "
                              "label: {zh: 首页, en: Home}}]\n")
    assert lint(not_final) == ["next is for final states: what a client offers once the "
                               "flow is over"]
    both = FLOWS.replace("{page: home,", "{page: home, flow: g,")
    assert lint(both) == ["a next action names one 'flow' to start or one 'page'"]
