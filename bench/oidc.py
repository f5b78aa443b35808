"""Single sign-on under load: code exchanges per second per core, and the p99 of a whole
sign-on (authorize -> code -> token -> userinfo) at that load.

``python -m bench.oidc`` prints one JSON object last on stdout; progress goes to stderr.
One run, one fresh database (``bench_<pid>_oidc``, dropped at the end), a real
``flowctl serve`` process (one process: one core) on a systems file with one
confidential system, driven over HTTP by ``--concurrency`` clients in this process.

Signed-in sessions are made as the login flows make them (``Sessions.create`` on the
server's Redis prefix), for ``--accounts`` accounts written straight into the database:
signing in (Argon2, captchas) is not what is measured. The system's secret is stored as
``flowctl systems secret`` stores one.

Two phases:

1. **exchange**: ``--codes`` codes are issued first (``GET /authorize`` with a session:
   single sign-on, PKCE S256, a nonce), then the clients exchange them all at
   ``POST /token`` (client_secret_basic, the PKCE verifier) as fast as the server
   answers; only the exchanges are measured (codes live 60 seconds: keep ``--codes``
   below what the server issues and exchanges in that time).
2. **sign-on**, ``--seconds`` long after ``--warmup``: each client runs whole sign-ons,
   authorize -> token -> userinfo, and every one is timed from the first request to the
   last answer.

"Per core" divides a rate by the server process's own CPU seconds per wall second
(``/proc/<pid>/stat``): what one fully busy core of the server would do. PostgreSQL,
Redis and the load generator run on the same machine and are not counted, as
Keycloak's sizing guide counts Keycloak's vCPUs alone: 120 client-credential grants/s
per vCPU (https://www.keycloak.org/high-availability/concepts-memory-and-cpu-sizing).
The goal here is twice that per core. Nothing here asserts a time: a test runs it small.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import redis.asyncio as aioredis

from bench import options
from bench.steps import forget_keys, free_port, log, proc_cpu_s
from flows.pii import Vault
from flows.sessions import Sessions
from storage import PgAccounts, PgOidc, RedisEphemeral, create_pool
from storage.scratch import create_database, drop_database
from web.oidc.routes import secret_hash

ROOT = Path(__file__).resolve().parent.parent
KEYCLOAK_GRANTS_PER_VCPU = 120
REDIRECT = "https://bench.example/cb"
SYSTEMS = f"""
systems:
  bench:
    name: {{zh: 压测系统, en: Benchmark}}
    initiate_login_uri: https://bench.example/login
    redirect_uris: [{REDIRECT}]
    account_kinds: [personal]
    scopes: [openid, profile]
"""


@dataclass
class Options:
    seconds: float = 10.0
    warmup: float = 2.0
    concurrency: int = 16
    accounts: int = 200
    codes: int = 3000
    admin_url: str = options.DEFAULT_ADMIN_URL
    redis_url: str = options.DEFAULT_REDIS_URL


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Client:
    """One relying party's view: its secret, and a signed-in browser's session token."""

    base: str
    secret: str
    sessions: list[str]
    http: aiohttp.ClientSession
    errors: list[str] = field(default_factory=list)

    @property
    def basic(self) -> str:
        pair = base64.b64encode(f"bench:{self.secret}".encode()).decode()
        return f"Basic {pair}"

    async def authorize(self, session: str) -> tuple[str, str]:
        """A code by single sign-on (session already there): the code and its verifier."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = urlencode({"response_type": "code", "client_id": "bench",
                           "redirect_uri": REDIRECT, "scope": "openid profile",
                           "state": secrets.token_urlsafe(8),
                           "nonce": secrets.token_urlsafe(8), "code_challenge": challenge,
                           "code_challenge_method": "S256"})
        async with self.http.get(f"{self.base}/authorize?{query}", allow_redirects=False,
                                 headers={"Cookie": f"session={session}"}) as r:
            location = r.headers.get("Location", "")
        code = parse_qs(urlsplit(location).query).get("code", [""])[0]
        if r.status != 302 or not code:
            raise RuntimeError(f"authorize: {r.status} {location[:80]}")
        return code, verifier

    async def token(self, code: str, verifier: str) -> dict[str, Any]:
        async with self.http.post(f"{self.base}/token", data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                "code_verifier": verifier}, headers={"Authorization": self.basic}) as r:
            body: dict[str, Any] = await r.json()
        if r.status != 200 or "id_token" not in body:
            raise RuntimeError(f"token: {r.status} {body.get('error')}")
        return body

    async def userinfo(self, access_token: str) -> None:
        async with self.http.get(f"{self.base}/userinfo", headers={
                "Authorization": f"Bearer {access_token}"}) as r:
            await r.read()
        if r.status != 200:
            raise RuntimeError(f"userinfo: {r.status}")


