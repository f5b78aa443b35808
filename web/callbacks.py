"""Signed provider callbacks: face results and credited micro-deposits.

The signature, timestamp and event id are checked before anything else (401, 409);
then the callback becomes an ordinary step of the flow instance it is about, fired by
the provider's actor, with the event id as its idempotency key.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from engine import EngineError, Runtime, instance_ref
from web.keys import RUNTIME, SERVICES, SETTINGS
from web.problems import HttpProblem, json_response

log = structlog.get_logger("web.callbacks")
callback_routes = web.RouteTableDef()

# provider -> (the callback's reference field, the trigger it fires)
_KINDS: dict[str, tuple[str, str]] = {
    "face": ("session_id", "face_result"),
    "payment": ("deposit_id", "deposit_credited"),
}


async def _input(runtime: Runtime, instance_id: str, trigger: str,
                 body: dict[str, Any]) -> dict[str, Any]:
    """What the provider sent that the trigger takes in the instance's version.

    The trigger's fields in flows.yaml decide: the session or deposit id among them, a
    flow tells a late callback of an earlier session or deposit apart; a version from
    before it took the id gets the callback it expects.
    """
    instance, _ = await runtime.store.load(instance_id)
    flow = (await runtime.compiled(instance.definition_hash)).flow
    return {f.name: body[f.name] for f in flow.fields_for(instance.state, trigger)
            if f.name in body}


@callback_routes.post("/api/callbacks/{provider}")
async def callback(request: web.Request) -> web.Response:
    provider = request.match_info["provider"]
    if provider not in _KINDS:
        raise HttpProblem(404, "callback_unknown", "没有这个回调", "No such callback")
    limit = request.app[SETTINGS].max_body_bytes
    body_bytes = await request.content.read(limit + 1)
    if len(body_bytes) > limit:
        raise HttpProblem(413, "body_too_large", "请求内容过大", "The request body is too large")
    services = request.app[SERVICES]
    verifier = services.providers.callbacks
    body = await verifier.verify_json(request.headers, body_bytes)
    event_id = str(body.get("event_id"))
    ref_field, trigger = _KINDS[provider]
    ref = body.get(ref_field)
    try:
        instance_id = await services.accounts.instance_for(provider, str(ref)) \
            if isinstance(ref, str) else None
        if instance_id is None:
            # Either unknown, or the step that opened it has not committed yet (a fast
            # provider): answer "later", and let the same event be delivered again.
            await verifier.forget(event_id)
            raise HttpProblem(503, "callback_not_ready", "回调暂时无法处理，请稍后重试",
                              f"No flow is waiting for this {ref_field} yet; retry later",
                              field=ref_field)
        runtime = request.app[RUNTIME]
        outcome = await runtime.advance(
            instance_id, trigger, await _input(runtime, instance_id, trigger, body),
            idempotency_key=f"{provider}:{event_id}", actor=f"provider:{provider}")
    except EngineError:
        raise  # a clear refusal (flow finished, bad input): the provider need not resend
    except Exception:
        # Our fault: let the provider deliver the same event again later.
        await verifier.forget(event_id)
        raise
    log.info("callback_applied", provider=provider, instance=instance_ref(instance_id),
             to=outcome.instance.state)
    return json_response({"ok": True, "state": outcome.instance.state,
                              "replayed": outcome.replayed})
