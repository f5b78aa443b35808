"""The Ephemeral port on Redis (redis.asyncio): one server, a Redis Cluster, or the master
that Redis Sentinel names.

On a cluster every command and script touches one slot: each takes a single key, or
keys that share a hash tag (``{...}``), and the pipelines of several keys
(``get_many``, batches, a step's limits) are split by slot by the
cluster client: never a transaction, never a script of keys of two slots.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection
from redis.backoff import NoBackoff

from engine.ports import Hit

# A client of one Redis server, or of a Redis Cluster: the same commands, and
# ``pubsub()``, ``register_script()``, ``pipeline(transaction=False)`` on both.
RedisClient = aioredis.Redis | RedisCluster

# INCR, and start the window on the first increment only (EXPIRE NX needs Redis 7).
_INCR = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""

# A limit's hit: _INCR, and when over the limit (ARGV[2]) the time left (PTTL), else -3.
_WITHIN = -3
_HIT = f"""
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then return redis.call('PTTL', KEYS[1]) end
return {_WITHIN}
"""

# A hit given back: one less, unless that would end the window (or it ended already).
_UNHIT = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 1 then redis.call('DECR', KEYS[1]) end
return n
"""

# Count once per token: the token's key remembers the count it got, so asking again
# answers the same. Both keys share a hash tag ({...}): one Redis Cluster slot.
_COUNT_ONCE = """
local seen = redis.call('GET', KEYS[2])
if seen then return tonumber(seen) end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
redis.call('SET', KEYS[2], n, 'PX', ARGV[1])
return n
"""

# LPUSH, keep the newest ARGV[2], renew the TTL: one key, one atomic script (a MULTI
# pipeline would need a transaction-capable cluster client).
_PUSH = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class _MasterConnection(SentinelManagedConnection):
    """A connection to wherever the sentinels say the master is now, on every connect.

    redis-py (8.1) reconnects a dropped connection through ``connect_check_health``,
    which uses the address of the last connect and skips the sentinels (its issue
    3874): after a failover the retry went back to the demoted master and met READONLY
    again. Here every connect asks first; a connect is rare, a question is one round
    trip to a sentinel.
    """

    async def connect_check_health(self, check_health: bool = True,
                                   retry_socket_connect: bool = True) -> None:
        if not self.is_connected and self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(check_health, retry_socket_connect)


class _MasterSSLConnection(_MasterConnection, SSLConnection):
    """The same over TLS (``rediss://``)."""


class SentinelMaster(aioredis.Redis):
    """The master a Sentinel names, followed through failovers; closing it closes the
    connections to the sentinels as well."""

    watchers: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.watchers is not None:
            for client in self.watchers.sentinels:
                await client.aclose()


def create_redis(url: str, *, timeout: float | None = None, cluster: bool = False,
                 sentinels: Sequence[tuple[str, int]] = (),
                 sentinel_master: str = "mymaster") -> RedisClient:
    """A client that answers or fails within ``timeout`` seconds (None: no bound).

    redis-py retries a failed command ten times with backoff by default: with Redis
    down every request would wait seconds to fail, and with it frozen a minute. A
    dropped connection (Redis restarted) is retried once, on a new connection; a
    timeout is not retried.

    ``cluster``: ``url`` names one node of a Redis Cluster (any will do); the client
    reads the slot map from it and follows MOVED and ASK redirections. Once too: a
    node that fails over is answered by its replica after the map is read again.

    ``sentinels``: the addresses of Redis Sentinel processes watching ``sentinel_master``;
    ``url`` then gives only the master's password, database and TLS (``rediss://``), its
    host is not used. Each new connection asks a sentinel where the master is now; a
    connection to a master that was demoted (READONLY) or is gone is dropped, and the
    one retry asks again, so a failover costs the commands in flight, not the process.
    """
    retry = Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))
    if sentinels:
        parts = urlsplit(url)
        bounds = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        watchers = Sentinel(  # type: ignore[no-untyped-call]
            list(sentinels), sentinel_kwargs=dict(bounds), **bounds)
        master: SentinelMaster = watchers.master_for(
            sentinel_master, redis_class=SentinelMaster, retry=retry,
            connection_class=_MasterSSLConnection if parts.scheme == "rediss"
            else _MasterConnection,
            db=int(parts.path.strip("/") or 0),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None)
        master.watchers = watchers
        return master
    if cluster:
        return RedisCluster.from_url(url, socket_timeout=timeout,
                                     socket_connect_timeout=timeout, retry=retry)
    return aioredis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                             retry=retry)


async def warm(client: RedisClient) -> None:
    """Read a cluster's slot map now, before requests share the client: commands that
    race to a cold cluster client each start the map's first reading, and one resets
    connections another is setting up. Redis down: the client reads it when it can."""
    if isinstance(client, RedisCluster):
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await client.initialize()


def _bytes(value: bytes | str | None) -> bytes | None:
    # The client is created without decode_responses, so values are bytes; say so to mypy.
    return value.encode() if isinstance(value, str) else value


def _ms(ttl: timedelta) -> int:
    return max(1, int(ttl.total_seconds() * 1000))


def _ttl(ms: int) -> timedelta | None:
    """PTTL's answer: -2 no such key, -1 no expiry."""
    if ms < 0:
        return None if ms == -2 else timedelta.max
    return timedelta(milliseconds=ms)


