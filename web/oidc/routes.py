"""The provider's HTTP endpoints: discovery, JWKS, authorize, token, userinfo; the hall.

The handlers read what Authlib will need (``web.oidc.provider.Exchange``), run Authlib's
synchronous server, then store what it decided. Errors of the OAuth protocol are
answered as the protocol says (a redirect to the relying party, or ``{"error": ...}``
JSON); a request that cannot be sent back to a relying party safely (an unknown system,
an unregistered redirect URI) gets a problem+json page, never a redirect.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import orjson
import structlog
from aiohttp import web
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidGrantError, ResourceProtector, TokenMixin
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from authlib.oauth2.rfc6750 import BearerTokenValidator

from flows.pii import MOBILE, RESIDENT_ID, Vault
from flows.sessions import Session
from flows.support import Services
from web.keys import CLOCK, POOL, SERVICES
from web.oidc.provider import (
    CODE_LIFETIME,
    REQUEST_LIFETIME,
    TOKEN_LIFETIME,
    Answer,
    CodeRecord,
    Exchange,
    Person,
    RefreshRecord,
    Released,
    Request,
    Server,
    claims_for,
    digest,
    redirect_with,
    sensitive_claims,
)
from web.oidc.signing import JWKS_MAX_AGE
from web.oidc.state import OIDC, Provider
from web.oidc.systems import SCOPES, System
from web.problems import HttpProblem, json_response
from web.sessions import device_cookie, ensure_device, session_of, session_ref_of, signed_in

log = structlog.get_logger("web.oidc")

oidc_routes = web.RouteTableDef()

# Where a person without a session is sent to sign in; the web client (issue 11) serves
# it and, once signed in, sends the browser to /authorize/resume?id=<id>.
LOGIN_PATH = "/login"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _provider(request: web.Request) -> Provider:
    return request.app[OIDC]


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


def _now(request: web.Request) -> datetime:
    return request.app[CLOCK].now()


def _exchange(request: web.Request) -> Exchange:
    provider, s = _provider(request), _services(request)
    return Exchange(systems=provider.systems, issuer=provider.issuer, now=_now(request),
                    subject=provider.subject(s.vault),
                    secret_digest=lambda secret: secret_hash(s.vault, secret))


def secret_hash(vault: Vault, secret: str) -> bytes:
    """A client secret's keyed hash: HMAC-SHA256 under the vault's index key.

    Secrets are 256 random bits made by ``flowctl systems secret``, never chosen by a
    person, so a slow hash (Argon2id) would add no strength and cost the token endpoint
    its throughput; the key makes a stolen table of hashes useless on its own. The
    SHA-256 in between keeps the secret's exact spelling (the index normalises case).
    """
    return vault.index("oidc_client_secret",
                       hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest())


def _oauth_request(request: web.Request, form: Any = None) -> Request:
    uri = _provider(request).issuer + request.path_qs
    pairs = list(form.items()) if form is not None else []
    return Request(request.method, uri, request.headers, list(request.query.items()), pairs)


def _json(answer: Answer) -> web.Response:
    status, body, headers = answer
    response = json_response(body, status=status)
    for name, value in headers:
        if name.lower() != "content-type":
            response.headers[name] = value
    response.headers.update(_NO_STORE)
    return response


def _invalid_request_page(error: OAuth2Error) -> HttpProblem:
    return HttpProblem(400, "authorize_request_invalid", "登录请求无效，无法返回业务系统",
                       "This sign-in request is invalid and cannot be sent back to the "
                       "system", f"{error.error}: {error.description or ''}".strip(": "))


def _unknown_request() -> HttpProblem:
    return HttpProblem(404, "authorize_request_unknown",
                       "登录请求不存在或已过期，请从业务系统重新进入",
                       "This sign-in request is unknown or has expired; start again from "
                       "the system")


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, **_NO_STORE})


# -- discovery and keys ---------------------------------------------------------------------

@oidc_routes.get("/.well-known/openid-configuration")
async def discovery(request: web.Request) -> web.Response:
    issuer = _provider(request).issuer
    body = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "end_session_endpoint": f"{issuer}/logout",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public", "pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": list(SCOPES),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "amr",
                             "at_hash", "sid", "kind", "name", "org", "act", "id_number",
                             "phone_number", "phone_number_verified", "act_phone_number"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic",
                                                  "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "prompt_values_supported": ["none", "login"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": False,
    }
    return json_response(body, headers={"Cache-Control": "public, max-age=300"})


@oidc_routes.get("/.well-known/jwks.json")
async def jwks(request: web.Request) -> web.Response:
    snapshot = await _provider(request).keyring.current(_now(request))
    max_age = int(JWKS_MAX_AGE.total_seconds())
    return json_response(snapshot.jwks(), headers={"Cache-Control": f"public, max-age={max_age}"})


# -- authorize ------------------------------------------------------------------------------

async def _person(request: web.Request, session: Session) -> Person | None:
    """The session's account as systems see it; None if it went away."""
    s = _services(request)
    return await person_of(s, session, session_ref_of(request) or "")


