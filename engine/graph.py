"""Draw a flow: as a Mermaid state diagram, or as a standalone SVG laid out in pure Python.

The SVG layout is a small Sugiyama-style pipeline with no external tool:

1. rank states by BFS distance from the initial state (cycles and back edges are common
   in flows, so BFS layering rather than longest path);
2. put states on odd layers and give every edge its own *label node* on the even layer
   next to its source, plus dummy nodes where it spans more layers, so that labels get
   room of their own and long edges route around boxes;
3. order each layer by barycenter sweeps and adjacent swaps, keeping the ordering with
   the fewest crossings;
4. place nodes horizontally by relaxing each towards the mean of its neighbours while
   keeping the layer's order and spacing (an isotonic regression per layer);
5. draw edges as smooth curves (Catmull-Rom) through their label and dummy nodes.

Everything iterates in the model's order (states as the loader keeps them, transitions
as written) and no set is ever iterated, so the output is byte-for-byte deterministic.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from itertools import pairwise

import attrs

from engine.durations import format_duration
from engine.model import Flow, Label, Limit

__all__ = ["to_mermaid", "to_svg"]


@attrs.frozen
class _Edge:
    """One drawn edge: a transition from one of its sources."""

    source: str
    dest: str
    trigger: str
    guards: tuple[str, ...]
    timeout: str  # the source state's timeout duration when this is its timeout trigger
    callback: bool = False  # fired by a provider's signed callback, not by the user
    limits: tuple[str, ...] = ()  # "sms_resend 1 per 1m": the transition's rate limits

    def text(self, escape: Callable[[str], str] = str) -> str:
        """``trigger [guards] (after 72h) (callback) (limit ...)``; ``escape`` is applied
        to the names, never to the brackets the diagram itself writes."""
        out = escape(self.trigger)
        if self.guards:
            out += f" [{', '.join(escape(g) for g in self.guards)}]"
        if self.timeout:
            out += f" (after {escape(self.timeout)})"
        if self.callback:
            out += " (callback)"
        if self.limits:
            out += f" (limit {escape('; '.join(self.limits))})"
        return out


def _edges(flow: Flow) -> list[_Edge]:
    edges = []
    for t in flow.transitions:
        for source in t.sources:
            state = flow.states.get(source)
            timeout = ""
            if state is not None and state.timeout is not None \
                    and state.timeout.trigger == t.trigger:
                timeout = _duration(state.timeout.after)
            limits = tuple(_limit_text(lim) for lim in t.limits)
            edges.append(_Edge(source, t.target(source), t.trigger,
                               tuple(str(g) for g in t.guards),
                               timeout, t.via == "callback", limits))
    return edges


def _limit_text(lim: Limit) -> str:
    return f"{lim.name} {lim.max} per {_duration(lim.per)}"


def _start_text(flow: Flow) -> str:
    """What limits starting the flow: written on the start edge (Mermaid), in the title (SVG)."""
    return f"(limit {'; '.join(_limit_text(lim) for lim in flow.start_limits)})" \
        if flow.start_limits else ""


def _duration(value: timedelta) -> str:
    """Write a timeout as deadlines are usually said: whole hours up to three days (``72h``)."""
    seconds = int(value.total_seconds())
    if seconds % 3600 == 0 and 0 < seconds <= 3 * 86400:
        return f"{seconds // 3600}h"
    return format_duration(value)


def _label_text(label: Label) -> str:
    parts = [p for p in (label.zh.strip(), label.en.strip()) if p]
    if len(parts) == 2 and parts[0] == parts[1]:
        parts = parts[:1]
    return " / ".join(parts)


# -- Mermaid ------------------------------------------------------------------------------

# Mermaid ends a description at '#', ';' or a newline and a state's quoted description at
# '"'; its entity codes (``#58;``) are decoded only after parsing.
_MERMAID_ESCAPES = {
    "#": "#35;", ":": "#58;", ";": "#59;", '"': "#quot;", "[": "#91;", "]": "#93;",
    "{": "#123;", "}": "#125;", "<": "#lt;", ">": "#gt;", "\n": " ", "\r": " ", "\t": " ",
}


def _mermaid_escape(text: str) -> str:
    return "".join(_MERMAID_ESCAPES.get(c, c) for c in text)


def to_mermaid(flow: Flow) -> str:
    """Draw a flow as a Mermaid ``stateDiagram-v2`` diagram."""
    lines = ["stateDiagram-v2"]
    for state in flow.states.values():
        if state.label is not None and _label_text(state.label):
            text = _mermaid_escape(_label_text(state.label))
            lines.append(f'    state "{text}" as {state.name}')
    start = _start_text(flow)
    lines.append(f"    [*] --> {flow.initial}" + (f": {_mermaid_escape(start)}" if start else ""))
    lines.extend(f"    {e.source} --> {e.dest}: {e.text(_mermaid_escape)}"
                 for e in _edges(flow))
    lines.extend(f"    {s.name} --> [*]" for s in flow.states.values() if s.final)
    return "\n".join(lines) + "\n"


# -- SVG: sizes and style -----------------------------------------------------------------

_FONT = ("'Noto Sans CJK SC', 'Source Han Sans SC', 'PingFang SC', 'Hiragino Sans GB', "
         "'Microsoft YaHei', 'WenQuanYi Micro Hei', sans-serif")
_MONO = "'DejaVu Sans Mono', Menlo, Consolas, monospace"
_TITLE_SIZE = 16
_STATE_SIZE = 14
_NAME_SIZE = 11
_EDGE_SIZE = 12
_PAD_X = 14  # inside a state box, each side of the text
_LINE = 16  # height of one edge label line
_MARGIN = 24
_NODE_GAP = 22  # between neighbours on one layer
_LAYER_GAP = 26  # between layers
_START_R = 7
_LOOP = 30  # how far a self-loop reaches right of its box
_SWEEPS = 8
_RELAX = 12

_STATE_FILL, _STATE_STROKE = "#f4f7fd", "#4a6fa5"
_FINAL_FILL, _FINAL_STROKE = "#eef6ee", "#3d7a3d"
_EDGE_STROKE, _TIMEOUT_STROKE = "#555555", "#b5651d"
_INK, _MUTED = "#1f2933", "#6b7785"


def _text_width(text: str, size: float) -> float:
    """Estimate how wide a line of text is: wide (CJK) characters 1em, others 0.6em."""
    return sum(size if unicodedata.east_asian_width(c) in "WF" else 0.6 * size
               for c in text)


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _x(text: str) -> str:
    """Escape text for XML content and attribute values, dropping characters XML forbids."""
    return html.escape(_NOT_XML.sub("", text), quote=True)


def _n(value: float) -> str:
    s = f"{value:.1f}"
    if s.endswith(".0"):
        s = s[:-2]
    return "0" if s == "-0" else s


# -- SVG: layout --------------------------------------------------------------------------

@attrs.define
class _Node:
    key: str
    kind: str  # "state", "label", "dummy" or "start"
    layer: int
    width: float = 0.0
    height: float = 0.0
    right: float = 0.0  # room taken right of the box (a self-loop and its labels)
    box: float = 0.0  # a state box's own height; ``height`` also makes room for self-loops
    x: float = 0.0
    y: float = 0.0


@attrs.define
class _Layout:
    nodes: dict[str, _Node]
    layers: list[list[str]]
    chains: list[tuple[_Edge, list[str]]]  # each edge and the nodes it runs through
    loops: dict[str, list[_Edge]]  # self-loops by state
    width: float = 0.0
    height: float = 0.0


def _ranks(flow: Flow) -> dict[str, int]:
    """Rank states by BFS distance from the initial state, then any stragglers likewise."""
    rank: dict[str, int] = {}
    roots = [flow.initial] if flow.initial in flow.states else []
    roots += list(flow.states)
    for root in roots:
        if root in rank:
            continue
        rank[root] = 0
        todo = deque([root])
        while todo:
            s = todo.popleft()
            for t in flow.transitions:
                # A stay adds no rank: it leads nowhere new.
                if s in t.sources and t.dest in flow.states and t.dest not in rank:
                    rank[t.dest] = rank[s] + 1
                    todo.append(t.dest)
    return rank


def _build(flow: Flow) -> _Layout:
    rank = _ranks(flow)
    nodes: dict[str, _Node] = {"start": _Node("start", "start", 0, 2 * _START_R, 2 * _START_R)}
    for name, state in flow.states.items():
        lines = _state_lines(name, state.label)
        width = max(_text_width(t, s) for t, s, _ in lines) + 2 * _PAD_X
        height = 18.0 + 16 * len(lines)
        nodes["s:" + name] = _Node("s:" + name, "state", 2 * rank[name] + 1, width, height,
                                   box=height)
    chains: list[tuple[_Edge, list[str]]] = []
    loops: dict[str, list[_Edge]] = {}
    for i, e in enumerate(_edges(flow)):
        if e.source not in flow.states or e.dest not in flow.states:
            continue
        if e.source == e.dest:
            loops.setdefault(e.source, []).append(e)
            continue
        a, b = nodes["s:" + e.source].layer, nodes["s:" + e.dest].layer
        # Intermediate layers: the label's first, next to the source; a same-rank edge
        # dips into the label layer below and comes back up.
        if b > a:
            between = list(range(a + 1, b))
        elif b < a:
            between = list(range(a - 1, b, -1))
        else:
            between = [a + 1]
        chain = ["s:" + e.source]
        for j, layer in enumerate(between):
            if j == 0:
                key = f"l:{i}"
                nodes[key] = _Node(key, "label", layer, _text_width(e.text(), _EDGE_SIZE) + 10,
                                   _LINE + 2)
            else:
                key = f"d:{i}:{j}"
                nodes[key] = _Node(key, "dummy", layer, 8.0, 0.0)
            chain.append(key)
        chain.append("s:" + e.dest)
        chains.append((e, chain))
    for name, edges in loops.items():
        node = nodes["s:" + name]
        node.right = _LOOP + 4 + max(_text_width(e.text(), _EDGE_SIZE) for e in edges)
        node.height = max(node.height, _LINE * len(edges) + 8.0)
    if flow.initial in flow.states:
        chains.append((_Edge("", flow.initial, "", (), ""), ["start", "s:" + flow.initial]))
    layers: list[list[str]] = [[] for _ in range(max(n.layer for n in nodes.values()) + 1)]
    for key, node in nodes.items():
        layers[node.layer].append(key)
    return _Layout(nodes, layers, chains, loops)


def _state_lines(name: str, label: Label | None) -> list[tuple[str, int, bool]]:
    """Return a state box's lines: text, font size, and whether it is the state's name."""
    text = _label_text(label) if label is not None else ""
    if text:
        return [(text, _STATE_SIZE, False), (name, _NAME_SIZE, True)]
    return [(name, _STATE_SIZE, False)]


def _neighbours(layout: _Layout) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    up: dict[str, list[str]] = {k: [] for k in layout.nodes}
    down: dict[str, list[str]] = {k: [] for k in layout.nodes}
    for _, chain in layout.chains:
        for a, b in pairwise(chain):
            if layout.nodes[a].layer > layout.nodes[b].layer:
                a, b = b, a
            down[a].append(b)
            up[b].append(a)
    return up, down


def _crossings(layers: list[list[str]], down: dict[str, list[str]],
               pos: dict[str, int]) -> int:
    total = 0
    for layer in layers:
        segs = [(pos[a], pos[b]) for a in layer for b in down[a]]
        for i, (a1, b1) in enumerate(segs):
            for a2, b2 in segs[i + 1:]:
                if (a1 - a2) * (b1 - b2) < 0:
                    total += 1
    return total


def _order(layout: _Layout) -> None:
    """Order each layer to reduce crossings: barycenter sweeps, then adjacent swaps."""
    up, down = _neighbours(layout)
    layers = layout.layers
    pos = {k: i for layer in layers for i, k in enumerate(layer)}

    def sort_layer(index: int, nbrs: dict[str, list[str]]) -> None:
        def key(k: str) -> float:
            ns = nbrs[k]
            return sum(pos[n] for n in ns) / len(ns) if ns else float(pos[k])

        layers[index].sort(key=key)
        pos.update((k, i) for i, k in enumerate(layers[index]))

    def pair_crossings(a: str, b: str) -> int:
        """Count crossings between a's and b's edges with a left of b."""
        return sum(1 for nbrs in (up, down) for u in nbrs[a] for v in nbrs[b]
                   if pos[u] > pos[v])

    def transpose() -> None:
        for _ in range(len(layout.nodes)):
            swapped = False
            for layer in layers:
                for i in range(len(layer) - 1):
                    a, b = layer[i], layer[i + 1]
                    if pair_crossings(b, a) < pair_crossings(a, b):
                        layer[i], layer[i + 1] = b, a
                        pos[a], pos[b] = i + 1, i
                        swapped = True
            if not swapped:
                return

    best = [list(layer) for layer in layers]
    best_count = _crossings(layers, down, pos)
    for _ in range(_SWEEPS):
        for i in range(1, len(layers)):
            sort_layer(i, up)
        for i in range(len(layers) - 2, -1, -1):
            sort_layer(i, down)
        transpose()
        count = _crossings(layers, down, pos)
        if count < best_count:
            best, best_count = [list(layer) for layer in layers], count
        if best_count == 0:
            break
    layout.layers = best


def _fit(targets: list[float], offsets: list[float]) -> list[float]:
    """Return the positions closest to targets (least squares) keeping the offsets' gaps.

    With ``y = x - offset`` the constraint is that y never decreases: pool adjacent
    violators, the textbook isotonic regression.
    """
    blocks: list[list[float]] = []  # [sum, count] of each pooled run
    for t, o in zip(targets, offsets, strict=True):
        blocks.append([t - o, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    ys = [s / c for s, c in blocks for _ in range(int(c))]
    return [y + o for y, o in zip(ys, offsets, strict=True)]


def _place(layout: _Layout, title_width: float) -> None:
    """Give every node its coordinates, and the drawing its size."""
    nodes = layout.nodes
    up, down = _neighbours(layout)
    offsets: list[list[float]] = []
    for layer in layout.layers:
        offs = [0.0]
        for a, b in pairwise(layer):
            na, nb = nodes[a], nodes[b]
            offs.append(offs[-1] + na.width / 2 + na.right + _NODE_GAP + nb.width / 2)
        offsets.append(offs)
        for k, o in zip(layer, offs, strict=True):
            nodes[k].x = o - offs[-1] / 2
    # Relax: each node towards the mean of its neighbours, sweeping down then up.
    order = list(range(len(layout.layers)))
    for sweep in range(_RELAX):
        for i in order if sweep % 2 == 0 else order[::-1]:
            layer = layout.layers[i]
            targets = []
            for k in layer:
                ns = up[k] + down[k]
                targets.append(sum(nodes[n].x for n in ns) / len(ns) if ns else nodes[k].x)
            for k, x in zip(layer, _fit(targets, offsets[i]), strict=True):
                nodes[k].x = x
    left = min(n.x - n.width / 2 for n in nodes.values())
    right = max(n.x + n.width / 2 + n.right for n in nodes.values())
    shift = _MARGIN - left + max(0.0, (title_width - (right - left)) / 2)
    for n in nodes.values():
        n.x += shift
    layout.width = max(right - left, title_width) + 2 * _MARGIN
    y = float(_MARGIN + (_TITLE_SIZE + 14 if title_width else 0))
    for layer in layout.layers:
        if not layer:
            continue
        height = max(nodes[k].height for k in layer)
        for k in layer:
            nodes[k].y = y + height / 2
        y += height + _LAYER_GAP
    layout.height = y - _LAYER_GAP + _MARGIN


# -- SVG: drawing -------------------------------------------------------------------------

def _border(node: _Node, toward: tuple[float, float]) -> tuple[float, float]:
    """Return where the line from a node's center toward a point leaves the node."""
    dx, dy = toward[0] - node.x, toward[1] - node.y
    if node.kind == "start":
        d = math.hypot(dx, dy) or 1.0
        return node.x + dx * _START_R / d, node.y + dy * _START_R / d
    hw, hh = node.width / 2, node.height / 2
    if node.kind == "state":
        hh = node.box / 2
    scale = min(hw / abs(dx) if dx else math.inf, hh / abs(dy) if dy else math.inf)
    if scale == math.inf:
        return node.x, node.y
    return node.x + dx * scale, node.y + dy * scale


