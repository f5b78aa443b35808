"""The OpenID Connect provider: Authlib's server classes over state read beforehand.

Authlib's server side is synchronous: it calls ``query_client``,
``query_authorization_code``, ``save_token``... and expects answers at once. Every
answer that needs PostgreSQL or Redis is read *before* Authlib runs, into an
``Exchange`` (the system's secret hashes, the code's record, the account behind it, the
signing key); what Authlib decides to store is collected in the ``Exchange`` and written
*after* it returns, and only if the decision was a success. Nothing inside Authlib waits
on I/O, and nothing Authlib produced is valid before it is stored: a code or an access
token unknown to Redis opens nothing.

Records in Redis (through the Ephemeral port, so under the server's prefix):

- ``oidc:request:<id>``: an authorization request waiting for its person to sign in,
  bound to the browser's device; single use.
- ``oidc:code:<sha256(code)>``: what the code was issued for; valid for ``CODE_LIFETIME``
  by the platform's clock, kept as long as tokens from it can live, so that a second use
  is recognised. ``oidc:code_used:<sha256(code)>`` marks the one use.
- ``oidc:grant:<id>``: the tokens issued from one code live only while it exists; a
  second use of the code deletes it.
- ``oidc:token:<sha256(access token)>``: who the token is about, its session, its scope.
  It is good only while its session is (logging out ends it).
- ``oidc:refresh:<sha256(refresh token)>``: for systems configured with
  ``refresh_tokens: true``, the refresh token's grant (its *family*: every refresh token
  rotated from one code), session and scope; ``oidc:refresh_used:<sha256>`` marks its
  one use. A refresh token used a second time deletes ``oidc:grant:<id>``, which ends
  the whole family and its access tokens; a refresh token lives no longer than its
  session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import attrs
import orjson
import structlog
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Request,
)
from authlib.oauth2.rfc6749 import grants as oauth2_grants
from authlib.oauth2.rfc6749.requests import OAuth2Payload
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import grants as oidc_grants
from authlib.oidc.core.models import AuthorizationCodeMixin
from joserfc.jwk import RSAKey

from flows.sessions import strings
from web.oidc.systems import SENSITIVE_SCOPES, System, Systems

log = structlog.get_logger("web.oidc")

CODE_LIFETIME = timedelta(seconds=60)
# Access tokens and ID tokens alike.
TOKEN_LIFETIME = timedelta(minutes=10)
# Long enough to sign in with an SMS code, short enough not to pile up.
REQUEST_LIFETIME = timedelta(minutes=15)
# A code's record outlives the code by the lifetime of the tokens issued from it: a
# second use within that time still finds the grant to revoke.
_CODE_RECORD_TTL = CODE_LIFETIME + TOKEN_LIFETIME + timedelta(seconds=30)
AUTH_METHODS = ("client_secret_basic", "client_secret_post")


def digest(token: str) -> str:
    """How a code or token is named in Redis: its SHA-256, never the value itself."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


# -- who a token is about -----------------------------------------------------------------

@attrs.frozen
class Person:
    """The signed-in account as business systems see it, read before Authlib runs."""

    account_id: str
    kind: str
    name: str
    amr: tuple[str, ...]
    auth_time: int
    session: str  # the session's ref (flows.sessions.ref): tokens live only while it does
    agent_id: str | None = None
    agent_name: str | None = None
    organisation: Mapping[str, Any] | None = None

    def get_user_id(self) -> str:
        return self.account_id


@attrs.frozen
class Released:
    """Personal data a system may receive through a scope: opened only for userinfo."""

    id_number: str | None = attrs.field(default=None, repr=False)
    phone: str | None = attrs.field(default=None, repr=False)


Subject = Callable[[System, str], str]


