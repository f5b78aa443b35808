"""Named guards, actions, validators and outbox senders.

``flows.yaml`` only names them; Python modules register them here. A module that
provides names exposes ``register(registry)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from engine.steps import ActionInput, GuardInput, OutboxMessage

GuardFn = Callable[["GuardInput"], bool]
ActionFn = Callable[["ActionInput"], Awaitable[Any]]
# A validator returns the normalised value or raises ``engine.Invalid``.
ValidatorFn = Callable[..., Any]  # (value) or, when registered dated, (value, *, now)
SenderFn = Callable[["OutboxMessage"], Awaitable[None]]

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """The names a flows file may use, and what they stand for."""

    def __init__(self) -> None:
        self.guards: dict[str, GuardFn] = {}
        self.actions: dict[str, ActionFn] = {}
        self.validators: dict[str, ValidatorFn] = {}
        # Validators that need the date (a birth date "not after today"): they are called
        # with now=<the engine clock's time>, never read the system clock themselves.
        self.dated: set[str] = set()
        # Formats whose values are personal data (an ID or a phone number): lint refuses
        # a field of such a format unless it is sensitive (sealed) or secret (dropped).
        self.personal: set[str] = set()
        self.senders: dict[str, SenderFn] = {}
        self.policies: dict[str, Callable[[Any], Any]] = {}

    def guard(self, name: str | None = None) -> Callable[[F], F]:
        """Register a pure predicate of (context, redacted input, facts)."""
        return self._adder(self.guards, name)

    def action(self, name: str | None = None) -> Callable[[F], F]:
        """Register an async action; what it returns is recorded as a fact."""
        return self._adder(self.actions, name)

    def validator(self, name: str | None = None, *, dated: bool = False,
                  personal: bool = False) -> Callable[[F], F]:
        """Register a field format: returns the normalised value or raises Invalid.

        ``dated``: the validator takes ``now=`` (an aware datetime from the engine's
        clock) besides the value. ``personal``: its values are personal data (an ID
        number, a phone number, or what may be one): a field of this format must be
        ``sensitive`` or ``secret``, never recorded in clear.
        """
        add = self._adder(self.validators, name)

        def register(fn: F) -> F:
            add(fn)
            if dated:
                self.dated.add(name or fn.__name__)
            if personal:
                self.personal.add(name or fn.__name__)
            return fn

        return register

    def policy(self, name: str) -> Callable[[F], F]:
        """Register the parser of a policy section: raises ValueError when it is wrong."""
        return self._adder(self.policies, name)

    def sender(self, topic: str) -> Callable[[F], F]:
        """Register the delivery of outbox messages of one topic."""
        return self._adder(self.senders, topic)

    @staticmethod
    def _adder(table: dict[str, Any], name: str | None) -> Callable[[F], F]:
        def add(fn: F) -> F:
            key = name or fn.__name__
            if key in table and table[key] is not fn:
                raise ValueError(f"{key!r} is registered twice")
            table[key] = fn
            return fn

        return add

    def load_modules(self, modules: Iterable[str]) -> Registry:
        """Import modules and let each ``register(self)``."""
        for name in modules:
            module = importlib.import_module(name)
            register = getattr(module, "register", None)
            if register is None:
                raise ValueError(f"module {name!r} has no register(registry) function")
            register(self)
        return self
