"""The steps benchmark, end to end with tiny numbers: every figure is there and positive."""

from __future__ import annotations

import json
import os

import pytest

from bench import options, steps

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(steps.find_pgbench() is None,
                       reason="pgbench is not installed (apt-get install postgresql-client)"),
]

FIGURES = ("pgbench_steps_per_s", "engine_steps_per_s", "http_steps_per_s", "engine_ratio",
           "http_ratio", "rss_before_mb", "rss_after_mb", "decide_per_s_reused",
           "decide_per_s_new_machine")


def test_a_tiny_run_reports_every_figure() -> None:
    opts = steps.Options(
        seconds=1, warmup=0, rounds=2, concurrency=4, instances=1000, base_instances=200,
        pick_batch=4, decide_seconds=0.2, background_seconds=0.1,
        admin_url=os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
        or options.DEFAULT_ADMIN_URL,
        redis_url=os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL")
        or options.DEFAULT_REDIS_URL)
    result = json.loads(json.dumps(steps.run(opts)))
    for key in FIGURES:
        assert isinstance(result[key], int | float), key
        assert result[key] > 0, (key, result[key])
    assert result["stored_instances"] >= 1200
    assert result["pgbench_failed"] == 0
    assert result["engine_errors"] == 0
    assert result["http_errors"] == 0
    # Every step the engine counted is one event in the history, and no more.
    assert result["engine_events_written"] == result["engine_steps_with_warmup"]
