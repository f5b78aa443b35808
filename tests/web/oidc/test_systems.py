"""systems.yaml: linted like flows.yaml, every problem at its file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import DefinitionError
from web.oidc.systems import check_systems_text, load_systems, load_systems_text

ROOT = Path(__file__).resolve().parents[3]

GOOD = """\
systems:
  portal:
    name: {zh: 门户, en: Portal}
    initiate_login_uri: https://portal.example/login
    redirect_uris: [https://portal.example/cb]
    account_kinds: [personal]
    scopes: [openid, profile]
"""


def problems(text: str) -> list[str]:
    return [str(d) for d in check_systems_text(text, "systems.yaml")[1]]


def test_the_shipped_file_lints_and_lists_the_example_system() -> None:
    systems = load_systems(str(ROOT / "systems.yaml"), missing_ok=False)
    example = systems.get("example")
    assert example is not None
    assert example.redirect_uris == ("http://127.0.0.1:8090/callback",)
    assert example.confidential


def test_defaults_are_confidential_public_subjects_no_refresh_tokens() -> None:
    portal = load_systems_text(GOOD).get("portal")
    assert portal is not None
    assert (portal.client_type, portal.subject_type, portal.refresh_tokens) == (
        "confidential", "public", False)
    assert portal.sector == "portal.example"


def test_every_problem_is_reported_at_its_line_and_column() -> None:
    text = """\
systems:
  Bad Id:
    name: {zh: 门户}
    initiate_login_uri: ftp://x.example/
    redirect_uris: [http://portal.example/cb, https://x.example/*]
    account_kinds: [personal, admin]
    scopes: [profile]
    client_type: secret
    colour: blue
"""
    assert problems(text) == [
        "systems.yaml:2:3: system id 'Bad Id' must be 2-63 lower-case letters, digits, '-' "
        "or '_', starting with a letter",
        "systems.yaml:3:11: name must be {zh: ..., en: ...}, both non-empty text",
        "systems.yaml:4:25: initiate_login_uri must be an absolute https URL",
        "systems.yaml:5:21: redirect_uris[0] must use https (plain http only for a loopback "
        "host, in development)",
        "systems.yaml:5:47: redirect_uris[1] must be one exact URL: no spaces, no wildcards",
        "systems.yaml:6:31: unknown account kind 'admin' (known: personal, organisation, "
        "supervisor)",
        "systems.yaml:7:13: scopes must include openid",
        "systems.yaml:8:18: client_type must be one of: confidential, public",
        "systems.yaml:9:5: unknown key 'colour' in system 'Bad Id' (expected one of: name, "
        "icon, initiate_login_uri, redirect_uris, post_logout_redirect_uris, "
        "backchannel_logout_uri, account_kinds, scopes, client_type, subject_type, sector, "
        "refresh_tokens, description)",
    ]


def test_missing_keys_and_pairwise_hosts_without_a_sector_are_refused() -> None:
    text = """\
systems:
  app:
    subject_type: pairwise
    redirect_uris: [https://a.example/cb, https://b.example/cb]
    refresh_tokens: yes please
"""
    assert problems(text) == [
        "systems.yaml:2:3: system 'app' needs 'account_kinds'",
        "systems.yaml:2:3: system 'app' needs 'initiate_login_uri'",
        "systems.yaml:2:3: system 'app' needs 'name'",
        "systems.yaml:2:3: system 'app' needs 'scopes'",
        "systems.yaml:3:19: pairwise subjects with redirect URIs on several hosts "
        "(a.example, b.example) need a 'sector'",
        "systems.yaml:5:21: refresh_tokens must be true or false",
    ]


def test_yaml_syntax_errors_and_a_missing_file() -> None:
    assert problems("systems: [") == ["systems.yaml:1:11: YAML syntax: expected the node "
                                      "content, but found '<stream end>'"]
    assert len(load_systems("/nonexistent/systems.yaml")) == 0
    with pytest.raises(DefinitionError, match="cannot read"):
        load_systems("/nonexistent/systems.yaml", missing_ok=False)
