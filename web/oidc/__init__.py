"""The OpenID Connect provider and the service hall (SPEC 11).

Business systems are configured in ``systems.yaml`` (``web.oidc.systems``); signing keys
and client secrets are in PostgreSQL (``storage.oidc``); codes, tokens and waiting
authorization requests in Redis (``web.oidc.provider``). docs/oidc.md describes it all
for relying parties and operators.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import structlog
from aiohttp import web

from storage import PgOidc
from web.keys import CLOCK, OUTBOX, POOL, REGISTRY, SERVICES, SETTINGS
from web.oidc import logout
from web.oidc.logout import logout_routes
from web.oidc.provider import REQUEST_LIFETIME
from web.oidc.routes import LOGIN_PATH, hall_of, oidc_routes, pending_system
from web.oidc.signing import Keyring, add_new_key
from web.oidc.state import OIDC, Provider
from web.oidc.systems import System, Systems, check_systems_text, load_systems
from web.platform import public_url

log = structlog.get_logger("web.oidc")

__all__ = ["LOGIN_PATH", "OIDC", "REQUEST_LIFETIME", "Provider", "System", "Systems",
           "check_systems_text", "hall_of", "load_systems", "logout_routes", "oidc_context",
           "oidc_routes", "pending_system"]


def oidc_context(systems: Systems) -> Callable[[web.Application], AsyncIterator[None]]:
    """The provider, once the services are up; in development, its first signing key."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        store = PgOidc(app[POOL])
        vault = app[SERVICES].vault
        now = app[CLOCK].now()
        if settings.environment == "development":
            kid, state = await add_new_key(store, vault, now, first_only=True)
            if state is not None:
                log.info("oidc_signing_key_created", kid=kid)
        keyring = Keyring(store, vault)
        if (await keyring.current(now)).signing_key is None:
            log.error("oidc_no_signing_key", hint="flowctl signing-keys new")
        provider = app[OIDC] = Provider(systems=systems, keyring=keyring, store=store,
                                        issuer=public_url(settings))
        # Ending a session logs it out of the systems it entered, through the outbox.
        sessions = app[SERVICES].sessions
        ended = logout.listener(provider, app[CLOCK], app[OUTBOX].notify)
        sessions.listeners.append(ended)
        http = aiohttp.ClientSession()
        # Sessions that simply time out leave their systems too (and old entries go).
        swept = asyncio.create_task(
            logout.sweeper(provider, app[CLOCK], app[OUTBOX].notify),
            name="oidc_sweep") if settings.workers else None
        try:
            app[REGISTRY].senders[logout.TOPIC] = logout.sender(provider, app[CLOCK], http)
            yield
        finally:
            if swept is not None:
                swept.cancel()
                await asyncio.wait([swept], timeout=5.0)
            sessions.listeners.remove(ended)
            await http.close()

    return context
