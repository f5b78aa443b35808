"""The OpenID Connect provider end to end: a relying party built on Authlib's client
signs people in over HTTP; the ID token is checked against the published JWKS."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import InvalidClaimError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from tests.flows.test_legal import register_org
from tests.flows.test_legal import sign_in as legal_sign_in
from tests.flows.test_phones import new_account, second_browser, sign_in
from tests.platform import Platform, new_mobile
from tests.web.oidc.conftest import base_url, location, new_secret
from web import keys

REDIRECT = "http://127.0.0.1:8091/callback"


class RelyingParty:
    """A business system, as Authlib's OAuth 2 client makes one."""

    def __init__(self, p: Platform, system: str, secret: str | None, *,
                 redirect_uri: str = REDIRECT, scope: str = "openid profile",
                 auth_method: str = "client_secret_basic") -> None:
        self.p = p
        self.base = base_url(p)
        self.system = system
        self.client = AsyncOAuth2Client(
            system, secret, scope=scope, redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method=auth_method if secret else "none")
        self.verifier = generate_token(48)
        self.nonce = secrets.token_urlsafe(16)
        self.state = ""

    def authorization_url(self, **extra: Any) -> str:
        url, self.state = self.client.create_authorization_url(
            f"{self.base}/authorize", code_verifier=self.verifier, nonce=self.nonce, **extra)
        return str(url)

    async def fetch_token(self, callback: str) -> dict[str, Any]:
        token = await self.client.fetch_token(f"{self.base}/token",
                                              authorization_response=callback,
                                              code_verifier=self.verifier)
        return dict(token)

    async def jwks(self) -> KeySet:
        response = await self.client.get(f"{self.base}/.well-known/jwks.json")
        return KeySet.import_key_set(response.json())

    async def id_token_claims(self, token: dict[str, Any], *,
                              nonce: str | None = None) -> dict[str, Any]:
        """The ID token verified as a relying party must: signature, iss, aud, nonce."""
        decoded = jwt.decode(token["id_token"], await self.jwks(), algorithms=["RS256"])
        now = int(self.p.app[keys.CLOCK].now().timestamp())
        JWTClaimsRegistry(
            now=now, iss={"essential": True, "value": self.base},
            aud={"essential": True, "value": self.system},
            nonce={"essential": True, "value": nonce or self.nonce},
            exp={"essential": True}, sub={"essential": True},
        ).validate(decoded.claims)
        return dict(decoded.claims)

    async def userinfo(self, token: dict[str, Any], *, method: str = "GET") -> Any:
        return await self.client.request(
            method, f"{self.base}/userinfo",
            headers={"Authorization": f"Bearer {token['access_token']}"})

    async def aclose(self) -> None:
        await self.client.aclose()


