"""Steps per second: pgbench on the engine's own SQL, the engine in process, and HTTP.

``python -m bench.steps`` (or ``make bench``) prints one JSON object on stdout; progress
goes to stderr. One run, one fresh database (``bench_<pid>``, dropped at the end), the
same tables for every measurement:

1. **pgbench** runs exactly the statements one engine step issues: the load
   (:data:`storage.pg.LOAD_SQL`) then the commit CTE (:data:`storage.pg.COMMIT_SQL`), one
   pgbench transaction per step, prepared protocol, against pre-created instances. The
   script is generated from the statements *recorded* while the engine takes a real
   step (checked to be those two constants and nothing else), with the recorded
   parameter values; only the per-step ones become pgbench variables (instance id,
   loaded version, next version, previous hash, idempotency key). pgbench cannot bind a
   NULL parameter, so the parameters the engine sends as NULL are written in as typed
   NULL literals (``NULL::timestamptz``) in place of their ``$n``.
2. **engine**: ``Runtime.advance`` in this process, the same number of concurrent tasks
   as pgbench clients, over the self-looping flow of :mod:`bench.flow`.
3. **http**: a real ``flowctl serve`` subprocess driven by keep-alive HTTP/1.1 clients
   (:class:`KeepAlive`, a load generator as lean as pgbench is).
4. **memory**: the server's peak RSS (``VmHWM``) after the HTTP run, then again after
   inserting ``--instances`` more instances with one ``INSERT ... SELECT`` and stepping a
   random sample of them over HTTP.

Steps 1 to 3 run in ``--rounds`` rounds (pgbench, engine, HTTP; again), so that each
round's ratios compare windows a few seconds apart on a machine whose speed drifts; the
step rates, ratios and CPU figures reported are medians over the rounds, and
``per_round`` lists every round.

Plus a micro-benchmark of ``CompiledFlow.decide`` against building a ``transitions``
machine for every decision.

Every step picks a uniformly random instance. Instance ``n`` has the id
``md5('bench:' || n)::uuid``, so Python and SQL agree on ids without a lookup table. A
pgbench script cannot turn a random integer into a uuid by itself (its variables are
numbers), so it asks the server for ``--pick-batch`` ids in one table-less round trip and
takes that many steps, one per id, before asking again; the step's two statements are
repeated once per id in the script, each exactly the engine's. Measured on 2 cores, 16
clients: batches of 1, 4 and 16 give the same rate within noise; 64 copies halve it
(each copy is planned on its own, five custom plans before the generic one).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis
import structlog

from bench import options
from bench.flow import BENCH_YAML, FLOW, STEP_INPUT, TRIGGER, bench_registry
from engine import (
    CompiledFlow,
    ConcurrencyConflict,
    GuardInput,
    Instance,
    Registry,
    Runtime,
    SystemClock,
    load_text,
)
from engine.canonical import canonical_json
from engine.loader import FlowSet
from engine.runtime import scoped_key
from storage import PgStore, create_pool
from storage.pg import COMMIT_SQL, LOAD_SQL
from storage.scratch import create_database, drop_database
from web.logs import configure_logging
from web.metrics import Metrics
from web.sessions import device_actor

ROOT = Path(__file__).resolve().parent.parent
# Idempotency keys: 19 decimal digits, what pgbench's random() can make too.
KEY_LO, KEY_HI = 10**18, 9 * 10**18
# The instances belong to one device (a client without a session), as they would over
# HTTP; the HTTP load sends its cookie. Idempotency keys are stored bound to their sender.
BENCH_DEVICE = "bench-" + "0" * 37
BENCH_ACTOR = device_actor(BENCH_DEVICE)
# What the pgbench script puts for each parameter that changes from step to step.
_SCOPED_KEY = "(:actor::text || ' ' || :key::text)"
LOAD_VARS = {1: ":iid", 2: _SCOPED_KEY}
COMMIT_VARS = {1: ":iid", 2: ":l_version", 5: ":v_next", 17: ":l_last_hash", 18: _SCOPED_KEY}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


async def forget_keys(redis_url: str, prefix: str) -> None:
    """Delete a run's Redis keys (everything under its prefix), in batches."""
    client = aioredis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        for n in range(0, len(keys), 500):
            await client.delete(*keys[n:n + 500])
    finally:
        await client.aclose()


def instance_id(n: int) -> str:
    """The id of pre-created instance n; equal to SQL ``md5('bench:' || n)::uuid``."""
    return str(uuid.UUID(hashlib.md5(f"bench:{n}".encode(), usedforsecurity=False).hexdigest()))


def step_key(rng: random.Random) -> str:
    return str(rng.randrange(KEY_LO, KEY_HI))


# Ranges up to this size have their ids worked out once, before the clock starts, so the
# measured loop spends nothing on md5 (in the engine run it shares the engine's process).
PRECOMPUTE_IDS = 200_000


def id_picker(lo: int, hi: int) -> Callable[[random.Random], str]:
    """A function picking the id of a uniformly random instance in lo..hi."""
    if hi - lo < PRECOMPUTE_IDS:
        ids = [instance_id(n) for n in range(lo, hi + 1)]
        return lambda rng: ids[int(rng.random() * len(ids))]
    return lambda rng: instance_id(rng.randint(lo, hi))


