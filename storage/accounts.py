"""Accounts, organisations, agents, face passes and the audit log on PostgreSQL.

Implements the ``Accounts`` port of flows/ structurally (without importing flows).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import attrs

from engine import ConcurrencyConflict, DuplicateKey
from engine.values import Write

# An agent write: None when done, else why it was refused (nothing was changed).
AgentWrite = Callable[[asyncpg.Connection], Awaitable[str | None]]


@attrs.frozen
class AccountRow:
    id: str
    kind: str
    login_name: str
    display_name: str
    password_hash: str = attrs.field(repr=False)
    must_change_password: bool
    phone_sealed: bytes | None = attrs.field(repr=False)
    id_number_sealed: bytes | None = attrs.field(repr=False)


@attrs.frozen
class OrganisationRow:
    account_id: str
    name: str
    credit_code: str
    legal_rep_name: str
    legal_rep_id_sealed: bytes = attrs.field(repr=False)
    verified: bool
    verified_by: str | None
    verified_at: datetime | None = None
    contact_phone_sealed: bytes | None = attrs.field(default=None, repr=False)


@attrs.frozen
class CertificationChangeRow:
    """A change of an organisation's certification data, as ``pending_change`` reads it."""

    id: str
    organisation_id: str
    instance_id: str
    flow: str
    status: str
    changed: tuple[str, ...]
    shown: dict[str, Any]
    created_at: datetime
    expires_at: datetime


@attrs.frozen
class AgentRow:
    id: str
    organisation_id: str
    name: str
    phone_sealed: bytes = attrs.field(repr=False)
    is_primary: bool


@attrs.frozen
class AccountNameRow:
    """How pages name an account: its kind, login and display names, and for an
    organisation its registered name."""

    id: str
    kind: str
    login_name: str
    display_name: str
    organisation_name: str | None


_ACCOUNT = ("id, kind, login_name, display_name, password_hash, must_change_password, "
            "phone_sealed, id_number_sealed")


def _account(r: asyncpg.Record | None) -> AccountRow | None:
    if r is None:
        return None
    return AccountRow(id=str(r["id"]), kind=r["kind"], login_name=r["login_name"],
                      display_name=r["display_name"], password_hash=r["password_hash"],
                      must_change_password=r["must_change_password"],
                      phone_sealed=r["phone_sealed"], id_number_sealed=r["id_number_sealed"])


_AGENT = "id, organisation_id, name, phone_sealed, is_primary"


def _agent(r: asyncpg.Record) -> AgentRow:
    return AgentRow(id=str(r["id"]), organisation_id=str(r["organisation_id"]),
                    name=r["name"], phone_sealed=r["phone_sealed"], is_primary=r["is_primary"])


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _any(value: str | Sequence[str] | None) -> list[str] | None:
    """A filter's values as a text[] parameter: None filters nothing."""
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


# The constraints that keep exactly one primary agent (0007_agents.sql).
_PRIMARY_CONSTRAINTS = ("agents_one_primary", "agents_primary_required")

# What an agent write found in its locked transaction, refusing it (flows.accounts).
NOT_PRIMARY = "not_primary"
AGENT_UNKNOWN = "agent_unknown"
AGENT_IS_PRIMARY = "agent_is_primary"


