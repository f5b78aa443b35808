"""flowctl: serve, migrate, lint, graph, schema, dry-run, export, replay, audit, reload,
versions, admin."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import getpass
import json
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine import (
    CompiledFlow,
    DefinitionError,
    DuplicateKey,
    FlowSet,
    Invalid,
    Registry,
    Runtime,
    SystemClock,
    check_text,
    export_lines,
    instance_ref,
    load_file,
    replay_export,
)
from engine.dryrun import ScriptError, describe_step, dry_run, parse_script
from engine.graph import to_mermaid, to_svg
from engine.loader import build_flow
from engine.reference import KINDS, entries, to_markdown, to_text
from engine.replay import AuditFinding, AuditSummary, audit, export_columns
from engine.runtime import PinnedProblem
from engine.schema import flows_schema
from flows.common import login_name as check_login_name
from flows.passwords import Hasher, PasswordPolicy, check
from storage import PgAccounts, PgStore, create_pool, migrate_database
from web.logs import configure_logging
from web.settings import Settings, SettingsError, is_loopback


def _registry(settings: Settings, extra: list[str] | None) -> Registry:
    return Registry().load_modules((*settings.flow_modules, *(extra or [])))


@contextlib.contextmanager
def _database(settings: Settings, *, migrate: bool = True) -> Iterator[str]:
    """DATABASE_URL, else the embedded PostgreSQL under DATA_DIR, as `flowctl serve` uses.

    While `make run` serves from that folder this connects to its server; otherwise the
    server starts for this command and stops after it. Like `serve`, it is migrated first
    (unless ``migrate`` is False: `flowctl migrate` reports what it applies).
    """
    if settings.database_url:
        yield settings.database_url
        return
    from web.devservers import EmbeddedServers

    servers = EmbeddedServers(settings.data_dir)
    try:
        dsn = servers.database_url()
        if migrate:
            asyncio.run(migrate_database(
            dsn, transaction_pooling=settings.db_transaction_pooling))
        yield dsn
    finally:
        servers.stop()


# -- lint and graph -------------------------------------------------------------------

def cmd_lint(args: argparse.Namespace, settings: Settings) -> int:
    path = args.path or settings.flows_file
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{path}:1:1: cannot read: {exc}", file=sys.stderr)
        return 1
    content, diags = check_text(text, path, _registry(settings, args.module))
    for d in diags:
        print(d)
    if diags:
        print(f"{len(diags)} problem(s)", file=sys.stderr)
        return 1
    print(f"{path}: ok, {len(content)} flow(s)")
    return 0


def cmd_graph(args: argparse.Namespace, settings: Settings) -> int:
    try:
        flows = load_file(args.file or settings.flows_file, _registry(settings, args.module))
    except DefinitionError as exc:
        print(exc, file=sys.stderr)
        return 1
    flow = flows.get(args.flow)
    if flow is None:
        print(f"no flow named {args.flow!r} (flows: {', '.join(flows.flows)})",
              file=sys.stderr)
        return 1
    out = to_svg(flow) if args.format == "svg" else to_mermaid(flow)
    if args.output:
        Path(args.output).write_text(out, encoding="utf-8")
    else:
        sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return 0


def cmd_schema(args: argparse.Namespace, settings: Settings) -> int:
    """Print the JSON Schema of flows.yaml, with the names the loaded modules register."""
    schema = flows_schema(_registry(settings, args.module))
    print(json.dumps(schema, indent=2, ensure_ascii=False))
    return 0


def cmd_actions(args: argparse.Namespace, settings: Settings) -> int:
    """List every action, guard, validator, policy and sender, with what each declares."""
    found = entries(_registry(settings, args.module))
    if args.kind:
        found = [e for e in found if e.kind == args.kind]
    if args.json:
        print(json.dumps([e.as_dict() for e in found], indent=2, ensure_ascii=False))
    elif args.markdown:
        sys.stdout.write(to_markdown(found))
    else:
        sys.stdout.write(to_text(found))
    return 0


def cmd_dry_run(args: argparse.Namespace, settings: Settings) -> int:
    """Walk flows through scripted steps; nothing is stored or sent.

    Several scripts run one after the other (a folder of them in CI); the exit code is
    the worst: 2 for a script or file that is wrong, 1 for a run not as expected.
    """
    registry = _registry(settings, args.module)
    try:
        flows = load_file(args.file or settings.flows_file, registry)
    except DefinitionError as exc:
        print(exc, file=sys.stderr)
        return 2
    worst = 0
    for path in args.scripts:
        if len(args.scripts) > 1 and not args.json:
            print(f"== {path}")
        worst = max(worst, _dry_run_one(path, args, flows, registry))
    return worst


def _dry_run_one(path: str, args: argparse.Namespace, flows: FlowSet,
                 registry: Registry) -> int:
    try:
        script = parse_script(Path(path).read_text(encoding="utf-8"), path)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{path}: cannot read: {exc}", file=sys.stderr)
        return 2
    except ScriptError as exc:
        print(exc, file=sys.stderr)
        return 2
    name = args.flow or script.get("flow")
    flow = flows.get(name) if name else None
    if flow is None:
        print(f"{path}: say which flow ('flow:' in the script or --flow); flows: "
              f"{', '.join(flows.flows)}" if not name else f"{path}: no flow named {name!r}",
              file=sys.stderr)
        return 2
    try:
        run = dry_run(CompiledFlow(flow, registry), script, datetime.now(UTC))
    except ScriptError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"script": path, **run.as_dict()}, ensure_ascii=False))
    else:
        print(f"{flow.name} ({flow.version[:12]})")
        for step in run.steps:
            print(describe_step(step))
        left = len(script["steps"]) - len(run.steps)
        if left:
            print(f"stopped: {left} step(s) not taken")
        print(f"{'ok' if run.ok else 'NOT as expected'}: ends in {run.state}"
              f"{' (final)' if run.final else ''}")
    return 0 if run.ok else 1


# -- database commands ------------------------------------------------------------------

def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    with _database(settings, migrate=False) as dsn:
        applied = asyncio.run(migrate_database(
            dsn, transaction_pooling=settings.db_transaction_pooling))
    print(f"applied: {', '.join(applied)}" if applied else "up to date")
    return 0


async def _export(dsn: str, pooling: bool, instance_id: str) -> list[str]:
    pool = await create_pool(dsn, transaction_pooling=pooling, min_size=1, max_size=2)
    try:
        store = PgStore(pool)
        # The row, its events and its timers as of one moment (one snapshot).
        instance, events, timers = await store.snapshot(instance_id)
        content = await store.definition(instance.definition_hash)
        assert content is not None
        # After the timers were read: by then, a due one may have been dropped.
        live = export_columns(instance, timers, datetime.now(UTC))
        return export_lines(content, live, events)
    finally:
        await pool.close()


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from engine import EngineError
    try:
        with _database(settings) as dsn:
            lines = asyncio.run(_export(dsn, settings.db_transaction_pooling,
                                        args.instance_id))
    except EngineError as exc:
        print(f"{args.instance_id}: {exc.en}", file=sys.stderr)
        return 1
    data = "\n".join(lines) + "\n"
    if args.output:
        Path(args.output).write_text(data, encoding="utf-8")
        print(f"wrote {len(lines) - 2} event(s) to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(data)
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    target = Path(args.source)
    if target.exists():
        data = target.read_bytes()
    else:
        from engine import EngineError
        try:
            with _database(settings) as dsn:
                lines = asyncio.run(_export(dsn, settings.db_transaction_pooling,
                                            args.source))
                data = ("\n".join(lines) + "\n").encode()
        except EngineError as exc:
            print(f"{args.source}: not a file, and {exc.en}", file=sys.stderr)
            return 2
    report = replay_export(data, _registry(settings, args.module))
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False))
    elif report.ok:
        print(f"ok: {report.events} event(s) replayed, chain verified, final state "
              f"{report.state!r}")
    else:
        d: dict[str, Any] = report.divergence or {}
        print(f"diverged at seq {d.get('seq')}: {d.get('what')}: expected "
              f"{d.get('expected')!r}, found {d.get('found')!r}")
    return 0 if report.ok else 1


def _when(value: str | None, name: str) -> datetime | None:
    """An ISO date or time from the command line; a bare date is midnight UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--{name}: an ISO date or time is expected, not {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def _audit(dsn: str, pooling: bool, registry: Registry, args: argparse.Namespace,
                 since: datetime | None, until: datetime | None,
                 part: tuple[int, int] | None = None) -> AuditSummary:
    pool = await create_pool(dsn, transaction_pooling=pooling, min_size=1, max_size=2)
    try:
        store = PgStore(pool)

        async def compiled(version: str) -> CompiledFlow:
            content = await store.definition(version)
            if content is None:
                raise LookupError(f"definition version {version} is not stored")
            return CompiledFlow(build_flow(content), registry)

        def report(finding: AuditFinding) -> None:
            if args.json:
                print(json.dumps({"kind": "finding", **finding.as_dict()},
                                 ensure_ascii=False, default=str), flush=True)
            else:
                print(f"{finding.instance_id} {finding.flow}: seq {finding.seq}: "
                      f"{finding.what}: expected {finding.expected!r}, "
                      f"found {finding.found!r}", flush=True)

        histories = store.histories(flow=args.flow, since=since, until=until, part=part)
        # What was made so far (the modules, the registry) outlives the audit: the
        # collector, run again and again by the audit's many short-lived values, need
        # not look at it each time (until the audit ends: flowctl is also called in a
        # process that goes on, as the tests do).
        gc.freeze()
        try:
            # The clock is asked only where a timer is missing: whether, by a time
            # after its history was read, the timer worker may have dropped it.
            return await audit(histories, compiled, report, clock=SystemClock())
        finally:
            gc.unfreeze()
    finally:
        await pool.close()


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"a whole number from 1 to 256, not {text!r}")
    return value