@dataclass
class Options:
    seconds: float = 6.0
    warmup: float = 2.0
    rounds: int = 5
    concurrency: int = 16
    instances: int = 1_000_000
    base_instances: int = 10_000
    pick_batch: int = 4
    decide_seconds: float = 1.0
    background_seconds: float = 1.0
    admin_url: str = options.DEFAULT_ADMIN_URL
    redis_url: str = options.DEFAULT_REDIS_URL
    pgbench: str | None = None
    profile_dir: str | None = None
    seed: int = 1


# -- processes, CPU and memory ------------------------------------------------------------

def find_pgbench(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True)
    return str(candidates[0]) if candidates else None


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def peak_rss_mb(pid: int) -> float:
    return round(_status_kb(pid, "VmHWM") / 1024, 1)


def rss_mb(pid: int) -> float:
    return round(_status_kb(pid, "VmRSS") / 1024, 1)


_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of one process."""
    return _stat_cpu_s(Path(f"/proc/{pid}/stat"))


def thread_cpu_s(pid: int, tid: int) -> float:
    """User plus system CPU seconds of one thread of a process (its main thread: the
    process id)."""
    return _stat_cpu_s(Path(f"/proc/{pid}/task/{tid}/stat"))


def _stat_cpu_s(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def children_cpu_s() -> float:
    """CPU seconds of this process's children that have ended (pgbench, once it exits)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_busy_s() -> float:
    """CPU seconds all processors spent not idle, from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return (sum(parts[:8]) - idle) / _TICKS


@dataclass
class CpuWindow:
    """CPU used during a measured window, as a share of one core per process."""

    pids: dict[str, int]
    started: float = 0.0
    before: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self.started = time.perf_counter()
        self.before = {name: proc_cpu_s(pid) for name, pid in self.pids.items()}
        self.before["machine"] = machine_busy_s()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.started
        out = {f"{name}_cores": round((proc_cpu_s(pid) - self.before[name]) / wall, 2)
               for name, pid in self.pids.items()}
        out["machine_busy_cores"] = round((machine_busy_s() - self.before["machine"]) / wall, 2)
        return out


class BackendCpu:
    """CPU of the PostgreSQL backends serving the bench database, sampled while a run lasts.

    Backends are not this process's children, so their CPU is read from /proc: every
    ``interval`` seconds the sampler lists them (pg_stat_activity) and reads their CPU
    time; the result is the growth between each backend's first and last sample, over
    the time between the first and the last sample.
    """

    def __init__(self, dsn: str, database: str, interval: float = 0.25) -> None:
        self.dsn, self.database, self.interval = dsn, database, interval
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.t_first = self.t_last = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def _sample(self, conn: asyncpg.Connection) -> None:
        pids = [r["pid"] for r in await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            self.database)]
        now = time.perf_counter()
        seen = False
        for pid in pids:
            try:
                cpu = proc_cpu_s(pid)
            except (OSError, IndexError, ValueError):
                continue  # gone between the listing and the reading
            self.first.setdefault(pid, cpu)
            self.last[pid] = cpu
            seen = True
        if seen:  # the span covers the samples that found backends, no more
            self.t_first = self.t_first or now
            self.t_last = now

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while True:
                await self._sample(conn)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval)
                if self._stop.is_set():
                    await self._sample(conn)
                    return
        finally:
            await conn.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> float:
        """Cores the backends used on average (1.0: one core busy all the time)."""
        self._stop.set()
        if self._task is not None:
            await self._task
        span = self.t_last - self.t_first
        used = sum(self.last[pid] - self.first[pid] for pid in self.last)
        return round(used / span, 2) if span > 0 else 0.0


class Profiler:
    """py-spy record on a process for a window, when --profile asks for it."""

    def __init__(self, folder: str | None) -> None:
        self.folder = Path(folder) if folder else None
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, pid: int, name: str, seconds: float) -> None:
        if self.folder is None:
            return
        spy = Path(sys.executable).with_name("py-spy")
        exe = str(spy) if spy.exists() else shutil.which("py-spy")
        if exe is None:
            log("py-spy not found: no profile")
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        out = self.folder / f"{name}.txt"
        self.proc = await asyncio.create_subprocess_exec(
            exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
            "--rate", "250", "--format", "raw", "--nonblocking", "--output", str(out),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        log(f"profiling {name} (pid {pid}) into {out}")

    async def wait(self) -> None:
        if self.proc is not None:
            await self.proc.wait()
            self.proc = None


# -- the database -------------------------------------------------------------------------

async def create_bench_database(admin_url: str) -> tuple[str, str]:
    """Create and migrate ``bench_<pid>``; drop leftovers of benchmark runs now dead."""
    name = f"bench_{os.getpid()}"
    return name, await create_database(admin_url, name, leftovers_of="bench")


async def _seed_sql(conn: asyncpg.Connection) -> str:
    """Copy one row of flow_instances into many: every column as in the row, but the id.

    Built from the live table, so the benchmark follows the schema as it changes; a
    column under a one-column unique index (the start key) is left NULL.
    """
    columns = [r["attname"] for r in await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'flow_instances'::regclass"
        " AND attnum > 0 AND NOT attisdropped ORDER BY attnum")]
    unique = {r["attname"] for r in await conn.fetch(
        "SELECT a.attname FROM pg_index x JOIN pg_attribute a"
        " ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]"
        " WHERE x.indrelid = 'flow_instances'::regclass AND x.indisunique"
        " AND NOT x.indisprimary AND x.indnatts = 1")}
    names = ", ".join(f'"{c}"' for c in columns)
    values = ", ".join("md5('bench:' || n::text)::uuid" if c == "id"
                       else "NULL" if c in unique else f'p."{c}"' for c in columns)
    return (f"INSERT INTO flow_instances ({names}) SELECT {values}"
            " FROM flow_instances p CROSS JOIN generate_series($2::int, $3::int) AS n"
            " WHERE p.id = $1")


async def seed_instances(pool: asyncpg.Pool, proto: Instance, lo: int, hi: int) -> float:
    """Insert instances lo..hi as copies of ``proto`` (one the engine started); seconds taken."""
    started = time.perf_counter()
    async with pool.acquire() as conn:
        await conn.execute(await _seed_sql(conn), uuid.UUID(proto.id), lo, hi, timeout=3600)
        await conn.execute("ANALYZE flow_instances")
    return time.perf_counter() - started


async def count_events(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        n: int = await conn.fetchval("SELECT count(*) FROM flow_events")
        return n


# -- recording what one engine step sends ----------------------------------------------

@dataclass
class Recorded:
    sql: str
    args: tuple[Any, ...]


class _RecordingConnection:
    def __init__(self, conn: asyncpg.Connection, calls: list[Recorded]) -> None:
        self._conn = conn
        self._calls = calls

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        self._calls.append(Recorded(sql, args))
        return await self._conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self._calls.append(Recorded(sql, args))
        return await self._conn.fetchval(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> Any:
        self._calls.append(Recorded(sql, args))
        return await self._conn.fetch(sql, *args)

    async def execute(self, sql: str, *args: Any) -> Any:
        self._calls.append(Recorded(sql, args))
        return await self._conn.execute(sql, *args)


class RecordingPool:
    """Enough of an asyncpg pool for PgStore, remembering every statement and its values."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.calls: list[Recorded] = []

    @contextlib.asynccontextmanager
    async def acquire(self) -> Any:
        async with self.pool.acquire() as conn:
            yield _RecordingConnection(conn, self.calls)


