"""The OpenID Connect provider's keys and client secrets on PostgreSQL.

Signing keys move next -> current -> retired -> gone (migrations/0009_oidc.sql); the
caller seals and opens private parts, this module only stores what it is given. The
systems each session entered, and the logout messages queued when it ends, are in
migrations/0010_oidc_logout.sql.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Collection
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

    # -- the systems each session entered (back-channel logout) -------------------------
    async def enter(self, *, session_ref: str, system_id: str, account_id: str,
                    agent_id: str | None, subject: str, now: datetime,
                    expires_at: datetime) -> str:
        """Record that a session entered a system; return the sid the system is told (the
        same for every entry of one session into one system)."""
        async with self.pool.acquire() as conn:
            sid: str = await conn.fetchval(
                "INSERT INTO oidc_session_systems (id, session_ref, system_id, sid,"
                " account_id, agent_id, subject, entered_at, expires_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                " ON CONFLICT (session_ref, system_id) DO UPDATE"
                " SET expires_at = GREATEST(oidc_session_systems.expires_at,"
                "                           EXCLUDED.expires_at)"
                " RETURNING sid", uuid.uuid4(), session_ref, system_id,
                secrets.token_urlsafe(24), uuid.UUID(account_id),
                uuid.UUID(agent_id) if agent_id else None, subject, now, expires_at)
        return sid

    async def end_sessions(self, *, now: datetime, topic: str, notify: Collection[str],
                           session_ref: str | None = None, account_id: str | None = None,
                           agent_id: str | None = None, kept: str | None = None,
                           ) -> list[EnteredSystem]:
        """Mark the systems entered by the sessions that ended as left, and queue, in the
        same transaction, a ``topic`` outbox message for each one in ``notify``.

        The sessions are the one ``session_ref`` names, or every live one of
        ``account_id`` (of its agent ``agent_id`` only, if given) but ``kept``.
        Return the entries that were still open.
        """
        if session_ref is None and account_id is None:
            raise ValueError("name a session or an account")
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"UPDATE oidc_session_systems SET ended_at = $1"
                " WHERE ended_at IS NULL AND expires_at > $1"
                " AND ($2::text IS NULL OR session_ref = $2)"
                " AND ($3::uuid IS NULL OR account_id = $3)"
                " AND ($4::uuid IS NULL OR agent_id = $4)"
                " AND ($5::text IS NULL OR session_ref <> $5)"
                f" RETURNING {_ENTERED}", now, session_ref,
                uuid.UUID(account_id) if account_id else None,
                uuid.UUID(agent_id) if agent_id else None, kept)
            entries = [_entered(r) for r in rows]
            await _queue_logouts(conn, entries, topic=topic, notify=notify, now=now)
        return entries

    async def expire_sessions(self, *, now: datetime, topic: str, notify: Collection[str],
                              limit: int = 1000) -> list[EnteredSystem]:
        """Sessions that timed out (nobody signed out: their Redis keys simply expired)
        leave the systems they entered too: mark up to ``limit`` such entries left at
        their expiry and queue their logout messages, in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE oidc_session_systems SET ended_at = expires_at WHERE id IN ("
                " SELECT id FROM oidc_session_systems WHERE ended_at IS NULL"
                " AND expires_at <= $1 ORDER BY expires_at LIMIT $2"
                f" FOR UPDATE SKIP LOCKED) RETURNING {_ENTERED}", now, limit)
            entries = [_entered(r) for r in rows]
            await _queue_logouts(conn, entries, topic=topic, notify=notify, now=now)
        return entries

    async def entered(self, sid: str) -> EnteredSystem | None:
        """The entry a sid names (ended or not)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {_ENTERED} FROM oidc_session_systems WHERE sid = $1", sid)
        return _entered(row) if row is not None else None

    async def prune_entries(self, now: datetime) -> int:
        """Forget the entries of sessions that ended (signed out, or timed out and
        swept) before ``now``: their logout messages are in the outbox already."""
        async with self.pool.acquire() as conn:
            status = await conn.execute(
                "DELETE FROM oidc_session_systems WHERE ended_at IS NOT NULL"
                " AND ended_at <= $1 AND expires_at <= $1", now)
        return int(status.split()[-1])


async def _queue_logouts(conn: asyncpg.Connection, entries: list[EnteredSystem], *,
                         topic: str, notify: Collection[str], now: datetime) -> None:
    """A ``topic`` outbox message for each entry into a system in ``notify`` (once per
    sid, whoever queues it)."""
    queued = [e for e in entries if e.system_id in notify]
    if queued:
        await conn.execute(
            "INSERT INTO outbox (instance_id, seq, topic, payload, idempotency_key,"
            " created_at, next_attempt_at)"
            " SELECT m.id, 1, $1, m.payload, 'oidc-logout:' || m.sid, $2, $2"
            " FROM unnest($3::uuid[], $4::text[], $5::json[]) AS m(id, sid, payload)"
            " ON CONFLICT (idempotency_key) DO NOTHING", topic, now,
            [uuid.UUID(e.id) for e in queued], [e.sid for e in queued],
            [e.payload() for e in queued])


@attrs.frozen
class EnteredSystem:
    """A session's entry into a system: what a logout token for it carries."""

    id: str
    session_ref: str
    system_id: str
    sid: str
    account_id: str
    agent_id: str | None
    subject: str
    ended_at: datetime | None

    def payload(self) -> dict[str, Any]:
        """The outbox message: enough to make the logout token when it is sent (signed
        then, with the key in force then), nothing personal."""
        return {"system": self.system_id, "sid": self.sid, "sub": self.subject,
                "jti": self.id}


_ENTERED = ("id, session_ref, system_id, sid, account_id, agent_id, subject, ended_at")


def _entered(r: asyncpg.Record) -> EnteredSystem:
    return EnteredSystem(id=str(r["id"]), session_ref=r["session_ref"],
                         system_id=r["system_id"], sid=r["sid"],
                         account_id=str(r["account_id"]),
                         agent_id=str(r["agent_id"]) if r["agent_id"] else None,
                         subject=r["subject"], ended_at=r["ended_at"])
