"""The flows file is read by libyaml where PyYAML has it, and reads exactly as PyYAML's
own parser reads it: the same values, at the same lines and columns, with the same
diagnostics (a text libyaml refuses is read again by PyYAML's parser)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import loader

ROOT = Path(__file__).resolve().parents[2]


def read(text: str, *, fast: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:
    """Where each value and key stands, the values, the diagnostics. An empty document's
    place (a null nobody reads) is left out: libyaml puts it after trailing spaces."""
    with monkeypatch.context() as m:
        if not fast:
            m.setattr(loader, "_FAST_LOADER", None)
        pos, doc, diags = loader.read_positioned(text, "f.yaml")
    where = None if pos is None or doc is None else (pos.values, pos.keys)
    return (pos is None, where, repr(doc), diags)


def test_pyyaml_here_has_libyaml() -> None:
    # The wheels carry it; without it the file is read ten times slower, not wrongly.
    assert yaml.__with_libyaml__
    assert loader._FAST_LOADER is yaml.CSafeLoader


@pytest.mark.parametrize("name", ["flows.yaml", "systems.yaml"])
def test_the_shipped_files_read_the_same_both_ways(name: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = ROOT / name
    if not path.exists():
        pytest.skip(f"no {name} in this checkout")
    text = path.read_text(encoding="utf-8")
    fast = read(text, fast=True, monkeypatch=monkeypatch)
    refused, where, _, diags = fast
    assert not refused
    assert where is not None
    assert where[0]  # the values' places: one a value
    assert diags == []
    assert fast == read(text, fast=False, monkeypatch=monkeypatch)


# Pieces of YAML, good and bad, put together at random: what both parsers must agree on.
_PIECES = ["a: 1\n", "b:\n  - x\n  - y\n", "c: {d: [1, 2]}\n", "- item\n", "  ", "\t",
           ": ", "? k\n", "&anchor v\n", "*anchor\n", "!guard\n", "[!agreed]\n", "'q'\n",
           '"\\u00e9"\n', "键: 值\n", "e: |\n  text\n", "f: >\n  folded\n", "---\n", "...\n",
           "# comment\n", "g: null\n", "h: ~\n", "i: 1.5e3\n", "j: 2026-03-01\n", "{", "}",
           "[", "]", ",", "\x07", "\ufeff", "k: 'unterminated\n", "%YAML 1.1\n", "l: @\n",
           "m: `\n", "n: yes\n", "<<: {o: 1}\n", "p: 0x1F\n", "q: !!str 5\n", "\r\n", "\r",
           "\u2028", "\x85", "\u00a0", "\U0001f600", "- - -\n", "!!binary aGk=\n",
           "? [a, b]\n: v\n", "s: 'it''s'\n", "u: |-\n", "  x\n", "w:\n", " - 1\n",
           "x: &a [1]\ny: *a\n", "<<: *anchor\n", "%TAG ! tag:x,2000:\n", "\x00", "\ud800",
           "dd: a #b\n", "ee: a#b\n", "ff: !custom x\n", "gg: 1:20\n", "hh: ON\n"]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=12))
def test_any_text_reads_the_same_both_ways(pieces: list[str]) -> None:
    text = "".join(pieces)
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert read(text, fast=True, monkeypatch=monkeypatch) == \
            read(text, fast=False, monkeypatch=monkeypatch)