@dataclass
class CapturedStep:
    load: Recorded
    commit: Recorded
    iid: str
    key: str
    loaded_version: int
    loaded_last_hash: str


async def capture_step(pool: asyncpg.Pool, registry: Registry, flows: FlowSet,
                       n: int, rng: random.Random) -> CapturedStep:
    """Take one real step on instance n and return the two statements it sent."""
    recorder = RecordingPool(pool)
    runtime = Runtime(PgStore(recorder), SystemClock(), registry, flows)
    iid, key = instance_id(n), step_key(rng)
    async with pool.acquire() as conn:
        before = await conn.fetchrow(
            "SELECT version, last_hash FROM flow_instances WHERE id = $1", uuid.UUID(iid))
    await runtime.advance(iid, TRIGGER, STEP_INPUT, idempotency_key=key, actor=BENCH_ACTOR)
    sqls = [c.sql for c in recorder.calls]
    if sqls != [LOAD_SQL, COMMIT_SQL]:
        raise RuntimeError("one engine step no longer issues exactly storage.pg.LOAD_SQL then "
                           f"COMMIT_SQL; it issued {len(sqls)} statement(s): the pgbench "
                           "script must be brought up to date with the store")
    load, commit = recorder.calls
    captured = CapturedStep(load, commit, iid, key, before["version"], before["last_hash"])
    stored_key = scoped_key(BENCH_ACTOR, key)
    expect_load = {1: uuid.UUID(iid), 2: stored_key}
    expect_commit = {1: uuid.UUID(iid), 2: captured.loaded_version,
                     5: captured.loaded_version + 1, 17: captured.loaded_last_hash,
                     18: stored_key}
    for name, rec, expect in (("LOAD_SQL", load, expect_load),
                              ("COMMIT_SQL", commit, expect_commit)):
        for i, value in expect.items():
            if rec.args[i - 1] != value:
                raise RuntimeError(f"{name} parameter ${i} is no longer what the pgbench "
                                   f"script assumes ({rec.args[i - 1]!r} != {value!r})")
    return captured


# -- the pgbench script -------------------------------------------------------------------

