"""Whole procedures per core: sign-ins against the hash they cannot avoid, and more.

``python -m bench.procedures`` prints one JSON object last on stdout; progress goes to
stderr. One run, one fresh database (``bench_<pid>_proc``, dropped at the end), the real
``flows.yaml`` with the sandbox providers, a ``flowctl serve`` subprocess (one process,
as one core of a deployment runs one), and clients in this process:

1. ``argon2_verify_ms``: one Argon2id verify with the shipped cost (ARGON2_* defaults),
   in CPU time of this process's thread, in this run (the median of
   ``--argon2-samples``), timed before the log-ins and again right after them
   (``argon2_verify_ms_before``, ``_after``: far apart, the machine's speed drifted
   meanwhile), the two averaged; ``argon2_limit_per_s_per_core`` is 1000 / that.
   ``argon2_verify_ms_all_cores``: the same with every core hashing at once, as a
   server under a log-in load does (each verify then costs more CPU).
2. ``registrations_per_s``: personal registration end to end over HTTP (SPEC 1: name and
   ID number, the sandbox face scan and its signed callback, an SMS code read from the
   sandbox inbox, login name and password), ``--reg-concurrency`` at a time. The
   accounts made are the ones that sign in next.
3. ``logins_per_s_per_core``: personal log-in (start, captcha image, submit) by
   ``--login-concurrency`` clients for ``--seconds``, each a browser of its own;
   divided by the CPU the server process used in that window (its event loop and its
   hashing threads), so that it reads "per core of the server" on any machine.
   ``login_ratio`` is that divided by ``argon2_limit_per_s_per_core``: 1.0 would be a
   server that does nothing but hash. ``login_ratio_all_cores`` divides by the verify
   as it costs with every core hashing at once instead (``argon2_verify_ms_all_cores``),
   which is what a server's hashing threads pay under a log-in load: the share of the
   server's CPU that went to hashing at all. ``login_loop_cpu_ms``: CPU of the server's
   event-loop thread a sign-in (all of its CPU but the hashing and drawing threads'),
   what the platform adds to the hash. ``login_hash_share``: the CPU the server's
   hashing threads spent in Argon2 (its /metrics, ``password_hash_cpu_seconds_total``,
   read on both sides of the window) over all the CPU the server used meanwhile: the
   share of a server's cores that goes to the hash, both measured in the same process
   over the same seconds, so the machine's drift does not move it;
   ``login_hash_cpu_ms``: one hash as the server paid for it (every core hashing at
   once); ``login_hashes_per_login``: hashes over sign-ins (1: one verify each).
   A sign-in the server sheds as busy (503
   ``server_busy``) is not counted; its client pauses and goes on. The captcha's answer
   is read from Redis, where the development server keeps it for the sandbox pages (as
   a test helper may), not from a sandbox page: that request is one a real client does
   not make. The captcha's image comes in the start's answer
   (``Prefer: captcha-image``, as the platform's clients ask for it; ``login_captcha``:
   "inline"); ``--captcha request`` fetches it with a request of its own instead, as a
   client that does not ask does (one more request, instance read and limit round trip
   a sign-in). The sign-ins' requests come over kept-alive connections shared by all
   the clients (``login_connections``: "shared"), as the servers of a deployment see
   them behind a load balancer that keeps its connections to them; ``--connections
   own`` has each sign-in connect anew (and close), as a browser talking to the server
   itself.
4. ``login_p50_ms``, ``login_p99_ms``: sign-ins arriving at a steady 80% of the peak
   rate of 3 (open loop: each is started on time, whatever the others do), the time
   from its planned start to the answer of its submit; ``login_steady_busy``: how many
   the server shed as busy meanwhile (none, unless the machine is loaded by others).
5. ``timers_per_s``: ``--timers`` instances whose timeout is due at once, fired by one
   ``TimerWorker`` per core in this process (the engine's own, over the pool, with its
   default batch), timed from the first claim to the last step. ``timers_cpu_ms``: CPU
   of this process per timer; ``timers_db_cpu_ms``: of the PostgreSQL backends serving
   it (when PostgreSQL runs on this machine); ``timers_per_s_per_core``: timers per
   second of the two together, what a machine of its own would do per core.
6. ``timer_late_p50_ms``, ``timer_late_p99_ms`` (and ``_max_ms``): timers falling due
   at a steady ``--steady-timer-rate`` (1,000/s) for ``--steady-timer-seconds``, fired by
   one worker per core looping as a server's does (when idle it sleeps until the next
   timer falls due, at most ``--timer-interval``, the TIMER_INTERVAL default): each
   one's event time minus its due time.
   ``timer_duplicates`` (a timer fired twice) and ``timer_missed`` must be 0.
7. ``audit_events_per_s``: ``flowctl audit`` over everything the run wrote (the
   timers' instances too), over the command's wall-clock time; ``audit_events_per_s_cpu``
   over its CPU time (its start included), what one core does however loaded the machine
   is; ``audit_events_per_s_jobs_N`` the same with ``--jobs N``, one process per core.
   ``python -m bench.audit`` measures the audit alone, on as many histories as asked.

Nothing here asserts a time: tests/bench/ only runs it small. Each client address is
new (X-Forwarded-For from a trusted proxy), as people come from many places, so the
per-client limits of ``flows.yaml`` do not stop the run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from argon2 import PasswordHasher, Type

from bench import options
from bench.audit import audit_once
from bench.steps import ROOT, Server, forget_keys, proc_cpu_s, thread_cpu_s
from engine import FrozenClock, Registry, Runtime, SystemClock, TimerWorker, load_text
from flows.captcha import CaptchaAnswers
from flows.passwords import cores
from storage import PgStore, RedisEphemeral, create_pool, create_redis
from storage.scratch import create_database, drop_database
from web.logs import configure_logging
from web.settings import Settings

PASSWORD = "Bench-Horse-42"  # noqa: S105 - the benchmark's people all use it
_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


@dataclass
class Options:
    registrations: int = 100
    reg_concurrency: int = 8
    login_concurrency: int = 0  # 0: two per core, and two more
    seconds: float = 10.0
    warmup: float = 2.0
    argon2_samples: int = 50
    timers: int = 20_000
    steady_timer_rate: float = 1000.0
    steady_timer_seconds: float = 10.0
    timer_interval: float = Settings().timer_interval  # as a server's TIMER_INTERVAL
    admin_url: str = options.DEFAULT_ADMIN_URL
    redis_url: str = options.DEFAULT_REDIS_URL
    port: int = 0  # 0: any free port
    only: str = "all"  # "login": argon2, registrations and the log-ins, no timers or audit
    profile: str | None = None  # cProfile of the server's peak log-in window, to this file
    captcha: str = "inline"  # the sign-in's image: in the start's answer, or fetched apart
    # "shared": the sign-ins' requests come over kept-alive connections, as through a
    # load balancer that keeps its connections to the servers; "own": each sign-in
    # connects anew, as a browser talking to the server itself.
    connections: str = "shared"
    # The Argon2 memory cost the server ships with and the reference verify uses (KiB):
    # the shipped one by default; a small one shows what a sign-in costs the event loop
    # when no hash keeps its cores' caches busy.
    argon2_memory_kib: int = Settings().argon2_memory_kib


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def id_number(rng: random.Random) -> str:
    body = f"110105{rng.randrange(1960, 2000)}{rng.randrange(1, 13):02d}" \
        f"{rng.randrange(1, 29):02d}{rng.randrange(1000):03d}"
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, _WEIGHTS,
                                                                strict=True)) % 11]


def mobile(rng: random.Random) -> str:
    return "1" + rng.choice("3456789") + "".join(rng.choice("0123456789") for _ in range(9))


def _verifies(memory_kib: int | None) -> Callable[[list[float], int], None]:
    """``verify(times, n)``: n verifies at the shipped cost (Settings' defaults;
    ``memory_kib``: another memory cost), each one's CPU milliseconds in this thread
    appended to ``times``."""
    shipped = Settings()
    ph = PasswordHasher(time_cost=shipped.argon2_time_cost,
                        memory_cost=memory_kib or shipped.argon2_memory_kib, parallelism=1,
                        hash_len=32, salt_len=16, type=Type.ID)
    stored = ph.hash(PASSWORD)

    def verify(times: list[float], n: int) -> None:
        for _ in range(n):
            t0 = time.thread_time()
            ph.verify(stored, PASSWORD)
            times.append((time.thread_time() - t0) * 1000)

    return verify


def argon2_verify_ms(samples: int, memory_kib: int | None = None) -> float:
    """Median CPU milliseconds of one verify at the shipped cost (Settings' defaults;
    ``memory_kib``: another memory cost).

    CPU time of this thread, as the log-ins are counted against the server's CPU time:
    on a machine shared with other work, wall time would add whatever ran meanwhile."""
    times: list[float] = []
    _verifies(memory_kib)(times, samples)
    return statistics.median(times)


def argon2_verify_ms_all_cores(samples: int, memory_kib: int | None = None) -> float:
    """The same median with one verify per core at once, as a busy server hashes.

    Every core hashing at once shares caches and memory bandwidth: each verify costs
    more CPU than one alone (measured on 2 cores: 17.3 ms against 15.6). The log-in
    ratio keeps the lone figure; this one says how much of the gap is the hash's own."""
    verify = _verifies(memory_kib)
    times: list[float] = []
    threads = [threading.Thread(target=verify, args=(times, samples))
               for _ in range(cores())]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statistics.median(times)