def _audit_part(dsn: str, settings: Settings, args: argparse.Namespace,
                since: datetime | None, until: datetime | None,
                part: tuple[int, int]) -> AuditSummary:
    """One process's part of ``flowctl audit --jobs N``; findings printed as they come."""
    configure_logging(settings.log_format, settings.log_level)  # a new process: as main
    return _audit_one_part(dsn, settings, args, since, until, part)


def _audit_one_part(dsn: str, settings: Settings, args: argparse.Namespace,
                    since: datetime | None, until: datetime | None,
                    part: tuple[int, int]) -> AuditSummary:
    return asyncio.run(_audit(dsn, settings.db_transaction_pooling,
                              _registry(settings, args.module), args, since, until, part))


def _audit_in_parts(dsn: str, settings: Settings, args: argparse.Namespace,
                    since: datetime | None, until: datetime | None) -> AuditSummary:
    """Audit with ``args.jobs`` processes, each the instances of one hash part: this one
    and ``args.jobs - 1`` more.

    Replay is pure CPU in one Python thread: processes, not tasks, use more cores. Each
    reads its part in pages, as one process reads everything: memory stays flat. The
    others are forked from this process as it is, its modules imported (a new
    interpreter spends about a second of CPU importing them), when it runs no other
    thread (flowctl); else, as from within a test's thread, started anew.
    """
    import multiprocessing
    import threading
    from concurrent.futures import ProcessPoolExecutor

    n = args.jobs
    method = "fork" if threading.active_count() == 1 else "spawn"
    sys.stdout.flush()
    with ProcessPoolExecutor(n - 1, mp_context=multiprocessing.get_context(method)) as pool:
        others = [pool.submit(_audit_part, dsn, settings, args, since, until, (k, n))
                  for k in range(1, n)]
        parts = [_audit_one_part(dsn, settings, args, since, until, (0, n))]
        parts += [other.result() for other in others]
    total = AuditSummary()
    for part in parts:
        total.instances += part.instances
        total.events += part.events
        total.versions |= part.versions
        total.findings += part.findings
    return total


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    """Replay every stored history against its version and compare with the live rows."""
    try:
        since, until = _when(args.since, "since"), _when(args.until, "until")
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    with _database(settings) as dsn:
        if args.jobs > 1:
            summary = _audit_in_parts(dsn, settings, args, since, until)
        else:
            summary = asyncio.run(_audit(dsn, settings.db_transaction_pooling,
                                         _registry(settings, args.module), args, since,
                                         until))
    if args.json:
        print(json.dumps({"kind": "summary", **summary.as_dict()}))
    else:
        verdict = "every chain verifies and replays to the stored state" if summary.ok \
            else f"{summary.findings} instance(s) do not"
        print(f"{summary.instances} instance(s), {summary.events} event(s), "
              f"{len(summary.versions)} definition version(s): {verdict}")
    return 0 if summary.ok else 1


