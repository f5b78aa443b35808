"""A state's form: check what a client submits, describe what it should show."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import attrs

from engine.errors import FieldError, ValidationFailed
from engine.model import Field, Flow, Guard, NextAction
from engine.registry import Registry
from engine.values import GuardInput


class Invalid(ValueError):
    """Raised by a validator: the value's problem, with a stable id and two languages."""

    def __init__(self, error_id: str, zh: str, en: str) -> None:
        super().__init__(en)
        self.error_id = error_id
        self.zh = zh
        self.en = en


_MESSAGES = {
    "unknown_field": ("不接受此字段", "This field is not accepted here"),
    "required": ("此项为必填项", "This field is required"),
    "not_string": ("应为文本", "A text value is expected"),
    "not_integer": ("应为整数", "A whole number is expected"),
    "not_boolean": ("应为是或否", "true or false is expected"),
    "not_choice": ("不是可选的值", "Not one of the allowed choices"),
    "too_long": ("内容过长", "This value is too long"),
    "field_locked": ("此项不可修改", "This field cannot be changed"),
}


def _error(field: str, error_id: str) -> FieldError:
    zh, en = _MESSAGES[error_id]
    return FieldError(field, error_id, zh, en)


def is_locked(field: Field, registry: Registry, guard_input: GuardInput) -> bool:
    if isinstance(field.locked, bool):
        return field.locked
    g: Guard = field.locked
    if g.params:
        guard_input = attrs.evolve(guard_input, params=g.param_map)
    return bool(registry.guards[g.name](guard_input)) != g.negated


def resolve(context: Mapping[str, Any], path: str) -> Any:
    """Read 'values.x' or 'facts.a.b' from a context; None where anything is missing."""
    node: Any = context
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _masked(value: Any) -> Any:
    """Sealed personal data leaves only as its mask, wherever it is shown from."""
    if isinstance(value, Mapping) and "sealed" in value:
        return value.get("masked")
    return value


