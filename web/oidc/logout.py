"""Signing out of the business systems: back-channel logout tokens, RP-initiated logout.

**Back-channel** (OpenID Connect Back-Channel Logout 1.0): every time a code is issued,
the session's entry into that system is recorded with a ``sid`` of its own
(``storage.oidc``), which the system's ID tokens carry. When sessions end
(``flows.sessions.Sessions.listeners``: sign-out, every session of an account ended
after a password reset, the other sessions ended after a password or phone change),
their entries are closed and, in the same transaction, an outbox message is queued for
each system with a ``backchannel_logout_uri``. The outbox dispatcher (engine/workers.py)
posts the logout token, retries with backoff while the system is down, and keeps the
message as a dead letter after its last attempt. The token is made and signed when it
is sent, with the key signing then, so a retry hours later still verifies against the
JWKS; its ``jti`` stays the same across retries.

**RP-initiated** (OpenID Connect RP-Initiated Logout 1.0): ``GET`` or ``POST /logout``
with ``id_token_hint`` (signature checked against our keys; an expired one is fine),
``client_id``, a registered ``post_logout_redirect_uri`` (exact match; anything else gets
an error page and no redirect) and ``state``. A hint whose ``sid`` names the browser's
own session signs out at once; without one (a GET anyone's page can make) the person
confirms on a small page whose form carries a one-time id bound to the session.
"""

from __future__ import annotations

import asyncio
import html
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web
from joserfc import jwt
from joserfc.errors import JoseError

from engine import Clock, OutboxMessage
from flows.sessions import Ended
from web.keys import CLOCK, SERVICES
from web.oidc.provider import redirect_with
from web.oidc.state import OIDC, Provider
from web.oidc.systems import System
from web.problems import HttpProblem
from web.sessions import clear_session_cookie, session_of, session_ref_of, session_token

log = structlog.get_logger("web.oidc")

TOPIC = "oidc_backchannel_logout"
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# The spec recommends at most two minutes: the token says "now", not "some day".
LOGOUT_TOKEN_LIFETIME = timedelta(minutes=2)
# A system that takes longer to answer is down for this attempt; the outbox tries again.
DELIVERY_TIMEOUT = 10.0
CONFIRM_LIFETIME = timedelta(minutes=10)
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

logout_routes = web.RouteTableDef()


# -- back-channel ---------------------------------------------------------------------------

def listener(provider: Provider, clock: Clock,
             wake: Callable[[], None]) -> Callable[[Ended], Awaitable[None]]:
    """What ``Sessions`` calls when sessions end: queue a logout token for each system
    the sessions entered that asks for them, and wake the outbox."""

    async def ended(what: Ended) -> None:
        notify = {s.id for s in provider.systems if s.backchannel_logout_uri}
        entries = await provider.store.end_sessions(
            now=clock.now(), topic=TOPIC, notify=notify, session_ref=what.session,
            account_id=what.account_id, agent_id=what.agent_id, kept=what.kept)
        queued = sorted({e.system_id for e in entries if e.system_id in notify})
        if queued:
            log.info("oidc_backchannel_logout_queued", reason=what.reason, systems=queued)
            wake()

    return ended


# How often a server looks for sessions that timed out, and how long ended entries are
# kept (a system's sid can still be looked up meanwhile).
SWEEP_EVERY = 60.0
KEEP_ENDED = timedelta(days=1)


async def sweep(provider: Provider, clock: Clock, wake: Callable[[], None]) -> int:
    """One round: sessions that timed out (their Redis keys expired, nobody signed out)
    leave the systems they entered, which are told like any other; entries ended more
    than ``KEEP_ENDED`` ago are forgotten. Return how many entries it ended."""
    notify = {s.id for s in provider.systems if s.backchannel_logout_uri}
    now = clock.now()
    entries = await provider.store.expire_sessions(now=now, topic=TOPIC, notify=notify)
    queued = sorted({e.system_id for e in entries if e.system_id in notify})
    if queued:
        log.info("oidc_backchannel_logout_queued", reason="timed_out", systems=queued)
        wake()
    await provider.store.prune_entries(now - KEEP_ENDED)
    return len(entries)


