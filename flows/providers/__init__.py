"""The outside services as ports, each with a sandbox and an HTTP implementation.

``build_providers(config, ...)`` picks one implementation per service from env-style
configuration:

=====================  ==========================================================
``SMS_PROVIDER``       ``sandbox`` (default) or ``http``; likewise ``REALNAME_``,
                       ``FACE_``, ``PAYMENT_``; ``BRANCHES_PROVIDER`` is ``csv``
                       (default; ``sandbox`` means the same) or ``http``
``<P>_URL``            base URL of the HTTP implementation (required for http)
``<P>_API_KEY``        sent as ``Authorization: Bearer`` (required for http)
``<P>_TIMEOUT``        seconds, default 5
``CALLBACK_SECRET``    HMAC secret of the signed callbacks; required (16+ chars)
                       when face or payment is http; a fixed development secret
                       otherwise
``CALLBACK_PREVIOUS_SECRETS``  comma-separated, still accepted while rotating
``CALLBACK_TOLERANCE`` seconds a callback's timestamp may be off, default 300
``REALNAME_SANDBOX_MISMATCH``      ``name:id,name:id`` pairs the sandbox says "no" to
``REALNAME_SANDBOX_MISMATCH_IDS``  IDs the sandbox says "no" to, whatever the name
``PAYMENT_SANDBOX_DELAY``          seconds before the sandbox credits, default 0
``BRANCHES_FILE``      the directory CSV, default the shipped synthetic one
=====================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import attrs
import structlog

from engine import Clock
from flows.ports import Ephemeral
from flows.providers.branches import CsvBranchDirectory
from flows.providers.http import (
    Endpoint,
    HttpBranchDirectory,
    HttpClient,
    HttpFace,
    HttpPayment,
    HttpRealName,
    HttpSms,
)
from flows.providers.ports import (
    Branch,
    BranchDirectory,
    FaceSession,
    FaceVerifier,
    PaymentProvider,
    ProviderBadResponse,
    ProviderError,
    ProviderRefused,
    ProviderTimeout,
    ProviderUnavailable,
    RealNameRegistry,
    SmsGateway,
)
from flows.providers.sandbox import Sandbox, build_sandbox, parse_ids, parse_pairs
from flows.providers.signing import (
    CallbackError,
    CallbackReplayed,
    CallbackSignatureInvalid,
    CallbackSigner,
    CallbackStale,
    CallbackVerifier,
)

log = structlog.get_logger("flows.providers")

T = TypeVar("T")

# Signs the sandbox's callbacks when nothing real is configured: development only.
DEV_CALLBACK_SECRET = "sandbox-callback-secret-for-development-only"  # noqa: S105
SERVICES = ("sms", "realname", "face", "payment", "branches")


@attrs.frozen
class Providers:
    """The five ports, the callback verifier, and the sandbox behind the sandbox pages."""

    sms: SmsGateway
    realname: RealNameRegistry
    face: FaceVerifier
    payment: PaymentProvider
    branches: BranchDirectory
    callbacks: CallbackVerifier
    sandbox: Sandbox
    modes: Mapping[str, str]  # service -> "sandbox" | "csv" | "http"
    base_url: str

    async def aclose(self) -> None:
        """Stop the sandbox's background work (deposits waiting to be credited)."""
        await self.sandbox.aclose()


def _mode(config: Mapping[str, str], service: str) -> str:
    value = (config.get(f"{service.upper()}_PROVIDER") or "").strip().lower()
    if service == "branches":
        value = {"": "csv", "sandbox": "csv"}.get(value, value)
        allowed = {"csv", "http"}
    else:
        value = value or "sandbox"
        allowed = {"sandbox", "http"}
    if value not in allowed:
        raise ValueError(f"{service.upper()}_PROVIDER must be one of "
                         f"{', '.join(sorted(allowed))}, not {value!r}")
    return value


def _seconds(config: Mapping[str, str], key: str, default: float) -> float:
    text = (config.get(key) or "").strip()
    try:
        value = float(text) if text else default
    except ValueError:
        raise ValueError(f"{key} must be a number of seconds, not {text!r}") from None
    if not 0 <= value < 86400 * 7:
        raise ValueError(f"{key} must be from 0 to {86400 * 7} seconds, not {text!r}")
    return value


def _endpoint(config: Mapping[str, str], service: str) -> Endpoint:
    prefix = service.upper()
    url = (config.get(f"{prefix}_URL") or "").strip()
    api_key = (config.get(f"{prefix}_API_KEY") or "").strip()
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{prefix}_URL must be an http(s) URL when {prefix}_PROVIDER=http")
    if not api_key:
        raise ValueError(f"{prefix}_API_KEY must be set when {prefix}_PROVIDER=http")
    timeout = _seconds(config, f"{prefix}_TIMEOUT", 5.0)
    if timeout <= 0:
        raise ValueError(f"{prefix}_TIMEOUT must be more than 0")
    return Endpoint(service, url, api_key, timeout)