async def _timed(seconds: float, warmup: float, workers: int,
                 work: Callable[[int, Callable[[], bool]], Awaitable[list[float]]],
                 pid: int) -> dict[str, Any]:
    """Run ``workers`` copies of ``work`` for warmup + seconds; the latencies of the
    measured window, its wall and server CPU seconds."""
    start = time.monotonic()
    measure_from = start + warmup
    end = measure_from + seconds
    window: dict[str, float] = {}

    def measuring() -> bool:
        now = time.monotonic()
        if now >= measure_from and "cpu" not in window:
            window["cpu"], window["wall"] = proc_cpu_s(pid), now
        return now < end

    results = await asyncio.gather(*(work(i, measuring) for i in range(workers)))
    wall = time.monotonic() - window.get("wall", start)
    cpu = proc_cpu_s(pid) - window.get("cpu", 0.0)
    return {"latencies": [x for r in results for x in r], "wall": wall, "cpu": cpu}


async def _exchange_phase(client: Client, opts: Options, pid: int) -> dict[str, Any]:
    """Code exchanges alone: ``--codes`` codes issued first (they live 60 seconds), then
    exchanged by the clients as fast as the server answers; only that is measured."""
    async def issue(i: int) -> list[tuple[str, str]]:
        sessions = client.sessions[i::opts.concurrency] or client.sessions
        return [await client.authorize(sessions[n % len(sessions)])
                for n in range(i, opts.codes, opts.concurrency)]

    t0 = time.monotonic()
    batches = await asyncio.gather(*(issue(i) for i in range(opts.concurrency)))
    log(f"{opts.codes} codes issued in {time.monotonic() - t0:.1f}s; exchanging them")

    async def work(i: int, measuring: Callable[[], bool]) -> list[float]:
        latencies: list[float] = []
        for code, verifier in batches[i]:
            measuring()
            started = time.monotonic()
            try:
                await client.token(code, verifier)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                client.errors.append(str(exc)[:200])
                continue
            latencies.append(time.monotonic() - started)
        return latencies

    return await _timed(0.0, 0.0, opts.concurrency, work, pid)


async def _signon_phase(client: Client, opts: Options, pid: int) -> dict[str, Any]:
    async def work(i: int, measuring: Callable[[], bool]) -> list[float]:
        sessions = client.sessions[i::opts.concurrency] or client.sessions
        latencies: list[float] = []
        n = 0
        while measuring():
            n += 1
            t0 = time.monotonic()
            try:
                code, verifier = await client.authorize(sessions[n % len(sessions)])
                token = await client.token(code, verifier)
                await client.userinfo(token["access_token"])
            except Exception as exc:  # noqa: BLE001 - counted and reported
                client.errors.append(str(exc)[:200])
                continue
            if t0 >= start + opts.warmup:
                latencies.append(time.monotonic() - t0)
        return latencies

    start = time.monotonic()
    return await _timed(opts.seconds, opts.warmup, opts.concurrency, work, pid)


async def _seed(dsn: str, opts: Options, prefix: str) -> tuple[str, list[str]]:
    """Accounts with a signed-in session each, and the system's secret."""
    vault = Vault.for_development()  # what a development server uses without keys
    pool = await create_pool(dsn, min_size=1, max_size=2)
    redis = aioredis.from_url(opts.redis_url)
    try:
        accounts = PgAccounts(pool)
        now = datetime.now(UTC)
        sessions = Sessions(RedisEphemeral(redis, prefix), ttl=timedelta(hours=8))
        tokens = []
        async with pool.acquire() as conn:
            for n in range(opts.accounts):
                account_id = str(uuid.uuid4())
                await accounts.create_person(
                    account_id=account_id, kind="personal", login_name=f"bench{n}",
                    display_name=f"压测{n}", password_hash="-",  # noqa: S106 - none
                    id_number_sealed=None, id_number_index=None, phone_sealed=None,
                    phone_index=None,                    must_change_password=False, now=now)(conn)
                tokens.append(await sessions.create(account_id=account_id, kind="personal",
                                                    display_name=f"压测{n}", now=now))
        secret = secrets.token_urlsafe(32)
        await PgOidc(pool).add_secret("bench", secret_hash(vault, secret), now,
                                      revoke_others=False)
        return secret, tokens
    finally:
        await redis.aclose()
        await pool.close()


async def _start_server(env: dict[str, str], url: str, log_path: Path,
                        ) -> asyncio.subprocess.Process:
    flowctl = Path(sys.executable).with_name("flowctl")
    cmd = [str(flowctl), "serve"] if flowctl.exists() else \
        [sys.executable, "-m", "web.cli", "serve"]
    with log_path.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(*cmd, env=env, cwd=str(ROOT), stdout=out,
                                                    stderr=asyncio.subprocess.STDOUT)
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            if proc.returncode is not None:
                break
            try:
                async with http.get(f"{url}/.well-known/jwks.json") as r:
                    if r.status == 200 and (await r.json())["keys"]:
                        return proc
            except (aiohttp.ClientError, OSError):
                pass
            await asyncio.sleep(0.1)
    proc.kill()
    await proc.wait()
    tail = await asyncio.to_thread(log_path.read_text)
    raise RuntimeError("the server did not start:\n" + tail[-2000:])


