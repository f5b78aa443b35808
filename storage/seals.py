"""Seal images of accounts on PostgreSQL (migration 0006).

Implements the ``Seals`` port of flows/ structurally (without importing flows). A
deleted seal stays as a row marked ``deleted_at``: never listed, found or served, but
what it showed can still be told from its hash.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg
import attrs

from engine import DuplicateKey
from engine.values import Write

# The constraint an organisation's seal past its cap hits (there is no index for it).
CAP = "seals_cap"


class SealGone(LookupError):
    """The seal was deleted (or is another account's) by the time the write ran."""


@attrs.frozen
class SealRow:
    id: str
    account_id: str
    kind: str
    text: str
    style: Mapping[str, Any]
    content_hash: str
    created_at: datetime
    updated_at: datetime


_COLUMNS = "id, account_id, kind, text, style, content_hash, created_at, updated_at"


def _row(r: asyncpg.Record) -> SealRow:
    return SealRow(id=str(r["id"]), account_id=str(r["account_id"]), kind=r["kind"],
                   text=r["text"], style=r["style"], content_hash=r["content_hash"],
                   created_at=r["created_at"], updated_at=r["updated_at"])


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _duplicate(exc: asyncpg.UniqueViolationError) -> DuplicateKey:
    return DuplicateKey(f"already there ({exc.constraint_name})",
                        constraint=exc.constraint_name)


class PgSeals:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def list(self, account_id: str) -> list[SealRow]:
        key = _uuid(account_id)
        if key is None:
            return []
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM seals WHERE account_id = $1 AND deleted_at IS NULL"
                " ORDER BY created_at, id", key)
        return [_row(r) for r in rows]

    async def get(self, account_id: str, seal_id: str) -> SealRow | None:
        account, seal = _uuid(account_id), _uuid(seal_id)
        if account is None or seal is None:
            return None
        async with self.pool.acquire() as conn:
            r = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM seals WHERE id = $1 AND account_id = $2"
                " AND deleted_at IS NULL", seal, account)
        return None if r is None else _row(r)

    # -- writes: each runs in the step's transaction -------------------------------------
    def create(self, *, seal_id: str, account_id: str, kind: str, text: str,
               style: Mapping[str, Any], content_hash: str, cap: int,
               now: datetime) -> Write:
        async def write(conn: asyncpg.Connection) -> None:
            account = uuid.UUID(account_id)
            # Two steps adding an organisation's last seals at once: the row lock makes
            # the second count the first one's seal.
            await conn.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", account)
            held = await conn.fetchval(
                "SELECT count(*) FROM seals WHERE account_id = $1 AND deleted_at IS NULL",
                account)
            if held >= cap:
                raise DuplicateKey(f"the account holds {held} seals", constraint=CAP)
            try:
                await conn.execute(
                    "INSERT INTO seals (id, account_id, kind, text, style, content_hash,"
                    " created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                    uuid.UUID(seal_id), account, kind, text, dict(style), content_hash, now)
            except asyncpg.UniqueViolationError as exc:
                raise _duplicate(exc) from None
        return write

    def restyle(self, *, seal_id: str, account_id: str, text: str,
                style: Mapping[str, Any], content_hash: str, now: datetime) -> Write:
        async def write(conn: asyncpg.Connection) -> None:
            try:
                status = await conn.execute(
                    "UPDATE seals SET text = $3, style = $4, content_hash = $5,"
                    " updated_at = $6 WHERE id = $1 AND account_id = $2"
                    " AND deleted_at IS NULL", uuid.UUID(seal_id), uuid.UUID(account_id),
                    text, dict(style), content_hash, now)
            except asyncpg.UniqueViolationError as exc:
                raise _duplicate(exc) from None
            if status.split()[-1] == "0":
                raise SealGone(seal_id)
        return write

    def delete(self, *, seal_id: str, account_id: str, now: datetime) -> Write:
        async def write(conn: asyncpg.Connection) -> None:
            status = await conn.execute(
                "UPDATE seals SET deleted_at = $3 WHERE id = $1 AND account_id = $2"
                " AND deleted_at IS NULL", uuid.UUID(seal_id), uuid.UUID(account_id), now)
            if status.split()[-1] == "0":
                raise SealGone(seal_id)
        return write