async def person_of(s: Services, session: Session, session_ref: str) -> Person | None:
    account = await s.accounts.by_id(session.account_id)
    if account is None:
        return None
    auth_time = int(datetime.fromisoformat(session.created_at).timestamp())
    organisation = None
    agent_name = None
    if account.kind == "organisation":
        org = await s.accounts.organisation(account.id)
        if org is None:
            return None
        organisation = {"name": org.name, "credit_code": org.credit_code,
                        "verified": org.verified}
        agent = next((a for a in await s.accounts.agents(account.id)
                      if a.id == session.agent_id), None)
        agent_name = agent.name if agent is not None else None
    return Person(account_id=account.id, kind=account.kind, name=account.display_name,
                  amr=tuple(session.amr), auth_time=auth_time, session=session_ref,
                  agent_id=session.agent_id if agent_name is not None else None,
                  agent_name=agent_name, organisation=organisation)


async def _authorize(request: web.Request, pairs: list[tuple[str, str]], *,
                     request_id: str | None = None) -> web.StreamResponse:
    """Validate an authorization request; issue a code, or send the person to sign in."""
    s = _services(request)
    exchange = _exchange(request)
    server = Server(exchange)
    oauth = Request("GET", _provider(request).issuer + request.path, request.headers,
                    pairs, [])
    session = session_of(request)
    prompt = set(dict(pairs).get("prompt", "").split())
    # prompt=login: sign in again even with a session; only once, not after the login.
    use_session = session is not None and session.kind != "admin" and \
        not ("login" in prompt and request_id is None)
    person = await _person(request, session) if use_session and session else None
    try:
        grant = server.get_consent_grant(oauth, end_user=person)
    except OAuth2Error as error:
        if not error.redirect_uri:
            raise _invalid_request_page(error) from None
        status, _, headers = server.handle_error_response(oauth, error)
        return _redirect(dict(headers)["Location"])
    client = oauth.client
    system: System = client.system
    if person is None:
        return await _to_login(request, system, pairs)
    if not system.allows(person.kind):
        log.info("oidc_kind_refused", system=system.id, kind=person.kind)
        return _redirect(redirect_with(grant.redirect_uri, {
            "error": "access_denied",
            "error_description": f"{system.id} does not admit {person.kind} accounts",
            **({"state": dict(pairs)["state"]} if "state" in dict(pairs) else {})}))
    status, _, headers = server.create_authorization_response(oauth, grant_user=person,
                                                              grant=grant)
    location = dict(headers).get("Location", "")
    if status != 302 or exchange.new_code is None:
        return _redirect(location) if location else web.Response(status=status)
    code, record = exchange.new_code
    record = attrs.evolve(record, sid=await _enter(request, system, person))
    lasts = _family_ttl(exchange.now, record.expires_at, system,
                        session_ends=person.auth_time + s.sessions.ttl.total_seconds())
    await s.ephemeral.put(f"oidc:grant:{record.grant}", b"1", lasts)
    await s.ephemeral.put(f"oidc:code:{digest(code)}", record.dumps(), lasts)
    log.info("oidc_code_issued", system=system.id, grant=record.grant)
    return _redirect(location)


