"""The HTTP API: start, read, step, history, verify; health, readiness."""

from __future__ import annotations

import base64
import functools
import re
from typing import Any

import structlog
from aiohttp import web

from engine import (
    CompiledFlow,
    Event,
    Instance,
    RateLimited,
    ReplayDivergence,
    StepOutcome,
    ValidationFailed,
    jsonio,
    replay,
)
from engine.model import Error, Limit
from engine.replay import compare_live
from flows.policies import CaptchaPolicy
from web.clients import IPNetwork, client_of, limit_key, parse_networks
from web.keys import POOL, REDIS, RUNTIME, SERVICES, SETTINGS
from web.outages import dependency_of
from web.problems import HttpProblem, json_response, problem_response
from web.sessions import (
    TOKEN_PREFERENCE,
    actor_of,
    clear_session_cookie,
    device_cookie,
    ensure_device,
    identities_of,
    prefers,
    session_ref_of,
    session_token,
    set_session_cookie,
    signed_in,
    starter_of,
    wants_token,
)
from web.views import add_links

routes = web.RouteTableDef()
log = structlog.get_logger("web.routes")

# Prefer: captcha-image. A step's answer that shows a captcha field brings that field's
# new image (``image_data``, a data: URL): the client needs no request of its own for
# it. A sign-in page's first image comes with the start.
CAPTCHA_PREFERENCE = "captcha-image"

_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
_JSON_TYPES = ("application/json", "application/problem+json")


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _KEY.match(key):
        raise HttpProblem(400, "idempotency_key_invalid", "幂等键格式不正确",
                          "Idempotency-Key must be 1-200 visible ASCII characters",
                          field="Idempotency-Key")
    return key


def _if_match(request: web.Request) -> int | None:
    value = request.headers.get("If-Match")
    if value is None or value.strip() == "*":
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 9:
        raise HttpProblem(400, "if_match_invalid", "If-Match 应为流程版本号",
                          "If-Match must be the flow's version, as given in its ETag",
                          field="If-Match")
    return int(text)


