"""Whose is what: instances belong to whoever started them, keys to whoever sent them.

Two clients here are two browsers: each has its own cookie jar, so its own device.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import CapturingLogger

import engine.runtime
from engine import FrozenClock, Runtime, instance_ref
from tests.conftest import REDIS_URL
from tests.sample_flows import SAMPLE_YAML
from web.app import create_app
from web.settings import Settings

DETAILS = {"name": "Ada", "password": "s3cret-Pass", "agree": True}
EVIL = "https://evil.example"


async def start(client: TestClient, **kw: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/api/flows/signup", **kw)
    return resp.status, dict(await resp.json())


async def step(client: TestClient, iid: str, trigger: str, body: Any = None,
               **kw: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/api/flows/{iid}/events/{trigger}", json=body or {}, **kw)
    return resp.status, dict(await resp.json())


@pytest.fixture
async def browsers(aiohttp_client: Any, app: web.Application) -> tuple[TestClient, TestClient]:
    first = await aiohttp_client(app)
    return first, await aiohttp_client(first.server)


def device_of(client: TestClient) -> str:
    return client.session.cookie_jar.filter_cookies(client.make_url("/"))["device"].value


# -- instances belong to the device that started them ---------------------------------

async def test_a_start_hands_out_an_http_only_device_cookie(
        browsers: tuple[TestClient, TestClient]) -> None:
    ada, _ = browsers
    resp = await ada.post("/api/flows/signup")
    assert resp.status == 201
    cookie = resp.cookies["device"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"
    assert len(cookie.value) == 43
    # The same browser keeps its device for its next flow.
    again = await ada.post("/api/flows/signup")
    assert again.cookies["device"].value == cookie.value


async def test_an_instance_id_alone_opens_nothing(
        browsers: tuple[TestClient, TestClient], aiohttp_client: Any) -> None:
    ada, eve = browsers
    _, started = await start(ada)
    iid = started["id"]
    await start(eve)  # eve has a device of her own
    nobody = await aiohttp_client(ada.server)  # no cookie at all
    for client in (eve, nobody):
        for path in (f"/api/flows/{iid}", f"/api/flows/{iid}/history",
                     f"/api/flows/{iid}/verify", f"/api/flows/{iid}/captcha"):
            resp = await client.get(path)
            assert resp.status == 403, path
            assert (await resp.json())["error_id"] == "forbidden"
        status, answer = await step(client, iid, "submit", DETAILS)
        assert (status, answer["error_id"]) == (403, "forbidden")
    # Nothing happened to it, and its owner goes on.
    status, view = await step(ada, iid, "submit", DETAILS)
    assert (status, view["version"], view["state"]) == (200, 2, "code")


async def test_logs_name_an_instance_by_a_hash_never_by_its_id(
        browsers: tuple[TestClient, TestClient], monkeypatch: pytest.MonkeyPatch) -> None:
    ada, _ = browsers
    logger = CapturingLogger()
    monkeypatch.setattr(engine.runtime, "log", logger)
    _, started = await start(ada)
    await step(ada, started["id"], "submit", DETAILS)
    assert started["id"] not in repr(logger.calls)
    refs = {c.kwargs.get("instance") for c in logger.calls
            if c.args[0] in ("flow_started", "step_committed")}
    assert refs == {instance_ref(started["id"])}


# -- idempotency keys belong to whoever sent them ---------------------------------------

async def test_the_same_start_key_from_another_client_is_a_new_start(
        browsers: tuple[TestClient, TestClient]) -> None:
    ada, eve = browsers
    key = {"Idempotency-Key": "start-1"}
    s1, mine = await start(ada, json={"prefill": {"name": "Ada"}}, headers=key)
    s2, hers = await start(eve, headers=key)
    assert (s1, s2) == (201, 201)
    assert hers["id"] != mine["id"]
    assert hers["replayed"] is False
    assert "Ada" not in str(hers)
    # The first sender's retry is still the first answer.
    s3, again = await start(ada, json={"prefill": {"name": "Ada"}}, headers=key)
    assert (s3, again["id"], again["replayed"]) == (200, mine["id"], True)


async def test_another_clients_key_on_my_instance_is_refused_before_any_replay(
        browsers: tuple[TestClient, TestClient]) -> None:
    ada, eve = browsers
    _, started = await start(ada)
    key = {"Idempotency-Key": "step-1"}
    status, _first = await step(ada, started["id"], "submit", DETAILS, headers=key)
    assert status == 200
    status, answer = await step(eve, started["id"], "submit", DETAILS, headers=key)
    assert (status, answer["error_id"]) == (403, "forbidden")
    assert "event" not in answer


async def test_a_clients_key_cannot_take_the_place_of_a_timers(
        runtime: Runtime, clock: FrozenClock) -> None:
    """The clock's key is "timer:<id>"; a client sending that key has a key of its own."""
    owner = "device:" + "a" * 32
    iid = (await runtime.start("signup", actor=owner)).instance.id
    await runtime.advance(iid, "submit", DETAILS, actor=owner)
    timer = (await runtime.store.due_timers(iid, clock.now() + timedelta(days=4)))[0]
    wrong = await runtime.advance(iid, "confirm", {"code": "000000"}, actor=owner,
                                  idempotency_key=f"timer:{timer.id}")
    assert wrong.instance.state == "code"
    clock.advance(timedelta(hours=73))
    fired = await runtime.fire_timer(timer)
    assert fired is not None
    assert (fired.replayed, fired.instance.state) == (False, "lapsed")