class Busy(RuntimeError):
    """The server shed the request (503 server_busy): its bounded hashing queue was full."""


class Browser:
    """One person's browser: cookies of its own, a client address of its own."""

    def __init__(self, base: str, address: str,
                 connector: aiohttp.BaseConnector | None = None) -> None:
        """``connector``: connections shared with other browsers (kept by its owner),
        as a load balancer's to the server are; None: connections of its own."""
        self.base = base
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # cookies of 127.0.0.1 too
            headers={"X-Forwarded-For": address}, connector=connector,
            connector_owner=connector is None)

    async def close(self) -> None:
        await self.session.close()

    async def post(self, path: str, body: dict[str, Any] | None = None,
                   expect: int = 200, headers: dict[str, str] | None = None,
                   ) -> dict[str, Any]:
        async with self.session.post(self.base + path, json=body or {},
                                     headers=headers) as resp:
            data: dict[str, Any] = await resp.json()
            if resp.status == 503 and data.get("error_id") == "server_busy":
                raise Busy(f"POST {path}: server_busy")
            if resp.status != expect:
                raise RuntimeError(f"POST {path}: {resp.status} {data}")
            return data

    async def get_json(self, path: str, **params: str) -> Any:
        async with self.session.get(self.base + path, params=params) as resp:
            if resp.status != 200:
                raise RuntimeError(f"GET {path}: {resp.status} {await resp.text()}")
            return await resp.json()

    async def captcha(self, iid: str, answers: CaptchaAnswers) -> str:
        """Fetch the instance's captcha image; its answer, as the server recorded it."""
        async with self.session.get(f"{self.base}/api/flows/{iid}/captcha") as resp:
            if resp.status != 200:
                raise RuntimeError(f"captcha: {resp.status}")
            await resp.read()
        return await self.recorded_answer(iid, answers)

    @staticmethod
    async def recorded_answer(iid: str, answers: CaptchaAnswers) -> str:
        """The answer of the instance's newest image, as the server recorded it."""
        found = await answers.recent(iid, limit=1)
        if not found:
            raise RuntimeError("no captcha answer recorded: is the server in development?")
        return str(found[0]["answer"])

    async def wait_state(self, iid: str, states: tuple[str, ...],
                         within: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            view: dict[str, Any] = await self.get_json(f"/api/flows/{iid}")
            if view["state"] in states or time.monotonic() > deadline:
                return view
            await asyncio.sleep(0.02)

    async def sms_code(self, phone: str, within: float = 30.0) -> str:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            messages = (await self.get_json("/sandbox/sms.json", phone=phone))["messages"]
            if messages:
                return str(messages[0]["text"].split("验证码为", 1)[1][:6])
            await asyncio.sleep(0.02)
        raise RuntimeError(f"no SMS code within {within}s")


async def register(base: str, rng: random.Random, n: int) -> str:
    """Register a person end to end; return the login name."""
    browser = Browser(base, f"198.18.{n // 250 % 250}.{n % 250}")
    try:
        login, phone = "b" + uuid.uuid4().hex[:12], mobile(rng)
        iid = (await browser.post("/api/flows/personal_registration", expect=201))["id"]
        view = await browser.post(f"/api/flows/{iid}/events/submit",
                                  {"name": "王小明", "id_number": id_number(rng),
                                   "agree": True})
        if view["state"] == "real_name":
            qr = view["ui"]["data"]["qr_url"]
            path = "/" + qr.split("://", 1)[1].split("/", 1)[1]
            async with browser.session.post(base + path, data={"result": "pass"},
                                            allow_redirects=False,
                                            headers={"Origin": base}) as resp:
                if resp.status not in (200, 303):
                    raise RuntimeError(f"face: {resp.status}")
            view = await browser.wait_state(iid, ("account_info",))
        if view["state"] != "account_info":
            raise RuntimeError(f"registration stuck in {view['state']}")
        await browser.post(f"/api/flows/{iid}/events/send_code", {"mobile": phone})
        code = await browser.sms_code(phone)
        view = await browser.post(f"/api/flows/{iid}/events/submit",
                                  {"login_name": login, "password": PASSWORD,
                                   "password_confirm": PASSWORD, "mobile": phone,
                                   "sms_code": code})
        if view["state"] != "done":
            raise RuntimeError(f"registration ended in {view['state']}")
        return login
    finally:
        await browser.close()


@dataclass
class Target:
    """The server under test, and where its captcha answers are (its Redis)."""

    url: str
    answers: CaptchaAnswers
    captcha: str = "inline"  # as Options.captcha
    connector: aiohttp.BaseConnector | None = None  # shared connections (Options.connections)


async def login(target: Target, login_name: str, address: str) -> None:
    """One personal log-in: start, captcha, submit; raises unless signed in.

    The captcha's image comes in the start's answer (``Prefer: captcha-image``), as the
    platform's clients ask for it; with ``target.captcha`` "request", by a request of
    its own (``GET /api/flows/{id}/captcha``), as a client that does not ask does."""
    browser = Browser(target.url, address, target.connector)
    try:
        if target.captcha == "inline":
            view = await browser.post("/api/flows/personal_login", expect=201,
                                      headers={"Prefer": "captcha-image"})
            iid = view["id"]
            image = next(f for f in view["ui"]["fields"] if f["name"] == "captcha")
            if not base64.b64decode(image["image_data"].split(",", 1)[1]) \
                    .startswith(b"\xff\xd8"):
                raise RuntimeError("the start's answer brought no JPEG")
            answer = await browser.recorded_answer(iid, target.answers)
        else:
            iid = (await browser.post("/api/flows/personal_login", expect=201))["id"]
            answer = await browser.captcha(iid, target.answers)
        view = await browser.post(f"/api/flows/{iid}/events/submit",
                                  {"identifier": login_name, "password": PASSWORD,
                                   "captcha": answer})
        if view["state"] != "signed_in":
            raise RuntimeError(f"log-in ended in {view['state']}")
    finally:
        await browser.close()


async def registrations(base: str, opts: Options,
                        rng: random.Random) -> tuple[list[str], float]:
    logins: list[str] = []
    queue = iter(range(opts.registrations))

    async def worker() -> None:
        for n in queue:
            logins.append(await register(base, random.Random(rng.random()), n))  # noqa: S311

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(opts.reg_concurrency)))
    return logins, len(logins) / (time.perf_counter() - t0)