async def _json_object(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """Read the body as one JSON object, with a clear refusal for anything else."""
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise HttpProblem(413, "body_too_large", "请求内容过大",
                          f"The request body is larger than {limit} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise HttpProblem(413, "body_too_large", "请求内容过大",
                          f"The request body is larger than {limit} bytes") from None
    if not raw.strip():
        if optional:
            return {}
        raise HttpProblem(400, "body_missing", "缺少请求内容", "A JSON object is expected")
    if request.content_type not in _JSON_TYPES:
        raise HttpProblem(415, "unsupported_media_type", "请使用 application/json",
                          "Send the body as application/json")
    try:
        # Strict: no NaN or Infinity, no invalid UTF-8, no lone surrogate ("\ud800"),
        # which no database or response could encode.
        value = jsonio.loads_body(raw)
    except jsonio.JSONDecodeError as exc:
        raise HttpProblem(400, "malformed_json", "请求内容不是有效的 JSON",
                          "The body is not valid JSON", detail=str(exc)[:200]) from None
    if not isinstance(value, dict):
        raise HttpProblem(400, "body_not_object", "请求内容应为 JSON 对象",
                          "The body must be a JSON object")
    return value


@functools.lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return parse_networks(cidrs)


def client_address(request: web.Request) -> str | None:
    """Who per-client limits count: the peer, or what a trusted proxy says; IPv6 by /64."""
    settings = request.app[SETTINGS]
    header = settings.trusted_proxy_header
    peer = request.remote
    if not header and peer and ":" not in peer:
        return peer  # the common case: an IPv4 peer and no proxy to believe
    values = request.headers.getall(header, []) if header else []
    address = client_of(peer, header, values, _networks(settings.trusted_proxies))
    return limit_key(address)


def _event_summary(ev: Event) -> dict[str, Any]:
    return {"seq": ev.seq, "trigger": ev.trigger, "from": ev.from_state, "to": ev.to_state,
            "at": ev.at}


async def _instance_response(request: web.Request, instance: Instance, *, status: int = 200,
                             outcome: StepOutcome | None = None) -> web.Response:
    runtime = request.app[RUNTIME]
    # A replayed request gets the answer it got then, expiry included.
    replayed = outcome is not None and outcome.replayed
    body = add_links(await runtime.view(instance,
                                        now=instance.updated_at if replayed else None))
    headers = {"ETag": f'"{instance.version}"'}
    if outcome is not None:
        body["event"] = _event_summary(outcome.event)
        body["replayed"] = outcome.replayed
        if outcome.replayed:
            headers["Idempotent-Replayed"] = "true"
    if status == 201:
        headers["Location"] = f"/api/flows/{instance.id}"
    applied = []
    if outcome is not None and not outcome.replayed \
            and prefers(request, CAPTCHA_PREFERENCE) \
            and await inline_captcha(request, instance, body) is not None:
        applied.append(CAPTCHA_PREFERENCE)
    replies = dict(outcome.replies) if outcome is not None else {}
    token = replies.get("session")
    in_body = isinstance(token, str) and wants_token(request)
    if isinstance(token, str):
        # One credential, where the client keeps it: a cookie for a browser (out of
        # reach of scripts), the body only for a client that asked for it.
        if in_body:
            applied.append(TOKEN_PREFERENCE)
        else:
            del replies["session"]
    if applied:
        headers["Preference-Applied"] = ", ".join(applied)
    if replies:
        body["reply"] = replies
    response = json_response(body, status=status, headers=headers)
    if isinstance(token, str) and not in_body:
        set_session_cookie(request, response, token)
    if replies.get("end_session"):
        clear_session_cookie(response)
    return response


@routes.get("/api/flows")
async def list_flows(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    flows = [{"name": f.name, "version": f.version, "access": f.access,
              "title": f.title.as_dict() if f.title else None,
              "initial": f.initial, "expires_in": int(f.expires_in.total_seconds()),
              "offered_to": list(f.offered_to)}
             for f in runtime.flows.flows.values()]
    # A client that reads the list first has its device before it starts anything, so
    # a start it must send again (its answer lost) is the same sender's, and replays.
    ensure_device(request)
    response = json_response({"flows": flows})
    device_cookie(request, response)
    return response


@routes.post("/api/flows/{name}")
async def start_flow(request: web.Request) -> web.Response:
    key = _idempotency_key(request)
    body = await _json_object(request, optional=True)
    unknown = sorted(set(body) - {"prefill"})
    if unknown:
        raise HttpProblem(422, "unknown_member", "请求中有不接受的字段",
                          f"Unknown member(s): {', '.join(unknown)}", field=unknown[0])
    prefill = body.get("prefill") or {}
    if not isinstance(prefill, dict):
        raise HttpProblem(422, "prefill_not_object", "prefill 应为对象",
                          "prefill must be an object of field values", field="prefill")
    runtime = request.app[RUNTIME]
    flow = runtime.current(request.match_info["name"])
    # A flow open to anyone is the device's: it needs no session (nor Redis to read one).
    session = session_ref_of(request) if flow.access != "anyone" else None
    outcome = await runtime.start(flow.name, prefill, idempotency_key=key,
                                  actor=starter_of(request, flow.access),
                                  client=client_address(request), session=session)
    response = await _instance_response(request, outcome.instance,
                                        status=200 if outcome.replayed else 201,
                                        outcome=outcome)
    device_cookie(request, response)
    return response


async def _readable(request: web.Request) -> Instance:
    """The instance, if whoever asks may see it (its owner, or an administrator)."""
    runtime = request.app[RUNTIME]
    instance = await runtime.get(request.match_info["id"])
    if not actor_of(request).startswith("admin:"):
        mine = identities_of(request)
        runtime.check_owner(instance, mine[0], mine[1:])
    return instance


@routes.get("/api/flows/{id}")
async def get_flow(request: web.Request) -> web.Response:
    return await _instance_response(request, await _readable(request))


_CAPTCHA_ERROR = Error("captcha_images_limit", "获取验证码图片过于频繁，请稍后再试",
                       "Too many captcha images were fetched; try again later")


@functools.lru_cache(maxsize=16)
def _captcha_limits(policy: CaptchaPolicy) -> tuple[Limit, ...]:
    return (Limit("captcha_images_instance", ("instance",), policy.per_instance, policy.window,
                  _CAPTCHA_ERROR),
            Limit("captcha_images_client", ("client",), policy.per_client, policy.window,
                  _CAPTCHA_ERROR))


async def _new_captcha(request: web.Request, instance: Instance) -> bytes:
    """A new captcha image for the instance (a JPEG), counted against the flow's limits
    of images (RateLimited past them); the previous one stops working."""
    runtime = request.app[RUNTIME]
    policy = CaptchaPolicy.from_mapping(
        (await runtime.compiled(instance.definition_hash)).flow.policies.get("captcha"))
    await runtime.hit_limits(_captcha_limits(policy), {"instance": instance.id,
                                                       "client": client_address(request)}, {})
    return await request.app[SERVICES].captchas.new(instance.id)


def captcha_field(body: dict[str, Any]) -> dict[str, Any] | None:
    """The captcha field of an answer's description, if its step shows one."""
    return next((f for f in body.get("ui", {}).get("fields", ())
                 if f.get("widget") == "captcha"), None)


async def inline_captcha(request: web.Request, instance: Instance,
                         body: dict[str, Any]) -> dict[str, Any] | None:
    """Put a new image in the captcha field of the answer's description, if it shows
    one: ``image_data``, a data: URL; return that field. None where there is none (a
    finished instance has none to draw), or no image now: past the limits of images, or
    with Redis down. The step is taken all the same; the field's ``image`` address then
    says why (429, 503)."""
    field = captcha_field(body)
    if field is None or instance.status != "active":
        return None
    try:
        image = await _new_captcha(request, instance)
    except RateLimited:
        return None
    except Exception as exc:
        down = dependency_of(exc)
        if down is None:
            raise
        log.warning("inline_captcha_unavailable", dependency=down)
        return None
    field["image_data"] = "data:image/jpeg;base64," + base64.b64encode(image).decode("ascii")
    return field


@routes.get("/api/flows/{id}/captcha")
async def captcha(request: web.Request) -> web.Response:
    """A new captcha image for this flow instance; the previous one stops working."""
    instance = await _readable(request)
    if instance.status != "active":
        raise HttpProblem(409, "flow_finished", "流程已结束", "The flow has already finished")
    image = await _new_captcha(request, instance)
    return web.Response(body=image, content_type="image/jpeg",
                        headers={"Cache-Control": "no-store"})


@routes.get("/api/session")
async def whoami(request: web.Request) -> web.Response:
    session = signed_in(request)
    return json_response({"account_id": session.account_id, "kind": session.kind,
                              "display_name": session.display_name,
                              "agent_id": session.agent_id,
                              "must_change_password": session.must_change_password})


@routes.post("/api/session/logout")
async def logout(request: web.Request) -> web.Response:
    token = session_token(request)
    if token:
        await request.app[SERVICES].sessions.end(token)
    response = json_response({"ok": True})
    clear_session_cookie(response)
    return response


@routes.post("/api/flows/{id}/events/{trigger}")
async def submit(request: web.Request) -> web.Response:
    mine = identities_of(request)
    key = _idempotency_key(request)
    expected = _if_match(request)
    body = await _json_object(request, optional=True)
    try:
        outcome = await request.app[RUNTIME].advance(
            request.match_info["id"], request.match_info["trigger"], body,
            idempotency_key=key, expected_version=expected, client=client_address(request),
            actor=mine[0], also=mine[1:], session=session_ref_of(request))
    except ValidationFailed as refused:
        # A refused sign-in used its captcha up: a client that prefers the image in the
        # answer gets the next one in the problem, as it got the first in the start's.
        image = await _refusal_captcha(request) \
            if prefers(request, CAPTCHA_PREFERENCE) else None
        if image is None:
            raise
        return problem_response({**refused.problem(), "captcha": image}, request,
                                headers={"Preference-Applied": CAPTCHA_PREFERENCE})
    return await _instance_response(request, outcome.instance, outcome=outcome)


async def _refusal_captcha(request: web.Request) -> dict[str, str] | None:
    """The captcha field's name and a new image for the step just refused, if the
    instance's step shows one and an image may be drawn now (``inline_captcha``)."""
    runtime = request.app[RUNTIME]
    instance = await runtime.get(request.match_info["id"])
    field = await inline_captcha(request, instance, await runtime.view(instance))
    return {"field": field["name"], "image_data": field["image_data"]} if field else None


@routes.get("/api/flows/{id}/history")
async def history(request: web.Request) -> web.Response:
    await _readable(request)
    events = await request.app[RUNTIME].history(request.match_info["id"])
    return json_response({"instance_id": request.match_info["id"],
                              "events": [ev.as_dict() for ev in events]})


@routes.get("/api/flows/{id}/verify")
async def verify(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    # Who may see it (and any due timeout fired), then the row, its events and its
    # timers as of one moment: a step landing between reads would be a false finding.
    instance, events, timers = await runtime.store.snapshot((await _readable(request)).id)
    compiled: CompiledFlow = await runtime.compiled(instance.definition_hash)
    report: dict[str, Any] = {"instance_id": instance.id, "events": len(events),
                              "definition_version": instance.definition_hash}
    try:
        result = replay(compiled, events)
        compare_live(result, instance.state, instance.context, instance.version,
                     instance.last_hash, status=instance.status, owner=instance.owner,
                     expires_at=instance.expires_at, deadline_at=instance.deadline_at,
                     timers=[(t.state, t.trigger, t.due_at) for t in timers],
                     now=runtime.clock.now())
    except ReplayDivergence as exc:
        report.update(ok=False, divergence={"seq": exc.seq, "what": exc.what,
                                            "expected": exc.expected, "found": exc.found})
    else:
        report.update(ok=True, state=result.state, divergence=None)
    return json_response(report)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        async with request.app[POOL].acquire() as conn:
            await conn.fetchval("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - readiness reports, it does not fail
        checks["database"] = f"down: {type(exc).__name__}"
    try:
        await request.app[REDIS].ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"down: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return json_response({"status": "ready" if ready else "not_ready", "checks": checks},
                             status=200 if ready else 503)

