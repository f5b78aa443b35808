"""What the platform's flows need from account storage: a port, implemented in storage/.

Reads are plain async calls. Writes return a ``Write`` that the step runs inside its
own transaction (``ActionInput.write``), so an account exists if and only if the step
that created it committed. Unique keys (an ID number or credit code registered twice,
a login name taken) surface as ``engine.DuplicateKey`` with ``extra["constraint"]``.

The records are Protocols too: storage returns its own frozen values of this shape,
so neither layer imports the other (docs/design.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from engine.values import Write

# An agent write (add, remove, hand over the primary role): like a ``Write``, run in the
# step's transaction, but it answers None when done, or why it refused, having changed
# nothing: ``"not_primary"`` (the acting agent is not the primary one, or no longer an
# agent), ``"agent_unknown"`` (no such agent in this organisation), ``"agent_is_primary"``
# (the agent named is the primary one). It first locks the organisation's row, so the
# agent writes of one organisation take turns and each sees the last one's result.
AgentWrite = Callable[[Any], Awaitable[str | None]]
NOT_PRIMARY = "not_primary"
AGENT_UNKNOWN = "agent_unknown"
AGENT_IS_PRIMARY = "agent_is_primary"


class Account(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...  # personal | organisation | supervisor | admin
    @property
    def login_name(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def password_hash(self) -> str: ...
    @property
    def must_change_password(self) -> bool: ...
    @property
    def phone_sealed(self) -> bytes | None: ...
    @property
    def id_number_sealed(self) -> bytes | None: ...


class AccountName(Protocol):
    """How pages name an account (the audit log's actors and targets)."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def login_name(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def organisation_name(self) -> str | None: ...  # an organisation's registered name


class Organisation(Protocol):
    @property
    def account_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def credit_code(self) -> str: ...
    @property
    def legal_rep_name(self) -> str: ...
    @property
    def legal_rep_id_sealed(self) -> bytes: ...
    @property
    def verified(self) -> bool: ...
    @property
    def verified_by(self) -> str | None: ...
    @property
    def verified_at(self) -> datetime | None: ...
    @property
    def contact_phone_sealed(self) -> bytes | None: ...


class CertificationChange(Protocol):
    """A change of an organisation's certification data waiting for re-verification."""

    @property
    def id(self) -> str: ...
    @property
    def organisation_id(self) -> str: ...
    @property
    def instance_id(self) -> str: ...
    @property
    def flow(self) -> str: ...  # the flow of that instance
    @property
    def status(self) -> str: ...  # pending | applied | withdrawn | expired
    @property
    def changed(self) -> tuple[str, ...]: ...  # name, credit_code, legal_rep_name, ...
    @property
    def shown(self) -> dict[str, Any]: ...  # the new values, ID and phone masked
    @property
    def created_at(self) -> datetime: ...
    @property
    def expires_at(self) -> datetime: ...


class Agent(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def organisation_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def phone_sealed(self) -> bytes: ...
    @property
    def is_primary(self) -> bool: ...


class Accounts(Protocol):
    async def by_login_name(self, login_name: str) -> Account | None: ...

    async def by_id_index(self, id_index: bytes) -> Account | None:
        """The personal account of an ID number."""
        ...

    async def by_phone_index(self, phone_index: bytes) -> Account | None:
        """The personal or supervisor account with this mobile number."""
        ...

    async def by_id(self, account_id: str) -> Account | None: ...

    async def credit_code_registered(self, credit_code: str) -> bool: ...

    async def organisation(self, account_id: str) -> Organisation | None: ...

    async def organisation_by_credit_code(self, credit_code: str) -> Organisation | None: ...

    async def agents(self, organisation_id: str) -> Sequence[Agent]: ...

    async def agent_with(self, organisation_id: str, *, phone_index: bytes | None = None,
                         id_number_index: bytes | None = None) -> Agent | None:
        """The organisation's agent with this phone (index), or with this ID number."""
        ...

    async def organisations_of_agent_phone(self, phone_index: bytes) -> Sequence[Account]:
        """Organisation accounts where this phone belongs to an agent."""
        ...

    async def face_passed(self, person_index: bytes, *, owner: str,
                          since: datetime) -> bool:
        """This owner recorded a face pass for this person at ``since`` or later."""
        ...

    async def instance_for(self, provider: str, ref: str) -> str | None:
        """The flow instance a provider's session or deposit belongs to."""
        ...

    # -- writes: each runs in the step's transaction --------------------------------
    def create_person(self, *, account_id: str, kind: str, login_name: str,
                      display_name: str, password_hash: str, id_number_sealed: bytes | None,
                      id_number_index: bytes | None, phone_sealed: bytes | None,
                      phone_index: bytes | None, must_change_password: bool,
                      now: datetime) -> Write: ...

    def create_organisation(self, *, account_id: str, login_name: str, name: str,
                            credit_code: str, password_hash: str, legal_rep_name: str,
                            legal_rep_id_sealed: bytes, legal_rep_id_index: bytes,
                            agent_id: str, agent_name: str, agent_id_sealed: bytes,
                            agent_id_index: bytes, agent_phone_sealed: bytes,
                            agent_phone_index: bytes, now: datetime) -> Write: ...

    def add_agent(self, organisation_id: str, *, acting_agent_id: str, agent_id: str,
                  name: str, id_number_sealed: bytes, id_number_index: bytes,
                  phone_sealed: bytes, phone_index: bytes, now: datetime) -> AgentWrite:
        """A new, ordinary agent; its phone or ID number already an agent's of the
        organisation hits ``agents_organisation_id_phone_index_key`` or
        ``agents_one_person``."""
        ...

    def remove_agent(self, organisation_id: str, *, acting_agent_id: str,
                     agent_id: str) -> AgentWrite:
        """Remove an agent that is not the primary one."""
        ...

    def transfer_primary(self, organisation_id: str, *, acting_agent_id: str,
                         to_agent_id: str) -> AgentWrite:
        """The acting (primary) agent becomes an ordinary one, ``to_agent_id`` primary."""
        ...

    def set_password(self, account_id: str, password_hash: str, *, must_change: bool,
                     now: datetime) -> Write: ...

    def set_phone(self, account_id: str, *, phone_sealed: bytes,
                  phone_index: bytes) -> Write:
        """A personal or supervisor account's new mobile number; a number another such
        account has hits ``accounts_personal_phone``."""
        ...

    def mark_verified(self, organisation_id: str, *, by: str, note: str | None,
                      now: datetime) -> Write: ...

    def record_face_pass(self, person_index: bytes, owner: str, instance_id: str,
                         now: datetime) -> Write: ...

    def link_provider_ref(self, provider: str, ref: str, instance_id: str,
                          now: datetime) -> Write: ...

    def audit(self, *, actor: str, action: str, target: str, reason: str,
              details: dict[str, Any], now: datetime) -> Write: ...

    async def audit_page(self, *, target: str | Sequence[str] | None = None,
                         actor: str | Sequence[str] | None = None,
                         action: str | None = None, before: int | None = None,
                         limit: int = 100) -> list[dict[str, Any]]:
        """Audit entries, newest first, optionally filtered (a target or actor: one
        value, or any of several); ``before``: ids below it."""
        ...

    async def names(self, account_ids: Sequence[str]) -> Sequence[AccountName]:
        """How pages name these accounts, in one query however many there are (ids
        that are no account's are left out)."""
        ...

    # -- certification changes (SPEC 10.1.1) ----------------------------------------
    async def pending_change(self, organisation_id: str, *,
                             now: datetime) -> CertificationChange | None:
        """The organisation's pending certification change, if it is alive at ``now``:
        neither its flow instance's expiry nor the deadline of the state it waits in
        (the deposit's 72 hours) has passed. ``expires_at`` is the sooner of the two."""
        ...

    def propose_change(self, *, change_id: str, organisation_id: str, instance_id: str,
                       name: str, credit_code: str, legal_rep_name: str,
                       legal_rep_id_sealed: bytes, legal_rep_id_index: bytes,
                       contact_phone_sealed: bytes | None, contact_phone_index: bytes | None,
                       changed: Sequence[str], shown: dict[str, Any],
                       now: datetime) -> Write:
        """A pending change of a verified organisation, living as long as the instance
        that proposes it (its verification attempt). Dead pending changes that would
        block it are marked expired first; a live one hits
        ``certification_changes_one_pending`` (or, claiming the same credit code,
        ``certification_changes_pending_credit_code``)."""
        ...

    def apply_change(self, change_id: str, *, verified_by: str, note: str | None,
                     now: datetime) -> Write:
        """The pending change becomes the organisation's data, verified by ``verified_by``
        (face or deposit) at ``now``; a credit code taken meanwhile hits
        ``organisations_credit_code_key``; a change no longer pending is a conflict."""
        ...

    def update_certification(self, organisation_id: str, *, name: str, credit_code: str,
                             legal_rep_name: str, legal_rep_id_sealed: bytes,
                             legal_rep_id_index: bytes, contact_phone_sealed: bytes | None,
                             contact_phone_index: bytes | None) -> Write:
        """An unverified organisation's new data, at once (a conflict if it was verified
        meanwhile); a credit code taken hits ``organisations_credit_code_key``."""
        ...

    def end_change(self, change_id: str, *, status: str, now: datetime) -> Write:
        """A pending change ends unapplied: ``withdrawn`` or ``expired``."""
        ...