@dataclass(frozen=True)
class Peak:
    """The peak log-in window: sign-ins a second, the server's cores used meanwhile, the
    CPU milliseconds of its event loop's thread a sign-in, and what its hashing threads
    spent (its /metrics, read on both sides of the window): hashes, their CPU seconds,
    and the server's CPU seconds over the same window."""

    per_s: float
    cores: float
    loop_ms: float
    logins: int
    hashes: float
    hash_cpu_s: float
    server_cpu_s: float


async def hashing_spent(url: str) -> tuple[float, float]:
    """The server's ``password_hashes_total`` and ``password_hash_cpu_seconds_total``."""
    async with aiohttp.ClientSession() as session, \
            session.get(url + "/metrics") as resp:
        text = await resp.text()
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("password_hashes_total", "password_hash_cpu_seconds_total"):
            found[name] = float(value)
    return found["password_hashes_total"], found["password_hash_cpu_seconds_total"]


async def peak_logins(server: Server, target: Target, logins: Sequence[str],
                      opts: Options, concurrency: int, profile: bool = False) -> Peak:
    """Closed loop: sign-ins per second, the server's cores used meanwhile, and the CPU
    milliseconds of its event loop's thread a sign-in (all but the hashing and drawing
    threads: what the platform adds to the hash, whatever the hash costs on this machine),
    and what its hashing threads spent meanwhile.

    ``profile``: the server runs under bench.cprofile_serve; profile the window."""
    done, stop, counter = [0], asyncio.Event(), iter(range(10**9))

    async def worker() -> None:
        while not stop.is_set():
            n = next(counter)
            try:
                await login(target, logins[n % len(logins)],
                            f"198.19.{n // 250 % 250}.{n % 250}")
            except Busy:
                await asyncio.sleep(0.05)
                continue
            done[0] += 1

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await asyncio.sleep(opts.warmup)
        if profile:
            os.kill(server.pid, signal.SIGUSR1)
        hashes0, hash_cpu0 = await hashing_spent(server.url)
        n0, cpu0, t0 = done[0], proc_cpu_s(server.pid), time.perf_counter()
        loop0 = thread_cpu_s(server.pid, server.pid)
        await asyncio.sleep(opts.seconds)
        n1, cpu1, t1 = done[0], proc_cpu_s(server.pid), time.perf_counter()
        loop1 = thread_cpu_s(server.pid, server.pid)
        hashes1, hash_cpu1 = await hashing_spent(server.url)
        if profile:
            os.kill(server.pid, signal.SIGUSR2)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    return Peak(per_s=(n1 - n0) / (t1 - t0), cores=(cpu1 - cpu0) / (t1 - t0),
                loop_ms=1000 * (loop1 - loop0) / (n1 - n0) if n1 > n0 else 0.0,
                logins=n1 - n0, hashes=hashes1 - hashes0, hash_cpu_s=hash_cpu1 - hash_cpu0,
                server_cpu_s=cpu1 - cpu0)


