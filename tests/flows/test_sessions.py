"""Sessions in Redis."""

from __future__ import annotations

from datetime import UTC, datetime

import redis.asyncio as aioredis

from flows.sessions import Sessions
from storage.ephemeral import RedisEphemeral

NOW = datetime(2026, 3, 1, tzinfo=UTC)


async def test_a_session_is_found_by_its_token_only(redis_client: aioredis.Redis,
                                                    redis_prefix: str) -> None:
    sessions = Sessions(RedisEphemeral(redis_client, redis_prefix))
    token = await sessions.create(account_id="a1", kind="personal", display_name="Ada",
                                  now=NOW)
    found = await sessions.get(token)
    assert found is not None
    assert found.actor == "account:a1"
    assert await sessions.get(token + "x") is None
    keys = [k async for k in redis_client.scan_iter(match=f"{redis_prefix}session:*")]
    assert all(token.encode() not in k for k in keys)


async def test_ending_all_sessions_of_an_account_leaves_others(redis_client: aioredis.Redis,
                                                               redis_prefix: str) -> None:
    sessions = Sessions(RedisEphemeral(redis_client, redis_prefix))
    mine = [await sessions.create(account_id="a2", kind="personal", display_name="A", now=NOW)
            for _ in range(2)]
    other = await sessions.create(account_id="b2", kind="personal", display_name="B", now=NOW)
    await sessions.end_all("a2")
    assert [await sessions.get(t) for t in mine] == [None, None]
    assert await sessions.get(other) is not None
    fresh = await sessions.create(account_id="a2", kind="personal", display_name="A", now=NOW)
    assert await sessions.get(fresh) is not None