async def _enter(request: web.Request, system: System, person: Person) -> str:
    """Record that the session enters the system (for back-channel logout); its sid."""
    provider, s = _provider(request), _services(request)
    signed_in = datetime.fromtimestamp(person.auth_time, tz=UTC)
    return await provider.store.enter(
        session_ref=person.session, system_id=system.id, account_id=person.account_id,
        agent_id=person.agent_id, subject=provider.subject(s.vault)(system, person.account_id),
        now=_now(request),
        # A second of slack: auth_time is rounded down to the second.
        expires_at=signed_in + s.sessions.ttl + timedelta(seconds=1))


_CODE_RECORD_TTL = CODE_LIFETIME + TOKEN_LIFETIME + (CODE_LIFETIME / 2)


def _family_ttl(now: datetime, code_expires_at: float, system: System | None, *,
                session_ends: float | None = None) -> timedelta:
    """How long a code's grant (and its record) must be kept: while tokens from it can
    live. For a system with refresh tokens that is as long as the session."""
    base = _CODE_RECORD_TTL
    if system is not None and system.refresh_tokens:
        ends = session_ends if session_ends is not None else code_expires_at
        base = max(base, timedelta(seconds=ends - now.timestamp()) + _CODE_RECORD_TTL)
    return base


async def _to_login(request: web.Request, system: System,
                    pairs: list[tuple[str, str]]) -> web.StreamResponse:
    """Keep the request (bound to this browser's device) and send the person to sign in."""
    s = _services(request)
    request_id = secrets.token_urlsafe(24)
    device = ensure_device(request)
    await s.ephemeral.put(f"oidc:request:{request_id}", orjson.dumps(
        {"pairs": pairs, "device": device, "system": system.id}), REQUEST_LIFETIME)
    response = _redirect(f"{LOGIN_PATH}?authorize={request_id}")
    device_cookie(request, response)
    return response


@oidc_routes.get("/authorize")
async def authorize(request: web.Request) -> web.StreamResponse:
    """The authorization endpoint (code flow, PKCE S256, nonce)."""
    return await _authorize(request, list(request.query.items()))


async def _stored_request(request: web.Request, request_id: str) -> dict[str, Any]:
    """A stored authorization request that this browser made; refused otherwise."""
    s = _services(request)
    raw = await s.ephemeral.get(f"oidc:request:{request_id}") \
        if 0 < len(request_id) <= 64 else None
    if raw is None:
        raise _unknown_request()
    stored: dict[str, Any] = orjson.loads(raw)
    if stored["device"] != ensure_device(request):
        raise HttpProblem(403, "authorize_request_other_device", "此登录请求属于另一个浏览器",
                          "This sign-in request belongs to another browser")
    return stored


async def pending_system(request: web.Request, request_id: str) -> System:
    """The system a stored authorization request (``/login?authorize=<id>``) is for, if
    this browser made it and it is still waiting: what a sign-in page names."""
    stored = await _stored_request(request, request_id)
    system = _provider(request).systems.get(stored["system"])
    if system is None:
        raise _unknown_request()  # the system left systems.yaml since
    return system


