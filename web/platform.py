"""Build the platform's services (vault, accounts, providers, ...) from settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
import structlog

from engine import Clock, FlowSet, Registry
from flows import sms
from flows.accounts import Accounts
from flows.captcha import CaptchaAnswers, Captchas
from flows.passwords import Hasher, cores
from flows.pii import Vault
from flows.providers import Providers, build_providers
from flows.sessions import RENAMED, Sessions, rename_sender
from flows.sms import SmsCodes, SmsPolicy
from flows.support import Services
from storage import PgAccounts, PgSeals, RedisEphemeral
from web.httpclient import AiohttpClient
from web.settings import Settings

log = structlog.get_logger("web.platform")


def public_url(settings: Settings) -> str:
    return (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")


def make_vault(settings: Settings) -> Vault:
    """The production keys, or in development only, the labelled development keys."""
    if settings.pii_enc_key and settings.pii_index_key:
        vault = Vault.from_config(settings.pii_enc_key, settings.pii_index_key,
                                  previous_enc_keys=settings.pii_previous_keys)
        if vault.is_development and settings.environment != "development":
            raise ValueError("PII_ENC_KEY, PII_INDEX_KEY or PII_PREVIOUS_KEYS is a "
                             "development key: set keys of your own (flowctl keys)")
        return vault
    if settings.environment != "development":
        raise ValueError("PII_ENC_KEY and PII_INDEX_KEY must be set outside development "
                         "(flowctl keys prints a new pair)")
    log.warning("development_pii_keys_in_use")
    return Vault.for_development()


def _display_name(accounts: Accounts) -> Callable[[str], Awaitable[str | None]]:
    async def current(account_id: str) -> str | None:
        account = await accounts.by_id(account_id)
        return account.display_name if account is not None else None
    return current


def build_services(settings: Settings, *, pool: asyncpg.Pool, ephemeral: RedisEphemeral,
                   http_client: AiohttpClient, clock: Clock, flows: FlowSet,
                   registry: Registry) -> Services:
    vault = make_vault(settings)
    providers: Providers = build_providers(settings.providers, ephemeral=ephemeral,
                                           http_client=http_client, clock=clock,
                                           base_url=public_url(settings))
    if settings.environment != "development" and "sandbox" in providers.modes.values():
        raise ValueError("sandbox providers are for development only: set *_PROVIDER=http "
                         f"(now: {dict(providers.modes)})")
    policies = next(iter(flows.flows.values())).policies if flows.flows else {}
    services = Services(
        vault=vault,
        accounts=PgAccounts(pool),
        # One hash per core: SERVE_WORKERS processes share the machine's cores.
        hasher=Hasher(memory_cost=settings.argon2_memory_kib,
                      time_cost=settings.argon2_time_cost,
                      concurrency=max(1, cores() // settings.serve_workers)),
        sessions=Sessions(ephemeral, ttl=timedelta(hours=settings.session_hours)),
        sms_codes=SmsCodes(ephemeral, vault, policy=SmsPolicy.from_mapping(policies.get("sms"))),
        # Only development keeps captcha answers, for the sandbox pages to show.
        captchas=Captchas(ephemeral, answers=CaptchaAnswers(ephemeral, clock)
                          if settings.environment == "development" else None),
        providers=providers,
        ephemeral=ephemeral,
        public_url=public_url(settings),
        seals=PgSeals(pool),
    )
    # Text messages leave through the outbox, sealed; this opens them for the gateway.
    registry.senders["sms"] = sms.sender(vault, providers.sms)
    # A renamed account's sessions show its name as the database has it once delivered.
    registry.senders[RENAMED] = rename_sender(services.sessions,
                                              _display_name(services.accounts))
    return services