async def steady_logins(target: Target, logins: Sequence[str], rate: float,
                        seconds: float) -> tuple[list[float], int]:
    """Open loop at ``rate`` per second: each sign-in's ms from its planned start, and
    how many the server shed as busy (a client would come back after Retry-After)."""
    loop = asyncio.get_running_loop()
    took: list[float] = []
    busy = [0]
    t0 = loop.time()

    async def one(n: int, planned: float) -> None:
        try:
            await login(target, logins[n % len(logins)],
                        f"198.20.{n // 250 % 250}.{n % 250}")
        except Busy:
            busy[0] += 1
            return
        took.append((loop.time() - planned) * 1000)

    tasks = []
    for n in range(max(1, int(rate * seconds))):
        planned = t0 + n / rate
        await asyncio.sleep(max(0.0, planned - loop.time()))
        tasks.append(asyncio.create_task(one(n, planned)))
    await asyncio.gather(*tasks)
    return took, busy[0]


def _timer_yaml(name: str) -> str:
    """A flow whose only step waits three days for its timer."""
    return f"""\
flows:
  {name}:
    title: {{zh: 计时, en: Timers}}
    expires_in: 30d
    initial: waiting
    states:
      waiting:
        label: {{zh: 等待, en: Waiting}}
        timeout: {{after: 3d, trigger: expire}}
      lapsed:
        final: true
        label: {{zh: 已过期, en: Lapsed}}
    transitions:
      - trigger: expire
        source: waiting
        dest: lapsed
"""


