"""Configuration from the environment, read once at start.

``Settings.from_env`` checks every variable it reads and refuses the whole configuration
with ``SettingsError`` if any is wrong: one line per variable, naming it and saying what
is expected, never a traceback and never a silent default in place of a typo. In
production it also refuses what is only safe on a developer's machine (the public
development keys, sandbox providers, plain-HTTP public URLs): ``production_problems``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import attrs

from flows.pii import VaultConfigError, is_development_key
from flows.providers import DEV_CALLBACK_SECRET, config_problems

T = TypeVar("T")

_PROVIDER_PREFIXES = {"SMS", "REALNAME", "FACE", "PAYMENT", "BRANCHES", "CALLBACK"}
_PROVIDERS = ("SMS", "REALNAME", "FACE", "PAYMENT", "BRANCHES")
ENVIRONMENTS = ("development", "production")
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# RFC 9110 token: what a header name may be.
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Shortest METRICS_TOKEN accepted: a short one can be guessed (openssl rand -hex 32).
METRICS_TOKEN_MIN = 16


class SettingsError(ValueError):
    """The configuration is wrong; ``problems`` has one line per variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def is_loopback(host: str) -> bool:
    """Tell whether a listen address reaches this machine only (127.0.0.0/8, ::1)."""
    text = host.strip().strip("[]")
    if text.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to anything