def _path(points: list[tuple[float, float]]) -> str:
    """Draw a smooth curve through points (Catmull-Rom, as cubic Beziers)."""
    parts = [f"M{_n(points[0][0])},{_n(points[0][1])}"]
    ext = [points[0], *points, points[-1]]
    for i in range(1, len(ext) - 2):
        (ax, ay), (bx, by), (cx, cy), (dx, dy) = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        c1 = (bx + (cx - ax) / 6, by + (cy - ay) / 6)
        c2 = (cx - (dx - bx) / 6, cy - (dy - by) / 6)
        parts.append(f"C{_n(c1[0])},{_n(c1[1])} {_n(c2[0])},{_n(c2[1])} {_n(cx)},{_n(cy)}")
    return " ".join(parts)


def _edge_style(flow_name: str, edge: _Edge) -> str:
    if edge.timeout:
        return (f'stroke="{_TIMEOUT_STROKE}" stroke-dasharray="5 3" '
                f'marker-end="url(#{flow_name}-arrow-timeout)"')
    return f'stroke="{_EDGE_STROKE}" marker-end="url(#{flow_name}-arrow)"'


def _label(x: float, y: float, text: str, color: str, anchor: str = "middle") -> list[str]:
    width = _text_width(text, _EDGE_SIZE) + 8
    left = x - width / 2 if anchor == "middle" else x - 4
    return [
        f'<rect x="{_n(left)}" y="{_n(y - _LINE / 2)}" width="{_n(width)}" '
        f'height="{_LINE}" rx="3" fill="#ffffff" fill-opacity="0.92"/>',
        f'<text x="{_n(x)}" y="{_n(y + _EDGE_SIZE * 0.35)}" text-anchor="{anchor}" '
        f'font-size="{_EDGE_SIZE}" fill="{color}">{_x(text)}</text>',
    ]


