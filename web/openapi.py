"""The OpenAPI 3.1 description of the HTTP API (a test checks it against the routes)."""

from __future__ import annotations

from typing import Any


def _problem(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Problem"}
    return {"description": description,
            "content": {"application/problem+json": {"schema": schema}}}


_ID = {"name": "id", "in": "path", "required": True,
       "schema": {"type": "string", "format": "uuid"}, "description": "Flow instance id"}
_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
                "schema": {"type": "string", "maxLength": 200},
                "description": "Sending the same key again returns the first outcome."}
_INSTANCE = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Instance"}}}}

# What a client does next with a started flow's id.
_INSTANCE_LINKS = {
    name: {"operationId": name, "parameters": {"id": "$response.body#/id"}}
    for name in ("getFlow", "submit", "history", "verify", "captcha")
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


def document() -> dict[str, Any]:
    """Return the OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Identity self-service flows", "version": "0.1.0",
                 "description": "Declarative state machines for an identity platform's "
                                "self-service procedures, with replayable histories."},
        "paths": {
            "/api/flows": {"get": {
                "operationId": "listFlows", "summary": "List the flows that can be started",
                "responses": {"200": {"description": "Flows with their current versions"}}}},
            "/api/flows/{name}": {"post": {
                "operationId": "startFlow", "summary": "Start a flow",
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string"}}, _IDEMPOTENCY],
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"type": "object", "additionalProperties": False,
                               "properties": {"prefill": {"type": "object"}}}}}},
                "responses": {"201": {"description": "Started", **_INSTANCE,
                                      "links": _INSTANCE_LINKS},
                              "200": {"description": "Replayed start (same Idempotency-Key)",
                                      **_INSTANCE},
                              **{k: v for k, v in _ERRORS.items() if k in
                                 ("400", "403", "404", "413", "415", "422", "429")}}}},
            "/api/flows/{id}": {"get": {
                "operationId": "getFlow", "summary": "The instance and its current step",
                "parameters": [_ID],
                "responses": {"200": {"description": "The instance", **_INSTANCE},
                              "404": _ERRORS["404"]}}},
            "/api/flows/{id}/events/{trigger}": {"post": {
                "operationId": "submit", "summary": "Submit the current step with a trigger",
                "parameters": [_ID, {"name": "trigger", "in": "path", "required": True,
                                     "schema": {"type": "string"}}, _IDEMPOTENCY,
                               {"name": "If-Match", "in": "header", "required": False,
                                "schema": {"type": "string"},
                                "description": "The version from the instance's ETag"}],
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"type": "object"}}}},
                "responses": {"200": {"description": "The step was taken (or replayed)",
                                      **_INSTANCE}, **_ERRORS}}},
            "/api/flows/{id}/history": {"get": {
                "operationId": "history", "summary": "The instance's hash-chained history",
                "parameters": [_ID],
                "responses": {"200": {"description": "Events in order", "content": {
                    "application/json": {"schema": {"type": "object", "properties": {
                        "events": {"type": "array",
                                   "items": {"$ref": "#/components/schemas/Event"}}}}}}},
                    "404": _ERRORS["404"]}}},
            "/api/flows/{id}/verify": {"get": {
                "operationId": "verify",
                "summary": "Replay the history and compare it with the live instance",
                "parameters": [_ID],
                "responses": {"200": {"description": "The replay report"},
                              "404": _ERRORS["404"]}}},
            "/api/flows/{id}/captcha": {"get": {
                "operationId": "captcha",
                "summary": "A new image captcha for this instance (the previous one dies)",
                "parameters": [_ID],
                "responses": {"200": {"description": "PNG image",
                                      "content": {"image/png": {}}},
                              "404": _ERRORS["404"], "409": _ERRORS["409"]}}},
            "/api/session": {"get": {
                "operationId": "session", "summary": "Who is signed in",
                "responses": {"200": {"description": "The session"},
                              "401": _problem("Not signed in")}}},
            "/api/session/logout": {"post": {
                "operationId": "logout", "summary": "End this session",
                "responses": {"200": {"description": "Signed out"}}}},
            "/api/callbacks/{provider}": {"post": {
                "operationId": "providerCallback",
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
                "operationId": "searchBranches",
                "summary": "Search the bank-branch directory by parts of a name",
                "parameters": [{"name": "q", "in": "query", "required": True,
                                "schema": {"type": "string"}},
                               {"name": "limit", "in": "query", "required": False,
                                "schema": {"type": "integer", "maximum": 50}}],
                "responses": {"200": {"description": "Branches, best match first"},
                              "400": _ERRORS["400"]}}},
            "/api/branches/{code}": {"get": {
                "operationId": "getBranch", "summary": "One branch by its code",
                "parameters": [{"name": "code", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The branch"},
                              "404": _ERRORS["404"]}}},
            "/api/admin/audit": {"get": {
                "operationId": "auditLog",
                "summary": "The back office's audit log, newest first (administrators only)",
                "parameters": [
                    {"name": "target", "in": "query", "required": False,
                     "schema": {"type": "string"},
                     "description": "Only entries about this target, e.g. account:<id>"},
                    {"name": "actor", "in": "query", "required": False,
                     "schema": {"type": "string"},
                     "description": "Only entries by this actor, e.g. admin:<id>"},
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
                "responses": {"200": {"description": "Entries and the next page's cursor",
                                      "content": {"application/json": {"schema": {
                                          "type": "object", "properties": {
                                              "entries": {"type": "array", "items": {
                                                  "$ref": "#/components/schemas/AuditEntry"}},
                                              "next_before": {
                                                  "type": ["integer", "null"]}}}}}},
                              "400": _ERRORS["400"],
                              "401": _problem("Not signed in"),
                              "403": _problem("Signed in, but not as an administrator")}}},
            "/api/openapi.json": {"get": {"operationId": "openapi",
                                          "summary": "This document",
                                          "responses": {"200": {"description": "OpenAPI"}}}},
            "/healthz": {"get": {"operationId": "healthz", "summary": "The process is up",
                                 "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"operationId": "readyz",
                                "summary": "Database and Redis are reachable",
                                "responses": {"200": {"description": "ready"},
                                              "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics",
                                 "responses": {"200": {"description": "text exposition"}}}},
        },
        "components": {"schemas": {
            "Problem": {"type": "object", "required": ["type", "status", "error_id", "message"],
                        "properties": {
                            "type": {"type": "string"}, "title": {"type": "string"},
                            "status": {"type": "integer"}, "detail": {"type": "string"},
                            "instance": {"type": "string"}, "error_id": {"type": "string"},
                            "message": {"type": "object", "properties": {
                                "zh": {"type": "string"}, "en": {"type": "string"}}},
                            "errors": {"type": "array", "items": {"type": "object"}},
                            "field": {"type": "string"}, "request_id": {"type": "string"},
                            "restart": {"type": "object"}}},
            "Instance": {"type": "object", "required": ["id", "flow", "version", "state", "ui"],
                         "properties": {
                             "id": {"type": "string"}, "flow": {"type": "string"},
                             "version": {"type": "integer"},
                             "definition_version": {"type": "string"},
                             "state": {"type": "string"},
                             "status": {"enum": ["active", "finished", "expired"]},
                             "expires_at": {"type": "string", "format": "date-time"},
                             "deadline_at": {"type": ["string", "null"]},
                             "ui": {"type": "object"}, "event": {"type": "object"},
                             "replayed": {"type": "boolean"}}},
            "AuditEntry": {"type": "object", "properties": {
                "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
                "actor": {"type": "string"}, "action": {"type": "string"},
                "target": {"type": "string"}, "reason": {"type": "string"},
                "details": {"type": "object"}}},
            "Event": {"type": "object", "properties": {
                "seq": {"type": "integer"}, "trigger": {"type": "string"},
                "from": {"type": ["string", "null"]}, "to": {"type": "string"},
                "input": {"type": "object"}, "facts": {"type": "object"},
                "actor": {"type": "string"}, "at": {"type": "string"},
                "definition_hash": {"type": "string"}, "prev_hash": {"type": "string"},
                "hash": {"type": "string"}}},
        }},
    }
