"""A real server for the browser tests, and one Chromium for each module.

The server is the whole platform (real flows.yaml, sandbox providers, timers and outbox
running) served by aiohttp on a free port, in a thread of its own with its own event
loop, against this run's PostgreSQL database and a Redis key prefix of its own. The
browser is the system Chromium (Debian's ``chromium``; .ci/run installs it): Playwright
downloads none.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from playwright import sync_api as playwright_api

from tests.conftest import REDIS_URL, ROOT, search_and_clear
from tests.web.oidc.conftest import oidc  # noqa: F401 - the platform with systems, here too
from web.app import create_app
from web.settings import Settings

CHROMIUM = "/usr/bin/chromium"
# Screenshots of every step, at both widths: test output, not source (.gitignore).
SHOTS = ROOT / "test-output" / "screenshots"
WIDTHS = (1280, 360)




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _refuse_used(port: int) -> None:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise RuntimeError(f"port {port} is in use: not starting a server on it")


class Server:
    """The platform in a thread: ``url``, and ``run`` for a coroutine on its loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.app: web.Application | None = None
        self.runner: web.AppRunner | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        _refuse_used(self.settings.port)
        self.thread.start()

        async def up() -> None:
            self.app = create_app(self.settings)
            self.runner = web.AppRunner(self.app)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.settings.port).start()

        self.run(up())

    def stop(self) -> None:
        if self.runner is not None:
            self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def serving(database_url: str, redis_prefix: str, **overrides: Any) -> Iterator[Server]:
    """The platform served in a thread on a free port; ``overrides``: other settings."""
    port = free_port()
    prefix = f"{redis_prefix}browser-{uuid.uuid4().hex[:6]}:"
    settings = Settings(database_url=database_url, redis_url=REDIS_URL, redis_prefix=prefix,
                        flows_file=str(ROOT / "flows.yaml"), flow_modules=("flows",),
                        workers=True, outbox_interval=0.1, log_format="console",
                        pool_max=10, port=port, public_url=f"http://127.0.0.1:{port}",
                        argon2_memory_kib=1024, argon2_time_cost=1)
    srv = Server(attrs.evolve(settings, **overrides))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()

        async def clean() -> None:
            client = aioredis.from_url(REDIS_URL)
            await search_and_clear(client, prefix)
            await client.aclose()

        asyncio.run(clean())


@pytest.fixture(scope="module")
def server(database_url: str, redis_prefix: str) -> Iterator[Server]:
    with serving(database_url, redis_prefix) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("Chromium is missing: apt-get install chromium (.ci/run does)")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A browser context in Chinese, 1280 px wide."""
    ctx = browser.new_context(locale="zh-CN", viewport={"width": WIDTHS[0], "height": 900})
    # Every page of it, the sandbox phone pages a walk opens too, waits 15 s at most.
    ctx.set_default_timeout(15000)
    ctx.set_default_navigation_timeout(15000)
    try:
        yield ctx
    finally:
        ctx.close()
