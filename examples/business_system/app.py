"""A business system that signs people in through the platform (OpenID Connect).

What any of the province's systems does to use the platform's single sign-on, built on
Authlib's OAuth 2 client (``authlib.integrations.httpx_client``) and ``joserfc``:

- ``GET /login`` (the ``initiate_login_uri`` the service hall links to): a code request
  with PKCE S256, a nonce and a state bound to this browser by a cookie;
- ``GET /callback``: the code for tokens (client_secret_basic), the ID token checked
  against the platform's JWKS (signature, iss, aud, exp, nonce), then userinfo;
- ``GET /``: who came in: name, kind, organisation, and the agent acting for it;
- ``POST /logout``: sign out here, then at the platform (RP-initiated logout with the
  ID token as hint), which comes back to ``/``;
- ``POST /backchannel-logout``: the platform's logout token (checked like an ID token,
  plus its ``events``) ends the sessions it names, whichever browser holds them.

Sessions live in this process's memory: it is an example, not a template for storage.
"""

from __future__ import annotations

import html
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import attrs
import httpx
from aiohttp import web
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

COOKIE = "example_rp"  # not "session": cookies do not keep hosts' ports apart
LOGIN_COOKIE = "example_rp_login"
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# Discovery and keys are read again after this long (a rotated key is published early).
METADATA_SECONDS = 300.0


@attrs.frozen
class Config:
    issuer: str  # the platform, e.g. http://127.0.0.1:8080
    base_url: str  # this system, e.g. http://127.0.0.1:8090
    client_id: str = "example"
    client_secret: str = attrs.field(default="", repr=False)
    scope: str = "openid profile"
    # What time it is, for token expiry (the tests run the platform on a test clock).
    now: Callable[[], float] = time.time


@attrs.define
class Provider:
    """The platform's discovery document and keys, read over HTTP and kept a while."""

    config: Config
    metadata: dict[str, Any] = attrs.field(factory=dict)
    keys: KeySet | None = None
    read_at: float = 0.0

    async def load(self, *, fresh: bool = False) -> None:
        if not fresh and self.keys is not None and \
                time.monotonic() - self.read_at < METADATA_SECONDS:
            return
        async with httpx.AsyncClient(timeout=10.0) as client:
            found = (await client.get(
                f"{self.config.issuer}/.well-known/openid-configuration")).json()
            if found.get("issuer") != self.config.issuer:
                raise web.HTTPBadGateway(text="the platform names another issuer")
            self.metadata = found
            self.keys = KeySet.import_key_set((await client.get(found["jwks_uri"])).json())
        self.read_at = time.monotonic()

    async def verify(self, token: str, claims: Mapping[str, Any]) -> dict[str, Any]:
        """A JWT the platform signed for us, its claims checked as ``claims`` says."""
        await self.load()
        assert self.keys is not None
        try:
            decoded = jwt.decode(token, self.keys, algorithms=["RS256"])
        except ValueError:  # an unknown kid: a key published since we read them
            await self.load(fresh=True)
            decoded = jwt.decode(token, self.keys, algorithms=["RS256"])
        JWTClaimsRegistry(
            now=int(self.config.now()), iss={"essential": True, "value": self.config.issuer},
            aud={"essential": True, "value": self.config.client_id}, **claims,
        ).validate(decoded.claims)
        return dict(decoded.claims)


@attrs.define
class State:
    config: Config
    provider: Provider
    pending: dict[str, dict[str, str]] = attrs.field(factory=dict)  # by state
    sessions: dict[str, dict[str, Any]] = attrs.field(factory=dict)  # by cookie
    logged_out_sids: set[str] = attrs.field(factory=set)

    def client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            self.config.client_id, self.config.client_secret, scope=self.config.scope,
            redirect_uri=f"{self.config.base_url}/callback", code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic",  # noqa: S106 - a method name
            timeout=10.0)


STATE = web.AppKey("state", State)