async def _publish_reload(url: str, channel: str, bound: float | None,
                          topology: dict[str, Any]) -> int:
    from storage import create_redis  # redis: the one command that talks to it

    client = create_redis(url, timeout=bound, **topology)
    try:
        return int(await client.publish(channel, "reload"))
    finally:
        await client.aclose()


def _signal_local_server(data_dir: str) -> int | None:
    """SIGHUP the server whose pid is in DATA_DIR/serve.pid; its pid, or None."""
    try:
        pid = int((Path(data_dir) / "serve.pid").read_text().strip())
        # A stale file may name another program now: SIGHUP would often end it.
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"flowctl" not in cmdline or b"serve" not in cmdline:
            return None
        os.kill(pid, signal.SIGHUP)
    except (ValueError, OSError):
        return None
    return pid


def cmd_reload(args: argparse.Namespace, settings: Settings) -> int:
    """Lint, then tell every server: over Redis, and by SIGHUP to the one of DATA_DIR.

    Either is enough; Redis being down is one line, not the end (the local server still
    gets its signal).
    """
    path = settings.flows_file
    code = cmd_lint(argparse.Namespace(path=path, module=args.module), settings)
    if code:
        print("not reloaded: the file does not lint", file=sys.stderr)
        return code
    sent = False
    if settings.redis_url:
        from redis.exceptions import RedisError

        from web.outages import describe

        try:
            n = asyncio.run(_publish_reload(settings.redis_url,
                                            settings.redis_prefix + "reload",
                                            settings.redis_timeout or None,
                                            settings.redis_topology()))
        except (RedisError, OSError) as exc:
            print(f"not published over Redis ({describe(exc)}): servers elsewhere reload "
                  "with SIGHUP or at their next start", file=sys.stderr)
        else:
            print(f"reload published to {n} server(s)")
            sent = True
    pid = _signal_local_server(settings.data_dir)
    if pid is not None:
        print(f"SIGHUP sent to {pid}")
        sent = True
    if not sent:
        print("no server told: Redis cannot be reached or REDIS_URL is unset, and no "
              f"flowctl serve has its pid in {Path(settings.data_dir) / 'serve.pid'}",
              file=sys.stderr)
        return 1
    return 0