def claims_for(person: Person, system: System, scope: str, subject: Subject) -> dict[str, Any]:
    """The claims a system gets about a person for a scope, personal data excepted.

    Shared by the ID token and userinfo, so the two never disagree.
    """
    scopes = set(scope.split())
    claims: dict[str, Any] = {"sub": subject(system, person.account_id), "kind": person.kind,
                              "amr": list(person.amr), "auth_time": person.auth_time}
    if "profile" in scopes:
        claims["name"] = person.name
    if person.organisation is not None:
        claims["org"] = dict(person.organisation)
        if person.agent_id is not None:
            # RFC 8693's act: who acts for the organisation, by a subject of their own.
            claims["act"] = {"sub": subject(system, f"agent:{person.agent_id}"),
                             "name": person.agent_name}
    return claims


def sensitive_claims(person: Person, released: Released, scope: str) -> dict[str, Any]:
    """The personal data a scope releases: only ever through userinfo, and audited."""
    scopes = set(scope.split()) & SENSITIVE_SCOPES
    claims: dict[str, Any] = {}
    if "id_number" in scopes and released.id_number and person.organisation is None:
        claims["id_number"] = released.id_number
    if "phone" in scopes and released.phone:
        if person.organisation is None:
            claims["phone_number"] = released.phone
            claims["phone_number_verified"] = True
        else:
            claims["act_phone_number"] = released.phone
    return claims


# -- what Authlib reads and what it leaves to store -----------------------------------------

@attrs.frozen
class CodeRecord(AuthorizationCodeMixin):  # type: ignore[misc]
    """An authorization code's record, as stored in Redis."""

    system: str
    redirect_uri: str
    scope: str
    nonce: str
    challenge: str
    challenge_method: str
    account_id: str
    kind: str
    agent_id: str | None
    session: str
    amr: tuple[str, ...] = attrs.field(converter=strings)
    auth_time: int
    expires_at: float
    grant: str
    # The session's entry into this system (storage.oidc): the ID token's ``sid``, which
    # its back-channel logout token names.
    sid: str | None = None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_amr(self) -> list[str]:
        return list(self.amr)

    def dumps(self) -> bytes:
        return orjson.dumps(attrs.asdict(self))

    @classmethod
    def loads(cls, raw: bytes) -> CodeRecord:
        return cls(**orjson.loads(raw))


@attrs.frozen
class RefreshRecord:
    """A refresh token's record, as stored in Redis."""

    grant: str  # the family: every refresh token rotated from one code
    system: str
    account_id: str
    session: str
    scope: str
    expires_at: float

    def get_scope(self) -> str:
        return self.scope

    def check_client(self, client: Client) -> bool:
        return bool(self.system == client.get_client_id())

    def dumps(self) -> bytes:
        return orjson.dumps(attrs.asdict(self))

    @classmethod
    def loads(cls, raw: bytes) -> RefreshRecord:
        return cls(**orjson.loads(raw))


@attrs.define
class Exchange:
    """One request's view of the world for Authlib, and what Authlib decided."""

    systems: Systems
    issuer: str
    now: datetime
    subject: Subject
    secret_digest: Callable[[str], bytes]
    secret_hashes: Sequence[bytes] = ()
    code: CodeRecord | None = None
    person: Person | None = None
    signing_kid: str | None = None
    signing_key: RSAKey | None = None
    refresh: RefreshRecord | None = None
    refresh_used: bool = False  # the refresh token was used before: a replay
    # Filled in by Authlib's calls:
    new_code: tuple[str, CodeRecord] | None = None
    tokens: list[dict[str, Any]] = attrs.field(factory=list)
    replayed: bool = False  # Authlib was shown a used refresh token by an authentic client


