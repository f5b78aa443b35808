"""Ports the platform's building blocks need, implemented in storage/."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol


class Ephemeral(Protocol):
    """Short-lived shared state (Redis): captchas, codes, counters, sessions.

    Keys are plain strings; the implementation adds its own namespace prefix. Every
    operation is atomic on its own, and values expire by themselves.
    """

    async def put(self, key: str, value: bytes, ttl: timedelta, *,
                  only_new: bool = False) -> bool:
        """Store value for ttl; with only_new, only if the key is absent. True if stored."""
        ...

    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, *keys: str) -> list[bytes | None]:
        """Several values in one round trip, in order (not one atomic read: the keys
        need not share a Redis Cluster slot)."""
        ...

    async def take(self, key: str) -> bytes | None:
        """Return and delete in one step: what single-use values need."""
        ...

    async def delete(self, *keys: str) -> None: ...

    async def incr(self, key: str, ttl: timedelta) -> int:
        """Add one; the key expires ttl after its first increment (a fixed window)."""
        ...

    async def count_once(self, key: str, token: str, ttl: timedelta) -> int:
        """Add one to the counter ``key`` unless ``token`` was counted on it already.

        Return the count as of the token's first counting: asking again with a token
        (a retried step) gives the same number and adds nothing. The counter's window
        starts at its first increment, like ``incr``'s; the token is remembered as long.
        """
        ...

    async def ttl(self, key: str) -> timedelta | None:
        """Time left before the key expires; None if it does not exist."""
        ...

    async def push(self, key: str, value: bytes, *, keep: int, ttl: timedelta) -> None:
        """Prepend to a list, keeping the newest `keep` items."""
        ...

    async def items(self, key: str, limit: int = 100) -> list[bytes]:
        """The newest `limit` items of a list, newest first."""
        ...