async def _versions(dsn: str, pooling: bool, flow: str | None) -> list[dict[str, Any]]:
    pool = await create_pool(dsn, transaction_pooling=pooling, min_size=1, max_size=1)
    try:
        return await PgStore(pool).definitions(flow)
    finally:
        await pool.close()


async def _check_pinned(dsn: str, pooling: bool, registry: Registry) -> list[PinnedProblem]:
    pool = await create_pool(dsn, transaction_pooling=pooling, min_size=1, max_size=1)
    try:
        runtime = Runtime(PgStore(pool), SystemClock(), registry, FlowSet({}))
        return await runtime.check_pinned()
    finally:
        await pool.close()


def cmd_versions(args: argparse.Namespace, settings: Settings) -> int:
    if args.check:
        with _database(settings) as dsn:
            problems = asyncio.run(_check_pinned(dsn, settings.db_transaction_pooling,
                                                 _registry(settings, args.module)))
        for p in problems:
            if args.flow in (None, p.flow):
                print(f"{p.flow}\t{p.version}\t{p.active_instances} active\t{p.problem}")
        broken = [p for p in problems if args.flow in (None, p.flow)]
        print(f"{len(broken)} version(s) with active instances cannot run with this code"
              if broken else "every version with active instances runs with this code",
              file=sys.stderr)
        return 1 if broken else 0
    with _database(settings) as dsn:
        rows = asyncio.run(_versions(dsn, settings.db_transaction_pooling, args.flow))
    for row in rows:
        print(f"{row['flow']}\t{row['version']}\t{row['first_seen'].isoformat()}")
    return 0


