"""``Prefer: captcha-image``: the captcha's new image in the answer that shows its field.

A client that asks gets the image of a captcha field in the answer to the start (or the
step) that shows it, as a data: URL, and needs no request of its own for it. The image
is one like any other: counted against the limits of images, replaced by the next one.
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions
from aiohttp import web
from aiohttp.test_utils import TestClient

from engine import FrozenClock
from flows.captcha import CAPTCHA_WRONG
from tests.conftest import REDIS_URL
from tests.flows.test_personal import register
from tests.platform import PASSWORD, Platform
from web.app import create_app
from web.keys import SERVICES
from web.settings import Settings

PREFER = {"Prefer": "captcha-image"}
JPEG = b"\xff\xd8\xff"


def captcha_field(view: dict[str, Any]) -> dict[str, Any]:
    fields = [f for f in view["ui"]["fields"] if f.get("widget") == "captcha"]
    assert len(fields) == 1, view["ui"]["fields"]
    return dict(fields[0])


def inline_image(view: dict[str, Any]) -> bytes:
    data = captcha_field(view)["image_data"]
    assert data.startswith("data:image/jpeg;base64,")
    image = base64.b64decode(data.split(",", 1)[1], validate=True)
    assert image.startswith(JPEG)
    return image


async def answers(client: TestClient, iid: str) -> list[str]:
    """The answers the sandbox holds for an instance, newest first."""
    resp = await client.get("/sandbox/captchas.json", params={"instance": iid})
    assert resp.status == 200, await resp.text()
    return [str(c["answer"]) for c in (await resp.json())["captchas"]]


async def test_a_start_that_asks_brings_the_first_image_and_its_answer_signs_in(
        platform: Platform) -> None:
    person = await register(platform)
    async with platform.another_browser() as client:
        resp = await client.post("/api/flows/personal_login", headers=PREFER)
        assert resp.status == 201, await resp.text()
        assert resp.headers["Preference-Applied"] == "captcha-image"
        view = await resp.json()
        inline_image(view)
        # The address is there as ever, for the next image.
        assert captcha_field(view)["image"] == f"/api/flows/{view['id']}/captcha"
        drawn = await answers(client, view["id"])
        assert len(drawn) == 1
        # Signed in with no request for the image: both preferences, one applied here.
        resp = await client.post(
            f"/api/flows/{view['id']}/events/submit",
            headers={"Prefer": "session-token, captcha-image"},
            json={"identifier": person["login"], "password": PASSWORD,
                  "captcha": drawn[0]})
        assert resp.status == 200, await resp.text()
        done = await resp.json()
        assert done["state"] == "signed_in"
        assert resp.headers["Preference-Applied"] == "session-token"
        assert done["reply"]["session"]


async def test_a_refused_sign_in_brings_the_next_image_and_its_answer_signs_in(
        platform: Platform) -> None:
    person = await register(platform)
    async with platform.another_browser() as client:
        view = await (await client.post("/api/flows/personal_login", headers=PREFER)).json()
        [first] = await answers(client, view["id"])
        submit = f"/api/flows/{view['id']}/events/submit"
        wrong = {"identifier": person["login"], "password": PASSWORD + "x"}
        # Without the preference a refusal brings no image (the client asks the address).
        resp = await client.post(submit, json={**wrong, "captcha": first})
        assert resp.status == 422
        assert "captcha" not in await resp.json()
        assert "Preference-Applied" not in resp.headers
        assert len(await answers(client, view["id"])) == 1
        assert (await client.get(f"/api/flows/{view['id']}/captcha")).status == 200
        second = (await answers(client, view["id"]))[0]
        # With it, the refusal brings the next image under the captcha field's name.
        resp = await client.post(submit, headers=PREFER, json={**wrong, "captcha": second})
        assert resp.status == 422
        assert resp.headers["Preference-Applied"] == "captcha-image"
        problem = await resp.json()
        assert problem["error_id"] == "validation_failed"
        assert [e["error_id"] for e in problem["errors"]] == ["login_failed"]
        assert problem["captcha"]["field"] == "captcha"
        inline_image({"ui": {"fields": [{"widget": "captcha", **problem["captcha"]}]}})
        drawn = await answers(client, view["id"])
        assert len(drawn) == 3
        # Its answer signs in: no request for an image after the refusal.
        resp = await client.post(submit, headers=PREFER,
                                 json={**wrong, "password": PASSWORD, "captcha": drawn[0]})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["state"] == "signed_in"


async def test_a_refused_step_past_the_image_limits_is_the_plain_problem(
        aiohttp_client: Any, gate_app: web.Application) -> None:
    client = await aiohttp_client(gate_app)
    iid = (await (await client.post("/api/flows/gate", headers=PREFER)).json())["id"]
    # A refusal (the captcha missing) brings the instance's second and last image...
    resp = await client.post(f"/api/flows/{iid}/events/next", headers=PREFER, json={})
    assert resp.status == 422
    assert resp.headers["Preference-Applied"] == "captcha-image"
    assert (await resp.json())["captcha"]["image_data"].startswith("data:image/jpeg")
    # ...and past the limit the same refusal is the problem alone.
    resp = await client.post(f"/api/flows/{iid}/events/next", headers=PREFER, json={})
    assert resp.status == 422
    problem = await resp.json()
    assert problem["errors"][0]["field"] == "captcha"
    assert "captcha" not in problem
    assert "Preference-Applied" not in resp.headers


async def test_without_the_preference_or_in_a_replayed_start_no_image_is_drawn(
        platform: Platform) -> None:
    resp = await platform.client.post("/api/flows/personal_login")
    assert resp.status == 201
    view = await resp.json()
    assert "image_data" not in captcha_field(view)
    assert "Preference-Applied" not in resp.headers
    assert await answers(platform.client, view["id"]) == []
    # A start sent again gets the answer it got: no new image either.
    key = {"Idempotency-Key": "inline-captcha-replay", **PREFER}
    first = await platform.client.post("/api/flows/personal_login", headers=key)
    again = await platform.client.post("/api/flows/personal_login", headers=key)
    assert (first.status, again.status) == (201, 200)
    replayed = await again.json()
    assert replayed["id"] == (await first.json())["id"]
    assert "image_data" not in captcha_field(replayed)
    assert "Preference-Applied" not in again.headers
    assert len(await answers(platform.client, replayed["id"])) == 1


async def test_a_later_image_replaces_the_inline_one(platform: Platform) -> None:
    view = await platform.start("personal_login", headers=PREFER)
    inline_image(view)
    [first] = await answers(platform.client, view["id"])
    second = await platform.captcha(view["id"])
    if second.upper() == first.upper():  # one chance in ~900,000: the check below is moot
        pytest.skip("the two images happen to read the same")
    captchas = platform.app[SERVICES].captchas
    assert await captchas.check(view["id"], first) == CAPTCHA_WRONG


async def test_with_redis_down_the_start_is_taken_without_an_image(
        platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    async def down(instance_id: str) -> bytes:
        raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(platform.app[SERVICES].captchas, "new", down)
    resp = await platform.client.post("/api/flows/personal_login", headers=PREFER)
    assert resp.status == 201, await resp.text()
    assert "image_data" not in captcha_field(await resp.json())
    assert "Preference-Applied" not in resp.headers


GATE_YAML = """\
policies:
  captcha: {per_instance: 2, per_client: 4, window: 10m}