def _shown(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


class _Reader:
    """Read variables, collecting one problem line for each bad one."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        """The value, or None when unset or blank (an empty ``PORT=`` means the default)."""
        value = self.env.get(name)
        return value if value is not None and value.strip() else None

    def _parse(self, name: str, default: T, parse: Callable[[str], T | None],
               expected: str, *, secret: bool = False) -> T:
        text = self.raw(name)
        if text is None:
            return default
        value = parse(text.strip())
        if value is None:
            self.problems.append(f"{name} must be {expected}"
                                 + ("" if secret else f", not {_shown(text)}"))
            return default
        return value

    def text(self, name: str, default: str) -> str:
        value = self.env.get(name)
        return default if value is None else value

    def optional(self, name: str) -> str | None:
        text = self.raw(name)
        return text.strip() if text is not None else None

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        return self._parse(name, default, lambda text: _in_range(text, low, high),
                           f"a whole number from {low} to {high}")

    def number(self, name: str, default: float, low: float, high: float, *,
               unit: str = "") -> float:
        """A decimal number with ``low < value <= high`` (zero seconds is never meant)."""
        def parse(text: str) -> float | None:
            try:
                value = float(text)
            except ValueError:
                return None
            return value if low < value <= high else None

        what = f" {unit}" if unit else ""
        return self._parse(name, default, parse,
                           f"a number{what} more than {low:g} and at most {high:g}")

    def bound(self, name: str, default: float) -> float:
        """Seconds a wait may take, or 0 for no bound."""
        def parse(text: str) -> float | None:
            try:
                value = float(text)
            except ValueError:
                return None
            return value if 0 <= value <= 3600 else None

        return self._parse(name, default, parse,
                           "a number of seconds from 0 (no bound) to 3600")

    def boolean(self, name: str, default: bool) -> bool:
        def parse(text: str) -> bool | None:
            word = text.lower()
            return True if word in _TRUE else False if word in _FALSE else None

        return self._parse(name, default, parse,
                           "true or false (also 1/0, yes/no, on/off)")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        return self._parse(name, default,
                           lambda text: text.lower() if text.lower() in choices else None,
                           f"one of {', '.join(choices)}")

    def url(self, name: str, schemes: tuple[str, ...], *, secret: bool = False,
            need_host: bool = True) -> str | None:
        """A URL with one of ``schemes`` (and a host, unless the client has a default)."""
        def parse(text: str) -> str | None:
            try:
                parts = urlsplit(text)
                parts.port  # noqa: B018 - raises ValueError on a port out of range
            except ValueError:
                return None
            if parts.scheme.lower() not in schemes:
                return None
            if need_host and not parts.hostname:
                return None
            return text

        return self._parse(name, None, parse,
                           f"a URL starting with {' or '.join(s + '://' for s in schemes)}"
                           + (" and naming a host" if need_host else ""), secret=secret)

    def port(self, name: str) -> int | None:
        """A TCP port, or None when unset."""
        return self._parse(name, None, lambda text: _in_range(text, 1, 65535),
                           "a whole number from 1 to 65535")

    def header(self, name: str) -> str | None:
        return self._parse(name, None, lambda text: text if _HEADER.match(text) else None,
                           "an HTTP header name, such as X-Forwarded-For")

    def names(self, name: str, default: tuple[str, ...], pattern: re.Pattern[str],
              expected: str) -> tuple[str, ...]:
        """A comma-separated list, each item matching ``pattern``."""
        def parse(text: str) -> tuple[str, ...] | None:
            items = tuple(p.strip() for p in text.split(",") if p.strip())
            return items if items and all(pattern.match(i) for i in items) else None

        return self._parse(name, default, parse, expected)

    def networks(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        def parse(text: str) -> tuple[str, ...] | None:
            items = tuple(p.strip() for p in text.split(",") if p.strip())
            try:
                return tuple(str(ipaddress.ip_network(i)) for i in items) or None
            except ValueError:
                return None

        return self._parse(name, default, parse,
                           "comma-separated addresses or networks (CIDR, e.g. 10.0.0.0/8, "
                           "with no bits set after the prefix)")

    def addresses(self, name: str) -> tuple[tuple[str, int], ...]:
        """Comma-separated ``host:port`` (``[v6]:port`` for an IPv6 address)."""
        def one(item: str) -> tuple[str, int] | None:
            host, colon, port = item.rpartition(":")
            if not colon or not host or _in_range(port, 1, 65535) is None:
                return None
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
            elif ":" in host:  # an IPv6 address goes in brackets
                return None
            if not host or any(c.isspace() or c in "/[]" for c in host):
                return None
            return host, int(port)

        def parse(text: str) -> tuple[tuple[str, int], ...] | None:
            found = [one(p.strip()) for p in text.split(",") if p.strip()]
            if not found or None in found:
                return None
            return tuple(a for a in found if a is not None)

        return self._parse(name, (), parse,
                           "comma-separated host:port addresses (e.g. 10.0.3.21:26379, "
                           "[fd00::21]:26379)")

    def keys(self, name: str, *, many: bool = False) -> tuple[str, ...]:
        """PII keys: base64 of 32 bytes each (comma-separated if ``many``); never shown."""
        text = self.raw(name)
        if text is None:
            return ()
        found = tuple(k.strip() for k in text.split(",") if k.strip()) if many \
            else (text.strip(),)
        for key in found:
            try:
                is_development_key(key)
            except VaultConfigError:
                self.problems.append(
                    f"{name} must be {'comma-separated keys, each ' if many else ''}base64 "
                    "of 32 random bytes (flowctl keys prints a new pair)")
                return ()
        return found


def _in_range(text: str, low: int, high: int) -> int | None:
    if not re.fullmatch(r"[+-]?[0-9]{1,12}", text):
        return None
    value = int(text)
    return value if low <= value <= high else None


@attrs.frozen
class Settings:
    database_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str = "flows:"
    flows_file: str = "flows.yaml"
    # The business systems this provider signs people into; None: systems.yaml beside
    # the flows file.
    systems_file: str | None = None
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
    timer_interval: float = 0.5
    outbox_interval: float = 1.0
    # Development and tests only: the clock is real time plus the seconds in this file.
    clock_file: str | None = None
    data_dir: str = ".data"
    # Development only: `flowctl serve` also serves examples/business_system, the
    # systems.yaml entry 'example' (web/oidc/example.py). `make run` turns it on; off
    # by default so that no other server process (tests, benchmarks) starts one too.
    example_system: bool = False
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
    # PgBouncer (or another pooler) in transaction pooling between us and PostgreSQL: no
    # named prepared statements and no startup parameters (statement_timeout goes on
    # the role instead, docs/operations.md).
    db_transaction_pooling: bool = False
    # REDIS_URL names one node of a Redis Cluster; the client finds the others.
    redis_cluster: bool = False
    # Redis Sentinel: the sentinels' addresses and the name of the master they watch;
    # REDIS_URL then gives only the password, database and TLS of that master.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = "mymaster"
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
    # /metrics: with a token, only for `Authorization: Bearer <token>`; with a port, only
    # there (on metrics_host), not on the public port. Production serves it only so.
    metrics_token: str | None = attrs.field(default=None, repr=False)
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # Provider settings (SMS_PROVIDER, FACE_URL, CALLBACK_SECRET, ...), passed through.
    providers: dict[str, str] = attrs.field(factory=dict, repr=False)

    @property
    def systems_path(self) -> str:
        """SYSTEMS_FILE, else systems.yaml in the flows file's folder."""
        return self.systems_file or os.path.join(os.path.dirname(self.flows_file),
                                                 "systems.yaml")

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @property
    def secure_cookies(self) -> bool:
        """Every cookie the app sets is ``Secure``: always in production."""
        return self.cookie_secure or self.production

    def redis_topology(self) -> dict[str, Any]:
        """How to reach Redis besides REDIS_URL: ``create_redis``'s keyword arguments."""
        return {"cluster": self.redis_cluster, "sentinels": self.redis_sentinels,
                "sentinel_master": self.redis_sentinel_master}

    @property
    def metrics_public(self) -> bool:
        """Whether the public port serves /metrics (behind the token, if there is one)."""
        if self.metrics_port is not None:
            return False
        return self.metrics_token is not None or not self.production

    def production_problems(self) -> list[str]:
        """What production refuses: one line per variable; nothing outside production."""
        if not self.production:
            return []
        problems = []
        for name, url in (("DATABASE_URL", self.database_url), ("REDIS_URL", self.redis_url)):
            if url is None:
                problems.append(f"{name} must be set in production (the embedded servers "
                                "under DATA_DIR are for make run)")
        for name, key in (("PII_ENC_KEY", self.pii_enc_key),
                          ("PII_INDEX_KEY", self.pii_index_key)):
            if key is None:
                problems.append(f"{name} must be set in production "
                                "(flowctl keys prints a new pair)")
        for name, keys in (("PII_ENC_KEY", (self.pii_enc_key,)),
                           ("PII_INDEX_KEY", (self.pii_index_key,)),
                           ("PII_PREVIOUS_KEYS", self.pii_previous_keys)):
            if any(_development_key(k) for k in keys if k is not None):
                problems.append(f"{name} is a development key, which anyone can recompute: "
                                "set one of your own in production (flowctl keys)")
        callback = {"CALLBACK_SECRET": [self.providers.get("CALLBACK_SECRET", "")],
                    "CALLBACK_PREVIOUS_SECRETS":
                        self.providers.get("CALLBACK_PREVIOUS_SECRETS", "").split(",")}
        for name, values in callback.items():
            if DEV_CALLBACK_SECRET in (v.strip() for v in values):
                problems.append(f"{name} is the development callback secret, which anyone "
                                "can read in the source: set a secret of your own")
        for provider in _PROVIDERS:
            mode = (self.providers.get(f"{provider}_PROVIDER") or "").strip().lower()
            if mode in ("", "sandbox") and provider != "BRANCHES":
                problems.append(f"{provider}_PROVIDER must be http in production (the "
                                f"sandbox is for development), with {provider}_URL and "
                                f"{provider}_API_KEY")
        if not self.public_url or not self.public_url.lower().startswith("https://"):
            problems.append("PUBLIC_URL must be set to the https:// address clients and "
                            "providers reach in production")
        return problems

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and check the environment; raise SettingsError naming every bad variable."""
        r = _Reader(os.environ if env is None else env)
        port = r.integer("PORT", 8080, 1, 65535)
        pooling = r.boolean("DB_TRANSACTION_POOLING", False)
        settings = cls(
            database_url=r.url("DATABASE_URL", ("postgresql", "postgres"), secret=True,
                               need_host=False),
            redis_url=r.url("REDIS_URL", ("redis", "rediss", "unix"), secret=True,
                            need_host=False),
            redis_prefix=r.text("REDIS_PREFIX", "flows:"),
            flows_file=r.text("FLOWS_FILE", "flows.yaml"),
            systems_file=r.optional("SYSTEMS_FILE"),
            flow_modules=r.names("FLOW_MODULES", ("flows",), _MODULE,
                                 "comma-separated Python module names"),
            host=(r.optional("HOST") or "127.0.0.1"),
            port=port,
            log_format=r.choice("LOG_FORMAT", "auto", LOG_FORMATS),
            log_level=r.choice("LOG_LEVEL", "info", LOG_LEVELS),
            max_body_bytes=r.integer("MAX_BODY_BYTES", 1024 * 1024, 1024, 1024**3),
            workers=r.boolean("WORKERS", True),
            serve_workers=r.integer("SERVE_WORKERS", 1, 1, 256),
            timer_interval=r.number("TIMER_INTERVAL", 0.5, 0, 3600, unit="of seconds"),
            outbox_interval=r.number("OUTBOX_INTERVAL", 1.0, 0, 3600, unit="of seconds"),
            clock_file=r.optional("CLOCK_FILE"),
            data_dir=r.optional("DATA_DIR") or ".data",
            example_system=r.boolean("EXAMPLE_SYSTEM", False),
            trusted_proxy_header=r.header("TRUSTED_PROXY_HEADER"),
            trusted_proxies=r.networks("TRUSTED_PROXIES", ("127.0.0.1/32", "::1/128")),
            pool_min=r.integer("DB_POOL_MIN", 2, 0, 1000),
            pool_max=r.integer("DB_POOL_MAX", 10, 1, 1000),
            db_acquire_timeout=r.bound("DB_ACQUIRE_TIMEOUT", 2.0),
            db_command_timeout=r.bound("DB_COMMAND_TIMEOUT", 4.0),
            db_statement_timeout=r.bound("DB_STATEMENT_TIMEOUT", 0.0 if pooling else 3.0),
            db_transaction_pooling=pooling,
            redis_cluster=r.boolean("REDIS_CLUSTER", False),
            redis_sentinels=r.addresses("REDIS_SENTINELS"),
            redis_sentinel_master=r.text("REDIS_SENTINEL_MASTER", "mymaster").strip()
            or "mymaster",
            redis_timeout=r.bound("REDIS_TIMEOUT", 2.0),
            environment=r.choice("ENVIRONMENT", "development", ENVIRONMENTS),
            public_url=r.url("PUBLIC_URL", ("http", "https")),
            pii_enc_key=_one(r.keys("PII_ENC_KEY")),
            pii_index_key=_one(r.keys("PII_INDEX_KEY")),
            pii_previous_keys=r.keys("PII_PREVIOUS_KEYS", many=True),
            cookie_secure=r.boolean("COOKIE_SECURE", False),
            argon2_memory_kib=r.integer("ARGON2_MEMORY_KIB", 19 * 1024, 8, 4 * 1024 * 1024),
            argon2_time_cost=r.integer("ARGON2_TIME_COST", 2, 1, 100),
            session_hours=r.number("SESSION_HOURS", 8.0, 0, 24 * 30, unit="of hours"),
            metrics_token=r.optional("METRICS_TOKEN"),
            metrics_port=r.port("METRICS_PORT"),
            metrics_host=r.optional("METRICS_HOST") or "127.0.0.1",
            providers={k: v for k, v in r.env.items()
                       if k.split("_", 1)[0] in _PROVIDER_PREFIXES},
        )
        problems = r.problems + config_problems(settings.providers)
        if not problems:  # rules between variables, and production's, on values that parse
            problems += [*_relations(settings), *settings.production_problems()]
        if problems:
            raise SettingsError(problems)
        return settings


def _one(keys: tuple[str, ...]) -> str | None:
    return keys[0] if keys else None


def _development_key(key: str) -> bool:
    try:
        return is_development_key(key)
    except VaultConfigError:
        return False  # not a key at all: from_env says so; the vault refuses it too


def _relations(s: Settings) -> Iterable[str]:
    """Problems that involve two variables."""
    if s.db_transaction_pooling and s.db_statement_timeout:
        yield ("DB_STATEMENT_TIMEOUT must be 0 with DB_TRANSACTION_POOLING: a transaction "
               "pooler refuses it as a startup parameter; set it on the database role "
               "instead (ALTER ROLE ... SET statement_timeout = '3s')")
    if s.redis_cluster and s.redis_sentinels:
        yield ("REDIS_CLUSTER and REDIS_SENTINELS exclude each other: a Redis Cluster fails "
               "over by itself, Sentinel watches one master")
    if s.redis_sentinels and s.redis_url is None:
        yield ("REDIS_URL must be set with REDIS_SENTINELS (its password and database are "
               "the master's; its host is not used, e.g. redis://:secret@mymaster/0)")
    if s.pool_min > s.pool_max:
        yield f"DB_POOL_MIN ({s.pool_min}) must not be more than DB_POOL_MAX ({s.pool_max})"
    if s.metrics_port is not None and s.metrics_port == s.port:
        yield f"METRICS_PORT must differ from PORT ({s.port})"
    if s.metrics_token is not None and len(s.metrics_token) < METRICS_TOKEN_MIN:
        yield (f"METRICS_TOKEN must have at least {METRICS_TOKEN_MIN} characters "
               "(e.g. openssl rand -hex 32)")
    if s.pii_enc_key is not None and s.pii_index_key is None:
        yield "PII_INDEX_KEY must be set with PII_ENC_KEY (flowctl keys prints a pair)"
    if s.pii_index_key is not None and s.pii_enc_key is None:
        yield "PII_ENC_KEY must be set with PII_INDEX_KEY (flowctl keys prints a pair)"
