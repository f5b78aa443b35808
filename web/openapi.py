"""The OpenAPI 3.1 description of the HTTP API, built from the flows being served.

The routes are fixed; what a flow's steps take is not: it is in ``flows.yaml`` and
changes with a reload. So the document is made from the loaded flows each time:

- every flow's **start** is an operation of its own, ``POST /api/flows/<flow>``, with the
  flow's prefill as its body. (A concrete path beside the template ``/api/flows/{id}``:
  OpenAPI forbids two templates that differ only in their parameter's name, and one
  operation per flow is also what a client generator and a reader find most useful);
- every **step** body (flow, state, trigger) is a schema in ``components``, built from
  the fields that trigger takes: types, formats, required, lengths, choices, secrets as
  ``writeOnly``. The step operation ``POST /api/flows/{id}/events/{trigger}`` takes
  ``anyOf`` them: which one applies follows from the instance's flow and state (its
  ``ui`` lists the same fields), not from the body, and several bodies are the same (a
  phone number to send a code to), so ``oneOf`` would not hold and no discriminator
  exists. Each schema's title and ``x-flow``/``x-state``/``x-trigger`` say where it
  applies.

A test validates the document with openapi-spec-validator and compares its paths with
the routes that exist.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from engine import Flow, FlowSet, Registry
from engine.model import Field, Label

__all__ = ["document", "prefill_fields", "step_schema_name"]


def _problem(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Problem"}
    return {"description": description,
            "content": {"application/problem+json": {"schema": schema}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ID = {"name": "id", "in": "path", "required": True,
       "schema": {"type": "string", "format": "uuid"}, "description": "Flow instance id"}
_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
                "schema": {"type": "string", "maxLength": 200},
                "description": "Sending the same key again returns the first outcome."}
_INSTANCE = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Instance"}}}}


def _seal_image(operation: str, media: str, summary: str) -> dict[str, Any]:
    """A seal's image: only its account sees it; the ETag is its content hash."""
    return {
        "operationId": operation, "tags": ["seals"], "summary": summary,
        "description": "Signed in (cookie or bearer token) as the account that holds the "
                       "seal; any other gets the 404 of a seal that does not exist. The "
                       "`ETag` is the seal's content hash (strong); `If-None-Match` with "
                       "it answers 304 until the style changes.",
        "parameters": [
            {"name": "id", "in": "path", "required": True,
             "schema": {"type": "string", "format": "uuid"}, "description": "Seal id"},
            {"name": "download", "in": "query", "required": False,
             "schema": {"enum": ["1", "true"]},
             "description": "Content-Disposition: attachment (else inline)"},
            {"name": "If-None-Match", "in": "header", "required": False,
             "schema": {"type": "string"}}],
        "responses": {"200": {"description": "The image", "content": {media: {}},
                              "headers": {"ETag": {"schema": {"type": "string"}}}},
                      "304": {"description": "Not modified: the ETag still matches"},
                      "401": _problem("Not signed in"),
                      "404": _problem("No such seal of this account"),
                      "503": _problem("The seal fonts are not installed (Retry-After)")}}

# What a client does next with a started flow's id.
_INSTANCE_LINKS = {
    name: {"operationId": name, "parameters": {"id": "$response.body#/id"}}
    for name in ("getFlow", "submit", "history", "verify", "captcha")
}

_OAUTH_ERROR = {"description": "An OAuth error: {error, error_description} (RFC 6749 5.2)",
                "content": {"application/json": {}}}
_REDIRECT = {"description": "To the relying party's redirect URI (a code, or error=...), "
                            "or to /login?authorize=<id> to sign in first",
             "headers": {"Location": {"schema": {"type": "string"}}}}
_LOGOUT: dict[str, Any] = {
    "summary": "End session endpoint (RP-initiated logout): with an id_token_hint of this "
               "session, sign out at once; else the person confirms on a small page "
               "(confirm). Back-channel logout tokens go to every system the session "
               "entered",
    "parameters": [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                   for n in ("id_token_hint", "client_id", "post_logout_redirect_uri",
                             "state", "confirm")],
    "responses": {"200": {"description": "The confirmation page, or: signed out",
                          "content": {"text/html": {}}},
                  "302": _REDIRECT,
                  "400": _problem("Unknown system, unregistered post_logout_redirect_uri "
                                  "or an id_token_hint we did not sign: a page, never a "
                                  "redirect"),
                  "403": _problem("The confirmation belongs to another session"),
                  "404": _problem("Unknown, used or expired confirmation")}}