def _figures(phase: dict[str, Any]) -> dict[str, float]:
    count = len(phase["latencies"])
    rate = count / phase["wall"] if phase["wall"] > 0 else 0.0
    cores = phase["cpu"] / phase["wall"] if phase["wall"] > 0 else 0.0
    return {"count": count, "per_s": round(rate, 1), "server_cores": round(cores, 2),
            "per_core_s": round(rate / cores, 1) if cores > 0 else 0.0,
            "p50_ms": round(percentile(phase["latencies"], 0.50) * 1000, 2),
            "p99_ms": round(percentile(phase["latencies"], 0.99) * 1000, 2)}


async def _run(opts: Options) -> dict[str, Any]:
    database = f"bench_{os.getpid()}_oidc"
    dsn = await create_database(opts.admin_url, database, leftovers_of="bench")
    prefix = f"bench-oidc-{uuid.uuid4().hex[:8]}:"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    folder = Path(tempfile.mkdtemp(prefix="bench-oidc-"))
    (folder / "systems.yaml").write_text(SYSTEMS, encoding="utf-8")
    env = {**os.environ, "DATABASE_URL": dsn, "REDIS_URL": opts.redis_url,
           "REDIS_PREFIX": prefix, "FLOWS_FILE": str(ROOT / "flows.yaml"),
           "SYSTEMS_FILE": str(folder / "systems.yaml"), "DATA_DIR": str(folder / "data"),
           "EXAMPLE_SYSTEM": "false", "WORKERS": "false", "LOG_LEVEL": "warning",
           "LOG_FORMAT": "json", "HOST": "127.0.0.1", "PORT": str(port), "PUBLIC_URL": url,
           "DB_POOL_MIN": str(min(opts.concurrency, 20)),
           "DB_POOL_MAX": str(min(opts.concurrency, 20)),
           "ENVIRONMENT": "development"}
    for name in ("PII_ENC_KEY", "PII_INDEX_KEY", "PII_PREVIOUS_KEYS"):
        env.pop(name, None)  # the development vault, which the seeding uses too
    proc: asyncio.subprocess.Process | None = None
    try:
        secret, tokens = await _seed(dsn, opts, prefix)
        log(f"{len(tokens)} signed-in sessions; starting the server on {url}")
        proc = await _start_server(env, url, folder / "server.log")
        connector = aiohttp.TCPConnector(limit=opts.concurrency * 2)
        async with aiohttp.ClientSession(connector=connector,
                                         cookie_jar=aiohttp.DummyCookieJar()) as http:
            client = Client(url, secret, tokens, http)
            log(f"exchange: {opts.concurrency} clients, {opts.seconds}s")
            exchange = _figures(await _exchange_phase(client, opts, proc.pid))
            log(f"sign-on: {opts.concurrency} clients, {opts.seconds}s")
            signon = _figures(await _signon_phase(client, opts, proc.pid))
        goal = 2 * KEYCLOAK_GRANTS_PER_VCPU
        return {
            "concurrency": opts.concurrency, "seconds": opts.seconds,
            "cpus": os.cpu_count(),
            "exchange": exchange, "signon": signon,
            "code_exchanges_per_s_per_core": exchange["per_core_s"],
            "signon_p99_ms": signon["p99_ms"],
            "keycloak_grants_per_s_per_vcpu": KEYCLOAK_GRANTS_PER_VCPU,
            "goal_per_s_per_core": goal,
            "goal_met": exchange["per_core_s"] >= goal,
            "errors": len(client.errors), "first_errors": client.errors[:3],
        }
    finally:
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await drop_database(opts.admin_url, database)
        await forget_keys(opts.redis_url, prefix)


def run(opts: Options) -> dict[str, Any]:
    return asyncio.run(_run(opts))


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p, d = options.parser("bench.oidc", __doc__), Options()
    options.flag(p, d, "seconds", help="measured seconds per phase")
    options.flag(p, d, "warmup", help="seconds run first and not measured, per phase")
    options.flag(p, d, "concurrency", help="clients at once")
    options.flag(p, d, "codes", help="codes issued, then exchanged, in the exchange phase")
    options.flag(p, d, "accounts", help="signed-in accounts the sign-ons are spread over")
    options.servers(p)
    return options.parsed(Options, p, argv)

def main(argv: Sequence[str] | None = None) -> int:
    print(json.dumps(run(parse_args(argv)), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