async def browse(p: Platform, url: str) -> Any:
    """The browser follows a link to this platform, and stops at the first redirect."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return await p.client.get(path, allow_redirects=False)


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def code_for(p: Platform, rp: RelyingParty, **extra: Any) -> str:
    """Authorize with a session already there: the callback URL with its code."""
    response = await browse(p, rp.authorization_url(**extra))
    assert response.status == 302, await response.text()
    callback = location(response)
    assert callback.startswith(rp.client.redirect_uri + "?"), callback
    assert query_of(callback)["state"] == rp.state
    assert "code" in query_of(callback), callback
    return callback


async def signed_in_person(p: Platform) -> dict[str, Any]:
    account = await new_account(p, phone=new_mobile())
    assert await sign_in(p, account["login"]) == 200
    return account


# -- the flow ----------------------------------------------------------------------------

async def test_discovery_names_the_endpoints_and_s256_only(oidc: Platform) -> None:
    response = await oidc.client.get("/.well-known/openid-configuration")
    assert response.status == 200
    doc = await response.json()
    base = base_url(oidc)
    assert doc["issuer"] == base
    assert doc["authorization_endpoint"] == f"{base}/authorize"
    assert doc["token_endpoint"] == f"{base}/token"
    assert doc["userinfo_endpoint"] == f"{base}/userinfo"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    jwks = await (await oidc.client.get("/.well-known/jwks.json")).json()
    assert [k["kty"] for k in jwks["keys"]] == ["RSA"]
    assert all("d" not in k and "p" not in k for k in jwks["keys"])  # public parts only


async def test_a_person_signs_in_then_comes_back_to_the_stored_request(
        oidc: Platform) -> None:
    secret = await new_secret(oidc, "portal")
    rp = RelyingParty(oidc, "portal", secret)
    try:
        # No session: the request is kept, the browser goes to sign in.
        response = await browse(oidc, rp.authorization_url())
        assert response.status == 302
        login = location(response)
        assert login.startswith("/login?authorize=")
        request_id = query_of(login)["authorize"]
        account = await signed_in_person(oidc)
        response = await oidc.client.get(f"/authorize/resume?id={request_id}",
                                         allow_redirects=False)
        assert response.status == 302, await response.text()
        callback = location(response)
        assert query_of(callback)["state"] == rp.state
        token = await rp.fetch_token(callback)
        assert token["token_type"].lower() == "bearer"
        assert token["expires_in"] == 600
        claims = await rp.id_token_claims(token)
        assert claims["sub"] == account["id"]
        assert claims["kind"] == "personal"
        assert claims["name"] == "赵六"
        assert claims["amr"] == ["pwd"]
        assert claims["auth_time"] == int(oidc.app[keys.CLOCK].now().timestamp())
        assert "org" not in claims
        assert "act" not in claims
        assert "phone_number" not in claims  # personal data never rides in the ID token
        for method in ("GET", "POST"):
            info = await rp.userinfo(token, method=method)
            assert info.status_code == 200, info.text
            assert info.json() == {k: claims[k] for k in ("sub", "kind", "name", "amr",
                                                          "auth_time")}
        # The request was used: it does not issue a second code.
        again = await oidc.client.get(f"/authorize/resume?id={request_id}",
                                      allow_redirects=False)
        assert again.status == 404
        assert (await again.json())["error_id"] == "authorize_request_unknown"
    finally:
        await rp.aclose()


async def test_an_organisation_enters_with_its_agent_by_single_sign_on(
        oidc: Platform) -> None:
    reg = await register_org(oidc)
    signed = await legal_sign_in(oidc, reg["login"])
    await oidc.ok(signed["id"], "submit", {"agent": signed["choice"]["value"],
                                           "sms_code": await oidc.sms_code(reg["phone"])})
    secret = await new_secret(oidc, "portal")
    rp = RelyingParty(oidc, "portal", secret, auth_method="client_secret_post")
    try:
        # A session is there: a code at once, no second sign-in.
        token = await rp.fetch_token(await code_for(oidc, rp))
        claims = await rp.id_token_claims(token)
        session = await (await oidc.client.get("/api/session")).json()
        assert claims["sub"] == session["account_id"]
        assert claims["kind"] == "organisation"
        assert claims["amr"] == ["pwd", "sms"]
        assert claims["org"]["credit_code"] == reg["credit_code"]
        assert claims["org"]["verified"] is False
        assert claims["org"]["name"] == claims["name"]
        assert claims["act"] == {"sub": session["agent_id"], "name": signed["choice"][
            "label"].split()[0]}
        info = (await rp.userinfo(token)).json()
        assert info["act"] == claims["act"]
        assert info["org"] == claims["org"]
    finally:
        await rp.aclose()


async def test_pairwise_subjects_differ_from_the_account_id_and_stay_the_same(
        oidc: Platform) -> None:
    account = await signed_in_person(oidc)
    secret = await new_secret(oidc, "permits")
    subjects = []
    for _ in range(2):
        rp = RelyingParty(oidc, "permits", secret, redirect_uri="https://permits.example/cb")
        try:
            subjects.append((await rp.id_token_claims(
                await rp.fetch_token(await code_for(oidc, rp))))["sub"])
        finally:
            await rp.aclose()
    assert subjects[0] == subjects[1]
    assert account["id"] not in subjects[0]


async def test_a_public_client_exchanges_with_pkce_alone(oidc: Platform) -> None:
    await signed_in_person(oidc)
    rp = RelyingParty(oidc, "spa", None, redirect_uri="https://app.example/cb")
    try:
        claims = await rp.id_token_claims(await rp.fetch_token(await code_for(oidc, rp)))
        assert claims["kind"] == "personal"
    finally:
        await rp.aclose()


# -- refusals -------------------------------------------------------------------------------

async def test_an_unregistered_redirect_uri_gets_an_error_page_never_a_redirect(
        oidc: Platform) -> None:
    await signed_in_person(oidc)
    rp = RelyingParty(oidc, "portal", "x", redirect_uri="https://evil.example/callback")
    try:
        for url in (rp.authorization_url(),
                    rp.authorization_url().replace("client_id=portal", "client_id=nobody")):
            response = await browse(oidc, url)
            assert response.status == 400
            assert "Location" not in response.headers
            body = await response.json()
            assert body["error_id"] == "authorize_request_invalid"
            assert "evil" not in str(body.get("detail", "")) or "not supported" in body[
                "detail"]
    finally:
        await rp.aclose()


@pytest.mark.parametrize("pkce", [{}, {"code_challenge_method": "plain"}])
async def test_authorization_without_s256_pkce_is_refused(oidc: Platform,
                                                         pkce: dict[str, str]) -> None:
    await signed_in_person(oidc)
    rp = RelyingParty(oidc, "portal", "x")
    try:
        url = rp.authorization_url()
        params = query_of(url)
        if pkce:
            params.update(pkce, code_challenge=generate_token(48))
        else:
            params.pop("code_challenge")
            params.pop("code_challenge_method")
        from urllib.parse import urlencode
        response = await oidc.client.get(f"/authorize?{urlencode(params)}",
                                         allow_redirects=False)
        assert response.status == 302
        answer = query_of(location(response))
        assert answer["error"] == "invalid_request"
        assert "code" not in answer
        assert answer["state"] == rp.state
    finally:
        await rp.aclose()


async def test_a_request_without_nonce_is_refused(oidc: Platform) -> None:
    await signed_in_person(oidc)
    rp = RelyingParty(oidc, "portal", "x")
    try:
        url = rp.authorization_url().replace(f"&nonce={rp.nonce}", "")
        answer = query_of(location(await browse(oidc, url)))
        assert answer["error"] == "invalid_request"
        assert "code" not in answer
    finally:
        await rp.aclose()


async def test_a_code_used_twice_is_refused_and_its_tokens_die(oidc: Platform) -> None:
    await signed_in_person(oidc)
    secret = await new_secret(oidc, "portal")
    rp = RelyingParty(oidc, "portal", secret)
    try:
        callback = await code_for(oidc, rp)
        token = await rp.fetch_token(callback)
        assert (await rp.userinfo(token)).status_code == 200
        with pytest.raises(Exception, match="invalid_grant"):
            await rp.fetch_token(callback)
        dead = await rp.userinfo(token)
        assert dead.status_code == 401
        assert "invalid_token" in dead.headers["WWW-Authenticate"]
    finally:
        await rp.aclose()


async def test_a_code_expires_after_sixty_seconds(oidc: Platform) -> None:
    await signed_in_person(oidc)
    secret = await new_secret(oidc, "portal")
    rp = RelyingParty(oidc, "portal", secret)
    try:
        callback = await code_for(oidc, rp)
        oidc.app[keys.CLOCK].advance(timedelta(seconds=61))
        with pytest.raises(Exception, match="invalid_grant"):
            await rp.fetch_token(callback)
    finally:
        await rp.aclose()


async def test_a_wrong_secret_or_verifier_gets_no_token(oidc: Platform) -> None:
    await signed_in_person(oidc)
    await new_secret(oidc, "portal")
    rp = RelyingParty(oidc, "portal", "not-the-secret")
    try:
        with pytest.raises(Exception, match="invalid_client"):
            await rp.fetch_token(await code_for(oidc, rp))
    finally:
        await rp.aclose()
    rp = RelyingParty(oidc, "portal", await new_secret(oidc, "portal"))
    try:
        callback = await code_for(oidc, rp)
        rp.verifier = generate_token(48)
        with pytest.raises(Exception, match="invalid_grant"):
            await rp.fetch_token(callback)
    finally:
        await rp.aclose()


async def test_a_relying_party_refuses_an_id_token_for_another_nonce(oidc: Platform) -> None:
    await signed_in_person(oidc)
    rp = RelyingParty(oidc, "portal", await new_secret(oidc, "portal"))
    try:
        token = await rp.fetch_token(await code_for(oidc, rp))
        assert (await rp.id_token_claims(token))["nonce"] == rp.nonce
        with pytest.raises(InvalidClaimError):
            await rp.id_token_claims(token, nonce="another-nonce")
    finally:
        await rp.aclose()


async def test_a_system_that_does_not_admit_this_kind_of_account_gets_access_denied(
        oidc: Platform) -> None:
    await signed_in_person(oidc)
    rp = RelyingParty(oidc, "orgs-only", "x", redirect_uri="https://orgs.example/cb")
    try:
        response = await browse(oidc, rp.authorization_url())
        assert response.status == 302
        answer = query_of(location(response))
        assert location(response).startswith("https://orgs.example/cb?")
        assert answer["error"] == "access_denied"
        assert "code" not in answer
    finally:
        await rp.aclose()


async def test_signing_out_ends_the_tokens_of_the_session(oidc: Platform) -> None:
    await signed_in_person(oidc)
    rp = RelyingParty(oidc, "portal", await new_secret(oidc, "portal"))
    try:
        token = await rp.fetch_token(await code_for(oidc, rp))
        assert (await rp.userinfo(token)).status_code == 200
        assert (await oidc.client.post("/api/session/logout")).status == 200
        assert (await rp.userinfo(token)).status_code == 401
    finally:
        await rp.aclose()


async def test_an_access_token_expires_after_ten_minutes(oidc: Platform) -> None:
    await signed_in_person(oidc)
    rp = RelyingParty(oidc, "portal", await new_secret(oidc, "portal"))
    try:
        token = await rp.fetch_token(await code_for(oidc, rp))
        oidc.app[keys.CLOCK].advance(timedelta(minutes=10, seconds=1))
        assert (await rp.userinfo(token)).status_code == 401
    finally:
        await rp.aclose()


async def test_another_browser_cannot_resume_a_stored_request(oidc: Platform) -> None:
    rp = RelyingParty(oidc, "portal", "x")
    try:
        request_id = query_of(location(await browse(oidc, rp.authorization_url())))[
            "authorize"]
        async with second_browser(oidc) as other:
            await signed_in_person(other)
            response = await other.client.get(f"/authorize/resume?id={request_id}",
                                              allow_redirects=False)
            assert response.status == 403
            assert (await response.json())["error_id"] == "authorize_request_other_device"
        # Its own browser, not signed in yet, is sent to sign in again.
        response = await oidc.client.get(f"/authorize/resume?id={request_id}",
                                         allow_redirects=False)
        assert location(response) == f"/login?authorize={request_id}"
    finally:
        await rp.aclose()


# -- personal data --------------------------------------------------------------------------

async def test_a_phone_number_goes_only_through_its_scope_and_each_release_is_audited(
        oidc: Platform) -> None:
    account = await signed_in_person(oidc)
    secret = await new_secret(oidc, "portal")
    rp = RelyingParty(oidc, "portal", secret, scope="openid profile phone")
    try:
        token = await rp.fetch_token(await code_for(oidc, rp))
        assert "phone_number" not in await rp.id_token_claims(token)
        info = (await rp.userinfo(token)).json()
        assert info["phone_number"] == account["phone"]
    finally:
        await rp.aclose()
    entries = await oidc.app[keys.SERVICES].accounts.audit_page(
        target=f"account:{account['id']}", action="oidc_personal_data_released")
    assert len(entries) == 1
    assert entries[0]["actor"] == "system:portal"
    assert account["phone"] not in str(entries[0]["details"])
    # A system not configured for the scope cannot even ask for it.
    rp = RelyingParty(oidc, "permits", "x", scope="openid phone",
                      redirect_uri="https://permits.example/cb")
    try:
        answer = query_of(location(await browse(oidc, rp.authorization_url())))
        assert answer["error"] == "invalid_scope"
    finally:
        await rp.aclose()


# -- the hall -------------------------------------------------------------------------------

async def test_the_hall_lists_the_systems_this_account_may_enter(oidc: Platform) -> None:
    assert (await oidc.client.get("/api/hall")).status == 401
    await signed_in_person(oidc)
    hall = await (await oidc.client.get("/api/hall")).json()
    ids = [s["id"] for s in hall["systems"]]
    assert ids == ["portal", "permits", "spa"]  # orgs-only admits organisations only
    portal = hall["systems"][0]
    assert portal["name"] == {"zh": "政务门户", "en": "Government portal"}
    assert portal["login_url"].startswith("https://portal.example/login?")
    assert query_of(portal["login_url"]) == {"iss": base_url(oidc)}
