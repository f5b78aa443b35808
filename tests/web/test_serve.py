"""`flowctl serve` when things go wrong: Redis down for a reload, a broken flows file at
a restart. Real processes, as in test_processes.py."""

from __future__ import annotations

import os
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.web import test_processes as processes
from tests.web.test_processes import (
    INVALID_YAML,
    Server,
    flowctl,
    free_port,
    start_at_code,
    start_servers,
    wait_for,
)

# The fixtures of test_processes.py, shared.
clock_file = processes.clock_file
flows_path = processes.flows_path
make_env = processes.make_env
process_db = processes.process_db
servers = processes.servers


@pytest.mark.slow
def test_reload_without_redis_signals_and_a_restart_on_a_broken_file_keeps_serving(
        servers: list[Server], make_env: Callable[[str], dict[str, str]],
        flows_path: Path, tmp_path: Path) -> None:
    env = make_env("reload")
    (server,) = start_servers(servers, [env], tmp_path)
    (served,) = server.get("/api/flows")[1]["flows"]

    # Redis cannot be reached from where `flowctl reload` runs: the local server still
    # gets its SIGHUP, and the operator one line on why nothing was published.
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    result = flowctl({**env, "REDIS_URL": nobody, "REDIS_TIMEOUT": "2"}, "reload")
    assert result.returncode == 0, result
    assert result.stdout.strip().splitlines()[-1] == f"SIGHUP sent to {server.pid}"
    (complaint,) = result.stderr.strip().splitlines()
    assert complaint.startswith("not published over Redis (ConnectionError: ")
    assert "Traceback" not in result.stderr
    wait_for("the reload", lambda: server.events("flows_reloaded"))

    # Nobody to tell at all: one line, exit 1.
    result = flowctl({**env, "REDIS_URL": nobody, "DATA_DIR": str(tmp_path)}, "reload")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "no server told" in result.stderr.strip().splitlines()[-1]

    # A broken file on disk, then the server dies: the restart (here with two workers,
    # as a supervisor restarts the whole) serves what was served, and says why.
    flows_path.write_text(INVALID_YAML, encoding="utf-8")
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(10)
    again = Server({**env, "SERVE_WORKERS": "2", "PORT": str(free_port())},
                   tmp_path / "again.log")
    servers.append(again)
    wait_for("two workers serving", lambda: len(again.events("serving")) == 2 or (
        again.exited() or False), timeout=60)
    again.wait_ready()
    (flow,) = again.get("/api/flows")[1]["flows"]
    assert flow["version"] == served["version"]
    fallbacks = again.events("flows_file_invalid_serving_stored")
    assert len(fallbacks) == 2  # one a worker
    assert any("undefined state 'nowhere'" in e for e in fallbacks[0]["errors"])
    start_at_code(again)
    with urllib.request.urlopen(again.url + "/metrics", timeout=10) as resp:  # noqa: S310
        assert "\nflows_file_invalid 1.0\n" in resp.read().decode()
