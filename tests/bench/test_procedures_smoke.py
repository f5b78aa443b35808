"""The procedures benchmark, end to end with tiny numbers: every figure the issue asks
for is there and is a positive number (times are reported, never asserted)."""

from __future__ import annotations

import json
import os

from bench import options, procedures


def test_a_tiny_run_reports_every_figure() -> None:
    opts = procedures.Options(
        registrations=2, reg_concurrency=2, login_concurrency=2, seconds=0.5, warmup=0.2,
        argon2_samples=2, timers=5, steady_timer_rate=20, steady_timer_seconds=0.5,
        timer_interval=0.2,
        admin_url=os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
        or options.DEFAULT_ADMIN_URL,
        redis_url=os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL")
        or options.DEFAULT_REDIS_URL)
    result = json.loads(json.dumps(procedures.run(opts)))
    for figure in ("argon2_verify_ms", "argon2_limit_per_s_per_core",
                   "logins_per_s_per_core", "login_ratio", "login_p50_ms", "login_p99_ms",
                   "registrations_per_s", "timers_per_s", "audit_events_per_s",
                   "login_loop_cpu_ms"):
        assert result[figure] > 0, figure
    assert result["login_p50_ms"] <= result["login_p99_ms"]
    # The verify is timed on both sides of the log-ins; the ratio divides by their mean.
    assert abs(result["argon2_verify_ms"] - (result["argon2_verify_ms_before"]
                                             + result["argon2_verify_ms_after"]) / 2) < 0.01
    # Every timer of the steady phase fired, once; how late is reported, not asserted.
    assert (result["timers_steady"], result["timer_duplicates"], result["timer_missed"]) \
        == (10, 0, 0)
    assert 0 <= result["timer_late_p50_ms"] <= result["timer_late_p99_ms"]
    assert abs(result["login_ratio"] - result["logins_per_s_per_core"]
               / result["argon2_limit_per_s_per_core"]) < 0.01
    assert abs(result["login_ratio_all_cores"] - result["logins_per_s_per_core"]
               * result["argon2_verify_ms_all_cores"] / 1000) < 0.01
    assert result["login_steady_busy"] >= 0
    # Each sign-in's image came in its start's answer (login() refuses one that did not).
    assert result["login_captcha"] == "inline"
    assert result["login_connections"] == "shared"
    assert result["argon2_memory_kib"] == 19 * 1024
    # The server's own account of its hashing (its /metrics) over the same window: one
    # verify a sign-in (give or take those in flight at either end), a share of the CPU.
    assert 0.5 <= result["login_hashes_per_login"] <= 2
    assert result["login_hash_cpu_ms"] > 0
    assert 0 < result["login_hash_share"] < 1
    # Two registrations, then every log-in and the audit's own count of them.
    assert result["audit_events"] > 2 * 4


def test_the_captcha_may_be_fetched_apart_and_each_sign_in_may_connect_anew() -> None:
    default = procedures.parse_args([])
    assert (default.captcha, default.connections) == ("inline", "shared")
    chosen = procedures.parse_args(["--captcha", "request", "--connections", "own",
                                    "--argon2-memory-kib", "64"])
    assert (chosen.captcha, chosen.connections) == ("request", "own")
    assert (default.argon2_memory_kib, chosen.argon2_memory_kib) == (19 * 1024, 64)
