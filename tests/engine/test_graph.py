"""engine.graph: the Mermaid diagram and the standalone SVG of a flow."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path

import pytest

import flows as platform_flows
from engine import Registry
from engine.graph import to_mermaid, to_svg
from engine.loader import load_text
from engine.model import Flow, Guard, Label, State, Transition
from tests.sample_flows import SAMPLE_YAML, sample_registry

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def flow() -> Flow:
    return load_text(SAMPLE_YAML, "sample.yaml", sample_registry()).flows["signup"]


def tricky_flow() -> Flow:
    """Build a flow whose labels hold what Mermaid and XML choke on."""
    return Flow(
        name="tricky",
        initial="start_here",
        states={
            "start_here": State("start_here", label=Label('第一步：填写 "资料"',
                                                          'Step 1: "fill in"; #1 [a] <b> & c')),
            "finished": State("finished", final=True, label=Label("完成", "Done")),
        },
        transitions=(Transition("go", ("start_here",), "finished", guards=(Guard("ready"),)),),
        expires_in=timedelta(days=1),
        title=Label("标题 <&>", 'Title "q"'),
    )


def svg_root(flow: Flow) -> ET.Element:
    return ET.fromstring(to_svg(flow))  # noqa: S314 - our own output, not untrusted XML


def all_text(root: ET.Element) -> list[str]:
    return ["".join(el.itertext()) for el in root.iter(f"{SVG}text")]


# -- Mermaid ------------------------------------------------------------------------------

def test_mermaid_starts_with_diagram_type_and_enters_the_initial_state(flow: Flow) -> None:
    lines = to_mermaid(flow).splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> details" in lines


def test_mermaid_names_every_state_and_trigger(flow: Flow) -> None:
    text = to_mermaid(flow)
    for name in flow.states:
        assert re.search(rf"\b{name}\b", text), name
    for t in flow.transitions:
        assert f": {t.trigger}" in text, t.trigger


def test_mermaid_draws_one_edge_per_transition_with_its_guards(flow: Flow) -> None:
    lines = to_mermaid(flow).splitlines()
    edges = [line for line in lines if " --> " in line and "[*]" not in line]
    assert len(edges) == sum(len(t.sources) for t in flow.transitions)
    assert "    details --> code: submit" in lines
    assert "    code --> done: confirm [code_ok]" in lines
    assert "    code --> code: confirm [!code_ok, !too_many]" in lines
    assert "    code --> details: confirm [!code_ok, too_many]" in lines


def test_mermaid_leads_final_states_out_and_only_them(flow: Flow) -> None:
    exits = [line.split(" --> ")[0].strip() for line in to_mermaid(flow).splitlines()
             if line.endswith("--> [*]")]
    assert exits == [name for name, s in flow.states.items() if s.final]
    assert exits == ["done", "lapsed"]


def test_mermaid_marks_the_timeout_edge_with_its_duration_instead_of_a_second_edge(
        flow: Flow) -> None:
    lines = to_mermaid(flow).splitlines()
    assert "    code --> lapsed: expire (after 72h)" in lines
    assert sum(1 for line in lines if ": expire" in line) == 1


def test_mermaid_describes_labelled_states(flow: Flow) -> None:
    lines = to_mermaid(flow).splitlines()
    assert '    state "基本信息 / Details" as details' in lines
    assert '    state "验证码 / Code" as code' in lines
    assert not any(line.strip().startswith("state") and "as done" in line for line in lines)


def test_mermaid_escapes_colons_quotes_semicolons_brackets_and_hashes() -> None:
    lines = to_mermaid(tricky_flow()).splitlines()
    [described] = [line for line in lines if line.endswith(" as start_here")]
    description = described.strip()[len('state "'):-len('" as start_here')]
    assert description == ('第一步：填写 #quot;资料#quot; / Step 1#58; #quot;fill in#quot;#59; '
                           "#35;1 #91;a#93; #lt;b#gt; & c")
    bare = re.sub(r"#\w+;", "", description)  # what is left once entity codes are gone
    for char in ':";[]<>#':
        assert char not in bare
    assert "    start_here --> finished: go [ready]" in lines


def test_mermaid_is_deterministic(flow: Flow) -> None:
    again = load_text(SAMPLE_YAML, "sample.yaml", sample_registry()).flows["signup"]
    assert to_mermaid(flow) == to_mermaid(flow) == to_mermaid(again)


# -- SVG ----------------------------------------------------------------------------------

def test_svg_is_xml_with_one_box_per_state(flow: Flow) -> None:
    root = svg_root(flow)
    assert root.tag == f"{SVG}svg"
    boxes = [g for g in root.iter(f"{SVG}g") if g.get("class") == "state"]
    assert [g.get("data-state") for g in boxes] == list(flow.states)
    for g in boxes:
        rects = g.findall(f"{SVG}rect")
        # Final states have a double border.
        assert len(rects) == (2 if flow.states[str(g.get("data-state"))].final else 1)


def test_svg_shows_every_trigger_with_its_guards_and_the_timeout(flow: Flow) -> None:
    texts = all_text(svg_root(flow))
    for t in flow.transitions:
        assert any(text.startswith(t.trigger) for text in texts), t.trigger
    assert "confirm [!code_ok, !too_many]" in texts
    assert "expire (after 72h)" in texts
    edges = [g for g in svg_root(flow).iter(f"{SVG}g") if g.get("class") == "edge"]
    assert len(edges) == sum(len(t.sources) for t in flow.transitions)


def test_svg_marks_the_initial_state_with_a_dot_and_an_arrow(flow: Flow) -> None:
    root = svg_root(flow)
    assert len([c for c in root.iter(f"{SVG}circle") if c.get("class") == "start"]) == 1
    [initial] = [g for g in root.iter(f"{SVG}g") if g.get("class") == "initial"]
    path = initial.find(f"{SVG}path")
    assert path is not None
    assert "arrow" in str(path.get("marker-end"))


def test_svg_boxes_do_not_overlap(flow: Flow) -> None:
    root = svg_root(flow)
    boxes = []
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "state":
            r = g.find(f"{SVG}rect")
            assert r is not None
            x, y = float(r.get("x", "")), float(r.get("y", ""))
            boxes.append((x, y, x + float(r.get("width", "")), y + float(r.get("height", ""))))
    width, height = float(root.get("width", "")), float(root.get("height", ""))
    for i, a in enumerate(boxes):
        assert 0 <= a[0] < a[2] <= width
        assert 0 <= a[1] < a[3] <= height
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


def test_svg_is_byte_identical_across_calls(flow: Flow) -> None:
    again = load_text(SAMPLE_YAML, "sample.yaml", sample_registry()).flows["signup"]
    assert to_svg(flow).encode() == to_svg(flow).encode() == to_svg(again).encode()


def test_svg_keeps_chinese_text_and_escapes_markup() -> None:
    flow = tricky_flow()
    svg = to_svg(flow)
    # Chinese is written as itself (UTF-8), markup characters as entities.
    assert "第一步：填写 &quot;资料&quot; / Step 1: &quot;fill in&quot;; #1 [a] &lt;b&gt; &amp; c" \
        in svg
    assert "标题 &lt;&amp;&gt; / Title &quot;q&quot; (tricky)" in svg
    texts = all_text(svg_root(flow))
    assert '第一步：填写 "资料" / Step 1: "fill in"; #1 [a] <b> & c' in texts
    assert "完成 / Done" in texts


def test_svg_names_cjk_fonts_and_sizes_boxes_for_wide_text(flow: Flow) -> None:
    root = svg_root(flow)
    assert "Noto Sans CJK SC" in str(root.get("font-family"))
    widths = {}
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "state":
            r = g.find(f"{SVG}rect")
            assert r is not None
            widths[g.get("data-state")] = float(r.get("width", ""))
    # "基本信息 / Details" (4 CJK characters) needs a wider box than "done".
    assert widths["details"] > widths["done"] + 4 * 14


def test_svg_draws_a_self_loop_for_a_transition_back_to_its_source(flow: Flow) -> None:
    root = svg_root(flow)
    [loop] = [g for g in root.iter(f"{SVG}g")
              if g.get("class") == "edge" and g.get("data-source") == g.get("data-dest")]
    path = loop.find(f"{SVG}path")
    assert path is not None
    assert " C" in str(path.get("d"))
    assert "confirm [!code_ok, !too_many]" in all_text(loop)


def test_svg_lays_states_out_top_down_by_distance_from_the_initial_state(flow: Flow) -> None:
    root = svg_root(flow)
    top = {}
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "state":
            r = g.find(f"{SVG}rect")
            assert r is not None
            top[g.get("data-state")] = float(r.get("y", ""))
    assert top["details"] < top["code"] < top["done"]
    assert top["done"] == top["lapsed"]


def test_callback_edges_are_marked() -> None:
    from engine import Registry, load_text
    from engine.graph import to_mermaid, to_svg

    text = """\