def _secrets(config: Mapping[str, str], modes: Mapping[str, str]) -> tuple[str, list[str]]:
    secret = (config.get("CALLBACK_SECRET") or "").strip()
    previous = [s.strip() for s in (config.get("CALLBACK_PREVIOUS_SECRETS") or "").split(",")
                if s.strip()]
    real = modes["face"] == "http" or modes["payment"] == "http"
    if not secret:
        if real:
            raise ValueError("CALLBACK_SECRET must be set when FACE_PROVIDER or "
                             "PAYMENT_PROVIDER is http")
        log.warning("callback_secret_for_development")
        return DEV_CALLBACK_SECRET, previous
    if real and len(secret) < 16:
        raise ValueError("CALLBACK_SECRET must have at least 16 characters")
    return secret, previous


def config_problems(config: Mapping[str, str]) -> list[str]:
    """Check the configuration ``build_providers`` takes: one line per mistake, naming it.

    Run at start, so a bad value is refused before anything is built or connected.
    """
    problems: list[str] = []

    def attempt(check: Callable[..., T], *args: Any) -> T | None:
        try:
            return check(*args)
        except ValueError as exc:
            problems.append(str(exc))
            return None

    modes = {s: attempt(_mode, config, s) for s in SERVICES}
    for service, mode in modes.items():
        if mode == "http":
            attempt(_endpoint, config, service)
    # Unset and not needed, the development secret is used (and logged): nothing to check.
    if "http" in (modes["face"], modes["payment"]) or (config.get("CALLBACK_SECRET") or "").strip():
        attempt(_secrets, config, {s: m or "" for s, m in modes.items()})
    for key, default in (("CALLBACK_TOLERANCE", 300.0), ("PAYMENT_SANDBOX_DELAY", 0.0)):
        attempt(_seconds, config, key, default)
    try:
        parse_pairs(config.get("REALNAME_SANDBOX_MISMATCH") or "")
    except ValueError as exc:
        problems.append(f"REALNAME_SANDBOX_MISMATCH must be name:id pairs, comma-separated "
                        f"({exc})")
    branches = (config.get("BRANCHES_FILE") or "").strip()
    if branches and not Path(branches).is_file():
        problems.append(f"BRANCHES_FILE must be a readable CSV file; {branches!r} is not one")
    return problems


def build_providers(config: Mapping[str, str], *, ephemeral: Ephemeral,
                    http_client: HttpClient, clock: Clock, base_url: str) -> Providers:
    """Choose and build every provider; raise ValueError on a configuration mistake.

    ``base_url`` is where this server is reached (the sandbox's QR codes point there).
    """
    modes = {s: _mode(config, s) for s in SERVICES}
    secret, previous = _secrets(config, modes)
    try:
        pairs = parse_pairs(config.get("REALNAME_SANDBOX_MISMATCH") or "")
    except ValueError as exc:
        raise ValueError(f"REALNAME_SANDBOX_MISMATCH: {exc}") from None
    directory = CsvBranchDirectory.load(config.get("BRANCHES_FILE") or None)
    sandbox = build_sandbox(
        ephemeral=ephemeral, http_client=http_client, clock=clock,
        signer=CallbackSigner(secret, clock), base_url=base_url, branches=directory,
        mismatch_pairs=pairs,
        mismatch_ids=parse_ids(config.get("REALNAME_SANDBOX_MISMATCH_IDS") or ""),
        deposit_delay=timedelta(seconds=_seconds(config, "PAYMENT_SANDBOX_DELAY", 0.0)))

    def http(service: str) -> bool:
        return modes[service] == "http"

    tolerance = _seconds(config, "CALLBACK_TOLERANCE", 300.0)
    return Providers(
        sms=HttpSms(_endpoint(config, "sms"), http_client) if http("sms") else sandbox.sms,
        realname=(HttpRealName(_endpoint(config, "realname"), http_client)
                  if http("realname") else sandbox.realname),
        face=(HttpFace(_endpoint(config, "face"), http_client)
              if http("face") else sandbox.face),
        payment=(HttpPayment(_endpoint(config, "payment"), http_client)
                 if http("payment") else sandbox.payment),
        branches=(HttpBranchDirectory(_endpoint(config, "branches"), http_client)
                  if http("branches") else directory),
        callbacks=CallbackVerifier(secret, ephemeral, clock, timedelta(seconds=tolerance),
                                   previous_secrets=previous),
        sandbox=sandbox,
        modes=modes,
        base_url=base_url.rstrip("/"),
    )


__all__ = [
    "DEV_CALLBACK_SECRET",
    "Branch",
    "BranchDirectory",
    "CallbackError",
    "CallbackReplayed",
    "CallbackSignatureInvalid",
    "CallbackSigner",
    "CallbackStale",
    "CallbackVerifier",
    "CsvBranchDirectory",
    "Endpoint",
    "FaceSession",
    "FaceVerifier",
    "HttpClient",
    "PaymentProvider",
    "ProviderBadResponse",
    "ProviderError",
    "ProviderRefused",
    "ProviderTimeout",
    "ProviderUnavailable",
    "Providers",
    "RealNameRegistry",
    "Sandbox",
    "SmsGateway",
    "build_providers",
    "config_problems",
]
