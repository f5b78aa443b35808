"""Ports the platform's building blocks need, implemented in storage/."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from engine.values import Write


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

    def batch(self) -> Batch:
        """Commands to send together, in one round trip."""
        ...


class Batch(Protocol):
    """Commands of the Ephemeral port queued to go in one round trip, answered in order.

    Each is atomic on its own, not the batch (the keys need not share a Redis Cluster
    slot): for reads that do not depend on each other, and writes whose order among
    themselves does not matter to anyone reading meanwhile. A round trip costs the
    server more than the commands in it (a sign-in's Redis work was mostly its
    round trips), so a step that reads three keys asks once.
    """

    def get(self, key: str) -> None:
        """Answer: the value, or None."""
        ...

    def take(self, key: str) -> None:
        """Return and delete, as ``Ephemeral.take``. Answer: the value, or None."""
        ...

    def ttl(self, key: str) -> None:
        """Answer: the time left, as ``Ephemeral.ttl``."""
        ...

    def put(self, key: str, value: bytes, ttl: timedelta) -> None:
        """Store value for ttl. Answer: True."""
        ...

    def push(self, key: str, value: bytes, *, keep: int, ttl: timedelta) -> None:
        """As ``Ephemeral.push`` (not atomic here: its commands go in the batch).
        Answer: None."""
        ...

    def delete(self, key: str) -> None:
        """Delete the key. Answer: None."""
        ...

    @property
    def empty(self) -> bool:
        """Whether nothing is queued yet."""
        ...

    async def run(self) -> list[Any]:
        """Send every command queued, in order; their answers, in the same order."""
        ...


class Seal(Protocol):
    """A seal image of an account (flows/seals.py): what it shows and how it looks."""

    @property
    def id(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def kind(self) -> str: ...  # round | square
    @property
    def text(self) -> str: ...  # the name it shows: the organisation's, or the person's
    @property
    def style(self) -> Mapping[str, Any]: ...  # flows.sealart.Style.as_dict()
    @property
    def content_hash(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...


class Seals(Protocol):
    """The seals of accounts (storage/seals.py). Deleted seals are neither listed nor
    found. Writes run in the step's transaction: an identical seal of the account hits
    ``seals_distinct``, a person's second seal ``seals_one_square``, an organisation's
    seal past ``cap`` ``seals_cap`` (each ``engine.DuplicateKey``); a seal gone meanwhile
    raises ``LookupError``."""

    async def list(self, account_id: str) -> Sequence[Seal]:
        """The account's seals, oldest first."""
        ...

    async def get(self, account_id: str, seal_id: str) -> Seal | None:
        """One seal, if it is this account's and not deleted."""
        ...

    def create(self, *, seal_id: str, account_id: str, kind: str, text: str,
               style: Mapping[str, Any], content_hash: str, cap: int,
               now: datetime) -> Write: ...

    def restyle(self, *, seal_id: str, account_id: str, text: str,
                style: Mapping[str, Any], content_hash: str, now: datetime) -> Write: ...

    def delete(self, *, seal_id: str, account_id: str, now: datetime) -> Write: ...
