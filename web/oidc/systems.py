"""Business systems (``systems.yaml``): the relying parties this provider signs people into.

Read and linted like ``flows.yaml``: every problem at once, as ``file:line:col``. The file
holds no secret, not even a hash: client secrets live in PostgreSQL, hashed
(``flowctl systems secret``), so the file can be reviewed and kept in version control.

Pure: no aiohttp, no database; ``web.oidc`` and ``flowctl`` read it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

from engine import DefinitionError, Diagnostic
from engine.loader import Positions, read_positioned
from web.settings import is_loopback

ACCOUNT_KINDS = ("personal", "organisation", "supervisor")
# What a system may be allowed to ask for. ``id_number`` and ``phone`` release personal
# data: only through a scope the system is configured with, and every release is audited.
SCOPES = {
    "openid": "The account's subject, kind, how and when it signed in; for an organisation "
              "the organisation (name, credit code, verified) and the agent acting for it.",
    "profile": "The display name.",
    "id_number": "The resident ID number (personal and supervisor accounts). Audited.",
    "phone": "The mobile number: the account's, or for an organisation the acting "
             "agent's. Audited.",
}
SENSITIVE_SCOPES = frozenset({"id_number", "phone"})
CLIENT_TYPES = ("confidential", "public")
SUBJECT_TYPES = ("public", "pairwise")
_ID = re.compile(r"^[a-z][a-z0-9_-]{1,62}$")

_KEYS = {
    "name": "Label {zh, en} shown in the service hall.",
    "icon": "The icon's URL (https, or a path on this server), shown in the hall.",
    "initiate_login_uri": "Where the hall sends a person to enter the system: the "
                          "system's own page that starts its sign-in here.",
    "redirect_uris": "Where codes may be sent: exact match, no wildcards.",
    "post_logout_redirect_uris": "Where the platform may send a person after signing out "
                                 "at the system's request.",
    "backchannel_logout_uri": "Where the platform posts a logout token when a session "
                              "that entered this system ends.",
    "account_kinds": "Which accounts may enter: personal, organisation, supervisor.",
    "scopes": "What the system may ask for (openid required): openid, profile, id_number, "
              "phone.",
    "client_type": "confidential (authenticates with a secret) or public (PKCE only).",
    "subject_type": "public (the account id) or pairwise (a subject of its own per "
                    "sector).",
    "sector": "For pairwise subjects: systems of one sector see the same subject "
              "(default: the redirect URIs' host).",
    "refresh_tokens": "Whether the system gets refresh tokens: rotated at every use, a "
                      "reused one revokes its family, none outlives its session.",
    "description": "Free text, ignored.",
}
_REQUIRED = ("name", "initiate_login_uri", "redirect_uris", "account_kinds", "scopes")


@attrs.frozen
class System:
    id: str
    name: Mapping[str, str]
    icon: str | None
    initiate_login_uri: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    backchannel_logout_uri: str | None
    account_kinds: frozenset[str]
    scopes: tuple[str, ...]
    client_type: str
    subject_type: str
    sector: str
    refresh_tokens: bool = False

    @property
    def confidential(self) -> bool:
        return self.client_type == "confidential"

    def allows(self, kind: str) -> bool:
        return kind in self.account_kinds


@attrs.frozen
class Systems:
    systems: Mapping[str, System] = attrs.field(factory=dict)
    source: str = ""

    def get(self, system_id: str) -> System | None:
        return self.systems.get(system_id)

    def __iter__(self) -> Iterator[System]:
        return iter(self.systems.values())

    def __len__(self) -> int:
        return len(self.systems)


def _url_problem(value: Any, *, path_allowed: bool = False) -> str | None:
    """Why ``value`` is not a URL a system may be configured with; None if it is one."""
    if not isinstance(value, str) or not value:
        return "must be a URL"
    if path_allowed and value.startswith("/") and not value.startswith("//"):
        return None
    if any(c in value for c in " *\t\r\n"):
        return "must be one exact URL: no spaces, no wildcards"
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an absolute https URL"
    if parts.fragment or "#" in value:
        return "must not have a fragment"
    if parts.username or parts.password:
        return "must not carry a user name or password"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return "must use https (plain http only for a loopback host, in development)"
    return None


class _Checker:
    def __init__(self, pos: Positions) -> None:
        self.pos = pos
        self.diags: list[Diagnostic] = []

    def err(self, path: tuple[Any, ...], message: str, *, key: bool = False) -> None:
        self.diags.append(self.pos.diagnostic(path, message, key=key))

    def document(self, doc: Any) -> dict[str, System]:
        if doc is None:
            return {}
        if not isinstance(doc, dict):
            self.err((), "the file must be a mapping with a 'systems' key")
            return {}
        for key in doc:
            if key != "systems" and not str(key).startswith("x-"):
                self.err((key,), f"unknown key '{key}' (expected: systems)", key=True)
        systems = doc.get("systems")
        if systems is None:
            return {}
        if not isinstance(systems, dict):
            self.err(("systems",), "'systems' must be a mapping of system ids to systems")
            return {}
        found: dict[str, System] = {}
        for system_id, body in systems.items():
            system = self.system(str(system_id), body)
            if system is not None:
                found[system.id] = system
        return found

    def system(self, system_id: str, body: Any) -> System | None:
        path: tuple[Any, ...] = ("systems", system_id)
        before = len(self.diags)
        if not _ID.match(system_id):
            self.err(path, f"system id '{system_id}' must be 2-63 lower-case letters, digits, "
                     "'-' or '_', starting with a letter", key=True)
        if not isinstance(body, dict):
            self.err(path, f"system '{system_id}' must be a mapping")
            return None
        for key in body:
            if key not in _KEYS and not str(key).startswith("x-"):
                self.err((*path, key), f"unknown key '{key}' in system '{system_id}' "
                         f"(expected one of: {', '.join(_KEYS)})", key=True)
        for key in _REQUIRED:
            if key not in body:
                self.err(path, f"system '{system_id}' needs '{key}'", key=True)
        name = self.label(path, body.get("name"))
        icon = body.get("icon")
        if icon is not None and (problem := _url_problem(icon, path_allowed=True)):
            self.err((*path, "icon"), f"icon {problem}")
        login = body.get("initiate_login_uri")
        if "initiate_login_uri" in body and (problem := _url_problem(login)):
            self.err((*path, "initiate_login_uri"), f"initiate_login_uri {problem}")
        redirects = self.urls(path, body, "redirect_uris", required=True)
        logouts = self.urls(path, body, "post_logout_redirect_uris", required=False)
        backchannel = body.get("backchannel_logout_uri")
        if backchannel is not None and (problem := _url_problem(backchannel)):
            self.err((*path, "backchannel_logout_uri"), f"backchannel_logout_uri {problem}")
        kinds = self.names(path, body, "account_kinds", ACCOUNT_KINDS)
        scopes = self.names(path, body, "scopes", tuple(SCOPES))
        if "scopes" in body and scopes is not None and "openid" not in scopes:
            self.err((*path, "scopes"), "scopes must include openid")
        client_type = self.choice(path, body, "client_type", CLIENT_TYPES, "confidential")
        subject_type = self.choice(path, body, "subject_type", SUBJECT_TYPES, "public")
        sector = self.sector(path, body, subject_type, redirects)
        refresh = body.get("refresh_tokens", False)
        if not isinstance(refresh, bool):
            self.err((*path, "refresh_tokens"), "refresh_tokens must be true or false")
        if len(self.diags) > before:
            return None
        return System(id=system_id, name=name, icon=icon, initiate_login_uri=str(login),
                      redirect_uris=tuple(redirects), post_logout_redirect_uris=tuple(logouts),
                      backchannel_logout_uri=backchannel,
                      account_kinds=frozenset(kinds or ()), scopes=tuple(scopes or ()),
                      client_type=client_type, subject_type=subject_type, sector=sector,
                      refresh_tokens=refresh is True)

    def label(self, path: tuple[Any, ...], value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict) or set(value) != {"zh", "en"} or not all(
                isinstance(v, str) and v.strip() for v in value.values()):
            self.err((*path, "name"), "name must be {zh: ..., en: ...}, both non-empty text")
            return {}
        return {"zh": value["zh"], "en": value["en"]}

    def urls(self, path: tuple[Any, ...], body: dict[str, Any], key: str, *,
             required: bool) -> list[str]:
        value = body.get(key, [] if not required else None)
        if value is None:
            return []
        if not isinstance(value, list) or (required and not value):
            self.err((*path, key), f"{key} must be a list of URLs"
                     + (" (at least one)" if required else ""))
            return []
        seen: set[str] = set()
        for i, url in enumerate(value):
            if (problem := _url_problem(url)) is not None:
                self.err((*path, key, i), f"{key}[{i}] {problem}")
            elif url in seen:
                self.err((*path, key, i), f"{key}[{i}] repeats {url}")
            seen.add(str(url))
        return [str(u) for u in value]

    def names(self, path: tuple[Any, ...], body: dict[str, Any], key: str,
              known: tuple[str, ...]) -> list[str] | None:
        value = body.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            self.err((*path, key), f"{key} must be a list (at least one of: "
                     f"{', '.join(known)})")
            return None
        for i, item in enumerate(value):
            if item not in known:
                self.err((*path, key, i), f"unknown {key[:-1].replace('_', ' ')} '{item}' "
                         f"(known: {', '.join(known)})")
            elif value.index(item) != i:
                self.err((*path, key, i), f"{key} lists '{item}' twice")
        return [str(v) for v in value]

    def choice(self, path: tuple[Any, ...], body: dict[str, Any], key: str,
               choices: tuple[str, ...], default: str) -> str:
        value = body.get(key, default)
        if value not in choices:
            self.err((*path, key), f"{key} must be one of: {', '.join(choices)}")
            return default
        return str(value)

    def sector(self, path: tuple[Any, ...], body: dict[str, Any], subject_type: str,
               redirects: list[str]) -> str:
        given = body.get("sector")
        if given is not None:
            if not isinstance(given, str) or not given.strip():
                self.err((*path, "sector"), "sector must be non-empty text (a host name)")
                return ""
            return given.strip().lower()
        hosts = {(urlsplit(u).hostname or "").lower() for u in redirects}
        if subject_type == "pairwise" and len(hosts) > 1:
            self.err((*path, "subject_type"), "pairwise subjects with redirect URIs on "
                     f"several hosts ({', '.join(sorted(hosts))}) need a 'sector'")
        return sorted(hosts)[0] if hosts else ""


def check_systems_text(text: str, filename: str = "systems.yaml") -> tuple[
        dict[str, System], list[Diagnostic]]:
    """Check a systems file: the systems it configures and every problem found."""
    pos, doc, diags = read_positioned(text, filename)
    if pos is None:
        return {}, diags
    checker = _Checker(pos)
    found = checker.document(doc)
    return found, sorted(set(diags + checker.diags))


def load_systems_text(text: str, filename: str = "systems.yaml") -> Systems:
    """The systems of a file, or DefinitionError listing every problem."""
    found, diags = check_systems_text(text, filename)
    if diags:
        raise DefinitionError(diags)
    return Systems(found, source=filename)


def load_systems(path: str, *, missing_ok: bool = True) -> Systems:
    """The systems of the file at ``path``; none if it does not exist (and ``missing_ok``)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError as exc:
        if missing_ok:
            return Systems({}, source=path)
        raise DefinitionError([Diagnostic(path, 1, 1, f"cannot read: {exc}")]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError([Diagnostic(path, 1, 1, f"cannot read: {exc}")]) from exc
    return load_systems_text(text, path)
