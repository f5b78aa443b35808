"""PostgreSQL and Redis servers of a test's own, to kill, freeze and bring back.

The shared servers on 5432 and 6379 serve every test run on the machine: a test that
needs an outage makes one here instead. Each listens on 127.0.0.1, on a port checked
free, and goes away with ``close()`` whatever state it was left in.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout}s")
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _postgres_bin() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


class Postgres:
    """A cluster in a temporary folder: initdb, pg_ctl; as a user of its own under root."""

    def __init__(self) -> None:
        found = _postgres_bin()
        if found is None:
            pytest.skip("PostgreSQL's initdb and pg_ctl are not installed")
        self.bin: Path = found
        self.folder = Path(tempfile.mkdtemp(prefix="flows-outage-pg-"))
        self.data = self.folder / "data"
        self.user: str | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            for name in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    entry = pwd.getpwnam(name)
                    os.chown(self.folder, entry.pw_uid, entry.pw_gid)
                    self.user = name
                    break
            if self.user is None:
                pytest.skip("running as root with no user to run PostgreSQL as")
        self.port = free_port()
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "--encoding=UTF8")
        self.start()

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60, cwd=self.folder)

    def start(self) -> None:
        if _listening(self.port):
            pytest.fail(f"port {self.port} was taken while PostgreSQL was down")
        # No fsync: a test's data need not survive the machine, only the server's
        # crash (kill), which the operating system's cache outlives.
        options = (f"-c port={self.port} -c listen_addresses=127.0.0.1 "
                   "-c unix_socket_directories='' -c fsync=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                  str(self.folder / "log"), "-w", "-t", "30", "start")

    @property
    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def kill(self) -> None:
        """Stop it the way a crash does: no shutdown checkpoint, sessions cut."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def processes(self) -> list[int]:
        return [self.pid, *_children(self.pid)]

    def freeze(self) -> None:
        """SIGSTOP the postmaster first (it starts no one new), then every backend."""
        for pid in self.processes():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.thaw()
        with contextlib.suppress(Exception):
            self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


class Redis:
    """A redis-server of its own, in the foreground (SIGKILL, SIGSTOP reach it)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.folder = Path(tempfile.mkdtemp(prefix="flows-outage-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if _listening(self.port):
            pytest.fail(f"port {self.port} was taken while Redis was down")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(f"redis-server on :{self.port}", lambda: _listening(self.port))
        if self.proc.poll() is not None:  # someone else answered on the port
            pytest.fail(f"redis-server could not listen on :{self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        self.thaw()
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def _port_near(preferred: int, *, bus: bool = False) -> int:
    """``preferred`` if it (and, for a cluster node, its bus port +10000) is free here,
    else a free port: a port in use is never taken over.

    Each pytest-xdist worker prefers ports of its own (100 apart): two workers starting
    their servers at the same moment both found the same port free, and one failed.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    preferred += 100 * int(worker) if worker.isdigit() else 0
    bus_free = not bus or (preferred + 10000 <= 65535 and not _listening(preferred + 10000))
    if preferred <= 65535 and bus_free and not _listening(preferred):
        return preferred
    while True:
        port = free_port()
        if not bus or (port + 10000 <= 65535 and not _listening(port + 10000)):
            return port


def _run_as() -> str | None:
    """A user to run a server as when the tests run as root (PgBouncer refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    pytest.skip("running as root with no user to run PgBouncer as")


class PgBouncer:
    """PgBouncer in transaction pooling in front of ``upstream`` (host:port of a
    PostgreSQL with trust authentication), every database name passed through.

    Fewer server connections than clients (``pool_size``): a statement prepared on one
    server connection is missing on the next, as in production.
    """

    def __init__(self, upstream_host: str, upstream_port: int, *, port: int = 6433,
                 pool_size: int = 8, reset_always: bool = False) -> None:
        binary = shutil.which("pgbouncer") or (
            "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
        if binary is None:
            pytest.skip("pgbouncer is not installed (.ci/run installs it from apt)")
        self.folder = Path(tempfile.mkdtemp(prefix="flows-pgbouncer-"))
        self.port = _port_near(port)
        (self.folder / "users.txt").write_text('"postgres" ""\n')
        (self.folder / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={upstream_host} port={upstream_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.folder / 'users.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\nmin_pool_size = 0\nreserve_pool_size = 0\n"
            "max_client_conn = 1000\n"
            # DISCARD ALL after every transaction, if ``reset_always``: a statement
            # prepared in one transaction is gone in the next, whichever server serves it.
            + ("server_reset_query = DISCARD ALL\nserver_reset_query_always = 1\n"
               if reset_always else "server_reset_query =\n") +
            "admin_users = postgres\n"
            f"logfile = {self.folder / 'pgbouncer.log'}\n")
        user = _run_as()
        if user is not None:
            entry = pwd.getpwnam(user)
            for path in (self.folder, *self.folder.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        cmd = [binary, str(self.folder / "pgbouncer.ini")]
        if user is not None:
            cmd = ["runuser", "-u", user, "--", *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=self.folder)
        _wait(f"pgbouncer on :{self.port}",
              lambda: _listening(self.port) or self.proc.poll() is not None)
        if self.proc.poll() is not None:
            log = (self.folder / "pgbouncer.log")
            text = log.read_text() if log.exists() else ""
            self.close()
            pytest.fail(f"pgbouncer did not start on :{self.port}: {text[-2000:]}")

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        path = self.folder / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


class RedisCluster:
    """A Redis Cluster of three masters on loopback (no replicas), slots spread evenly."""

    def __init__(self, ports: tuple[int, ...] = (7101, 7102, 7103)) -> None:
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            pytest.skip("redis-server and redis-cli are not installed "
                        "(.ci/run installs redis-server from apt)")
        self.folder = Path(tempfile.mkdtemp(prefix="flows-redis-cluster-"))
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        try:
            for preferred in ports:
                port = _port_near(preferred, bus=True)
                while port in self.ports:
                    port = _port_near(free_port(), bus=True)
                self.ports.append(port)
                self.procs.append(subprocess.Popen(
                    [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", str(self.folder),
                     "--cluster-enabled", "yes",
                     "--cluster-config-file", f"nodes-{port}.conf",
                     "--cluster-node-timeout", "5000"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for port, proc in zip(self.ports, self.procs, strict=True):
                _wait(f"redis-server on :{port}",
                      lambda p=port, pr=proc: _listening(p) or pr.poll() is not None)
                if proc.poll() is not None:
                    pytest.fail(f"redis-server could not listen on :{port}")
            subprocess.run([cli, "--cluster", "create",
                            *(f"127.0.0.1:{p}" for p in self.ports),
                            "--cluster-replicas", "0", "--cluster-yes"],
                           check=True, capture_output=True, timeout=60)
            _wait("the cluster's state to be ok", lambda: all(
                b"cluster_state:ok" in subprocess.run(
                    [cli, "-p", str(p), "cluster", "info"], capture_output=True,
                    timeout=10).stdout for p in self.ports))
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        """One node; a cluster client reads the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


