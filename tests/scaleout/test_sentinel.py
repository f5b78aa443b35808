"""Redis Sentinel: sessions re-run (tests/flows/test_sessions.py) on the master three
sentinels name, through PgBouncer; then a failover while people are signed in.

REDIS_SENTINELS and REDIS_SENTINEL_MASTER name the sentinels and the master; REDIS_URL
gives only the database (docs/operations.md).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.flows.test_phones import new_account, second_browser, sign_in, signed_in_as
from tests.flows.test_sessions import *  # noqa: F403
from tests.platform import Platform
from tests.throwaway import RedisSentinel

pytestmark = pytest.mark.scaleout


@pytest.fixture
def backends(redis_sentinel: RedisSentinel) -> dict[str, Any]:
    # The host of REDIS_URL is not used: the sentinels say where the master is.
    return {"redis_url": "redis://flows/0", "redis_sentinels": redis_sentinel.sentinels,
            "redis_sentinel_master": redis_sentinel.MASTER,
            "db_transaction_pooling": True, "db_statement_timeout": 0}


async def test_people_stay_signed_in_and_sign_in_anew_across_a_failover(
        platform: Platform, redis_sentinel: RedisSentinel) -> None:
    before = redis_sentinel.master()
    person = await new_account(platform)
    assert await sign_in(platform, person["login"]) == 200
    redis_sentinel.failover()
    assert redis_sentinel.master() != before
    # The session was replicated; the server's pooled connections still lead to the
    # old master, now a replica: reads are answered there, and the first write on
    # each meets READONLY, drops it and asks the sentinels again.
    assert await signed_in_as(platform)
    async with second_browser(platform) as other:
        # A captcha and the sign-in's counters are writes: on the new master.
        assert await sign_in(other, person["login"]) == 200
        assert await signed_in_as(other)
    assert (await platform.client.post("/api/session/logout")).status in (200, 204)
    assert not await signed_in_as(platform)