@oidc_routes.get("/authorize/resume")
async def resume(request: web.Request) -> web.StreamResponse:
    """Go on with a stored authorization request once its person has signed in.

    Only the browser that made the request can resume it, and only as it was made.
    """
    request_id = request.query.get("id", "")
    s = _services(request)
    key = f"oidc:request:{request_id}"
    stored = await _stored_request(request, request_id)
    if session_of(request) is None:
        return _redirect(f"{LOGIN_PATH}?authorize={request_id}")
    if await s.ephemeral.take(key) is None:
        raise _unknown_request()
    return await _authorize(request, [(k, v) for k, v in stored["pairs"]],
                            request_id=request_id)


# -- token ----------------------------------------------------------------------------------

def _oauth_error(error: OAuth2Error) -> web.Response:
    status, body, headers = error()
    return _json((status, body, headers))


@oidc_routes.post("/token")
async def token(request: web.Request) -> web.Response:
    """The token endpoint: a code (with its PKCE verifier) for an ID and an access token,
    or, for systems that get them, a refresh token for a new pair."""
    provider, s = _provider(request), _services(request)
    form = await request.post()
    exchange = _exchange(request)
    oauth = _oauth_request(request, form)
    server = Server(exchange)
    client_id = _client_id(request, form)
    system = provider.systems.get(client_id) if client_id else None
    if system is not None and system.confidential:
        exchange.secret_hashes = await provider.store.secret_hashes(system.id)
    if form.get("grant_type") == "refresh_token":
        return await _refresh(request, form, exchange, server, oauth)
    code = str(form.get("code") or "")
    if code and len(code) <= 200:
        raw = await s.ephemeral.get(f"oidc:code:{digest(code)}")
        if raw is not None:
            record = CodeRecord.loads(raw)
            if await s.ephemeral.get(f"oidc:code_used:{digest(code)}") is not None:
                return await _replayed(s, record)
            exchange.code = record
            session = await s.sessions.by_ref(record.session)
            if session is not None and session.account_id == record.account_id:
                exchange.person = await person_of(s, session, record.session)
    await _signing_key(provider, exchange)
    answer = server.create_token_response(oauth)
    if answer[0] != 200 or not exchange.tokens or exchange.code is None:
        return _json(answer)
    record = exchange.code
    # The one use of the code, atomically: a concurrent second use loses here.
    if not await s.ephemeral.put(f"oidc:code_used:{digest(code)}", record.grant.encode(),
                                 _family_ttl(exchange.now, record.expires_at, system,
                                             session_ends=_session_ends(s, exchange)),
                                 only_new=True):
        return await _replayed(s, record)
    await _store_tokens(s, exchange, grant=record.grant, system=record.system,
                        account=record.account_id, session=record.session,
                        scope=record.scope)
    log.info("oidc_tokens_issued", system=record.system, grant=record.grant)
    return _json(answer)


def _session_ends(s: Services, exchange: Exchange) -> float:
    """When the session the tokens come from ends at the latest (a timestamp)."""
    signed_in = exchange.person.auth_time if exchange.person else 0
    return signed_in + s.sessions.ttl.total_seconds()


async def _signing_key(provider: Provider, exchange: Exchange) -> None:
    snapshot = await provider.keyring.current(exchange.now)
    if snapshot.signing_key is None:
        raise HttpProblem(503, "oidc_no_signing_key", "暂时无法签发令牌，请稍后再试",
                          "No signing key is in force; tokens cannot be issued now")
    exchange.signing_kid, exchange.signing_key = snapshot.signing_kid, snapshot.signing_key


async def _store_tokens(s: Services, exchange: Exchange, *, grant: str, system: str,
                        account: str, session: str, scope: str) -> None:
    """Store what Authlib issued: access tokens, and refresh tokens for as long as the
    session can live."""
    for issued in exchange.tokens:
        await s.ephemeral.put(f"oidc:token:{digest(issued['access_token'])}", orjson.dumps({
            "grant": grant, "system": system, "account": account,
            "session": session, "scope": issued.get("scope", scope),
            "expires_at": (exchange.now + TOKEN_LIFETIME).timestamp()}), TOKEN_LIFETIME)
        if issued.get("refresh_token"):
            ends = _session_ends(s, exchange)
            left = timedelta(seconds=ends - exchange.now.timestamp())
            if left <= timedelta(0):
                continue
            await s.ephemeral.put(f"oidc:refresh:{digest(issued['refresh_token'])}",
                                  RefreshRecord(grant=grant, system=system, account_id=account,
                                                session=session,
                                                scope=issued.get("scope", scope),
                                                expires_at=ends).dumps(), left)


