"""Named guards, actions, validators and outbox senders, and what they declare.

``flows.yaml`` only names them; Python modules register them here. A module that
provides names exposes ``register(registry)``.

An action or a guard may also *declare* what the file may say about it: its parameters
(``Param``: which field holds the phone, the purpose of a code, which policy), the keys of
the fact it returns (``results``: what ``show``, ``value_from`` and ``choices_from`` may
read below its name) and the refusals it can give (``Refusal``). Lint checks every use in
the file against these declarations; the loader fills in the defaults, so the code reads
``a.params["phone"]`` and never guesses. A name registered without declarations takes no
parameters, and nothing is checked below its fact. A name registered with declarations,
even empty ones (``params=[]``: it takes none; ``results={}``: it returns nothing), is
*declared*: ``registry.declared(kind, name)``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from engine.errors import EngineError, FieldError

if TYPE_CHECKING:
    from engine.values import ActionInput, GuardInput, OutboxMessage

GuardFn = Callable[["GuardInput"], bool]
ActionFn = Callable[["ActionInput"], Awaitable[Any]]
# A validator returns the normalised value or raises ``engine.Invalid``.
ValidatorFn = Callable[..., Any]  # (value) or, when registered dated, (value, *, now)
SenderFn = Callable[["OutboxMessage"], Awaitable[None]]

F = TypeVar("F", bound=Callable[..., Any])

# What a parameter's value is: a field of the flow, a policy (``section`` or
# ``section.key``), free text, one of a few words, or a number.
PARAM_KINDS = ("field", "policy", "string", "enum", "number")
# Where a field parameter's field must be: in the form of the state the action or guard
# runs from (and taken by its trigger), or anywhere in the flow (a value recorded earlier).
FIELD_SCOPES = ("input", "flow")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_POLICY_REF = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?$")
# Keys an action's or a guard's mapping in the file has besides its name.
RESERVED_NAMES = frozenset({"as"})


class _Required:
    """The default of a parameter the file must give."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final[Any] = _Required()