class RedisEphemeral:
    def __init__(self, redis: RedisClient, prefix: str = "flows:") -> None:
        self.redis = redis
        self.prefix = prefix
        self._incr = redis.register_script(_INCR)
        self._count_once = redis.register_script(_COUNT_ONCE)
        self._push = redis.register_script(_PUSH)

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def put(self, key: str, value: bytes, ttl: timedelta, *,
                  only_new: bool = False) -> bool:
        done = await self.redis.set(self._k(key), value, px=_ms(ttl), nx=only_new)
        return bool(done)

    async def get(self, key: str) -> bytes | None:
        return _bytes(await self.redis.get(self._k(key)))

    async def get_many(self, *keys: str) -> list[bytes | None]:
        # A pipeline of GETs, not MGET: one round trip on one server, and a cluster
        # client sends it per node (one round trip each) where MGET across slots would
        # be refused with CROSSSLOT.
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(self._k(key))
            return [_bytes(v) for v in await pipe.execute()]

    async def take(self, key: str) -> bytes | None:
        return _bytes(await self.redis.getdel(self._k(key)))

    async def delete(self, *keys: str) -> None:
        if keys:
            await self.redis.delete(*(self._k(k) for k in keys))

    async def incr(self, key: str, ttl: timedelta) -> int:
        return int(await self._incr(keys=[self._k(key)], args=[_ms(ttl)]))

    async def count_once(self, key: str, token: str, ttl: timedelta) -> int:
        tagged = self._k("{" + key + "}")
        return int(await self._count_once(keys=[tagged, f"{tagged}:once:{token}"],
                                          args=[_ms(ttl)]))

    async def ttl(self, key: str) -> timedelta | None:
        return _ttl(int(await self.redis.pttl(self._k(key))))

    async def push(self, key: str, value: bytes, *, keep: int, ttl: timedelta) -> None:
        await self._push(keys=[self._k(key)], args=[value, keep, _ms(ttl)])

    async def items(self, key: str, limit: int = 100) -> list[bytes]:
        return [v if isinstance(v, bytes) else v.encode()
                for v in await self.redis.lrange(self._k(key), 0, limit - 1)]

    def batch(self) -> RedisBatch:
        return RedisBatch(self)


class RedisBatch:
    """The Ephemeral port's Batch: a non-transactional pipeline (split by node on a
    Redis Cluster), each command's answer in the port's terms."""

    def __init__(self, ephemeral: RedisEphemeral) -> None:
        self._ephemeral = ephemeral
        # Each command: how many Redis commands it queues, and what its answer is made of.
        self._queued: list[tuple[int, Callable[[list[Any]], Any]]] = []
        self._calls: list[Callable[[Any], object]] = []

    def _add(self, calls: Sequence[Callable[[Any], object]],
             answer: Callable[[list[Any]], Any]) -> None:
        self._calls.extend(calls)
        self._queued.append((len(calls), answer))

    def get(self, key: str) -> None:
        k = self._ephemeral._k(key)
        self._add([lambda p: p.get(k)], lambda r: _bytes(r[0]))

    def take(self, key: str) -> None:
        k = self._ephemeral._k(key)
        self._add([lambda p: p.getdel(k)], lambda r: _bytes(r[0]))

    def ttl(self, key: str) -> None:
        k = self._ephemeral._k(key)
        self._add([lambda p: p.pttl(k)], lambda r: _ttl(int(r[0])))

    def put(self, key: str, value: bytes, ttl: timedelta) -> None:
        k = self._ephemeral._k(key)
        self._add([lambda p: p.set(k, value, px=_ms(ttl))], lambda r: bool(r[0]))

    def push(self, key: str, value: bytes, *, keep: int, ttl: timedelta) -> None:
        k = self._ephemeral._k(key)
        self._add([lambda p: p.lpush(k, value), lambda p: p.ltrim(k, 0, keep - 1),
                   lambda p: p.pexpire(k, _ms(ttl))], lambda r: None)

    def delete(self, key: str) -> None:
        k = self._ephemeral._k(key)
        self._add([lambda p: p.delete(k)], lambda r: None)

    @property
    def empty(self) -> bool:
        return not self._queued

    async def run(self) -> list[Any]:
        if not self._calls:
            return []
        async with self._ephemeral.redis.pipeline(transaction=False) as pipe:
            for call in self._calls:
                call(pipe)
            raw = await pipe.execute()
        answers, at = [], 0
        for n, answer in self._queued:
            answers.append(answer(raw[at:at + n]))
            at += n
        return answers


class RedisLimiter:
    """The engine's Limiter port: fixed windows that start at the first step counted.

    The limits of a step are counted in one pipeline (a Redis Cluster splits it by
    node), each by a script of one key; those after the first one over are then given
    their hit back. Meanwhile they show it: a step that races this one may be refused
    where it would have passed a moment later, never the other way round. A count
    that the hit took from nothing is left at one rather than deleted, so a window
    another step started meanwhile is never lost.
    """

    def __init__(self, ephemeral: RedisEphemeral) -> None:
        self.ephemeral = ephemeral
        self._hit = ephemeral.redis.register_script(_HIT)

    async def hit_each(self, hits: Sequence[Hit]) -> tuple[int, timedelta] | None:
        redis = self.ephemeral.redis
        if len(hits) == 1:  # most steps count one: no pipeline to build
            key, limit, window = hits[0]
            answers = [await self._hit(keys=[self.ephemeral._k(key)],
                                       args=[_ms(window), limit])]
        else:
            # EVAL, not EVALSHA: a cluster's pipeline does not load a script a node lacks.
            async with redis.pipeline(transaction=False) as pipe:
                for key, limit, window in hits:
                    pipe.eval(_HIT, 1, self.ephemeral._k(key), _ms(window), limit)
                answers = await pipe.execute()
        for i, ms in enumerate(answers):
            if int(ms) != _WITHIN:
                later = hits[i + 1:]
                if later:
                    async with redis.pipeline(transaction=False) as pipe:
                        for key, _, _ in later:
                            pipe.eval(_UNHIT, 1, self.ephemeral._k(key))
                        await pipe.execute()
                return i, _ttl(int(ms)) or hits[i][2]
        return None
