"""Load ``flows.yaml``: parse, check everything, report every problem at once.

The pipeline is YAML -> plain values with source positions -> *canonical content*
(defaults filled in, durations normalised, ordered lists instead of mappings) ->
frozen :mod:`engine.model` objects. A flow's version is the hash of its canonical
content, so comments, key order and spelling of equal durations do not change it.
"""

from __future__ import annotations

import copy
import re
from collections import deque
from collections.abc import Collection, Iterable
from datetime import timedelta
from typing import Any

import attrs
import yaml

from engine.canonical import content_hash
from engine.durations import format_duration, parse_duration
from engine.errors import DefinitionError
from engine.model import (
    FIELD_TYPES,
    ActionRef,
    Error,
    Field,
    Flow,
    Guard,
    Label,
    Limit,
    NextAction,
    State,
    Timeout,
    Transition,
)
from engine.params import with_defaults
from engine.registry import Registry

Path = tuple[Any, ...]
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
DEFAULT_LIFETIME = timedelta(hours=24)
RESERVED_TRIGGERS = {"start"}

# Every keyword the language knows, where it stands, with what it means: lint refuses any
# other key (``x-`` keys excepted), and ``flowctl schema`` writes the JSON Schema from these.
_TOP_KEYS = {
    "flows": "The procedures: a mapping of flow names to flows.",
    "policies": "Named blocks of settings that Python code reads (password rules, lockout, "
                "...); part of every flow's version.",
    "limit_sets": "Named lists of limits that transitions' `limits` and flows' "
                  "`start_limits` name instead of repeating them.",
    "errors": "Shared error messages by error id: a transition's or a limit's `error` may "
              "give just the id.",
}
_FLOW_KEYS = {
    "title": "Label {zh, en} shown in the list of flows and on the diagram.",
    "initial": "The state a new instance starts in.",
    "states": "Mapping of state names to states.",
    "transitions": "List of transitions.",
    "expires_in": "The instance's lifetime from its start (default 24h).",
    "description": "Free text, ignored (not part of the version).",
    "start_limits": "Limits on starting an instance (by client, actor or flow): limits, or "
                    "names of limit sets.",
    "access": "Who may start it: anyone (default), account, admin.",
    "offered_to": "For an `access: account` flow: the audiences (kinds of account, some "
                  "with a status: organisation:unverified) whose personal center offers "
                  "it. A listing, not a gate: the flow's own actions refuse the others.",
}
_STATE_KEYS = {
    "final": "Reaching it finishes the instance.",
    "label": "Label {zh, en}: the step's title.",
    "fields": "The step's form: mapping of field names to fields.",
    "on_enter": "Actions run when an instance enters this state; their results are effects.",
    "timeout": "{after, trigger}: the clock fires the trigger after that long here.",
    "description": "Free text, ignored (not part of the version).",
    "show": "Mapping of names to context paths (values.<field>, facts.<fact>[.<key>...]) "
            "sent to the client as the step's data.",
    "show_labels": "Label {zh, en} of each `show` name: how a client captions that datum.",
    "next": "A final state's next actions for a client: a list of {flow: NAME} (start "
            "that flow) or {page: home | account | admin}, each with a label, one of "
            "them optionally with `after: DURATION` (go there on its own after that long).",
    "reply_labels": "Label {zh, en} of each value that the step entering this state hands "
                    "to its reply once (a one-time password): a client shows it, so "
                    "captioned, in its answer to that step only.",
}
_FIELD_KEYS = {
    "type": "string (default), integer, boolean or choice.",
    "label": "Label {zh, en} (required).",
    "required": "Must be present and non-empty (a boolean: ticked).",
    "format": "A registered validator.",
    "secret": "Never recorded, never shown back, never seen by guards.",
    "locked": "true, or a guard: not editable (while the guard holds).",
    "choices": "The values of a choice field.",
    "choice_labels": "Label {zh, en} of each choice: what a client shows for that value.",
    "max_length": "Longest text accepted (default 1024).",
    "help": "Label {zh, en}: help text under the field.",
    "description": "Free text, ignored (not part of the version).",
    "choices_from": "A context path listing a choice field's values now.",
    "widget": "A drawing hint for clients (captcha, textarea, ...).",
    "value_from": "A context path: the field's value until one is recorded.",
    "sensitive": "Personal data: recorded sealed, shown masked.",
}
_TRANSITION_KEYS = {
    "trigger": "The trigger's name (lower_snake_case; start is reserved).",
    "source": "The state(s) it leaves from: a name or a list of names.",
    "dest": "The state it leads to.",
    "stay": "true instead of dest: it stays in whichever source it fires from.",
    "guards": "Guards that must all hold: names, \"!name\" negated, or {name: {parameters}}.",
    "actions": "Actions run when the trigger is submitted: names, or {name: {parameters}} "
               "with an optional `as` naming the fact.",
    "fields": "The source state's fields this trigger takes (absent: all; []: none).",
    "error": "{id, field, zh, en} shown after it is taken, or an id from `errors`.",
    "label": "Label {zh, en}: the button text.",
    "description": "Free text, ignored (not part of the version).",
    "limits": "Limits on this trigger: limits, or names of limit sets.",
    "via": "user (default) or callback: who fires it.",
}
_LIMIT_KEYS = {
    "name": "The counter's name (lower_snake_case): the same name counts together.",
    "by": "What is counted apart: instance, client, actor, flow, field:<name>.",
    "max": "Steps allowed per window.",
    "per": "The window: a duration.",
    "error": "{id, zh, en}, or an id from `errors`: the refusal (default rate_limited).",
}
_TIMEOUT_KEYS = {
    "after": "How long after entering the state: a duration.",
    "trigger": "The trigger the clock fires.",
}
_ERROR_KEYS = {
    "id": "A stable lower_snake_case error id.",
    "field": "The field it is shown under (of the state where it shows).",
    "zh": "The message in Chinese.",
    "en": "The message in English.",
}
_NEXT_KEYS = {
    "flow": "A flow of this file to start (a sign-in after a registration).",
    "page": "A page of the client: home, account (the personal center), or admin (the "
            "back-office console).",
    "label": "Label {zh, en}: the button's text.",
    "after": "A duration: the client goes there on its own after that long.",
}
# The pages a final state's next action may name; a client maps each to its own page.
NEXT_PAGES = ("home", "account", "admin")
_LIMIT_ERROR_KEYS = {k: v for k, v in _ERROR_KEYS.items() if k != "field"}
_SHARED_ERROR_KEYS = {k: v for k, v in _ERROR_KEYS.items() if k in ("zh", "en")}
# Besides its name, the mapping that gives an action parameters may name its fact.
AS = "as"
_LIMIT_PARTS = ("instance", "client", "actor", "flow")
# Starting a flow has no instance yet and no form: it is counted by who starts it.
_START_LIMIT_PARTS = ("client", "actor", "flow")
ACCESS = ("anyone", "account", "admin")
# Who fires a transition: the person at the client, or a provider's signed callback.
VIA = ("user", "callback")
# Where a state's `show` and a field's `choices_from` may read: recorded context only.
CONTEXT_PATH = re.compile(r"^(values|facts)(\.[a-z0-9_]+)+$")


@attrs.frozen(order=True)
class Diagnostic:
    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


@attrs.frozen
class FlowSet:
    """Every flow of one file, by name; the unit that reload swaps atomically."""

    flows: dict[str, Flow]
    source: str = ""

    def get(self, name: str) -> Flow | None:
        return self.flows.get(name)


