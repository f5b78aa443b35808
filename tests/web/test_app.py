"""What create_app puts on every response: security headers, cookie flags, /metrics.

Production apps here are built as production runs them (real keys, providers over HTTP,
an https PUBLIC_URL); the providers are never called.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiohttp import CookieJar, web
from aiohttp.test_utils import TestClient, TestServer

from engine import FrozenClock
from flows.pii import generate_keys
from tests.conftest import REDIS_URL
from tests.web.test_processes import FLOWCTL, ROOT, base_env, free_port, wait_for
from tests.web.test_settings import DEV_ENC_KEY
from web.app import HSTS, create_app, metrics_app
from web.policy import API_CSP, PAGE_CSP
from web.settings import Settings, SettingsError

TOKEN = "metrics-token-0123456789abcdef"


def production(settings: Settings, **changes: Any) -> Settings:
    keys = generate_keys()
    providers = {"CALLBACK_SECRET": "a-callback-secret-of-our-own-0123"}
    for p in ("SMS", "REALNAME", "FACE", "PAYMENT"):
        providers.update({f"{p}_PROVIDER": "http", f"{p}_URL": f"https://{p.lower()}.example",
                          f"{p}_API_KEY": "key"})
    return attrs.evolve(settings, **{
        "environment": "production", "pii_enc_key": keys["enc_key_b64"],
        "pii_index_key": keys["index_key_b64"], "providers": providers,
        "public_url": "https://id.example.gov.cn", **changes})


async def https_client(aiohttp_client: Any, app: web.Application) -> TestClient:
    """A client that keeps Secure cookies, as a browser does over the https of production
    (the test server speaks plain HTTP)."""
    port = free_port()
    jar = CookieJar(unsafe=True, treat_as_secure_origin=f"http://127.0.0.1:{port}")
    client: TestClient = await aiohttp_client(TestServer(app, host="127.0.0.1", port=port),
                                              cookie_jar=jar)
    return client


async def set_cookies(request: web.Request) -> web.Response:
    """A handler that forgets the Secure flag, as a new one might."""
    response = web.json_response({"ok": True})
    response.set_cookie("device", "d-123", httponly=True, samesite="Lax")
    response.set_cookie("session", "s-456", httponly=True, secure=False)
    return response


async def page(request: web.Request) -> web.Response:
    return web.Response(text="<!doctype html><p>hi</p>", content_type="text/html")


async def framed_page(request: web.Request) -> web.Response:
    return web.Response(text="<p>hi</p>", content_type="text/html",
                        headers={"Content-Security-Policy": "default-src 'self';"})


def with_test_routes(app: web.Application) -> web.Application:
    app.router.add_get("/test/cookies", set_cookies)
    app.router.add_get("/test/page", page)
    app.router.add_get("/test/framed-page", framed_page)
    return app


# -- headers ------------------------------------------------------------------------


async def test_development_answers_carry_nosniff_and_frame_ancestors_but_no_hsts(
        aiohttp_client: Any, app: web.Application) -> None:
    client = await aiohttp_client(app)
    for path, status in (("/api/flows", 200), ("/api/nothing-here", 404)):
        resp = await client.get(path)
        assert resp.status == status
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Content-Security-Policy"] == API_CSP
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert "Strict-Transport-Security" not in resp.headers


async def test_pages_keep_a_policy_that_lets_them_work_and_are_never_framed(
        aiohttp_client: Any, app: web.Application) -> None:
    client = await aiohttp_client(with_test_routes(app))
    sandbox = await client.get("/sandbox/")
    assert sandbox.status == 200
    policy = sandbox.headers["Content-Security-Policy"]
    assert "style-src 'unsafe-inline'" in policy  # its own, which its inline CSS needs
    assert "frame-ancestors 'none'" in policy
    assert sandbox.headers["X-Content-Type-Options"] == "nosniff"
    resp = await client.get("/test/page")
    assert resp.headers["Content-Security-Policy"] == PAGE_CSP
    resp = await client.get("/test/framed-page")
    assert resp.headers["Content-Security-Policy"] == \
        "default-src 'self'; frame-ancestors 'none'"


async def test_production_adds_hsts_to_every_answer(aiohttp_client: Any, settings: Settings,
                                                    clock: FrozenClock) -> None:
    client = await aiohttp_client(create_app(production(settings), clock=clock))
    for path in ("/healthz", "/api/flows", "/api/nothing-here", "/sandbox/sms.json"):
        resp = await client.get(path)
        assert resp.headers["Strict-Transport-Security"] == HSTS
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Content-Security-Policy"] == API_CSP
    assert (await client.get("/sandbox/sms.json")).status == 404  # no sandbox at all


def test_create_app_refuses_production_settings_with_development_keys(
        settings: Settings) -> None:
    with pytest.raises(SettingsError) as caught:
        create_app(production(settings, pii_enc_key=DEV_ENC_KEY))
    assert caught.value.problems == [
        "PII_ENC_KEY is a development key, which anyone can recompute: set one of your own "
        "in production (flowctl keys)"]


# -- cookies -----------------------------------------------------------------------


async def cookie_lines(client: Any) -> list[str]:
    resp = await client.get("/test/cookies")
    assert resp.status == 200
    return sorted(resp.headers.getall("Set-Cookie"))


async def test_production_makes_every_cookie_secure_whatever_cookie_secure_says(
        aiohttp_client: Any, settings: Settings, clock: FrozenClock) -> None:
    app = create_app(production(settings, cookie_secure=False), clock=clock)
    lines = await cookie_lines(await aiohttp_client(with_test_routes(app)))
    assert [line.split("=")[0] for line in lines] == ["device", "session"]
    assert all("; Secure" in line for line in lines), lines
    assert all("HttpOnly" in line for line in lines), lines


async def test_development_sets_secure_cookies_only_when_told(
        aiohttp_client: Any, settings: Settings, clock: FrozenClock) -> None:
    plain = create_app(settings, clock=clock)
    lines = await cookie_lines(await aiohttp_client(with_test_routes(plain)))
    assert not any("Secure" in line for line in lines), lines
    told = create_app(attrs.evolve(settings, cookie_secure=True), clock=clock)
    lines = await cookie_lines(await aiohttp_client(with_test_routes(told)))
    assert all("; Secure" in line for line in lines), lines


# -- /metrics --------------------------------------------------------------------------


async def test_production_does_not_serve_metrics_without_a_token_or_a_port(
        aiohttp_client: Any, settings: Settings, clock: FrozenClock) -> None:
    client = await aiohttp_client(create_app(production(settings), clock=clock))
    resp = await client.get("/metrics")
    assert resp.status == 404
    assert b"flow_steps" not in await resp.read()


async def test_metrics_with_a_token_answer_only_its_bearer(
        aiohttp_client: Any, settings: Settings, clock: FrozenClock) -> None:
    client = await aiohttp_client(create_app(production(settings, metrics_token=TOKEN),
                                             clock=clock))
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}x"},
                    {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}):
        resp = await client.get("/metrics", headers=headers)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert (await resp.json())["error_id"] == "metrics_unauthorized"
    for scheme in ("Bearer", "bearer"):
        resp = await client.get("/metrics", headers={"Authorization": f"{scheme} {TOKEN}"})
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "http_requests_total" in await resp.text()


async def test_metrics_on_their_own_port_are_not_on_the_public_one(
        aiohttp_client: Any, settings: Settings, clock: FrozenClock) -> None:
    app = create_app(production(settings, metrics_port=free_port()), clock=clock)
    public = await aiohttp_client(app)
    assert (await public.get("/metrics")).status == 404
    scraper = await aiohttp_client(metrics_app(app))
    resp = await scraper.get("/metrics")
    assert resp.status == 200
    # The public port's requests, counted by the public app.
    assert 'route="unmatched",status="404"' in await resp.text()
    assert (await scraper.get("/api/flows")).status == 404


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - our server
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.slow
def test_serve_listens_for_metrics_on_metrics_port_only(
        database_url: str, redis_prefix: str, flows_file: Path, tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    env = {**base_env(), "DATABASE_URL": database_url, "REDIS_URL": REDIS_URL,
           "REDIS_PREFIX": redis_prefix, "FLOWS_FILE": str(flows_file), "WORKERS": "false",
           "PORT": str(port), "METRICS_PORT": str(metrics_port), "METRICS_TOKEN": TOKEN,
           "DATA_DIR": str(tmp_path)}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*FLOWCTL, "serve"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=out)
    try:
        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return get(f"http://127.0.0.1:{port}/healthz")[0] == 200
            except OSError:
                time.sleep(0.05)
                return False

        wait_for("the server", ready, timeout=30)
        assert get(f"http://127.0.0.1:{port}/metrics")[0] == 404
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        assert get(metrics)[0] == 401
        status, text = get(metrics, {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        assert 'route="/healthz",status="200"' in text
    finally:
        proc.terminate()
        proc.wait(30)


async def test_a_platform_whose_start_fails_part_way_stops_what_it_started(
        database_url: str, redis_prefix: str, clock: FrozenClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import serve_platform

    async def slow_database(*args: Any, **kwargs: Any) -> Any:
        raise TimeoutError  # as asyncpg's command timeout raises it

    # The signing keys are the last thing a start makes: the database, Redis and the
    # runtime are up by then.
    monkeypatch.setattr("web.oidc.add_new_key", slow_database)
    before = asyncio.all_tasks()
    with pytest.raises(TimeoutError):
        async with serve_platform(database_url, redis_prefix, clock):
            pass
    await asyncio.sleep(0)
    left = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert left == set(), left
