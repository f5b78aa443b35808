"""The sandbox pages and API, and /api/branches, over real HTTP and a real Redis.

The app is built here from the sandbox routes alone (not web/app.py). Callbacks go over
real HTTP to a receiver server that checks them with the CallbackVerifier.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from engine import FrozenClock
from flows.providers import (
    CallbackVerifier,
    Providers,
    ProviderUnavailable,
    build_providers,
)
from flows.providers.http import (
    Endpoint,
    HttpBranchDirectory,
    HttpFace,
    HttpPayment,
    HttpRealName,
    HttpSms,
)
from storage.ephemeral import RedisEphemeral
from tests.conftest import ROOT
from tests.platform import PASSWORD, Platform
from web.app import create_app
from web.httpclient import AiohttpClient
from web.middleware import problems
from web.sandbox import setup_branches, setup_sandbox
from web.settings import Settings

ID_A = "11010519491231002X"
ACCOUNT = "6222020200001234"
BRANCH = "102100000097"


class Receiver:
    """The platform's side of the callbacks: verify, record, answer."""

    def __init__(self, verifier: CallbackVerifier) -> None:
        self.verifier = verifier
        self.events: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        payload = await self.verifier.verify_json(request.headers, await request.read())
        self.events.append({"kind": request.match_info["kind"], **payload})
        return web.json_response({"ok": True})

    def app(self) -> web.Application:
        app = web.Application(middlewares=[problems])
        app.router.add_post("/callbacks/{kind}", self.handle)
        return app


@pytest.fixture
async def http_client() -> AsyncIterator[AiohttpClient]:
    client = AiohttpClient()
    yield client
    await client.aclose()


@pytest.fixture
async def providers(redis_client: aioredis.Redis, redis_prefix: str, clock: FrozenClock,
                    http_client: AiohttpClient) -> AsyncIterator[Providers]:
    p = build_providers({"CALLBACK_SECRET": "web-test-secret-0123456789"},
                        ephemeral=RedisEphemeral(redis_client, redis_prefix),
                        http_client=http_client, clock=clock, base_url="http://dev.test")
    yield p
    await p.aclose()


@pytest.fixture
async def receiver(providers: Providers,
                   aiohttp_server: Any) -> tuple[Receiver, TestServer]:
    r = Receiver(providers.callbacks)
    return r, await aiohttp_server(r.app())


@pytest.fixture
async def client(providers: Providers, aiohttp_client: Any) -> TestClient:
    app = web.Application(middlewares=[problems])
    setup_sandbox(app, providers)
    setup_branches(app, providers.branches)
    return await aiohttp_client(app)


def callback(server: TestServer, kind: str) -> str:
    return str(server.make_url(f"/callbacks/{kind}"))


# -- index, SMS ------------------------------------------------------------------------


