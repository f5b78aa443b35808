"""Signed-in sessions, kept in the Ephemeral store so every server process sees them.

A session token is 256 random bits; only its SHA-256 is a key. Ending every session of
an account (after a password reset) bumps the account's generation: sessions made
under an older generation are no longer valid, wherever they are. Ending the *other*
sessions (after the account's own password or phone changed) bumps it too, and moves
the one session that asked into the new generation: ``ref(token)`` names a session
without its token, which the web layer hands the step (``ActionInput.session``), and
``by_ref`` finds it again.

An organisation's session carries the agent who signed in. Removing the agent ends
its sessions for that organisation at once (``end_agent``): a mark under the agent's
id (agent ids are never reused) that every look-up reads in the same round trip as the
account's generation. A mark, not a generation the session copies when it is made: a
sign-in that checked the agent's code just before the removal committed, and makes its
session just after, makes a session that is dead already.

A session shows the account's name as it was at sign-in, unless the name changed
since: ``rename`` keeps the account's current name beside its generation, read in the
same round trip, for every session of it (an organisation's certification change gives
it a new name; its header and ``GET /api/session`` show it from the next request).

Whoever must know when sessions end (single sign-on logs the person out of the business
systems the session entered) listens with ``Sessions.listeners``: each listener is told
which sessions ended, after they did.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import attrs

from engine import OutboxMessage
from flows.ports import Batch, Ephemeral

# Outlives every session (hours) by far.
_GENERATION_TTL = timedelta(days=60)
# The outbox topic of an account whose name changed (payload: its account_id).
RENAMED = "account_renamed"
# A session's ref: the hex SHA-256 of its token.
_REF_LENGTH = 64


def strings(values: Iterable[str]) -> tuple[str, ...]:
    """A tuple of text, from the list JSON gives back."""
    return tuple(str(v) for v in values)


@attrs.frozen
class Session:
    account_id: str
    kind: str  # personal | organisation | supervisor | admin
    display_name: str
    created_at: str
    agent_id: str | None = None
    generation: int = 0
    must_change_password: bool = False
    # How the person proved who they are (RFC 8176 names): pwd, and sms for the code
    # an organisation's agent received. What single sign-on tells business systems.
    amr: tuple[str, ...] = attrs.field(default=("pwd",), converter=strings)

    @property
    def actor(self) -> str:
        """How histories name this user: admin:<id> or account:<id>."""
        return f"admin:{self.account_id}" if self.kind == "admin" else \
            f"account:{self.account_id}"


@attrs.frozen
class Ended:
    """Which sessions just ended: the one ``session`` names (its ref), or every session of
    ``account_id`` (of its agent ``agent_id`` only, if given) but the one ``kept``."""

    reason: str  # logout | end_all | end_others | agent_removed
    session: str | None = None
    account_id: str | None = None
    agent_id: str | None = None
    kept: str | None = None


Listener = Callable[[Ended], Awaitable[None]]


def generation_of(raw: bytes | None) -> int:
    """An account's session generation, from its stored value (none: 0)."""
    return int(raw) if raw else 0