class Client(ClientMixin):  # type: ignore[misc]
    """A business system as Authlib sees it."""

    def __init__(self, system: System, exchange: Exchange) -> None:
        self.system = system
        self.exchange = exchange

    def get_client_id(self) -> str:
        return self.system.id

    def get_default_redirect_uri(self) -> None:
        return None  # every request names its redirect_uri, which must be registered

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """The scope asked for, if the system may have all of it (openid included)."""
        asked = (scope or "").split()
        if "openid" not in asked or not set(asked) <= set(self.system.scopes):
            return None
        return " ".join(dict.fromkeys(asked))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.system.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        given = self.exchange.secret_digest(client_secret)
        # Every hash is compared, whichever matches: the time says nothing.
        found = False
        for known in self.exchange.secret_hashes:
            found |= hmac.compare_digest(given, known)
        return found

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.system.confidential:
            return method in AUTH_METHODS
        return method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        # Asked by Authlib at the code exchange too: whether to include a refresh token.
        return grant_type == "authorization_code" or (
            grant_type == "refresh_token" and self.system.refresh_tokens)


class StrictCodeChallenge(CodeChallenge):  # type: ignore[misc]
    """PKCE with S256, for every client: Authlib's defaults allow no PKCE and ``plain``."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 - Authlib's own attribute
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge with "
                                      "code_challenge_method=S256", redirect_uri=redirect_uri)
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256 (plain is refused)",
                                      redirect_uri=redirect_uri)
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'")
        super().validate_code_verifier(grant, result)

    def get_authorization_code_challenge(self, authorization_code: CodeRecord) -> str:
        return authorization_code.challenge

    def get_authorization_code_challenge_method(self, authorization_code: CodeRecord) -> str:
        return authorization_code.challenge_method


class CodeGrant(oauth2_grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [*AUTH_METHODS, "none"]  # noqa: RUF012 - Authlib's

    @property
    def exchange(self) -> Exchange:
        exchange: Exchange = self.server.exchange
        return exchange

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        person: Person = request.user
        data = request.payload.data
        ex = self.exchange
        ex.new_code = (code, CodeRecord(
            system=request.client.get_client_id(), redirect_uri=data["redirect_uri"],
            scope=request.scope, nonce=data["nonce"], challenge=data["code_challenge"],
            challenge_method=data["code_challenge_method"], account_id=person.account_id,
            kind=person.kind, agent_id=person.agent_id, session=person.session,
            amr=person.amr, auth_time=person.auth_time,
            expires_at=(ex.now + CODE_LIFETIME).timestamp(),
            grant=secrets.token_urlsafe(16)))

    def query_authorization_code(self, code: str, client: Client) -> CodeRecord | None:
        record = self.exchange.code
        if record is None or record.system != client.get_client_id() or \
                record.expires_at <= self.exchange.now.timestamp():
            return None
        return record

    def delete_authorization_code(self, authorization_code: CodeRecord) -> None:
        """Nothing to do here: the code is marked used after Authlib returns, atomically,
        before any token from it is stored (``Provider.exchange_code``)."""

    def authenticate_user(self, authorization_code: CodeRecord) -> Person | None:
        person = self.exchange.person
        if person is None or person.account_id != authorization_code.account_id:
            return None
        return person


class RefreshGrant(oauth2_grants.RefreshTokenGrant):  # type: ignore[misc]
    """Refresh tokens for the systems configured to get them, rotated at every use."""

    TOKEN_ENDPOINT_AUTH_METHODS = [*AUTH_METHODS, "none"]  # noqa: RUF012 - Authlib's
    INCLUDE_NEW_REFRESH_TOKEN = True

    @property
    def exchange(self) -> Exchange:
        exchange: Exchange = self.server.exchange
        return exchange

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshRecord | None:
        # Called once the client is authenticated: only then does a replay count.
        ex = self.exchange
        if ex.refresh is None or ex.refresh.expires_at <= ex.now.timestamp():
            return None
        if ex.refresh_used:
            ex.replayed = True
            return None
        return ex.refresh

    def authenticate_user(self, refresh_token: RefreshRecord) -> Person | None:
        person = self.exchange.person
        if person is None or person.account_id != refresh_token.account_id:
            return None
        return person

    def revoke_old_credential(self, refresh_token: RefreshRecord) -> None:
        """Nothing to do here: the token is marked used after Authlib returns,
        atomically, before the new tokens are stored (the token endpoint)."""


class OpenIdCode(oidc_grants.OpenIDCode):  # type: ignore[misc]
    def __init__(self, server: Server) -> None:
        super().__init__(require_nonce=True)
        self.server = server

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        # The nonce binds the ID token to the relying party's own session; the relying
        # party checks it. Codes are single use, so one nonce yields one ID token here.
        return False

    def resolve_client_private_key(self, client: Client) -> RSAKey:
        key = self.server.exchange.signing_key
        if key is None:
            raise RuntimeError("no signing key")  # checked before Authlib runs
        return key

    def get_client_algorithm(self, client: Client) -> str:
        return "RS256"

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": "RS256", "kid": str(self.server.exchange.signing_kid), "typ": "JWT"}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        ex = self.server.exchange
        return {"iss": ex.issuer, "aud": [client.get_client_id()],
                "iat": _epoch(ex.now), "exp": _epoch(ex.now + TOKEN_LIFETIME)}

    def generate_user_info(self, user: Person, scope: str) -> dict[str, Any]:
        ex = self.server.exchange
        request = self.server.current_request
        assert request is not None
        system = ex.systems.get(request.client.get_client_id())
        assert system is not None
        claims = claims_for(user, system, scope, ex.subject)
        if ex.code is not None and ex.code.sid:
            claims["sid"] = ex.code.sid
        return claims


class Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._datalist: dict[str, list[str]] = {}
        for key, value in pairs:
            self._datalist.setdefault(key, []).append(value)
        self._data = {key: values[0] for key, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> dict[str, list[str]]:
        return self._datalist


class Request(OAuth2Request):  # type: ignore[misc]
    """An HTTP request, read in full before Authlib sees it."""

    def __init__(self, method: str, uri: str, headers: Mapping[str, str],
                 query: Sequence[tuple[str, str]], form: Sequence[tuple[str, str]]) -> None:
        super().__init__(method, uri, headers=headers)
        self._args = dict(query)
        self._form = dict(form)
        self.payload = Payload(form if method == "POST" else query)

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


Answer = tuple[int, Any, list[tuple[str, str]]]


class Server(AuthorizationServer):  # type: ignore[misc]
    """Authlib's authorization server for one request, over that request's Exchange."""

    def __init__(self, exchange: Exchange) -> None:
        super().__init__(scopes_supported=None)
        self.exchange = exchange
        self.current_request: Request | None = None
        self.register_grant(CodeGrant, [StrictCodeChallenge(required=True), OpenIdCode(self)])
        self.register_grant(RefreshGrant)
        self.register_token_generator("default", self._bearer)

    def _bearer(self, grant_type: str, client: Client, user: Person | None = None,
                scope: str | None = None, expires_in: int | None = None,
                include_refresh_token: bool = True) -> dict[str, Any]:
        token = {"token_type": "Bearer", "access_token": secrets.token_urlsafe(32),
                 "expires_in": int(TOKEN_LIFETIME.total_seconds()), "scope": scope or ""}
        if include_refresh_token and client.check_grant_type("refresh_token"):
            token["refresh_token"] = secrets.token_urlsafe(32)
        return token

    def query_client(self, client_id: str) -> Client | None:
        system = self.exchange.systems.get(str(client_id))
        return Client(system, self.exchange) if system is not None else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self.exchange.tokens.append(dict(token))

    def create_oauth2_request(self, request: Request) -> Request:
        self.current_request = request
        return request

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Answer:
        return status, body, list(headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None


def redirect_with(redirect_uri: str, params: Mapping[str, str]) -> str:
    """A redirect URI with parameters added to its query."""
    joiner = "&" if "?" in redirect_uri else "?"
    return redirect_uri + joiner + urlencode(list(params.items()))


__all__ = ["CODE_LIFETIME", "REQUEST_LIFETIME", "TOKEN_LIFETIME", "Answer", "Client",
           "CodeRecord", "Exchange", "InvalidScopeError", "Person", "RefreshRecord", "Released",
           "Request",
           "Server", "claims_for", "digest", "redirect_with", "sensitive_claims"]