flows:
  f:
    initial: a
    states:
      a: {}
      b: {final: true}
    transitions:
      - {trigger: result, source: a, dest: b, via: callback}
"""
    flow = load_text(text, registry=Registry()).flows["f"]
    assert "    a --> b: result (callback)" in to_mermaid(flow)
    assert "result (callback)" in to_svg(flow)


def test_rate_limited_edges_say_their_limits() -> None:
    from engine import Registry, load_text
    from engine.graph import to_mermaid, to_svg

    text = """\
flows:
  f:
    initial: a
    states:
      a: {fields: {phone: {type: string, label: {zh: 手机, en: Phone}}}}
      b: {final: true}
    transitions:
      - trigger: resend
        source: a
        dest: a
        limits:
          - {name: sms_resend, by: [field:phone], max: 1, per: 60s}
          - {name: sms_daily, by: [field:phone], max: 10, per: 24h}
      - {trigger: go, source: a, dest: b}
"""
    flow = load_text(text, registry=Registry()).flows["f"]
    mermaid = to_mermaid(flow)
    assert "    a --> a: resend (limit sms_resend 1 per 1m#59; sms_daily 10 per 24h)" in mermaid
    assert "    a --> b: go\n" in mermaid
    assert "resend (limit sms_resend 1 per 1m; sms_daily 10 per 24h)" in to_svg(flow)


def test_start_limits_are_on_the_start_edge_and_in_the_svg_title() -> None:
    from engine import Registry, load_text
    from engine.graph import to_mermaid, to_svg

    text = """\
