"""Does a password reset take longer for a registered phone than for any other?

``python -m bench.enumeration`` prints one JSON object last on stdout; progress goes to
stderr. One run, one fresh database (``bench_<pid>_enum``, dropped at the end), the
real ``flows.yaml`` and the platform's own actions, in this process.

For each reset procedure (personal: SPEC 3; organisation: SPEC 7) it takes ``--samples``
pairs, one registered number (a personal account's phone, or an agent's) and one no
account has, in alternating order so that drift hits both alike. Each number is used
once, in an instance of its own: ``send_code``, then ``submit`` with a wrong code. Both
steps are timed around ``Runtime.advance`` (load, validate, the action, the commit):
the HTTP layer around it is the same for every number, and each sample gets a client
address of its own, as from different places, so the per-client SMS cap of
``flows.yaml`` does not cut the run short.

It reports, per procedure and step, the median milliseconds for registered and for
unregistered numbers and their ratio (registered / unregistered: 1.0 is no
difference), and whether every answer was the same either way (step by step, status
and error ids). Nothing here asserts a time: a test only runs it small.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from bench import options
from bench.steps import forget_keys, log
from engine import EngineError, Runtime
from flows.pii import MOBILE, RESIDENT_ID
from flows.support import Services
from storage.scratch import create_database, drop_database
from web import keys
from web.app import create_app
from web.logs import configure_logging
from web.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ("personal_password_reset", "legal_password_reset")
STEPS = ("send_code", "wrong_check")


@dataclass
class Options:
    samples: int = 200
    warmup: int = 20
    admin_url: str = options.DEFAULT_ADMIN_URL
    redis_url: str = options.DEFAULT_REDIS_URL


def new_phone(rng: random.Random) -> str:
    return "1" + rng.choice("3456789") + "".join(rng.choice("0123456789") for _ in range(9))


async def _registered_phones(app: web.Application, flow: str, n: int,
                             rng: random.Random) -> list[str]:
    """``n`` phones with an account behind them: personal accounts, or organisations'
    agents, written straight into the database."""
    s: Services = app[keys.SERVICES]
    now = app[keys.CLOCK].now()
    password_hash = await s.hasher.hash(uuid.uuid4().hex)
    phones = [new_phone(rng) for _ in range(n)]
    async with app[keys.POOL].acquire() as conn:
        for i, phone in enumerate(phones):
            login = f"bench{uuid.uuid4().hex[:12]}"
            id_number = f"bench-id-{i}"  # sealed and indexed only: never validated here
            sealed_id, id_index = (s.vault.seal(RESIDENT_ID, id_number),
                                   s.vault.index(RESIDENT_ID, id_number))
            sealed_phone, phone_index = s.vault.seal(MOBILE, phone), s.vault.index(MOBILE, phone)
            if flow == "personal_password_reset":
                write = s.accounts.create_person(
                    account_id=str(uuid.uuid4()), kind="personal", login_name=login,
                    display_name="基准", password_hash=password_hash,
                    id_number_sealed=sealed_id, id_number_index=id_index,
                    phone_sealed=sealed_phone, phone_index=phone_index,
                    must_change_password=False, now=now)
            else:
                write = s.accounts.create_organisation(
                    account_id=str(uuid.uuid4()), login_name=login, name=f"基准单位{i}",
                    credit_code=f"BENCH{uuid.uuid4().hex[:13].upper()}",
                    password_hash=password_hash, legal_rep_name="基准",
                    legal_rep_id_sealed=sealed_id, legal_rep_id_index=id_index,
                    agent_id=str(uuid.uuid4()), agent_name="基准", agent_id_sealed=sealed_id,
                    agent_id_index=id_index, agent_phone_sealed=sealed_phone,
                    agent_phone_index=phone_index, now=now)
            await write(conn)
    return phones


async def _answer(runtime: Runtime, iid: str, trigger: str, body: dict[str, str],
                  client: str) -> tuple[float, str]:
    """Time one step; return the milliseconds and what it answered (status, error ids)."""
    started = time.perf_counter()
    try:
        await runtime.advance(iid, trigger, body, client=client)
        answer = "200"
    except EngineError as exc:
        problem = exc.problem()
        answer = f"{problem['status']} {problem['error_id']} " + " ".join(
            e["error_id"] for e in problem.get("errors", []))
    return (time.perf_counter() - started) * 1000, answer


async def _sample(runtime: Runtime, flow: str, phone: str,
                  client: str) -> tuple[dict[str, float], list[str]]:
    iid = (await runtime.start(flow, client=client)).instance.id
    send_ms, sent = await _answer(runtime, iid, "send_code", {"mobile": phone}, client)
    # A code no number has been sent: 000000 is right for one in a million real codes.
    check_ms, checked = await _answer(runtime, iid, "submit",
                                      {"mobile": phone, "sms_code": "000000"}, client)
    return {"send_code": send_ms, "wrong_check": check_ms}, [sent, checked]


async def _measure(app: web.Application, flow: str, opts: Options,
                   rng: random.Random) -> dict[str, Any]:
    runtime = app[keys.RUNTIME]
    total = opts.warmup + opts.samples
    registered = await _registered_phones(app, flow, total, rng)
    times: dict[str, dict[str, list[float]]] = {
        kind: {step: [] for step in STEPS} for kind in ("registered", "unregistered")}
    answers: dict[str, set[str]] = {"registered": set(), "unregistered": set()}
    for n in range(total):
        pair = [("registered", registered[n]), ("unregistered", new_phone(rng))]
        for kind, phone in pair if n % 2 else reversed(pair):
            took, said = await _sample(runtime, flow, phone, f"198.18.{n // 250}.{n % 250}")
            answers[kind].add(" | ".join(said))
            if n >= opts.warmup:
                for step in STEPS:
                    times[kind][step].append(took[step])
    result: dict[str, Any] = {}
    for step in STEPS:
        mine, theirs = (statistics.median(times[k][step]) for k in ("registered",
                                                                       "unregistered"))
        result[f"{step}_ms"] = {"registered": round(mine, 3), "unregistered": round(theirs, 3),
                                "ratio": round(mine / theirs, 3)}
    result["answers"] = sorted(answers["registered"] | answers["unregistered"])
    result["answers_identical"] = answers["registered"] == answers["unregistered"]
    return result


async def _run(opts: Options) -> dict[str, Any]:
    database = f"bench_{os.getpid()}_enum"
    dsn = await create_database(opts.admin_url, database, leftovers_of="bench")
    prefix = f"bench-enum-{uuid.uuid4().hex[:8]}:"
    settings = Settings(database_url=dsn, redis_url=opts.redis_url, redis_prefix=prefix,
                        flows_file=str(ROOT / "flows.yaml"), flow_modules=("flows",),
                        workers=False, log_format="json", log_level="warning",
                        argon2_memory_kib=1024, argon2_time_cost=1)
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    rng = random.Random(7)  # noqa: S311 - test phone numbers, not secrets
    try:
        result: dict[str, Any] = {"samples": opts.samples}
        for flow in FLOWS:
            log(f"{flow}: {opts.warmup} + {opts.samples} pairs")
            result[flow] = await _measure(runner.app, flow, opts, rng)
        result["answers_identical"] = all(result[f]["answers_identical"] for f in FLOWS)
        return result
    finally:
        await runner.cleanup()
        await drop_database(opts.admin_url, database)
        await forget_keys(opts.redis_url, prefix)


def run(opts: Options) -> dict[str, Any]:
    """Run the benchmark; the caller's structlog configuration is left as it was."""
    saved = structlog.get_config()
    configure_logging("json", "warning")
    # A logger first used here must not keep this configuration for good: the caller (the
    # test suite) captures the same loggers' events afterwards.
    structlog.configure(cache_logger_on_first_use=False)
    try:
        return asyncio.run(_run(opts))
    finally:
        structlog.configure(**saved)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p, d = options.parser("bench.enumeration", __doc__), Options()
    options.flag(p, d, "samples", help="pairs of numbers timed per procedure")
    options.flag(p, d, "warmup", help="pairs taken first and not timed")
    options.servers(p)
    return options.parsed(Options, p, argv)

def main(argv: Sequence[str] | None = None) -> int:
    import json

    print(json.dumps(run(parse_args(argv)), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
