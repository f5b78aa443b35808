"""The OpenID Connect provider's keys and client secrets on PostgreSQL.

Signing keys move next -> current -> retired -> gone (migrations/0009_oidc.sql); the
caller seals and opens private parts, this module only stores what it is given.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg
import attrs

from engine import DuplicateKey


@attrs.frozen
class SigningKeyRow:
    kid: str
    alg: str
    public_jwk: dict[str, Any]
    private_sealed: bytes | None = attrs.field(repr=False)
    state: str  # next | current | retired
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None
    published_until: datetime | None


_KEY = ("kid, alg, public_jwk, private_sealed, state, created_at, activated_at, retired_at,"
        " published_until")


def _key(r: asyncpg.Record) -> SigningKeyRow:
    return SigningKeyRow(kid=r["kid"], alg=r["alg"], public_jwk=dict(r["public_jwk"]),
                         private_sealed=r["private_sealed"], state=r["state"],
                         created_at=r["created_at"], activated_at=r["activated_at"],
                         retired_at=r["retired_at"], published_until=r["published_until"])


class PgOidc:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- signing keys ------------------------------------------------------------------
    async def published_keys(self, now: datetime) -> list[SigningKeyRow]:
        """Every key still published at ``now``: next, current, and retired ones whose
        tokens may still be alive; the signing one first."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_KEY} FROM oidc_signing_keys WHERE state <> 'retired'"
                " OR published_until > $1 ORDER BY (state = 'current') DESC,"
                " (state = 'next') DESC, created_at DESC", now)
        return [_key(r) for r in rows]

    async def all_keys(self) -> list[SigningKeyRow]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(f"SELECT {_KEY} FROM oidc_signing_keys"
                                    " ORDER BY created_at, kid")
        return [_key(r) for r in rows]

    async def add_key(self, *, kid: str, alg: str, public_jwk: dict[str, Any],
                      private_sealed: bytes, now: datetime, first_only: bool = False) -> str | None:
        """Store a new key: 'current' if no key signs yet, else 'next'. Return its state.

        With ``first_only``, store it only if no key signs yet (None if one does): how a
        development server makes its first key, whichever of its processes starts first.
        A 'next' key already waiting is a DuplicateKey (rotate first).
        """
        async with self.pool.acquire() as conn:
            try:
                state: str | None = await conn.fetchval(
                    "INSERT INTO oidc_signing_keys (kid, alg, public_jwk, private_sealed,"
                    " state, created_at, activated_at)"
                    " SELECT $1, $2, $3, $4, s.state, $5,"
                    "   CASE WHEN s.state = 'current' THEN $5::timestamptz END"
                    " FROM (SELECT CASE WHEN EXISTS (SELECT 1 FROM oidc_signing_keys"
                    "   WHERE state = 'current') THEN 'next' ELSE 'current' END AS state) s"
                    " WHERE NOT $6 OR s.state = 'current'"
                    " RETURNING state", kid, alg, public_jwk, private_sealed, now, first_only)
            except asyncpg.UniqueViolationError as exc:
                if first_only:
                    return None  # another process made the first key meanwhile
                raise DuplicateKey("a next key is already waiting: rotate to it first",
                                   constraint=exc.constraint_name) from None
        return state

    async def rotate(self, now: datetime, publish_for: timedelta) -> tuple[str, str | None] | None:
        """Make the next key the current one; the current one retires, published for
        ``publish_for`` more. Return (new current kid, retired kid), or None without a
        next key."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE oidc_signing_keys IN SHARE ROW EXCLUSIVE MODE")
            nxt = await conn.fetchval(
                "SELECT kid FROM oidc_signing_keys WHERE state = 'next'")
            if nxt is None:
                return None
            retired = await conn.fetchval(
                "UPDATE oidc_signing_keys SET state = 'retired', private_sealed = NULL,"
                " retired_at = $1, published_until = $2 WHERE state = 'current'"
                " RETURNING kid", now, now + publish_for)
            await conn.execute(
                "UPDATE oidc_signing_keys SET state = 'current', activated_at = $2"
                " WHERE kid = $1", nxt, now)
        return str(nxt), (str(retired) if retired is not None else None)

    async def prune_keys(self, now: datetime) -> list[str]:
        """Delete the retired keys no token signed with them can still be alive for."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "DELETE FROM oidc_signing_keys WHERE state = 'retired'"
                " AND published_until <= $1 RETURNING kid", now)
        return [r["kid"] for r in rows]

    async def reseal_keys(self, reseal: Any) -> int:
        """Rewrite each private part ``reseal`` returns a new blob for (a key rotation of
        the vault); return how many were rewritten."""
        changed = 0
        async with self.pool.acquire() as conn, conn.transaction():
            for r in await conn.fetch("SELECT kid, private_sealed FROM oidc_signing_keys"
                                      " WHERE private_sealed IS NOT NULL FOR UPDATE"):
                blob = reseal(r["private_sealed"])
                if blob is not None:
                    await conn.execute("UPDATE oidc_signing_keys SET private_sealed = $2"
                                       " WHERE kid = $1", r["kid"], blob)
                    changed += 1
        return changed

    # -- client secrets ----------------------------------------------------------------
    async def secret_hashes(self, system_id: str) -> list[bytes]:
        """The hashes of the system's secrets in force."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT secret_hash FROM oidc_client_secrets WHERE system_id = $1"
                " AND revoked_at IS NULL", system_id)
        return [bytes(r["secret_hash"]) for r in rows]

    async def add_secret(self, system_id: str, secret_hash: bytes, now: datetime, *,
                         revoke_others: bool) -> int:
        """Store a new secret's hash; return how many older secrets were revoked."""
        async with self.pool.acquire() as conn, conn.transaction():
            revoked = 0
            if revoke_others:
                status = await conn.execute(
                    "UPDATE oidc_client_secrets SET revoked_at = $2 WHERE system_id = $1"
                    " AND revoked_at IS NULL", system_id, now)
                revoked = int(status.split()[-1])
            await conn.execute(
                "INSERT INTO oidc_client_secrets (system_id, secret_hash, created_at)"
                " VALUES ($1, $2, $3)", system_id, secret_hash, now)
        return revoked

    async def secrets_summary(self) -> dict[str, tuple[int, datetime]]:
        """Per system: how many secrets are in force, and when the newest was made."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT system_id, count(*) AS n, max(created_at) AS newest"
                " FROM oidc_client_secrets WHERE revoked_at IS NULL GROUP BY system_id")
        return {r["system_id"]: (int(r["n"]), r["newest"]) for r in rows}