async def test_a_resent_older_step_gets_the_answer_it_got_then(
        browsers: tuple[TestClient, TestClient]) -> None:
    ada, _ = browsers
    s0, started = await start(ada, headers={"Idempotency-Key": "s"})
    iid = started["id"]
    await step(ada, iid, "submit", DETAILS)
    key = {"Idempotency-Key": "wrong-code"}
    resp = await ada.post(f"/api/flows/{iid}/events/confirm", json={"code": "1"}, headers=key)
    first = await resp.json()
    assert (first["state"], first["version"]) == ("code", 3)
    await step(ada, iid, "back")  # today it is back at details, version 4
    again_resp = await ada.post(f"/api/flows/{iid}/events/confirm", json={"code": "1"},
                                headers=key)
    again = await again_resp.json()
    assert again_resp.status == 200
    assert again_resp.headers["ETag"] == '"3"'
    assert again_resp.headers["Idempotent-Replayed"] == "true"
    assert again == {**first, "replayed": True}
    s1, restarted = await start(ada, headers={"Idempotency-Key": "s"})
    assert (s0, s1) == (201, 200)
    assert restarted == {**started, "replayed": True}


# -- cross-site requests ------------------------------------------------------------------

async def test_a_cookie_authenticated_step_from_another_site_is_refused(
        browsers: tuple[TestClient, TestClient]) -> None:
    ada, _ = browsers
    _, started = await start(ada)
    iid = started["id"]
    ours = str(ada.make_url("")).rstrip("/")
    for headers in ({"Origin": EVIL}, {"Origin": "null"}, {"Referer": EVIL + "/page"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Origin": EVIL, "Referer": ours}):
        status, answer = await step(ada, iid, "submit", DETAILS, headers=headers)
        assert (status, answer["error_id"]) == (403, "cross_site_request"), headers
        assert answer["message"]["zh"]
        assert answer["message"]["en"]
        resp = await ada.post("/api/flows/signup", headers=headers)
        assert resp.status == 403, headers
    assert (await (await ada.get(f"/api/flows/{iid}")).json())["version"] == 1
    # Our own pages, and clients that are no browser (no Origin, no Referer), go on.
    for trigger, headers in (("submit", {"Origin": ours}), ("back", {"Referer": ours + "/a"}),
                             ("submit", {})):
        body = {} if trigger == "back" else DETAILS
        status, view = await step(ada, iid, trigger, body, headers=headers)
        assert status == 200, (headers, view)


async def test_a_request_without_cookies_is_no_forgery(aiohttp_client: Any,
                                                        app: web.Application) -> None:
    client = await aiohttp_client(app)
    status, _ = await start(client, headers={"Origin": EVIL})
    assert status == 201  # nothing a victim's browser would have lent it


# -- captcha images are limited per instance and per client ---------------------------

@pytest.fixture
def captcha_app(tmp_path: Path, settings: Settings, clock: FrozenClock) -> web.Application:
    path = tmp_path / "captcha-flows.yaml"
    path.write_text("policies:\n  captcha: {per_instance: 3, per_client: 5, window: 10m}\n"
                    + SAMPLE_YAML, encoding="utf-8")
    return create_app(Settings(
        database_url=settings.database_url, redis_url=REDIS_URL,
        redis_prefix=settings.redis_prefix + "captcha:", flows_file=str(path),
        flow_modules=("tests.sample_flows", "flows.policies"), workers=False,
        log_format="console"), clock=clock)


async def test_captcha_images_are_limited_per_instance_and_per_client(
        aiohttp_client: Any, captcha_app: web.Application, clock: FrozenClock) -> None:
    client = await aiohttp_client(captcha_app)
    first = (await start(client))[1]["id"]
    for _ in range(3):
        assert (await client.get(f"/api/flows/{first}/captcha")).status == 200
    refused = await client.get(f"/api/flows/{first}/captcha")
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert (await refused.json())["error_id"] == "captcha_images_limit"
    second = (await start(client))[1]["id"]
    assert (await client.get(f"/api/flows/{second}/captcha")).status == 200
    assert (await client.get(f"/api/flows/{second}/captcha")).status == 200
    # Five images from this address: a new instance does not open a new allowance.
    third = (await start(client))[1]["id"]
    assert (await client.get(f"/api/flows/{third}/captcha")).status == 429


async def test_the_flow_list_hands_out_a_device_so_a_lost_start_can_be_sent_again(
        aiohttp_client: Any, app: web.Application) -> None:
    """The start's answer (and the cookie in it) may be lost: a client that read the list
    first already has its device, so sending the start again replays it."""
    client = await aiohttp_client(app)
    listed = await client.get("/api/flows")
    assert listed.cookies["device"]["httponly"] is True
    key = {"Idempotency-Key": "lost-answer"}
    s1, first = await start(client, headers=key)
    s2, again = await start(client, headers=key)
    assert (s1, s2) == (201, 200)
    assert again["id"] == first["id"]
    assert listed.cookies["device"].value == device_of(client)