class _Positions:
    """Where each value and key of the document stands (1-based line and column)."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.values: dict[Path, tuple[int, int]] = {}
        self.keys: dict[Path, tuple[int, int]] = {}

    def at(self, path: Path, *, key: bool = False) -> tuple[int, int]:
        table = self.keys if key else self.values
        p = path
        while p:
            if p in table:
                return table[p]
            if p in self.values:
                return self.values[p]
            p = p[:-1]
        return self.values.get((), (1, 1))


_STD = "tag:yaml.org,2002:"
# Far above any real flows file, far below what an alias bomb expands to.
_MAX_NODES = 200_000


def _short(tag: str) -> str:
    """Write a tag as the analyst typed it: ``!!int``, ``!local``."""
    return "!!" + tag[len(_STD):] if tag.startswith(_STD) else tag


# ``!agreed`` meant as a negated guard: in a flow list YAML reads on into the tag
# (``!agreed]``, ``!agreed,``), because those characters may stand in a tag.
# ``- !agreed: {...}`` (a negated guard with parameters) ends the tag with the colon.
_GUARD_TAG = re.compile(r"^(![a-z][a-z0-9_]*)[\],}:]*$")


def _negated_guard(tag: str) -> str | None:
    """The negated guard an analyst meant by a YAML tag such as ``!agreed]``, if any."""
    found = _GUARD_TAG.match(tag)
    return found.group(1) if found else None


def _bare_guard(text: str, filename: str, exc: yaml.MarkedYAMLError) -> Diagnostic | None:
    """Name the unquoted ``!guard`` behind a YAML syntax error, where there is one.

    ``guards: [!agreed]`` stops the parser at the end of the document (the tag ate the
    ``]``) or at the ``}`` after it: far from the cause. The tag is the place to fix.
    """
    where: yaml.Mark | None = None
    guard: str | None = None
    if exc.context == "while scanning a tag" and exc.context_mark is not None:
        where = exc.context_mark
        found = re.match(r"![a-z][a-z0-9_]*", str(where.buffer or "")[where.pointer:])
        guard = found.group(0) if found else None
    else:
        try:
            for token in yaml.scan(text, Loader=yaml.SafeLoader):
                if isinstance(token, yaml.TagToken) and token.value[0] == "!":
                    written = "!" + token.value[1]
                    meant = _negated_guard(written)
                    # Only a tag that swallowed a flow list's punctuation breaks the parse.
                    if meant and meant != written:
                        where, guard = token.start_mark, meant
        except yaml.YAMLError:
            pass  # the scan stops at the same error: the tags before it are what count
    if where is None or guard is None:
        return None
    return Diagnostic(filename, where.line + 1, where.column + 1,
                      f"unknown YAML tag '{guard}': to name a negated guard, quote it: "
                      f"\"{guard}\"")


class _TooLarge(Exception):
    """The document expands (through aliases) past ``_MAX_NODES`` values."""


class _Reader:
    """Turn a composed YAML node into plain values, remembering every position.

    Nothing here raises on a bad document: an unreadable value becomes a diagnostic
    at its position, so one bad scalar does not hide the file's other problems.
    """

    def __init__(self, pos: _Positions, diags: list[Diagnostic]) -> None:
        self.pos = pos
        self.diags = diags
        # A constructor of our own: SafeConstructor caches every node it builds, and a
        # shared one would keep every document ever checked alive.
        self.scalars = yaml.constructor.SafeConstructor()
        self.active: set[int] = set()
        self.count = 0

    def err(self, node: yaml.Node, message: str) -> None:
        m = node.start_mark
        self.diags.append(Diagnostic(self.pos.filename, m.line + 1, m.column + 1, message))

    def plain(self, node: yaml.Node, path: Path) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            raise _TooLarge
        self.pos.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if id(node) in self.active:
            # The node's own mark is its anchor; the key that holds the alias is the
            # place to fix.
            line, col = self.pos.keys.get(path, self.pos.values[path])
            self.diags.append(Diagnostic(self.pos.filename, line, col,
                                         "an alias refers to a value that contains it"))
            return None
        plain_tag = _STD + ("map" if isinstance(node, yaml.MappingNode) else "seq")
        guard = _negated_guard(node.tag)
        if guard is not None:
            # ``- !agreed: {...}``: the tag took the guard's name, the mapping its parameters.
            self.err(node, f"unknown YAML tag '{node.tag}': to name a negated guard, quote "
                     f"it: \"{guard}\"")
        elif node.tag != plain_tag:
            self.err(node, f"unsupported YAML tag '{_short(node.tag)}': a plain mapping or list "
                     "is expected")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            return [self.plain(v, (*path, i)) for i, v in enumerate(node.value)]
        finally:
            self.active.discard(id(node))

    def mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            kpos = (knode.start_mark.line + 1, knode.start_mark.column + 1)
            if not isinstance(knode, yaml.ScalarNode):
                self.err(knode, "a key must be a plain name, not a list or a mapping")
                continue
            key = knode.value
            if key in out:
                self.err(knode, f"duplicate key '{key}'")
            self.pos.keys[(*path, key)] = kpos
            out[key] = self.plain(vnode, (*path, key))
            if vnode.tag == f"{_STD}null" and vnode.value == "":
                # ``key:`` with nothing after it: the empty value's own mark is the end
                # of the line, so point at the key instead.
                self.pos.values[(*path, key)] = kpos
        return out

    def scalar(self, node: yaml.ScalarNode) -> Any:
        if not node.tag.startswith(_STD):
            guard = _negated_guard(node.tag)
            hint = f": to name a negated guard, quote it: \"{guard}\"" if guard else ""
            self.err(node, f"unknown YAML tag '{node.tag}'{hint}")
            # Keep the text so the checks that follow see what the analyst meant.
            return f"{node.tag} {node.value}".strip()
        try:
            return self.scalars.construct_object(node, deep=True)
        # SafeConstructor fails on bad explicitly tagged scalars (``!!int abc``,
        # ``!!timestamp x``) with assorted exceptions; each is the analyst's error.
        except Exception:  # noqa: BLE001 - any failure here is a bad value, not a bug
            self.err(node, f"'{node.value}' is not a valid '{_short(node.tag)}' value")
            return None


@attrs.frozen
class _LimitPart:
    """A limit's ``by`` part, where it is written, and the limit set it came through."""

    path: Path
    part: str
    via_set: str | None = None


@attrs.frozen
class _Call:
    """An action or a guard as one transition or state uses it, for the whole-flow checks."""

    kind: str  # action | guard
    name: str
    path: Path
    params: dict[str, Any] = attrs.field(eq=False)
    param_paths: dict[str, Path] = attrs.field(eq=False)
    fact: str | None = None  # actions: the name its result is recorded under

    def value_at(self, name: str) -> Path:
        """Where a parameter is written, else where the action or guard is."""
        return self.param_paths.get(name, self.path)


@attrs.define
class _Where:
    """Where one transition's parts stand, for the whole-flow checks' diagnostics."""

    path: Path
    fields: list[Path]
    error_field: Path
    limit_fields: list[_LimitPart] = attrs.field(factory=list)
    calls: list[_Call] = attrs.field(factory=list)