async def sweeper(provider: Provider, clock: Clock, wake: Callable[[], None],
                  every: float = SWEEP_EVERY) -> None:
    """Sweep now and then, for as long as the server runs; an outage skips a round."""
    while True:
        try:
            await sweep(provider, clock, wake)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a database outage: one short line (web/logs.py)
            log.warning("oidc_session_sweep_failed", exc_info=exc)
        await asyncio.sleep(every)


def logout_token(provider: Provider, payload: dict[str, Any], now: datetime, kid: str,
                 key: Any) -> str:
    """A logout token (Back-Channel Logout 1.0, section 2.4): no nonce, an ``events``
    member, ``typ`` ``logout+jwt``."""
    claims = {"iss": provider.issuer, "aud": payload["system"], "iat": int(now.timestamp()),
              "exp": int((now + LOGOUT_TOKEN_LIFETIME).timestamp()), "jti": payload["jti"],
              "sub": payload["sub"], "sid": payload["sid"],
              "events": {BACKCHANNEL_EVENT: {}}}
    return jwt.encode({"alg": "RS256", "kid": kid, "typ": "logout+jwt"}, claims, key)


def sender(provider: Provider, clock: Clock,
           http: aiohttp.ClientSession) -> Callable[[OutboxMessage], Awaitable[None]]:
    """The outbox sender of topic ``oidc_backchannel_logout``: post the logout token to
    the system; anything but a 2xx answer is a failure the outbox retries."""

    async def send(message: OutboxMessage) -> None:
        payload = message.payload
        system = provider.systems.get(str(payload.get("system")))
        if system is None or not system.backchannel_logout_uri:
            # systems.yaml no longer asks for it: nobody to tell.
            log.info("oidc_backchannel_logout_dropped", system=payload.get("system"))
            return
        now = clock.now()
        snapshot = await provider.keyring.current(now)
        if snapshot.signing_key is None or snapshot.signing_kid is None:
            raise RuntimeError("no signing key in force: the logout token waits for one")
        token = logout_token(provider, payload, now, snapshot.signing_kid,
                             snapshot.signing_key)
        try:
            async with http.post(system.backchannel_logout_uri,
                                 data={"logout_token": token}, allow_redirects=False,
                                 timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT)) as r:
                status = r.status
        except aiohttp.ClientError as exc:
            raise ConnectionError(f"{system.id}: {type(exc).__name__}") from None
        if not 200 <= status < 300:
            raise ConnectionError(f"{system.id} answered {status}")
        log.info("oidc_backchannel_logout_sent", system=system.id, jti=payload["jti"])

    send.__doc__ = "Post a back-channel logout token to the system (OIDC Back-Channel Logout)."
    return send


# -- RP-initiated logout ----------------------------------------------------------------------

def _invalid(detail: str) -> HttpProblem:
    return HttpProblem(400, "logout_request_invalid", "退出请求无效，无法返回业务系统",
                       "This sign-out request is invalid and cannot be sent back to the "
                       "system", detail)


def _hint_claims(provider: Provider, hint: str, keys: Any) -> dict[str, Any]:
    """The ID token hint's claims, if we signed it (its expiry does not matter here)."""
    try:
        token = jwt.decode(hint, keys, algorithms=["RS256"])
    except (JoseError, ValueError) as exc:
        raise _invalid(f"id_token_hint: {type(exc).__name__}") from None
    claims = dict(token.claims)
    if claims.get("iss") != provider.issuer:
        raise _invalid("id_token_hint was issued by someone else")
    return claims


async def _validated(request: web.Request, params: dict[str, str]) -> dict[str, Any]:
    """Check a logout request; return the system, where to go back and the hint's sid."""
    provider = request.app[OIDC]
    hint = params.get("id_token_hint", "")
    claims: dict[str, Any] = {}
    if hint:
        if len(hint) > 8192:
            raise _invalid("id_token_hint is too long")
        snapshot = await provider.keyring.current(request.app[CLOCK].now())
        claims = _hint_claims(provider, hint, snapshot.key_set())
    audience = claims.get("aud", [])
    audience = [audience] if isinstance(audience, str) else list(audience)
    client_id = params.get("client_id") or (audience[0] if len(audience) == 1 else None)
    if client_id and hint and client_id not in audience:
        raise _invalid("client_id is not the audience of id_token_hint")
    system: System | None = provider.systems.get(client_id) if client_id else None
    if client_id and system is None:
        raise _invalid("unknown client_id")
    redirect = params.get("post_logout_redirect_uri")
    if redirect is not None:
        if system is None:
            raise _invalid("post_logout_redirect_uri needs client_id or id_token_hint")
        if redirect not in system.post_logout_redirect_uris:
            raise _invalid("post_logout_redirect_uri is not registered for this system")
    return {"system": system.id if system else None, "redirect": redirect,
            "state": params.get("state"), "sid": claims.get("sid")}


