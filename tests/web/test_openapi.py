"""The OpenAPI document: valid, true to the routes, and each step's body from flows.yaml."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from openapi_spec_validator import validate

from engine import Registry, ValidationFailed, load_file, load_text
from engine.forms import validate_input
from tests.platform import new_credit_code, new_id_number
from tests.sample_flows import SAMPLE_YAML
from web import keys
from web.openapi import document, step_schema_name

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = Registry().load_modules(["flows"])
FLOWS = load_file(str(ROOT / "flows.yaml"), REGISTRY)
DOC = document(FLOWS, REGISTRY)
NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOC["openapi"] == "3.1.0"
    validate(DOC)  # raises with the first problem


async def test_the_served_document_is_valid_and_documents_exactly_the_routes_that_exist(
        aiohttp_client: Any, app: web.Application) -> None:
    client = await aiohttp_client(app)
    doc = await (await client.get("/api/openapi.json")).json()
    validate(doc)
    flows = app[keys.RUNTIME].flows.flows
    documented = {(path, method.upper()) for path, ops in doc["paths"].items()
                  for method in ops}
    existing = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        path = route.resource.canonical if route.resource else ""
        if path.startswith(("/sandbox", "/api/docs/")):
            continue  # development tooling, and the API page's own files
        if getattr(route.handler, "__module__", "").startswith("web.client") \
                or path == "/static":
            continue  # the web client's pages and their files: HTML, not the API
        if (path, route.method) == ("/api/flows/{name}", "POST"):
            # One documented operation per flow: a start takes that flow's prefill.
            existing |= {(f"/api/flows/{name}", "POST") for name in flows}
        else:
            existing.add((path, route.method))
    assert documented == existing
    assert doc == document(app[keys.RUNTIME].flows, app[keys.REGISTRY])


def test_no_two_paths_differ_only_in_a_parameters_name() -> None:
    # A parameter may share a segment with literal text: {id}.svg and {id}.png differ.
    shapes = [tuple(re.sub(r"\{[^}]*\}", "{}", part) for part in path.split("/"))
              for path in DOC["paths"]]
    assert len(shapes) == len(set(shapes))


def schema(name: str) -> dict[str, Any]:
    found: dict[str, Any] = DOC["components"]["schemas"][name]
    return found


def test_each_step_body_is_its_own_schema_from_the_fields_its_trigger_takes() -> None:
    body = schema(step_schema_name("personal_login", "credentials", "submit"))
    assert body["required"] == ["identifier", "password", "captcha"]
    assert body["additionalProperties"] is False
    assert body["properties"]["password"]["writeOnly"] is True
    assert body["properties"]["captcha"]["writeOnly"] is True
    assert body["properties"]["identifier"]["maxLength"] == 64
    assert (body["x-flow"], body["x-state"], body["x-trigger"]) == (
        "personal_login", "credentials", "submit")

    basic = schema(step_schema_name("personal_registration", "basic_info", "submit"))
    assert basic["properties"]["id_number"]["format"] == "resident_id"
    assert basic["properties"]["id_number"]["x-sensitive"] is True
    assert basic["properties"]["agree"] == {**basic["properties"]["agree"],
                                            "type": "boolean", "const": True}
    assert basic["properties"]["name"]["title"] == "姓名 / Full name"

    choose = schema(step_schema_name("organisation_verification", "choose_method", "choose"))
    assert choose["properties"]["method"]["enum"] == ["face", "deposit"]
    # Locked fields are taken from the record: they may be left out.
    assert choose["required"] == ["method"]
    assert choose["properties"]["legal_rep_id"]["type"] == ["string", "null"]

    agent = schema(step_schema_name("legal_login", "agent_check", "submit"))
    assert "enum" not in agent["properties"]["agent"]  # choices_from: what the step lists
    back = schema(step_schema_name("legal_registration", "applicant", "back"))
    assert back["properties"] == {}
    # The step operation offers every step body, and only the triggers a client may send.
    operation = DOC["paths"]["/api/flows/{id}/events/{trigger}"]["post"]
    refs = {r["$ref"] for r in operation["requestBody"]["content"]["application/json"]
            ["schema"]["anyOf"]}
    assert f"#/components/schemas/{step_schema_name('legal_login', 'agent_check', 'submit')}" \
        in refs
    triggers = operation["parameters"][1]["schema"]["enum"]
    assert "face_result" not in triggers  # a provider's callback
    assert "expire" not in triggers  # the clock's
    assert {"submit", "send_code", "back", "choose", "submit_amount"} <= set(triggers)


def test_every_flow_is_started_by_an_operation_of_its_own_with_its_prefill() -> None:
    for name, flow in FLOWS.flows.items():
        start = DOC["paths"][f"/api/flows/{name}"]["post"]
        assert start["tags"] == [name]
        ref = start["requestBody"]["content"]["application/json"]["schema"]["properties"][
            "prefill"]["$ref"]
        prefill = schema(ref.rsplit("/", 1)[1])
        for field in prefill["properties"]:
            f = flow.all_fields()[field]
            assert not f.secret
            assert not f.sensitive
            assert f.locked is False
            assert f.value_from is None
    assert "password" not in schema("Prefill.personal_registration")["properties"]
    assert "login_name" in schema("Prefill.personal_registration")["properties"]


def test_a_start_and_a_step_may_ask_for_the_captchas_image_in_their_answer() -> None:
    for operation in (DOC["paths"]["/api/flows/personal_login"]["post"],
                      DOC["paths"]["/api/flows/{id}/events/{trigger}"]["post"]):
        prefer = [p for p in operation["parameters"] if p["name"] == "Prefer"]
        assert len(prefer) == 1
        assert set(prefer[0]["schema"]["enum"]) == {"session-token", "captcha-image"}
    field = schema("UI")["properties"]["fields"]["items"]["properties"]
    assert {"image", "image_data", "search"} <= set(field)


# -- the schemas say what the engine takes ------------------------------------------------

SAMPLES = {"resident_id": new_id_number(), "credit_code": new_credit_code(),
           "mobile": "13800138000", "login_name": "alice_01", "password_size": "Pw-12345678",
           "bank_account": "6222020200112233445", "amount_fen": "0.35", "text": "张三",
           "seal_colour": "red", "seal_code": "1101080012345"}


def sample_body(flow_name: str, state: str, trigger: str) -> dict[str, Any] | None:
    """A body the form takes; None where it needs what only an instance knows."""
    flow = FLOWS.flows[flow_name]
    body: dict[str, Any] = {}
    for f in flow.fields_for(state, trigger):
        if f.choices_from or f.locked is not False:
            return None
        if f.type == "choice":
            body[f.name] = f.choices[0]
        elif f.type == "boolean":
            body[f.name] = True
        elif f.type == "integer":
            body[f.name] = 7
        else:
            body[f.name] = SAMPLES.get(f.format or "", "abc")
    return body


def engine_takes(flow_name: str, state: str, trigger: str, body: dict[str, Any]) -> bool:
    try:
        validate_input(FLOWS.flows[flow_name], state, trigger, body, {}, REGISTRY, NOW)
    except ValidationFailed:
        return False
    return True


def schema_takes(flow_name: str, state: str, trigger: str, body: dict[str, Any]) -> bool:
    resolver = {"components": DOC["components"],
                **schema(step_schema_name(flow_name, state, trigger))}
    try:
        jsonschema.validate(body, resolver, cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError:
        return False
    return True


def steps() -> list[tuple[str, str, str]]:
    return [(f.name, s, t) for f in FLOWS.flows.values() for s in f.states
            for t in f.user_triggers(s)]


@pytest.mark.parametrize(("flow", "state", "trigger"), steps(),
                         ids=lambda v: str(v))
def test_a_step_schema_takes_what_the_form_takes_and_refuses_what_it_refuses(
        flow: str, state: str, trigger: str) -> None:
    body = sample_body(flow, state, trigger)
    if body is None:
        pytest.skip("a field whose choices or value come from the instance")
    cases = [body, {**body, "unexpected": "x"}]
    for name, value in body.items():
        rest = {k: v for k, v in body.items() if k != name}
        cases.append(rest)  # left out
        cases.append({**rest, name: None})
        cases.append({**rest, name: 5 if isinstance(value, str) else "five"})
        if isinstance(value, str):
            cases.append({**rest, name: "x" * 2000})
            cases.append({**rest, name: "   "})
    for case in cases:
        assert schema_takes(flow, state, trigger, case) == engine_takes(
            flow, state, trigger, case), case
    assert engine_takes(flow, state, trigger, body)


async def test_the_document_follows_a_reload(aiohttp_client: Any, app: web.Application,
                                             flows_file: Path) -> None:
    client = await aiohttp_client(app)
    before = await (await client.get("/api/openapi.json")).json()
    assert "Step.signup.details.submit" in before["components"]["schemas"]
    text = SAMPLE_YAML.replace(
        "          agree:\n", "          nickname:\n            type: string\n"
        "            max_length: 12\n            label: {zh: 昵称, en: Nickname}\n"
        "          agree:\n", 1)
    await asyncio.to_thread(flows_file.write_text, text, encoding="utf-8")
    assert await app[keys.RELOAD]()
    after = await (await client.get("/api/openapi.json")).json()
    nickname = after["components"]["schemas"]["Step.signup.details.submit"]["properties"][
        "nickname"]
    assert nickname["maxLength"] == 12
    assert nickname["title"] == "昵称 / Nickname"
    validate(after)


def test_a_step_schema_says_where_its_trigger_leads_a_stay_from_each_state_to_itself() -> None:
    from tests.engine.test_language_checks import STAY

    registry = Registry()
    registry.action("hello")(lambda a: None)
    doc = document(load_text(STAY, registry=registry), registry)
    for state in ("old", "new"):
        body = doc["components"]["schemas"][step_schema_name("f", state, "send_code")]
        assert body["x-leads-to"] == [state]
        assert body["description"].endswith(" It stays in this state.")
        assert body["properties"] == {}
    submit = schema(step_schema_name("personal_registration", "basic_info", "submit"))
    assert submit["x-leads-to"] == ["real_name", "basic_info", "account_info"]
    assert submit["description"].endswith(
        " It leads to `real_name` or `account_info`, or stays in this state.")
    validate(doc)
