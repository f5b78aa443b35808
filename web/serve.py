"""Run the server: embedded databases if needed, migrations, signals, clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import attrs
import structlog
from aiohttp import web

from engine import DefinitionError
from storage import migrate
from web import keys
from web.app import create_app
from web.devservers import resolve
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


async def _run(settings: Settings, host: str, port: int, migrate_first: bool) -> bool:
    """Serve until SIGINT/SIGTERM; False if the address could not be bound."""
    assert settings.database_url
    if migrate_first:
        conn = await asyncpg.connect(settings.database_url)
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
        log.info("migrated", applied=applied)
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()  # starts the pool, Redis and the workers: cleaned up below
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:  # the port is taken, or the host is not ours
            log.error("listen_failed", url=f"http://{host}:{port}", error=str(exc))
            return False
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)

        reloads: set[asyncio.Task[bool]] = set()  # the loop keeps only weak references

        def hup() -> None:
            task = asyncio.ensure_future(app[keys.RELOAD]())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, hup)
        log.info("serving", url=f"http://{host}:{port}", flows=settings.flows_file)
        await stop.wait()
        return True
    finally:
        log.info("stopping")
        await runner.cleanup()


def serve(settings: Settings, *, host: str | None = None, port: int | None = None,
          migrate_first: bool = False) -> int:
    overrides, servers = resolve(data_dir=settings.data_dir)
    if servers is not None:
        settings = attrs.evolve(settings, database_url=overrides.get("DATABASE_URL",
                                                                     settings.database_url),
                                redis_url=overrides.get("REDIS_URL", settings.redis_url))
        migrate_first = True
    pid_file = Path(settings.data_dir) / "serve.pid"
    try:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(str(os.getpid()))
        if not run(_run(settings, host or settings.host, port or settings.port,
                                migrate_first)):
            return 1
    except DefinitionError as exc:
        for d in exc.diagnostics:
            log.error("flows_invalid", problem=str(d))
        return 1
    finally:
        # Another server started with the same DATA_DIR may have written its pid since.
        with contextlib.suppress(OSError):
            if pid_file.read_text().strip() == str(os.getpid()):
                pid_file.unlink()
        if servers is not None:
            servers.stop()
    return 0
