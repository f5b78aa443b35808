"""The values one step passes around: guard and action inputs, events, outbox messages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import attrs

from engine.canonical import chain_hash

T = TypeVar("T")

# A write receives the store's transaction handle (for PostgreSQL: the connection).
Write = Callable[[Any], Awaitable[None]]


@attrs.frozen
class GuardInput:
    """What a guard may look at. Guards are pure: no clock, no I/O, no secret input."""

    state: str
    trigger: str
    context: Mapping[str, Any]
    input: Mapping[str, Any]
    facts: Mapping[str, Any]
    # The policies of the definition version: pinned with it, so still pure.
    policies: Mapping[str, Any] = attrs.field(factory=dict)
    # This guard's parameters from the file, defaults filled in (each guard gets its own).
    params: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def values(self) -> Mapping[str, Any]:
        """Non-secret values entered so far, this step's input included."""
        return {**self.context.get("values", {}), **self.input}

    @property
    def attempts(self) -> int:
        """Steps already taken in the current state since it was entered."""
        return int(self.context.get("attempts", 0))

    def fact(self, name: str, default: Any = None) -> Any:
        """This step's fact by action name, else the latest recorded one."""
        if name in self.facts:
            return self.facts[name]
        return self.context.get("facts", {}).get(name, default)


@attrs.define
class ActionInput:
    """What an action gets: the full input (secrets too) and a way to queue messages."""

    instance_id: str
    flow: str
    seq: int
    state: str
    trigger: str
    context: Mapping[str, Any]
    input: Mapping[str, Any]
    now: datetime
    # By type, read with ``service(SomeType)``: the engine knows none of them.
    services: Mapping[type, Any]
    actor: str = "anonymous"
    client: str | None = None
    # Who started the instance (account:<id>, admin:<id>, device:<hash>): the same on
    # every step, whoever takes it (a provider's callback, the clock).
    owner: str = "anonymous"
    # The policies of the definition version the instance runs on.
    policies: Mapping[str, Any] = attrs.field(factory=dict)
    sealer: Any = None
    facts: dict[str, Any] = attrs.field(factory=dict)
    outbox: list[tuple[str, dict[str, Any]]] = attrs.field(factory=list)
    writes: list[Write] = attrs.field(factory=list)
    replies: dict[str, Any] = attrs.field(factory=dict)
    # The running action's fact name (its name, or `as:` in the file) and its parameters
    # from the file, defaults filled in: set by the runtime before each action runs.
    action: str = ""
    params: Mapping[str, Any] = attrs.field(factory=dict)
    # The caller's signed-in session as the web layer names it (opaque to the engine);
    # None for the clock, a provider, or nobody signed in.
    session: str | None = None
    # What an action leaves for a later action of the same step (an account it read,
    # so the next one need not read it again). Never recorded, never replayed.
    scratch: dict[str, Any] = attrs.field(factory=dict)
    # Work an action leaves for the end of the step's actions: run in order once every
    # action has run (the entered state's too), before the step is written, and only if
    # none raised. An action queues here what a later action of the same step may take
    # over, to send it in a round trip of its own (a sign-in's cleared failure count,
    # with the session it starts). Never recorded, never replayed.
    at_end: list[Callable[[], Awaitable[None]]] = attrs.field(factory=list)

    @property
    def idempotency_key(self) -> str:
        """A key stable across retries of this step and distinct per action."""
        return f"{self.instance_id}:{self.seq}:{self.action}"

    def value(self, name: str) -> Any:
        """A field's plain value: this step's input, else recorded (opened if sealed)."""
        found = self.input[name] if name in self.input else \
            self.context.get("values", {}).get(name)
        if isinstance(found, Mapping) and "sealed" in found and self.sealer is not None:
            return self.sealer.open(name, found)
        return found

    def fact(self, name: str, default: Any = None) -> Any:
        """This step's fact by action name, else the latest recorded one."""
        if name in self.facts:
            return self.facts[name]
        return self.context.get("facts", {}).get(name, default)

    def service(self, kind: type[T]) -> T:
        """The service of this type that the composition root handed the engine."""
        found = self.services.get(kind)
        if not isinstance(found, kind):
            raise RuntimeError(f"no {kind.__name__} is configured for actions")
        return found

    def emit(self, topic: str, payload: dict[str, Any]) -> None:
        """Queue a message, sent after the step commits."""
        self.outbox.append((topic, payload))

    def write(self, fn: Write) -> None:
        """Run fn with the store's transaction, in the step's own transaction.

        Whatever it raises refuses the whole step: nothing of it is stored.
        """
        self.writes.append(fn)

    def reply(self, key: str, value: Any) -> None:
        """Hand something to this response only (a session token): never stored."""
        self.replies[key] = value


@attrs.frozen
class OutboxMessage:
    id: int
    instance_id: str
    seq: int
    topic: str
    payload: dict[str, Any]
    idempotency_key: str
    attempts: int


EVENT_KEYS = frozenset({"instance_id", "seq", "trigger", "from", "to", "input", "facts",
                        "effects", "actor", "at", "definition_hash", "prev_hash", "hash"})


@attrs.frozen
class Event:
    """One entry of an instance's history."""

    instance_id: str
    seq: int
    trigger: str
    from_state: str | None
    to_state: str
    input: dict[str, Any]
    # What the trigger's actions found, before deciding: the guards' evidence.
    facts: dict[str, Any]
    # What the destination's on_enter actions did, after deciding: never seen by guards.
    effects: dict[str, Any]
    actor: str
    at: str  # ISO-8601 UTC, as recorded
    definition_hash: str
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        """The hashed part: everything but the hash itself."""
        return {
            "instance_id": self.instance_id,
            "seq": self.seq,
            "trigger": self.trigger,
            "from": self.from_state,
            "to": self.to_state,
            "input": self.input,
            "facts": self.facts,
            "effects": self.effects,
            "actor": self.actor,
            "at": self.at,
            "definition_hash": self.definition_hash,
            "prev_hash": self.prev_hash,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash}

    @classmethod
    def sealed(cls, **fields: Any) -> Event:
        """Make an event and compute its hash from its body."""
        body = {"instance_id": fields["instance_id"], "seq": fields["seq"],
                "trigger": fields["trigger"], "from": fields["from_state"],
                "to": fields["to_state"], "input": fields["input"], "facts": fields["facts"],
                "effects": fields["effects"], "actor": fields["actor"], "at": fields["at"],
                "definition_hash": fields["definition_hash"],
                "prev_hash": fields["prev_hash"]}
        return cls(hash=chain_hash(fields["prev_hash"], body), **fields)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Event:
        return cls(
            instance_id=d["instance_id"], seq=d["seq"], trigger=d["trigger"],
            from_state=d["from"], to_state=d["to"], input=d["input"], facts=d["facts"],
            effects=d["effects"], actor=d["actor"], at=d["at"],
            definition_hash=d["definition_hash"], prev_hash=d["prev_hash"], hash=d["hash"],
        )


@attrs.frozen
class Instance:
    """A flow instance as stored."""

    id: str
    flow: str
    definition_hash: str
    state: str
    context: dict[str, Any]
    version: int
    status: str  # active | finished
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    last_hash: str
    deadline_at: datetime | None = None
    owner: str = "anonymous"  # who started it: only they may step a flow not open to anyone

    def expired(self, now: datetime) -> bool:
        return self.status == "active" and now >= self.expires_at