TIMER_YAML = _timer_yaml("lapse")


def _postgres_cpu_s(pids: set[int]) -> float | None:
    """CPU seconds of these PostgreSQL backends, if they run on this machine."""
    total = 0.0
    for pid in pids:
        comm = Path(f"/proc/{pid}/comm")
        try:
            if comm.read_text().strip() != "postgres":
                return None  # a server elsewhere: the pid is some other process here
            total += proc_cpu_s(pid)
        except OSError:
            return None
    return total


async def _backends(pool: Any) -> set[int]:
    async with pool.acquire() as conn:
        return set(await conn.fetchval(
            "SELECT array_agg(pid) FROM pg_stat_activity WHERE datname = current_database()"))


async def timers_per_s(dsn: str, n: int) -> dict[str, float]:
    """``n`` timers due at once, fired by one worker per core: timers per second, and
    the CPU they cost, of this process and of the PostgreSQL backends serving it (when
    PostgreSQL runs on this machine): on a machine shared with other work the rate
    says how much of it was ours, the CPU what a timer costs."""
    registry = Registry()
    clock = FrozenClock()
    pool = await create_pool(dsn, min_size=2, max_size=4 * cores())
    try:
        runtime = Runtime(PgStore(pool), clock, registry, load_text(TIMER_YAML,
                                                                    registry=registry))
        await runtime.publish()
        sem = asyncio.Semaphore(16)

        async def start() -> None:
            async with sem:
                await runtime.start("lapse")

        await asyncio.gather(*(start() for _ in range(n)))
        clock.advance(timedelta(days=3, seconds=1))
        workers = [TimerWorker(runtime, runtime.store, clock) for _ in range(cores())]

        async def drain(worker: TimerWorker) -> None:
            while await worker.run_once():
                pass

        backends = await _backends(pool)
        db0, cpu0 = _postgres_cpu_s(backends), time.process_time()
        t0 = time.perf_counter()
        await asyncio.gather(*(drain(w) for w in workers))
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        # Backends the pool opened meanwhile count from nothing.
        later = await _backends(pool)
        db1 = _postgres_cpu_s(backends | later)
        fired = sum(w.fired for w in workers)
        if fired != n:
            raise RuntimeError(f"{fired} of {n} timers fired")
        out = {"timers_per_s": n / elapsed, "timers_cpu_ms": 1000 * cpu / n}
        if db0 is not None and db1 is not None:
            db = db1 - db0
            out.update(timers_db_cpu_ms=1000 * db / n,
                       timers_per_s_per_core=n / (cpu + db) if cpu + db else 0.0)
        return out
    finally:
        await pool.close()


