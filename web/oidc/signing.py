"""Signing keys: made, sealed, published (JWKS) and rotated; the one that signs now.

A key is RSA 2048 (RS256: every OpenID Connect relying party verifies it). Its private
part is sealed with the vault (AES-GCM under PII_ENC_KEY, purpose ``oidc_signing_key``),
so a copy of the database alone signs nothing, and ``PII_PREVIOUS_KEYS`` opens keys
sealed before a vault key rotation, as it does personal data.

Servers read the keys from PostgreSQL and keep them for ``CACHE_SECONDS``: a rotation
made by ``flowctl signing-keys rotate`` reaches every process within that time. That is
safe because the key that starts signing was published (as 'next') before, and the key
that stops stays published while its tokens live.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timedelta
from typing import Any

import attrs
import orjson
import structlog
from joserfc.jwk import KeySet, RSAKey

from flows.pii import Vault, VaultOpenError
from storage import PgOidc, SigningKeyRow

log = structlog.get_logger("web.oidc")

ALG = "RS256"
PURPOSE = "oidc_signing_key"
CACHE_SECONDS = 30.0
# How long a relying party may keep our JWKS (Cache-Control max-age): a new key is
# published at least this long before it signs (flowctl signing-keys rotate says so).
JWKS_MAX_AGE = timedelta(minutes=5)


def new_key() -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A new RSA key: its id, its public JWK and its private JWK."""
    kid = secrets.token_urlsafe(12)
    key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": ALG},
                              private=True)
    return kid, dict(key.as_dict(private=False)), dict(key.as_dict(private=True))


async def add_new_key(oidc: PgOidc, vault: Vault, now: datetime, *,
                      first_only: bool = False) -> tuple[str, str | None]:
    """Make, seal and store a new key; return its id and its state (None: not stored,
    ``first_only`` and a key signs already)."""
    kid, public, private = new_key()
    sealed = vault.seal(PURPOSE, orjson.dumps(private).decode())
    state = await oidc.add_key(kid=kid, alg=ALG, public_jwk=public, private_sealed=sealed,
                               now=now, first_only=first_only)
    return kid, state


@attrs.frozen
class KeySnapshot:
    """The keys as last read: what JWKS publishes, and the key that signs."""

    published: tuple[dict[str, Any], ...]
    signing_kid: str | None
    signing_key: RSAKey | None = attrs.field(repr=False)

    def jwks(self) -> dict[str, Any]:
        return {"keys": list(self.published)}

    def key_set(self) -> KeySet:
        return KeySet.import_key_set(self.jwks())  # type: ignore[arg-type]


class Keyring:
    """The provider's keys, read from PostgreSQL at most every ``CACHE_SECONDS``."""

    def __init__(self, oidc: PgOidc, vault: Vault) -> None:
        self.oidc = oidc
        self.vault = vault
        self._snapshot: KeySnapshot | None = None
        self._read_at = 0.0

    async def current(self, now: datetime, *, fresh: bool = False) -> KeySnapshot:
        # Monotonic time decides when to read again; the clock of record (``now``)
        # decides which retired keys are still published.
        if fresh or self._snapshot is None or \
                time.monotonic() - self._read_at > CACHE_SECONDS:
            self._snapshot = self._build(await self.oidc.published_keys(now))
            self._read_at = time.monotonic()
        return self._snapshot

    def _build(self, rows: list[SigningKeyRow]) -> KeySnapshot:
        signing = next((r for r in rows if r.state == "current"), None)
        key = None
        if signing is not None and signing.private_sealed is not None:
            try:
                key = RSAKey.import_key(orjson.loads(self.vault.open(
                    PURPOSE, signing.private_sealed)))
            except VaultOpenError as exc:
                # Sealed under a vault key this server does not have: it signs nothing
                # (the token endpoint answers 503) rather than stop the whole platform.
                log.error("oidc_signing_key_unreadable", kid=signing.kid, reason=str(exc))
        return KeySnapshot(published=tuple(r.public_jwk for r in rows),
                           signing_kid=signing.kid if signing else None, signing_key=key)
