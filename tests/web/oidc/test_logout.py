"""Signing out of the business systems: back-channel logout tokens through the outbox,
delivered to a real HTTP receiver and checked against the JWKS; RP-initiated logout."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer, unused_port
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from engine import FrozenClock
from flows.pii import MOBILE, RESIDENT_ID
from flows.sessions import ref
from tests.conftest import serve_platform
from tests.flows.test_phones import second_browser, sign_in
from tests.platform import Platform, new_id_number, new_mobile
from tests.web.oidc.conftest import base_url, location, new_secret
from tests.web.oidc.test_provider import RelyingParty, code_for, signed_in_person
from web import keys
from web.oidc.logout import BACKCHANNEL_EVENT

SYSTEMS = """
systems:
  portal:
    name: {{zh: 政务门户, en: Government portal}}
    initiate_login_uri: https://portal.example/login
    redirect_uris: [http://127.0.0.1:8091/callback]
    post_logout_redirect_uris: [https://portal.example/bye]
    backchannel_logout_uri: http://127.0.0.1:{port}/backchannel
    account_kinds: [personal, organisation]
    scopes: [openid, profile]
  permits:
    name: {{zh: 审批系统, en: Permits}}
    initiate_login_uri: https://permits.example/start
    redirect_uris: [https://permits.example/cb]
    backchannel_logout_uri: http://127.0.0.1:{port}/backchannel
    account_kinds: [personal]
    scopes: [openid, profile]
    subject_type: pairwise
  quiet:
    name: {{zh: 无回调系统, en: No back-channel}}
    initiate_login_uri: https://quiet.example/start
    redirect_uris: [https://quiet.example/cb]
    account_kinds: [personal]
    scopes: [openid]
"""


@attrs.define
class Receiver:
    """A business system's back-channel logout endpoint: keeps what it is sent; answers
    503 to the first ``fail`` attempts, as a system that is down would."""

    fail: int = 0
    attempts: list[str] = attrs.field(factory=list)
    received: list[str] = attrs.field(factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-www-form-urlencoded"
        token = str((await request.post())["logout_token"])
        self.attempts.append(token)
        if len(self.attempts) <= self.fail:
            return web.Response(status=503)
        self.received.append(token)
        return web.Response(status=200)


@attrs.define
class World:
    p: Platform
    receiver: Receiver


@pytest.fixture
async def world(database_url: str, redis_prefix: str, clock: FrozenClock,
                tmp_path: Path) -> AsyncIterator[World]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/backchannel", receiver.handle)
    port = unused_port()
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    path = tmp_path / "systems.yaml"
    path.write_text(SYSTEMS.format(port=port), encoding="utf-8")
    try:
        async with serve_platform(database_url, redis_prefix, clock,
                                  systems_file=str(path)) as p:
            yield World(p, receiver)
    finally:
        await server.close()


async def deliver(p: Platform) -> None:
    """What a server's outbox worker does: send every message that is due.

    The database is shared by the whole test run: messages other tests left go too.
    """
    dispatcher = p.app[keys.OUTBOX]
    while await dispatcher.run_once() == dispatcher.batch:
        pass


async def enter(p: Platform, system: str = "portal", **kwargs: Any) -> tuple[
        RelyingParty, dict[str, Any]]:
    """Sign in to a system by single sign-on: the relying party and its verified claims."""
    redirect = {"permits": "https://permits.example/cb",
                "quiet": "https://quiet.example/cb"}.get(system)
    rp = RelyingParty(p, system, await new_secret(p, system),
                      **({"redirect_uri": redirect} if redirect else {}), **kwargs)
    token = await rp.fetch_token(await code_for(p, rp))
    rp.token = token  # type: ignore[attr-defined]
    return rp, await rp.id_token_claims(token)


async def published(p: Platform) -> KeySet:
    return KeySet.import_key_set(await (await p.client.get("/.well-known/jwks.json")).json())


async def verified(p: Platform, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A logout token's header and claims, its signature checked against the JWKS."""
    decoded = jwt.decode(token, await published(p), algorithms=["RS256"])
    return dict(decoded.header), dict(decoded.claims)


async def outbox_rows(p: Platform, sid: str) -> list[dict[str, Any]]:
    """The outbox messages of one session's entry into a system."""
    async with p.app[keys.POOL].acquire() as conn:
        rows = await conn.fetch("SELECT topic, payload, attempts, sent_at, dead_at,"
                                " last_error FROM outbox WHERE topic = 'oidc_backchannel_logout'"
                                " AND payload->>'sid' = $1 ORDER BY id", sid)
    return [dict(r) for r in rows]


# -- back-channel logout ----------------------------------------------------------------------

async def test_signing_out_posts_a_logout_token_that_verifies_against_the_jwks(
        world: World) -> None:
    p = world.p
    await signed_in_person(p)
    rp, claims = await enter(p)
    try:
        assert claims["sid"]
        assert (await p.client.post("/api/session/logout")).status == 200
        assert world.receiver.received == []  # queued, not sent inside the request
        assert (await outbox_rows(p, claims["sid"]))[0]["sent_at"] is None
        await deliver(p)
        [token] = world.receiver.received
        header, logout = await verified(p, token)
        assert header["typ"] == "logout+jwt"
        assert header["kid"]
        assert logout["iss"] == base_url(p)
        assert logout["aud"] == "portal"
        assert logout["sub"] == claims["sub"]
        assert logout["sid"] == claims["sid"]
        assert logout["events"] == {BACKCHANNEL_EVENT: {}}
        assert "nonce" not in logout
        now = int(p.app[keys.CLOCK].now().timestamp())
        assert logout["iat"] == now
        assert now < logout["exp"] <= now + 120
        assert logout["jti"]
        # Sent once: the next round has nothing to send.
        await deliver(p)
        assert len(world.receiver.attempts) == 1
        [row] = await outbox_rows(p, claims["sid"])
        assert row["sent_at"] is not None
        assert row["payload"] == {"system": "portal", "sid": claims["sid"],
                                  "sub": claims["sub"], "jti": logout["jti"]}
    finally:
        await rp.aclose()


async def test_each_system_the_session_entered_gets_its_own_token_and_sid(
        world: World) -> None:
    p = world.p
    await signed_in_person(p)
    portal, portal_claims = await enter(p, "portal")
    again, again_claims = await enter(p, "portal")  # a second sign-on: the same sid
    permits, permits_claims = await enter(p, "permits")
    quiet, _ = await enter(p, "quiet", scope="openid")
    try:
        assert again_claims["sid"] == portal_claims["sid"]
        assert permits_claims["sid"] != portal_claims["sid"]
        assert (await p.client.post("/api/session/logout")).status == 200
        await deliver(p)
        got = {c["aud"]: c for c in [(await verified(p, t))[1]
                                     for t in world.receiver.received]}
        assert set(got) == {"portal", "permits"}  # "quiet" has no back-channel URI
        assert got["permits"]["sub"] == permits_claims["sub"]  # its pairwise subject
        assert got["permits"]["sid"] == permits_claims["sid"]
    finally:
        for rp in (portal, again, permits, quiet):
            await rp.aclose()


async def test_a_system_that_is_down_gets_the_logout_token_on_a_later_attempt(
        world: World) -> None:
    p = world.p
    world.receiver.fail = 2
    await signed_in_person(p)
    rp, claims = await enter(p)
    try:
        assert (await p.client.post("/api/session/logout")).status == 200
        await deliver(p)
        [row] = await outbox_rows(p, claims["sid"])
        assert row["sent_at"] is None
        assert row["attempts"] == 1
        assert "503" in row["last_error"]
        await deliver(p)
        assert len(world.receiver.attempts) == 1  # it waits for its backoff
        for _ in range(2):
            p.app[keys.CLOCK].advance(timedelta(hours=2))
            await deliver(p)
        [row] = await outbox_rows(p, claims["sid"])
        assert row["sent_at"] is not None
        assert row["attempts"] == 3
        [token] = world.receiver.received
        # Made when sent, signed with the key of the day, the same jti every attempt.
        _, logout = await verified(p, token)
        assert logout["sid"] == claims["sid"]
        assert logout["iat"] == int(p.app[keys.CLOCK].now().timestamp())
        jtis = {(await verified(p, t))[1]["jti"] for t in world.receiver.attempts}
        assert jtis == {logout["jti"]}
    finally:
        await rp.aclose()


async def test_a_system_down_for_good_leaves_a_dead_letter(world: World) -> None:
    p = world.p
    world.receiver.fail = 1000
    await signed_in_person(p)
    rp, claims = await enter(p)
    try:
        assert (await p.client.post("/api/session/logout")).status == 200
        for _ in range(p.app[keys.OUTBOX].max_attempts):
            await deliver(p)
            p.app[keys.CLOCK].advance(timedelta(hours=2))
        assert len(world.receiver.attempts) == p.app[keys.OUTBOX].max_attempts
        [row] = await outbox_rows(p, claims["sid"])
        assert row["dead_at"] is not None
        assert row["sent_at"] is None
        await deliver(p)
        assert len(world.receiver.attempts) == p.app[keys.OUTBOX].max_attempts
    finally:
        await rp.aclose()


async def test_ending_the_accounts_sessions_logs_each_of_them_out_of_its_systems(
        world: World) -> None:
    p = world.p
    account = await signed_in_person(p)
    sessions = p.app[keys.SERVICES].sessions
    first, first_claims = await enter(p)
    async with second_browser(p) as other:
        from tests.flows.test_phones import sign_in
        assert await sign_in(other, account["login"]) == 200
        second, second_claims = await enter(other)
        try:
            kept = ref(str(other.client.session.cookie_jar.filter_cookies(
                other.client.make_url("/"))["session"].value))
            # The other sessions end (after a password change): only the first is told.
            assert await sessions.end_others(account["id"], keep=kept)
            await deliver(p)
            assert [(await verified(p, t))[1]["sid"] for t in world.receiver.received] == [
                first_claims["sid"]]
            # Every session ends (after a password reset): now the second one too.
            await sessions.end_all(account["id"])
            await deliver(p)
            assert [(await verified(p, t))[1]["sid"] for t in world.receiver.received] == [
                first_claims["sid"], second_claims["sid"]]
            # Signing out of a session already ended tells nobody twice.
            assert (await other.client.post("/api/session/logout")).status == 200
            await deliver(p)
            assert len(world.receiver.attempts) == 2
        finally:
            await first.aclose()
            await second.aclose()


async def another_agent(p: Platform, organisation_id: str) -> str:
    """An ordinary agent added to the organisation; its id."""
    s = p.app[keys.SERVICES]
    agent_id, phone, number = str(uuid.uuid4()), new_mobile(), new_id_number()
    async with p.app[keys.POOL].acquire() as conn:
        await conn.execute(
            "INSERT INTO agents (id, organisation_id, name, id_number_sealed, id_number_index,"
            " phone_sealed, phone_index, is_primary, created_at)"
            " VALUES ($1, $2, '李娜', $3, $4, $5, $6, false, now())",
            uuid.UUID(agent_id), uuid.UUID(organisation_id),
            s.vault.seal(RESIDENT_ID, number), s.vault.index(RESIDENT_ID, number),
            s.vault.seal(MOBILE, phone), s.vault.index(MOBILE, phone))
    return agent_id


async def test_a_removed_agents_systems_are_told_and_the_other_agents_are_not(
        world: World) -> None:
    """Removing an agent ends the agent's sessions; the systems they entered are told."""
    from tests.flows.test_verification import _session, new_organisation
    from tests.flows.test_verification import sign_in as sign_in_as

    p = world.p
    org = await new_organisation(p)
    sign_in_as(p, org)  # the primary agent, in this browser
    primary, primary_claims = await enter(p)
    async with second_browser(p) as other:
        # A second agent of the organisation, signed in in another browser.
        agent_id = await another_agent(p, org.account_id)
        token = await _session(p, org.account_id, "organisation", "测试科技有限公司", agent_id)
        sign_in_as(other, attrs.evolve(org, token=token))
        second, second_claims = await enter(other)
        try:
            assert second_claims["sid"] != primary_claims["sid"]
            await p.app[keys.SERVICES].sessions.end_agent(org.account_id, agent_id)
            await deliver(p)
            assert [(await verified(p, t))[1]["sid"] for t in world.receiver.received] == [
                second_claims["sid"]]
            assert (await other.client.get("/api/session")).status == 401
            assert (await p.client.get("/api/session")).status == 200
        finally:
            await primary.aclose()
            await second.aclose()


async def test_a_session_that_times_out_leaves_its_systems_too(world: World) -> None:
    """Nobody signs out: the session's Redis key expires. The sweep tells the systems it
    entered, once, and forgets the entry a day later. (The database is the test run's:
    the sweep may end other tests' entries too, so only ours is looked at.)"""
    from web.oidc import logout
    from web.oidc.state import OIDC

    p = world.p
    await signed_in_person(p)
    rp, claims = await enter(p)
    try:
        provider, clock = p.app[OIDC], p.app[keys.CLOCK]
        store = provider.store
        wakes: list[int] = []
        await logout.sweep(provider, clock, lambda: wakes.append(1))
        entry = await store.entered(claims["sid"])
        assert entry is not None
        assert entry.ended_at is None  # still alive: not swept
        clock.advance(timedelta(hours=8, minutes=1))  # past SESSION_HOURS
        assert await logout.sweep(provider, clock, lambda: wakes.append(1)) >= 1
        assert wakes
        entry = await store.entered(claims["sid"])
        assert entry is not None
        assert entry.ended_at is not None
        await logout.sweep(provider, clock, lambda: None)  # nothing twice
        await deliver(p)
        ours = [t for t in world.receiver.received
                if (await verified(p, t))[1]["sid"] == claims["sid"]]
        assert len(ours) == 1
        assert len(await outbox_rows(p, claims["sid"])) == 1
        clock.advance(logout.KEEP_ENDED + timedelta(minutes=1))
        await logout.sweep(provider, clock, lambda: None)
        assert await store.entered(claims["sid"]) is None
    finally:
        await rp.aclose()


# -- RP-initiated logout ------------------------------------------------------------------------

def logout_url(**params: str) -> str:
    return "/logout?" + urlencode(params)


async def signed_in(p: Platform) -> bool:
    return (await p.client.get("/api/session")).status == 200


async def test_discovery_names_the_logout_endpoints(world: World) -> None:
    doc = await (await world.p.client.get("/.well-known/openid-configuration")).json()
    assert doc["end_session_endpoint"] == f"{base_url(world.p)}/logout"
    assert doc["backchannel_logout_supported"] is True
    assert doc["backchannel_logout_session_supported"] is True


async def test_a_system_signs_its_person_out_with_an_id_token_hint(world: World) -> None:
    p = world.p
    await signed_in_person(p)
    rp, claims = await enter(p)
    try:
        # An hour later the ID token has expired: as a hint it is still good.
        p.app[keys.CLOCK].advance(timedelta(hours=1))
        response = await p.client.get(logout_url(
            id_token_hint=rp.token["id_token"],  # type: ignore[attr-defined]
            post_logout_redirect_uri="https://portal.example/bye", state="s-123"),
            allow_redirects=False)
        assert response.status == 302, await response.text()
        assert location(response) == "https://portal.example/bye?state=s-123"
        assert not await signed_in(p)
        assert (await rp.userinfo(rp.token)).status_code == 401  # type: ignore[attr-defined]
        await deliver(p)
        [token] = world.receiver.received
        assert (await verified(p, token))[1]["sid"] == claims["sid"]
    finally:
        await rp.aclose()


async def test_without_a_hint_the_person_confirms_before_being_signed_out(
        world: World) -> None:
    p = world.p
    await signed_in_person(p)
    response = await p.client.get(logout_url(
        client_id="portal", post_logout_redirect_uri="https://portal.example/bye",
        state="xyz"), allow_redirects=False)
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert "Sign out" in page
    assert await signed_in(p)  # a link alone signs nobody out
    confirm = page.split('name="confirm" value="')[1].split('"')[0]
    # The confirmation belongs to this session: another browser cannot use it.
    async with second_browser(p) as other:
        await signed_in_person(other)
        refused = await other.client.post("/logout", data={"confirm": confirm},
                                          allow_redirects=False)
        assert refused.status == 403
        assert (await refused.json())["error_id"] == "logout_confirmation_other_session"
        assert await signed_in(other)
    response = await p.client.get(logout_url(client_id="portal"), allow_redirects=False)
    confirm = (await response.text()).split('name="confirm" value="')[1].split('"')[0]
    done = await p.client.post("/logout", data={"confirm": confirm}, allow_redirects=False)
    assert done.status == 200  # no redirect asked for: our own page
    assert not await signed_in(p)
    again = await p.client.post("/logout", data={"confirm": confirm}, allow_redirects=False)
    assert again.status == 404
    assert (await again.json())["error_id"] == "logout_confirmation_unknown"


async def test_the_confirmation_sends_the_person_back_with_the_state(world: World) -> None:
    p = world.p
    await signed_in_person(p)
    page = await (await p.client.get(logout_url(
        client_id="portal", post_logout_redirect_uri="https://portal.example/bye",
        state="xyz"))).text()
    confirm = page.split('name="confirm" value="')[1].split('"')[0]
    done = await p.client.post("/logout", data={"confirm": confirm}, allow_redirects=False)
    assert done.status == 302
    assert location(done) == "https://portal.example/bye?state=xyz"
    assert not await signed_in(p)


async def test_a_hint_about_another_session_asks_first(world: World) -> None:
    p = world.p
    account = await signed_in_person(p)
    rp, _ = await enter(p)
    try:
        async with second_browser(p) as other:
            assert await sign_in(other, account["login"]) == 200
            response = await other.client.get(logout_url(
                id_token_hint=rp.token["id_token"]),  # type: ignore[attr-defined]
                allow_redirects=False)
            assert response.status == 200
            assert 'name="confirm"' in await response.text()
            assert await signed_in(other)
        assert await signed_in(p)
    finally:
        await rp.aclose()


@pytest.mark.parametrize("params", [
    {"client_id": "portal", "post_logout_redirect_uri": "https://evil.example/"},
    {"post_logout_redirect_uri": "https://portal.example/bye"},  # whose URI?
    {"client_id": "nobody"},
    {"client_id": "permits", "post_logout_redirect_uri": "https://portal.example/bye"},
])
async def test_an_unregistered_post_logout_redirect_gets_an_error_page(
        world: World, params: dict[str, str]) -> None:
    p = world.p
    await signed_in_person(p)
    response = await p.client.get(logout_url(**params), allow_redirects=False)
    assert response.status == 400
    assert "Location" not in response.headers
    assert (await response.json())["error_id"] == "logout_request_invalid"
    assert await signed_in(p)


async def test_a_hint_signed_by_another_key_is_refused(world: World) -> None:
    p = world.p
    await signed_in_person(p)
    rp, claims = await enter(p)
    try:
        forged = jwt.encode({"alg": "RS256", "kid": "forged"}, claims,
                            RSAKey.generate_key(2048))
        response = await p.client.get(logout_url(
            id_token_hint=forged, post_logout_redirect_uri="https://portal.example/bye"),
            allow_redirects=False)
        assert response.status == 400
        assert "Location" not in response.headers
        assert await signed_in(p)
        # A real hint naming another system than client_id is refused too.
        response = await p.client.get(logout_url(
            id_token_hint=rp.token["id_token"], client_id="permits"),  # type: ignore[attr-defined]
            allow_redirects=False)
        assert response.status == 400
        assert await signed_in(p)
    finally:
        await rp.aclose()


async def test_without_a_session_the_system_gets_its_person_back(world: World) -> None:
    response = await world.p.client.get(logout_url(
        client_id="portal", post_logout_redirect_uri="https://portal.example/bye",
        state="q"), allow_redirects=False)
    assert response.status == 302
    assert location(response) == "https://portal.example/bye?state=q"


async def test_a_system_may_post_the_logout_request_from_its_own_page(world: World) -> None:
    p = world.p
    await signed_in_person(p)
    rp, _ = await enter(p)
    try:
        cross_site = {"Origin": "https://portal.example", "Sec-Fetch-Site": "cross-site"}
        # Without a hint, a POST from another site asks first, as a GET does.
        response = await p.client.post("/logout", data={"client_id": "portal"},
                                        headers=cross_site, allow_redirects=False)
        assert response.status == 200
        assert 'name="confirm"' in await response.text()
        assert await signed_in(p)
        response = await p.client.post("/logout", data={
            "id_token_hint": rp.token["id_token"],  # type: ignore[attr-defined]
            "post_logout_redirect_uri": "https://portal.example/bye"},
            headers=cross_site, allow_redirects=False)
        assert response.status == 302
        assert location(response) == "https://portal.example/bye"
        assert not await signed_in(p)
    finally:
        await rp.aclose()


async def test_a_link_carrying_a_confirmation_does_not_confirm(world: World) -> None:
    p = world.p
    await signed_in_person(p)
    page = await (await p.client.get(logout_url(client_id="portal"))).text()
    confirm = page.split('name="confirm" value="')[1].split('"')[0]
    response = await p.client.get(logout_url(confirm=confirm), allow_redirects=False)
    assert response.status == 200
    assert 'name="confirm"' in await response.text()  # asked again
    assert await signed_in(p)