async def _refresh(request: web.Request, form: Any, exchange: Exchange, server: Server,
                   oauth: Request) -> web.Response:
    """A refresh token for a new access token and a new refresh token (rotation).

    A refresh token used twice is a stolen one, or the copy a thief already used: the
    whole family (every token from the same code) is revoked.
    """
    provider, s = _provider(request), _services(request)
    given = str(form.get("refresh_token") or "")
    key = digest(given)
    if given and len(given) <= 200:
        raw = await s.ephemeral.get(f"oidc:refresh:{key}")
        if raw is not None:
            found = RefreshRecord.loads(raw)
            family_alive = await s.ephemeral.get(f"oidc:grant:{found.grant}") is not None
            session = await s.sessions.by_ref(found.session) if family_alive else None
            # A dead family or session: as good as no refresh token at all.
            if session is not None and session.account_id == found.account_id:
                exchange.refresh = found
                exchange.refresh_used = await s.ephemeral.get(
                    f"oidc:refresh_used:{key}") is not None
                exchange.person = await person_of(s, session, found.session)
    await _signing_key(provider, exchange)
    answer = server.create_token_response(oauth)
    record = exchange.refresh
    if exchange.replayed and record is not None:
        return await _refresh_replayed(s, record)
    if answer[0] != 200 or not exchange.tokens or record is None:
        return _json(answer)
    left = timedelta(seconds=record.expires_at - exchange.now.timestamp())
    if not await s.ephemeral.put(f"oidc:refresh_used:{key}", b"1", left, only_new=True):
        return await _refresh_replayed(s, record)  # a concurrent use won
    await _store_tokens(s, exchange, grant=record.grant, system=record.system,
                        account=record.account_id, session=record.session,
                        scope=record.scope)
    log.info("oidc_tokens_refreshed", system=record.system, grant=record.grant)
    return _json(answer)


async def _refresh_replayed(s: Services, record: RefreshRecord) -> web.Response:
    await s.ephemeral.delete(f"oidc:grant:{record.grant}")
    log.warning("oidc_refresh_token_replayed", system=record.system, grant=record.grant)
    return _oauth_error(InvalidGrantError("The refresh token was already used; every "
                                          "token of its family is revoked"))


async def _replayed(s: Services, record: CodeRecord) -> web.Response:
    """A code used a second time: refuse it and end every token issued from it."""
    await s.ephemeral.delete(f"oidc:grant:{record.grant}")
    log.warning("oidc_code_replayed", system=record.system, grant=record.grant)
    return _oauth_error(InvalidGrantError("The code was already used; every token issued "
                                          "from it is revoked"))


def _client_id(request: web.Request, form: Any) -> str | None:
    basic_id, _ = extract_basic_authorization(request.headers)
    value = basic_id or form.get("client_id")
    return str(value) if value else None


# -- userinfo -------------------------------------------------------------------------------

@attrs.frozen
class _Token(TokenMixin):  # type: ignore[misc]
    record: dict[str, Any]
    alive: bool

    def get_scope(self) -> str:
        return str(self.record.get("scope", ""))

    def is_expired(self) -> bool:
        return not self.alive

    def is_revoked(self) -> bool:
        return not self.alive


class _Bearer(BearerTokenValidator):  # type: ignore[misc]
    def __init__(self, token: _Token | None) -> None:
        super().__init__()
        self.token = token

    def authenticate_token(self, token_string: str) -> _Token | None:
        return self.token