class RedisSentinel:
    """A Redis master, one replica and three sentinels watching them, on loopback.

    ``failover()`` asks a sentinel to promote the replica and waits until the sentinels
    name it and the old master follows it, as a real failover ends.
    """

    MASTER = "flows"

    def __init__(self) -> None:
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            pytest.skip("redis-server and redis-cli are not installed "
                        "(.ci/run installs redis-server from apt)")
        self.cli = cli
        self.folder = Path(tempfile.mkdtemp(prefix="flows-redis-sentinel-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        try:
            self.master_port = free_port()
            self.replica_port = _port_near(free_port())
            self._server(binary, self.master_port)
            self._server(binary, self.replica_port,
                         "--replicaof", "127.0.0.1", str(self.master_port))
            self.sentinel_ports: list[int] = []
            for _ in range(3):
                port = free_port()
                while port in (self.master_port, self.replica_port, *self.sentinel_ports):
                    port = free_port()
                conf = self.folder / f"sentinel-{port}.conf"
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\ndir {self.folder}\n"
                    f"sentinel monitor {self.MASTER} 127.0.0.1 {self.master_port} 2\n"
                    f"sentinel down-after-milliseconds {self.MASTER} 2000\n"
                    f"sentinel failover-timeout {self.MASTER} 10000\n", encoding="utf-8")
                self.sentinel_ports.append(port)
                self._start([binary, str(conf), "--sentinel"], port)
            _wait("the replica to be in sync", lambda: b"master_link_status:up" in
                  self._ask(self.replica_port, "info", "replication"))
            _wait("the sentinels to know the replica and each other", self._settled)
        except BaseException:
            self.close()
            raise

    def _server(self, binary: str, port: int, *extra: str) -> None:
        # A replica syncs at once, not after the five seconds' wait diskless sync makes
        # for more replicas to come.
        self._start([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", str(self.folder),
                     "--repl-diskless-sync-delay", "0", *extra], port)

    def _start(self, command: list[str], port: int) -> None:
        if _listening(port):
            pytest.fail(f"port {port} is taken")
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        _wait(f"redis on :{port}", lambda: _listening(port) or proc.poll() is not None)
        if proc.poll() is not None:
            pytest.fail(f"redis could not listen on :{port}")

    def _ask(self, port: int, *command: str) -> bytes:
        return subprocess.run([self.cli, "-p", str(port), *command], capture_output=True,
                              timeout=10).stdout

    def _settled(self) -> bool:
        return all(
            str(self.replica_port).encode() in self._ask(p, "sentinel", "replicas",
                                                         self.MASTER)
            and self._ask(p, "sentinel", "sentinels", self.MASTER).count(b"\nname\n")
            + self._ask(p, "sentinel", "sentinels", self.MASTER).startswith(b"name\n") >= 2
            for p in self.sentinel_ports)

    @property
    def sentinels(self) -> tuple[tuple[str, int], ...]:
        return tuple(("127.0.0.1", p) for p in self.sentinel_ports)

    def master(self) -> int:
        """The port the sentinels name as the master's now."""
        answer = self._ask(self.sentinel_ports[0], "sentinel", "get-master-addr-by-name",
                           self.MASTER).split()
        return int(answer[1])

    def failover(self) -> None:
        """Promote the replica; return once every sentinel names it and the old master
        has stepped down (it answers READONLY to writes)."""
        old, new = self.master(), self.replica_port if self.master() == self.master_port \
            else self.master_port
        answer = self._ask(self.sentinel_ports[0], "sentinel", "failover", self.MASTER)
        if not answer.startswith(b"OK"):
            pytest.fail(f"sentinel failover: {answer!r}")
        _wait("the sentinels to name the new master", lambda: all(
            str(new).encode() in self._ask(p, "sentinel", "get-master-addr-by-name",
                                           self.MASTER) for p in self.sentinel_ports))
        _wait("the new master to take writes", lambda: b"role:master" in
              self._ask(new, "info", "replication"))
        # The sentinels turn the old master into a replica when they next read its INFO
        # (every 10 s); tell it now what they would.
        self._ask(old, "replicaof", "127.0.0.1", str(new))
        _wait("the old master to step down", lambda: b"role:slave" in
              self._ask(old, "info", "replication"))

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)
