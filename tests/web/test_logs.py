"""Log lines: compact JSON, and never an error for a value JSON cannot hold as is."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.exceptions
import structlog

from storage import create_redis
from tests.throwaway import free_port
from web.logs import QuietOutages, _json_line
from web.outages import dependency_of

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


# -- outages: one short line now and then ---------------------------------------------

def refused_by_postgres() -> BaseException:
    """What asyncpg raises connecting to a port nobody listens on (a real one)."""
    async def connect() -> None:
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
                              timeout=5)

    try:
        asyncio.run(connect())
    except OSError as exc:
        return exc
    pytest.fail("a closed port accepted a PostgreSQL connection")


def refused_by_redis() -> BaseException:
    async def ping() -> None:
        client = create_redis(f"redis://127.0.0.1:{free_port()}/0", timeout=5)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except redis.exceptions.RedisError as exc:
        return exc
    pytest.fail("a closed port answered PING")


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def through(processor: QuietOutages, event: str, exc: BaseException | None,
            **kw: Any) -> dict[str, Any] | None:
    """The event as the processor passes it on, or None if it drops it."""
    try:
        return dict(processor(None, "error", {"event": event, "exc_info": exc, **kw}))
    except structlog.DropEvent:
        return None


def test_an_outage_is_one_short_line_per_event_and_dependency_every_window() -> None:
    ticks = Ticks()
    quiet = QuietOutages(every=30.0, monotonic=ticks)
    database, cache = refused_by_postgres(), refused_by_redis()
    assert dependency_of(database) == "database"
    assert dependency_of(cache) == "cache"

    first = through(quiet, "timer_round_failed", database)
    assert first is not None
    assert "exc_info" not in first
    assert first["dependency"] == "database"
    assert first["error"].startswith(type(database).__name__)
    assert "repeated" not in first
    # The same event and dependency within the window: dropped, and counted.
    ticks.now += 10
    assert through(quiet, "timer_round_failed", database) is None
    assert through(quiet, "timer_round_failed", database) is None
    # Another event, or another dependency, has a line of its own.
    assert through(quiet, "outbox_round_failed", database) is not None
    assert through(quiet, "timer_round_failed", cache) is not None
    # After the window: one line again, saying how many were left out.
    ticks.now += 25
    again = through(quiet, "timer_round_failed", database)
    assert again is not None
    assert again["repeated"] == 2
    ticks.now += 31
    assert "repeated" not in (through(quiet, "timer_round_failed", database) or {})


def test_a_failure_that_is_no_outage_keeps_its_traceback_every_time() -> None:
    quiet = QuietOutages(monotonic=Ticks())
    bug = ValueError("a bug of ours")
    for _ in range(3):
        passed = through(quiet, "timer_round_failed", bug)
        assert passed is not None
        assert passed["exc_info"] is bug
        assert "dependency" not in passed
    assert through(quiet, "flow_started", None, flow="signup") == {
        "event": "flow_started", "exc_info": None, "flow": "signup"}


def test_an_oserror_of_our_own_is_no_outage_but_one_raised_from_an_outage_is() -> None:
    assert dependency_of(OSError("disk full")) is None
    assert dependency_of(TimeoutError()) is None
    wrapped = RuntimeError("the action could not read the code")
    wrapped.__cause__ = refused_by_redis()  # what `raise ... from exc` sets
    assert dependency_of(wrapped) == "cache"