def dynamic_choices(field: Field, context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The choices a field offers now: from the definition, or from recorded context."""
    if field.choices_from is None:
        labels = dict(field.choice_labels)
        return [{"value": c, "label": labels[c].as_dict() if c in labels else None}
                for c in field.choices]
    raw = resolve(context, field.choices_from)
    out = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, Mapping) and isinstance(item.get("value"), str):
            out.append({"value": item["value"], "label": item.get("label")})
        elif isinstance(item, str):
            out.append({"value": item, "label": None})
    return out


def current_values(fields: Any, context: Mapping[str, Any]) -> dict[str, Any]:
    """Each field's value so far: what the user gave, else what value_from reads."""
    given = context.get("values", {})
    out = {}
    for f in fields:
        if f.name in given:
            out[f.name] = given[f.name]
        elif f.value_from is not None:
            found = resolve(context, f.value_from)
            if found is not None:
                out[f.name] = found
    return out


def _coerce(field: Field, value: Any) -> tuple[Any, str | None]:
    if field.type == "string":
        if not isinstance(value, str):
            return None, "not_string"
        if not field.secret:
            value = value.strip()
        if len(value) > field.max_length:
            return None, "too_long"
        return value, None
    if field.type == "integer":
        if isinstance(value, bool):
            return None, "not_integer"
        if isinstance(value, int):
            return value, None
        if isinstance(value, str) and value.strip().lstrip("-").isdigit() \
                and len(value.strip()) <= 20:
            return int(value.strip()), None
        return None, "not_integer"
    if field.type == "boolean":
        if isinstance(value, bool):
            return value, None
        return None, "not_boolean"
    if field.type == "choice":
        # Choices from context are checked by the caller, which has the context.
        if isinstance(value, str) and (field.choices_from or value in field.choices):
            return value, None
        return None, "not_choice"
    return value, None


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def validate_input(flow: Flow, state: str, trigger: str, raw: Mapping[str, Any],
                   context: Mapping[str, Any], registry: Registry,
                   now: datetime | None = None) -> dict[str, Any]:
    """Return the clean input (secrets included) or raise ValidationFailed with all errors."""
    fields = {f.name: f for f in flow.fields_for(state, trigger)}
    errors: list[FieldError] = [_error(k, "unknown_field") for k in raw if k not in fields]
    clean: dict[str, Any] = {}
    values = current_values(fields.values(), context)
    probe = GuardInput(state, trigger, context, {}, {}, flow.policies)
    for name, field in fields.items():
        if is_locked(field, registry, probe):
            # Sent back as the form showed it (personal data masked): unchanged.
            if name in raw and raw[name] != values.get(name) and not (
                    field.sensitive and name in values
                    and raw[name] == shown(field, values[name])):
                errors.append(_error(name, "field_locked"))
            elif name in values:
                clean[name] = values[name]
            elif field.required:
                errors.append(_error(name, "required"))
            continue
        value = raw.get(name)
        if _empty(value) and not (field.type == "boolean" and value is False):
            if field.required:
                errors.append(_error(name, "required"))
            continue
        value, problem = _coerce(field, value)
        if not problem and field.choices_from and value not in {
                c["value"] for c in dynamic_choices(field, context)}:
            problem = "not_choice"
        if problem:
            errors.append(_error(name, problem))
            continue
        if field.type == "boolean" and field.required and value is not True:
            errors.append(_error(name, "required"))
            continue
        if field.format:
            try:
                check = registry.validators[field.format]
                value = check(value, now=now) if field.format in registry.dated \
                    else check(value)
            except Invalid as exc:
                errors.append(FieldError(name, exc.error_id, exc.zh, exc.en))
                continue
        clean[name] = value
    if errors:
        raise ValidationFailed(errors)
    return clean


def redact(flow: Flow, state: str, clean: Mapping[str, Any],
           seal: Callable[[str, str], dict[str, str]] | None = None) -> dict[str, Any]:
    """What may be written to history: secrets dropped, personal data sealed."""
    st = flow.states[state]
    out = {}
    for k, v in clean.items():
        f = st.field(k)
        if f is not None and f.secret:
            continue
        if f is not None and f.sensitive and isinstance(v, str):
            if seal is None:
                raise RuntimeError(f"field {k!r} is sensitive and no Sealer is configured")
            out[k] = seal(f.format or f.name, v)
        else:
            out[k] = v
    return out


def shown(field: Field, value: Any) -> Any:
    """A value as a client may see it: sealed personal data only masked."""
    if field.secret:
        return None
    if field.sensitive and isinstance(value, Mapping):
        return value.get("masked")
    return value


# How often a client asks again while a step waits for a provider's callback.
POLL_SECONDS = 3


def _next(action: NextAction) -> dict[str, Any]:
    return {"flow": action.flow, "page": action.page, "label": action.label.as_dict(),
            "after_seconds": int(action.after.total_seconds())
            if action.after is not None else None}


def describe(flow: Flow, state: str, context: Mapping[str, Any],
             registry: Registry) -> dict[str, Any]:
    """The current step's UI description: fields, values, locks, errors, triggers."""
    st = flow.states[state]
    error = context.get("error")
    values = current_values(st.fields, context)
    probe = GuardInput(state, "", context, {}, {}, flow.policies)
    # Only what a person can submit: fields a provider's callback carries stay hidden.
    user_fields = {f.name for trig in flow.user_triggers(state)
                   for f in flow.fields_for(state, trig)}
    nodes = []
    for f in st.fields:
        if f.name not in user_fields:
            continue
        node: dict[str, Any] = {
            "name": f.name,
            "type": f.type,
            "label": f.label.as_dict(),
            "required": f.required,
            "secret": f.secret,
            "locked": is_locked(f, registry, probe),
            "value": _masked(shown(f, values.get(f.name))),
            "sensitive": f.sensitive,
            "error": error if error and error.get("field") == f.name else None,
        }
        if f.format:
            node["format"] = f.format
        if f.type == "choice":
            node["choices"] = dynamic_choices(f, context)
        if f.widget:
            node["widget"] = f.widget
        if f.type == "string":
            node["max_length"] = f.max_length
        if f.help:
            node["help"] = f.help.as_dict()
        nodes.append(node)
    triggers = []
    for trig in flow.user_triggers(state):
        label = next((t.label.as_dict() for t in flow.transitions_from(state, trig)
                      if t.label), None)
        # A limit of one per window (an SMS code a minute): how long a client greys
        # the button out after a press that went through.
        once = [int(lim.per.total_seconds()) for t in flow.transitions_from(state, trig)
                for lim in t.limits if lim.max == 1]
        triggers.append({"trigger": trig, "label": label,
                         "fields": [f.name for f in flow.fields_for(state, trig)],
                         "cooldown_seconds": max(once) if once else None})
    data = {name: _masked(resolve(context, path)) for name, path in st.show}
    captions = dict(st.show_labels)
    waits = None
    if not st.final and flow.callback_triggers(state):
        # A provider's callback moves this step on: a client asks again now and then.
        waits = {"for": "provider", "poll_seconds": POLL_SECONDS}
    return {
        "state": state,
        "label": st.label.as_dict() if st.label else None,
        "final": st.final,
        "data": data,
        "shown": [{"name": name, "value": data[name],
                   "label": captions[name].as_dict() if name in captions else None}
                  for name, _ in st.show],
        "waits": waits,
        "next": [_next(n) for n in st.next],
        "replies": [{"name": name, "label": label.as_dict()}
                    for name, label in st.reply_labels],
        "fields": nodes,
        "triggers": triggers,
        "error": error if error and not error.get("field") else None,
    }