flows:
  f:
    initial: a
    start_limits: [{name: starts, by: [client], max: 600, per: 10m}]
    states:
      a: {}
      b: {final: true}
    transitions:
      - {trigger: go, source: a, dest: b}
"""
    flow = load_text(text, registry=Registry()).flows["f"]
    assert "    [*] --> a: (limit starts 600 per 10m)\n" in to_mermaid(flow)
    assert "<title>f  start (limit starts 600 per 10m)</title>" in to_svg(flow)


def test_a_stay_is_drawn_as_a_self_loop_on_each_of_its_states() -> None:
    from engine import Registry, load_text
    from tests.engine.test_language_checks import STAY

    registry = Registry()
    registry.action("hello")(lambda a: None)
    flow = load_text(STAY, registry=registry).flows["f"]
    mermaid = to_mermaid(flow)
    assert "    old --> old: send_code\n    new --> new: send_code\n" in mermaid
    root = svg_root(flow)
    loops = sorted(g.get("data-source") or "" for g in root.iter(f"{SVG}g")
                   if g.get("class") == "edge" and g.get("data-source") == g.get("data-dest"))
    assert loops == ["new", "old"]


# -- every flow of the platform ------------------------------------------------------------
def _platform_flows() -> list[Flow]:
    registry = Registry()
    platform_flows.register(registry)
    root = Path(__file__).resolve().parents[2]
    text = (root / "flows.yaml").read_text(encoding="utf-8")
    return list(load_text(text, "flows.yaml", registry).flows.values())


@pytest.mark.parametrize("platform_flow", _platform_flows(), ids=lambda f: f.name)
def test_every_flow_of_the_platform_draws_every_state_and_trigger_apart(
        platform_flow: Flow) -> None:
    """``flowctl graph`` draws each flow of flows.yaml, the personal center's included."""
    mermaid = to_mermaid(platform_flow)
    root = svg_root(platform_flow)
    text = " ".join(all_text(root))
    for state in platform_flow.states:
        assert state in mermaid
        assert state in text
    for transition in platform_flow.transitions:
        assert transition.trigger in mermaid
        assert transition.trigger in text
    boxes = []
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "state":
            r = g.find(f"{SVG}rect")
            assert r is not None
            x, y = float(r.get("x", "")), float(r.get("y", ""))
            boxes.append((x, y, x + float(r.get("width", "")), y + float(r.get("height", ""))))
    assert len(boxes) == len(platform_flow.states)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