async def _execute(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    """Run a write; a unique key already taken becomes DuplicateKey naming it."""
    try:
        status: str = await conn.execute(sql, *args)
    except asyncpg.UniqueViolationError as exc:
        raise DuplicateKey(f"already registered ({exc.constraint_name})",
                           constraint=exc.constraint_name) from None
    return status


async def _lock_organisation(conn: asyncpg.Connection, organisation: uuid.UUID,
                             acting_agent: uuid.UUID) -> str | None:
    """Lock the organisation's row, so its agent writes take turns; then whether the
    acting agent is still its primary one (None: it is)."""
    await conn.execute("SELECT 1 FROM organisations WHERE account_id = $1 FOR UPDATE",
                       organisation)
    primary = await conn.fetchval(
        "SELECT is_primary FROM agents WHERE id = $1 AND organisation_id = $2",
        acting_agent, organisation)
    return None if primary else NOT_PRIMARY


async def _other_agent(conn: asyncpg.Connection, organisation: uuid.UUID,
                       acting_agent: uuid.UUID, target: uuid.UUID | None) -> str | None:
    """With the organisation locked and the acting agent its primary one, whether
    ``target`` is another agent of it (None: it is), ordinary, to remove or promote."""
    refused = await _lock_organisation(conn, organisation, acting_agent)
    if refused:
        return refused
    primary = None if target is None else await conn.fetchval(
        "SELECT is_primary FROM agents WHERE id = $1 AND organisation_id = $2",
        target, organisation)
    if primary is None:
        return AGENT_UNKNOWN
    # The primary agent is the acting one: not to be removed, nothing to hand over.
    return AGENT_IS_PRIMARY if primary else None


async def _insert_agent(conn: asyncpg.Connection, agent: uuid.UUID, organisation: uuid.UUID,
                        name: str, id_number_sealed: bytes, id_number_index: bytes,
                        phone_sealed: bytes, phone_index: bytes, *, primary: bool,
                        now: datetime) -> None:
    await _execute(
        conn,
        "INSERT INTO agents (id, organisation_id, name, id_number_sealed,"
        " id_number_index, phone_sealed, phone_index, is_primary, created_at)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
        agent, organisation, name, id_number_sealed, id_number_index, phone_sealed,
        phone_index, primary, now)


async def _exactly_one_primary(conn: asyncpg.Connection) -> None:
    """Check the deferred constraints now, inside the write, not at the commit: the
    organisation's row is locked, so only another writer that skipped the lock can make
    them fail, and that is a race lost (409), not a 500 at the commit."""
    try:
        await conn.execute(f"SET CONSTRAINTS {', '.join(_PRIMARY_CONSTRAINTS)} IMMEDIATE")
    except (asyncpg.ExclusionViolationError, asyncpg.CheckViolationError) as exc:
        if exc.constraint_name not in _PRIMARY_CONSTRAINTS:
            raise
        raise ConcurrencyConflict(f"agents changed meanwhile ({exc.constraint_name})") \
            from None


class PgAccounts:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def _one(self, sql: str, *args: Any) -> AccountRow | None:
        async with self.pool.acquire() as conn:
            return _account(await conn.fetchrow(sql, *args))

    async def by_login_name(self, login_name: str) -> AccountRow | None:
        return await self._one(f"SELECT {_ACCOUNT} FROM accounts WHERE login_key = $1",
                               login_name.strip().lower())

    async def by_id_index(self, id_index: bytes) -> AccountRow | None:
        return await self._one(f"SELECT {_ACCOUNT} FROM accounts"
                               " WHERE kind = 'personal' AND id_number_index = $1", id_index)

    async def by_phone_index(self, phone_index: bytes) -> AccountRow | None:
        return await self._one(f"SELECT {_ACCOUNT} FROM accounts WHERE phone_index = $1"
                               " AND kind IN ('personal', 'supervisor')", phone_index)

    async def by_id(self, account_id: str) -> AccountRow | None:
        key = _uuid(account_id)
        if key is None:
            return None
        return await self._one(f"SELECT {_ACCOUNT} FROM accounts WHERE id = $1", key)

    async def credit_code_registered(self, credit_code: str) -> bool:
        async with self.pool.acquire() as conn:
            return bool(await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM organisations WHERE credit_code = $1)",
                credit_code))

    async def organisation(self, account_id: str) -> OrganisationRow | None:
        key = _uuid(account_id)
        if key is None:
            return None
        async with self.pool.acquire() as conn:
            r = await conn.fetchrow(
                "SELECT account_id, name, credit_code, legal_rep_name, legal_rep_id_sealed,"
                " verified, verified_by, verified_at, contact_phone_sealed FROM organisations"
                " WHERE account_id = $1", key)
        if r is None:
            return None
        return OrganisationRow(account_id=str(r["account_id"]), name=r["name"],
                               credit_code=r["credit_code"], legal_rep_name=r["legal_rep_name"],
                               legal_rep_id_sealed=r["legal_rep_id_sealed"],
                               verified=r["verified"], verified_by=r["verified_by"],
                               verified_at=r["verified_at"],
                               contact_phone_sealed=r["contact_phone_sealed"])

    async def organisation_by_credit_code(self, credit_code: str) -> OrganisationRow | None:
        async with self.pool.acquire() as conn:
            account_id = await conn.fetchval(
                "SELECT account_id FROM organisations WHERE credit_code = $1", credit_code)
        return None if account_id is None else await self.organisation(str(account_id))

    async def agents(self, organisation_id: str) -> list[AgentRow]:
        key = _uuid(organisation_id)
        if key is None:
            return []
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_AGENT} FROM agents"
                " WHERE organisation_id = $1 ORDER BY is_primary DESC, created_at, id", key)
        return [_agent(r) for r in rows]

    async def agent_with(self, organisation_id: str, *, phone_index: bytes | None = None,
                         id_number_index: bytes | None = None) -> AgentRow | None:
        """The organisation's agent with this phone, or else with this ID number."""
        key = _uuid(organisation_id)
        if key is None:
            return None
        async with self.pool.acquire() as conn:
            r = await conn.fetchrow(
                f"SELECT {_AGENT} FROM agents"
                " WHERE organisation_id = $1 AND (phone_index = $2 OR id_number_index = $3)"
                " LIMIT 1", key, phone_index, id_number_index)
        return None if r is None else _agent(r)

    async def organisations_of_agent_phone(self, phone_index: bytes) -> list[AccountRow]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {', '.join('a.' + c.strip() for c in _ACCOUNT.split(','))}"
                " FROM accounts a JOIN agents g ON g.organisation_id = a.id"
                " WHERE g.phone_index = $1 ORDER BY a.login_key", phone_index)
        return [row for r in rows if (row := _account(r)) is not None]

    async def face_passed(self, person_index: bytes, *, owner: str,
                          since: datetime) -> bool:
        async with self.pool.acquire() as conn:
            return bool(await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM face_passes WHERE person_index = $1"
                " AND owner = $2 AND passed_at >= $3)", person_index, owner, since))

    async def instance_for(self, provider: str, ref: str) -> str | None:
        async with self.pool.acquire() as conn:
            found = await conn.fetchval(
                "SELECT instance_id FROM provider_refs WHERE provider = $1 AND ref = $2",
                provider, ref)
        return str(found) if found is not None else None

    # -- writes ---------------------------------------------------------------------
    def create_person(self, *, account_id: str, kind: str, login_name: str,
                      display_name: str, password_hash: str, id_number_sealed: bytes | None,
                      id_number_index: bytes | None, phone_sealed: bytes | None,
                      phone_index: bytes | None, must_change_password: bool,
                      now: datetime) -> Write:
        async def write(conn: asyncpg.Connection) -> None:
            await _execute(
                conn,
                "INSERT INTO accounts (id, kind, login_name, login_key, display_name,"
                " password_hash, must_change_password, id_number_sealed, id_number_index,"
                " phone_sealed, phone_index, created_at, password_changed_at)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$12)",
                uuid.UUID(account_id), kind, login_name, login_name.strip().lower(),
                display_name, password_hash, must_change_password, id_number_sealed,
                id_number_index, phone_sealed, phone_index, now)
        return write

    def create_organisation(self, *, account_id: str, login_name: str, name: str,
                            credit_code: str, password_hash: str, legal_rep_name: str,
                            legal_rep_id_sealed: bytes, legal_rep_id_index: bytes,
                            agent_id: str, agent_name: str, agent_id_sealed: bytes,
                            agent_id_index: bytes, agent_phone_sealed: bytes,
                            agent_phone_index: bytes, now: datetime) -> Write:
        async def write(conn: asyncpg.Connection) -> None:
            await _execute(
                conn,
                "INSERT INTO accounts (id, kind, login_name, login_key, display_name,"
                " password_hash, created_at, password_changed_at)"
                " VALUES ($1, 'organisation', $2, $3, $4, $5, $6, $6)",
                uuid.UUID(account_id), login_name, login_name.strip().lower(), name,
                password_hash, now)
            await _execute(
                conn,
                "INSERT INTO organisations (account_id, name, credit_code, legal_rep_name,"
                " legal_rep_id_sealed, legal_rep_id_index) VALUES ($1,$2,$3,$4,$5,$6)",
                uuid.UUID(account_id), name, credit_code, legal_rep_name,
                legal_rep_id_sealed, legal_rep_id_index)
            await _insert_agent(conn, uuid.UUID(agent_id), uuid.UUID(account_id), agent_name,
                                agent_id_sealed, agent_id_index, agent_phone_sealed,
                                agent_phone_index, primary=True, now=now)
        return write

    def add_agent(self, organisation_id: str, *, acting_agent_id: str, agent_id: str,
                  name: str, id_number_sealed: bytes, id_number_index: bytes,
                  phone_sealed: bytes, phone_index: bytes,
                  now: datetime) -> AgentWrite:
        async def write(conn: asyncpg.Connection) -> str | None:
            org = uuid.UUID(organisation_id)
            refused = await _lock_organisation(conn, org, uuid.UUID(acting_agent_id))
            if refused:
                return refused
            await _insert_agent(conn, uuid.UUID(agent_id), org, name, id_number_sealed,
                                id_number_index, phone_sealed, phone_index, primary=False,
                                now=now)
            await _exactly_one_primary(conn)
            return None
        return write

    def remove_agent(self, organisation_id: str, *, acting_agent_id: str,
                     agent_id: str) -> AgentWrite:
        async def write(conn: asyncpg.Connection) -> str | None:
            org, target = uuid.UUID(organisation_id), _uuid(agent_id)
            refused = await _other_agent(conn, org, uuid.UUID(acting_agent_id), target)
            if refused:
                return refused
            await conn.execute("DELETE FROM agents WHERE id = $1 AND organisation_id = $2",
                               target, org)
            await _exactly_one_primary(conn)
            return None
        return write

    def transfer_primary(self, organisation_id: str, *, acting_agent_id: str,
                         to_agent_id: str) -> AgentWrite:
        async def write(conn: asyncpg.Connection) -> str | None:
            org, acting, target = (uuid.UUID(organisation_id), uuid.UUID(acting_agent_id),
                                   _uuid(to_agent_id))
            refused = await _other_agent(conn, org, acting, target)
            if refused:
                return refused
            # Demote and promote in one statement: the row order does not matter, the
            # exclusion constraint being deferred.
            await conn.execute(
                "UPDATE agents SET is_primary = (id = $3)"
                " WHERE organisation_id = $1 AND id IN ($2, $3)", org, acting, target)
            await _exactly_one_primary(conn)
            return None
        return write

    def set_password(self, account_id: str, password_hash: str, *, must_change: bool,
                     now: datetime) -> Write:
        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE accounts SET password_hash = $2, must_change_password = $3,"
                " password_changed_at = $4 WHERE id = $1",
                uuid.UUID(account_id), password_hash, must_change, now)
        return write

    def set_phone(self, account_id: str, *, phone_sealed: bytes,
                  phone_index: bytes) -> Write:
        async def write(conn: asyncpg.Connection) -> None:
            await _execute(
                conn,
                "UPDATE accounts SET phone_sealed = $2, phone_index = $3 WHERE id = $1",
                uuid.UUID(account_id), phone_sealed, phone_index)
        return write

    def mark_verified(self, organisation_id: str, *, by: str, note: str | None,
                      now: datetime) -> Write:
        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE organisations SET verified = true, verified_at = $2, verified_by = $3,"
                " verification_note = $4 WHERE account_id = $1",
                uuid.UUID(organisation_id), now, by, note)
        return write

    def record_face_pass(self, person_index: bytes, owner: str, instance_id: str,
                         now: datetime) -> Write:
        async def write(conn: asyncpg.Connection) -> None:
            # The latest pass counts: the window runs from it.
            await conn.execute(
                "INSERT INTO face_passes (person_index, owner, passed_at, instance_id)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (person_index, owner) DO UPDATE"
                " SET passed_at = excluded.passed_at, instance_id = excluded.instance_id"
                " WHERE face_passes.passed_at < excluded.passed_at",
                person_index, owner, now, uuid.UUID(instance_id))
        return write

    def link_provider_ref(self, provider: str, ref: str, instance_id: str,
                          now: datetime) -> Write:
        async def write(conn: asyncpg.Connection) -> None:
            await _execute(
                conn,
                "INSERT INTO provider_refs (provider, ref, instance_id, created_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (provider, ref) DO NOTHING",
                provider, ref, uuid.UUID(instance_id), now)
        return write

    def audit(self, *, actor: str, action: str, target: str, reason: str,
              details: dict[str, Any], now: datetime) -> Write:
        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO audit_log (at, actor, action, target, reason, details)"
                " VALUES ($1, $2, $3, $4, $5, $6)", now, actor, action, target, reason,
                details)
        return write

    async def audit_entries(self, target: str | None = None) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, at, actor, action, target, reason, details FROM audit_log"
                " WHERE $1::text IS NULL OR target = $1 ORDER BY id", target)
        return [dict(r) for r in rows]

    async def audit_page(self, *, target: str | Sequence[str] | None = None,
                         actor: str | Sequence[str] | None = None,
                         action: str | None = None, before: int | None = None,
                         limit: int = 100) -> list[dict[str, Any]]:
        """Audit entries, newest first, optionally filtered (a target or actor: one
        value, or any of several); ``before``: ids below it."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, at, actor, action, target, reason, details FROM audit_log"
                " WHERE ($1::text[] IS NULL OR target = ANY($1))"
                " AND ($2::text[] IS NULL OR actor = ANY($2))"
                " AND ($3::text IS NULL OR action = $3) AND ($4::bigint IS NULL OR id < $4)"
                " ORDER BY id DESC LIMIT $5", _any(target), _any(actor), action, before,
                limit)
        return [dict(r) for r in rows]

    async def names(self, account_ids: Sequence[str]) -> list[AccountNameRow]:
        """How pages name these accounts, in one query however many there are (ids
        that are no account's are left out)."""
        keys = list({key for i in account_ids if (key := _uuid(i)) is not None})
        if not keys:
            return []
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT a.id, a.kind, a.login_name, a.display_name, o.name AS organisation"
                " FROM accounts a LEFT JOIN organisations o ON o.account_id = a.id"
                " WHERE a.id = ANY($1::uuid[])", keys)
        return [AccountNameRow(id=str(r["id"]), kind=r["kind"], login_name=r["login_name"],
                               display_name=r["display_name"],
                               organisation_name=r["organisation"]) for r in rows]

    # -- certification changes (SPEC 10.1.1; migration 0008 says how they live) ------
    async def pending_change(self, organisation_id: str, *,
                             now: datetime) -> CertificationChangeRow | None:
        """The organisation's pending certification change, if it is still alive at
        ``now``; its ``expires_at`` is when it ends (the instance's deadline, if sooner)."""
        key = _uuid(organisation_id)
        if key is None:
            return None
        async with self.pool.acquire() as conn:
            r = await conn.fetchrow(
                "SELECT c.id, c.organisation_id, c.instance_id, i.flow, c.status, c.changed,"
                " c.shown, c.created_at, LEAST(c.expires_at, i.deadline_at) AS expires_at"
                " FROM certification_changes c JOIN flow_instances i ON i.id = c.instance_id"
                f" WHERE c.organisation_id = $1 AND c.status = 'pending' AND {_ALIVE}",
                key, now)
        if r is None:
            return None
        return CertificationChangeRow(
            id=str(r["id"]), organisation_id=str(r["organisation_id"]),
            instance_id=str(r["instance_id"]), flow=r["flow"], status=r["status"],
            changed=tuple(r["changed"]), shown=dict(r["shown"]),
            created_at=r["created_at"], expires_at=r["expires_at"])

    def propose_change(self, *, change_id: str, organisation_id: str, instance_id: str,
                       name: str, credit_code: str, legal_rep_name: str,
                       legal_rep_id_sealed: bytes, legal_rep_id_index: bytes,
                       contact_phone_sealed: bytes | None, contact_phone_index: bytes | None,
                       changed: Sequence[str], shown: dict[str, Any],
                       now: datetime) -> Write:
        async def write(conn: asyncpg.Connection) -> None:
            # Dead changes that would block this one (of this organisation, or claiming
            # the credit code) end first, in this transaction.
            await conn.execute(
                "UPDATE certification_changes c SET status = 'expired', decided_at = $2"
                " FROM flow_instances i WHERE i.id = c.instance_id AND c.status = 'pending'"
                f" AND (c.organisation_id = $1 OR c.credit_code = $3) AND NOT ({_ALIVE})",
                uuid.UUID(organisation_id), now, credit_code)
            status = await _execute(
                conn,
                "INSERT INTO certification_changes (id, organisation_id, instance_id, status,"
                " name, credit_code, legal_rep_name, legal_rep_id_sealed, legal_rep_id_index,"
                " contact_phone_sealed, contact_phone_index, changed, shown, created_at,"
                " expires_at) SELECT $1, $2, i.id, 'pending', $4, $5, $6, $7, $8, $9, $10,"
                " $11, $12, $13, i.expires_at FROM flow_instances i WHERE i.id = $3",
                uuid.UUID(change_id), uuid.UUID(organisation_id), uuid.UUID(instance_id),
                name, credit_code, legal_rep_name, legal_rep_id_sealed, legal_rep_id_index,
                contact_phone_sealed, contact_phone_index, list(changed), shown, now)
            if status != "INSERT 0 1":
                raise ConcurrencyConflict("the flow instance of the change is not stored")
        return write

    def apply_change(self, change_id: str, *, verified_by: str, note: str | None,
                     now: datetime) -> Write:
        """The pending change becomes the organisation's data, which stays verified (by
        the re-verification); a change no longer pending is a conflict."""
        async def write(conn: asyncpg.Connection) -> None:
            r = await conn.fetchrow(
                "UPDATE certification_changes SET status = 'applied', decided_at = $2"
                " WHERE id = $1 AND status = 'pending' RETURNING organisation_id, name,"
                " credit_code, legal_rep_name, legal_rep_id_sealed, legal_rep_id_index,"
                " contact_phone_sealed, contact_phone_index", uuid.UUID(change_id), now)
            if r is None:
                raise ConcurrencyConflict("the certification change is no longer pending")
            await _set_certification(
                conn, r["organisation_id"], r["name"], r["credit_code"], r["legal_rep_name"],
                r["legal_rep_id_sealed"], r["legal_rep_id_index"], r["contact_phone_sealed"],
                r["contact_phone_index"], verified=(verified_by, note, now))
        return write

    def update_certification(self, organisation_id: str, *, name: str, credit_code: str,
                             legal_rep_name: str, legal_rep_id_sealed: bytes,
                             legal_rep_id_index: bytes, contact_phone_sealed: bytes | None,
                             contact_phone_index: bytes | None) -> Write:
        """An unverified organisation's new data, at once; one verified meanwhile is a
        conflict (its changes wait for re-verification)."""
        async def write(conn: asyncpg.Connection) -> None:
            await _set_certification(
                conn, uuid.UUID(organisation_id), name, credit_code, legal_rep_name,
                legal_rep_id_sealed, legal_rep_id_index, contact_phone_sealed,
                contact_phone_index, verified=None)
        return write

    def end_change(self, change_id: str, *, status: str, now: datetime) -> Write:
        """A pending change ends unapplied (``withdrawn`` or ``expired``); one that is
        not pending any more stays as it is."""
        if status not in ("withdrawn", "expired"):
            raise ValueError(f"a change ends withdrawn or expired, not {status!r}")

        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE certification_changes SET status = $2, decided_at = $3"
                " WHERE id = $1 AND status = 'pending'", uuid.UUID(change_id), status, now)
        return write


