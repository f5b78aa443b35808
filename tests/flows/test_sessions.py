"""Sessions in Redis."""

from __future__ import annotations

from datetime import UTC, datetime

import redis.asyncio as aioredis

from flows.sessions import Ended, Sessions, ref
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


async def test_ending_the_other_sessions_keeps_the_one_named_with_its_agent_and_time(
        redis_client: aioredis.Redis, redis_prefix: str) -> None:
    sessions = Sessions(RedisEphemeral(redis_client, redis_prefix))
    kept, other = [await sessions.create(account_id="a3", kind="organisation",
                                         display_name="Org", now=NOW, agent_id="g1")
                   for _ in range(2)]
    stranger = await sessions.create(account_id="b3", kind="personal", display_name="B",
                                     now=NOW)
    left = await RedisEphemeral(redis_client, redis_prefix).ttl("session:" + ref(kept))
    assert await sessions.end_others("a3", keep=ref(kept)) is True
    still = await sessions.get(kept)
    assert still is not None
    assert still.agent_id == "g1"
    assert await sessions.get(other) is None
    assert await sessions.get(stranger) is not None
    after = await RedisEphemeral(redis_client, redis_prefix).ttl("session:" + ref(kept))
    assert left is not None
    assert after is not None
    assert after <= left
    # Another account's session, or none, keeps nothing of this account.
    assert await sessions.end_others("a3", keep=ref(stranger)) is False
    assert await sessions.get(kept) is None
    assert await sessions.get(stranger) is not None
    fresh = await sessions.create(account_id="a3", kind="organisation", display_name="Org",
                                  now=NOW)
    assert await sessions.end_others("a3", keep=None) is False
    assert await sessions.get(fresh) is None


async def test_a_session_ended_before_cannot_be_kept(redis_client: aioredis.Redis,
                                                     redis_prefix: str) -> None:
    sessions = Sessions(RedisEphemeral(redis_client, redis_prefix))
    old = await sessions.create(account_id="a4", kind="personal", display_name="A", now=NOW)
    await sessions.end_all("a4")
    assert await sessions.end_others("a4", keep=ref(old)) is False
    assert await sessions.get(old) is None


async def test_a_removed_agents_sessions_end_and_any_made_later_are_dead(
        redis_client: aioredis.Redis, redis_prefix: str) -> None:
    sessions = Sessions(RedisEphemeral(redis_client, redis_prefix))
    removed, staying = [await sessions.create(account_id="o4", kind="organisation",
                                              display_name="Org", now=NOW, agent_id=agent)
                        for agent in ("g4", "h4")]
    elsewhere = await sessions.create(account_id="p4", kind="organisation",
                                      display_name="Other", now=NOW, agent_id="k4")
    ended = []
    sessions.listeners.append(lambda what: _record(ended, what))
    await sessions.end_agent("o4", "g4")
    assert [(e.reason, e.account_id, e.agent_id) for e in ended] == [
        ("agent_removed", "o4", "g4")]
    assert await sessions.get(removed) is None
    assert await sessions.by_ref(ref(removed)) is None
    # A sign-in that checked the agent's code before the removal, and makes its session
    # after it, makes a dead one.
    late = await sessions.create(account_id="o4", kind="organisation", display_name="Org",
                                 now=NOW, agent_id="g4")
    assert await sessions.get(late) is None
    found = await sessions.get(staying)
    assert found is not None
    assert found.agent_id == "h4"
    assert await sessions.get(elsewhere) is not None


async def test_a_session_is_found_by_its_ref_while_it_is_valid(
        redis_client: aioredis.Redis, redis_prefix: str) -> None:
    sessions = Sessions(RedisEphemeral(redis_client, redis_prefix))
    token = await sessions.create(account_id="a5", kind="organisation", display_name="Org",
                                  now=NOW, agent_id="g5")
    found = await sessions.by_ref(ref(token))
    assert found is not None
    assert (found.account_id, found.agent_id) == ("a5", "g5")
    for wrong in (None, "", token, ref(token)[:-1], ref(token + "x")):
        assert await sessions.by_ref(wrong) is None
    await sessions.end_all("a5")
    assert await sessions.by_ref(ref(token)) is None


async def _record(into: list[Ended], what: Ended) -> None:
    into.append(what)
