"""The example business system: a person goes from the hall into it by single sign-on,
it shows who came in, and signing out (there or at the platform) ends both sides."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import attrs
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer, unused_port

from engine import FrozenClock
from examples.business_system import Config, create_app
from examples.business_system.app import STATE
from tests.conftest import serve_platform
from tests.flows.test_legal import register_org
from tests.flows.test_legal import sign_in as legal_sign_in
from tests.platform import Platform
from tests.web.oidc.conftest import base_url
from tests.web.oidc.test_provider import signed_in_person
from web import keys
from web.oidc import OIDC, example
from web.oidc.routes import secret_hash
from web.oidc.systems import load_systems_text

SYSTEMS = """
systems:
  example:
    name: {{zh: 示例业务系统, en: Example business system}}
    icon: http://127.0.0.1:{port}/icon.svg
    initiate_login_uri: http://127.0.0.1:{port}/login
    redirect_uris: [http://127.0.0.1:{port}/callback]
    post_logout_redirect_uris: [http://127.0.0.1:{port}/]
    backchannel_logout_uri: http://127.0.0.1:{port}/backchannel-logout
    account_kinds: [personal, organisation, supervisor]
    scopes: [openid, profile]
"""


@attrs.define
class World:
    p: Platform
    rp: web.Application
    rp_url: str


@pytest.fixture
async def world(database_url: str, redis_prefix: str, clock: FrozenClock,
                tmp_path: Path) -> AsyncIterator[World]:
    port = unused_port()
    path = tmp_path / "systems.yaml"
    path.write_text(SYSTEMS.format(port=port), encoding="utf-8")
    async with serve_platform(database_url, redis_prefix, clock,
                              systems_file=str(path)) as p:
        # The secret as `flowctl serve` makes it for the example on its first start.
        secret_file = await example.ensure_secret(
            p.app[OIDC].store, p.app[keys.SERVICES].vault, str(tmp_path / "data"),
            clock.now())
        rp_url = f"http://127.0.0.1:{port}"
        rp = create_app(Config(issuer=base_url(p), base_url=rp_url,
                               client_secret=secret_file.read_text().strip(),
                               now=lambda: clock.now().timestamp()))
        server = TestServer(rp, host="127.0.0.1", port=port)
        await server.start_server()
        try:
            yield World(p, rp, rp_url)
        finally:
            await server.close()


def browser(p: Platform) -> aiohttp.ClientSession:
    """The person's browser: the platform's cookies, and the system's once it sets them."""
    return p.client.session


async def enter_from_the_hall(w: World) -> str:
    """Click the system in the hall; follow the redirects; the page the system shows."""
    hall = await (await w.p.client.get("/api/hall")).json()
    [entry] = [s for s in hall["systems"] if s["id"] == "example"]
    assert entry["login_url"] == f"{w.rp_url}/login?" + urlencode({"iss": base_url(w.p)})
    async with browser(w.p).get(entry["login_url"]) as response:
        assert response.status == 200, await response.text()
        assert str(response.url) == f"{w.rp_url}/"
        # Through the platform's /authorize and back to the system's callback:
        assert [str(h.url).split("?")[0] for h in response.history] == [
            f"{w.rp_url}/login", f"{base_url(w.p)}/authorize", f"{w.rp_url}/callback"]
        return await response.text()


async def test_a_person_enters_from_the_hall_and_the_system_shows_who_came_in(
        world: World) -> None:
    account = await signed_in_person(world.p)
    page = await enter_from_the_hall(world)
    assert '<strong id="name">赵六</strong>' in page
    assert "personal" in page
    assert account["id"] in page  # a public subject: the account id


async def test_an_organisations_agent_is_shown_with_the_organisation(world: World) -> None:
    p = world.p
    reg = await register_org(p)
    signed = await legal_sign_in(p, reg["login"])
    await p.ok(signed["id"], "submit", {"agent": signed["choice"]["value"],
                                        "sms_code": await p.sms_code(reg["phone"])})
    page = await enter_from_the_hall(world)
    assert "organisation" in page
    assert reg["credit_code"] in page
    assert f"<td>{signed['choice']['label'].split()[0]}</td>" in page  # the agent's name


async def test_signing_out_at_the_system_signs_out_of_the_platform_and_back(
        world: World) -> None:
    p = world.p
    await signed_in_person(p)
    await enter_from_the_hall(world)
    async with browser(p).post(f"{world.rp_url}/logout") as response:
        assert response.status == 200
        # Back from the platform's /logout, with the state the system sent.
        assert str(response.url).startswith(f"{world.rp_url}/?state=")
        assert "Not signed in" in await response.text()
        assert f"{base_url(p)}/logout" in [str(h.url).split("?")[0] for h in response.history]
    assert (await p.client.get("/api/session")).status == 401


async def test_signing_out_of_the_platform_ends_the_systems_session_by_back_channel(
        world: World) -> None:
    p = world.p
    await signed_in_person(p)
    await enter_from_the_hall(world)
    state = world.rp[STATE]
    assert len(state.sessions) == 1
    [sid] = [s["sid"] for s in state.sessions.values()]
    assert (await p.client.post("/api/session/logout")).status == 200
    dispatcher = p.app[keys.OUTBOX]
    while await dispatcher.run_once() == dispatcher.batch:
        pass
    assert sid in state.logged_out_sids
    assert state.sessions == {}
    async with browser(p).get(f"{world.rp_url}/") as response:
        assert "Not signed in" in await response.text()


async def test_the_systems_secret_is_made_once_kept_private_and_never_logged(
        world: World, tmp_path: Path) -> None:
    p = world.p
    data = str(tmp_path / "data")
    with structlog.testing.capture_logs() as logs:
        first = await example.ensure_secret(p.app[OIDC].store, p.app[keys.SERVICES].vault,
                                            data, p.app[keys.CLOCK].now())
        again = await example.ensure_secret(p.app[OIDC].store, p.app[keys.SERVICES].vault,
                                            data, p.app[keys.CLOCK].now())
    assert first == again
    assert stat.S_IMODE(os.stat(first).st_mode) == 0o600
    secret = first.read_text().strip()
    assert secret not in repr(logs)
    digest = secret_hash(p.app[keys.SERVICES].vault, secret)
    assert (await p.app[OIDC].store.secret_hashes("example")).count(digest) == 1


@pytest.mark.slow
async def test_flowctl_starts_the_example_as_a_process_of_its_own(tmp_path: Path) -> None:
    port = unused_port()
    systems = load_systems_text(SYSTEMS.format(port=port))
    secret_file = tmp_path / "secret"
    secret_file.write_text("not-used-here\n")
    child = example.start(systems, issuer="http://127.0.0.1:1", secret_file=secret_file)
    assert child is not None
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/icon.svg") as response:
                        assert response.status == 200
                        assert "<svg" in await response.text()
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the example did not start")
    finally:
        example.stop(child)
    assert child.returncode is not None
