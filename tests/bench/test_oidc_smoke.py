"""The single sign-on benchmark, end to end with tiny numbers: every figure is there,
positive, and no request failed (rates are reported, never asserted)."""

from __future__ import annotations

import json
import os

import pytest

from bench import oidc, options

pytestmark = pytest.mark.slow


def test_a_tiny_run_reports_exchanges_per_core_and_the_sign_on_p99() -> None:
    opts = oidc.Options(
        seconds=1, warmup=0.2, concurrency=4, accounts=8, codes=40,
        admin_url=os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
        or options.DEFAULT_ADMIN_URL,
        redis_url=os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL")
        or options.DEFAULT_REDIS_URL)
    result = json.loads(json.dumps(oidc.run(opts)))
    assert result["errors"] == 0, result["first_errors"]
    assert result["exchange"]["count"] == 40
    assert result["signon"]["count"] > 0
    for phase in ("exchange", "signon"):
        for key in ("per_s", "server_cores", "per_core_s", "p50_ms", "p99_ms"):
            assert result[phase][key] > 0, (phase, key, result[phase][key])
    assert result["code_exchanges_per_s_per_core"] == result["exchange"]["per_core_s"]
    assert result["signon_p99_ms"] == result["signon"]["p99_ms"]
    assert result["goal_per_s_per_core"] == 2 * result["keycloak_grants_per_s_per_vcpu"]
