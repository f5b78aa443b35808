"""The language of ``flows.yaml`` as a JSON Schema (2020-12), for editors.

Made from the loader's own tables of keywords (what lint accepts where) and from the
registry (the names of actions, guards, validators and policies, and what each action
and guard declares), so an editor completes the names and parameters the code has, and
the schema cannot drift from lint: ``flowctl schema`` prints it, ``docs/flows.schema.json``
is that output, and a test compares the two.

The schema checks the *shape* of the file. Lint checks the rest (that a state named in
``source`` exists, that a field parameter names a field the state has, that a show path
reads what an action returns, reachability ...): a file the schema accepts may still get
lint errors; one it refuses always does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.loader import (
    _ERROR_KEYS,
    _FIELD_KEYS,
    _FLOW_KEYS,
    _LIMIT_ERROR_KEYS,
    _LIMIT_KEYS,
    _LIMIT_PARTS,
    _NEXT_KEYS,
    _SHARED_ERROR_KEYS,
    _STATE_KEYS,
    _TIMEOUT_KEYS,
    _TOP_KEYS,
    _TRANSITION_KEYS,
    ACCESS,
    AS,
    CONTEXT_PATH,
    NAME,
    NEXT_PAGES,
    VIA,
)
from engine.model import FIELD_TYPES
from engine.registry import Param, Registry, Spec

__all__ = ["flows_schema"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# As parse_duration reads them: whole numbers with a unit, parts adding up.
DURATION = r"^\s*([0-9]+\s*[dhms]\s*)+$"
_X = {"^x-": {"description": "Ignored: for notes and YAML anchors."}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/$defs/{name}"}


def _keywords(table: Mapping[str, str], properties: Mapping[str, Any], *,
              required: tuple[str, ...] = (), extension: bool = True) -> dict[str, Any]:
    """An object of keywords: each key from the loader's table, with its description."""
    missing = set(table) ^ set(properties)
    assert not missing, f"the schema and the loader's table disagree on {sorted(missing)}"
    out: dict[str, Any] = {
        "type": "object",
        "properties": {k: {**properties[k], "description": table[k]} for k in table},
        "additionalProperties": False,
    }
    if extension:
        out["patternProperties"] = _X
    if required:
        out["required"] = list(required)
    return out


def _names_of(items: dict[str, Any]) -> dict[str, Any]:
    """One name or a list of them (or nothing): the language accepts each wherever names
    are listed."""
    return {"anyOf": [items, {"type": "array", "items": items}, {"type": "null"}]}


def _policy_refs(registry: Registry) -> list[str]:
    out = []
    for section in sorted(registry.policies):
        out.append(section)
        out += [f"{section}.{key}" for key in registry.policy_keys(section) or ()]
    return out


def _param(p: Param, registry: Registry) -> dict[str, Any]:
    kinds: dict[str, dict[str, Any]] = {
        "field": _ref("name"),
        "string": {"type": "string"},
        "enum": {"enum": list(p.choices)},
        "number": {"type": "number"},
        "policy": {"enum": _policy_refs(registry)},
    }
    kind = kinds[p.kind]
    if p.pattern is not None:
        kind = {**kind, "pattern": f"^(?:{p.pattern})$"}
    out = {**kind, "description": f"({p.kind}) {p.description}"}
    if not p.required and p.default is not None:
        out["default"] = p.default
    return out


def _params(spec: Spec, registry: Registry) -> dict[str, Any]:
    """The mapping of parameters under an action's or a guard's name."""
    out: dict[str, Any] = {
        "type": "object",
        "properties": {p.name: _param(p, registry) for p in spec.params},
        "additionalProperties": False,
    }
    required = [p.name for p in spec.params if p.required]
    if required:
        out["required"] = required
    else:
        # No parameters to give: `name:` alone, or `{}`.
        out["type"] = ["object", "null"]
    return out


def _doc(fn: Any) -> str:
    text = (getattr(fn, "__doc__", None) or "").strip().split("\n\n", 1)[0]
    return " ".join(text.split())


