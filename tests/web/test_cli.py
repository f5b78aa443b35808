"""flowctl as a user runs it: bad settings, `admin create` without a terminal, `serve`'s
refusals, and the database commands on the embedded servers `make run` starts.

Every command here is a real ``flowctl`` process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.platform import PASSWORD
from tests.web.test_processes import (
    FLOWCTL,
    ROOT,
    Server,
    alive,
    base_env,
    free_port,
    start_at_code,
    start_servers,
)
from tests.web.test_settings import DEV_ENC_KEY, production_env


def flowctl(env: dict[str, str], *args: str, stdin: str | None = None,
            timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLOWCTL, *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False,
                          input=stdin, stdin=subprocess.DEVNULL if stdin is None else None)


def log_events(stderr: str) -> list[str]:
    events = []
    for line in stderr.splitlines():
        try:
            events.append(json.loads(line)["event"])
        except (ValueError, KeyError, TypeError):
            continue
    return events


# -- bad settings -----------------------------------------------------------------------


def test_bad_settings_are_refused_one_line_each_with_exit_code_2() -> None:
    env = {**base_env(), "PORT": "abc", "SERVE_WORKERS": "two", "LOG_FORMAT": "xml",
           "COOKIE_SECURE": "maybe"}
    for command in (["serve"], ["versions"], ["lint"]):
        done = flowctl(env, *command)
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines() == [
            "flowctl: PORT must be a whole number from 1 to 65535, not 'abc'",
            "flowctl: LOG_FORMAT must be one of auto, json, console, not 'xml'",
            "flowctl: SERVE_WORKERS must be a whole number from 1 to 256, not 'two'",
            "flowctl: COOKIE_SECURE must be true or false (also 1/0, yes/no, on/off), "
            "not 'maybe'"]
        assert done.stdout == ""


def test_keys_works_whatever_the_settings_so_bad_keys_can_be_replaced() -> None:
    done = flowctl({**base_env(), "ENVIRONMENT": "production", "PII_ENC_KEY": "bad"}, "keys")
    assert done.returncode == 0, done.stderr
    assert [line.split("=")[0] for line in done.stdout.splitlines()] == [
        "PII_ENC_KEY", "PII_INDEX_KEY"]


def test_serve_in_production_refuses_the_development_keys_given_explicitly() -> None:
    env = {**base_env(), **production_env(PII_ENC_KEY=DEV_ENC_KEY), "PORT": str(free_port())}
    done = flowctl(env, "serve", timeout=30)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "flowctl: PII_ENC_KEY is a development key, which anyone can recompute: set one of "
        "your own in production (flowctl keys)"]


@pytest.mark.parametrize(("variables", "args", "shown"), [
    ({"HOST": "0.0.0.0"}, [], "0.0.0.0"),  # noqa: S104 - what is refused
    ({}, ["--host", "::"], "::"),
    ({"HOST": "192.168.1.20"}, [], "192.168.1.20"),
])
def test_serve_in_development_refuses_to_listen_beyond_loopback(
        variables: dict[str, str], args: list[str], shown: str, tmp_path: Path) -> None:
    env = {**base_env(), **variables, "PORT": str(free_port()), "DATA_DIR": str(tmp_path)}
    done = flowctl(env, "serve", *args, timeout=30)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"refusing to serve on {shown}: in development")
    assert "HOST=127.0.0.1" in line
    assert "ENVIRONMENT=production" in line
    assert list(tmp_path.iterdir()) == []  # it started nothing, not even a database


# -- admin create without a terminal --------------------------------------------------


def test_admin_create_without_a_terminal_asks_for_password_stdin() -> None:
    done = flowctl(base_env(), "admin", "create", "root")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "admin create: no terminal to ask the password at; pipe it in with "
        "--password-stdin (the first line of stdin is the password)"]


def test_admin_create_with_nothing_on_stdin_says_so() -> None:
    done = flowctl(base_env(), "admin", "create", "root", "--password-stdin", stdin="")
    assert done.returncode == 2
    assert done.stderr.startswith("--password-stdin: the first line of stdin is empty")
    assert "Traceback" not in done.stderr


# -- database commands on the embedded servers ---------------------------------------


@pytest.fixture
def embedded_dir() -> Iterator[Path]:
    """A DATA_DIR outside pytest's folders (see test_processes.data_dir: pgserver as root)."""
    path = Path(tempfile.mkdtemp(prefix="flows-cli-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def postmaster(data_dir: Path) -> int | None:
    pid_file = data_dir / "postgres" / "postmaster.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().split()[0])
    return pid if alive(pid) else None


@pytest.mark.slow
def test_database_commands_use_the_embedded_servers_of_make_run(
        embedded_dir: Path, flows_file: Path, tmp_path: Path) -> None:
    servers: list[Server] = []
    try:
        check_database_commands(embedded_dir, flows_file, servers, tmp_path)
    finally:
        for server in servers:
            server.stop()


def check_database_commands(embedded_dir: Path, flows_file: Path, servers: list[Server],
                            tmp_path: Path) -> None:
    env = {**base_env(), "FLOWS_FILE": str(flows_file), "DATA_DIR": str(embedded_dir)}

    # Nothing serving: the command starts the database, and stops it after.
    done = flowctl(env, "migrate")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("applied: 0001_")
    events = log_events(done.stderr)
    assert (events[0], events[-1]) == ("embedded_postgres_started",
                                       "embedded_postgres_stopped")
    assert postmaster(embedded_dir) is None
    done = flowctl(env, "admin", "create", "root", "--password-stdin", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("administrator root created: ")
    assert postmaster(embedded_dir) is None

    # `make run` serving: the commands use its database and leave it running.
    (server,) = start_servers(servers, [{**env, "PORT": str(free_port())}], tmp_path,
                              timeout=90)
    pid = postmaster(embedded_dir)
    assert pid is not None
    iid = start_at_code(server)
    results: dict[str, Any] = {}
    for name, args, stdin in [
            ("admin", ["admin", "create", "second", "--password-stdin"], PASSWORD + "\n"),
            ("versions", ["versions"], None),
            ("export", ["export", iid], None),
            ("replay", ["replay", iid], None),
            ("audit", ["audit"], None)]:
        done = flowctl(env, *args, stdin=stdin)
        assert done.returncode == 0, (name, done.stderr)
        events = log_events(done.stderr)
        assert "embedded_postgres_attached" in events, (name, events)
        assert "embedded_postgres_left_running" in events, (name, events)
        assert "embedded_postgres_stopped" not in events, (name, events)
        assert postmaster(embedded_dir) == pid, name
        results[name] = done.stdout
    assert server.ready() is not None
    assert "signup\t" in results["versions"]
    assert json.loads(results["export"].splitlines()[1])["id"] == iid
    assert results["replay"].startswith("ok: ")
    assert "every chain verifies" in results["audit"]
    login = flowctl(env, "admin", "create", "second", "--password-stdin",
                    stdin=PASSWORD + "\n")
    assert login.returncode == 1
    assert "the login name 'second' is taken" in login.stderr

    # The server's own stop stops the database: no command holds it.
    assert server.stop() == 0
    assert postmaster(embedded_dir) is None
    done = flowctl(env, "versions")
    assert done.returncode == 0, done.stderr
    assert "signup\t" in done.stdout
    assert postmaster(embedded_dir) is None


def test_actions_lists_every_name_with_what_it_declares(
        capsys: pytest.CaptureFixture[str]) -> None:
    from engine import Registry
    from web.cli import main

    registry = Registry().load_modules(["flows"])
    assert main(["actions", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    names = {(e["kind"], e["name"]) for e in listed}
    assert names == ({("action", n) for n in registry.actions}
                     | {("guard", n) for n in registry.guards}
                     | {("validator", n) for n in registry.validators}
                     | {("policy", n) for n in registry.policies}
                     | {("sender", n) for n in registry.senders})
    sms = next(e for e in listed if e["name"] == "send_sms_code")
    assert [p["name"] for p in sms["params"]] == ["phone", "purpose"]
    assert "sent_to" in sms["results"]
    assert "sms_code_dead" in {r["error_id"] for r in sms["refusals"]}
    assert main(["actions", "--kind", "guard"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines()
             if not line.startswith(" ")]
    assert lines
    assert all(line.startswith("guard ") for line in lines)