STEADY_YAML = _timer_yaml("lapse_soon")


class _Shifted:
    """The time now, as it will be ``offset`` from now: the workers' clock, moved to the
    days when the timers fall due, but ticking in real time."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


async def steady_timers(dsn: str, rate: float, seconds: float,
                        interval: float) -> dict[str, float | int]:
    """Timers falling due at a steady ``rate`` for ``seconds``, fired by one worker per
    core running as a server runs them (``TimerWorker.run``: when idle, until the next
    one falls due, at most ``interval`` seconds): how late each fired (its event's time
    minus its due time), and how many fired more than once or never.

    The instances are started first, their clock moved on one due slot (1/rate s) at a
    time; the workers' clock is real time shifted to when those slots come.
    """
    registry = Registry()
    n = max(1, int(rate * seconds))
    start_clock = FrozenClock()
    first_due = start_clock.now() + timedelta(days=3)
    pool = await create_pool(dsn, min_size=2, max_size=4 * cores())
    try:
        flows = load_text(STEADY_YAML, registry=registry)
        await Runtime(PgStore(pool), start_clock, registry, flows).publish()
        slot = timedelta(seconds=1 / rate)
        lanes = 8

        async def lane(j: int) -> None:
            # A clock of its own: each start sees exactly the time of its slot.
            own = FrozenClock()
            starter = Runtime(PgStore(pool), own, registry, flows)
            for k in range(j, n, lanes):
                own.current = first_due - timedelta(days=3) + k * slot
                await starter.start("lapse_soon")

        await asyncio.gather(*(lane(j) for j in range(lanes)))
        # The first falls due a second after the workers begin.
        clock = _Shifted(first_due - datetime.now(UTC) - timedelta(seconds=1))
        runtime = Runtime(PgStore(pool), clock, registry, flows)
        workers = [TimerWorker(runtime, runtime.store, clock, interval=interval)
                   for _ in range(cores())]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            await asyncio.sleep(1 + seconds + 2 * interval + 2)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT e.instance_id, e.at, e.facts->'timer'->>'due_at' AS due_at"
                " FROM flow_events e JOIN flow_instances i ON i.id = e.instance_id"
                " WHERE i.flow = 'lapse_soon' AND e.trigger = 'expire'")
            left = await conn.fetchval(
                "SELECT count(*) FROM flow_timers t JOIN flow_instances i"
                " ON i.id = t.instance_id WHERE i.flow = 'lapse_soon'")
        late = sorted((datetime.fromisoformat(r["at"]) - datetime.fromisoformat(r["due_at"]))
                      .total_seconds() * 1000 for r in rows)
        fired = len({r["instance_id"] for r in rows})
        return {"timers_steady_per_s": rate, "timers_steady": n,
                "timer_late_p50_ms": round(late[len(late) // 2], 1) if late else -1.0,
                "timer_late_p99_ms": round(late[min(len(late) - 1, int(0.99 * len(late)))],
                                           1) if late else -1.0,
                "timer_late_max_ms": round(late[-1], 1) if late else -1.0,
                # Fired twice: two expire events, or a worker counting a step another
                # had taken. Missed: never fired, or still waiting when the phase ended.
                "timer_duplicates": len(rows) - fired + sum(w.fired for w in workers) - fired,
                "timer_missed": n - fired, "timers_left": int(left),
                "timer_interval_s": interval}
    finally:
        await pool.close()


def audit_events_per_s(dsn: str, jobs: int = 1) -> tuple[float, float, int]:
    """``flowctl audit --json --jobs N`` over the run's database (bench.audit's run of
    it): events per second of the command's whole run (its start included) in
    wall-clock time and in CPU time of its processes, and how many events."""
    done = audit_once(dsn, jobs)
    events = int(done["events"])
    return (events / done["wall_s"], events / done["cpu_s"] if done["cpu_s"] > 0 else 0.0,
            events)


class ProfiledServer(Server):
    """The server under bench.cprofile_serve: SIGUSR1 and SIGUSR2 bound its profile."""

    def __init__(self, dsn: str, redis_url: str, folder: Path, concurrency: int,
                 out: Path) -> None:
        super().__init__(dsn, redis_url, folder, concurrency)
        self.out = out.resolve()

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.cprofile_serve", str(self.out)]


def _refuse_if_taken(port: int) -> None:
    """Stop here if something listens on ``port``: its /readyz would pass for ours."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the server binds: connections of an earlier run in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise SystemExit(f"port {port} is in use: pick another") from exc


