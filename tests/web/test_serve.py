"""`flowctl serve` when things go wrong: its supervisor killed, Redis down for a reload, a
broken flows file at a restart. Real processes, as in test_processes.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.web import test_processes as processes
from tests.web.test_processes import (
    FLOWCTL,
    INVALID_YAML,
    ROOT,
    Server,
    alive,
    base_env,
    flowctl,
    free_port,
    processes_mentioning,
    start_at_code,
    start_servers,
    wait_for,
)

# The fixtures of test_processes.py, shared.
clock_file = processes.clock_file
data_dir = processes.data_dir
flows_path = processes.flows_path
make_env = processes.make_env
process_db = processes.process_db
servers = processes.servers


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def postmaster_of(data_dir: Path) -> int:
    return int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])


def redis_of(server: Server) -> int:
    (started,) = server.events("embedded_redis_started")
    return int(started["pid"])


@pytest.mark.slow
def test_workers_die_with_a_killed_supervisor_and_the_next_serve_reuses_the_servers(
        servers: list[Server], flows_path: Path, data_dir: Path, tmp_path: Path) -> None:
    env = {**base_env(), "FLOWS_FILE": str(flows_path), "PORT": str(free_port()),
           "DATA_DIR": str(data_dir), "SERVE_WORKERS": "2"}
    first = Server(env, tmp_path / "first.log")
    servers.append(first)
    wait_for("two workers serving", lambda: len(first.events("serving")) == 2 or (
        first.exited() or False), timeout=90)
    first.wait_ready()
    (started,) = first.events("workers_started")
    workers = started["pids"]
    postmaster, redis_pid = postmaster_of(data_dir), redis_of(first)

    os.kill(first.pid, signal.SIGKILL)
    first.proc.wait(10)
    wait_for("the workers to exit", lambda: not any(alive(w) for w in workers), timeout=10)
    assert port_free(first.port), "the workers left the port bound"
    # Each stopped cleanly, told by the kernel or by the pipe's end, not killed.
    assert len(first.events("stopping")) == 2
    # The embedded servers outlive a SIGKILL (nothing runs to stop them)...
    assert alive(postmaster)
    assert alive(redis_pid)

    # ...and the next serve on the same folder and port takes them over, not anew.
    second = Server(env, tmp_path / "second.log")
    servers.append(second)
    wait_for("two workers serving again", lambda: len(second.events("serving")) == 2 or (
        second.exited() or False), timeout=90)
    second.wait_ready()
    assert postmaster_of(data_dir) == postmaster
    assert redis_of(second) == redis_pid
    start_at_code(second)

    # A clean stop now stops them too (the killed server no longer counts as a user).
    assert second.stop() == 0
    assert not alive(postmaster), "the embedded PostgreSQL is still running"
    assert not alive(redis_pid), "the embedded redis-server is still running"
    assert processes_mentioning(str(data_dir)) == []
    assert second.events("embedded_postgres_handles_dropped")


@pytest.mark.slow
def test_a_worker_whose_supervisor_is_gone_before_it_starts_stops_cleanly(
        make_env: Callable[[str], dict[str, str]], tmp_path: Path) -> None:
    """The pipe covers what no death signal can: a supervisor dead before the worker
    asked for one."""
    watched, held = os.pipe()
    os.close(held)  # the supervisor is gone already
    env = {**make_env("orphan"), "FLOWCTL_SUPERVISOR_FD": str(watched)}
    log = tmp_path / "orphan.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([*FLOWCTL, "serve", "--worker"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err, pass_fds=(watched,))
    os.close(watched)
    try:
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert '"supervisor_gone"' in text
    assert '"stopping"' in text
    assert "Traceback" not in text


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