def _page(title: str, body: str) -> web.Response:
    return web.Response(text=f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 40rem; margin: 2rem auto">
<h1>示例业务系统 <small lang="en">Example business system</small></h1>
{body}</body></html>""", content_type="text/html")


def _e(value: Any) -> str:
    return html.escape(str(value))


async def home(request: web.Request) -> web.Response:
    state = request.app[STATE]
    session = state.sessions.get(request.cookies.get(COOKIE, ""))
    if session is None:
        return _page("示例业务系统", '<p>尚未登录 <span lang="en">Not signed in</span></p>'
                     '<p><a href="/login">通过统一身份认证平台登录 '
                     '<span lang="en">Sign in through the platform</span></a></p>')
    claims, info = session["claims"], session["userinfo"]
    rows = [("姓名 Name", info.get("name", "")), ("账号类型 Kind", claims.get("kind")),
            ("主体标识 Subject", claims.get("sub")),
            ("认证方式 Signed in with", ", ".join(claims.get("amr", [])))]
    org = claims.get("org")
    if org:
        rows += [("单位 Organisation", org.get("name")),
                 ("统一社会信用代码 Credit code", org.get("credit_code")),
                 ("已认证 Verified", "是 yes" if org.get("verified") else "否 no")]
    act = claims.get("act")
    if act:
        rows += [("经办人 Agent", act.get("name")), ("经办人标识 Agent subject", act.get("sub"))]
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return _page("示例业务系统", f'<p>欢迎 <span lang="en">Welcome</span>, '
                 f'<strong id="name">{_e(info.get("name", ""))}</strong></p>'
                 f"<table>{table}</table>"
                 '<form method="post" action="/logout"><button>退出登录 Sign out</button>'
                 "</form>")


async def login(request: web.Request) -> web.Response:
    """Start signing in at the platform (the hall links here with ``iss``)."""
    state = request.app[STATE]
    iss = request.query.get("iss")
    if iss is not None and iss != state.config.issuer:
        raise web.HTTPBadRequest(text="sign-in started by an unknown issuer")
    await state.provider.load()
    verifier, nonce = generate_token(48), secrets.token_urlsafe(16)
    client = state.client()
    try:
        url, request_state = client.create_authorization_url(
            state.provider.metadata["authorization_endpoint"], code_verifier=verifier,
            nonce=nonce)
    finally:
        await client.aclose()
    state.pending[request_state] = {"verifier": verifier, "nonce": nonce}
    response = web.HTTPFound(url)
    response.set_cookie(LOGIN_COOKIE, request_state, httponly=True, samesite="Lax",
                        max_age=900)
    raise response


async def callback(request: web.Request) -> web.Response:
    """The platform's answer: a code (or an error) for the request this browser made."""
    state = request.app[STATE]
    request_state = request.query.get("state", "")
    if not request_state or request.cookies.get(LOGIN_COOKIE) != request_state:
        raise web.HTTPBadRequest(text="this sign-in was not started in this browser")
    pending = state.pending.pop(request_state, None)
    if pending is None:
        raise web.HTTPBadRequest(text="unknown or used sign-in")
    if "error" in request.query:
        return _page("登录未完成", f"<p>{_e(request.query['error'])}: "
                     f"{_e(request.query.get('error_description', ''))}</p>"
                     '<p><a href="/">返回 Back</a></p>')
    client = state.client()
    try:
        token = await client.fetch_token(
            state.provider.metadata["token_endpoint"],
            authorization_response=f"{state.config.base_url}{request.path_qs}",
            code_verifier=pending["verifier"])
        claims = await state.provider.verify(token["id_token"], {
            "nonce": {"essential": True, "value": pending["nonce"]},
            "exp": {"essential": True}, "sub": {"essential": True}})
        info = (await client.get(state.provider.metadata["userinfo_endpoint"])).json()
    finally:
        await client.aclose()
    if info.get("sub") != claims["sub"]:
        raise web.HTTPBadGateway(text="userinfo is about someone else")
    cookie = secrets.token_urlsafe(32)
    state.sessions[cookie] = {"claims": claims, "userinfo": info,
                              "id_token": token["id_token"], "sid": claims.get("sid")}
    response = web.HTTPFound("/")
    response.set_cookie(COOKIE, cookie, httponly=True, samesite="Lax")
    response.del_cookie(LOGIN_COOKIE)
    raise response


async def logout(request: web.Request) -> web.Response:
    """Sign out here, then at the platform, which sends the browser back to ``/``."""
    state = request.app[STATE]
    session = state.sessions.pop(request.cookies.get(COOKIE, ""), None)
    await state.provider.load()
    location = "/"
    if session is not None:
        location = state.provider.metadata["end_session_endpoint"] + "?" + urlencode({
            "id_token_hint": session["id_token"], "client_id": state.config.client_id,
            "post_logout_redirect_uri": f"{state.config.base_url}/",
            "state": secrets.token_urlsafe(8)})
    response = web.HTTPFound(location)
    response.del_cookie(COOKIE)
    raise response


async def backchannel_logout(request: web.Request) -> web.Response:
    """The platform says a session ended: end ours that came from it."""
    state = request.app[STATE]
    form = await request.post()
    try:
        claims = await state.provider.verify(str(form.get("logout_token", "")), {
            "iat": {"essential": True}, "events": {"essential": True}})
    except Exception:  # noqa: BLE001 - any bad token gets the spec's 400
        return web.json_response({"error": "invalid_request"}, status=400)
    if BACKCHANNEL_EVENT not in claims["events"] or "nonce" in claims or \
            not (claims.get("sid") or claims.get("sub")):
        return web.json_response({"error": "invalid_request"}, status=400)
    ended = [cookie for cookie, s in state.sessions.items()
             if (claims.get("sid") and s["sid"] == claims["sid"]) or
             (not claims.get("sid") and s["claims"]["sub"] == claims["sub"])]
    for cookie in ended:
        del state.sessions[cookie]
    if claims.get("sid"):
        state.logged_out_sids.add(claims["sid"])
    return web.Response(status=200, headers={"Cache-Control": "no-store"})


ICON = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><rect width="64"
height="64" rx="12" fill="#1f6feb"/><text x="32" y="42" font-size="28" text-anchor="middle"
fill="#fff">示</text></svg>"""


async def icon(request: web.Request) -> web.Response:
    return web.Response(text=ICON, content_type="image/svg+xml")


def create_app(config: Config) -> web.Application:
    app = web.Application()
    app[STATE] = State(config, Provider(config))
    app.router.add_get("/", home)
    app.router.add_get("/login", login)
    app.router.add_get("/callback", callback)
    app.router.add_post("/logout", logout)
    app.router.add_post("/backchannel-logout", backchannel_logout)
    app.router.add_get("/icon.svg", icon)
    return app
