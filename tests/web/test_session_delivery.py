"""Where a session token goes, and that signing out ends it, cookie or bearer."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.flows.test_personal import register
from tests.platform import PASSWORD, Platform

EVIL = "https://evil.example"


async def sign_in(p: Platform, client: TestClient, login: str,
                  **headers: str) -> tuple[Any, dict[str, Any]]:
    resp = await client.post("/api/flows/personal_login")
    iid = (await resp.json())["id"]
    captcha = await p.captcha(iid, client)
    resp = await client.post(f"/api/flows/{iid}/events/submit", headers=headers, json={
        "identifier": login, "password": PASSWORD, "captcha": captcha})
    assert resp.status == 200, await resp.text()
    return resp, dict(await resp.json())


async def test_a_browser_gets_its_session_as_a_cookie_and_never_in_the_body(
        platform: Platform) -> None:
    person = await register(platform)
    resp, view = await sign_in(platform, platform.client, person["login"])
    assert view["state"] == "signed_in"
    assert "reply" not in view
    assert "Preference-Applied" not in resp.headers
    cookie = resp.cookies["session"]
    assert cookie["httponly"] is True
    assert cookie.value not in str(view)
    assert (await platform.client.get("/api/session")).status == 200


async def test_a_client_that_asks_gets_a_token_in_the_body_and_no_cookie(
        platform: Platform) -> None:
    person = await register(platform)
    async with platform.another_browser() as app_client:
        resp, view = await sign_in(platform, app_client, person["login"],
                                   Prefer="session-token")
        assert resp.headers["Preference-Applied"] == "session-token"
        assert "session" not in resp.cookies
        token = view["reply"]["session"]
        bearer = {"Authorization": f"Bearer {token}"}
        me = await app_client.get("/api/session", headers=bearer)
        assert me.status == 200
        assert (await me.json())["kind"] == "personal"


async def test_logout_ends_a_bearer_session(platform: Platform) -> None:
    person = await register(platform)
    async with platform.another_browser() as app_client:
        _, view = await sign_in(platform, app_client, person["login"], Prefer="session-token")
        bearer = {"Authorization": f"Bearer {view['reply']['session']}"}
        assert (await app_client.get("/api/session", headers=bearer)).status == 200
        # A bearer token is never sent by a browser on its own: no Origin rule for it.
        out = await app_client.post("/api/session/logout", headers={**bearer, "Origin": EVIL})
        assert out.status == 200
        after = await app_client.get("/api/session", headers=bearer)
        assert after.status == 401
        assert (await after.json())["error_id"] == "not_signed_in"


async def test_logout_from_another_site_is_refused_and_the_session_lives_on(
        platform: Platform) -> None:
    person = await register(platform)
    await sign_in(platform, platform.client, person["login"])
    out = await platform.client.post("/api/session/logout", headers={"Origin": EVIL})
    assert out.status == 403
    assert (await out.json())["error_id"] == "cross_site_request"
    assert (await platform.client.get("/api/session")).status == 200
    ours = str(platform.client.make_url("")).rstrip("/")
    out = await platform.client.post("/api/session/logout", headers={"Origin": ours})
    assert out.status == 200
    assert (await platform.client.get("/api/session")).status == 401


def _metric(text: str, name: str) -> float:
    """One unlabelled sample of the Prometheus text ``text``."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")


async def test_metrics_count_the_hash_of_each_sign_in_and_its_cpu(platform: Platform) -> None:
    person = await register(platform)
    before = await (await platform.client.get("/metrics")).text()
    await sign_in(platform, platform.client, person["login"])
    after = await (await platform.client.get("/metrics")).text()
    assert _metric(after, "password_hashes_total") - \
        _metric(before, "password_hashes_total") == 1
    assert _metric(after, "password_hash_cpu_seconds_total") > \
        _metric(before, "password_hash_cpu_seconds_total")
    assert _metric(after, "password_hashes_refused_total") == 0
    assert _metric(after, "password_hashes_admitted") == 0
    # The process's own CPU, which the hashing's is a share of.
    assert _metric(after, "process_cpu_seconds_total") >= \
        _metric(after, "password_hash_cpu_seconds_total") > 0