_USERINFO = {
    "summary": "Claims about the access token's person (Authorization: Bearer)",
    "responses": {"200": {"description": "sub, kind, amr, auth_time; name (profile); org "
                                         "and act for an organisation; personal data "
                                         "only through its scope, audited"},
                  "401": _OAUTH_ERROR}}
_SSO_PATHS: dict[str, Any] = {
    "/.well-known/openid-configuration": {"get": {
        "operationId": "openidConfiguration", "tags": ["single sign-on"],
        "summary": "OpenID Connect discovery",
        "responses": {"200": {"description": "The provider's metadata"}}}},
    "/.well-known/jwks.json": {"get": {
        "operationId": "jwks", "tags": ["single sign-on"],
        "summary": "The signing keys' public parts: the next, the current, and retired "
                   "ones while their tokens live",
        "responses": {"200": {"description": "A JWK set"}}}},
    "/authorize": {"get": {
        "operationId": "authorize", "tags": ["single sign-on"],
        "summary": "Authorization endpoint: code flow, PKCE S256 and a nonce required",
        "responses": {"302": _REDIRECT,
                      "400": _problem("Unknown system or unregistered redirect_uri: a "
                                      "page, never a redirect")}}},
    "/authorize/resume": {"get": {
        "operationId": "resumeAuthorization", "tags": ["single sign-on"],
        "summary": "Go on with a stored authorization request once signed in (same "
                   "browser only)",
        "parameters": [{"name": "id", "in": "query", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"302": _REDIRECT,
                      "403": _problem("The request belongs to another browser"),
                      "404": _problem("Unknown, used or expired request")}}},
    "/token": {"post": {
        "operationId": "token", "tags": ["single sign-on"],
        "summary": "Token endpoint: a code and its PKCE verifier for an ID token and an "
                   "access token (client_secret_basic, client_secret_post, or none for "
                   "public clients)",
        "requestBody": {"required": True, "content": {
            "application/x-www-form-urlencoded": {"schema": {"type": "object"}}}},
        "responses": {"200": {"description": "access_token, id_token, expires_in"},
                      "400": _OAUTH_ERROR, "401": _OAUTH_ERROR,
                      "503": _problem("No signing key is in force")}}},
    "/userinfo": {"get": {"operationId": "userinfo", "tags": ["single sign-on"],
                          **_USERINFO},
                  "post": {"operationId": "userinfoPost", "tags": ["single sign-on"],
                           **_USERINFO}},
    "/logout": {"get": {"operationId": "endSession", "tags": ["single sign-on"], **_LOGOUT},
                "post": {"operationId": "endSessionPost", "tags": ["single sign-on"],
                         **_LOGOUT}},
    "/api/hall": {"get": {
        "operationId": "hall", "tags": ["single sign-on"],
        "summary": "The service hall: the systems this account may enter, with the URL "
                   "that starts each one's sign-in",
        "responses": {"200": {"description": "The systems"},
                      "401": _problem("Not signed in")}}},
}


_ERRORS = {
    "400": _problem("Malformed JSON, a body that is not an object, or a bad header"),
    "403": _problem("The flow needs a signed-in account or administrator, or is another's"),
    "404": _problem("No such flow or instance"),
    "409": _problem("Lost race (version_conflict), trigger not available, or flow finished"),
    "410": _problem("The flow has expired; the body has the data to start a new one"),
    "412": _problem("If-Match names a version that is no longer current"),
    "413": _problem("The body is larger than 1 MiB"),
    "415": _problem("The body is not application/json"),
    "422": _problem("Field errors, unknown fields, or the guards refused the step"),
    "429": _problem("A limit is reached (codes sent, flows started, ...): Retry-After says "
                    "when to try again"),
}
_START_ERRORS = ("400", "403", "404", "413", "415", "422", "429")


def step_schema_name(flow: str, state: str, trigger: str) -> str:
    """The component name of one step's body."""
    return f"Step.{flow}.{state}.{trigger}"


def _text(label: Label | None) -> str:
    if label is None:
        return ""
    return label.zh if label.zh == label.en else f"{label.zh} / {label.en}"


def _format_note(registry: Registry | None, name: str) -> str:
    """What a field's format checks: the validator's own first line, where there is one."""
    fn = registry.validators.get(name) if registry is not None else None
    doc = inspect.getdoc(fn) if fn is not None else None
    first = doc.split("\n\n", 1)[0].split() if doc else []
    return f"Format `{name}`" + (f": {' '.join(first)}" if first else "") + "."


def _field_schema(field: Field, registry: Registry | None, *, optional: bool) -> dict[str, Any]:
    """One field as JSON Schema: what the engine's validation accepts for it."""
    schema: dict[str, Any]
    notes: list[str] = []
    if field.type == "integer":
        # The engine takes a whole number or a string of digits ("42", "-3").
        schema = {"type": ["integer", "string"], "pattern": r"^\s*-?[0-9]+\s*$"}
        notes.append("A whole number, or a string of its digits.")
    elif field.type == "boolean":
        schema = {"type": "boolean"}
        if field.required:
            schema["const"] = True
            notes.append("Must be ticked (true).")
    elif field.type == "choice":
        schema = {"type": "string"}
        if field.choices_from:
            notes.append(f"One of the choices the step lists in `ui.fields[].choices` "
                         f"(read from `{field.choices_from}`).")
        else:
            schema["enum"] = list(field.choices)
    else:
        schema = {"type": "string", "maxLength": field.max_length}
        if field.required and field.locked is False:
            # Blank counts as missing: something other than spaces.
            schema["pattern"] = r"\S"
    if field.format:
        schema["format"] = field.format
        notes.append(_format_note(registry, field.format))
    if field.secret:
        schema["writeOnly"] = True
        notes.append("Secret: never recorded, never shown back.")
    if field.sensitive:
        schema["x-sensitive"] = True
        notes.append("Personal data: recorded sealed, shown masked.")
    if field.locked is True:
        notes.append("Locked: send it back as shown, or leave it out.")
    elif field.locked is not False:
        notes.append(f"Locked while `{field.locked}` holds: then send it back as shown "
                     "(masked, if shown masked), or leave it out.")
    if field.value_from:
        notes.append(f"Starts as `{field.value_from}`.")
    if field.help:
        notes.append(_text(field.help))
    if optional and "const" not in schema:
        # Left out, null or blank: the field is skipped (an earlier value stays).
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        schema["type"] = [*kinds, "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    out = {"title": _text(field.label), **schema}
    if notes:
        out["description"] = " ".join(notes)
    return out


def _trigger_label(flow: Flow, state: str, trigger: str) -> Label | None:
    return next((t.label for t in flow.transitions_from(state, trigger) if t.label), None)


def _step_schema(flow: Flow, state: str, trigger: str,
                 registry: Registry | None) -> dict[str, Any]:
    fields = flow.fields_for(state, trigger)
    # A locked field is taken from the record: required or not, it may be left out.
    required = [f.name for f in fields if f.required and f.locked is False]
    label = _trigger_label(flow, state, trigger)
    where = f"{flow.name} · {state} · {trigger}"
    description = (f"Body of `POST /api/flows/{{id}}/events/{trigger}` while an instance "
                   f"of `{flow.name}` ({_text(flow.title)}) is in state `{state}` "
                   f"({_text(flow.states[state].label)})")
    description += f"; the button reads {_text(label)}." if label else "."
    if not fields:
        description += " It takes no fields: send `{}` or no body."
    # Where the step can end, as the guards decide: a stay (or a self-loop) is this state.
    leads = list(dict.fromkeys(t.target(state) for t in flow.transitions_from(state, trigger)))
    moves = [f"`{s}`" for s in leads if s != state]
    outcomes = ([f"leads to {' or '.join(moves)}"] if moves else []) + (
        ["stays in this state"] if state in leads else [])
    description += f" It {', or '.join(outcomes)}."
    schema: dict[str, Any] = {
        "title": where, "description": description, "type": "object",
        "additionalProperties": False,
        "properties": {f.name: _field_schema(f, registry, optional=f.name not in required)
                       for f in fields},
        "x-flow": flow.name, "x-state": state, "x-trigger": trigger, "x-leads-to": leads,
    }
    if required:
        schema["required"] = required
    return schema


def prefill_fields(flow: Flow) -> dict[str, Field]:
    """The fields a start may prefill: neither secret nor personal data, nor derived."""
    return {name: f for name, f in flow.all_fields().items()
            if not f.secret and not f.sensitive and f.locked is False and f.value_from is None}


def _prefill_schema(flow: Flow, registry: Registry | None) -> dict[str, Any]:
    return {
        "title": f"{flow.name} · prefill",
        "description": "Values to start with, checked for type, length, choices and format "
                       "(not for required); any other field is refused.",
        "type": "object", "additionalProperties": False,
        "properties": {name: _field_schema(f, registry, optional=True)
                       for name, f in prefill_fields(flow).items()},
    }


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _flow_description(flow: Flow) -> str:
    access = {"anyone": "Anyone may start it.",
              "account": "Needs a signed-in account (cookie or bearer token).",
              "admin": "Needs a signed-in administrator."}[flow.access]
    hours = flow.expires_in.total_seconds() / 3600
    lines = [f"{access} An instance lives {hours:g} hours from its start.", "",
             "| state | triggers (step body schema) |", "| --- | --- |"]
    for name, state in flow.states.items():
        triggers = ", ".join(
            f"`{t}` (`{step_schema_name(flow.name, name, t)}`)"
            for t in flow.user_triggers(name)) or ("finished" if state.final else
                                                    "the clock or a provider moves it on")
        lines.append(f"| `{name}` {_text(state.label)} | {triggers} |")
    return "\n".join(lines)


def _start(flow: Flow) -> dict[str, Any]:
    body_schema = {"type": "object", "additionalProperties": False,
                   "properties": {"prefill": {"$ref": f"#/components/schemas/Prefill.{flow.name}"}}}
    return {"post": {
        "operationId": f"start{_camel(flow.name)}", "tags": [flow.name],
        "summary": f"Start {_text(flow.title) or flow.name}",
        "description": _flow_description(flow),
        "parameters": [_IDEMPOTENCY, _PREFER],
        "requestBody": {"required": False,
                        "content": {"application/json": {"schema": body_schema}}},
        "responses": {"201": {"description": "Started", **_INSTANCE, "links": _INSTANCE_LINKS},
                      "200": {"description": "Replayed start (same Idempotency-Key)",
                              **_INSTANCE},
                      **{k: v for k, v in _ERRORS.items() if k in _START_ERRORS}}}}


def _flow_parts(flows: FlowSet, registry: Registry | None
                ) -> tuple[dict[str, Any], dict[str, Any], list[str], list[dict[str, Any]]]:
    """Start paths, schemas, the triggers a client may send, and a tag per flow."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    triggers: dict[str, None] = {}
    tags = []
    for flow in flows.flows.values():
        paths[f"/api/flows/{flow.name}"] = _start(flow)
        schemas[f"Prefill.{flow.name}"] = _prefill_schema(flow, registry)
        tags.append({"name": flow.name, "description": _text(flow.title)})
        for state in flow.states:
            for trigger in flow.user_triggers(state):
                triggers[trigger] = None
                schemas[step_schema_name(flow.name, state, trigger)] = _step_schema(
                    flow, state, trigger, registry)
    return paths, schemas, list(triggers), tags


def document(flows: FlowSet | None = None,
             registry: Registry | None = None) -> dict[str, Any]:
    """Return the OpenAPI document for these flows (formats explained by ``registry``)."""
    start_paths, flow_schemas, triggers, flow_tags = _flow_parts(
        flows or FlowSet({}), registry)
    steps = [{"$ref": f"#/components/schemas/{name}"} for name in flow_schemas
             if name.startswith("Step.")]
    step_body: dict[str, Any] = {"anyOf": steps} if steps else {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Identity self-service flows", "version": "0.1.0",
                 "description": "Declarative state machines for an identity platform's "
                                "self-service procedures, with replayable histories. "
                                "Every refusal is problem+json; its `type` is the page of "
                                "its error id under `/problems/`."},
        "tags": [*flow_tags,
                 {"name": "instances", "description": "Read and step a started flow"},
                 {"name": "session", "description": "Who is signed in"},
                 {"name": "providers", "description": "Callbacks and the branch directory"},
                 {"name": "single sign-on", "description": "The OpenID Connect provider "
                                                           "and the service hall "
                                                           "(docs/oidc.md)"},
                 {"name": "back office", "description": "Administrators only"},
                 {"name": "seals", "description": "The signed-in account's seal images"},
                 {"name": "operations", "description": "Health, readiness, metrics"},
                 {"name": "documentation", "description": "This document, its page and "
                                                          "the error pages"}],
        "paths": {
            "/api/flows": {"get": {
                "operationId": "listFlows", "tags": ["instances"],
                "summary": "List the flows that can be started",
                "responses": {"200": _json({"$ref": "#/components/schemas/FlowList"},
                                           "Flows with their current versions")}}},
            **start_paths,
            "/api/flows/{id}": {"get": {
                "operationId": "getFlow", "tags": ["instances"],
                "summary": "The instance and its current step",
                "parameters": [_ID],
                "responses": {"200": {"description": "The instance", **_INSTANCE},
                              "404": _ERRORS["404"]}}},
            "/api/flows/{id}/events/{trigger}": {"post": {
                "operationId": "submit", "tags": ["instances"],
                "summary": "Submit the current step with a trigger",
                "description": "The body is the step's form: the schema of the instance's "
                               "flow, state and trigger (`Step.<flow>.<state>.<trigger>`), "
                               "the same fields the instance's `ui` lists for that trigger. "
                               "Unknown fields are refused.",
                "parameters": [_ID, {"name": "trigger", "in": "path", "required": True,
                                     "schema": {"type": "string", "enum": triggers}
                                     if triggers else {"type": "string"}},
                               _IDEMPOTENCY,
                               {"name": "If-Match", "in": "header", "required": False,
                                "schema": {"type": "string"},
                                "description": "The version from the instance's ETag"},
                               _PREFER],
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": step_body}}},
                "responses": {"200": {"description": "The step was taken and recorded (or "
                                                     "replayed as it was); `errors` says "
                                                     "when its outcome is a failure",
                                      **_INSTANCE}, **_ERRORS}}},
            "/api/flows/{id}/history": {"get": {
                "operationId": "history", "tags": ["instances"],
                "summary": "The instance's hash-chained history",
                "parameters": [_ID],
                "responses": {"200": _json({"type": "object", "properties": {
                    "instance_id": {"type": "string"},
                    "events": {"type": "array",
                               "items": {"$ref": "#/components/schemas/Event"}}}},
                    "Events in order"),
                    "404": _ERRORS["404"]}}},
            "/api/flows/{id}/verify": {"get": {
                "operationId": "verify", "tags": ["instances"],
                "summary": "Replay the history and compare it with the live instance",
                "parameters": [_ID],
                "responses": {"200": {"description": "The replay report"},
                              "404": _ERRORS["404"]}}},
            "/api/flows/{id}/captcha": {"get": {
                "operationId": "captcha", "tags": ["instances"],
                "summary": "A new image captcha for this instance (the previous one dies)",
                "parameters": [_ID],
                "responses": {"200": {"description": "PNG image",
                                      "content": {"image/jpeg": {}}},
                              "404": _ERRORS["404"], "409": _ERRORS["409"]}}},
            "/api/session": {"get": {
                "operationId": "session", "tags": ["session"], "summary": "Who is signed in",
                "responses": {"200": {"description": "The session"},
                              "401": _problem("Not signed in")}}},
            "/api/me": {"get": {
                "operationId": "me", "tags": ["session"],
                "summary": "The personal center: the signed-in account (personal data "
                           "masked), an organisation's registration, verification and "
                           "agents, and the flows this account may start now",
                "responses": {"200": {"description": "The account page"},
                              "401": _problem("Not signed in")}}},
            "/api/session/logout": {"post": {
                "operationId": "logout", "tags": ["session"], "summary": "End this session",
                "responses": {"200": {"description": "Signed out"}}}},
            **_SSO_PATHS,
            "/api/callbacks/{provider}": {"post": {
                "operationId": "providerCallback", "tags": ["providers"],
                "summary": "A provider's signed callback (face result, credited deposit)",
                "parameters": [
                    {"name": "provider", "in": "path", "required": True,
                     "schema": {"enum": ["face", "payment"]}},
                    {"name": "X-Signature", "in": "header", "required": True,
                     "schema": {"type": "string"}},
                    {"name": "X-Timestamp", "in": "header", "required": True,
                     "schema": {"type": "string"}},
                    {"name": "X-Event-Id", "in": "header", "required": True,
                     "schema": {"type": "string"}}],
                "responses": {"200": {"description": "Applied (or already applied)"},
                              "401": _problem("Bad or missing signature, or stale timestamp"),
                              "404": _ERRORS["404"],
                              "409": _problem("Replayed event id, or the flow is finished")}}},
            "/api/branches": {"get": {
                "operationId": "searchBranches", "tags": ["providers"],
                "summary": "Search the bank-branch directory by parts of a name",
                "parameters": [{"name": "q", "in": "query", "required": True,
                                "schema": {"type": "string"}},
                               {"name": "limit", "in": "query", "required": False,
                                "schema": {"type": "integer", "maximum": 50}}],
                "responses": {"200": {"description": "Branches, best match first"},
                              "400": _ERRORS["400"]}}},
            "/api/branches/{code}": {"get": {
                "operationId": "getBranch", "tags": ["providers"],
                "summary": "One branch by its code",
                "parameters": [{"name": "code", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The branch"},
                              "404": _ERRORS["404"]}}},
            "/api/admin/audit": {"get": {
                "operationId": "auditLog", "tags": ["back office"],
                "summary": "The back office's audit log, newest first (administrators only)",
                "parameters": [
                    {"name": "target", "in": "query", "required": False,
                     "schema": {"type": "string", "maxLength": 200},
                     "description": "Only entries about this target: a raw id (e.g. "
                                    "account:<id>) or an account's login name (an "
                                    "organisation's also matches organisation:<id>)"},
                    {"name": "actor", "in": "query", "required": False,
                     "schema": {"type": "string", "maxLength": 200},
                     "description": "Only entries by this actor: a raw id (e.g. "
                                    "admin:<id>) or an account's login name"},
                    {"name": "action", "in": "query", "required": False,
                     "schema": {"type": "string"},
                     "description": "reset_password, verify_organisation, create_supervisor,"
                                    " create_admin"},
                    {"name": "before", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1},
                     "description": "Only entries with a smaller id (next_before pages on)"},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 500,
                                "default": 100}}],
                "responses": {"200": _json({
                    "type": "object", "properties": {
                        "entries": {"type": "array", "items": {
                            "$ref": "#/components/schemas/AuditEntry"}},
                        "next_before": {"type": ["integer", "null"]}}},
                    "Entries and the next page's cursor"),
                    "400": _ERRORS["400"],
                    "401": _problem("Not signed in"),
                    "403": _problem("Signed in, but not as an administrator")}}},
            "/api/me/seals": {"get": {
                "operationId": "mySeals", "tags": ["seals"],
                "summary": "The signed-in account's seals, oldest first, with their image "
                           "URLs (create_seal, change_seal_style and delete_seal change "
                           "them)",
                "responses": {"200": _json({"type": "object", "properties": {
                    "seals": {"type": "array",
                              "items": {"$ref": "#/components/schemas/Seal"}}}},
                    "The seals"),
                    "401": _problem("Not signed in")}}},
            "/api/me/seals/{id}.svg": {"get": _seal_image(
                "sealSvg", "image/svg+xml", "The seal as SVG: glyph outlines, sized in "
                "millimetres, no font needed")},
            "/api/me/seals/{id}.png": {"get": _seal_image(
                "sealPng", "image/png", "The seal as PNG at 300 dpi, on a transparent "
                "ground")},
            "/api/openapi.json": {"get": {
                "operationId": "openapi", "tags": ["documentation"],
                "summary": "This document, built from the flows being served",
                "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/api/docs": {"get": {
                "operationId": "apiPage", "tags": ["documentation"],
                "summary": "This document as an interactive page (Swagger UI)",
                "responses": {"200": {"description": "HTML",
                                      "content": {"text/html": {}}}}}},
            "/problems": {"get": {
                "operationId": "problemIndex", "tags": ["documentation"],
                "summary": "Every error id the service answers with",
                "responses": {"200": {"description": "HTML, or JSON when asked for",
                                      "content": {"text/html": {}, "application/json": {}}}}}},
            "/problems/{error_id}": {"get": {
                "operationId": "problemPage", "tags": ["documentation"],
                "summary": "One error id: status, messages and what to do (a problem's type)",
                "parameters": [{"name": "error_id", "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}}],
                "responses": {"200": {"description": "HTML, or JSON when asked for",
                                      "content": {"text/html": {}, "application/json": {
                                          "schema": {"$ref": "#/components/schemas/ProblemType"}}}},
                              "404": _ERRORS["404"]}}},
            "/healthz": {"get": {"operationId": "healthz", "tags": ["operations"],
                                 "summary": "The process is up",
                                 "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"operationId": "readyz", "tags": ["operations"],
                                "summary": "Database and Redis are reachable",
                                "responses": {"200": {"description": "ready"},
                                              "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"operationId": "metrics", "tags": ["operations"],
                                 "summary": "Prometheus metrics",
                                 "responses": {"200": {"description": "text exposition"}}}},
        },
        "components": {"schemas": {**_SCHEMAS, **flow_schemas},
                       "securitySchemes": _SECURITY},
        # Who may do what: an instance answers only its owner (the device that started a
        # flow open to anyone, or the signed-in account).
        "security": [{"device": []}, {"session": []}, {"bearer": []}, {}],
    }


_SECURITY: Mapping[str, Any] = {
    "device": {"type": "apiKey", "in": "cookie", "name": "device",
               "description": "HttpOnly; handed out by the first start and renewed by every "
                              "start. A flow open to anyone belongs to the device that "
                              "started it: only it may read or step the instance. Unsafe "
                              "requests it authenticates must come from this site's pages "
                              "(Origin), or they get 403 cross_site_request."},
    "session": {"type": "apiKey", "in": "cookie", "name": "session",
                "description": "HttpOnly; set by a sign-in flow's last step."},
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "The session token of a client that asked for it with "
                              "`Prefer: session-token` on the sign-in step."},
}
_PREFER = {"name": "Prefer", "in": "header", "required": False,
           "schema": {"type": "string", "enum": ["session-token", "captcha-image"]},
           "description": "session-token: a client that keeps no cookies gets a sign-in's "
                          "session token in reply.session (and no cookie). captcha-image: "
                          "where the answer shows a captcha field, that field's new image "
                          "comes in it as `image_data` (a data: URL; the previous image "
                          "stops working), so the client needs no request of its own for "
                          "it; a step refused (422) brings it in the problem's "
                          "`captcha` member. Both may be asked for, separated by a comma; "
                          "`Preference-Applied` names those applied."}


_LABEL = {"type": ["object", "null"], "properties": {"zh": {"type": "string"},
                                                     "en": {"type": "string"}}}
_FIELD_ERROR = {"type": "object", "required": ["error_id", "zh", "en"], "properties": {
    "field": {"type": ["string", "null"]}, "error_id": {"type": "string"},
    "zh": {"type": "string"}, "en": {"type": "string"}}}

_SCHEMAS: Mapping[str, Any] = {
    "Problem": {"type": "object", "required": ["type", "status", "error_id", "message"],
                "properties": {
                    "type": {"type": "string", "format": "uri-reference",
                             "description": "The page of this error id: /problems/{error_id}"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"}, "detail": {"type": "string"},
                    "instance": {"type": "string"}, "error_id": {"type": "string"},
                    "message": {"type": "object", "properties": {
                        "zh": {"type": "string"}, "en": {"type": "string"}}},
                    "errors": {"type": "array",
                               "items": {"$ref": "#/components/schemas/FieldError"},
                               "description": "validation_failed: one entry per field; each "
                                              "error_id has its page under /problems/ too"},
                    "field": {"type": "string"}, "request_id": {"type": "string"},
                    "retry_after": {"type": "integer"}, "limit": {"type": "string"},
                    "restart": {"type": "object"},
                    "captcha": {"type": "object", "properties": {
                        "field": {"type": "string"},
                        "image_data": {"type": "string", "format": "uri"}},
                        "description": "Prefer: captcha-image, on a step refused whose "
                                       "state shows a captcha (a sign-in's login_failed "
                                       "used it up): the captcha field's name and its new "
                                       "image, a data: URL"}}},
    "FieldError": _FIELD_ERROR,
    "ProblemType": {"type": "object", "required": ["error_id", "status", "kind", "messages"],
                    "properties": {
                        "error_id": {"type": "string"}, "status": {"type": "integer"},
                        "kind": {"enum": ["problem", "field", "step", "limit"]},
                        "messages": {"type": "array", "items": {"type": "object"}},
                        "todo": {"type": "object", "properties": {
                            "zh": {"type": "string"}, "en": {"type": "string"}}}}},
    "FlowList": {"type": "object", "properties": {"flows": {"type": "array", "items": {
        "type": "object", "properties": {
            "name": {"type": "string"}, "version": {"type": "string"},
            "access": {"enum": ["anyone", "account", "admin"]}, "title": _LABEL,
            "initial": {"type": "string"},
            "expires_in": {"type": "integer", "description": "seconds"}}}}}},
    "Instance": {"type": "object", "required": ["id", "flow", "version", "state", "ui"],
                 "properties": {
                     "id": {"type": "string"}, "flow": {"type": "string"},
                     "version": {"type": "integer"},
                     "definition_version": {"type": "string"},
                     "state": {"type": "string"},
                     "status": {"enum": ["active", "finished", "expired"]},
                     "created_at": {"type": "string", "format": "date-time"},
                     "updated_at": {"type": "string", "format": "date-time"},
                     "expires_at": {"type": "string", "format": "date-time"},
                     "deadline_at": {"type": ["string", "null"]},
                     "ui": {"$ref": "#/components/schemas/UI"}, "event": {"type": "object"},
                     "replayed": {"type": "boolean"},
                     "errors": {"type": "array", "items": {
                         "$ref": "#/components/schemas/FieldError"},
                         "description": "The step was taken and its outcome is an error the "
                                        "user must see; the same objects a 422 refusal "
                                        "carries"},
                     "reply": {"type": "object",
                               "description": "What this answer alone carries (a one-time "
                                              "password); never stored"}}},
    "UI": {"type": "object", "description": "The current step: what to show and submit.",
           "properties": {
               "state": {"type": "string"}, "label": _LABEL, "final": {"type": "boolean"},
               "data": {"type": "object", "description": "The state's `show` entries"},
               "fields": {"type": "array", "items": {"type": "object", "properties": {
                   "name": {"type": "string"},
                   "type": {"enum": ["string", "integer", "boolean", "choice"]},
                   "label": _LABEL, "required": {"type": "boolean"},
                   "secret": {"type": "boolean"}, "sensitive": {"type": "boolean"},
                   "locked": {"type": "boolean"}, "value": {},
                   "error": {"oneOf": [_FIELD_ERROR, {"type": "null"}]},
                   "format": {"type": "string"}, "widget": {"type": "string"},
                   "image": {"type": "string", "description": "A captcha widget's "
                             "address: GET it for a new image"},
                   "image_data": {"type": "string", "description": "The new image itself, "
                                  "as a data: URL, in the answer to a start or a step sent "
                                  "with `Prefer: captcha-image`"},
                   "search": {"type": "string", "description": "A branch search widget's "
                              "address: GET it with ?q="},
                   "max_length": {"type": "integer"}, "help": _LABEL,
                   "choices": {"type": "array", "items": {"type": "object", "properties": {
                       "value": {"type": "string"}, "label": _LABEL}}}}}},
               "triggers": {"type": "array", "items": {"type": "object", "properties": {
                   "trigger": {"type": "string"}, "label": _LABEL,
                   "fields": {"type": "array", "items": {"type": "string"}}}}},
               "error": {"oneOf": [_FIELD_ERROR, {"type": "null"}]}}},
    "AuditEntry": {"type": "object", "properties": {
        "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
        "actor": {"type": "string"}, "action": {"type": "string"},
        "target": {"type": "string"}, "reason": {"type": "string"},
        "details": {"type": "object"},
        "actor_account": {"oneOf": [{"$ref": "#/components/schemas/AuditAccount"},
                                    {"type": "null"}]},
        "target_account": {"oneOf": [{"$ref": "#/components/schemas/AuditAccount"},
                                     {"type": "null"}]}}},
    "AuditAccount": {
        "type": "object",
        "description": "The account an actor or target names, as people know it (null "
                       "for the clock, a device, or an account since removed)",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "kind": {"enum": ["personal", "organisation", "supervisor", "admin"]},
            "name": {"type": "string",
                     "description": "An administrator's login name, an organisation's "
                                    "registered name, a person's name masked (first "
                                    "character)"},
            "login_name": {"type": "string"}}},
    "Seal": {"type": "object", "properties": {
        "id": {"type": "string", "format": "uuid"},
        "kind": {"enum": ["round", "square"]},
        "summary": {"type": "string", "description": "What it shows, and its size"},
        "text": {"type": "string",
                 "description": "The name it shows (the organisation's in force when it "
                                "was made or restyled, or the person's)"},
        "style": {"type": "object", "properties": {
            "kind": {"type": "string"}, "size_mm": {"type": "integer"},
            "colour": {"type": "string"}, "rim_mm": {"type": "string"},
            "font": {"type": "string"}, "inner_text": {"type": ["string", "null"]},
            "code": {"type": ["string", "null"]}}},
        "content_hash": {"type": "string",
                         "description": "SHA-256 of the canonical style and text"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "svg_url": {"type": "string"}, "png_url": {"type": "string"}}},
    "Event": {"type": "object", "properties": {
        "seq": {"type": "integer"}, "trigger": {"type": "string"},
        "from": {"type": ["string", "null"]}, "to": {"type": "string"},
        "input": {"type": "object"}, "facts": {"type": "object"},
        "actor": {"type": "string"}, "at": {"type": "string"},
        "definition_hash": {"type": "string"}, "prev_hash": {"type": "string"},
        "hash": {"type": "string"}}},
}