class _Checker:
    """Builds canonical content from plain values, collecting diagnostics as it goes."""

    policies: dict[str, Any]

    def __init__(self, pos: _Positions, registry: Registry | None) -> None:
        self.pos = pos
        self.registry = registry
        self.diags: list[Diagnostic] = []
        # A timeout's trigger by state path, kept even when its 'after' is bad, so a
        # file with both problems gets both diagnostics in one run.
        self.timeout_triggers: dict[Path, str] = {}
        self.timeout_after: dict[Path, str] = {}
        self.lifetime_known = True
        self.policies = {}
        self.flow_names: set[str] = set()
        self.limit_fields: list[_LimitPart] = []
        # The file's named errors and limit sets, and which of them something names.
        self.shared_errors: dict[str, dict[str, str]] = {}
        self.errors_used: set[str] = set()
        self.sets: dict[str, tuple[list[dict[str, Any]], list[_LimitPart]]] = {}
        self.sets_used: set[str] = set()
        # The on_enter actions of the flow being checked, by state name.
        self.enter_calls: dict[str, list[_Call]] = {}
        self.flow_fields: set[str] = set()

    def err(self, path: Path, message: str, *, key: bool = False) -> None:
        line, col = self.pos.at(path, key=key)
        self.diags.append(Diagnostic(self.pos.filename, line, col, message))

    # -- small typed readers ------------------------------------------------
    def mapping(self, value: Any, path: Path, what: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.err(path, f"{what} must be a mapping")
            return {}
        return value

    def names(self, value: Any, path: Path, what: str) -> list[tuple[Path, str]]:
        """Read one name or a list of names; each with the path it stands at."""
        if value is None:
            return []
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        out = []
        for i, item in items:
            ipath = path if i is None else (*path, i)
            if not isinstance(item, str) or not item.strip():
                self.err(ipath, f"{what} must be a name or a list of names")
                continue
            out.append((ipath, item.strip()))
        return out

    def boolean(self, value: Any, path: Path, what: str) -> bool:
        if value is None:
            return False
        if not isinstance(value, bool):
            self.err(path, f"{what} must be true or false")
            return False
        return value

    def label(self, value: Any, path: Path, what: str, *, required: bool) -> dict[str, str] | None:
        if value is None:
            if required:
                self.err(path, f"{what} needs a label with 'zh' and 'en'", key=True)
            return None
        if not isinstance(value, dict):
            self.err(path, f"{what}: a label is a mapping with 'zh' and 'en'")
            return None
        out = {}
        for lang in ("zh", "en"):
            text = value.get(lang)
            if not isinstance(text, str) or not text.strip():
                self.err((*path, lang) if lang in value else path,
                         f"{what}: label '{lang}' is missing or empty")
            else:
                out[lang] = text
        for k in value:
            if k not in ("zh", "en"):
                self.err((*path, k), f"{what}: unknown label language '{k}'", key=True)
        return out if len(out) == 2 else None

    def unknown_keys(self, value: dict[str, Any], allowed: Collection[str], path: Path,
                     what: str) -> None:
        for k in value:
            if k not in allowed and not str(k).startswith("x-"):
                hint = ", ".join(sorted(allowed))
                self.err((*path, k), f"unknown key '{k}' in {what} (known: {hint})", key=True)

    def duration(self, value: Any, path: Path) -> str | None:
        try:
            return format_duration(parse_duration(value))
        except ValueError as exc:
            self.err(path, str(exc))
            return None

    def registered(self, table: str, name: str, path: Path, what: str) -> None:
        if self.registry is None:
            return
        if name not in getattr(self.registry, table):
            known = ", ".join(sorted(getattr(self.registry, table))) or "none registered"
            self.err(path, f"unknown {what} '{name}' (known: {known})")

    # -- the document -------------------------------------------------------
    def document(self, doc: Any) -> dict[str, dict[str, Any]]:
        if doc is None:
            self.err((), "the file is empty: expected a mapping with 'flows'")
            return {}
        if not isinstance(doc, dict):
            self.err((), "the file must be a mapping with 'flows'")
            return {}
        self.unknown_keys(doc, _TOP_KEYS, (), "the file")
        self.policies = self.policy_section(doc.get("policies"), ("policies",))
        self.error_section(doc.get("errors"), ("errors",))
        self.limit_sets(doc.get("limit_sets"), ("limit_sets",))
        flows = doc.get("flows")
        if not isinstance(flows, dict) or not flows:
            self.err(("flows",) if "flows" in doc else (),
                     "'flows' must be a mapping of flow names to flows")
            return {}
        out = {}
        self.flow_names = {str(name) for name in flows}
        for name, body in flows.items():
            path = ("flows", name)
            if not NAME.match(str(name)):
                self.err(path, f"flow name '{name}' must be lower_snake_case", key=True)
            canon = self.flow(str(name), body, path)
            if canon is not None:
                out[str(name)] = canon
        for name in self.shared_errors:
            if name not in self.errors_used:
                self.err(("errors", name), f"error '{name}' is declared in 'errors' and no "
                         "transition or limit uses it", key=True)
        for name in self.sets:
            if name not in self.sets_used:
                self.err(("limit_sets", name), f"limit set '{name}' is declared and no "
                         "transition or flow uses it", key=True)
        return out

    def error_section(self, value: Any, path: Path) -> None:
        """Errors shared by id: ``{id: {zh, en}}``, for ``error: id`` wherever one goes."""
        for eid, body in self.mapping(value, path, "errors").items():
            epath = (*path, eid)
            if not NAME.match(str(eid)):
                self.err(epath, f"error id '{eid}' must be lower_snake_case", key=True)
                continue
            body = self.mapping(body, epath, f"error '{eid}'")
            self.unknown_keys(body, _SHARED_ERROR_KEYS, epath, f"shared error '{eid}'")
            texts = {lang: body.get(lang) for lang in ("zh", "en")}
            for lang, text in texts.items():
                if not isinstance(text, str) or not text:
                    self.err((*epath, lang) if lang in body else epath,
                             f"error '{eid}' needs a '{lang}' message")
            zh, en = texts["zh"], texts["en"]
            if isinstance(zh, str) and zh and isinstance(en, str) and en:
                self.shared_errors[str(eid)] = {"zh": zh, "en": en}
            else:
                self.errors_used.add(str(eid))  # reported already; not "unused" too

    def shared_error(self, eid: Any, path: Path) -> dict[str, str] | None:
        """The messages of an error declared in ``errors``; a diagnostic if there is none."""
        if isinstance(eid, str) and eid in self.shared_errors:
            self.errors_used.add(eid)
            return self.shared_errors[eid]
        if isinstance(eid, str) and NAME.match(eid):
            self.err(path, f"unknown error '{eid}': declare it in 'errors', or give its "
                     "'zh' and 'en' here")
        return None

    def limit_sets(self, value: Any, path: Path) -> None:
        """Named lists of limits, checked once here and named wherever limits go."""
        for name, body in self.mapping(value, path, "limit_sets").items():
            spath = (*path, name)
            if not NAME.match(str(name)):
                self.err(spath, f"limit set name '{name}' must be lower_snake_case", key=True)
                continue
            self.limit_fields = []
            limits = self.limits(body, spath, in_set=True)
            self.sets[str(name)] = (limits, self.limit_fields)
        self.limit_fields = []

    def policy_section(self, value: Any, path: Path) -> dict[str, Any]:
        """Policies (password rules, lockouts, ...) checked by their registered parsers."""
        section = self.mapping(value, path, "policies")
        for name, body in section.items():
            if self.registry is None:
                continue
            parse = self.registry.policies.get(name)
            if parse is None:
                known = ", ".join(sorted(self.registry.policies)) or "none registered"
                self.err((*path, name), f"unknown policy '{name}' (known: {known})", key=True)
                continue
            try:
                parse(body)
            except (ValueError, TypeError) as exc:
                self.err((*path, name), f"policy '{name}': {exc}")
        return section

    def flow(self, name: str, body: Any, path: Path) -> dict[str, Any] | None:
        if not isinstance(body, dict):
            self.err(path, f"flow '{name}' must be a mapping")
            return None
        self.unknown_keys(body, _FLOW_KEYS, path, f"flow '{name}'")
        states_raw = self.mapping(body.get("states"), (*path, "states"), "states")
        if not states_raw:
            self.err((*path, "states") if "states" in body else path,
                     f"flow '{name}' has no states", key=True)
        states: list[dict[str, Any]] = []
        self.enter_calls = {}
        for sname, sbody in states_raw.items():
            spath = (*path, "states", sname)
            if not NAME.match(str(sname)):
                self.err(spath, f"state name '{sname}' must be lower_snake_case", key=True)
            states.append(self.state(str(sname), sbody, spath))
        state_names = {s["name"] for s in states}
        self.flow_fields = {f["name"] for s in states for f in s["fields"]}

        initial = body.get("initial")
        if not isinstance(initial, str):
            self.err((*path, "initial") if "initial" in body else path,
                     f"flow '{name}' needs 'initial': the state it starts in",
                     key="initial" not in body)
        elif initial not in state_names:
            self.err((*path, "initial"), f"initial state '{initial}' is not defined")

        access = body.get("access", "anyone")
        if access not in ACCESS:
            self.err((*path, "access"), f"access must be one of {', '.join(ACCESS)}")
            access = "anyone"
        offered_to = self.offered_to(body, access, path)
        expires = DEFAULT_LIFETIME
        self.lifetime_known = True
        if "expires_in" in body:
            text = self.duration(body["expires_in"], (*path, "expires_in"))
            if text:
                expires = parse_duration(text)
            else:
                self.lifetime_known = False  # reported already; compare no timeout to it

        raw_transitions = body.get("transitions") or []
        if not isinstance(raw_transitions, list):
            self.err((*path, "transitions"), "transitions must be a list")
            raw_transitions = []
        transitions: list[dict[str, Any]] = []
        where: list[_Where] = []
        for i, tb in enumerate(raw_transitions):
            checked = self.transition(tb, (*path, "transitions", i), state_names)
            if checked is not None:
                transitions.append(checked[0])
                where.append(checked[1])
        self.limit_fields = []
        start_limits = self.limits(body.get("start_limits"), (*path, "start_limits"))
        for lp in self.limit_fields:
            if lp.part in _START_LIMIT_PARTS:
                continue
            if lp.via_set:
                self.err(lp.path, f"limit set '{lp.via_set}' counts by '{lp.part}': starting "
                         f"a flow is counted by {', '.join(_START_LIMIT_PARTS)}")
            else:
                self.err(lp.path, f"starting a flow is counted by "
                         f"{', '.join(_START_LIMIT_PARTS)}, not '{lp.part}'")
        self.limit_fields = []
        canon = {
            "name": name,
            "title": self.label(body.get("title"), (*path, "title"), f"flow '{name}'",
                                required=False),
            "initial": initial if isinstance(initial, str) else "",
            "expires_in": format_duration(expires),
            "access": access,
            "states": states,
            "transitions": transitions,
            # Every flow pins the policies it ran under: changing one is a new version.
            "policies": self.policies,
        }
        if start_limits:
            # Only when there are some: a flow without keeps the version it had before
            # the language had start limits.
            canon["start_limits"] = start_limits
        if offered_to:
            canon["offered_to"] = offered_to
        self.semantics(canon, where, path)
        return canon

    def offered_to(self, body: dict[str, Any], access: str, path: Path) -> list[str]:
        """The audiences a flow is offered to: registered ones, each once, account flows
        only."""
        if "offered_to" not in body:
            return []
        raw = body["offered_to"]
        where = (*path, "offered_to")
        if not isinstance(raw, list) or not raw \
                or not all(isinstance(a, str) for a in raw):
            self.err(where, "offered_to must be a non-empty list of audiences")
            return []
        if access != "account":
            self.err(where, "offered_to is for flows with access: account (the personal "
                     "center of a signed-in account offers them)")
        known = getattr(self.registry, "audiences", None) if self.registry else None
        seen: list[str] = []
        for i, audience in enumerate(raw):
            if known is not None and audience not in known:
                self.err((*where, i), f"unknown audience '{audience}' (known: "
                         f"{', '.join(sorted(known)) or 'none registered'})")
            elif audience in seen:
                self.err((*where, i), f"audience '{audience}' is listed twice")
            else:
                seen.append(audience)
        return seen

    def state(self, name: str, body: Any, path: Path) -> dict[str, Any]:
        body = self.mapping(body, path, f"state '{name}'")
        self.unknown_keys(body, _STATE_KEYS, path, f"state '{name}'")
        fields_raw = body.get("fields")
        fields = []
        if isinstance(fields_raw, dict):
            for fname, fbody in fields_raw.items():
                fields.append(self.field(str(fname), fbody, (*path, "fields", fname)))
        elif fields_raw is not None:
            self.err((*path, "fields"), "fields must be a mapping of field names to fields")
        on_enter = self.calls(body.get("on_enter"), (*path, "on_enter"), "action", "on_enter")
        self.enter_calls[name] = [c for c, _ in on_enter]
        timeout = None
        if body.get("timeout") is not None:
            tb = self.mapping(body["timeout"], (*path, "timeout"), "timeout")
            self.unknown_keys(tb, _TIMEOUT_KEYS, (*path, "timeout"), "timeout")
            after = self.duration(tb.get("after"), (*path, "timeout", "after"))
            trig = tb.get("trigger")
            if not isinstance(trig, str) or not NAME.match(trig):
                self.err((*path, "timeout", "trigger") if "trigger" in tb else
                         (*path, "timeout"), "timeout needs 'trigger': the trigger it fires")
                trig = None
            else:
                self.timeout_triggers[path] = trig
            if after and trig:
                timeout = {"after": after, "trigger": trig}
                self.timeout_after[path] = after
        final = self.boolean(body.get("final"), (*path, "final"), "final")
        show: dict[str, str] = {}
        for key, ref in self.mapping(body.get("show"), (*path, "show"), "show").items():
            if not NAME.match(str(key)):
                self.err((*path, "show", key), f"show name '{key}' must be lower_snake_case",
                         key=True)
            elif not isinstance(ref, str) or not CONTEXT_PATH.match(ref):
                self.err((*path, "show", key), "show reads recorded context: "
                         "'values.<field>' or 'facts.<action>[.<key>...]'")
            else:
                show[str(key)] = ref
        show_labels = {}
        for key, value in self.mapping(body.get("show_labels"), (*path, "show_labels"),
                                       "show_labels").items():
            if str(key) not in show:
                self.err((*path, "show_labels", key), f"show_labels names '{key}', which "
                         "is not shown (no such name in 'show')", key=True)
                continue
            found = self.label(value, (*path, "show_labels", key), f"show label '{key}'",
                               required=True)
            if found:
                show_labels[str(key)] = found
        reply_labels = {}
        for key, value in self.mapping(body.get("reply_labels"), (*path, "reply_labels"),
                                       "reply_labels").items():
            if not NAME.match(str(key)):
                self.err((*path, "reply_labels", key), f"reply name '{key}' must be "
                         "lower_snake_case", key=True)
                continue
            found = self.label(value, (*path, "reply_labels", key), f"reply label '{key}'",
                               required=True)
            if found:
                reply_labels[str(key)] = found
        state: dict[str, Any] = {
            "name": name,
            "final": final,
            "show": show,
            "label": self.label(body.get("label"), (*path, "label"), f"state '{name}'",
                                required=False),
            "fields": fields,
            "on_enter": [entry for _, entry in on_enter],
            "timeout": timeout,
        }
        # Only when given: a state without them keeps the version it had before.
        if show_labels:
            state["show_labels"] = show_labels
        if reply_labels:
            state["reply_labels"] = reply_labels
        if "next" in body:
            state["next"] = self.next_actions(body["next"], (*path, "next"), final)
        return state

    def next_actions(self, value: Any, path: Path, final: bool) -> list[dict[str, Any]]:
        """A final state's next actions: ``{flow | page, label[, after]}`` each."""
        if not final:
            self.err(path, "next is for final states: what a client offers once the "
                     "flow is over", key=True)
        if not isinstance(value, list) or not value:
            self.err(path, "next must be a non-empty list of {flow or page, label}")
            return []
        out: list[dict[str, Any]] = []
        timed = 0
        for i, item in enumerate(value):
            ipath = (*path, i)
            if not isinstance(item, dict):
                self.err(ipath, "a next action is a mapping: {flow or page, label}")
                continue
            self.unknown_keys(item, _NEXT_KEYS, ipath, "next action")
            entry: dict[str, Any] = {}
            if ("flow" in item) == ("page" in item):
                self.err(ipath, "a next action names one 'flow' to start or one 'page'")
            elif "flow" in item:
                target = item["flow"]
                if not isinstance(target, str) or target not in self.flow_names:
                    self.err((*ipath, "flow"), f"next action's flow '{target}' is not a "
                             "flow of this file")
                entry["flow"] = str(target)
            else:
                if item["page"] not in NEXT_PAGES:
                    self.err((*ipath, "page"), "page must be one of "
                             f"{', '.join(NEXT_PAGES)}")
                entry["page"] = str(item["page"])
            entry["label"] = self.label(item.get("label"), (*ipath, "label"),
                                        "next action", required=True)
            if "after" in item:
                timed += 1
                after = self.duration(item["after"], (*ipath, "after"))
                if after:
                    entry["after"] = after
            out.append(entry)
        if timed > 1:
            self.err(path, "at most one next action goes on its own ('after')")
        return out

    def field(self, name: str, body: Any, path: Path) -> dict[str, Any]:
        if not NAME.match(name):
            self.err(path, f"field name '{name}' must be lower_snake_case", key=True)
        body = self.mapping(body, path, f"field '{name}'")
        self.unknown_keys(body, _FIELD_KEYS, path, f"field '{name}'")
        ftype = body.get("type", "string")
        if ftype not in FIELD_TYPES:
            self.err((*path, "type"), f"unknown field type '{ftype}' "
                     f"(known: {', '.join(FIELD_TYPES)})")
        fmt = body.get("format")
        if fmt is not None:
            if not isinstance(fmt, str):
                self.err((*path, "format"), "format must be a validator name")
                fmt = None
            else:
                self.registered("validators", fmt, (*path, "format"), "validator")
        locked_raw = body.get("locked", False)
        locked: bool | str = False
        if isinstance(locked_raw, bool):
            locked = locked_raw
        elif isinstance(locked_raw, str):
            g = Guard.parse(locked_raw)
            self.registered("guards", g.name, (*path, "locked"), "guard")
            locked = str(g)
        else:
            self.err((*path, "locked"), "locked must be true, false or a guard name")
        choices = body.get("choices")
        if ftype == "choice" and "choices_from" in body and choices is None:
            choices = []
        elif ftype == "choice":
            if not isinstance(choices, list) or not choices or \
                    not all(isinstance(c, str) for c in choices):
                self.err((*path, "choices") if "choices" in body else path,
                         "a choice field needs 'choices': a list of strings",
                         key="choices" not in body)
                choices = []
        elif choices is not None:
            self.err((*path, "choices"), "only a choice field has choices")
            choices = []
        choices_from = body.get("choices_from")
        if choices_from is not None:
            if ftype != "choice":
                self.err((*path, "choices_from"), "only a choice field has choices_from")
                choices_from = None
            elif not isinstance(choices_from, str) or not CONTEXT_PATH.match(choices_from):
                self.err((*path, "choices_from"), "choices_from reads recorded context: "
                         "'facts.<action>[.<key>...]'")
                choices_from = None
        choice_labels = {}
        for key, value in self.mapping(body.get("choice_labels"), (*path, "choice_labels"),
                                       "choice_labels").items():
            if str(key) not in (choices or []):
                self.err((*path, "choice_labels", key), f"choice_labels names '{key}', "
                         "which is not one of 'choices'", key=True)
                continue
            found = self.label(value, (*path, "choice_labels", key),
                               f"choice label '{key}'", required=True)
            if found:
                choice_labels[str(key)] = found
        value_from = body.get("value_from")
        if value_from is not None and (not isinstance(value_from, str)
                                       or not CONTEXT_PATH.match(value_from)):
            self.err((*path, "value_from"), "value_from reads recorded context: "
                     "'values.<field>' or 'facts.<action>[.<key>...]'")
            value_from = None
        widget = body.get("widget")
        if widget is not None and (not isinstance(widget, str) or not NAME.match(widget)):
            self.err((*path, "widget"), "widget must be a lower_snake_case name")
            widget = None
        max_length = body.get("max_length", 1024)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            self.err((*path, "max_length"), "max_length must be a positive whole number")
            max_length = 1024
        secret = self.boolean(body.get("secret"), (*path, "secret"), "secret")
        sensitive = self.sensitive(body, path)
        if fmt is not None and self.registry is not None and fmt in self.registry.personal \
                and not secret and not sensitive:
            self.err((*path, "format"), f"format '{fmt}' carries personal data: mark the "
                     "field 'sensitive: true' (recorded sealed, shown masked) or "
                     "'secret: true' (never recorded)")
        field: dict[str, Any] = {
            "name": name,
            "type": ftype if ftype in FIELD_TYPES else "string",
            "label": self.label(body.get("label"), (*path, "label"), f"field '{name}'",
                                required=True) or {"zh": name, "en": name},
            "help": self.label(body.get("help"), (*path, "help"), f"field '{name}'",
                               required=False),
            "required": self.boolean(body.get("required"), (*path, "required"), "required"),
            "format": fmt,
            "secret": secret,
            "locked": locked,
            "choices": choices or [],
            "choices_from": choices_from,
            "value_from": value_from,
            "sensitive": sensitive,
            "widget": widget,
            "max_length": max_length,
        }
        if choice_labels:  # only when given: other fields keep their flow's version
            field["choice_labels"] = choice_labels
        return field

    def sensitive(self, body: dict[str, Any], path: Path) -> bool:
        flag = self.boolean(body.get("sensitive"), (*path, "sensitive"), "sensitive")
        if flag and body.get("secret") is True:
            self.err((*path, "sensitive"), "a field is secret (never recorded) or sensitive "
                     "(recorded sealed), not both")
        if flag and body.get("type", "string") != "string":
            self.err((*path, "sensitive"), "only a string field can be sensitive")
        return flag

    def transition(self, body: Any, path: Path,
                   states: set[str]) -> tuple[dict[str, Any], _Where] | None:
        if not isinstance(body, dict):
            self.err(path, "a transition must be a mapping")
            return None
        self.unknown_keys(body, _TRANSITION_KEYS, path, "transition")
        trigger = body.get("trigger")
        if not isinstance(trigger, str) or not NAME.match(trigger):
            self.err((*path, "trigger") if "trigger" in body else path,
                     "a transition needs 'trigger': a lower_snake_case name")
            # Check the rest all the same: every problem is reported in one run.
            trigger = trigger if isinstance(trigger, str) else ""
        elif trigger in RESERVED_TRIGGERS:
            self.err((*path, "trigger"), f"'{trigger}' is reserved for starting a flow")
        sources: list[str] = []
        for spath, s in self.names(body.get("source"), (*path, "source"), "source"):
            if s in sources:
                # Counted twice, it would also look like two transitions on one trigger.
                self.err(spath, f"transition '{trigger}' lists source '{s}' twice")
                continue
            sources.append(s)
            if s not in states:
                self.err(spath, f"transition '{trigger}' from undefined state '{s}'")
        if not sources:
            self.err(path, f"transition '{trigger}' needs 'source'", key=True)
        stay = self.boolean(body.get("stay"), (*path, "stay"), "stay")
        dest = body.get("dest")
        if stay:
            if "dest" in body:
                self.err((*path, "dest"), f"transition '{trigger}' has 'dest' and 'stay: "
                         "true': it leads to 'dest' or stays where it is, not both")
            dest = None
        elif not isinstance(dest, str):
            self.err((*path, "dest") if "dest" in body else path,
                     f"transition '{trigger}' needs 'dest' (or 'stay: true' to stay where "
                     "it is)")
            dest = ""
        elif dest not in states:
            self.err((*path, "dest"), f"transition '{trigger}' to undefined state '{dest}'")
        guards = self.calls(body.get("guards"), (*path, "guards"), "guard", "guards")
        actions = self.calls(body.get("actions"), (*path, "actions"), "action", "actions")
        fields = None
        if "fields" in body:
            fields = self.names(body.get("fields"), (*path, "fields"), "fields")
        epath = (*path, "error")
        error = self.transition_error(body.get("error"), epath)
        self.limit_fields = []
        limits = self.limits(body.get("limits"), (*path, "limits"))
        via = body.get("via", "user")
        if via not in VIA:
            self.err((*path, "via"), f"via must be one of {', '.join(VIA)}")
            via = "user"
        content = {
            "trigger": trigger,
            "source": sources,
            "dest": dest,
            "guards": [entry for _, entry in guards],
            "actions": [entry for _, entry in actions],
            "fields": [f for _, f in fields] if fields is not None else None,
            "error": error,
            "label": self.label(body.get("label"), (*path, "label"), f"transition '{trigger}'",
                                required=False),
            "limits": limits,
            "via": via,
        }
        where = _Where(path, [p for p, _ in fields or []], (*epath, "field"),
                       list(self.limit_fields), [c for c, _ in (*guards, *actions)])
        return content, where

    def transition_error(self, value: Any, epath: Path) -> dict[str, Any] | None:
        """``{id, field, zh, en}``, ``{id, field}`` of a shared error, or a shared error's id."""
        if value is None:
            return None
        if isinstance(value, str) and NAME.match(value):
            shared = self.shared_error(value, epath)
            return {"id": value, "field": None, **shared} if shared else None
        eb = self.mapping(value, epath, "error")
        self.unknown_keys(eb, _ERROR_KEYS, epath, "error")
        eid = eb.get("id")
        texts: dict[str, Any] = {"zh": eb.get("zh"), "en": eb.get("en")}
        if not isinstance(eid, str) or not NAME.match(eid):
            self.err((*epath, "id") if "id" in eb else epath,
                     "error needs 'id': a stable lower_snake_case id")
        elif "zh" not in eb and "en" not in eb:
            texts = dict(self.shared_error(eid, (*epath, "id")) or texts)
        else:
            for lang in ("zh", "en"):
                if not isinstance(eb.get(lang), str) or not eb.get(lang):
                    self.err((*epath, lang) if lang in eb else epath,
                             f"error needs a '{lang}' message")
        efield = eb.get("field")
        if efield is not None and not isinstance(efield, str):
            self.err((*epath, "field"), "error's 'field' must be a field name")
            efield = None
        return {"id": eid, "field": efield, **texts}

    def calls(self, value: Any, path: Path, kind: str,
              what: str) -> list[tuple[_Call, str | dict[str, Any]]]:
        """Read actions or guards, each with its canonical entry.

        Each is a name (a guard's negated as ``"!name"``) or a mapping of the name to its
        parameters, ``{send_sms_code: {phone: new_mobile}}``, where an action may also
        name its fact: ``as: new_code``. A single one may be written without brackets.
        """
        if value is None:
            return []
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        out: list[tuple[_Call, str | dict[str, Any]]] = []
        for i, item in items:
            ipath = path if i is None else (*path, i)
            params: dict[str, Any] = {}
            ppath = ipath
            fact = None
            if isinstance(item, str) and item.strip():
                written = item.strip()
            elif isinstance(item, dict):
                keys = [k for k in item if k != AS]
                if len(keys) != 1:
                    self.err(ipath, f"{'an action' if kind == 'action' else 'a guard'} with "
                             "parameters is a mapping of its one name to them: "
                             "{name: {parameter: value}}")
                    continue
                written = str(keys[0]).strip()
                ppath = (*ipath, keys[0])
                raw = item[keys[0]]
                if isinstance(raw, dict):
                    params = raw
                elif raw is not None:
                    self.err(ppath, f"the parameters of {kind} '{written}' are a mapping: "
                             "{parameter: value}")
                if AS in item:
                    fact = self.fact_name(item[AS], (*ipath, AS), kind)
            else:
                self.err(ipath, f"{what} must be a name or a list of names (or of "
                         "{name: {parameters}})")
                continue
            guard = Guard.parse(written)
            name = guard.name if kind == "guard" else written
            self.registered(f"{kind}s", name, ipath, kind)
            named: str | None = name
            if kind == "guard":
                named = None
            elif isinstance(item, dict) and AS in item:
                named = fact  # None for a bad `as` (reported): no check beats a false one
            call = _Call(kind, name, ipath, params, {k: (*ppath, k) for k in params}, named)
            self.check_params(call, ppath)
            entry: str | dict[str, Any] = str(guard) if kind == "guard" else name
            if params or fact:
                entry = {"name": entry, "params": dict(sorted(params.items()))}
                if fact:
                    entry["as"] = fact
            out.append((call, entry))
        return out

    def fact_name(self, value: Any, path: Path, kind: str) -> str | None:
        if kind != "action":
            self.err(path, "'as' names the fact an action records; a guard records none",
                     key=True)
        elif not isinstance(value, str) or not NAME.match(value):
            self.err(path, "'as' names the action's fact: a lower_snake_case name")
        elif value == "timer":
            self.err(path, "'timer' is the fact of the clock's step: name the action's fact "
                     "otherwise")
        else:
            return value
        return None

    def check_params(self, call: _Call, ppath: Path) -> None:
        """The parameters given are the ones declared, each of its kind; none is missing."""
        registry = self.registry
        if registry is None:
            return  # structure only
        if call.name not in (registry.actions if call.kind == "action" else registry.guards):
            return  # reported already
        spec = registry.spec(call.kind, call.name)
        what = f"{call.kind} '{call.name}'"
        for key, value in call.params.items():
            declared = spec.param(str(key))
            if declared is None:
                known = ", ".join(p.name for p in spec.params)
                self.err((*ppath, key), f"unknown parameter '{key}' of {what} "
                         f"({'known: ' + known if known else 'it takes none'})", key=True)
                continue
            problem = declared.problem(value)
            if problem is None and declared.kind == "policy":
                problem = self.policy_problem(value)
            if problem is not None:
                self.err((*ppath, key), f"parameter '{key}' of {what}: {problem}")
        for declared in spec.params:
            if declared.required and declared.name not in call.params:
                self.err(call.path, f"{what} needs parameter '{declared.name}'")

    def policy_problem(self, ref: str) -> str | None:
        """Whether ``section`` or ``section.key`` names a policy this code knows."""
        assert self.registry is not None
        section, _, key = ref.partition(".")
        if section not in self.registry.policies:
            known = ", ".join(sorted(self.registry.policies)) or "none registered"
            return f"unknown policy '{section}' (known: {known})"
        keys = self.registry.policy_keys(section)
        if key and keys is not None and key not in keys:
            return f"policy '{section}' has no key '{key}' (known: {', '.join(keys)})"
        return None

    def limits(self, value: Any, path: Path, *, in_set: bool = False) -> list[dict[str, Any]]:
        """Limits, and (outside a set) names of limit sets, expanded in order."""
        if value is None:
            return []
        if isinstance(value, str) and not in_set:
            value = [value]
        if not isinstance(value, list):
            self.err(path, "limits must be a list")
            return []
        out = []
        for i, body in enumerate(value):
            lpath = (*path, i)
            if isinstance(body, str) and not in_set:
                # A single name without brackets has no item position: at() finds the key's.
                out.extend(self.limit_set(body, lpath))
                continue
            if isinstance(body, str):
                self.err(lpath, "a limit set lists limits, not other limit sets")
                continue
            if not isinstance(body, dict):
                self.err(lpath, "a limit is a mapping with name, by, max and per")
                continue
            self.unknown_keys(body, _LIMIT_KEYS, lpath, "limit")
            name = body.get("name")
            if not isinstance(name, str) or not NAME.match(name):
                self.err((*lpath, "name") if "name" in body else lpath,
                         "a limit needs 'name': a lower_snake_case name")
                name = ""
            by = []
            for bpath, part in self.names(body.get("by", "instance"), (*lpath, "by"), "by"):
                if part in _LIMIT_PARTS or (part.startswith("field:") and NAME.match(part[6:])):
                    by.append(part)
                    self.limit_fields.append(_LimitPart(bpath, part))
                else:
                    self.err(bpath, f"limit counts by {', '.join(_LIMIT_PARTS)} or "
                             f"field:<name>, not '{part}'")
            most = body.get("max")
            if isinstance(most, bool) or not isinstance(most, int) or most < 1:
                self.err((*lpath, "max") if "max" in body else lpath,
                         "a limit needs 'max': a positive whole number")
                most = 1
            per = self.duration(body.get("per"), (*lpath, "per"))
            error = self.limit_error(body.get("error"), (*lpath, "error"))
            if name and per:
                out.append({"name": name, "by": by, "max": most, "per": per, "error": error})
        names = [lim["name"] for lim in out]
        for i, lim in enumerate(out):
            if lim["name"] in names[:i]:
                self.err(path, f"limit '{lim['name']}' is declared twice")
        return out

    def limit_set(self, name: str, path: Path) -> list[dict[str, Any]]:
        """The limits of a named set, its ``by`` parts counted as written at ``path``."""
        found = self.sets.get(name)
        if found is None:
            known = ", ".join(sorted(self.sets)) or "none declared"
            self.err(path, f"unknown limit set '{name}' (known: {known})")
            return []
        self.sets_used.add(name)
        limits, parts = found
        self.limit_fields.extend(_LimitPart(path, lp.part, name) for lp in parts)
        return copy.deepcopy(limits)

    def limit_error(self, value: Any, epath: Path) -> dict[str, Any] | None:
        """``{id, zh, en}``, ``{id}`` of a shared error, or a shared error's id."""
        if value is None:
            return None
        if isinstance(value, str) and NAME.match(value):
            shared = self.shared_error(value, epath)
            return {"id": value, **shared} if shared else None
        eb = self.mapping(value, epath, "error")
        self.unknown_keys(eb, _LIMIT_ERROR_KEYS, epath, "error")
        eid = eb.get("id")
        if isinstance(eid, str) and NAME.match(eid) and "zh" not in eb and "en" not in eb:
            shared = self.shared_error(eid, (*epath, "id"))
            return {"id": eid, **shared} if shared else None
        if not isinstance(eid, str) or not NAME.match(eid) or \
                not all(isinstance(eb.get(k), str) and eb.get(k) for k in ("zh", "en")):
            self.err(epath, "a limit's error needs 'id', 'zh' and 'en'")
            return None
        return {"id": eid, "zh": eb["zh"], "en": eb["en"]}

    # -- whole-flow checks ---------------------------------------------------
    def semantics(self, flow: dict[str, Any], where: list[_Where], path: Path) -> None:
        states = {s["name"]: s for s in flow["states"]}
        by_state: dict[str, list[tuple[int, dict[str, Any]]]] = {s: [] for s in states}
        for k, t in enumerate(flow["transitions"]):
            for s in t["source"]:
                if s in by_state:
                    by_state[s].append((k, t))
        for sname, st in states.items():
            spath = (*path, "states", sname)
            outgoing = by_state[sname]
            if st["final"]:
                for k, t in outgoing:
                    self.err(where[k].path, f"final state '{sname}' cannot have "
                             f"transitions (trigger '{t['trigger']}')")
            elif not outgoing:
                self.err(spath, f"state '{sname}' is not final and has no way out", key=True)
            elif all(t["dest"] in (None, sname) for _, t in outgoing):
                self.err(spath, f"state '{sname}' is not final and every transition from it "
                         "stays in it", key=True)
            trig = self.timeout_triggers.get(spath)
            if trig and not any(t["trigger"] == trig for _, t in outgoing):
                self.err((*spath, "timeout", "trigger"),
                         f"timeout trigger '{trig}' has no transition from state '{sname}'")
            field_names = {f["name"] for f in st["fields"]}
            for k, t in outgoing:
                for fpath, fname in zip(where[k].fields, t["fields"] or [], strict=True):
                    if fname not in field_names:
                        self.err(fpath, f"unknown field '{fname}': state '{sname}' "
                                 "has no such field")
                taken = field_names if t["fields"] is None else set(t["fields"])
                self.limit_parts(where[k].limit_fields, sname, field_names, taken,
                                 t["trigger"])
                for call in where[k].calls:
                    self.field_params(call, sname, field_names, taken, t["trigger"])
                err = t["error"]
                # A stay leads back to each source: the error shows in the state it fired from.
                shown_in = sname if t["dest"] is None else t["dest"]
                dest = states.get(shown_in)
                # The error shows under a field of the step the transition leads to.
                if err and err["field"] and dest is not None and \
                        err["field"] not in {f["name"] for f in dest["fields"]}:
                    self.err(where[k].error_field,
                             f"unknown field '{err['field']}' in error: state "
                             f"'{shown_in}', where it would show, has no such field")
            after = self.timeout_after.get(spath)
            if after and self.lifetime_known and \
                    parse_duration(after) >= parse_duration(flow["expires_in"]):
                self.err((*spath, "timeout", "after"),
                         f"timeout after {after} never fires: the flow expires after "
                         f"{flow['expires_in']} (raise 'expires_in')")
            self.ambiguity(sname, outgoing, where)
            self.callers(sname, outgoing, where)
        for calls in self.enter_calls.values():
            for call in calls:
                # What enters a state is any state's step: its field must be in the flow.
                self.field_params(call, None, self.flow_fields, self.flow_fields, "")
        self.reachability(flow, states, path)
        facts = self.facts([c for w in where for c in w.calls]
                           + [c for calls in self.enter_calls.values() for c in calls])
        self.context_refs(flow, path, facts)

    def limit_parts(self, parts: list[_LimitPart], state: str, field_names: set[str],
                    taken: set[str], trigger: str) -> None:
        """A limit counts by fields of the state its trigger leaves, that the trigger takes."""
        for lp in parts:
            if not lp.part.startswith("field:"):
                continue
            fname = lp.part[6:]
            counted = f"limit set '{lp.via_set}' counts" if lp.via_set else "limit counts"
            if fname not in field_names and lp.via_set:
                self.err(lp.path, f"{counted} by field '{fname}': state '{state}' has no "
                         "such field")
            elif fname not in field_names:
                self.err(lp.path, f"unknown field '{fname}' in limit: state "
                         f"'{state}' has no such field")
            elif fname not in taken:
                self.err(lp.path, f"{counted} by field '{fname}', which trigger "
                         f"'{trigger}' does not take (add it to 'fields')")

    def field_params(self, call: _Call, state: str | None, field_names: set[str],
                     taken: set[str], trigger: str) -> None:
        """Each field parameter (given, or by default) names a field that is there.

        ``state`` None: an on_enter action, whose input is whichever step entered.
        """
        if self.registry is None:
            return
        for p in self.registry.spec(call.kind, call.name).params:
            value = call.params.get(p.name, None if p.required else p.default)
            if p.kind != "field" or not isinstance(value, str):
                continue
            what = f"{call.kind} '{call.name}' reads field '{value}' (parameter '{p.name}')"
            where = call.value_at(p.name)
            if state is None or p.scope == "flow":
                if value not in self.flow_fields:
                    self.err(where, f"{what}, which no state of this flow has")
            elif value not in field_names:
                self.err(where, f"{what}: state '{state}' has no such field")
            elif value not in taken:
                self.err(where, f"{what}, which trigger '{trigger}' does not take (add it "
                         "to 'fields')")

    def facts(self, calls: list[_Call]) -> dict[str, str]:
        """The action behind each fact name; one fact name is one action and parameters."""
        seen: dict[str, tuple[str, dict[str, Any]]] = {}
        for call in sorted((c for c in calls if c.fact), key=lambda c: self.pos.at(c.path)):
            assert call.fact is not None
            spec = self.registry.spec("action", call.name) if self.registry else None
            params = spec.resolve(call.params) | call.params if spec else call.params
            first = seen.setdefault(call.fact, (call.name, params))
            if first != (call.name, params):
                self.err(call.path, f"fact '{call.fact}' would be recorded by two different "
                         "actions, or one with other parameters: name one of them with "
                         "'as: <fact>'")
        return {fact: name for fact, (name, _) in seen.items()}

    def context_refs(self, flow: dict[str, Any], path: Path, facts: dict[str, str]) -> None:
        """`show`, `value_from` and `choices_from` read what this flow can record."""
        fields = self.flow_fields
        # ``facts``: each fact name (a trigger's or on_enter's action) and its action; the
        # fired timer's fact, ``timer``, is always there.

        def check(ref: str, where: Path) -> None:
            kind, name, *below = ref.split(".")
            if kind == "values" and name not in fields:
                self.err(where, f"'{ref}' reads field '{name}', which no state of this "
                         "flow has")
            elif kind == "facts" and name not in facts and name != "timer":
                self.err(where, f"'{ref}' reads what '{name}' returned, but no transition "
                         "or on_enter of this flow runs it")
            elif kind == "facts" and below and name in facts and self.registry is not None:
                action = facts[name]
                results = self.registry.spec("action", action).results
                if results is not None and below[0] not in results:
                    returns = ", ".join(sorted(results)) or "nothing"
                    self.err(where, f"'{ref}' reads '{below[0]}', which action '{action}' "
                             f"does not return (it returns: {returns})")

        for st in flow["states"]:
            spath = (*path, "states", st["name"])
            for key, ref in st["show"].items():
                check(ref, (*spath, "show", key))
            for f in st["fields"]:
                for attr in ("value_from", "choices_from"):
                    if f[attr]:
                        check(f[attr], (*spath, "fields", f["name"], attr))

    def callers(self, state: str, outgoing: list[tuple[int, dict[str, Any]]],
                where: list[_Where]) -> None:
        """All transitions of one trigger from one state are fired by the same caller."""
        via: dict[str, str] = {}
        for k, t in outgoing:
            first = via.setdefault(t["trigger"], t["via"])
            if first != t["via"]:
                self.err(where[k].path, f"trigger '{t['trigger']}' from state '{state}' is "
                         f"'via: {first}' in one transition and 'via: {t['via']}' in another")

    def ambiguity(self, state: str, outgoing: list[tuple[int, dict[str, Any]]],
                  where: list[_Where]) -> None:
        def number(k: int) -> int:
            # The transition's index in the file's list, as the analyst counts them.
            return int(where[k].path[-1])

        for a in range(len(outgoing)):
            for b in range(a + 1, len(outgoing)):
                i, t1 = outgoing[a]
                j, t2 = outgoing[b]
                if t1["trigger"] != t2["trigger"] or not t1["trigger"]:
                    continue
                g1 = {self.guard_meaning(g) for g in t1["guards"]}
                g2 = {self.guard_meaning(g) for g in t2["guards"]}
                if not any((name, not negated, params) in g2 for name, negated, params in g1):
                    self.err(where[j].path,
                             f"transitions {number(i)} and {number(j)} both take trigger "
                             f"'{t1['trigger']}' from state '{state}' and no guard separates "
                             "them (give one 'g' and the other '!g')")

    def guard_meaning(self, entry: str | dict[str, Any]) -> tuple[str, bool, str]:
        """A guard as it decides: name, negation, and parameters with the defaults (so
        ``g`` and ``"!g": {p: <its default>}`` separate two transitions)."""
        g = Guard.from_content(entry)
        params = g.param_map
        if self.registry is not None:
            params = self.registry.spec("guard", g.name).resolve(params) | params
        return g.name, g.negated, repr(sorted(params.items()))

    def reachability(self, flow: dict[str, Any], states: dict[str, Any], path: Path) -> None:
        initial = flow["initial"]
        if initial not in states:
            return
        seen = {initial}
        todo = deque([initial])
        while todo:
            s = todo.popleft()
            for t in flow["transitions"]:
                if s in t["source"] and t["dest"] in states and t["dest"] not in seen:
                    seen.add(t["dest"])
                    todo.append(t["dest"])
        for name in states:
            if name not in seen:
                self.err((*path, "states", name),
                         f"state '{name}' is unreachable from '{initial}'", key=True)


def _next_action(entry: dict[str, Any]) -> NextAction:
    return NextAction(label=Label(entry["label"]["zh"], entry["label"]["en"]),
                      flow=entry.get("flow"), page=entry.get("page"),
                      after=parse_duration(entry["after"]) if "after" in entry else None)


def build_flow(content: dict[str, Any]) -> Flow:
    """Build the model of one flow from its canonical content (already checked)."""

    def label(v: dict[str, str] | None) -> Label | None:
        return Label(v["zh"], v["en"]) if v else None

    states = {}
    for s in content["states"]:
        fields = tuple(
            Field(
                name=f["name"], type=f["type"], label=label(f["label"]) or Label("", ""),
                required=f["required"], format=f["format"], secret=f["secret"],
                locked=Guard.parse(f["locked"]) if isinstance(f["locked"], str) else f["locked"],
                choices=tuple(f["choices"]), max_length=f["max_length"], help=label(f["help"]),
                choices_from=f["choices_from"], widget=f["widget"], value_from=f["value_from"],
                sensitive=f["sensitive"],
                choice_labels=tuple((k, Label(v["zh"], v["en"]))
                                    for k, v in f.get("choice_labels", {}).items()),
            )
            for f in s["fields"]
        )
        timeout = (Timeout(parse_duration(s["timeout"]["after"]), s["timeout"]["trigger"])
                   if s["timeout"] else None)
        states[s["name"]] = State(name=s["name"], final=s["final"], label=label(s["label"]),
                                  fields=fields,
                                  on_enter=tuple(ActionRef.from_content(a) for a in s["on_enter"]),
                                  timeout=timeout, show=tuple(s["show"].items()),
                                  show_labels=tuple((k, Label(v["zh"], v["en"])) for k, v
                                                    in s.get("show_labels", {}).items()),
                                  next=tuple(_next_action(n) for n in s.get("next", ())),
                                  reply_labels=tuple((k, Label(v["zh"], v["en"])) for k, v
                                                     in s.get("reply_labels", {}).items()))
    transitions = tuple(
        Transition(
            trigger=t["trigger"], sources=tuple(t["source"]), dest=t["dest"],
            guards=tuple(Guard.from_content(g) for g in t["guards"]),
            actions=tuple(ActionRef.from_content(a) for a in t["actions"]),
            fields=tuple(t["fields"]) if t["fields"] is not None else None,
            error=Error(t["error"]["id"], t["error"]["zh"], t["error"]["en"],
                        t["error"]["field"]) if t["error"] else None,
            label=label(t["label"]),
            via=t["via"],
            limits=tuple(_limit(lim) for lim in t["limits"]),
        )
        for t in content["transitions"]
    )
    return Flow(name=content["name"], initial=content["initial"], states=states,
                transitions=transitions, expires_in=parse_duration(content["expires_in"]),
                title=label(content["title"]), content=content,
                version=content_hash(content), access=content["access"],
                policies=content["policies"],
                start_limits=tuple(_limit(lim) for lim in content.get("start_limits", [])),
                offered_to=tuple(content.get("offered_to", ())))


def _limit(lim: dict[str, Any]) -> Limit:
    return Limit(lim["name"], tuple(lim["by"]), lim["max"], parse_duration(lim["per"]),
                 Error(lim["error"]["id"], lim["error"]["zh"], lim["error"]["en"])
                 if lim["error"] else None)


class Positions(_Positions):
    """Where each value and key of a document read by ``read_positioned`` stands."""

    def diagnostic(self, path: Path, message: str, *, key: bool = False) -> Diagnostic:
        """A diagnostic at the value (or the key) at ``path``, or its nearest parent."""
        line, col = self.at(path, key=key)
        return Diagnostic(self.filename, line, col, message)


# libyaml's parser, where PyYAML was built with it (its wheels are): the same nodes with
# the same lines and columns, about ten times faster to parse (flows.yaml loads in 73-106
# ms, not 306-387, and every server start, reload and flowctl command loads it).
_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", None)


def _compose(text: str) -> yaml.Node | None:
    """The document's node tree. A text libyaml refuses is read again by PyYAML's own
    parser, whose errors (and marks into the text) the diagnostics are made of."""
    # Where the two are known to differ, PyYAML reads (measured by
    # tests/engine/test_loader_libyaml.py): libyaml skips a byte order mark at the start
    # of any line, PyYAML only at the start of the text; libyaml takes tabs in places
    # PyYAML refuses them (after a value, say).
    if _FAST_LOADER is not None and "\ufeff" not in text[1:] and "\t" not in text:
        try:
            return yaml.compose(text, Loader=_FAST_LOADER)
        except (yaml.YAMLError, RecursionError, UnicodeError, ValueError):
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def read_positioned(text: str, filename: str) -> tuple[Positions | None, Any,
                                                       list[Diagnostic]]:
    """Parse YAML into plain values, remembering where each stands.

    Return the positions (None when the text is no YAML document at all), the values,
    and every problem found reading them. Other configuration files (systems.yaml) are
    read this way, so their diagnostics are ``file:line:col`` like the flows file's.
    """
    pos = Positions(filename)
    diags: list[Diagnostic] = []
    try:
        node = _compose(text)
    except yaml.MarkedYAMLError as exc:
        bare = _bare_guard(text, filename, exc)
        if bare is not None:
            return None, None, [bare]
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        return None, None, [Diagnostic(filename, line, col, f"YAML syntax: {problem}")]
    except yaml.YAMLError as exc:
        return None, None, [Diagnostic(filename, 1, 1, f"YAML syntax: {exc}")]
    except RecursionError:
        return None, None, [Diagnostic(filename, 1, 1,
                                       "YAML: the document is nested too deeply")]
    try:
        doc = _Reader(pos, diags).plain(node, ()) if node is not None else None
    except _TooLarge:
        return None, None, [Diagnostic(filename, 1, 1, "YAML: the document expands (through "
                                       f"aliases) to more than {_MAX_NODES} values")]
    except RecursionError:
        return None, None, [Diagnostic(filename, 1, 1,
                                       "YAML: the document is nested too deeply")]
    return pos, doc, diags


def check_text(text: str, filename: str = "flows.yaml",
               registry: Registry | None = None) -> tuple[dict[str, dict[str, Any]],
                                                          list[Diagnostic]]:
    """Check a flows file; return canonical content per flow and every diagnostic."""
    pos, doc, diags = read_positioned(text, filename)
    if pos is None:
        return {}, diags
    checker = _Checker(pos, registry)
    checker.diags.extend(diags)
    content = checker.document(doc)
    return content, sorted(set(checker.diags))


def load_text(text: str, filename: str = "flows.yaml",
              registry: Registry | None = None) -> FlowSet:
    """Load a flows file or raise DefinitionError listing every problem."""
    content, diags = check_text(text, filename, registry)
    if diags:
        raise DefinitionError(diags)
    return FlowSet({name: _resolved(build_flow(c), registry) for name, c in content.items()},
                   source=filename)


def _resolved(flow: Flow, registry: Registry | None) -> Flow:
    return flow if registry is None else with_defaults(flow, registry)


def load_file(path: str, registry: Registry | None = None) -> FlowSet:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError([Diagnostic(path, 1, 1, f"cannot read: {exc}")]) from exc
    return load_text(text, path, registry)


def flows_from_contents(contents: Iterable[dict[str, Any]],
                        registry: Registry | None = None) -> FlowSet:
    """Build stored flows; with a registry, their parameters' defaults filled in."""
    return FlowSet({c["name"]: _resolved(build_flow(c), registry) for c in contents})
