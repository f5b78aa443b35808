"""Log lines: compact JSON, and never an error for a value JSON cannot hold as is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from web.logs import _json_line

ROOT = Path(__file__).resolve().parents[2]


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


# -- one write a line -------------------------------------------------------------------

_LOGGER_SCRIPT = """
import random, sys
import structlog
from web.logs import configure_logging

configure_logging("json")
log = structlog.get_logger("test")
rng = random.Random(int(sys.argv[1]))
for n in range(int(sys.argv[2])):
    log.info("line_written", writer=int(sys.argv[1]), n=n, pad="x" * rng.randrange(10, 2000))
"""


@pytest.mark.slow
def test_lines_of_processes_sharing_one_pipe_never_run_together() -> None:
    """With PYTHONUNBUFFERED=1 a line and its newline written apart let another
    process's line in between: ``{...}{...}`` on one line, and an empty one later."""
    writers, lines = 3, 2000
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    read_end, write_end = os.pipe()
    try:
        procs = [subprocess.Popen([sys.executable, "-c", _LOGGER_SCRIPT, str(w), str(lines)],
                                  env=env, stderr=write_end, stdout=subprocess.DEVNULL)
                 for w in range(writers)]
    finally:
        os.close(write_end)  # the children hold the pipe now: end of file once they exit
    chunks = []
    with os.fdopen(read_end, "rb") as pipe:
        while chunk := pipe.read1(1 << 16):
            chunks.append(chunk)
    assert [p.wait(60) for p in procs] == [0] * writers
    text = b"".join(chunks).decode()
    assert text.endswith("\n")
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not one JSON object: {line[:200]!r}")
    assert len(records) == writers * lines
    assert {(r["writer"], r["n"]) for r in records} == {
        (w, n) for w in range(writers) for n in range(lines)}