def ref(token: str) -> str:
    """How a session is named without its token: the SHA-256 of the token, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def _key(token: str) -> str:
    return "session:" + ref(token)


def _agent_gone(agent_id: str) -> str:
    return f"agent_gone:{agent_id}"


class Sessions:
    def __init__(self, ephemeral: Ephemeral, *, ttl: timedelta = timedelta(hours=8)) -> None:
        self.ephemeral = ephemeral
        self.ttl = ttl
        self.listeners: list[Listener] = []

    async def _ended(self, ended: Ended) -> None:
        for listener in self.listeners:
            await listener(ended)

    async def _generation(self, account_id: str) -> int:
        return generation_of(await self.ephemeral.get(f"session_gen:{account_id}"))

    @staticmethod
    def read_generation_in(batch: Batch, account_id: str) -> None:
        """Read the account's generation with a batch (``generation_of`` its answer),
        for ``create``: a sign-in reads it with the other keys it needs anyway.

        Read any time after the account was loaded to check its password: whatever
        ends its sessions after the read ends the session made with it too."""
        batch.get(f"session_gen:{account_id}")

    async def create(self, *, account_id: str, kind: str, display_name: str, now: datetime,
                     agent_id: str | None = None,
                     must_change_password: bool = False,
                     amr: tuple[str, ...] = ("pwd",), generation: int | None = None,
                     also: Callable[[Batch], None] | None = None) -> str:
        """Start a session; return its token (shown once, to the client only).

        ``generation``: the account's, as ``read_generation_in`` read it (None: read now).
        ``also``: queues other commands to send with the session's (one round trip).
        """
        token = secrets.token_urlsafe(32)
        if generation is None:
            generation = await self._generation(account_id)
        session = Session(account_id=account_id, kind=kind, display_name=display_name,
                          created_at=now.isoformat(), agent_id=agent_id,
                          generation=generation,
                          must_change_password=must_change_password, amr=amr)
        value = json.dumps(attrs.asdict(session)).encode()
        batch = self.ephemeral.batch()
        if also is not None:
            also(batch)
        if batch.empty:
            await self.ephemeral.put(_key(token), value, self.ttl)
        else:
            batch.put(_key(token), value, self.ttl)
            await batch.run()
        return token

    async def get(self, token: str) -> Session | None:
        if not token or len(token) > 200:
            return None
        return await self._valid(await self.ephemeral.get(_key(token)))

    async def by_ref(self, session_ref: str | None) -> Session | None:
        """The valid session ``ref(token)`` names (``ActionInput.session``), if any."""
        if not session_ref or len(session_ref) != _REF_LENGTH:
            return None
        return await self._valid(await self.ephemeral.get(f"session:{session_ref}"))

    async def _valid(self, raw: bytes | None) -> Session | None:
        """The stored session, unless the account's generation moved on or its agent
        was removed, with the account's current name: one more round trip either way."""
        if raw is None:
            return None
        data: dict[str, Any] = json.loads(raw)
        session = Session(**data)
        keys = [f"session_gen:{session.account_id}", _name_key(session.account_id)]
        if session.agent_id is not None:
            keys.append(_agent_gone(session.agent_id))
        found = await self.ephemeral.get_many(*keys)
        if session.generation != generation_of(found[0]):
            return None
        if session.agent_id is not None and found[2] is not None:
            return None
        if found[1] is not None:
            session = attrs.evolve(session, display_name=found[1].decode())
        return session

    async def rename(self, account_id: str, display_name: str) -> None:
        """The account is called ``display_name`` now: every session of it shows that
        from its next request (kept as long as any session can live)."""
        await self.ephemeral.put(_name_key(account_id), display_name.encode(),
                                 _GENERATION_TTL)

    async def end(self, token: str) -> None:
        await self.ephemeral.delete(_key(token))
        await self._ended(Ended("logout", session=ref(token)))

    async def end_all(self, account_id: str) -> None:
        """End every session of an account, in every process."""
        await self.ephemeral.incr(f"session_gen:{account_id}", _GENERATION_TTL)
        await self._ended(Ended("end_all", account_id=account_id))

    async def end_agent(self, account_id: str, agent_id: str) -> None:
        """End every session of an agent of the organisation ``account_id``, in every
        process, and every session made for the agent from now on."""
        await self.ephemeral.put(_agent_gone(agent_id), b"1", _GENERATION_TTL)
        await self._ended(Ended("agent_removed", account_id=account_id, agent_id=agent_id))

    async def end_others(self, account_id: str, keep: str | None) -> bool:
        """End every session of an account but the one ``keep`` names (``ref(token)``);
        return whether it was kept (it is the account's, and still valid).

        The kept session is rewritten into the new generation with the time it had left.
        Without ``keep`` (or one of another account) every session ends.
        """
        kept_key = f"session:{keep}" if keep else None
        raw = await self.ephemeral.get(kept_key) if kept_key else None
        kept = Session(**json.loads(raw)) if raw is not None else None
        valid = kept is not None and kept.account_id == account_id and \
            kept.generation == await self._generation(account_id)
        generation = await self.ephemeral.incr(f"session_gen:{account_id}", _GENERATION_TTL)
        if not valid or kept is None or kept_key is None:
            await self._ended(Ended("end_others", account_id=account_id))
            return False
        left = await self.ephemeral.ttl(kept_key)
        if left is None:
            await self._ended(Ended("end_others", account_id=account_id))
            return False  # it ended meanwhile
        moved = attrs.evolve(kept, generation=generation)
        await self.ephemeral.put(kept_key, json.dumps(attrs.asdict(moved)).encode(), left)
        await self._ended(Ended("end_others", account_id=account_id, kept=keep))
        return True


def _name_key(account_id: str) -> str:
    return f"session_name:{account_id}"


def rename_sender(sessions: Sessions, current_name: Callable[[str], Awaitable[str | None]],
                  ) -> Callable[[OutboxMessage], Awaitable[None]]:
    """The outbox sender for topic ``account_renamed`` (``RENAMED``): after the step
    that renamed the account commits, its sessions show its name as the database has it
    when the message is delivered, whatever order two renames' messages arrive in.
    ``current_name``: the account's display name now (None: it is gone)."""

    async def renamed(message: OutboxMessage) -> None:
        account_id = str(message.payload["account_id"])
        name = await current_name(account_id)
        if name is not None:
            await sessions.rename(account_id, name)

    return renamed
