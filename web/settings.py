"""Configuration from the environment, read once at start."""

from __future__ import annotations

import os
from collections.abc import Mapping

import attrs


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


_PROVIDER_PREFIXES = {"SMS", "REALNAME", "FACE", "PAYMENT", "BRANCHES", "CALLBACK"}


@attrs.frozen
class Settings:
    database_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str = "flows:"
    flows_file: str = "flows.yaml"
    flow_modules: tuple[str, ...] = ("flows",)
    host: str = "127.0.0.1"
    port: int = 8080
    log_format: str = "auto"  # json | console | auto (console on a terminal)
    log_level: str = "info"
    max_body_bytes: int = 1024 * 1024
    workers: bool = True
    # `flowctl serve` processes sharing the port (SO_REUSEPORT): one Python process uses
    # one core.
    serve_workers: int = 1
    timer_interval: float = 1.0
    outbox_interval: float = 1.0
    # Development and tests only: the clock is real time plus the seconds in this file.
    clock_file: str | None = None
    data_dir: str = ".data"
    # The client address comes from this header only when the peer is a trusted proxy.
    trusted_proxy_header: str | None = None
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    pool_min: int = 2
    pool_max: int = 10
    # Bounds, in seconds, so that a slow or frozen PostgreSQL or Redis gets a 503, not a
    # hang (0: no bound). Waiting for a pooled connection, or for a new one to connect:
    db_acquire_timeout: float = 2.0
    # One statement, on our side (ends a wait on a frozen or unreachable server):
    db_command_timeout: float = 4.0
    # PostgreSQL's statement_timeout, sent at connect (below the command timeout, so the
    # server cancels first and the connection stays usable; 0 behind PgBouncer):
    db_statement_timeout: float = 3.0
    # Connecting to Redis, and each command:
    redis_timeout: float = 2.0
    # development: sandbox pages mounted, development keys allowed. production: neither.
    environment: str = "development"
    # Where this server is reached from outside: callbacks and QR codes point here.
    public_url: str | None = None
    pii_enc_key: str | None = attrs.field(default=None, repr=False)
    pii_index_key: str | None = attrs.field(default=None, repr=False)
    pii_previous_keys: tuple[str, ...] = attrs.field(default=(), repr=False)
    cookie_secure: bool = False
    argon2_memory_kib: int = 19 * 1024
    argon2_time_cost: int = 2
    session_hours: float = 8.0
    # Provider settings (SMS_PROVIDER, FACE_URL, CALLBACK_SECRET, ...), passed through.
    providers: dict[str, str] = attrs.field(factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        return cls(
            database_url=e.get("DATABASE_URL") or None,
            redis_url=e.get("REDIS_URL") or None,
            redis_prefix=e.get("REDIS_PREFIX", "flows:"),
            flows_file=e.get("FLOWS_FILE", "flows.yaml"),
            flow_modules=tuple(m.strip() for m in e.get("FLOW_MODULES", "flows").split(",")
                               if m.strip()),
            host=e.get("HOST", "127.0.0.1"),
            port=int(e.get("PORT", "8080")),
            log_format=e.get("LOG_FORMAT", "auto"),
            log_level=e.get("LOG_LEVEL", "info"),
            max_body_bytes=int(e.get("MAX_BODY_BYTES", str(1024 * 1024))),
            workers=_bool(e.get("WORKERS"), True),
            serve_workers=int(e.get("SERVE_WORKERS", "1")),
            timer_interval=float(e.get("TIMER_INTERVAL", "1.0")),
            outbox_interval=float(e.get("OUTBOX_INTERVAL", "1.0")),
            clock_file=e.get("CLOCK_FILE") or None,
            data_dir=e.get("DATA_DIR", ".data"),
            trusted_proxy_header=e.get("TRUSTED_PROXY_HEADER") or None,
            trusted_proxies=tuple(p.strip() for p in e.get(
                "TRUSTED_PROXIES", "127.0.0.1/32,::1/128").split(",") if p.strip()),
            pool_min=int(e.get("DB_POOL_MIN", "2")),
            pool_max=int(e.get("DB_POOL_MAX", "10")),
            db_acquire_timeout=float(e.get("DB_ACQUIRE_TIMEOUT", "2")),
            db_command_timeout=float(e.get("DB_COMMAND_TIMEOUT", "4")),
            db_statement_timeout=float(e.get("DB_STATEMENT_TIMEOUT", "3")),
            redis_timeout=float(e.get("REDIS_TIMEOUT", "2")),
            environment=e.get("ENVIRONMENT", "development"),
            public_url=e.get("PUBLIC_URL") or None,
            pii_enc_key=e.get("PII_ENC_KEY") or None,
            pii_index_key=e.get("PII_INDEX_KEY") or None,
            pii_previous_keys=tuple(k for k in e.get("PII_PREVIOUS_KEYS", "").split(",") if k),
            cookie_secure=_bool(e.get("COOKIE_SECURE"), False),
            argon2_memory_kib=int(e.get("ARGON2_MEMORY_KIB", str(19 * 1024))),
            argon2_time_cost=int(e.get("ARGON2_TIME_COST", "2")),
            session_hours=float(e.get("SESSION_HOURS", "8")),
            providers={k: v for k, v in e.items()
                       if k.split("_", 1)[0] in _PROVIDER_PREFIXES},
        )