def to_svg(flow: Flow) -> str:
    """Draw a flow as a standalone SVG document, laid out without external tools."""
    title = _label_text(flow.title) if flow.title is not None else ""
    title = f"{title} ({flow.name})" if title else flow.name
    if flow.start_limits:
        title += f"  start {_start_text(flow)}"
    layout = _build(flow)
    _order(layout)
    _place(layout, _text_width(title, _TITLE_SIZE))
    nodes, fid = layout.nodes, _x(flow.name)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(layout.width)}" '
        f'height="{_n(layout.height)}" viewBox="0 0 {_n(layout.width)} {_n(layout.height)}" '
        f'font-family="{_x(_FONT)}" font-size="{_EDGE_SIZE}">',
        f"<title>{_x(title)}</title>",
        "<defs>",
    ]
    for suffix, color in (("", _EDGE_STROKE), ("-timeout", _TIMEOUT_STROKE)):
        out.append(f'<marker id="{fid}-arrow{suffix}" viewBox="0 0 10 10" refX="10" refY="5" '
                   'markerWidth="7" markerHeight="7" markerUnits="userSpaceOnUse" '
                   f'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>')
    out.append("</defs>")
    out.append('<rect width="100%" height="100%" fill="#ffffff"/>')
    out.append(f'<text class="title" x="{_MARGIN}" y="{_n(_MARGIN + _TITLE_SIZE * 0.8)}" '
               f'font-size="{_TITLE_SIZE}" font-weight="bold" fill="{_INK}">{_x(title)}</text>')

    labels: list[str] = []
    for edge, chain in layout.chains:
        points = [(nodes[k].x, nodes[k].y) for k in chain[1:-1]]
        first, last = nodes[chain[0]], nodes[chain[-1]]
        start = _border(first, points[0] if points else (last.x, last.y))
        end = _border(last, points[-1] if points else (first.x, first.y))
        attrs_ = (f'class="edge" data-trigger="{_x(edge.trigger)}" '
                  f'data-source="{_x(edge.source)}" data-dest="{_x(edge.dest)}"'
                  if edge.trigger else 'class="initial"')
        out.append(f"<g {attrs_}>")
        out.append(f'<path d="{_path([start, *points, end])}" fill="none" stroke-width="1.4" '
                   f"{_edge_style(fid, edge)}/>")
        out.append("</g>")
        if edge.trigger:
            label = nodes[chain[1]]
            color = _TIMEOUT_STROKE if edge.timeout else _INK
            labels.append(f'<g class="edge-label" data-trigger="{_x(edge.trigger)}">')
            labels.extend(_label(label.x, label.y, edge.text(), color))
            labels.append("</g>")

    dot = nodes["start"]
    out.append(f'<circle class="start" cx="{_n(dot.x)}" cy="{_n(dot.y)}" r="{_START_R}" '
               f'fill="{_INK}"/>')
    for name, state in flow.states.items():
        node = nodes["s:" + name]
        lines = _state_lines(name, state.label)
        height = node.box
        x0, y0 = node.x - node.width / 2, node.y - height / 2
        fill, stroke = (_FINAL_FILL, _FINAL_STROKE) if state.final else (_STATE_FILL,
                                                                          _STATE_STROKE)
        out.append(f'<g class="state" data-state="{_x(name)}">')
        out.append(f'<rect x="{_n(x0)}" y="{_n(y0)}" width="{_n(node.width)}" '
                   f'height="{_n(height)}" rx="9" fill="{fill}" stroke="{stroke}" '
                   'stroke-width="1.5"/>')
        if state.final:
            out.append(f'<rect x="{_n(x0 + 3.5)}" y="{_n(y0 + 3.5)}" '
                       f'width="{_n(node.width - 7)}" height="{_n(height - 7)}" rx="6" '
                       f'fill="none" stroke="{stroke}" stroke-width="1.2"/>')
        for i, (text, size, is_name) in enumerate(lines):
            baseline = y0 + 9 + 16 * i + 8 + size * 0.35  # 9 padding, 16 per line
            style = (f'font-family="{_x(_MONO)}" fill="{_MUTED}"' if is_name
                     else f'fill="{_INK}"' + (' font-weight="600"' if len(lines) > 1 else ""))
            out.append(f'<text x="{_n(node.x)}" y="{_n(baseline)}" '
                       f'text-anchor="middle" font-size="{size}" {style}>{_x(text)}</text>')
        out.append("</g>")
        for i, edge in enumerate(layout.loops.get(name, [])):
            out.extend(_self_loop(fid, node, edge, i, len(layout.loops[name])))
    out.extend(labels)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _self_loop(fid: str, node: _Node, edge: _Edge, index: int, count: int) -> list[str]:
    """Draw a self-loop on a state's right side; several share one loop, labels stacked."""
    x1 = node.x + node.width / 2
    label_y = node.y + (index - (count - 1) / 2) * _LINE
    out = [f'<g class="edge" data-trigger="{_x(edge.trigger)}" data-source="{_x(edge.source)}" '
           f'data-dest="{_x(edge.dest)}">']
    if index == 0:
        y = node.y
        out.append(f'<path d="M{_n(x1)},{_n(y - 7)} C{_n(x1 + _LOOP)},{_n(y - 24)} '
                   f'{_n(x1 + _LOOP)},{_n(y + 24)} {_n(x1)},{_n(y + 7)}" fill="none" '
                   f'stroke-width="1.4" {_edge_style(fid, edge)}/>')
    color = _TIMEOUT_STROKE if edge.timeout else _INK
    out.extend(_label(x1 + _LOOP, label_y, edge.text(), color, anchor="start"))
    out.append("</g>")
    return out
