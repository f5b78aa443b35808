"""Run the server: embedded databases if needed, migrations, signals, clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import attrs
import structlog
from aiohttp import web

from engine import DefinitionError, load_file
from storage import PgOidc, PgStore, create_pool, migrate_database
from web import keys
from web.app import build_registry, create_app, make_clock, metrics_app
from web.devservers import resolve
from web.oidc import example, load_systems
from web.platform import make_vault, public_url
from web.settings import Settings

log = structlog.get_logger("web.serve")

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop where it is installed (a dependency on Linux and macOS)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def _run(settings: Settings, host: str, port: int, migrate_first: bool,
               reuse_port: bool = False) -> bool:
    """Serve until SIGINT/SIGTERM (or the supervisor's end); False if the address could
    not be bound."""
    assert settings.database_url
    if migrate_first:
        log.info("migrated", applied=await migrate_database(
            settings.database_url, transaction_pooling=settings.db_transaction_pooling))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    _watch_supervisor(loop, stop)
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    # /metrics on a port of its own (METRICS_PORT), for the scraper alone.
    scraper = (web.AppRunner(metrics_app(app), access_log=None, handle_signals=False)
               if settings.metrics_port is not None else None)
    try:
        await runner.setup()  # starts the pool, Redis and the workers: cleaned up below
    except BaseException:
        await app.cleanup()  # what did start (the pool, say) stops again
        raise
    try:
        # Workers of one `serve --workers N` share the port; the kernel spreads
        # connections between them (SO_REUSEPORT).
        sites = [web.TCPSite(runner, host, port, reuse_port=reuse_port or None)]
        if scraper is not None:
            await scraper.setup()
            sites.append(web.TCPSite(scraper, settings.metrics_host, settings.metrics_port,
                                     reuse_port=reuse_port or None))
        for site in sites:
            try:
                await site.start()
            except OSError as exc:  # the port is taken, or the host is not ours
                log.error("listen_failed", url=site.name, error=str(exc))
                return False
        reloads: set[asyncio.Task[bool]] = set()  # the loop keeps only weak references

        def hup() -> None:
            task = asyncio.ensure_future(app[keys.RELOAD]())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, hup)
        log.info("serving", url=f"http://{host}:{port}", flows=settings.flows_file,
                 heap_frozen=_settle_heap())
        await stop.wait()
        return True
    finally:
        log.info("stopping")
        if scraper is not None:
            await scraper.cleanup()
        await runner.cleanup()


def _settle_heap() -> int:
    """Take what the server made to start (modules, flows, routes, the pools) out of the
    collector's sight; return how many objects that is.

    A full collection walks every object the process holds, each time on the event
    loop, with every request in flight waiting: measured on a started server with the
    shipped flows, 115,000 objects and 62-76 ms a collection; with them frozen, under a
    millisecond. Over a sign-in benchmark the full collections took 194 ms in all (the
    longest 107 ms) before, 5 ms after. What is frozen stays until the process ends:
    what was garbage is collected first, and a reload's new flows are not frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


# A worker of `serve --workers N` finds the read end of a pipe its supervisor holds the
# write end of: end of file there means the supervisor is gone.
_SUPERVISOR_FD = "FLOWCTL_SUPERVISOR_FD"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """Ask Linux for SIGTERM when the supervisor dies, even by SIGKILL.

    The pipe (``_watch_supervisor``) covers the rest: other systems, and a supervisor
    gone before this call, which no signal would report.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("parent_death_signal_unavailable", errno=ctypes.get_errno())


def _watch_supervisor(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Stop cleanly when the supervisor's end of the pipe closes (it died)."""
    value = os.environ.get(_SUPERVISOR_FD)
    if not value:
        return
    fd = int(value)

    def gone() -> None:
        loop.remove_reader(fd)
        log.warning("supervisor_gone")
        stop.set()

    loop.add_reader(fd, gone)


def serve_worker(settings: Settings, *, host: str, port: int) -> int:
    """One of the processes of `serve --workers N`: the parent did the rest."""
    _die_with_parent()
    try:
        return 0 if run(_run(settings, host, port, False, reuse_port=True)) else 1
    except DefinitionError as exc:
        for d in exc.diagnostics:
            log.error("flows_invalid", problem=str(d))
        return 1


def _supervise(settings: Settings, host: str, port: int, workers: int) -> int:
    """Run ``workers`` server processes on one port; stop them all when told or when one
    dies (whoever runs us restarts the whole; a half-served port is worse than none).

    SIGINT and SIGTERM stop every worker; SIGHUP is passed on (each reloads the flows).
    """
    if _port_taken(host, port):
        log.error("listen_failed", url=f"http://{host}:{port}",
                  error="the port is in use (workers of a server killed before?)")
        return 1
    # We hold the write end and never write: the workers see end of file when we die.
    watched, held = os.pipe()
    env = {**os.environ, "DATABASE_URL": settings.database_url or "",
           "REDIS_URL": settings.redis_url or "", _SUPERVISOR_FD: str(watched)}
    cmd = [sys.executable, "-m", "web.cli", "serve", "--host", host, "--port", str(port),
           "--worker"]
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int = signal.SIGTERM, frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def hup(signum: int, frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGHUP)

    previous = {sig: signal.signal(sig, handler) for sig, handler in (
        (signal.SIGINT, stop), (signal.SIGTERM, stop), (signal.SIGHUP, hup))}
    failed = False
    try:
        # Our own interpreter and module, with arguments we built: no shell, no input.
        children.extend(subprocess.Popen(cmd, env=env, pass_fds=(watched,))  # noqa: S603
                        for _ in range(workers))
        log.info("workers_started", workers=workers, pids=[c.pid for c in children],
                 url=f"http://{host}:{port}")
        # Poll our own children only: os.wait() would also reap the embedded servers'
        # processes, whose owners wait for them.
        while any(c.poll() is None for c in children):
            time.sleep(0.2)  # a signal runs its handler at once, then the loop goes on
            if not stopping:
                for child in children:
                    if child.returncode is not None:
                        log.error("worker_exited", pid=child.pid, code=child.returncode)
                        failed = True
                if failed:
                    stop()
        if not failed and any(c.returncode not in (0, -signal.SIGTERM, -signal.SIGINT)
                              for c in children):
            failed = True
    finally:
        stop()
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=15)
            if child.poll() is None:
                child.kill()
                child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(watched)
        os.close(held)
    return 1 if failed else 0


