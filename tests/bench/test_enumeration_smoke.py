"""The enumeration benchmark, end to end with tiny numbers: every figure, and the same
answers for registered and unregistered numbers (times are reported, never asserted)."""

from __future__ import annotations

import json
import os

from bench import enumeration, options


def test_a_tiny_run_reports_medians_ratios_and_identical_answers() -> None:
    opts = enumeration.Options(
        samples=3, warmup=1,
        admin_url=os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
        or options.DEFAULT_ADMIN_URL,
        redis_url=os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL")
        or options.DEFAULT_REDIS_URL)
    result = json.loads(json.dumps(enumeration.run(opts)))
    assert result["samples"] == 3
    for flow in enumeration.FLOWS:
        for step in enumeration.STEPS:
            figures = result[flow][f"{step}_ms"]
            assert figures["registered"] > 0
            assert figures["unregistered"] > 0
            assert figures["ratio"] > 0
        assert result[flow]["answers"] == ["200 | 422 validation_failed sms_code_wrong"]
    assert result["answers_identical"] is True
