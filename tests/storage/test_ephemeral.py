"""The Redis implementation of the Ephemeral port, against a real Redis."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import redis.asyncio as aioredis

from storage.ephemeral import RedisEphemeral, RedisLimiter


async def test_put_take_and_only_new(redis_client: aioredis.Redis, redis_prefix: str) -> None:
    eph = RedisEphemeral(redis_client, redis_prefix)
    assert await eph.put("a", b"1", timedelta(seconds=30))
    assert not await eph.put("a", b"2", timedelta(seconds=30), only_new=True)
    assert await eph.get("a") == b"1"
    assert await eph.take("a") == b"1"
    assert await eph.take("a") is None
    assert await eph.ttl("a") is None


async def test_get_many_answers_each_key_in_order(redis_client: aioredis.Redis,
                                                  redis_prefix: str) -> None:
    eph = RedisEphemeral(redis_client, redis_prefix)
    await eph.put("m1", b"one", timedelta(seconds=30))
    await eph.put("m3", b"three", timedelta(seconds=30))
    assert await eph.get_many("m3", "m2", "m1") == [b"three", None, b"one"]
    assert await eph.get_many("m1") == [b"one"]


async def test_incr_starts_the_window_on_the_first_hit_only(redis_client: aioredis.Redis,
                                                            redis_prefix: str) -> None:
    eph = RedisEphemeral(redis_client, redis_prefix)
    assert await eph.incr("n", timedelta(seconds=60)) == 1
    first = await eph.ttl("n")
    assert first is not None
    assert timedelta(seconds=59) < first <= timedelta(seconds=60)
    await redis_client.pexpire(redis_prefix + "n", 5000)
    assert await eph.incr("n", timedelta(seconds=60)) == 2
    later = await eph.ttl("n")
    assert later is not None
    assert later <= timedelta(seconds=5)


async def test_lists_keep_the_newest(redis_client: aioredis.Redis, redis_prefix: str) -> None:
    eph = RedisEphemeral(redis_client, redis_prefix)
    for i in range(5):
        await eph.push("inbox", str(i).encode(), keep=3, ttl=timedelta(minutes=1))
    assert await eph.items("inbox") == [b"4", b"3", b"2"]


async def test_pushes_in_a_batch_keep_the_newest_of_each_list_and_their_ttl(
        redis_client: aioredis.Redis, redis_prefix: str) -> None:
    eph = RedisEphemeral(redis_client, redis_prefix)
    for i in range(5):
        batch = eph.batch()
        batch.push("one", str(i).encode(), keep=2, ttl=timedelta(minutes=1))
        batch.push("all", str(i).encode(), keep=4, ttl=timedelta(minutes=1))
        assert await batch.run() == [None, None]
    assert await eph.items("one") == [b"4", b"3"]
    assert await eph.items("all") == [b"4", b"3", b"2", b"1"]
    for key in ("one", "all"):
        left = await eph.ttl(key)
        assert left is not None
        assert timedelta(seconds=50) < left <= timedelta(minutes=1)


async def test_count_once_counts_each_token_once_even_when_asked_at_once(
        redis_client: aioredis.Redis, redis_prefix: str) -> None:
    eph = RedisEphemeral(redis_client, redis_prefix)
    window = timedelta(seconds=60)
    counts = await asyncio.gather(*(eph.count_once("c", f"t{i % 10}", window)
                                    for i in range(40)))
    assert sorted(set(counts)) == list(range(1, 11))
    for i in range(10):  # every token keeps the number it got first
        assert counts.count(counts[i]) == 4
        assert await eph.count_once("c", f"t{i}", window) == counts[i]
    assert await eph.count_once("c", "new", window) == 11
    assert await eph.count_once("other", "t0", window) == 1
    left = await eph.ttl("{c}")
    assert left is not None
    assert left <= window


async def test_a_batch_answers_each_command_in_order(redis_client: aioredis.Redis,
                                                     redis_prefix: str) -> None:
    eph = RedisEphemeral(redis_client, redis_prefix)
    await eph.put("b1", b"one", timedelta(seconds=30))
    await eph.put("b2", b"two", timedelta(seconds=30))
    batch = eph.batch()
    assert batch.empty
    batch.get("b1")
    assert not batch.empty
    batch.take("b2")
    batch.ttl("b1")
    batch.ttl("absent")
    batch.put("b3", b"three", timedelta(seconds=30))
    batch.push("blist", b"x", keep=2, ttl=timedelta(seconds=30))
    batch.get("absent")
    await eph.put("b4", b"four", timedelta(seconds=30))
    batch.delete("b4")
    got = await batch.run()
    assert got[:2] == [b"one", b"two"]
    assert timedelta(seconds=29) < got[2] <= timedelta(seconds=30)
    assert got[3:] == [None, True, None, None, None]
    assert await eph.get("b2") is None  # taken
    assert await eph.get("b4") is None  # deleted
    assert await eph.get("b3") == b"three"
    assert await eph.items("blist") == [b"x"]
    blist = await eph.ttl("blist")
    assert blist is not None
    assert blist <= timedelta(seconds=30)
    assert await eph.batch().run() == []


async def test_limits_are_counted_in_order_up_to_the_first_one_over(
        redis_client: aioredis.Redis, redis_prefix: str) -> None:
    eph = RedisEphemeral(redis_client, redis_prefix)
    limiter = RedisLimiter(eph)
    minute = timedelta(minutes=1)
    hits = [("l:a", 5, minute), ("l:b", 1, minute), ("l:c", 5, minute)]
    assert await limiter.hit_each(hits) is None
    refused = await limiter.hit_each(hits)
    assert refused is not None
    assert refused[0] == 1
    assert timedelta(seconds=59) < refused[1] <= minute
    # Counted up to the one over, as one limit after the other: c kept its one hit.
    assert [await eph.get(k) for k in ("l:a", "l:b", "l:c")] == [b"2", b"2", b"1"]
    await eph.put("l:c", b"3", minute)
    assert (await limiter.hit_each(hits) or (0,))[0] == 1
    assert await eph.get("l:c") == b"3"  # given back
    assert await limiter.hit_each([]) is None
    assert await limiter.hit_each([("l:one", 1, minute)]) is None
    alone = await limiter.hit_each([("l:one", 1, minute)])
    assert alone is not None
    assert alone[0] == 0
    assert timedelta(seconds=59) < alone[1] <= minute


async def test_twenty_hits_at_once_pass_a_limit_of_five_exactly_five_times(
        redis_client: aioredis.Redis, redis_prefix: str) -> None:
    limiter = RedisLimiter(RedisEphemeral(redis_client, redis_prefix))
    hits = [("race:client", 100, timedelta(minutes=1)), ("race:who", 5, timedelta(minutes=1))]
    answers = await asyncio.gather(*(limiter.hit_each(hits) for _ in range(20)))
    assert sum(a is None for a in answers) == 5
    assert {a[0] for a in answers if a is not None} == {1}