# A pending change is alive while its flow instance is active, before the instance's
# expiry and before the deadline of the state it waits in (migration 0008). $2 is now.
_ALIVE = ("c.expires_at > $2 AND i.status = 'active'"
          " AND (i.deadline_at IS NULL OR i.deadline_at > $2)")


async def _set_certification(conn: asyncpg.Connection, organisation_id: uuid.UUID, name: str,
                             credit_code: str, legal_rep_name: str, rep_id_sealed: bytes,
                             rep_id_index: bytes, phone_sealed: bytes | None,
                             phone_index: bytes | None,
                             verified: tuple[str, str | None, datetime] | None) -> None:
    """Write an organisation's certification data (and its account's display name):
    ``verified`` (by, note, at) re-verifies it; None: only while it is unverified."""
    by, note, at = verified if verified is not None else (None, None, None)
    status = await _execute(
        conn,
        "UPDATE organisations SET name = $2, credit_code = $3, legal_rep_name = $4,"
        " legal_rep_id_sealed = $5, legal_rep_id_index = $6, contact_phone_sealed = $7,"
        " contact_phone_index = $8,"
        " verified_at = CASE WHEN $9::text IS NULL THEN verified_at ELSE $11 END,"
        " verified_by = COALESCE($9, verified_by),"
        " verification_note = CASE WHEN $9::text IS NULL THEN verification_note ELSE $10 END"
        " WHERE account_id = $1 AND ($9::text IS NOT NULL OR NOT verified)",
        organisation_id, name, credit_code, legal_rep_name, rep_id_sealed, rep_id_index,
        phone_sealed, phone_index, by, note, at)
    if status != "UPDATE 1":
        raise ConcurrencyConflict("the organisation was verified meanwhile")
    await conn.execute("UPDATE accounts SET display_name = $2 WHERE id = $1",
                       organisation_id, name)
