"""The API page and its assets, served by the app; a page for every problem type."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from web.catalogue import catalogue

JSON = {"Accept": "application/json"}


async def test_the_api_page_and_its_assets_are_served_by_the_app(
        aiohttp_client: Any, app: web.Application) -> None:
    client = await aiohttp_client(app)
    page = await client.get("/api/docs")
    assert page.status == 200
    assert page.content_type == "text/html"
    text = await page.text()
    # Nothing from elsewhere: every script and style is one of ours.
    links = re.findall(r'(?:src|href)="([^"]+)"', text)
    assert links
    assert all(link.startswith("/api/docs/") for link in links), links
    assert "<script>" not in text  # no inline script: a strict CSP can stay strict
    kinds = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for link in links:
        asset = await client.get(link)
        assert asset.status == 200, link
        assert asset.content_type == kinds[link[link.rindex("."):]], link
        assert len(await asset.read()) > 100, link
    script = await (await client.get("/api/docs/init.js")).text()
    assert 'url: "/api/openapi.json"' in script
    bundle = await (await client.get("/api/docs/assets/swagger-ui-bundle.js")).text()
    assert "SwaggerUIBundle" in bundle


async def test_only_the_pages_own_assets_are_served(aiohttp_client: Any,
                                                    app: web.Application) -> None:
    client = await aiohttp_client(app)
    for name in ("swagger-editor-bundle.js", "..%2F..%2Fcore.py", "LICENSE", "index.html"):
        resp = await client.get(f"/api/docs/assets/{name}")
        assert resp.status == 404, name
        assert (await resp.json())["error_id"] == "not_found"


async def problems_of(client: TestClient) -> list[dict[str, Any]]:
    """Problem answers of several kinds, as a client gets them."""
    answers = []
    for method, path, kw in (
            ("GET", "/api/nothing-here", {}),
            ("POST", "/api/flows/no_such_flow", {}),
            ("PUT", "/api/flows", {}),
            ("POST", "/api/flows/signup", {"data": b"{", "headers": {
                "Content-Type": "application/json"}}),
            ("GET", "/api/flows/00000000-0000-0000-0000-000000000000", {}),
            ("GET", "/api/session", {})):
        resp = await client.request(method, path, **kw)
        assert resp.content_type == "application/problem+json", path
        answers.append(await resp.json())
    iid = (await (await client.post("/api/flows/signup")).json())["id"]
    resp = await client.post(f"/api/flows/{iid}/events/submit", json={"name": "bad"})
    answers.append(await resp.json())
    return answers


async def test_every_problem_type_resolves_to_its_page_in_html_and_in_json(
        aiohttp_client: Any, app: web.Application) -> None:
    client = await aiohttp_client(app)
    answers = await problems_of(client)
    seen = {a["error_id"] for a in answers}
    assert {"not_found", "flow_not_found", "method_not_allowed", "malformed_json",
            "instance_not_found", "not_signed_in", "validation_failed"} <= seen
    for answer in answers:
        assert answer["type"] == f"/problems/{answer['error_id']}"
        ids = [answer["error_id"], *(e["error_id"] for e in answer.get("errors", []))]
        for error_id in ids:
            html_page = await client.get(f"/problems/{error_id}")
            assert html_page.status == 200, error_id
            assert html_page.content_type == "text/html"
            text = await html_page.text()
            assert f"<code>{error_id}</code>" in text
            data = await (await client.get(f"/problems/{error_id}", headers=JSON)).json()
            assert data["error_id"] == error_id
            assert data["messages"]
            assert all(m["zh"] for m in data["messages"])
            assert all(m["en"] for m in data["messages"])
            assert data["todo"]["zh"]
            assert data["todo"]["en"]
            assert data["messages"][0]["zh"] in text
            assert data["todo"]["en"] in text.replace("&#x27;", "'").replace("&quot;", '"')
    field_error = next(a for a in answers if a["error_id"] == "validation_failed")["errors"]
    assert {e["error_id"] for e in field_error} >= {"name_bad"}  # a module's own id


async def test_a_problem_page_says_status_messages_and_what_to_do(
        aiohttp_client: Any, app: web.Application) -> None:
    client = await aiohttp_client(app)
    data = await (await client.get("/problems/flow_expired", headers=JSON)).json()
    assert data["status"] == 410
    assert data["kind"] == "problem"
    assert data["messages"] == [{"kind": "problem", "status": 410, "zh": "流程已过期，请重新开始",
                                 "en": "The flow has expired; start a new one"}]
    assert "restart" in data["todo"]["en"]
    # A browser that also takes JSON, but prefers HTML, gets the page.
    resp = await client.get("/problems/flow_expired",
                            headers={"Accept": "text/html,application/json;q=0.9"})
    assert resp.content_type == "text/html"
    assert "怎么办 / What to do" in await resp.text()
    index = await (await client.get("/problems", headers=JSON)).json()
    assert "flow_expired" in {p["error_id"] for p in index["problems"]}
    assert (await client.get("/problems")).content_type == "text/html"


async def test_an_unknown_error_id_is_a_404_problem(aiohttp_client: Any,
                                                    app: web.Application) -> None:
    client = await aiohttp_client(app)
    for name in ("no_such_error", "Bad-Id", "%3Cscript%3E"):
        resp = await client.get(f"/problems/{name}")
        assert resp.status == 404
        assert (await resp.json())["error_id"] == "not_found"


async def test_every_error_id_of_the_real_flows_and_code_has_a_page(platform: Any) -> None:
    app = platform.app
    from web import keys

    expected = catalogue(app[keys.RUNTIME].flows, ("flows",))
    assert len(expected) > 100
    index = await (await platform.client.get("/problems", headers=JSON)).json()
    assert {p["error_id"] for p in index["problems"]} == set(expected)
    for error_id in ("sms_resend_too_soon", "face_sessions_used_up", "login_failed",
                     "provider_timeout", "resident_id_check"):
        resp = await platform.client.get(f"/problems/{error_id}")
        assert resp.status == 200, error_id