def _bearer_of(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def _token_of(request: web.Request, s: Services) -> tuple[_Token | None, Session | None]:
    given = _bearer_of(request)
    if given is None or len(given) > 200:
        return None, None
    raw = await s.ephemeral.get(f"oidc:token:{digest(given)}")
    if raw is None:
        return None, None
    record = orjson.loads(raw)
    session = await s.sessions.by_ref(record["session"])
    alive = record["expires_at"] > _now(request).timestamp() and \
        await s.ephemeral.get(f"oidc:grant:{record['grant']}") is not None and \
        session is not None and session.account_id == record["account"]
    return _Token(record, alive), session if alive else None


@oidc_routes.get("/userinfo")
@oidc_routes.post("/userinfo")
async def userinfo(request: web.Request) -> web.Response:
    """Claims about the token's person; personal data only through configured scopes."""
    provider, s = _provider(request), _services(request)
    token_found, session = await _token_of(request, s)
    protector = ResourceProtector()
    protector.register_token_validator(_Bearer(token_found))
    try:
        protector.validate_request(["openid"], _oauth_request(request))
    except OAuth2Error as error:
        return _oauth_error(error)
    assert token_found is not None
    assert session is not None
    record = token_found.record
    system = provider.systems.get(record["system"])
    person = await person_of(s, session, record["session"])
    if system is None or person is None:
        return _oauth_error(InvalidGrantError("The system or the account is gone"))
    scope = str(record["scope"])
    claims = claims_for(person, system, scope, provider.subject(s.vault))
    released = await _released(s, person, scope)
    sensitive = sensitive_claims(person, released, scope)
    if sensitive:
        # Recorded before it leaves: no release without its audit entry.
        async with request.app[POOL].acquire() as conn, conn.transaction():
            await s.accounts.audit(
                actor=f"system:{system.id}", action="oidc_personal_data_released",
                target=f"account:{person.account_id}", reason="userinfo",
                details={"system": system.id, "claims": sorted(sensitive),
                         "agent_id": person.agent_id, "grant": record["grant"]},
                now=_now(request))(conn)
        log.info("oidc_personal_data_released", system=system.id, claims=sorted(sensitive))
    response = json_response({**claims, **sensitive})
    response.headers.update(_NO_STORE)
    return response


async def _released(s: Services, person: Person, scope: str) -> Released:
    scopes = set(scope.split())
    if not scopes & {"id_number", "phone"}:
        return Released()
    id_number = phone = None
    if person.organisation is None:
        account = await s.accounts.by_id(person.account_id)
        if account is not None:
            if "id_number" in scopes and account.id_number_sealed:
                id_number = s.vault.open(RESIDENT_ID, account.id_number_sealed)
            if "phone" in scopes and account.phone_sealed:
                phone = s.vault.open(MOBILE, account.phone_sealed)
    elif "phone" in scopes and person.agent_id:
        agent = next((a for a in await s.accounts.agents(person.account_id)
                      if a.id == person.agent_id), None)
        if agent is not None:
            phone = s.vault.open(MOBILE, agent.phone_sealed)
    return Released(id_number=id_number, phone=phone)


# -- the service hall -----------------------------------------------------------------------

@oidc_routes.get("/api/hall")
async def hall(request: web.Request) -> web.Response:
    """The business systems the signed-in account may enter, and where each starts."""
    session = signed_in(request)
    return json_response({"systems": hall_of(_provider(request), session)},
                         headers={"Cache-Control": "no-store"})


def hall_of(provider: Provider, session: Session) -> list[dict[str, Any]]:
    """The systems ``session``'s account may enter: name, icon, where its sign-in starts."""
    return [{"id": system.id, "name": dict(system.name), "icon": system.icon,
             "login_url": redirect_with(system.initiate_login_uri, {"iss": provider.issuer})}
            for system in provider.systems if system.allows(session.kind)]
