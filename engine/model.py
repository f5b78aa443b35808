"""The definition model: what a flow in ``flows.yaml`` means, as frozen values."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

import attrs

T = TypeVar("T")

FIELD_TYPES = ("string", "integer", "boolean", "choice")


@attrs.frozen
class Label:
    zh: str
    en: str

    def as_dict(self) -> dict[str, str]:
        return {"zh": self.zh, "en": self.en}


# Parameters as the model keeps them: (name, value) pairs sorted by name, so a reference
# stays hashable and two equal references compare equal.
Params = tuple[tuple[str, Any], ...]


def params_of(mapping: Mapping[str, Any]) -> Params:
    return tuple(sorted(mapping.items()))


def _written(params: Params, written: tuple[str, ...]) -> str:
    """The parameters the file gave, as it could have written them: ``{phone: new_mobile}``."""
    given = [f"{k}: {v}" for k, v in params if k in written]
    return f" {{{', '.join(given)}}}" if given else ""


@attrs.frozen
class Guard:
    """A guard reference: a registered predicate, possibly negated (``!name``).

    ``params``: every parameter it takes, defaults filled in when the flow was loaded
    with a registry; ``written``: the names of those the file gave.
    """

    name: str
    negated: bool = False
    params: Params = ()
    written: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Guard:
        text = text.strip()
        if text.startswith("!"):
            return cls(text[1:].strip(), True)
        return cls(text, False)

    @classmethod
    def from_content(cls, entry: str | Mapping[str, Any]) -> Guard:
        """Build from canonical content: ``"!name"`` or ``{name, params}``."""
        if isinstance(entry, str):
            return cls.parse(entry)
        bare = cls.parse(entry["name"])
        params = params_of(entry.get("params") or {})
        return cls(bare.name, bare.negated, params, tuple(k for k, _ in params))

    @property
    def param_map(self) -> dict[str, Any]:
        return dict(self.params)

    def __str__(self) -> str:
        return ("!" if self.negated else "") + self.name + _written(self.params, self.written)


@attrs.frozen
class ActionRef:
    """An action as a transition or ``on_enter`` runs it: its name, its parameters, and
    the name its result is recorded under (``fact``: ``as:`` in the file, else the name).
    """

    name: str
    params: Params = ()
    written: tuple[str, ...] = ()
    fact: str = attrs.field()

    @fact.default
    def _fact_default(self) -> str:
        return self.name

    @classmethod
    def from_content(cls, entry: str | Mapping[str, Any]) -> ActionRef:
        """Build from canonical content: ``"name"`` or ``{name, params[, as]}``."""
        if isinstance(entry, str):
            return cls(entry)
        params = params_of(entry.get("params") or {})
        return cls(entry["name"], params, tuple(k for k, _ in params),
                   entry.get("as") or entry["name"])

    @property
    def param_map(self) -> dict[str, Any]:
        return dict(self.params)

    def __str__(self) -> str:
        named = f" as {self.fact}" if self.fact != self.name else ""
        return self.name + _written(self.params, self.written) + named


@attrs.frozen
class Field:
    name: str
    type: str = "string"
    label: Label = Label("", "")
    required: bool = False
    format: str | None = None
    secret: bool = False
    # ``True``: never editable; a guard name: locked while that guard holds on the context.
    locked: bool | Guard = False
    choices: tuple[str, ...] = ()
    max_length: int = 1024
    help: Label | None = None
    # A context path whose value lists the allowed choices: [{"value", "label"}] or strings.
    choices_from: str | None = None
    # A hint for clients: how to draw the field (captcha, qr_code, ...).
    widget: str | None = None
    # Where the value comes from until the user gives one (and always, when locked).
    value_from: str | None = None
    # Personal data (an ID number, a phone): recorded sealed, shown masked.
    sensitive: bool = False
    # (choice, label) pairs: what a client shows for each value of a choice field.
    choice_labels: tuple[tuple[str, Label], ...] = ()

    def choice_label(self, value: str) -> Label | None:
        return next((label for v, label in self.choice_labels if v == value), None)


@attrs.frozen
class Timeout:
    after: timedelta
    trigger: str


@attrs.frozen
class NextAction:
    """What a client offers once a flow is over: start ``flow``, or go to ``page``."""

    label: Label
    flow: str | None = None
    page: str | None = None  # home | account
    # Go there without a click after this long (the password reset's six seconds).
    after: timedelta | None = None


@attrs.frozen
class State:
    name: str
    final: bool = False
    label: Label | None = None
    fields: tuple[Field, ...] = ()
    on_enter: tuple[ActionRef, ...] = ()
    timeout: Timeout | None = None
    # (name, context path) pairs shown to the client with this step.
    show: tuple[tuple[str, str], ...] = ()
    # (name, label) pairs: the captions of shown data.
    show_labels: tuple[tuple[str, Label], ...] = ()
    # A final state's next actions, in the file's order.
    next: tuple[NextAction, ...] = ()
    # (name, label) pairs: what the reply of the step that enters this state carries
    # once (a one-time password), and its caption; never stored, never shown again.
    reply_labels: tuple[tuple[str, Label], ...] = ()

    def field(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


@attrs.frozen
class Error:
    """What a transition shows under a field when taken (a recorded failure)."""

    error_id: str
    zh: str
    en: str
    field: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "error_id": self.error_id, "zh": self.zh, "en": self.en}


@attrs.frozen
class Limit:
    """At most ``max`` steps per ``per``, counted per value of ``by`` (across processes)."""

    name: str
    by: tuple[str, ...]  # instance | client | actor | flow | field:<name>
    max: int
    per: timedelta
    error: Error | None = None


@attrs.frozen
class Transition:
    trigger: str
    sources: tuple[str, ...]
    # None: the transition stays in whichever of its sources it fires from (``stay: true``).
    dest: str | None
    guards: tuple[Guard, ...] = ()
    actions: tuple[ActionRef, ...] = ()
    # The form fields this trigger takes; ``None``: all of the source state's fields.
    fields: tuple[str, ...] | None = None
    error: Error | None = None
    label: Label | None = None
    limits: tuple[Limit, ...] = ()
    via: str = "user"  # user | callback

    def target(self, source: str) -> str:
        """The state this transition leads to when it fires from ``source``."""
        return source if self.dest is None else self.dest


@attrs.frozen
class Flow:
    name: str
    initial: str
    states: dict[str, State]
    transitions: tuple[Transition, ...]
    expires_in: timedelta
    title: Label | None = None
    # The canonical content this flow was built from, and its hash: the version.
    content: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)
    version: str = ""
    access: str = "anyone"  # anyone | account | admin
    policies: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)
    # Limits on starting an instance (by client, actor or flow), before anything is stored.
    start_limits: tuple[Limit, ...] = ()
    # Where a personal center lists it: audiences such as personal, organisation:unverified.
    offered_to: tuple[str, ...] = ()

    def state(self, name: str) -> State:
        return self.states[name]

    # Answers of the lookups below, worked out once per question: a flow never changes
    # after it is built (evolve makes a new one, with an empty memo).
    _memo: dict[Any, Any] = attrs.field(factory=dict, init=False, eq=False, repr=False)

    def _remembered(self, key: tuple[str, ...], compute: Callable[[], T]) -> T:
        try:
            found: T = self._memo[key]
        except KeyError:
            found = self._memo[key] = compute()
        return found

    def transitions_from(self, state: str,
                         trigger: str | None = None) -> tuple[Transition, ...]:
        """The transitions leaving ``state`` (on ``trigger``, if given), in file order."""
        return self._remembered(("from", state, trigger or ""), lambda: tuple(
            t for t in self.transitions
            if state in t.sources and (trigger is None or t.trigger == trigger)))

    def triggers_from(self, state: str) -> tuple[str, ...]:
        """The triggers of the transitions leaving ``state``, each once, in file order."""
        return self._remembered(("triggers", state), lambda: tuple(
            dict.fromkeys(t.trigger for t in self.transitions_from(state))))

    def callback_triggers(self, state: str) -> frozenset[str]:
        """The triggers leaving ``state`` that only a provider's signed callback may fire."""
        return self._remembered(("callbacks", state), lambda: frozenset(
            t.trigger for t in self.transitions_from(state) if t.via == "callback"))

    def user_triggers(self, state: str) -> tuple[str, ...]:
        """Triggers a person may fire: not the clock's timeout, not a provider's callback."""
        def compute() -> tuple[str, ...]:
            timeout = self.states[state].timeout
            callbacks = self.callback_triggers(state)
            return tuple(trig for trig in self.triggers_from(state)
                         if not (timeout and trig == timeout.trigger) and trig not in callbacks)
        return self._remembered(("user", state), compute)

    def fields_for(self, state: str, trigger: str) -> tuple[Field, ...]:
        """Return the fields a trigger takes from a state's form."""
        return self._remembered(("fields", state, trigger),
                                lambda: self._fields_for(state, trigger))

    def _fields_for(self, state: str, trigger: str) -> tuple[Field, ...]:
        st = self.states[state]
        names: set[str] | None = None
        for t in self.transitions_from(state, trigger):
            if t.fields is None:
                return st.fields
            names = (names or set()) | set(t.fields)
        if names is None:
            return st.fields
        return tuple(f for f in st.fields if f.name in names)

    def all_fields(self) -> dict[str, Field]:
        out: dict[str, Field] = {}
        for st in self.states.values():
            for f in st.fields:
                out.setdefault(f.name, f)
        return out
