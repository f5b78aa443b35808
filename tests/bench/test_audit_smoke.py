"""The audit benchmark, end to end with tiny numbers: it fills, audits and cleans up
(times are reported, never asserted)."""

from __future__ import annotations

import asyncio
import json
import os

import asyncpg

from bench import audit, options


def test_a_tiny_run_audits_every_history_it_wrote_and_drops_its_database() -> None:
    opts = audit.Options(
        instances=40, rounds=2,
        admin_url=os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
        or options.DEFAULT_ADMIN_URL)
    result = json.loads(json.dumps(asyncio.run(audit._run(opts))))
    assert result["instances"] == 40
    assert result["events"] >= 40
    assert len(result["rounds"]) == 2
    assert all(r["events"] == result["events"] for r in result["rounds"])
    assert result["audit_events_per_s_cpu"] > 0
    assert result["audit_max_rss_mib"] > 0

    async def left() -> list[str]:
        conn = await asyncpg.connect(opts.admin_url)
        try:
            return [r[0] for r in await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname = $1",
                f"audit_bench_{os.getpid()}")]
        finally:
            await conn.close()

    assert asyncio.run(left()) == []
