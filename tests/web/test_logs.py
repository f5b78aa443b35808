"""Log lines: compact JSON, and never an error for a value JSON cannot hold as is."""

from __future__ import annotations

import json

from web.logs import _json_line


def test_json_log_lines_are_compact_and_never_fail_on_odd_values() -> None:
    class Odd:
        def __repr__(self) -> str:
            return "<odd>"

    assert _json_line({"event": "x", "zh": "中文"}) == '{"event":"x","zh":"中文"}'
    # orjson refuses these; the standard library writes them.
    assert json.loads(_json_line({"n": 10**30, "k": {1: 2}})) == {"n": 10**30, "k": {"1": 2}}
    assert json.loads(_json_line({"o": Odd()}, default=repr)) == {"o": "<odd>"}