def _array_literal(items: Sequence[str]) -> str:
    quoted = ('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items)
    return "{" + ",".join(quoted) + "}"


def pg_text(value: Any, type_name: str) -> str:
    """The text form PostgreSQL parses back into ``value`` for a parameter of a type."""
    if type_name.endswith("[]"):
        element = type_name[:-2]
        return _array_literal([pg_text(v, element) for v in value])
    if type_name in ("json", "jsonb"):
        return canonical_json(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


async def param_types(conn: asyncpg.Connection, sql: str) -> list[str]:
    stmt = await conn.prepare(sql)
    oids = [t.oid for t in stmt.get_parameters()]
    rows = await conn.fetch("SELECT i, format_type(o, NULL) AS t"
                            " FROM unnest($1::oid[]) WITH ORDINALITY AS u(o, i) ORDER BY i",
                            oids)
    return [r["t"] for r in rows]


def _rewrite(sql: str, args: Sequence[Any], types: Sequence[str], variables: dict[int, str],
             prefix: str, defines: dict[str, str]) -> str:
    """Replace each $n: a per-step variable, a constant variable, or a typed NULL."""

    def sub(m: re.Match[str]) -> str:
        i = int(m.group(1))
        if i in variables:
            return variables[i]
        value = args[i - 1]
        if value is None:
            return f"NULL::{types[i - 1]}"
        name = f"{prefix}{i}"
        defines[name] = pg_text(value, types[i - 1])
        return f":{name}"

    return re.sub(r"\$(\d+)", sub, sql.strip())


@dataclass
class PgbenchScript:
    text: str
    defines: dict[str, str]


async def pgbench_script(pool: asyncpg.Pool, captured: CapturedStep,
                         batch: int) -> PgbenchScript:
    async with pool.acquire() as conn:
        load_types = await param_types(conn, LOAD_SQL)
        commit_types = await param_types(conn, COMMIT_SQL)
    defines: dict[str, str] = {"actor": BENCH_ACTOR}
    load = _rewrite(captured.load.sql, captured.load.args, load_types, LOAD_VARS, "q", defines)
    commit = _rewrite(captured.commit.sql, captured.commit.args, commit_types, COMMIT_VARS,
                      "c", defines)
    return PgbenchScript(_script_text(load, commit, batch), defines)


def _script_text(load: str, commit: str, batch: int) -> str:
    picks = ", ".join(f"md5('bench:' || :n{i}::text)::uuid AS iid{i}"
                      for i in range(1, batch + 1))
    lines = [
        "-- One pgbench transaction = one engine step: storage.pg.LOAD_SQL, then",
        "-- storage.pg.COMMIT_SQL, with the values the engine sent (generated by bench.steps).",
        f"-- Every {batch} steps: {batch} random instances, ids md5('bench:' || n)::uuid.",
        r"\if :k >= " + str(batch),
        *(r"\set n" + f"{i} random(:lo, :hi)" for i in range(1, batch + 1)),
        f"SELECT {picks} \\gset",
        r"\set k 0",
        r"\endif",
        r"\set k :k + 1",
        r"\set key random(" + f"{KEY_LO}, {KEY_HI - 1})",
    ]
    for i in range(1, batch + 1):
        lines += [
            (r"\if" if i == 1 else r"\elif") + f" :k = {i}",
            load.replace(":iid", f":iid{i}") + r" \gset l_",
            r"\set v_next :l_version + 1",
            commit.replace(":iid", f":iid{i}") + ";",
        ]
    lines += [r"\endif", ""]
    return "\n".join(lines)


@dataclass
class PgbenchResult:
    tps: float
    transactions: int
    failed: int
    seconds: float
    output: str


_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
_DONE = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)


async def run_pgbench(exe: str, dsn: str, script_path: Path, defines: dict[str, str],
                      *, clients: int, threads: int, seconds: float, lo: int, hi: int,
                      batch: int) -> PgbenchResult:
    args = [exe, "--no-vacuum", "--protocol=prepared", f"--client={clients}",
            f"--jobs={threads}", f"--time={max(1, round(seconds))}", f"--file={script_path}"]
    variables = {**defines, "lo": str(lo), "hi": str(hi), "k": str(batch)}
    for name, value in variables.items():
        args += ["-D", f"{name}={value}"]
    args.append(dsn)
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out_b, err_b = await proc.communicate()
    out, err = out_b.decode(), err_b.decode()
    tps, done = _TPS.search(out), _DONE.search(out)
    if proc.returncode != 0 or tps is None or done is None:
        raise RuntimeError(f"pgbench failed (exit {proc.returncode}):\n{err[-3000:]}\n{out}")
    failed = _FAILED.search(out)
    return PgbenchResult(float(tps.group(1)), int(done.group(1)),
                         int(failed.group(1)) if failed else 0, seconds, out)


# -- load generators ----------------------------------------------------------------------

@dataclass
class Counts:
    ok: int = 0
    conflicts: int = 0
    errors: int = 0
    first_error: str | None = None

    def error(self, what: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = what


@dataclass
class Measured:
    steps: int
    conflicts: int
    errors: int
    seconds: float
    cpu: dict[str, float]
    steps_with_warmup: int = 0
    first_error: str | None = None

    @property
    def per_s(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0


Worker = Callable[[Counts, asyncio.Event, random.Random], Coroutine[Any, Any, None]]


@dataclass
class Window:
    """One measured window: its step rate, the cores each process used, what it did."""

    per_s: float
    cores: dict[str, float]
    busy_cores: float
    counts: dict[str, float]
    first_error: str | None = None

    def us_per_step(self, name: str | None = None) -> float:
        """CPU microseconds per step of one process, or of all of them."""
        used = self.cores[name] if name else sum(self.cores.values())
        return used / self.per_s * 1e6 if self.per_s > 0 else 0.0


async def measure(worker: Worker, *, concurrency: int, warmup: float, seconds: float,
                  cpu: CpuWindow, backends: BackendCpu, rng: random.Random,
                  on_start: Callable[[], Awaitable[None]] | None = None) -> Measured:
    """Run ``concurrency`` workers; count what completes in the window after the warmup."""
    counts = Counts()
    stop = asyncio.Event()
    # Picks and keys of a benchmark, not secrets: a seeded generator per worker.
    tasks = [asyncio.create_task(worker(counts, stop, random.Random(rng.random())))  # noqa: S311
             for _ in range(concurrency)]
    try:
        await asyncio.sleep(warmup)
        if on_start is not None:
            await on_start()
        ok0, conflicts0, errors0 = counts.ok, counts.conflicts, counts.errors
        cpu.start()
        backends.start()
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        ok1, conflicts1, errors1 = counts.ok, counts.conflicts, counts.errors
        elapsed = time.perf_counter() - t0
        usage = cpu.stop()
        usage["postgres_cores"] = await backends.stop()
    finally:
        stop.set()
        _, pending = await asyncio.wait(tasks, timeout=30)
        for task in pending:  # a step that hangs must not hang the benchmark
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return Measured(ok1 - ok0, conflicts1 - conflicts0, errors1 - errors0, elapsed, usage,
                    counts.ok, counts.first_error)


def engine_worker(runtime: Runtime, lo: int, hi: int) -> Worker:
    pick = id_picker(lo, hi)

    async def work(counts: Counts, stop: asyncio.Event, rng: random.Random) -> None:
        while not stop.is_set():
            try:
                await runtime.advance(pick(rng), TRIGGER, STEP_INPUT,
                                      idempotency_key=step_key(rng), actor=BENCH_ACTOR)
                counts.ok += 1
            except ConcurrencyConflict:
                counts.conflicts += 1
            except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                counts.error(f"{type(exc).__name__}: {exc}")
    return work


class KeepAlive:
    """One keep-alive HTTP/1.1 connection that POSTs and reads ``Content-Length`` answers.

    The load generator, like wrk or h2load: it shares the two cores with the server and
    PostgreSQL, so every microsecond it spends is one the server does not get. A general
    client (aiohttp's) costs about 150 us per request here; this one writes prebuilt
    bytes and reads the head and the body, nothing else. It refuses what the server never
    sends for these requests (chunked bodies) rather than misreading it.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> KeepAlive:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def post(self, path: str, body: bytes, headers: str) -> tuple[int, bytes]:
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n{headers}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, close = None, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise ValueError("a chunked answer: not what the server sends here")
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length is None:
            raise ValueError("an answer without Content-Length")
        text = await self.reader.readexactly(length)
        if close:
            raise ConnectionResetError("the server closed the connection")
        return status, text

    def close(self) -> None:
        self.writer.close()


def http_worker(base_url: str, lo: int, hi: int) -> Worker:
    body = json.dumps(STEP_INPUT).encode()
    pick = id_picker(lo, hi)
    host, _, port = base_url.removeprefix("http://").partition(":")

    async def work(counts: Counts, stop: asyncio.Event, rng: random.Random) -> None:
        conn: KeepAlive | None = None
        try:
            while not stop.is_set():
                path = f"/api/flows/{pick(rng)}/events/{TRIGGER}"
                try:
                    if conn is None:
                        conn = await KeepAlive.open(host, int(port))
                    status, text = await conn.post(
                        path, body, f"Idempotency-Key: {step_key(rng)}\r\n"
                        f"Cookie: device={BENCH_DEVICE}\r\n")
                    if status == 200:
                        counts.ok += 1
                    elif status == 409 and b'"version_conflict"' in text:
                        counts.conflicts += 1  # two clients picked the same instance
                    else:
                        counts.error(f"HTTP {status}: {text[:300]!r}")
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                        ValueError) as exc:
                    counts.error(f"{type(exc).__name__}: {exc}")
                    if conn is not None:
                        conn.close()
                        conn = None
                    await asyncio.sleep(0.05)
        finally:
            if conn is not None:
                conn.close()
    return work


# -- the server ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """``flowctl serve`` in a subprocess, on the bench flow and the bench database."""

    def __init__(self, dsn: str, redis_url: str, folder: Path, concurrency: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.folder = folder
        flows_file = folder / "flows.yaml"
        flows_file.write_text(BENCH_YAML, encoding="utf-8")
        self.env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": f"bench-{os.getpid()}:",
            "FLOWS_FILE": str(flows_file),
            "FLOW_MODULES": "bench.flow",
            "WORKERS": "false",
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "json",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "DATA_DIR": str(folder / "data"),
            "DB_POOL_MIN": str(concurrency),
            "DB_POOL_MAX": str(concurrency),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        }
        self.log_path = folder / "server.log"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        flowctl = Path(sys.executable).with_name("flowctl")
        if flowctl.exists():
            return [str(flowctl), "serve"]
        return [sys.executable, "-m", "web.cli", "serve"]

    async def start(self, ready_within: float = 30.0) -> None:
        with self.log_path.open("wb") as log_file:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command(), env=self.env, cwd=str(ROOT),
                stdout=log_file, stderr=asyncio.subprocess.STDOUT)
        deadline = time.monotonic() + ready_within
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    break
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        tail = self.log_tail()
        await self.stop()
        raise RuntimeError(f"the server did not become ready:\n{tail}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def http_run(server: Server, opts: Options, lo: int, hi: int, rng: random.Random,
                   profiler: Profiler, profile_name: str, backends: BackendCpu) -> Measured:
    cpu = CpuWindow({"server": server.pid, "client": os.getpid()})
    measured = await measure(
        http_worker(server.url, lo, hi),
        concurrency=opts.concurrency, warmup=opts.warmup, seconds=opts.seconds, cpu=cpu,
        backends=backends, rng=rng,
        on_start=lambda: profiler.start(server.pid, profile_name, opts.seconds))
    if not measured.steps:
        raise RuntimeError(f"no HTTP step completed in {opts.seconds}s "
                           f"(first error: {measured.first_error});"
                           f" server log:\n{server.log_tail()}")
    return measured


# -- deciding: the compiled machine against a new one per step ----------------------------

def _rate(fn: Callable[[], object], seconds: float) -> float:
    done, started = 0, time.perf_counter()
    while True:
        for _ in range(50):
            fn()
        done += 50
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return done / elapsed


def decide_rates(seconds: float) -> dict[str, Any]:
    """Decisions per second: the engine's reused machine, and a machine built per step."""
    registry = bench_registry()
    flow = load_text(BENCH_YAML, registry=registry).flows[FLOW]
    context = {"values": {"note": "ping"}, "facts": {"tick": {"seq": 2}}, "attempts": 1,
               "error": None}
    guard_input = GuardInput("ready", TRIGGER, context, STEP_INPUT, {"tick": {"seq": 3}})
    compiled = CompiledFlow(flow, registry)
    assert compiled.decide(guard_input) is not None
    reused = _rate(lambda: compiled.decide(guard_input), seconds / 2)
    fresh = _rate(lambda: CompiledFlow(flow, registry).decide(guard_input), seconds / 2)
    return {
        "decide_per_s_reused": round(reused),
        "decide_per_s_new_machine": round(fresh),
        "decide_us_reused": round(1e6 / reused, 2),
        "decide_us_new_machine": round(1e6 / fresh, 2),
        "decide_flow_states": len(flow.states),
        "decide_flow_transitions": len(flow.transitions),
    }


# -- the whole run ------------------------------------------------------------------------

async def _server_settings(pool: asyncpg.Pool) -> dict[str, str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1::text[])",
            ["synchronous_commit", "fsync", "shared_buffers", "max_connections"])
        version = await conn.fetchval("SHOW server_version")
    out = {r["name"]: r["setting"] + (f" ({r['unit']})" if r["unit"] else "") for r in rows}
    out["server_version"] = version
    return out


def _write_script(text: str, folder: Path, profile_dir: str | None) -> Path:
    path = folder / "step.sql"
    path.write_text(text, encoding="utf-8")
    if profile_dir:  # next to the profiles, so they can be read together
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        (Path(profile_dir) / "step.sql").write_text(text, encoding="utf-8")
    return path


def _round(x: float, digits: int = 1) -> float:
    return round(x, digits)


async def run_async(opts: Options) -> dict[str, Any]:
    began = time.perf_counter()
    exe = find_pgbench(opts.pgbench)
    if exe is None:
        raise RuntimeError("pgbench is not installed (apt-get install postgresql-client, "
                           "or give --pgbench PATH)")
    configure_logging("json", "warning")  # what the server runs with: no per-step log lines
    rng = random.Random(opts.seed)  # noqa: S311 - reproducible picks, not secrets
    c = opts.concurrency
    base_lo, base_hi = 1, opts.base_instances
    big_lo, big_hi = opts.base_instances + 1, opts.base_instances + opts.instances
    result: dict[str, Any] = {}
    profiler = Profiler(opts.profile_dir)

    busy0, t0 = machine_busy_s(), time.perf_counter()
    await asyncio.sleep(opts.background_seconds)
    background = round((machine_busy_s() - busy0) / (time.perf_counter() - t0), 2)
    if background > 0.25:
        log(f"the machine is already busy ({background} cores) before the benchmark starts: "
            "the figures will be low and noisy")
    db_name, dsn = await create_bench_database(opts.admin_url)
    log(f"database {db_name}")
    aux: asyncpg.Pool | None = None  # seeding and counting, never measured
    server: Server | None = None
    tmp = tempfile.TemporaryDirectory(prefix="bench-")
    try:
        registry = bench_registry()
        flows = load_text(BENCH_YAML, registry=registry)
        aux = await create_pool(dsn, min_size=1, max_size=2)
        runtime = Runtime(PgStore(aux), SystemClock(), registry, flows)
        await runtime.publish()
        proto = (await runtime.start(FLOW, actor=BENCH_ACTOR)).instance
        seeded = await seed_instances(aux, proto, 0, base_hi)  # 0: the recorded step's
        log(f"{opts.base_instances} instances in {seeded:.1f}s")

        # The recorded step, and pgbench's script made from it.
        captured = await capture_step(aux, registry, flows, 0, rng)
        script = await pgbench_script(aux, captured, opts.pick_batch)
        script_path = _write_script(script.text, Path(tmp.name), opts.profile_dir)
        threads = max(1, min(c, os.cpu_count() or 1))
        common = {"clients": c, "threads": threads, "lo": base_lo, "hi": base_hi,
                  "batch": opts.pick_batch}

        async def pgbench_window() -> Window:
            if opts.warmup > 0:
                await run_pgbench(exe, dsn, script_path, script.defines,
                                  seconds=opts.warmup, **common)
            events0 = await count_events(aux)
            busy0, t0, children0 = machine_busy_s(), time.perf_counter(), children_cpu_s()
            backends = BackendCpu(dsn, db_name)
            backends.start()
            pg = await run_pgbench(exe, dsn, script_path, script.defines,
                                   seconds=opts.seconds, **common)
            postgres = await backends.stop()
            wall = time.perf_counter() - t0
            written = await count_events(aux) - events0
            # A transaction that lost the race for its instance wrote nothing: not a step.
            rate = pg.tps * min(1.0, written / pg.transactions) if pg.transactions else 0.0
            return Window(rate, {"postgres": postgres,
                                 "pgbench": (children_cpu_s() - children0) / wall},
                          round((machine_busy_s() - busy0) / wall, 2),
                          {"tps": pg.tps, "transactions": pg.transactions,
                           "events_written": written, "failed": pg.failed})

        engine_pool = await create_pool(dsn, min_size=c, max_size=c)
        engine_runtime = Runtime(PgStore(engine_pool), SystemClock(), registry, flows,
                                 observer=Metrics())

        async def engine_window(profile: bool) -> Window:
            events0 = await count_events(aux)
            m = await measure(
                engine_worker(engine_runtime, base_lo, base_hi), concurrency=c,
                warmup=opts.warmup, seconds=opts.seconds, rng=rng,
                cpu=CpuWindow({"engine_process": os.getpid()}),
                backends=BackendCpu(dsn, db_name),
                on_start=(lambda: profiler.start(os.getpid(), "engine", opts.seconds))
                if profile else None)
            await profiler.wait()
            if not m.steps:
                raise RuntimeError(f"no engine step completed (first error: {m.first_error})")
            return Window(m.per_s, {"postgres": m.cpu["postgres_cores"],
                                    "python": m.cpu["engine_process_cores"]},
                          m.cpu["machine_busy_cores"],
                          {"steps": m.steps, "steps_with_warmup": m.steps_with_warmup,
                           "events_written": await count_events(aux) - events0,
                           "conflicts": m.conflicts, "errors": m.errors}, m.first_error)

        server = Server(dsn, opts.redis_url, Path(tmp.name), c)
        await server.start()
        running = server

        async def http_window(profile: bool) -> Window:
            m = await http_run(running, opts, base_lo, base_hi, rng,
                               profiler if profile else Profiler(None), "server",
                               BackendCpu(dsn, db_name))
            await profiler.wait()
            return Window(m.per_s, {"postgres": m.cpu["postgres_cores"],
                                    "server": m.cpu["server_cores"],
                                    "client": m.cpu["client_cores"]},
                          m.cpu["machine_busy_cores"],
                          {"steps": m.steps, "conflicts": m.conflicts, "errors": m.errors},
                          m.first_error)

        # 1-3, in rounds: pgbench, engine, HTTP, again and again. The machine's speed
        # drifts (other tenants, disk latency); each round's ratios compare windows a few
        # seconds apart, and the figures reported are the medians over the rounds.
        rounds: list[dict[str, Window]] = []
        try:
            for n in range(opts.rounds):
                last = n == opts.rounds - 1
                pgw = await pgbench_window()
                enw = await engine_window(profile=last)
                htw = await http_window(profile=last)
                rounds.append({"pgbench": pgw, "engine": enw, "http": htw})
                log(f"round {n + 1}/{opts.rounds}: pgbench {pgw.per_s:.0f}, "
                    f"engine {enw.per_s:.0f}, http {htw.per_s:.0f} steps/s "
                    f"(ratios {enw.per_s / pgw.per_s:.3f}, {htw.per_s / pgw.per_s:.3f})")
        finally:
            await engine_pool.close()
        rss_before, rss_now_before = peak_rss_mb(server.pid), rss_mb(server.pid)

        # 4. memory with a million more instances
        log(f"inserting {opts.instances} instances")
        inserted = await seed_instances(aux, proto, big_lo, big_hi)
        log(f"inserted in {inserted:.1f}s")
        http_big = await http_run(server, opts, big_lo, big_hi, rng, profiler, "server_big",
                                  BackendCpu(dsn, db_name))
        await profiler.wait()
        rss_after, rss_now_after = peak_rss_mb(server.pid), rss_mb(server.pid)
        log(f"http over the new instances: {http_big.per_s:.0f} steps/s")
        await server.stop()

        async with aux.acquire() as conn:
            stored = await conn.fetchval("SELECT count(*) FROM flow_instances")
        settings = await _server_settings(aux)
        decide = decide_rates(opts.decide_seconds)

        def med(values: Sequence[float]) -> float:
            return statistics.median(values)

        def rate(kind: str) -> float:
            return med([r[kind].per_s for r in rounds])

        def ratio(kind: str) -> float:
            return round(med([r[kind].per_s / r["pgbench"].per_s for r in rounds]), 3)

        def cpu_us(kind: str) -> dict[str, float | None]:
            """CPU microseconds per step by process and in total (medians over rounds)."""
            names = list(rounds[0][kind].cores)
            out: dict[str, float | None] = {
                name: _round(med([r[kind].us_per_step(name) for r in rounds]))
                for name in names}
            out["total"] = _round(med([r[kind].us_per_step() for r in rounds]))
            return out

        def cpu_ratio(kind: str, *, less: str | None = None) -> float:
            def one(r: dict[str, Window]) -> float:
                other = r[kind].us_per_step() - (r[kind].us_per_step(less) if less else 0.0)
                return r["pgbench"].us_per_step() / other
            return round(med([one(r) for r in rounds]), 3)

        def total(kind: str, key: str) -> int:
            return int(sum(r[kind].counts[key] for r in rounds))

        result.update({
            "pgbench_steps_per_s": _round(rate("pgbench")),
            "engine_steps_per_s": _round(rate("engine")),
            "http_steps_per_s": _round(rate("http")),
            "engine_ratio": ratio("engine"),
            "http_ratio": ratio("http"),
            "rss_before_mb": rss_before,
            "rss_after_mb": rss_after,
            **decide,
            "cpu_count": os.cpu_count(),
            "background_busy_cores": background,
            "concurrency": c,
            "rounds": opts.rounds,
            "seconds": opts.seconds,
            "warmup_seconds": opts.warmup,
            # Every round's step rates and ratios, in order.
            "per_round": [{"pgbench": _round(r["pgbench"].per_s),
                           "engine": _round(r["engine"].per_s),
                           "http": _round(r["http"].per_s),
                           "engine_ratio": round(r["engine"].per_s / r["pgbench"].per_s, 3),
                           "http_ratio": round(r["http"].per_s / r["pgbench"].per_s, 3)}
                          for r in rounds],
            # CPU per step of every process involved (postgres: the bench database's
            # backends). On a saturated machine throughput follows these, so their ratios
            # say what the step rates would be with nothing else running.
            "cpu_us_per_step": {k: cpu_us(k) for k in ("pgbench", "engine", "http")},
            "engine_cpu_ratio": cpu_ratio("engine"),
            "http_cpu_ratio": cpu_ratio("http"),
            # The load generator shares the machine only because the benchmark runs here.
            "http_cpu_ratio_without_client": cpu_ratio("http", less="client"),
            "machine_busy_cores": {k: med([r[k].busy_cores for r in rounds])
                                   for k in ("pgbench", "engine", "http")},
            "pgbench_transactions": total("pgbench", "transactions"),
            "pgbench_events_written": total("pgbench", "events_written"),
            "pgbench_conflicts": total("pgbench", "transactions")
            - total("pgbench", "events_written"),
            "pgbench_failed": total("pgbench", "failed"),
            "pgbench_pick_batch": opts.pick_batch,
            "pgbench_threads": threads,
            "engine_steps": total("engine", "steps"),
            "engine_steps_with_warmup": total("engine", "steps_with_warmup"),
            "engine_events_written": total("engine", "events_written"),
            "engine_conflicts": total("engine", "conflicts"),
            "engine_errors": total("engine", "errors"),
            "http_steps": total("http", "steps"),
            "http_conflicts": total("http", "conflicts"),
            "http_errors": total("http", "errors"),
            "base_instances": opts.base_instances,
            "inserted_instances": opts.instances,
            "stored_instances": stored,
            "insert_seconds": _round(inserted, 2),
            "http_steps_per_s_after_insert": _round(http_big.per_s),
            "http_errors_after_insert": http_big.errors,
            "rss_now_before_mb": rss_now_before,
            "rss_now_after_mb": rss_now_after,
            "rss_growth_mb": round(rss_after - rss_before, 1),
            "postgres": settings,
            "python": sys.version.split()[0],
            "database": db_name,
        })
        first_errors = [w.first_error for r in rounds for w in r.values() if w.first_error]
        first_errors += [http_big.first_error] if http_big.first_error else []
        if first_errors:
            result["first_error"] = first_errors[0]
    finally:
        await profiler.wait()
        if server is not None:
            await server.stop()
        if aux is not None:
            await aux.close()
        with contextlib.suppress(Exception):
            await drop_database(opts.admin_url, db_name)
        tmp.cleanup()
    result["total_seconds"] = _round(time.perf_counter() - began)
    return result


def run(opts: Options) -> dict[str, Any]:
    """Run the benchmark; the caller's structlog configuration is left as it was."""
    saved = structlog.get_config()
    try:
        # The same event loop as `flowctl serve` (uvloop where installed).
        from web.serve import run
        return run(run_async(opts))
    finally:
        structlog.configure(**saved)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p, d = options.parser("bench.steps", __doc__), Options()
    options.flag(p, d, "seconds", help="measured seconds per run (default %(default)s)")
    options.flag(p, d, "rounds",
                 help="rounds of pgbench, engine and HTTP windows; the figures are the "
                      "medians over them (default %(default)s)")
    options.flag(p, d, "warmup", help="unmeasured seconds before each run (default %(default)s)")
    options.flag(p, d, "concurrency",
                 help="pgbench clients = engine tasks = HTTP clients (default %(default)s)")
    options.flag(p, d, "instances",
                 help="instances inserted before the second HTTP run (default %(default)s)")
    options.flag(p, d, "base_instances",
                 help="instances the three runs step (default %(default)s)")
    options.flag(p, d, "pick_batch",
                 help="random instance ids pgbench fetches per round trip (default %(default)s)")
    options.flag(p, d, "decide_seconds")
    options.flag(p, d, "pgbench", help="path of pgbench (default: PATH, /usr/lib/postgresql)")
    p.add_argument("--profile", dest="profile_dir", metavar="DIR",
                   help="py-spy record the engine and the server into DIR (raw stacks)")
    options.flag(p, d, "seed")
    options.servers(p)
    opts = options.parsed(Options, p, argv)
    if opts.rounds < 1:
        p.error("--rounds must be at least 1")
    return opts

def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    print(json.dumps(run(opts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
