"""Signed provider callbacks: face results and credited micro-deposits.

The signature, timestamp and event id are checked before anything else (401, 409);
then the callback becomes an ordinary step of the flow instance it is about, fired by
the provider's actor, with the event id as its idempotency key.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from engine import EngineError, instance_ref
from web.keys import RUNTIME, SERVICES, SETTINGS
from web.problems import HttpProblem, json_response

log = structlog.get_logger("web.callbacks")
callback_routes = web.RouteTableDef()

# provider -> (the callback's reference field, the trigger it fires, its input)
_KINDS: dict[str, tuple[str, str]] = {
    "face": ("session_id", "face_result"),
    "payment": ("deposit_id", "deposit_credited"),
}


def _input(provider: str, body: dict[str, Any]) -> dict[str, Any]:
    if provider == "face":
        return {"result": body.get("result")}
    # The deposit id too: a flow that sent several deposits tells a late one apart.
    return {"deposit_id": body.get("deposit_id"), "amount_fen": body.get("amount_fen"),
            "status": body.get("status")}


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
        outcome = await request.app[RUNTIME].advance(
            instance_id, trigger, _input(provider, body),
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