def _port_taken(host: str, port: int) -> bool:
    """Whether something listens on the address already.

    Workers bind with SO_REUSEPORT, which would let them join whoever is there (say,
    workers left over from a server killed with SIGKILL) instead of failing. This bind
    has no SO_REUSEPORT and fails if anyone has the port; SO_REUSEADDR ignores
    connections of the past still in TIME_WAIT.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except OSError:
        return False  # the workers' own bind says what is wrong with the host
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return True
    return False


async def _check_flows(settings: Settings) -> None:
    """Raise the file's DefinitionError unless it loads or a set was served before."""
    try:
        load_file(settings.flows_file, build_registry(settings.flow_modules))
    except DefinitionError:
        assert settings.database_url
        pool = await create_pool(settings.database_url, min_size=1, max_size=1,
                                 acquire_timeout=settings.db_acquire_timeout or None,
                                 command_timeout=settings.db_command_timeout or None,
                                 transaction_pooling=settings.db_transaction_pooling)
        try:
            if not await PgStore(pool).served_definitions():
                raise
        finally:
            await pool.close()


async def _example_secret(settings: Settings) -> Path:
    assert settings.database_url
    pool = await create_pool(settings.database_url, min_size=1, max_size=1,
                             acquire_timeout=settings.db_acquire_timeout or None,
                             command_timeout=settings.db_command_timeout or None)
    try:
        return await example.ensure_secret(PgOidc(pool), make_vault(settings),
                                           settings.data_dir, make_clock(settings).now())
    finally:
        await pool.close()


def _start_example(settings: Settings) -> subprocess.Popen[bytes] | None:
    """In development, the example business system beside the server (EXAMPLE_SYSTEM)."""
    if not settings.example_system or settings.environment != "development":
        return None
    try:
        systems = load_systems(settings.systems_path)
    except DefinitionError:
        return None  # the server says what is wrong with the file, and does not start
    if systems.get(example.SYSTEM_ID) is None:
        return None
    secret_file = run(_example_secret(settings))
    return example.start(systems, issuer=public_url(settings), secret_file=secret_file)


def serve(settings: Settings, *, host: str | None = None, port: int | None = None,
          migrate_first: bool = False, workers: int = 1) -> int:
    overrides, servers = resolve(data_dir=settings.data_dir)
    if servers is not None:
        settings = attrs.evolve(settings, database_url=overrides.get("DATABASE_URL",
                                                                     settings.database_url),
                                redis_url=overrides.get("REDIS_URL", settings.redis_url))
        migrate_first = True
    pid_file = Path(settings.data_dir) / "serve.pid"
    business_system = None
    try:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(str(os.getpid()))
        if settings.example_system and settings.environment == "development":
            if migrate_first:  # the example's secret is stored in a migrated database
                assert settings.database_url
                log.info("migrated", applied=run(migrate_database(settings.database_url)))
                migrate_first = False
            business_system = _start_example(settings)
        if workers > 1:
            if migrate_first:
                assert settings.database_url
                log.info("migrated", applied=run(migrate_database(
            settings.database_url, transaction_pooling=settings.db_transaction_pooling)))
            # The flows are checked once here, as each worker will (web/app.py), so a
            # file that cannot serve fails before any fork.
            run(_check_flows(settings))
            return _supervise(settings, host or settings.host, port or settings.port,
                              workers)
        if not run(_run(settings, host or settings.host, port or settings.port,
                                migrate_first)):
            return 1
    except DefinitionError as exc:
        for d in exc.diagnostics:
            log.error("flows_invalid", problem=str(d))
        return 1
    finally:
        example.stop(business_system)
        # Another server started with the same DATA_DIR may have written its pid since.
        with contextlib.suppress(OSError):
            if pid_file.read_text().strip() == str(os.getpid()):
                pid_file.unlink()
        if servers is not None:
            servers.stop()
    return 0
