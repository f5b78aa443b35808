"""What the provider's endpoints share, under one typed application key."""

from __future__ import annotations

from collections.abc import Callable

import attrs
from aiohttp import web

from flows.pii import Vault
from storage import PgOidc
from web.oidc.signing import Keyring
from web.oidc.systems import System, Systems


@attrs.define
class Provider:
    """The systems, the keys, where secrets live, and the issuer's URL."""

    systems: Systems
    keyring: Keyring
    store: PgOidc
    issuer: str

    def subject(self, vault: Vault) -> Callable[[System, str], str]:
        """How each system names an account (or ``agent:<id>``): its id, or for pairwise
        systems an HMAC of it and the system's sector, which no other sector can link."""
        def subject(system: System, account: str) -> str:
            if system.subject_type == "public":
                return account.removeprefix("agent:")
            return vault.index("oidc_pairwise", f"{system.sector}|{account}").hex()
        return subject


OIDC = web.AppKey("oidc", Provider)