# -- administrators -----------------------------------------------------------------------

def _read_password(args: argparse.Namespace) -> str | None:
    """From stdin (--password-stdin: the first line), else asked twice at the terminal.

    None, having said why, when there is no password to read.
    """
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line.strip("\r\n"):
            print("--password-stdin: the first line of stdin is empty; give the password "
                  "there, e.g. printf '%s\\n' \"$PASSWORD\" | flowctl admin create NAME "
                  "--password-stdin", file=sys.stderr)
            return None
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        print("admin create: no terminal to ask the password at; pipe it in with "
              "--password-stdin (the first line of stdin is the password)", file=sys.stderr)
        return None
    try:
        first = getpass.getpass("Password: ")
        again = getpass.getpass("Repeat the password: ")
    except (EOFError, KeyboardInterrupt):
        print("\nadmin create: no password given; nothing created", file=sys.stderr)
        return None
    if again != first:
        print("admin create: the two passwords differ; nothing created", file=sys.stderr)
        return None
    return first


def _password_policy(settings: Settings, extra: list[str] | None) -> PasswordPolicy:
    """The password policy of the flows file, else the default one."""
    try:
        flows = load_file(settings.flows_file, _registry(settings, extra))
    except DefinitionError:
        return PasswordPolicy()
    first = next(iter(flows.flows.values()), None)
    return PasswordPolicy.from_mapping(first.policies.get("password") if first else None)


async def _create_admin(dsn: str, settings: Settings, login_name: str, display_name: str,
                        password: str, reason: str) -> str:
    pool = await create_pool(dsn, transaction_pooling=settings.db_transaction_pooling,
                             min_size=1, max_size=1)
    try:
        accounts = PgAccounts(pool)
        hasher = Hasher(memory_cost=settings.argon2_memory_kib,
                        time_cost=settings.argon2_time_cost)
        account_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        create = accounts.create_person(
            account_id=account_id, kind="admin", login_name=login_name,
            display_name=display_name, password_hash=await hasher.hash(password),
            id_number_sealed=None, id_number_index=None, phone_sealed=None,
            phone_index=None, must_change_password=False, now=now)
        audit = accounts.audit(
            actor=f"cli:{_operator()}", action="create_admin",
            target=f"account:{account_id}", reason=reason, now=now,
            details={"login_name": login_name})
        async with pool.acquire() as conn, conn.transaction():
            try:
                await create(conn)
            except DuplicateKey:
                raise SystemExit(f"the login name {login_name!r} is taken") from None
            await audit(conn)
        return account_id
    finally:
        await pool.close()


def _operator() -> str:
    try:
        return os.getlogin()
    except OSError:
        return getpass.getuser()


def cmd_admin_create(args: argparse.Namespace, settings: Settings) -> int:
    try:
        login_name = check_login_name(args.login_name)
    except Invalid as exc:
        print(f"login name: {exc.en}", file=sys.stderr)
        return 1
    password = _read_password(args)
    if password is None:
        return 2
    try:
        check(_password_policy(settings, args.module), password, login_name=login_name)
    except Invalid as exc:
        print(f"password: {exc.en}", file=sys.stderr)
        return 1
    with _database(settings) as dsn:
        account_id = asyncio.run(_create_admin(dsn, settings, login_name,
                                               args.name or login_name, password, args.reason))
    print(f"administrator {login_name} created: {account_id}")
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    """Print fresh PII_ENC_KEY and PII_INDEX_KEY values (keep them in a secret store)."""
    from flows.pii import generate_keys

    keys = generate_keys()
    print(f"PII_ENC_KEY={keys['enc_key_b64']}")
    print(f"PII_INDEX_KEY={keys['index_key_b64']}")
    return 0