def _actions(registry: Registry) -> dict[str, Any]:
    names = sorted(registry.actions)
    written = [{
        "type": "object",
        "description": _doc(registry.actions[name]),
        "properties": {name: _params(registry.spec("action", name), registry),
                       AS: {**_ref("name"), "description": "The name its fact is recorded "
                                                           "under (default: the action's)."}},
        "required": [name],
        "additionalProperties": False,
    } for name in names]
    return {"anyOf": [{"enum": names}, *written]}


def _guards(registry: Registry) -> dict[str, Any]:
    names = sorted(registry.guards)
    written = [{
        "type": "object",
        "description": _doc(registry.guards[name]),
        "properties": {key: _params(registry.spec("guard", name), registry)
                       for key in (name, f"!{name}")},
        "minProperties": 1,
        "maxProperties": 1,
        "additionalProperties": False,
    } for name in names]
    return {"anyOf": [{"enum": [*names, *(f"!{n}" for n in names)]}, *written]}


def _policies(registry: Registry) -> dict[str, Any]:
    sections: dict[str, Any] = {}
    for name in sorted(registry.policies):
        keys = registry.policy_keys(name)
        section: dict[str, Any] = {"type": "object", "description": _doc(
            getattr(registry.policies[name], "__self__", registry.policies[name]))}
        if keys is not None:
            section["properties"] = {k: {} for k in keys}
            section["additionalProperties"] = False
        sections[name] = section
    return {"type": "object", "properties": sections, "additionalProperties": False}


