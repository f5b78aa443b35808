"""Log lines: compact JSON, and never an error for a value JSON cannot hold as is."""

from __future__ import annotations

import json
from typing import Any

from web.logs import _json_line


def test_json_log_lines_are_compact_and_never_fail_on_odd_values() -> None:
    class Odd:
        def __repr__(self) -> str:
            return "<odd>"

    assert _json_line({"event": "x", "zh": "中文"}) == '{"event":"x","zh":"中文"}'
    # orjson refuses these; the standard library writes them.
    assert json.loads(_json_line({"n": 10**30, "k": {1: 2}})) == {"n": 10**30, "k": {"1": 2}}
    assert json.loads(_json_line({"o": Odd()}, default=repr)) == {"o": "<odd>"}


async def test_a_server_reports_pinned_versions_it_cannot_run() -> None:
    from structlog.testing import capture_logs

    from engine.runtime import PinnedProblem
    from web.app import _report_pinned
    from web.metrics import Metrics

    class Runtime:
        def __init__(self, result: Any) -> None:
            self.result = result

        async def check_pinned(self) -> list[PinnedProblem]:
            if isinstance(self.result, Exception):
                raise self.result
            return list(self.result)

    metrics = Metrics()
    problem = PinnedProblem("v1", "signup", 3, "signup:1:1: unknown guard 'code_ok'")
    with capture_logs() as logs:
        await _report_pinned(Runtime([problem]), metrics)  # type: ignore[arg-type]
        await _report_pinned(Runtime(ConnectionError("down")), metrics)  # type: ignore[arg-type]
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("pinned_version_cannot_run", "error"), ("pinned_versions_check_failed", "error")]
    assert logs[0]["active_instances"] == 3
    assert b"flow_versions_unrunnable 1.0" in metrics.render()