def cmd_systems(args: argparse.Namespace, settings: Settings) -> int:
    """List the business systems of systems.yaml (linted); make a client secret."""
    from web.oidc.cli import cmd_systems as run

    return run(args, settings, _database)


def cmd_signing_keys(args: argparse.Namespace, settings: Settings) -> int:
    """The OpenID Connect provider's signing keys: list, new, rotate."""
    from web.oidc.cli import cmd_signing_keys as run

    return run(args, settings, _database)


def cmd_ref(args: argparse.Namespace, settings: Settings) -> int:
    """Print how log lines name these instances (their ids never appear in logs)."""
    for instance_id in args.instance_ids:
        print(f"{instance_id} {instance_ref(instance_id)}")
    return 0


# -- serve ------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from web.serve import serve, serve_worker
    host = args.host or settings.host
    if settings.environment == "development" and not is_loopback(host):
        # The sandbox pages show every SMS code and captcha answer to whoever asks.
        print(f"refusing to serve on {host}: in development (ENVIRONMENT unset or "
              "development) the sandbox pages show SMS codes and captcha answers to anyone "
              "who can connect. Bind to loopback (HOST=127.0.0.1, ::1 or localhost) or set "
              "ENVIRONMENT=production", file=sys.stderr)
        return 2
    if args.worker:
        return serve_worker(settings, host=args.host or settings.host,
                            port=args.port or settings.port)
    workers = args.workers or settings.serve_workers
    if workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    return serve(settings, host=args.host, port=args.port, migrate_first=args.migrate,
                 workers=workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowctl", description=__doc__)
    parser.add_argument("--module", action="append",
                        help="extra module with register(registry); repeatable")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve the HTTP API (embedded servers when URLs unset)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--migrate", action="store_true", help="migrate before serving")
    p.add_argument("--workers", type=int,
                   help="server processes sharing the port (default: SERVE_WORKERS, 1); "
                        "one Python process uses one core")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("migrate", help="apply database migrations")
    p.set_defaults(fn=cmd_migrate)

    p = sub.add_parser("lint", help="check a flows file; every problem as file:line:col")
    p.add_argument("path", nargs="?")
    p.set_defaults(fn=cmd_lint)

    p = sub.add_parser("graph", help="draw a flow as a Mermaid state diagram or SVG")
    p.add_argument("flow")
    p.add_argument("--format", choices=["mermaid", "svg"], default="mermaid")
    p.add_argument("--file", help="flows file (default: FLOWS_FILE or flows.yaml)")
    p.add_argument("-o", "--output")
    p.set_defaults(fn=cmd_graph)

    p = sub.add_parser("schema", help="print the JSON Schema of flows.yaml (for editors)")
    p.set_defaults(fn=cmd_schema)

    p = sub.add_parser("actions", help="every action, guard, validator, policy and sender "
                                       "a flows file may name: parameters, results, refusals")
    p.add_argument("--kind", choices=KINDS, help="only names of this kind")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="as JSON")
    form.add_argument("--markdown", action="store_true",
                      help="as Markdown (docs/reference.md is this output)")
    p.set_defaults(fn=cmd_actions)

    p = sub.add_parser("dry-run", help="walk a flow through scripted steps; nothing stored")
    p.add_argument("scripts", nargs="+", metavar="SCRIPT",
                   help="YAML: flow, prefill, steps (trigger, input, facts, effects, "
                        "expect); see docs/flows.md. Several run one after the other.")
    p.add_argument("--flow", help="the flow (default: 'flow:' in the script)")
    p.add_argument("--file", help="flows file (default: FLOWS_FILE or flows.yaml)")
    p.add_argument("--json", action="store_true", help="print the run as JSON")
    p.set_defaults(fn=cmd_dry_run)

    p = sub.add_parser("export", help="write one instance's history as JSON Lines")
    p.add_argument("instance_id")
    p.add_argument("-o", "--output")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("replay", help="verify a history offline (file) or from the database")
    p.add_argument("source", metavar="FILE_OR_INSTANCE_ID")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(fn=cmd_replay)

    p = sub.add_parser("audit", help="replay every stored history against its version "
                                     "and compare it with the live instance")
    p.add_argument("--flow", help="only this flow's instances")
    p.add_argument("--since", help="only instances started at or after (ISO date or time)")
    p.add_argument("--until", help="only instances started before (ISO date or time)")
    p.add_argument("--json", action="store_true",
                   help="JSON Lines: one line a finding, then the summary")
    p.add_argument("--jobs", type=_jobs, default=1, metavar="N",
                   help="processes sharing the work (one per core at most helps)")
    p.set_defaults(fn=cmd_audit)

    p = sub.add_parser("reload", help="lint flows.yaml, then tell running servers to reload")
    p.set_defaults(fn=cmd_reload)

    p = sub.add_parser("ref", help="how log lines name an instance (they never show its id)")
    p.add_argument("instance_ids", nargs="+", metavar="INSTANCE_ID")
    p.set_defaults(fn=cmd_ref)

    p = sub.add_parser("keys", help="print a new pair of personal-data keys for production")
    # Needs no settings: it is how a configuration refused for its keys gets new ones.
    p.set_defaults(fn=cmd_keys, settings=False)

    systems = sub.add_parser("systems", help="the business systems of systems.yaml (linted, "
                                             "file:line:col); `secret ID` makes a secret")
    systems.set_defaults(fn=cmd_systems)
    keys = sub.add_parser("signing-keys", help="the OpenID Connect signing keys: list, new, "
                                               "rotate")
    keys.set_defaults(fn=cmd_signing_keys)
    # Here, not beside the commands in web.oidc.cli: importing web.oidc costs every
    # command (flowctl audit too) a third of a second.
    sub_systems = systems.add_subparsers(dest="systems_command")
    sub_systems.add_parser("list", help="every system, its kind of client, and its secrets")
    p = sub_systems.add_parser("secret",
                               help="make a new client secret; printed once, stored hashed")
    p.add_argument("system")
    p.add_argument("--revoke-others", action="store_true",
                   help="revoke the system's older secrets at once")
    sub_keys = keys.add_subparsers(dest="keys_command")
    sub_keys.add_parser("list", help="every key and its state (next, current, retired)")
    sub_keys.add_parser("new", help="a new key: current if none signs, else next (published)")
    sub_keys.add_parser("rotate", help="the next key signs; the current one retires")

    p = sub.add_parser("versions", help="list every stored definition version")
    p.add_argument("flow", nargs="?")
    p.add_argument("--check", action="store_true",
                   help="instead: check that every version active instances are pinned to "
                        "still runs with this code (its guards, actions and validators)")
    p.set_defaults(fn=cmd_versions)

    p = sub.add_parser("admin", help="back-office administrators")
    admin = p.add_subparsers(dest="admin_command", required=True)
    p = admin.add_parser("create", help="create an administrator account (Argon2id password)")
    p.add_argument("login_name")
    p.add_argument("--name", help="display name (default: the login name)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of stdin instead of asking")
    p.add_argument("--reason", default="created with flowctl admin create",
                   help="recorded in the audit log")
    p.set_defaults(fn=cmd_admin_create)

    args = parser.parse_args(argv)
    if not getattr(args, "settings", True):
        return int(args.fn(args, Settings()))
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"flowctl: {problem}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    code: int = args.fn(args, settings)
    return code


if __name__ == "__main__":
    sys.exit(main())
