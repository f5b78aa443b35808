"""A second relying-party library: pyoidc (``oic``) signs in over the same HTTP API.

pyoidc is synchronous (requests): its calls run in a thread, so the test server keeps
serving on the event loop meanwhile. It checks an ID token's times against the real
clock, so the platform's test clock is set to the real time first.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime
from typing import Any

import pytest
from oic.oic import Client
from oic.oic.message import AuthorizationResponse, RegistrationResponse
from oic.utils.authn.client import CLIENT_AUTHN_METHOD

from tests.flows.test_legal import register_org
from tests.flows.test_legal import sign_in as legal_sign_in
from tests.platform import Platform
from tests.web.oidc.conftest import base_url, location, new_secret
from tests.web.oidc.test_provider import REDIRECT, browse, signed_in_person
from web import keys


@pytest.fixture(autouse=True)
def _real_time(oidc: Platform) -> None:
    oidc.app[keys.CLOCK].current = datetime.now(UTC)  # type: ignore[attr-defined]


async def _pyoidc_sign_in(p: Platform, secret: str) -> tuple[dict[str, Any],
                                                               dict[str, Any]]:
    """The whole code flow as pyoidc runs it: the verified ID token and userinfo."""
    client = Client(client_id="portal", client_authn_method=CLIENT_AUTHN_METHOD)
    await asyncio.to_thread(client.provider_config, base_url(p))
    client.store_registration_info(RegistrationResponse(
        client_id="portal", client_secret=secret, redirect_uris=[REDIRECT]))
    client.redirect_uris = [REDIRECT]
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    pkce, verifier = client.add_code_challenge()
    assert pkce["code_challenge_method"] == "S256"
    request = client.construct_AuthorizationRequest(request_args={
        "client_id": "portal", "response_type": "code", "scope": ["openid", "profile"],
        "nonce": nonce, "redirect_uri": REDIRECT, "state": state, **pkce})
    response = await browse(p, request.request(client.authorization_endpoint))
    assert response.status == 302, await response.text()
    callback = location(response)
    answer = client.parse_response(AuthorizationResponse, info=callback.split("?", 1)[1],
                                   sformat="urlencoded")
    assert answer["state"] == state
    token = await asyncio.to_thread(
        client.do_access_token_request, state=state,
        request_args={"code": answer["code"], "code_verifier": verifier,
                      "redirect_uri": REDIRECT},
        authn_method="client_secret_basic")
    id_token = token["id_token"]  # pyoidc has checked its signature against the JWKS
    assert id_token["nonce"] == nonce
    assert id_token["iss"] == base_url(p)
    assert id_token["aud"] == ["portal"]
    info = await asyncio.to_thread(client.do_user_info_request, state=state,
                                   method="GET")
    return id_token.to_dict(), info.to_dict()


async def test_pyoidc_signs_a_person_in(oidc: Platform) -> None:
    account = await signed_in_person(oidc)
    id_token, info = await _pyoidc_sign_in(oidc, await new_secret(oidc, "portal"))
    assert id_token["sub"] == account["id"] == info["sub"]
    assert id_token["kind"] == "personal"
    assert info["name"] == "赵六"


async def test_pyoidc_signs_an_organisation_in_with_its_agent(oidc: Platform) -> None:
    reg = await register_org(oidc)
    signed = await legal_sign_in(oidc, reg["login"])
    await oidc.ok(signed["id"], "submit", {"agent": signed["choice"]["value"],
                                           "sms_code": await oidc.sms_code(reg["phone"])})
    id_token, info = await _pyoidc_sign_in(oidc, await new_secret(oidc, "portal"))
    session = await (await oidc.client.get("/api/session")).json()
    assert id_token["sub"] == session["account_id"]
    assert id_token["amr"] == ["pwd", "sms"]
    assert id_token["org"]["credit_code"] == reg["credit_code"]
    assert id_token["act"]["sub"] == session["agent_id"] == info["act"]["sub"]
