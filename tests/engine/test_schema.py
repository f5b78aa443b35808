"""The JSON Schema of flows.yaml: current, valid, and true to what lint accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from engine import Registry, check_text
from engine.schema import flows_schema
from tests.test_docs import _EXCERPT, GUIDE, fences
from web.cli import main as flowctl

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "flows.schema.json"
REGISTRY = Registry().load_modules(["flows"])
VALIDATOR = jsonschema.Draft202012Validator(json.loads(COMMITTED.read_text(encoding="utf-8")))


def problems(text: str) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(yaml.safe_load(text))]


@pytest.mark.usefixtures("keep_logging")
def test_the_committed_schema_is_what_flowctl_schema_prints(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOW_MODULES", raising=False)
    capsys.readouterr()
    assert flowctl(["schema"]) == 0
    printed = capsys.readouterr().out
    assert printed == COMMITTED.read_text(encoding="utf-8"), \
        "docs/flows.schema.json is stale: run `flowctl schema > docs/flows.schema.json`"


def test_the_schema_is_a_valid_2020_12_schema() -> None:
    schema = flows_schema(REGISTRY)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_flows_yaml_names_the_schema_in_its_first_line_for_editors() -> None:
    first = (ROOT / "flows.yaml").read_text(encoding="utf-8").split("\n", 1)[0]
    assert first == "# yaml-language-server: $schema=docs/flows.schema.json"


@pytest.mark.parametrize("path", ["flows.yaml", "docs/example-flows.yaml"])
def test_the_projects_flows_files_validate(path: str) -> None:
    assert problems((ROOT / path).read_text(encoding="utf-8")) == []


def test_the_guides_whole_file_examples_validate_and_its_broken_one_does_not() -> None:
    checked = 0
    for fence in fences(GUIDE):
        words = fence.info.split()
        if not words or words[0] != "yaml" or _EXCERPT.search(fence.first) \
                or fence.first.startswith("# docs/"):
            continue  # parts of a file
        found = problems(fence.text)
        if words[1:] == ["broken"]:
            assert found, f"docs/flows.md:{fence.line}: the schema should refuse this"
        else:
            assert found == [], f"docs/flows.md:{fence.line}: {found}"
        checked += 1
    assert checked >= 5


VALID = (ROOT / "docs" / "example-flows.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize(("old", "new"), [
    ("        label: {zh: 下一步, en: Next}", "        colour: {zh: 下一步, en: Next}"),
    ("        dest: done\n", "        dest: done\n        stay: true\n"),
    ("        dest: done\n", ""),
    ("    expires_in: 2h", "    expires_in: 1.5h"),
    ("          - name: per_client            # without `error`: error_id rate_limited\n"
     "            by: client", "          - name: per_client\n            by: user"),
    ("            format: login_name", "            format: phone_number"),
    ("guards: [agreed]", "guards: [agreed_to_everything]"),
    ("guards: [agreed]", "guards: [{agreed: {strict: true}}]"),
    ("      - trigger: edit", "      - trigger: edit\n        actions: [{send_sms_code: "
                              "{phone_field: mobile}}]"),
    ("      - trigger: edit", "      - trigger: edit\n        actions: [{send_sms_code: "
                              "{purpose: New-Phone}}]"),
    ("    initial: apply ", "    initial: Apply "),
    ("x-owner: identity-platform analysts", "owner: identity-platform analysts"),
])
def test_a_wrong_file_fails_the_schema_and_lint(old: str, new: str) -> None:
    assert VALID.count(old) == 1, old
    text = VALID.replace(old, new)
    assert problems(text) != []
    assert check_text(text, "flows.yaml", REGISTRY)[1] != []


def test_an_editor_is_offered_every_registered_name_and_parameter() -> None:
    schema: dict[str, Any] = json.loads(COMMITTED.read_text(encoding="utf-8"))
    defs = schema["$defs"]
    assert defs["action"]["anyOf"][0]["enum"] == sorted(REGISTRY.actions)
    assert set(REGISTRY.guards) < set(defs["guard"]["anyOf"][0]["enum"])
    assert defs["field"]["properties"]["format"]["enum"] == sorted(REGISTRY.validators)
    assert set(schema["properties"]["policies"]["properties"]) == set(REGISTRY.policies)
    [send] = [a for a in defs["action"]["anyOf"][1:] if "send_sms_code" in a["properties"]]
    params = send["properties"]["send_sms_code"]["properties"]
    assert params["phone"]["default"] == "mobile"
    assert params["phone"]["description"].startswith("(field) ")
    assert set(params) == {"phone", "purpose"}