async def test_the_index_lists_the_services_and_their_implementations(
        client: TestClient) -> None:
    resp = await client.get("/sandbox/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert resp.charset == "utf-8"
    text = await resp.text()
    for label in ("短信网关", "SMS gateway", "人脸核验", "sandbox", "csv"):
        assert label in text


async def test_the_sms_inbox_shows_messages_newest_first_escaped(
        client: TestClient, providers: Providers) -> None:
    await providers.sms.send("13800138000", "验证码 111111", idempotency_key="a")
    await providers.sms.send("13900139000", "<script>alert(1)</script>",
                             idempotency_key="b")
    await providers.sms.send("13900139000", "<script>alert(1)</script>",
                             idempotency_key="b")
    text = await (await client.get("/sandbox/sms")).text()
    assert "13800138000" in text  # the development inbox shows the phone in full
    assert "<script>alert" not in text
    assert text.count("&lt;script&gt;") == 1
    assert text.index("&lt;script&gt;") < text.index("验证码 111111")
    resp = await client.get("/sandbox/sms.json", params={"phone": "13800138000"})
    messages = (await resp.json())["messages"]
    assert [m["text"] for m in messages] == ["验证码 111111"]


async def test_a_provider_can_be_switched_down_from_the_index(
        client: TestClient, providers: Providers) -> None:
    resp = await client.post("/sandbox/switches", data={"provider": "sms", "down": "1"},
                             allow_redirects=False)
    assert resp.status == 303
    with pytest.raises(ProviderUnavailable):
        await providers.sms.send("13800138000", "x", idempotency_key="k")
    assert "故障中" in await (await client.get("/sandbox/")).text()
    await client.post("/sandbox/switches", data={"provider": "sms", "down": "0"})
    await providers.sms.send("13800138000", "x", idempotency_key="k")


async def test_a_form_posted_from_another_site_is_refused(client: TestClient) -> None:
    resp = await client.post("/sandbox/switches", data={"provider": "sms", "down": "1"},
                             headers={"Origin": "https://evil.example"})
    assert resp.status == 403
    assert (await resp.json())["error_id"] == "sandbox_cross_origin"


# -- face verification -----------------------------------------------------------------


async def test_the_face_page_passes_and_sends_a_signed_callback_over_http(
        client: TestClient, providers: Providers,
        receiver: tuple[Receiver, TestServer]) -> None:
    rec, server = receiver
    session = await providers.face.create_session("张三", ID_A,
                                                  callback_url=callback(server, "face"),
                                                  idempotency_key="i:1")
    path = session.qr_url.removeprefix("http://dev.test")
    assert path == f"/sandbox/face/{session.session_id}"
    page = await (await client.get(path)).text()
    assert "张三" in page
    assert "110***********002X" in page
    assert ID_A not in page
    assert 'value="pass"' in page
    assert 'value="fail"' in page

    resp = await client.post(path, data={"result": "pass"})  # follows the 303
    assert resp.status == 200
    assert "HTTP 200" in await resp.text()
    [event] = rec.events
    assert event["kind"] == "face"
    assert event["session_id"] == session.session_id
    assert event["result"] == "pass"

    # Pressing again resends the same event: the receiver refuses it as a replay.
    resp = await client.post(path, data={"result": "pass"})
    assert "HTTP 409" in await resp.text()
    assert len(rec.events) == 1
    # The other button no longer exists, and posting it anyway is refused.
    assert 'value="fail"' not in await resp.text()
    resp = await client.post(path, data={"result": "fail"})
    assert resp.status == 409
    assert (await resp.json())["error_id"] == "sandbox_face_finished"


async def test_a_failed_face_session_reports_fail(client: TestClient, providers: Providers,
                                                  receiver: tuple[Receiver, TestServer]
                                                  ) -> None:
    rec, server = receiver
    session = await providers.face.create_session("李四", ID_A,
                                                  callback_url=callback(server, "face"),
                                                  idempotency_key="i:2")
    await client.post(f"/sandbox/face/{session.session_id}", data={"result": "fail"})
    assert [e["result"] for e in rec.events] == ["fail"]
    state = await (await client.get(f"/sandbox/face/{session.session_id}.json")).json()
    assert state["event"]["result"] == "fail"
    assert state["delivery"]["status"] == 200
    assert "callback_url" not in state


async def test_a_callback_receiver_that_is_down_is_shown_on_the_page(
        client: TestClient, providers: Providers) -> None:
    session = await providers.face.create_session(
        "张三", ID_A, callback_url="http://127.0.0.1:9/callbacks/face", idempotency_key="k")
    resp = await client.post(f"/sandbox/face/{session.session_id}", data={"result": "pass"})
    assert resp.status == 200
    assert "回调失败" in await resp.text()


async def test_an_unknown_face_session_is_a_404_page(client: TestClient) -> None:
    resp = await client.get("/sandbox/face/nope")
    assert resp.status == 404
    assert resp.content_type == "text/html"
    resp = await client.post("/sandbox/face/nope", data={"result": "pass"})
    assert resp.status == 404
    assert (await resp.json())["error_id"] == "sandbox_not_found"


# -- payment, bank statement ------------------------------------------------------------


async def test_a_deposit_is_reported_by_signed_callback_and_on_the_statement(
        client: TestClient, providers: Providers,
        receiver: tuple[Receiver, TestServer]) -> None:
    rec, server = receiver
    deposit_id = await providers.payment.send_deposit(
        ACCOUNT, BRANCH, callback_url=callback(server, "payment"), idempotency_key="i:3")
    await providers.payment.send_deposit(ACCOUNT, BRANCH,
                                         callback_url=callback(server, "payment"),
                                         idempotency_key="i:3")
    await providers.sandbox.payment.drain()
    [event] = rec.events
    assert event["deposit_id"] == deposit_id
    assert event["status"] == "credited"
    amount = event["amount_fen"]
    assert 1 <= amount <= 99

    page = await (await client.get(f"/sandbox/bank/{ACCOUNT}")).text()
    assert f"{amount / 100:.2f}" in page
    assert "中国工商银行北京海淀支行" in page
    assert deposit_id in page
    statement = await (await client.get(f"/sandbox/bank/{ACCOUNT}.json")).json()
    assert [c["amount_fen"] for c in statement["credits"]] == [amount]


async def test_the_bank_page_asks_for_an_account(client: TestClient) -> None:
    assert "账号" in await (await client.get("/sandbox/bank")).text()
    resp = await client.get("/sandbox/bank", params={"account": "6222 0202"},
                            allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/sandbox/bank/62220202"
    assert "暂无入账" in await (await client.get("/sandbox/bank/62220202")).text()


# -- real-name registry ----------------------------------------------------------------------


async def test_mismatching_pairs_are_added_and_removed_on_the_registry_page(
        client: TestClient, providers: Providers) -> None:
    assert await providers.realname.check("张三", ID_A, idempotency_key="k")
    resp = await client.post("/sandbox/registry",
                             data={"action": "add_pair", "name": "张三", "id_number": ID_A})
    assert resp.status == 200
    assert "张三" in await resp.text()
    assert not await providers.realname.check("张三", ID_A, idempotency_key="k")
    await client.post("/sandbox/registry",
                      data={"action": "remove_pair", "name": "张三", "id_number": ID_A})
    assert await providers.realname.check("张三", ID_A, idempotency_key="k")
    await client.post("/sandbox/registry", data={"action": "add_id", "id_number": ID_A})
    assert not await providers.realname.check("谁都不行", ID_A, idempotency_key="k")
    resp = await client.post("/sandbox/registry", data={"action": "explode"})
    assert resp.status == 400
    assert (await resp.json())["error_id"] == "sandbox_bad_request"


async def test_the_registry_page_shows_ids_masked_and_removes_by_token(
        client: TestClient, providers: Providers) -> None:
    await providers.sandbox.realname.add_pair("张三", ID_A)
    await providers.sandbox.realname.add_id(ID_A)
    page = await (await client.get("/sandbox/registry")).text()
    assert ID_A not in page
    assert page.count("110***********002X") == 2
    tokens = re.findall(r'name="token" value="([0-9a-f]+)"', page)
    assert len(tokens) == 2
    await client.post("/sandbox/registry", data={"action": "remove_pair", "token": tokens[0]})
    await client.post("/sandbox/registry", data={"action": "remove_id", "token": tokens[1]})
    assert await providers.realname.check("张三", ID_A, idempotency_key="k")
    config = await providers.sandbox.realname.config()
    assert (config.pairs, config.ids) == ((), ())


# -- branch search ---------------------------------------------------------------------------


async def test_branch_search_over_http(client: TestClient) -> None:
    for path in ("/api/branches", "/sandbox/branches"):
        resp = await client.get(path, params={"q": "工商 海淀", "limit": "5"})
        assert resp.status == 200
        body = await resp.json()
        assert body["branches"][0] == {"code": BRANCH, "name": "中国工商银行北京海淀支行",
                                       "bank": "中国工商银行", "city": "北京"}
    assert (await (await client.get("/api/branches")).json())["branches"] == []


async def test_branch_lookup_by_code_and_refusals(client: TestClient) -> None:
    resp = await client.get(f"/api/branches/{BRANCH}")
    assert (await resp.json())["branch"]["code"] == BRANCH
    resp = await client.get("/api/branches/000000000000")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["error_id"] == "branch_not_found"
    resp = await client.get("/api/branches", params={"q": "工商", "limit": "9999"})
    assert resp.status == 400
    assert (await resp.json())["error_id"] == "limit_invalid"


# -- the HTTP implementations against the sandbox's wire API ---------------------------


def api(client: TestClient, service: str) -> Endpoint:
    return Endpoint(service, str(client.make_url(f"/sandbox/api/{service}")), "key", 3.0)


async def test_http_providers_work_against_the_sandbox_api(
        client: TestClient, providers: Providers, http_client: AiohttpClient,
        receiver: tuple[Receiver, TestServer]) -> None:
    rec, server = receiver
    await HttpSms(api(client, "sms"), http_client).send("13800138000", "验证码 222222",
                                                         idempotency_key="k1")
    assert [m["text"] for m in await providers.sandbox.sms.inbox()] == ["验证码 222222"]

    await providers.sandbox.realname.add_id(ID_A)
    assert not await HttpRealName(api(client, "realname"), http_client).check(
        "张三", ID_A, idempotency_key="k2")

    face = HttpFace(api(client, "face"), http_client)
    session = await face.create_session("张三", ID_A, callback_url=callback(server, "face"),
                                        idempotency_key="k3")
    assert session == await face.create_session(
        "张三", ID_A, callback_url=callback(server, "face"), idempotency_key="k3")

    deposit_id = await HttpPayment(api(client, "payment"), http_client).send_deposit(
        ACCOUNT, BRANCH, callback_url=callback(server, "payment"), idempotency_key="k4")
    await providers.sandbox.payment.drain()
    assert [e["deposit_id"] for e in rec.events] == [deposit_id]

    directory = HttpBranchDirectory(api(client, "branches"), http_client)
    assert (await directory.search("工行 海淀"))[0].code == BRANCH
    branch = await directory.get(BRANCH)
    assert branch is not None
    assert branch.city == "北京"
    assert await directory.get("000000000000") is None


async def test_a_sandbox_switched_down_answers_503_to_the_http_provider(
        client: TestClient, providers: Providers, http_client: AiohttpClient) -> None:
    await providers.sandbox.switches.set_down("realname", True)
    resp = await client.post("/sandbox/api/realname/checks",
                             json={"name": "张三", "id_number": ID_A},
                             headers={"Idempotency-Key": "k"})
    assert resp.status == 503
    assert (await resp.json())["error_id"] == "provider_unavailable"
    with pytest.raises(ProviderUnavailable):
        await HttpRealName(api(client, "realname"), http_client).check(
            "张三", ID_A, idempotency_key="k")


async def test_the_sandbox_api_refuses_bad_requests_as_problems(client: TestClient) -> None:
    resp = await client.post("/sandbox/api/sms/messages", json={"phone": "138"})
    assert resp.status == 400
    assert (await resp.json())["error_id"] == "sandbox_bad_request"
    resp = await client.post("/sandbox/api/sms/messages",
                             json={"phone": "13800138000", "text": "x"})
    assert resp.status == 400
    assert (await resp.json())["error_id"] == "idempotency_key_missing"
    resp = await client.post("/sandbox/api/face/sessions", data=b"not json",
                             headers={"Idempotency-Key": "k"})
    assert resp.status == 400
    body = json.loads(await resp.text())
    assert re.match(r"sandbox_", body["error_id"])


# -- captcha answers ---------------------------------------------------------------------


async def captcha_image(client: TestClient, iid: str) -> None:
    resp = await client.get(f"/api/flows/{iid}/captcha")
    assert resp.status == 200
    assert (await resp.read()).startswith(b"\xff\xd8\xff")  # a JPEG


async def test_the_sandbox_shows_each_captcha_answer_and_the_newest_passes(
        platform: Platform) -> None:
    from tests.flows.test_personal import register

    person = await register(platform)
    login = (await platform.start("personal_login"))["id"]
    other = (await platform.start("personal_login"))["id"]
    for iid in (login, other, login):
        await captcha_image(platform.client, iid)
    resp = await platform.client.get("/sandbox/captchas.json", params={"instance": login})
    assert resp.status == 200
    shown = (await resp.json())["captchas"]
    assert [c["instance_id"] for c in shown] == [login, login]  # newest first
    assert all(re.fullmatch(r"[A-Z0-9]{4}", c["answer"]) for c in shown)
    everyone = (await (await platform.client.get("/sandbox/captchas.json")).json())["captchas"]
    assert [c["instance_id"] for c in everyone] == [login, other, login]
    page = await (await platform.client.get("/sandbox/captchas",
                                            params={"instance": login})).text()
    assert shown[0]["answer"] in page
    # The answer shown passes the captcha: the sign-in goes through.
    view = await platform.ok(login, "submit", {"identifier": person["login"],
                                               "password": PASSWORD,
                                               "captcha": shown[0]["answer"]})
    assert view["state"] == "signed_in"
    resp = await platform.client.get("/sandbox/captchas.json", params={"instance": "../x"})
    assert resp.status == 400
    assert (await resp.json())["error_id"] == "instance_invalid"


async def test_production_keeps_no_captcha_answer_and_shows_none(
        aiohttp_client: Any, settings: Settings, clock: FrozenClock,
        redis_client: aioredis.Redis) -> None:
    from tests.web.test_app import https_client, production

    real_flows = attrs.evolve(settings, flows_file=str(ROOT / "flows.yaml"),
                              flow_modules=("flows",))
    client = await https_client(aiohttp_client, create_app(production(real_flows),
                                                           clock=clock))
    resp = await client.post("/api/flows/personal_login")
    assert resp.status == 201
    iid = (await resp.json())["id"]
    await captcha_image(client, iid)
    await captcha_image(client, iid)
    keys = [k.decode() async for k in redis_client.scan_iter(match=f"{settings.redis_prefix}*")]
    assert f"{settings.redis_prefix}captcha:{iid}" in keys
    assert not [k for k in keys if "sandbox" in k or "captchas" in k], keys
    for path in ("/sandbox/captchas.json", "/sandbox/captchas"):
        assert (await client.get(path, params={"instance": iid})).status == 404