def _defs(registry: Registry) -> dict[str, Any]:
    name = {"type": "string", "pattern": NAME.pattern}
    label = {"type": "object", "additionalProperties": False, "required": ["zh", "en"],
             "properties": {lang: {"type": "string", "minLength": 1} for lang in ("zh", "en")}}
    error_text = {"type": "string", "minLength": 1}
    error = _keywords(_ERROR_KEYS, {"id": _ref("name"), "field": _ref("name"),
                                    "zh": error_text, "en": error_text}, required=("id",))
    limit_error = _keywords(_LIMIT_ERROR_KEYS, {"id": _ref("name"), "zh": error_text,
                                                "en": error_text}, required=("id",))
    part = {"anyOf": [{"enum": list(_LIMIT_PARTS)},
                      {"type": "string", "pattern": r"^field:[a-z][a-z0-9_]*$"}]}
    limit = _keywords(_LIMIT_KEYS, {
        "name": _ref("name"), "by": _names_of(part),
        "max": {"type": "integer", "minimum": 1}, "per": _ref("duration"),
        "error": {"anyOf": [{**_ref("name"), "description": "An id from `errors`."},
                            limit_error]},
    }, required=("name", "max", "per"))
    limits = _names_of({"anyOf": [{**_ref("name"), "description": "A limit set's name."},
                                  _ref("limit")]})
    validators = {"enum": sorted(registry.validators)}
    guard_names = sorted(registry.guards)
    field = _keywords(_FIELD_KEYS, {
        "type": {"enum": list(FIELD_TYPES), "default": "string"},
        "label": _ref("label"), "required": {"type": "boolean"}, "format": validators,
        "secret": {"type": "boolean"},
        "locked": {"anyOf": [{"type": "boolean"},
                             {"enum": [*guard_names, *(f"!{g}" for g in guard_names)]}]},
        "choices": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "max_length": {"type": "integer", "minimum": 1, "default": 1024},
        "help": _ref("label"), "description": {}, "choices_from": _ref("context_path"),
        "widget": _ref("name"), "value_from": _ref("context_path"),
        "sensitive": {"type": "boolean"},
        "choice_labels": {"type": "object", "propertyNames": {"type": "string"},
                          "additionalProperties": _ref("label")},
    }, required=("label",))
    state = _keywords(_STATE_KEYS, {
        "final": {"type": "boolean"}, "label": _ref("label"),
        "fields": {"type": ["object", "null"], "propertyNames": name,
                   "additionalProperties": _ref("field")},
        "on_enter": _names_of(_ref("action")),
        "timeout": _keywords(_TIMEOUT_KEYS, {"after": _ref("duration"),
                                             "trigger": _ref("name")},
                             required=("after", "trigger")),
        "description": {},
        "show": {"type": ["object", "null"], "propertyNames": name,
                 "additionalProperties": _ref("context_path")},
        "show_labels": {"type": "object", "propertyNames": name,
                        "additionalProperties": _ref("label")},
        "reply_labels": {"type": "object", "propertyNames": name,
                         "additionalProperties": _ref("label")},
        "next": {"type": "array", "minItems": 1, "items": _keywords(_NEXT_KEYS, {
            "flow": _ref("name"), "page": {"enum": list(NEXT_PAGES)},
            "label": _ref("label"), "after": _ref("duration")}, required=("label",))},
    })
    state["type"] = ["object", "null"]
    transition = _keywords(_TRANSITION_KEYS, {
        "trigger": {**_ref("name"), "not": {"const": "start"}},
        "source": _names_of(_ref("name")), "dest": _ref("name"), "stay": {"type": "boolean"},
        "guards": _names_of(_ref("guard")), "actions": _names_of(_ref("action")),
        "fields": _names_of(_ref("name")),
        "error": {"anyOf": [{**_ref("name"), "description": "An id from `errors`."}, error]},
        "label": _ref("label"), "description": {}, "limits": _ref("limits"),
        "via": {"enum": list(VIA), "default": "user"},
    }, required=("trigger", "source"))
    # A transition leads somewhere or stays: 'dest', or 'stay: true', not both.
    transition["oneOf"] = [{"required": ["dest"], "not": {"properties": {
                               "stay": {"const": True}}, "required": ["stay"]}},
                           {"required": ["stay"], "properties": {"stay": {"const": True}},
                            "not": {"required": ["dest"]}}]
    flow = _keywords(_FLOW_KEYS, {
        "title": _ref("label"), "initial": _ref("name"),
        "states": {"type": "object", "minProperties": 1, "propertyNames": name,
                   "additionalProperties": _ref("state")},
        "transitions": {"type": ["array", "null"], "items": _ref("transition")},
        "expires_in": {**_ref("duration"), "default": "24h"}, "description": {},
        "start_limits": _ref("limits"), "access": {"enum": list(ACCESS), "default": "anyone"},
        "offered_to": {"type": "array", "minItems": 1, "uniqueItems": True,
                       "items": {"type": "string",
                                 "pattern": "^[a-z][a-z0-9_]*(:[a-z][a-z0-9_]*)?$"}},
    }, required=("initial", "states"))
    return {
        "name": {**name, "description": "A lower_snake_case name."},
        "duration": {"type": "string", "pattern": DURATION,
                     "description": "Whole numbers with units d, h, m, s: 30m, 72h, 1h30m."},
        "context_path": {"type": "string", "pattern": CONTEXT_PATH.pattern,
                         "description": "values.<field> or facts.<fact>[.<key>...]"},
        "label": label, "limit": limit, "limits": limits, "field": field, "state": state,
        "transition": transition, "flow": flow,
        "action": _actions(registry), "guard": _guards(registry),
    }


def flows_schema(registry: Registry) -> dict[str, Any]:
    """Return the JSON Schema of a flows file whose names come from ``registry``."""
    top = _keywords(_TOP_KEYS, {
        "flows": {"type": "object", "minProperties": 1,
                  "propertyNames": {"type": "string", "pattern": NAME.pattern},
                  "additionalProperties": _ref("flow")},
        "policies": _policies(registry),
        "limit_sets": {"type": "object", "propertyNames": {"type": "string",
                                                           "pattern": NAME.pattern},
                       "additionalProperties": {"type": "array", "items": _ref("limit")}},
        "errors": {"type": "object", "propertyNames": {"type": "string",
                                                       "pattern": NAME.pattern},
                   "additionalProperties": _keywords(_SHARED_ERROR_KEYS, {
                       "zh": {"type": "string", "minLength": 1},
                       "en": {"type": "string", "minLength": 1}},
                       required=("zh", "en"))},
    }, required=("flows",))
    return {
        "$schema": DIALECT,
        "title": "flows.yaml",
        "description": "Flows of the identity platform as state machines (docs/flows.md). "
                       "Written by `flowctl schema`; lint (`flowctl lint`) checks more.",
        **top,
        "$defs": _defs(registry),
    }