flows:
  gate:
    title: {zh: 两道图形验证码, en: Two captchas}
    expires_in: 1h
    initial: ask
    states:
      ask:
        label: {zh: 第一道, en: First}
        fields: &captcha
          captcha:
            type: string
            required: true
            max_length: 10
            widget: captcha
            label: {zh: 图形验证码, en: Characters in the picture}
      again:
        label: {zh: 第二道, en: Second}
        fields: *captcha
      done:
        final: true
    transitions:
      - {trigger: next, source: ask, dest: again}
      - {trigger: finish, source: again, dest: done}
"""


@pytest.fixture
def gate_app(tmp_path: Path, settings: Settings, clock: FrozenClock) -> web.Application:
    path = tmp_path / "gate.yaml"
    path.write_text(GATE_YAML, encoding="utf-8")
    return create_app(Settings(
        database_url=settings.database_url, redis_url=REDIS_URL,
        # A prefix of its own per test: the limits of images count per address.
        redis_prefix=f"{settings.redis_prefix}gate-{uuid.uuid4().hex[:6]}:",
        flows_file=str(path),
        flow_modules=("flows.policies",), workers=False, log_format="console"),
        clock=clock)


async def test_inline_images_count_against_the_limits_and_past_them_the_step_goes_on(
        aiohttp_client: Any, gate_app: web.Application) -> None:
    client = await aiohttp_client(gate_app)
    resp = await client.post("/api/flows/gate", headers=PREFER)
    assert resp.status == 201
    iid = (await resp.json())["id"]
    inline_image(await resp.json())
    # A step whose answer shows a captcha field brings its image too.
    resp = await client.post(f"/api/flows/{iid}/events/next", headers=PREFER,
                             json={"captcha": "ABCD"})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Preference-Applied"] == "captcha-image"
    inline_image(await resp.json())
    # Two images of this instance: the limit is reached.
    refused = await client.get(f"/api/flows/{iid}/captcha")
    assert refused.status == 429
    assert (await refused.json())["error_id"] == "captcha_images_limit"
    # A final state shows no captcha: nothing drawn, nothing applied.
    resp = await client.post(f"/api/flows/{iid}/events/finish", headers=PREFER,
                             json={"captcha": "ABCD"})
    assert resp.status == 200
    assert "Preference-Applied" not in resp.headers
    # Four images from this address: a start past them is taken, without an image.
    second = await client.post("/api/flows/gate", headers=PREFER)
    inline_image(await second.json())
    assert (await client.get(f"/api/flows/{(await second.json())['id']}/captcha")).status \
        == 200
    third = await client.post("/api/flows/gate", headers=PREFER)
    assert third.status == 201
    assert "Preference-Applied" not in third.headers
    view = await third.json()
    assert "image_data" not in captcha_field(view)
    late = await client.get(f"/api/flows/{view['id']}/captcha")
    assert late.status == 429
    assert int(late.headers["Retry-After"]) > 0
