"""The HTTP API over a real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import attrs
from aiohttp import web
from aiohttp.test_utils import TestClient

from engine import FrozenClock
from tests.sample_flows import SAMPLE_YAML
from web.app import create_app

DETAILS = {"name": "Ada", "password": "s3cret-Pass", "agree": True}


async def start(client: TestClient, **kw: Any) -> dict[str, Any]:
    resp = await client.post("/api/flows/signup", **kw)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def step(client: TestClient, iid: str, trigger: str, body: Any,
               **kw: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/api/flows/{iid}/events/{trigger}", json=body, **kw)
    return resp.status, dict(await resp.json())


async def test_start_returns_the_first_step_with_its_form(aiohttp_client: Any,
                                                          app: web.Application) -> None:
    client = await aiohttp_client(app)
    resp = await client.post("/api/flows/signup")
    assert resp.status == 201
    body = await resp.json()
    assert resp.headers["Location"] == f"/api/flows/{body['id']}"
    assert resp.headers["ETag"] == '"1"'
    assert body["state"] == "details"
    assert body["status"] == "active"
    names = [f["name"] for f in body["ui"]["fields"]]
    assert names == ["name", "password", "agree"]
    password = body["ui"]["fields"][1]
    assert password["secret"] is True
    assert password["label"] == {"zh": "密码", "en": "Password"}
    assert [t["trigger"] for t in body["ui"]["triggers"]] == ["submit"]


async def test_a_flow_is_stepped_to_the_end_and_the_history_verifies(
        aiohttp_client: Any, app: web.Application) -> None:
    client = await aiohttp_client(app)
    iid = (await start(client))["id"]
    status, body = await step(client, iid, "submit", DETAILS)
    assert status == 200, body
    assert body["state"] == "code"
    assert body["event"] == {**body["event"], "seq": 2, "from": "details", "to": "code"}
    status, body = await step(client, iid, "confirm", {"code": "000000"})
    assert status == 200
    assert body["state"] == "code"
    code_field = body["ui"]["fields"][0]
    assert code_field["error"]["error_id"] == "code_wrong"
    status, body = await step(client, iid, "confirm", {"code": "123456"})
    assert body["state"] == "done"
    assert body["status"] == "finished"

    history = await (await client.get(f"/api/flows/{iid}/history")).json()
    assert [e["to"] for e in history["events"]] == ["details", "code", "code", "done"]
    text = json.dumps(history)
    assert "s3cret-Pass" not in text
    assert "123456" not in text
    verify = await (await client.get(f"/api/flows/{iid}/verify")).json()
    assert verify["ok"] is True
    assert verify["state"] == "done"


async def test_fifty_concurrent_submits_apply_exactly_once(aiohttp_client: Any,
                                                           app: web.Application) -> None:
    client = await aiohttp_client(app)
    iid = (await start(client))["id"]

    async def one(i: int) -> tuple[int, dict[str, Any]]:
        headers = {"Idempotency-Key": "same"} if i % 2 else {}
        return await step(client, iid, "submit", DETAILS, headers=headers)

    results = await asyncio.gather(*(one(i) for i in range(50)))
    applied = [b for s, b in results if s == 200 and not b["replayed"]]
    replayed = [b for s, b in results if s == 200 and b["replayed"]]
    refused = [b for s, b in results if s != 200]
    assert len(applied) == 1
    assert all(b["event"]["seq"] == 2 for b in replayed)
    assert {b["error_id"] for b in refused} <= {"version_conflict", "trigger_not_allowed"}
    assert len(applied) + len(replayed) + len(refused) == 50
    history = await (await client.get(f"/api/flows/{iid}/history")).json()
    assert [e["seq"] for e in history["events"]] == [1, 2]


async def test_same_idempotency_key_returns_first_outcome(aiohttp_client: Any,
                                                          app: web.Application) -> None:
    client = await aiohttp_client(app)
    iid = (await start(client))["id"]
    headers = {"Idempotency-Key": "k-1"}
    s1, first = await step(client, iid, "submit", DETAILS, headers=headers)
    s2, again = await step(client, iid, "submit", DETAILS, headers=headers)
    assert (s1, s2) == (200, 200)
    assert first["replayed"] is False
    assert again["replayed"] is True
    assert again["event"] == first["event"]
    s3, other = await step(client, iid, "back", {}, headers=headers)
    assert s3 == 422
    assert other["error_id"] == "idempotency_key_reused"


async def test_idempotent_replay_survives_a_server_restart(
        aiohttp_client: Any, app: web.Application, settings: Any, clock: FrozenClock) -> None:
    from web.app import create_app

    client = await aiohttp_client(app)
    iid = (await start(client))["id"]
    _, first = await step(client, iid, "submit", DETAILS, headers={"Idempotency-Key": "r"})
    device = client.session.cookie_jar.filter_cookies(client.make_url("/"))["device"].value
    await client.close()
    client2 = await aiohttp_client(create_app(settings, clock=clock))
    client2.session.cookie_jar.update_cookies({"device": device})
    status, again = await step(client2, iid, "submit", DETAILS, headers={"Idempotency-Key": "r"})
    assert status == 200
    assert again["replayed"] is True
    assert again["event"] == first["event"]


async def test_if_match_with_an_old_version_is_refused(aiohttp_client: Any,
                                                       app: web.Application) -> None:
    client = await aiohttp_client(app)
    iid = (await start(client))["id"]
    status, body = await step(client, iid, "submit", DETAILS, headers={"If-Match": '"7"'})
    assert status == 412
    assert body["error_id"] == "precondition_failed"
    status, body = await step(client, iid, "submit", DETAILS, headers={"If-Match": '"1"'})
    assert status == 200


async def test_expired_flow_answers_410_with_prefilled_restart(
        aiohttp_client: Any, app: web.Application, clock: FrozenClock) -> None:
    client = await aiohttp_client(app)
    iid = (await start(client))["id"]
    await step(client, iid, "submit", DETAILS)
    clock.advance(timedelta(days=8))
    status, body = await step(client, iid, "confirm", {"code": "123456"})
    assert status == 410
    assert body["error_id"] == "flow_expired"
    assert body["restart"]["href"] == "/api/flows/signup"
    # The agreement is ticked afresh; the password is never carried.
    assert body["restart"]["body"]["prefill"] == {"name": "Ada"}
    resp = await client.post("/api/flows/signup", json=body["restart"]["body"])
    assert resp.status == 201
    fresh = await resp.json()
    assert fresh["ui"]["fields"][0]["value"] == "Ada"
    assert fresh["ui"]["fields"][1]["value"] is None


async def test_every_bad_input_is_a_problem_and_changes_nothing(
        aiohttp_client: Any, app: web.Application) -> None:
    client = await aiohttp_client(app)
    iid = (await start(client))["id"]
    url = f"/api/flows/{iid}/events/submit"
    cases = [
        (await client.post(url, data=b"{not json", headers={"Content-Type": "application/json"}),
         400, "malformed_json"),
        (await client.post(url, json=[1, 2]), 400, "body_not_object"),
        (await client.post(url, data=b"a=b", headers={"Content-Type": "text/plain"}),
         415, "unsupported_media_type"),
        (await client.post(url, json={**DETAILS, "verified": True}), 422, "validation_failed"),
        (await client.post(url, json={"name": "Ada"}), 422, "validation_failed"),
        (await client.post(url, json={**DETAILS, "name": "bad"}), 422, "validation_failed"),
        (await client.post(url, json={**DETAILS, "agree": "yes"}), 422, "validation_failed"),
        (await client.post(url, data=b"x" * (1024 * 1024 + 10),
                           headers={"Content-Type": "application/json"}), 413, "body_too_large"),
        (await client.post(f"/api/flows/{iid}/events/confirm", json={}), 409,
         "trigger_not_allowed"),
        (await client.post("/api/flows/00000000-0000-0000-0000-000000000000/events/submit",
                           json=DETAILS), 404, "instance_not_found"),
        (await client.post("/api/flows/not-a-uuid/events/submit", json=DETAILS), 404,
         "instance_not_found"),
        (await client.post("/api/flows/nope"), 404, "flow_not_found"),
        (await client.get("/api/nothing-here"), 404, "not_found"),
        (await client.post(url, json=DETAILS, headers={"If-Match": "yesterday"}), 400,
         "if_match_invalid"),
    ]
    for resp, status, error_id in cases:
        assert resp.status == status, (error_id, await resp.text())
        assert resp.content_type == "application/problem+json"
        body = await resp.json()
        assert body["error_id"] == error_id
        assert body["message"]["zh"]
        assert body["message"]["en"]
    unknown = await (await client.post(url, json={**DETAILS, "verified": True})).json()
    assert unknown["errors"][0]["field"] == "verified"
    assert unknown["errors"][0]["error_id"] == "unknown_field"
    current = await (await client.get(f"/api/flows/{iid}")).json()
    assert current["version"] == 1
    assert current["state"] == "details"


async def test_health_readiness_and_metrics(aiohttp_client: Any, app: web.Application) -> None:
    client = await aiohttp_client(app)
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"database": "ok", "redis": "ok"}
    iid = (await start(client))["id"]
    await step(client, iid, "submit", DETAILS)
    health = await client.get("/healthz")
    # The service is named; the software and its versions are not.
    assert health.headers["Server"] == "identity-flows"
    missing = await client.get("/api/nothing-here")
    assert missing.headers["Server"] == "identity-flows"
    text = await (await client.get("/metrics")).text()
    assert 'flow_steps_total{flow="signup",outcome="applied",trigger="submit"} 1.0' in text
    assert "flow_step_seconds_bucket" in text
    # The collector's work per generation, and what it no longer looks at: nothing in
    # an application made in a test (only `flowctl serve` freezes its startup heap).
    assert 'python_gc_collections_total{generation="2"}' in text
    assert "\npython_gc_objects_frozen 0.0\n" in text


async def test_request_id_is_echoed_and_put_in_problems(aiohttp_client: Any,
                                                        app: web.Application) -> None:
    client = await aiohttp_client(app)
    resp = await client.post("/api/flows/nope", headers={"X-Request-Id": "abc-123"})
    assert resp.headers["X-Request-Id"] == "abc-123"
    assert (await resp.json())["request_id"] == "abc-123"


async def test_start_with_the_same_idempotency_key_returns_the_same_instance(
        aiohttp_client: Any, app: web.Application) -> None:
    client = await aiohttp_client(app)
    first = await client.post("/api/flows/signup", headers={"Idempotency-Key": "start-1"})
    again = await client.post("/api/flows/signup", headers={"Idempotency-Key": "start-1"})
    assert (first.status, again.status) == (201, 200)
    assert (await first.json())["id"] == (await again.json())["id"]
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_clock_triggers_are_not_offered_to_or_accepted_from_clients(
        aiohttp_client: Any, app: web.Application) -> None:
    client = await aiohttp_client(app)
    iid = (await start(client))["id"]
    _, body = await step(client, iid, "submit", DETAILS)
    assert [t["trigger"] for t in body["ui"]["triggers"]] == ["confirm", "back"]
    assert body["deadline_at"] is not None
    status, refused = await step(client, iid, "expire", {})
    assert status == 409
    assert refused["error_id"] == "trigger_not_allowed"
    assert refused["available"] == ["confirm", "back"]


async def test_hostile_bodies_get_clear_answers_never_a_500(aiohttp_client: Any,
                                                             app: web.Application) -> None:
    client = await aiohttp_client(app)
    iid = (await start(client))["id"]
    url = f"/api/flows/{iid}/events/submit"
    hostile = [
        b'{"name": "\\ud800", "password": "x", "agree": true}',
        b"[" * 100000 + b"]" * 100000,
        b'{"name": ' + b"9" * 5000 + b"}",
        b'{"name": NaN}',
        b'{"name": Infinity}',
        b'{"name": -Infinity}',
        b'{"name": 1e400}',
        b"\xff\xfe{}",
        b'{"name": "Ada"} trailing',
    ]
    for body in hostile:
        resp = await client.post(url, data=body, headers={"Content-Type": "application/json"})
        # Not JSON by RFC 8259, or not representable: refused before any field is looked at.
        assert resp.status == 400, (body[:40], resp.status, await resp.text())
        assert (await resp.json())["error_id"] == "malformed_json"
    flood = await client.post(f"/api/flows/{iid}/events/" + "x" * 300, json={})
    assert flood.status == 409
    # A made-up method is a clear 405, and counted as "other": no series per method.
    odd = await client.request("PROPFIND", f"/api/flows/{iid}")
    assert odd.status == 405
    assert (await odd.json())["error_id"] == "method_not_allowed"
    metrics = await (await client.get("/metrics")).text()
    assert "x" * 300 not in metrics
    assert "PROPFIND" not in metrics
    assert 'method="other"' in metrics
    assert (await (await client.get(f"/api/flows/{iid}")).json())["version"] == 1


async def test_a_malformed_request_is_a_400_and_one_log_line_without_its_bytes(
        aiohttp_client: Any, app: web.Application, caplog: Any) -> None:
    client = await aiohttp_client(app)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Token: secret\x00value\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    assert head.split(b"\r\n")[0].endswith(b" 400 Bad Request")
    # aiohttp would log an ERROR with a traceback quoting the header line.
    assert not [r for r in caplog.records if r.name == "aiohttp.server"]
    assert "secret" not in caplog.text


async def test_starting_too_often_from_one_address_is_a_429_and_stores_nothing(
        aiohttp_client: Any, settings: Any, clock: FrozenClock, tmp_path: Any,
        pool: Any) -> None:
    name = "signup_" + uuid.uuid4().hex[:8]  # counted apart from every other test's
    text = SAMPLE_YAML.replace("  signup:\n    title:", f"""\
  {name}:
    start_limits:
      - name: {name}_starts
        by: [client]
        max: 2
        per: 10m
        error: {{id: too_many_starts, zh: 操作过于频繁, en: Too many starts}}
    title:""")
    flows_file = tmp_path / "limited.yaml"
    flows_file.write_text(text, encoding="utf-8")
    client = await aiohttp_client(create_app(attrs.evolve(settings, flows_file=str(flows_file)),
                                             clock=clock))
    first = await client.post(f"/api/flows/{name}", headers={"Idempotency-Key": "k-" + name})
    assert first.status == 201
    # The same start again is the first one's answer: it does not count.
    for _ in range(3):
        again = await client.post(f"/api/flows/{name}", headers={"Idempotency-Key": "k-" + name})
        assert again.status == 200
        assert (await again.json())["id"] == (await first.json())["id"]
    assert (await client.post(f"/api/flows/{name}")).status == 201
    refused = await client.post(f"/api/flows/{name}")
    assert refused.status == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 600
    body = await refused.json()
    assert (body["error_id"], body["limit"]) == ("too_many_starts", f"{name}_starts")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM flow_instances WHERE flow = $1",
                                   name) == 2


async def test_refused_and_recorded_errors_have_one_shape(aiohttp_client: Any,
                                                          app: web.Application) -> None:
    """422: refused, nothing stored, errors[] in the problem. 200: the step was taken and
    recorded, and its outcome is an error the user must see: the same objects in errors[]
    (also under the field in ui)."""
    client = await aiohttp_client(app)
    iid = (await start(client))["id"]
    status, refused = await step(client, iid, "submit", {**DETAILS, "name": "bad"})
    assert status == 422
    assert refused["errors"] == [{"field": "name", "error_id": "name_bad",
                                  "zh": "名字不可用", "en": "This name cannot be used"}]
    await step(client, iid, "submit", DETAILS)
    status, taken = await step(client, iid, "confirm", {"code": "000000"})
    assert (status, taken["version"]) == (200, 3)
    wrong = {"field": "code", "error_id": "code_wrong", "zh": "验证码错误",
             "en": "The code is wrong"}
    assert taken["errors"] == [wrong]
    assert next(f for f in taken["ui"]["fields"] if f["name"] == "code")["error"] == wrong
    assert set(wrong) == set(refused["errors"][0])
    await step(client, iid, "confirm", {"code": "000000"})
    status, dead = await step(client, iid, "confirm", {"code": "000000"})
    assert dead["state"] == "details"
    # Not about one field: field is null, shown above the form.
    assert dead["errors"] == [{"field": None, "error_id": "code_dead",
                               "zh": "错误次数过多，请重新开始",
                               "en": "Too many wrong codes; start again"}]
    assert dead["ui"]["error"] == dead["errors"][0]
    status, after = await step(client, iid, "submit", DETAILS)
    assert after["errors"] == []


async def test_verify_names_a_live_column_or_timer_changed_in_the_database(
        aiohttp_client: Any, app: web.Application, database_url: str) -> None:
    client = await aiohttp_client(app)
    iid = (await start(client))["id"]
    status, body = await step(client, iid, "submit", DETAILS)
    assert (status, body["state"]) == (200, "code")  # waiting on a 72h timeout
    verify = await (await client.get(f"/api/flows/{iid}/verify")).json()
    assert verify["ok"] is True, verify
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE flow_timers SET due_at = due_at + interval '3 days'"
                           " WHERE instance_id = $1", uuid.UUID(iid))
        verify = await (await client.get(f"/api/flows/{iid}/verify")).json()
        assert verify["ok"] is False
        assert (verify["divergence"]["seq"], verify["divergence"]["what"]) == (2, "timer")
        await conn.execute("UPDATE flow_instances SET expires_at = expires_at"
                           " + interval '3 days' WHERE id = $1", uuid.UUID(iid))
        verify = await (await client.get(f"/api/flows/{iid}/verify")).json()
        assert verify["divergence"]["what"] == "expires_at"
    finally:
        await conn.close()