async def _run(opts: Options) -> dict[str, Any]:
    rng = random.Random(12)  # noqa: S311 - benchmark data, not secrets
    name = f"bench_{os.getpid()}_proc"
    dsn = await create_database(opts.admin_url, name, leftovers_of="bench")
    folder = Path(tempfile.mkdtemp(prefix="bench-procedures-"))
    concurrency = opts.login_concurrency or 2 * cores() + 2
    result: dict[str, Any] = {"cores": cores(), "load_average": list(os.getloadavg())}
    server = (ProfiledServer(dsn, opts.redis_url, folder, concurrency=max(4, concurrency),
                             out=Path(opts.profile)) if opts.profile else
              Server(dsn, opts.redis_url, folder, concurrency=max(4, concurrency)))
    if opts.port:
        _refuse_if_taken(opts.port)
        server.port, server.url = opts.port, f"http://127.0.0.1:{opts.port}"
        server.env["PORT"] = str(opts.port)
    server.env.update({
        "FLOWS_FILE": str(ROOT / "flows.yaml"), "FLOW_MODULES": "flows",
        # The outbox at its default interval: a step that queues a message (an SMS
        # code) wakes the dispatcher at once; polling 50 times a second, as this did,
        # cost the server CPU that the log-ins were charged with.
        "WORKERS": "true", "TIMER_INTERVAL": "1",
        "SYSTEMS_FILE": str(ROOT / "systems.yaml"),
        "REDIS_PREFIX": f"bench-proc-{os.getpid()}:",
        "PUBLIC_URL": server.url, "TRUSTED_PROXY_HEADER": "X-Forwarded-For",
        "ARGON2_MEMORY_KIB": str(opts.argon2_memory_kib)})
    answers_redis = create_redis(opts.redis_url)
    target: Target | None = None
    try:
        log("argon2: timing one verify at the shipped cost")
        verify_before = argon2_verify_ms(opts.argon2_samples, opts.argon2_memory_kib)
        result.update(argon2_memory_kib=opts.argon2_memory_kib,
                      argon2_verify_ms_all_cores=round(argon2_verify_ms_all_cores(
                          opts.argon2_samples, opts.argon2_memory_kib), 2))
        await server.start()
        target = Target(server.url, CaptchaAnswers(
            RedisEphemeral(answers_redis, server.env["REDIS_PREFIX"]), SystemClock()),
            captcha=opts.captcha, connector=aiohttp.TCPConnector(limit=0)
            if opts.connections == "shared" else None)
        result.update(login_captcha=opts.captcha, login_connections=opts.connections)
        log(f"registrations: {opts.registrations}, {opts.reg_concurrency} at a time")
        logins, reg_rate = await registrations(server.url, opts, rng)
        result["registrations_per_s"] = round(reg_rate, 1)
        log(f"log-ins: {concurrency} clients for {opts.seconds}s")
        window = await peak_logins(server, target, logins, opts, concurrency,
                                   profile=bool(opts.profile))
        peak, server_cores, loop_ms = window.per_s, window.cores, window.loop_ms
        # Timed again right after the log-ins, and the two averaged: a shared machine's
        # speed drifts from one minute to the next (a verify cost 20 to 31 ms of CPU
        # within one hour on the development machine), and the ratio divides by it.
        verify_after = argon2_verify_ms(opts.argon2_samples, opts.argon2_memory_kib)
        verify_ms = (verify_before + verify_after) / 2
        limit = 1000 / verify_ms
        result.update(argon2_verify_ms=round(verify_ms, 2),
                      argon2_verify_ms_before=round(verify_before, 2),
                      argon2_verify_ms_after=round(verify_after, 2),
                      argon2_limit_per_s_per_core=round(limit, 1))
        per_core = peak / server_cores if server_cores else 0.0
        result.update(logins_per_s=round(peak, 1), login_server_cores=round(server_cores, 2),
                      login_loop_cpu_ms=round(loop_ms, 2),
                      logins_per_s_per_core=round(per_core, 1),
                      login_ratio=round(per_core / limit, 3),
                      login_ratio_all_cores=round(
                          per_core * result["argon2_verify_ms_all_cores"] / 1000, 3))
        if window.hashes:
            result.update(
                login_hashes_per_login=round(window.hashes / window.logins, 3),
                login_hash_cpu_ms=round(1000 * window.hash_cpu_s / window.hashes, 2),
                login_hash_share=round(window.hash_cpu_s / window.server_cpu_s, 3))
        steady = 0.8 * peak
        log(f"log-ins at a steady {steady:.1f}/s for {opts.seconds}s")
        took, busy = await steady_logins(target, logins, steady, opts.seconds)
        took.sort()
        result.update(login_steady_per_s=round(steady, 1), login_steady_busy=busy,
                      login_p50_ms=round(statistics.median(took), 1) if took else None,
                      login_p99_ms=round(took[min(len(took) - 1,
                                                  int(0.99 * len(took)))], 1)
                      if took else None)
        await server.stop()
        if opts.only == "login":
            result["load_average_after"] = list(os.getloadavg())
            return result
        log(f"timers: {opts.timers} due at once, {cores()} workers")
        result.update({k: round(v, 3 if k.endswith("_ms") else 1)
                       for k, v in (await timers_per_s(dsn, opts.timers)).items()})
        log(f"timers: due at a steady {opts.steady_timer_rate:g}/s for "
            f"{opts.steady_timer_seconds:g}s, {cores()} workers every "
            f"{opts.timer_interval:g}s when idle")
        result.update(await steady_timers(dsn, opts.steady_timer_rate,
                                          opts.steady_timer_seconds, opts.timer_interval))
        log("audit: flowctl audit over the run's database")
        audit_rate, audit_cpu_rate, events = audit_events_per_s(dsn)
        result.update(audit_events_per_s=round(audit_rate, 1),
                      audit_events_per_s_cpu=round(audit_cpu_rate, 1), audit_events=events)
        if cores() > 1:
            jobs_rate, _, _ = audit_events_per_s(dsn, cores())
            result[f"audit_events_per_s_jobs_{cores()}"] = round(jobs_rate, 1)
        result["load_average_after"] = list(os.getloadavg())
        return result
    finally:
        if target is not None and target.connector is not None:
            await target.connector.close()
        await server.stop()
        await answers_redis.aclose()
        await drop_database(opts.admin_url, name)
        shutil.rmtree(folder, ignore_errors=True)
        # The run's keys: sessions, and the sandbox's inbox of phone numbers.
        await forget_keys(opts.redis_url, server.env["REDIS_PREFIX"])


