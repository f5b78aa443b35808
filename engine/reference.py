"""The reference of what a flows file may name, read from the registry itself.

``flowctl actions`` prints it, and docs/reference.md is its Markdown form (a test keeps
the committed file equal to what the registry says), so it cannot go stale: every action,
guard, validator, policy and outbox sender, with the parameters it takes, the results its
fact carries and the refusals it can give.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from engine.registry import Param, Refusal, Registry

__all__ = ["KINDS", "Entry", "entries", "summary", "to_markdown", "to_text"]

KINDS = ("action", "guard", "validator", "policy", "sender")

_PREFIX = re.compile(r"^(?:Action|Validator|Guard)(?: \((?P<note>[^)]*)\))?: (?P<rest>.*)$",
                     re.S)


def summary(fn: Callable[..., Any]) -> str | None:
    """A registered name's docstring as the reference gives it: its first paragraph.

    A leading "Action:" (and a note in brackets after it) is the docstring's own label,
    not part of what the name does; a policy parser's class says what the policy is.
    """
    owner = getattr(fn, "__self__", None)
    doc = inspect.getdoc(owner if inspect.isclass(owner) else fn)
    if not doc:
        return None
    text = " ".join(doc.split("\n\n", 1)[0].split())
    found = _PREFIX.match(text)
    if found:
        rest = found["rest"]
        text = rest[:1].upper() + rest[1:] + (f" ({found['note']})" if found["note"] else "")
    return text.replace("``", "`")


@attrs.frozen
class Entry:
    """One name a flows file may use, and what it declares."""

    kind: str
    name: str
    module: str
    summary: str | None
    params: tuple[Param, ...] = ()
    # None: the action does not declare its fact's keys (nothing is checked below it).
    results: Mapping[str, str] | None = attrs.field(default=None, eq=False)
    refusals: tuple[Refusal, ...] = ()
    notes: tuple[str, ...] = ()
    # A policy's keys with their defaults.
    defaults: Mapping[str, Any] = attrs.field(factory=dict, eq=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "name": self.name, "module": self.module,
            "summary": self.summary,
            "params": [{"name": p.name, "kind": p.kind, "description": p.description,
                        "required": p.required,
                        "default": None if p.required else _json(p.default),
                        "choices": list(p.choices), "scope": p.scope,
                        "pattern": p.pattern} for p in self.params],
            "results": dict(self.results) if self.results is not None else None,
            "refusals": [attrs.asdict(r) for r in self.refusals],
            "notes": list(self.notes),
            "defaults": {k: _json(v) for k, v in self.defaults.items()},
        }


def _json(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    return str(value)


def entries(registry: Registry) -> list[Entry]:
    """Every name the registry holds, kind by kind, each in registration order."""
    out: list[Entry] = []
    for name, fn in registry.actions.items():
        spec = registry.spec("action", name)
        out.append(Entry("action", name, fn.__module__, summary(fn), spec.params,
                         spec.results, spec.refusals))
    for name, guard in registry.guards.items():
        spec = registry.spec("guard", name)
        out.append(Entry("guard", name, guard.__module__, summary(guard), spec.params,
                         spec.results, spec.refusals))
    for name, validator in registry.validators.items():
        notes = tuple(n for n, on in (("dated: gets the engine clock's time",
                                       name in registry.dated),
                                      ("personal data: the field must be sensitive or secret",
                                       name in registry.personal)) if on)
        out.append(Entry("validator", name, validator.__module__, summary(validator),
                         notes=notes))
    for name, parse in registry.policies.items():
        out.append(Entry("policy", name, parse.__module__, summary(parse),
                         defaults=registry.policy_defaults(name) or {}))
    for topic, send in registry.senders.items():
        out.append(Entry("sender", topic, send.__module__, summary(send)))
    return out


def _default(p: Param) -> str:
    if p.required:
        return "required"
    if p.default is None:
        return "not given"
    return repr(p.default) if not isinstance(p.default, str) else p.default


def _under(r: Refusal) -> str:
    if r.field:
        return r.field
    if r.param:
        return f"the field {r.param} names"
    return "the step"


def to_text(found: Iterable[Entry]) -> str:
    """The reference as a person reads it on a terminal."""
    lines: list[str] = []
    for e in found:
        lines.append(f"{e.kind} {e.name}  ({e.module})")
        if e.summary:
            lines.append(f"    {e.summary}")
        for p in e.params:
            choices = f" [{'|'.join(p.choices)}]" if p.choices else ""
            lines.append(f"    param {p.name}: {p.kind}{choices}, {_default(p)}"
                         f" - {p.description}")
        if e.results is not None:
            for key, meaning in e.results.items():
                lines.append(f"    result {key} - {meaning}")
        for r in e.refusals:
            lines.append(f"    refuses {r.error_id} under {_under(r)} - {r.en}")
        for note in e.notes:
            lines.append(f"    {note}")
        for key, value in e.defaults.items():
            lines.append(f"    {key}: {value}")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_HEADINGS = {"action": "Actions", "guard": "Guards", "validator": "Validators (`format:`)",
             "policy": "Policies", "sender": "Outbox senders"}


def to_markdown(found: Iterable[Entry]) -> str:
    """The reference as docs/reference.md: generated, never written by hand."""
    by_kind: dict[str, list[Entry]] = {k: [] for k in KINDS}
    for e in found:
        by_kind[e.kind].append(e)
    out = ["# Reference: what flows.yaml may name", "",
           "Generated from the registry by `flowctl actions --markdown`; a test keeps this "
           "file equal to what the code declares. How to use these names is in "
           "[flows.md](flows.md).", ""]
    for kind in KINDS:
        if not by_kind[kind]:
            continue
        out += [f"## {_HEADINGS[kind]}", ""]
        for e in by_kind[kind]:
            out += [f"### `{e.name}`", "", f"{e.summary or '*(no docstring)*'} "
                    f"(`{e.module}`)", ""]
            if e.params:
                out += ["| parameter | kind | default | meaning |", "| --- | --- | --- | --- |"]
                out += [f"| `{p.name}` | {p.kind}"
                        f"{' (' + ', '.join(p.choices) + ')' if p.choices else ''} | "
                        f"{_cell(_default(p))} | {_cell(p.description)} |" for p in e.params]
                out.append("")
            if e.results:
                out += ["| result | holds |", "| --- | --- |"]
                out += [f"| `{key}` | {_cell(meaning)} |" for key, meaning in e.results.items()]
                out.append("")
            if e.refusals:
                out += ["| refuses with | under | message |", "| --- | --- | --- |"]
                out += [f"| `{r.error_id}` | {_cell(_under(r))} | {_cell(r.zh)} / "
                        f"{_cell(r.en)} |" for r in e.refusals]
                out.append("")
            out += [f"- {note}" for note in e.notes]
            if e.notes:
                out.append("")
            if e.defaults:
                out += ["| key | default |", "| --- | --- |"]
                out += [f"| `{k}` | {_cell(str(_json(v)))} |" for k, v in e.defaults.items()]
                out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
