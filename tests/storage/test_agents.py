"""An organisation's agents in PostgreSQL: exactly one primary agent, whatever the writer
and however many race (storage/migrations/0007_agents.sql, PgAccounts' agent writes).

Sealed values and indexes are random bytes here: storage never looks inside them.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from engine import ConcurrencyConflict, DuplicateKey
from storage.accounts import PgAccounts

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


async def _run(pool: asyncpg.Pool, write: Any) -> Any:
    """Run one write in a transaction of its own, as a step runs it."""
    async with pool.acquire() as conn, conn.transaction():
        return await write(conn)


async def new_organisation(pool: asyncpg.Pool, agents: int = 1) -> tuple[str, list[str]]:
    """An organisation with ``agents`` agents, the first of them primary."""
    accounts = PgAccounts(pool)
    org, first = str(uuid.uuid4()), str(uuid.uuid4())
    await _run(pool, accounts.create_organisation(
        account_id=org, login_name="o" + uuid.uuid4().hex[:12], name="测试有限公司",
        credit_code=uuid.uuid4().hex[:18].upper(), password_hash="x", legal_rep_name="张伟",
        legal_rep_id_sealed=os.urandom(16), legal_rep_id_index=os.urandom(32),
        agent_id=first, agent_name="张伟", agent_id_sealed=os.urandom(16),
        agent_id_index=os.urandom(32), agent_phone_sealed=os.urandom(16),
        agent_phone_index=os.urandom(32), now=NOW))
    ids = [first]
    for n in range(agents - 1):
        ids.append(str(uuid.uuid4()))
        assert await _run(pool, accounts.add_agent(
            org, acting_agent_id=first, agent_id=ids[-1], name=f"经办人{n}",
            id_number_sealed=os.urandom(16), id_number_index=os.urandom(32),
            phone_sealed=os.urandom(16), phone_index=os.urandom(32), now=NOW)) is None
    return org, ids


async def rows(pool: asyncpg.Pool, org: str) -> dict[str, bool]:
    async with pool.acquire() as conn:
        found = await conn.fetch("SELECT id, is_primary FROM agents WHERE organisation_id = $1",
                                 uuid.UUID(org))
    return {str(r["id"]): r["is_primary"] for r in found}


# -- the constraints, for any writer ----------------------------------------------------

async def test_an_update_leaving_no_primary_agent_fails_at_commit(pool: asyncpg.Pool) -> None:
    org, ids = await new_organisation(pool, agents=2)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        # Deferred: the statement passes, the commit does not.
        await conn.execute("UPDATE agents SET is_primary = false WHERE organisation_id = $1",
                           uuid.UUID(org))
        with pytest.raises(asyncpg.CheckViolationError) as caught:
            await tx.commit()
    assert caught.value.constraint_name == "agents_primary_required"
    assert await rows(pool, org) == {ids[0]: True, ids[1]: False}


async def test_deleting_the_primary_agent_fails_at_commit(pool: asyncpg.Pool) -> None:
    org, ids = await new_organisation(pool, agents=2)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("DELETE FROM agents WHERE id = $1", uuid.UUID(ids[0]))
        with pytest.raises(asyncpg.CheckViolationError):
            await tx.commit()
    assert await rows(pool, org) == {ids[0]: True, ids[1]: False}


async def test_an_update_making_two_primary_agents_fails_at_commit(pool: asyncpg.Pool) -> None:
    org, ids = await new_organisation(pool, agents=2)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("UPDATE agents SET is_primary = true WHERE id = $1",
                           uuid.UUID(ids[1]))
        with pytest.raises(asyncpg.ExclusionViolationError) as caught:
            await tx.commit()
    assert caught.value.constraint_name == "agents_one_primary"
    assert await rows(pool, org) == {ids[0]: True, ids[1]: False}


@pytest.mark.parametrize("promote_first", [True, False])
async def test_a_transfer_commits_in_either_order_of_rows(pool: asyncpg.Pool,
                                                          promote_first: bool) -> None:
    org, ids = await new_organisation(pool, agents=2)
    steps = [("UPDATE agents SET is_primary = true WHERE id = $1", ids[1]),
             ("UPDATE agents SET is_primary = false WHERE id = $1", ids[0])]
    async with pool.acquire() as conn, conn.transaction():
        for sql, agent in steps if promote_first else reversed(steps):
            await conn.execute(sql, uuid.UUID(agent))
    assert await rows(pool, org) == {ids[0]: False, ids[1]: True}


async def test_two_writers_that_skip_the_lock_cannot_leave_no_primary(
        pool: asyncpg.Pool) -> None:
    """One hands the role from A to B, the other removes B, which was not primary when it
    looked: the second waits for the first and its commit then finds no primary."""
    org, (a, b, c) = await new_organisation(pool, agents=3)
    async with pool.acquire() as one, pool.acquire() as two:
        t1, t2 = one.transaction(), two.transaction()
        await t1.start()
        await t2.start()
        await one.execute("UPDATE agents SET is_primary = (id = $3)"
                          " WHERE organisation_id = $1 AND id IN ($2, $3)",
                          uuid.UUID(org), uuid.UUID(a), uuid.UUID(b))
        remove = asyncio.ensure_future(two.execute("DELETE FROM agents WHERE id = $1",
                                                   uuid.UUID(b)))
        await t1.commit()
        await remove
        with pytest.raises(asyncpg.CheckViolationError):
            await t2.commit()
    assert await rows(pool, org) == {a: False, b: True, c: False}


async def test_the_same_phone_or_person_is_one_agent_of_an_organisation(
        pool: asyncpg.Pool) -> None:
    accounts = PgAccounts(pool)
    org, ids = await new_organisation(pool)
    phone, person = os.urandom(32), os.urandom(32)

    def add(phone_index: bytes, id_index: bytes) -> Any:
        return accounts.add_agent(org, acting_agent_id=ids[0], agent_id=str(uuid.uuid4()),
                                  name="李四", id_number_sealed=b"s", id_number_index=id_index,
                                  phone_sealed=b"s", phone_index=phone_index, now=NOW)

    assert await _run(pool, add(phone, person)) is None
    for twice, constraint in (((phone, os.urandom(32)),
                               "agents_organisation_id_phone_index_key"),
                              ((os.urandom(32), person), "agents_one_person")):
        with pytest.raises(DuplicateKey) as caught:
            await _run(pool, add(*twice))
        assert caught.value.extra["constraint"] == constraint
    # Another organisation may have the same person and phone as an agent.
    other, other_ids = await new_organisation(pool)
    assert await _run(pool, accounts.add_agent(
        other, acting_agent_id=other_ids[0], agent_id=str(uuid.uuid4()), name="李四",
        id_number_sealed=b"s", id_number_index=person, phone_sealed=b"s",
        phone_index=phone, now=NOW)) is None
    found = await accounts.agent_with(other, phone_index=phone)
    assert found is not None
    assert found.name == "李四"
    assert await accounts.agent_with(other, phone_index=os.urandom(32)) is None
    assert await accounts.agent_with(other, id_number_index=person) is not None


# -- the agent writes -------------------------------------------------------------------

async def test_agent_writes_refuse_what_no_longer_holds_and_change_nothing(
        pool: asyncpg.Pool) -> None:
    accounts = PgAccounts(pool)
    org, (primary, other) = await new_organisation(pool, agents=2)
    stranger_org, (stranger,) = await new_organisation(pool)
    before = await rows(pool, org)
    assert await _run(pool, accounts.remove_agent(org, acting_agent_id=other,
                                                  agent_id=primary)) == "not_primary"
    assert await _run(pool, accounts.transfer_primary(org, acting_agent_id=other,
                                                      to_agent_id=other)) == "not_primary"
    assert await _run(pool, accounts.add_agent(
        org, acting_agent_id=other, agent_id=str(uuid.uuid4()), name="王五",
        id_number_sealed=b"s", id_number_index=os.urandom(32), phone_sealed=b"s",
        phone_index=os.urandom(32), now=NOW)) == "not_primary"
    # Another organisation's agent is no agent of this one; the primary is not removed.
    assert await _run(pool, accounts.remove_agent(org, acting_agent_id=primary,
                                                  agent_id=stranger)) == "agent_unknown"
    assert await _run(pool, accounts.transfer_primary(org, acting_agent_id=primary,
                                                      to_agent_id=stranger)) == "agent_unknown"
    assert await _run(pool, accounts.remove_agent(org, acting_agent_id=primary,
                                                  agent_id="not-a-uuid")) == "agent_unknown"
    assert await _run(pool, accounts.remove_agent(org, acting_agent_id=primary,
                                                  agent_id=primary)) == "agent_is_primary"
    assert await _run(pool, accounts.transfer_primary(org, acting_agent_id=primary,
                                                      to_agent_id=primary)) \
        == "agent_is_primary"
    assert await rows(pool, org) == before
    assert await rows(pool, stranger_org) == {stranger: True}
    # The old primary, once it handed the role over, can no longer act.
    assert await _run(pool, accounts.transfer_primary(org, acting_agent_id=primary,
                                                      to_agent_id=other)) is None
    assert await rows(pool, org) == {primary: False, other: True}
    assert await _run(pool, accounts.remove_agent(org, acting_agent_id=primary,
                                                  agent_id=other)) == "not_primary"


async def _waiting_for_a_lock(pool: asyncpg.Pool) -> None:
    """Return once a session of this database waits for a lock."""
    async with pool.acquire() as conn:
        # Polls another server process's state: there is no event to wait on.
        while not await conn.fetchval(  # noqa: ASYNC110
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname ="
                " current_database() AND wait_event_type = 'Lock')"):
            await asyncio.sleep(0.01)


async def test_a_write_racing_one_that_skipped_the_lock_is_a_clean_conflict(
        pool: asyncpg.Pool) -> None:
    """A writer that takes no lock (a console session) makes C primary meanwhile; the
    flows' transfer from A to B, checked before its commit, is a 409 conflict, not a
    failed commit."""
    accounts = PgAccounts(pool)
    org, (a, b, c) = await new_organisation(pool, agents=3)
    async with pool.acquire() as rogue:
        tx = rogue.transaction()
        await tx.start()
        await rogue.execute("UPDATE agents SET is_primary = (id = $2)"
                            " WHERE organisation_id = $1", uuid.UUID(org), uuid.UUID(c))
        transfer = asyncio.ensure_future(_run(pool, accounts.transfer_primary(
            org, acting_agent_id=a, to_agent_id=b)))
        # The transfer found A primary, and waits for the rows the rogue holds.
        await _waiting_for_a_lock(pool)
        await tx.commit()
        with pytest.raises(ConcurrencyConflict):
            await transfer
    assert await rows(pool, org) == {a: False, b: False, c: True}


async def test_fifty_concurrent_transfers_and_removals_leave_exactly_one_primary(
        pool: asyncpg.Pool) -> None:
    accounts = PgAccounts(pool)
    org, ids = await new_organisation(pool, agents=12)
    rng = random.Random(9)
    writes: list[tuple[str, str, str, Any]] = []
    for n in range(50):
        # Half act as the first primary, the rest as anybody: some agents act after they
        # handed the role on or were removed; targets may be removed or promoted meanwhile.
        acting = ids[0] if n % 2 == 0 else rng.choice(ids)
        target = rng.choice(ids[1:] if n % 3 else ids)
        kind = "transfer" if n % 2 == 0 else "remove"
        write = accounts.transfer_primary(org, acting_agent_id=acting, to_agent_id=target) \
            if kind == "transfer" else \
            accounts.remove_agent(org, acting_agent_id=acting, agent_id=target)
        writes.append((kind, acting, target, write))

    async def attempt(write: Any) -> Any:
        try:
            return await _run(pool, write)
        except ConcurrencyConflict:
            return "conflict"

    outcomes = await asyncio.gather(*(attempt(w) for *_, w in writes))
    # Every one got a clean answer; none failed at its commit.
    assert set(outcomes) <= {None, "not_primary", "agent_unknown", "agent_is_primary"}, \
        outcomes
    removed = {target for (kind, _, target, _), outcome in zip(writes, outcomes, strict=True)
               if kind == "remove" and outcome is None}
    found = await rows(pool, org)
    assert sum(found.values()) == 1, found
    # No agent lost but the ones removed; none removed twice.
    assert set(found) == set(ids) - removed
    removals = [o for (kind, *_), o in zip(writes, outcomes, strict=True)
                if kind == "remove" and o is None]
    assert len(removals) == len(removed)
    # At least one of each went through: the race was a race.
    assert any(o is None for (kind, *_), o in zip(writes, outcomes, strict=True)
               if kind == "transfer")