@attrs.frozen
class Param:
    """One parameter of an action or a guard, as flows.yaml may give it.

    ``default``: the value when the file leaves it out (``REQUIRED``: the file must give
    it; ``None``: the code has a documented meaning for "not given", e.g. the state's
    name). ``choices``: the words an ``enum`` takes. ``scope``: for a ``field``, where
    the field must be (``FIELD_SCOPES``). ``pattern``: for a ``string``, a regular
    expression the whole text must match.
    """

    name: str
    kind: str
    description: str
    default: Any = REQUIRED
    choices: tuple[str, ...] = ()
    scope: str = "input"
    pattern: str | None = None

    def __attrs_post_init__(self) -> None:
        if not _NAME.match(self.name) or self.name in RESERVED_NAMES:
            raise ValueError(f"parameter name {self.name!r} must be lower_snake_case and "
                             f"not {', '.join(sorted(RESERVED_NAMES))}")
        if self.kind not in PARAM_KINDS:
            raise ValueError(f"parameter {self.name!r}: kind is one of "
                             f"{', '.join(PARAM_KINDS)}, not {self.kind!r}")
        if (self.kind == "enum") != bool(self.choices):
            raise ValueError(f"parameter {self.name!r}: an enum, and only an enum, has "
                             "choices")
        if self.scope not in FIELD_SCOPES:
            raise ValueError(f"parameter {self.name!r}: scope is one of "
                             f"{', '.join(FIELD_SCOPES)}")
        if self.pattern is not None and self.kind != "string":
            raise ValueError(f"parameter {self.name!r}: only a string has a pattern")
        if not self.required and self.default is not None:
            problem = self.problem(self.default)
            if problem:
                raise ValueError(f"parameter {self.name!r}: default: {problem}")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this parameter's kind, or None.

        Only the shape: whether a field or a policy exists is for lint, which knows the
        flow and the registry.
        """
        if self.kind in ("field", "string", "enum", "policy") and not isinstance(value, str):
            return f"a {_KIND_TEXT[self.kind]} is expected, not {value!r}"
        if self.kind == "field" and not _NAME.match(value):
            return f"a field name (lower_snake_case) is expected, not {value!r}"
        if self.kind == "policy" and not _POLICY_REF.match(value):
            return f"a policy ('section' or 'section.key') is expected, not {value!r}"
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return f"text matching {self.pattern} is expected, not {value!r}"
        if self.kind == "enum" and value not in self.choices:
            return f"one of {', '.join(self.choices)} is expected, not {value!r}"
        if self.kind == "number" and (isinstance(value, bool)
                                      or not isinstance(value, int | float)):
            return f"a number is expected, not {value!r}"
        return None


_KIND_TEXT = {"field": "field name", "string": "text", "enum": "word",
              "policy": "policy name"}


@attrs.frozen
class Refusal:
    """A refusal an action can give: its error id, its messages, the field it goes under.

    ``field``: a field of its own (``captcha``); ``param``: the field parameter whose
    field it goes under (``phone``: under whichever field holds the phone); neither: the
    whole step.
    """

    error_id: str
    zh: str
    en: str
    field: str | None = None
    param: str | None = None

    @classmethod
    def of(cls, error: type[EngineError], *, field: str | None = None,
           param: str | None = None) -> Refusal:
        """The refusal an action declares for raising ``error`` (its id and messages)."""
        return cls(error.error_id, error.zh, error.en, field=field, param=param)

    def error(self, params: Mapping[str, Any] | None = None, *, zh: str | None = None,
              en: str | None = None) -> FieldError:
        """The field error this refusal gives, under its field, or under the field its
        parameter names in ``params`` (an action's, defaults filled in). ``zh``/``en``:
        the words of this one refusal, when they say more than the declared ones."""
        field = self.field if self.param is None else (params or {}).get(self.param)
        return FieldError(field, self.error_id, zh or self.zh, en or self.en)


@attrs.frozen
class Spec:
    """What an action or a guard declares. ``results`` None: not declared (unchecked)."""

    params: tuple[Param, ...] = ()
    results: Mapping[str, str] | None = attrs.field(default=None, eq=False)
    refusals: tuple[Refusal, ...] = ()

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def resolve(self, written: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter's value: as written, else its default (REQUIRED if missing)."""
        return {p.name: written.get(p.name, p.default) for p in self.params}


NO_SPEC = Spec()


class Registry:
    """The names a flows file may use, and what they stand for."""

    def __init__(self) -> None:
        self.guards: dict[str, GuardFn] = {}
        self.actions: dict[str, ActionFn] = {}
        # What each declares (parameters, results, refusals); absent: nothing declared.
        self.guard_specs: dict[str, Spec] = {}
        self.action_specs: dict[str, Spec] = {}
        self.validators: dict[str, ValidatorFn] = {}
        # Validators that need the date (a birth date "not after today"): they are called
        # with now=<the engine clock's time>, never read the system clock themselves.
        self.dated: set[str] = set()
        # Formats whose values are personal data (an ID or a phone number): lint refuses
        # a field of such a format unless it is sensitive (sealed) or secret (dropped).
        self.personal: set[str] = set()
        self.senders: dict[str, SenderFn] = {}
        self.policies: dict[str, Callable[[Any], Any]] = {}
        # Who a personal center can offer a flow to (``offered_to``), with what each means.
        self.audiences: dict[str, str] = {}

    def guard(self, name: str | None = None, *,
              params: Iterable[Param] | None = None) -> Callable[[F], F]:
        """Register a pure predicate of (context, redacted input, facts, its parameters).

        ``params``: what flows.yaml may give it (``g.params``, defaults filled in); ``[]``
        declares that it takes none.
        """
        return self._declaring(self.guards, self.guard_specs, name,
                               Spec(tuple(params or ())), declared=params is not None)

    def action(self, name: str | None = None, *, params: Iterable[Param] | None = None,
               results: Mapping[str, str] | None = None,
               refusals: Iterable[Refusal] | None = None) -> Callable[[F], F]:
        """Register an async action; what it returns is recorded as a fact.

        ``params``: what flows.yaml may give it (``a.params``, defaults filled in);
        ``results``: the keys of the fact it returns, each with what it holds (None: not
        declared; ``{}``: it returns nothing); ``refusals``: the errors it can refuse a
        step with.
        """
        spec = Spec(tuple(params or ()), dict(results) if results is not None else None,
                    tuple(refusals or ()))
        declared = params is not None or results is not None or refusals is not None
        return self._declaring(self.actions, self.action_specs, name, spec,
                               declared=declared)

    def spec(self, kind: str, name: str) -> Spec:
        """What the action or guard ``name`` declares (nothing, if it declares nothing)."""
        table = self.action_specs if kind == "action" else self.guard_specs
        return table.get(name, NO_SPEC)

    def declared(self, kind: str, name: str) -> bool:
        """Whether the action or guard ``name`` was registered with its declarations (even
        empty ones: a guard that takes no parameters, an action that returns nothing)."""
        return name in (self.action_specs if kind == "action" else self.guard_specs)

    def policy_defaults(self, name: str) -> dict[str, Any] | None:
        """A policy section's keys with their defaults (what its parser makes of an empty
        section), or None if the section is unknown or its parser says nothing of them."""
        parse = self.policies.get(name)
        if parse is None:
            return None
        try:
            parsed = parse({})
        except (ValueError, TypeError):
            return None
        if attrs.has(type(parsed)):
            return {f.name: getattr(parsed, f.name) for f in attrs.fields(type(parsed))}
        if isinstance(parsed, Mapping):
            return {str(k): v for k, v in parsed.items()}
        return None

    def policy_keys(self, name: str) -> tuple[str, ...] | None:
        """The keys a policy section has (from its parser's defaults), or None if unknown."""
        defaults = self.policy_defaults(name)
        return None if defaults is None else tuple(defaults)

    def _declaring(self, table: dict[str, Any], specs: dict[str, Spec], name: str | None,
                   spec: Spec, *, declared: bool) -> Callable[[F], F]:
        names = [p.name for p in spec.params]
        if len(set(names)) != len(names):
            raise ValueError(f"{name!r} declares a parameter twice: {names}")
        fields = {p.name for p in spec.params if p.kind == "field"}
        for refusal in spec.refusals:
            if refusal.param is not None and refusal.param not in fields:
                raise ValueError(f"{name!r}: refusal {refusal.error_id!r} goes under "
                                 f"parameter {refusal.param!r}, which is not a field "
                                 "parameter it declares")
        add = self._adder(table, name)

        def register(fn: F) -> F:
            add(fn)
            key = name or fn.__name__
            if key in RESERVED_NAMES:
                raise ValueError(f"{key!r} is a keyword of flows.yaml, not a name")
            if declared:
                specs[key] = spec
            return fn

        return register

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

    def audience(self, name: str, meaning: str) -> None:
        """Declare an audience that flows may be ``offered_to``: a kind of account, or a
        kind with a status (``organisation:unverified``)."""
        if name in self.audiences:
            raise ValueError(f"audience '{name}' is registered twice")
        self.audiences[name] = meaning

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