def run(opts: Options) -> dict[str, Any]:
    configure_logging("json", "warning")
    structlog.configure(cache_logger_on_first_use=False)
    return asyncio.run(_run(opts))


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p, d = options.parser("bench.procedures", __doc__), Options()
    options.flag(p, d, "registrations")
    options.flag(p, d, "reg_concurrency")
    options.flag(p, d, "login_concurrency",
                 help="clients signing in at once (0: two per core, and two)")
    options.flag(p, d, "seconds")
    options.flag(p, d, "warmup")
    options.flag(p, d, "argon2_samples")
    options.flag(p, d, "timers")
    options.flag(p, d, "steady_timer_rate",
                 help="timers falling due per second in the steady phase")
    options.flag(p, d, "steady_timer_seconds")
    options.flag(p, d, "timer_interval",
                 help="the workers' pause when idle, as TIMER_INTERVAL (seconds)")
    options.servers(p)
    options.flag(p, d, "port", help="the server's port (0: any free one); refused if in use")
    options.flag(p, d, "only", choices=("all", "login"),
                 help="login: the hash, the registrations and the log-ins alone")
    options.flag(p, d, "profile", metavar="FILE",
                 help="cProfile the server's event loop in the peak log-in window into FILE "
                      "(python -m pstats FILE); the ratio is then not comparable")
    options.flag(p, d, "connections", choices=("shared", "own"),
                 help="the sign-ins' connections: kept alive and shared, as a load "
                      "balancer's to the servers, or each sign-in's own, as a browser's "
                      "straight to the server")
    options.flag(p, d, "argon2_memory_kib",
                 help="the Argon2 memory cost of the server and of the reference verify "
                      "(KiB; default: the shipped one). A small one shows what a sign-in "
                      "costs the event loop with no hash keeping the caches busy")
    options.flag(p, d, "captcha", choices=("inline", "request"),
                 help="the sign-in's captcha image: in the start's answer (Prefer: "
                      "captcha-image), or by a request of its own")
    return options.parsed(Options, p, argv)

def main(argv: Sequence[str] | None = None) -> int:
    print(json.dumps(run(parse_args(argv))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