def _back_to(checked: dict[str, Any]) -> web.Response:
    """Where the person goes once signed out: the system's page, or ours."""
    redirect = checked.get("redirect")
    if not redirect:
        return _page("已退出登录", "You are signed out", "", status=200)
    location = redirect
    if checked.get("state"):
        location = redirect_with(redirect, {"state": checked["state"]})
    return web.Response(status=302, headers={"Location": location, **_NO_STORE})


async def _sign_out(request: web.Request, checked: dict[str, Any]) -> web.Response:
    token = session_token(request)
    if token is not None:
        # Ends the access and refresh tokens with it and queues the logout tokens.
        await request.app[SERVICES].sessions.end(token)
        log.info("oidc_rp_initiated_logout", system=checked.get("system"))
    response = _back_to(checked)
    clear_session_cookie(response)
    return response


@logout_routes.get("/logout")
@logout_routes.post("/logout")
async def end_session(request: web.Request) -> web.StreamResponse:
    """The end_session_endpoint: sign out at a system's request, back to where it asks."""
    s = request.app[SERVICES]
    if request.method == "POST":
        params = {k: str(v) for k, v in (await request.post()).items()}
    else:
        params = dict(request.query)
    session = session_of(request)
    current = session_ref_of(request)
    # Only our page's form confirms: a link cannot (and the id is in no URL).
    confirm = params.get("confirm") if request.method == "POST" else None
    if confirm is not None:
        raw = await s.ephemeral.take(f"oidc:logout:{confirm}") if 0 < len(confirm) <= 64 \
            else None
        if raw is None:
            raise HttpProblem(404, "logout_confirmation_unknown",
                              "退出确认已过期或已使用，请重新退出",
                              "This sign-out confirmation has expired or was used; sign "
                              "out again")
        stored = orjson.loads(raw)
        if stored["session"] != current and current is not None:
            raise HttpProblem(403, "logout_confirmation_other_session",
                              "此退出确认属于另一个登录会话",
                              "This sign-out confirmation belongs to another session")
        return await _sign_out(request, stored)
    checked = await _validated(request, params)
    if session is None or current is None:
        return _back_to(checked)  # nobody to sign out here
    entry = await request.app[OIDC].store.entered(checked["sid"]) if checked["sid"] else None
    if entry is not None and entry.session_ref == current and \
            entry.system_id == checked["system"]:
        return await _sign_out(request, checked)
    # No hint, or one about another session: ask first (a GET anyone's page can make
    # must not sign a person out by itself).
    confirm_id = secrets.token_urlsafe(24)
    await s.ephemeral.put(f"oidc:logout:{confirm_id}", orjson.dumps(
        {**checked, "session": current}), CONFIRM_LIFETIME)
    system = request.app[OIDC].systems.get(checked["system"] or "")
    by = (f"「{system.name['zh']}」请求退出登录。", f"{system.name['en']} asks to sign you out. ") \
        if system else ("", "")
    form = (f'<form method="post" action="/logout"><input type="hidden" name="confirm" '
            f'value="{html.escape(confirm_id)}"><button type="submit">退出登录 Sign out'
            f'</button> <a href="/">取消 Cancel</a></form>')
    return _page("确认退出登录", "Sign out?", f"<p>{html.escape(by[0])}确定退出统一身份认证平台"
                 f"及已进入的全部业务系统吗？</p><p lang=\"en\">{html.escape(by[1])}Sign out "
                 "of the platform and every system you entered?</p>" + form, status=200)


def _page(zh: str, en: str, body: str, *, status: int) -> web.Response:
    text = (f'<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(zh)} · {html.escape(en)}</title></head><body>"
            f"<h1>{html.escape(zh)}</h1><p lang=\"en\">{html.escape(en)}</p>{body}"
            "</body></html>")
    return web.Response(status=status, text=text, content_type="text/html",
                        headers=_NO_STORE)
