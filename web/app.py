"""The composition root: ``create_app(settings)`` wires engine, storage and flows."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web
from redis.asyncio.cluster import RedisCluster

from engine import (
    Clock,
    DefinitionError,
    FlowSet,
    OutboxDispatcher,
    Registry,
    Runtime,
    SystemClock,
    TimerWorker,
    load_file,
)
from engine.loader import flows_from_contents
from flows.pii import Vault
from flows.support import VaultSealer
from storage import PgStore, RedisClient, RedisEphemeral, RedisLimiter, create_pool, create_redis
from storage.ephemeral import warm
from web import keys
from web.admin import admin_routes
from web.apidocs import docs_routes
from web.callbacks import callback_routes
from web.client import setup_client
from web.clock import OffsetFileClock
from web.httpclient import AiohttpClient
from web.logs import quiet_malformed_requests
from web.me import me_routes
from web.metrics import Metrics
from web.middleware import problems, request_context
from web.oidc import load_systems, logout_routes, oidc_context, oidc_routes
from web.outages import dependency_of
from web.platform import build_services
from web.policy import API_CSP, PAGE_CSP
from web.problems import HttpProblem, problem_response
from web.routes import routes
from web.sandbox import BRANCHES, CAPTCHA_ANSWERS, PROVIDERS, branch_routes, sandbox_routes
from web.seals import seal_routes
from web.sessions import sessions
from web.settings import Settings, SettingsError

log = structlog.get_logger("web.app")

HSTS = "max-age=31536000; includeSubDomains"

def build_registry(modules: tuple[str, ...]) -> Registry:
    return Registry().load_modules(modules)


def make_clock(settings: Settings) -> Clock:
    return OffsetFileClock(settings.clock_file) if settings.clock_file else SystemClock()


def _response_headers(settings: Settings) -> Callable[[web.Request, web.StreamResponse],
                                                     Awaitable[None]]:
    """Security headers and cookie flags on every response, whichever handler made it."""

    async def prepare(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers["Server"] = "identity-flows"  # the service, not the software and versions
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"  # frame-ancestors, for browsers without CSP 2
        # A page's forms need their Origin (web/sessions.py refuses a foreign one, and
        # under no-referrer a browser sends "null"); other sites still learn nothing.
        headers.setdefault("Referrer-Policy", "same-origin" if response.content_type ==
                           "text/html" else "no-referrer")
        policy = headers.get("Content-Security-Policy")
        if policy is None:
            headers["Content-Security-Policy"] = (PAGE_CSP if response.content_type ==
                                                  "text/html" else API_CSP)
        elif "frame-ancestors" not in policy:
            headers["Content-Security-Policy"] = f"{policy.rstrip('; ')}; " \
                                                 "frame-ancestors 'none'"
        if settings.production:
            headers["Strict-Transport-Security"] = HSTS
        if settings.secure_cookies:
            # Here rather than in each handler, so a cookie added later is covered too.
            # Depending on its version, aiohttp writes the cookies into header lines
            # before this hook or after it: both are marked.
            for morsel in response.cookies.values():
                morsel["secure"] = True
            lines = headers.popall("Set-Cookie", [])
            for line in lines:
                flags = {part.strip().lower() for part in line.split(";")[1:]}
                headers.add("Set-Cookie", line if "secure" in flags else f"{line}; Secure")

    return prepare


def _metrics_handler(metrics: Metrics, token: str | None) -> Callable[
        [web.Request], Awaitable[web.StreamResponse]]:
    """GET /metrics in Prometheus' text format; with a token, only for its bearer."""
    expected = token.encode() if token is not None else None

    async def scrape(request: web.Request) -> web.StreamResponse:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if expected is not None and not (scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode("utf-8", "replace"), expected)):
            body = HttpProblem(401, "metrics_unauthorized", "需要指标令牌",
                               "Metrics need the bearer token (METRICS_TOKEN)").problem()
            return problem_response(body, request, headers={"WWW-Authenticate": "Bearer"})
        return web.Response(body=metrics.render(), headers={
            "Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    return scrape


def metrics_app(app: web.Application) -> web.Application:
    """The application of METRICS_PORT: /metrics of ``app`` alone, for the scraper."""
    settings = app[keys.SETTINGS]
    scrape = web.Application(middlewares=[problems])
    scrape.on_response_prepare.append(_response_headers(settings))
    scrape.router.add_get("/metrics", _metrics_handler(app[keys.METRICS],
                                                       settings.metrics_token))
    return scrape


def create_app(settings: Settings, *, clock: Clock | None = None,
               registry: Registry | None = None) -> web.Application:
    """Build the application; resources start with it and stop with it."""
    if not settings.database_url or not settings.redis_url:
        raise ValueError("DATABASE_URL and REDIS_URL must be set (flowctl serve starts "
                         "embedded servers when they are not)")
    refused = settings.production_problems()
    if refused:  # from_env checks this too; settings built in code come through here
        raise SettingsError(refused)
    quiet_malformed_requests()
    app = web.Application(middlewares=[request_context, problems, sessions],
                          client_max_size=settings.max_body_bytes)
    app[keys.SETTINGS] = settings
    app.on_response_prepare.append(_response_headers(settings))
    app[keys.CLOCK] = clock or make_clock(settings)
    app[keys.REGISTRY] = registry or build_registry(settings.flow_modules)
    app[keys.METRICS] = Metrics()
    # The file is read before anything starts. An invalid one never serves: the flows
    # last served come from the database instead, or the server does not start.
    try:
        flows: FlowSet | DefinitionError = load_file(settings.flows_file,
                                                     app[keys.REGISTRY])
    except DefinitionError as exc:
        flows = exc
    # An invalid systems file does not serve: no system is better than a wrong one.
    systems = load_systems(settings.systems_path)
    # One cleanup context per resource: each stops if and only if it started.
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_redis)
    app.cleanup_ctx.append(_runtime(flows))
    app.cleanup_ctx.append(oidc_context(systems))
    app.add_routes(routes)
    app.add_routes(callback_routes)
    app.add_routes(admin_routes)
    app.add_routes(me_routes)
    app.add_routes(seal_routes)
    app.add_routes(oidc_routes)
    app.add_routes(logout_routes)
    app.add_routes(docs_routes)
    app.add_routes(branch_routes())
    setup_client(app)
    if settings.metrics_public:
        app.router.add_get("/metrics", _metrics_handler(app[keys.METRICS],
                                                        settings.metrics_token))
    elif settings.metrics_port is None:
        log.warning("metrics_not_served", reason="production serves /metrics only with "
                    "METRICS_TOKEN or on METRICS_PORT")
    if settings.environment == "development":
        # The sandbox shows codes and phone numbers in full: never outside development.
        app.add_routes(sandbox_routes())
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    assert settings.database_url
    pool = await create_pool(settings.database_url, min_size=settings.pool_min,
                             max_size=settings.pool_max,
                             acquire_timeout=settings.db_acquire_timeout or None,
                             command_timeout=settings.db_command_timeout or None,
                             statement_timeout=settings.db_statement_timeout or None,
                             transaction_pooling=settings.db_transaction_pooling)
    try:
        app[keys.POOL] = pool
        app[keys.STORE] = PgStore(pool)
        yield
    finally:
        try:
            await pool.close()
        except Exception as exc:
            if dependency_of(exc) is None:
                raise
            # Stopping while the database is down or frozen: asyncpg has terminated
            # the connections it could not close within the command timeout.
            # Expected then: one line naming it, not a traceback.
            log.warning("database_pool_not_closed_cleanly", error=type(exc).__name__,
                        dependency=dependency_of(exc))


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    assert settings.redis_url
    client = create_redis(settings.redis_url, timeout=settings.redis_timeout or None,
                          **settings.redis_topology())
    await warm(client)
    try:
        app[keys.REDIS] = client
        yield
    finally:
        await client.aclose()


async def _flows_to_serve(app: web.Application, loaded: FlowSet | DefinitionError) -> FlowSet:
    """The file's flows; if the file is invalid, the set last served, from the database.

    Falls back only when the file does not load (unreadable, not YAML, does not lint)
    and some server has served a valid set on this database before; a fresh database
    and a broken file still refuse to start. A reload never falls back: it keeps what
    is served.
    """
    if isinstance(loaded, FlowSet):
        return loaded
    stored = await app[keys.STORE].served_definitions()
    if not stored:
        raise loaded
    flows = flows_from_contents(stored, app[keys.REGISTRY])
    app[keys.METRICS].flows_file_invalid.set(1)
    log.error("flows_file_invalid_serving_stored", file=app[keys.SETTINGS].flows_file,
              errors=[str(d) for d in loaded.diagnostics],
              versions={name: f.version for name, f in flows.flows.items()})
    return flows


async def _report_pinned(runtime: Runtime, metrics: Metrics) -> None:
    """Log every version active instances run on that this code cannot run."""
    try:
        pinned = await runtime.check_pinned()
    except Exception:
        log.exception("pinned_versions_check_failed")
        return
    metrics.unrunnable_versions.set(len(pinned))
    for problem in pinned:
        # The server still serves every other flow; these instances fail at their next
        # step until the code that names what is missing is deployed again.
        log.error("pinned_version_cannot_run", flow=problem.flow, version=problem.version,
                  active_instances=problem.active_instances, problem=problem.problem)


def _limit_digest(vault: Vault) -> Callable[[str], str]:
    """Limit counters keyed by an HMAC under the vault's index key, never a plain hash of
    the phone numbers and ID numbers they count."""
    def digest(text: str) -> str:
        return vault.index("limit_key", text).hex()
    return digest


def _runtime(loaded: FlowSet | DefinitionError,
             ) -> Callable[[web.Application], AsyncIterator[None]]:
    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[keys.SETTINGS]
        store = app[keys.STORE]
        flows = await _flows_to_serve(app, loaded)
        outbox = OutboxDispatcher(store, app[keys.CLOCK], app[keys.REGISTRY],
                                  interval=settings.outbox_interval)
        ephemeral = RedisEphemeral(app[keys.REDIS], settings.redis_prefix)
        http_client = AiohttpClient()
        try:
            services = build_services(settings, pool=app[keys.POOL], ephemeral=ephemeral,
                                      http_client=http_client, clock=app[keys.CLOCK],
                                      flows=flows, registry=app[keys.REGISTRY])
        except BaseException:
            await http_client.aclose()
            raise
        try:
            app[keys.SERVICES] = services
            app[keys.METRICS].watch_hashing(services.hasher)
            app[PROVIDERS] = services.providers
            if services.captchas.answers is not None:
                app[CAPTCHA_ANSWERS] = services.captchas.answers
            app[BRANCHES] = services.providers.branches
            runtime = Runtime(store, app[keys.CLOCK], app[keys.REGISTRY], flows,
                              observer=app[keys.METRICS], on_commit=outbox.notify,
                              limiter=RedisLimiter(ephemeral),
                              sealer=VaultSealer(services.vault),
                              key_digest=_limit_digest(services.vault),
                              services=services.by_type())
            await runtime.publish()
            await store.record_served(flows.flows.values())
            app[keys.RUNTIME] = runtime
            app[keys.OUTBOX] = outbox
            app[keys.TIMERS] = TimerWorker(runtime, store, app[keys.CLOCK],
                                           interval=settings.timer_interval)
            if settings.workers:
                runtime.on_timer = app[keys.TIMERS].notify
            app[keys.RELOAD] = _reloader(app, runtime)
            async with _background(app):
                yield
        finally:
            await services.providers.aclose()
            await http_client.aclose()

    return runtime_ctx


def _reloader(app: web.Application, runtime: Runtime) -> keys.Reload:
    settings = app[keys.SETTINGS]

    async def reload() -> bool:
        try:
            new = load_file(settings.flows_file, app[keys.REGISTRY])
        except DefinitionError as exc:
            app[keys.METRICS].reloads.labels("refused").inc()
            log.error("flows_reload_refused", file=settings.flows_file,
                      errors=[str(d) for d in exc.diagnostics])
            return False
        try:
            changed = await runtime.reload(new)
            await app[keys.STORE].record_served(new.flows.values())
        except Exception as exc:
            if dependency_of(exc) is None:
                raise
            # The runtime stores the versions before it swaps them in: down then, the
            # old flows go on serving. Reloading again once it is back does the rest.
            app[keys.METRICS].reloads.labels("failed").inc()
            log.error("flows_reload_failed", file=settings.flows_file, exc_info=exc)
            return False
        app[keys.METRICS].reloads.labels("applied").inc()
        app[keys.METRICS].flows_file_invalid.set(0)
        log.info("flows_reloaded", file=settings.flows_file, changed=changed)
        return True

    return reload


@contextlib.asynccontextmanager
async def _background(app: web.Application) -> AsyncIterator[None]:
    """Run the reload listener, the pinned-version check, timers and outbox meanwhile."""
    settings = app[keys.SETTINGS]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(
        _listen_for_reload(app[keys.REDIS], settings.redis_prefix + "reload",
                           app[keys.RELOAD], stop),
        name="reload"),
        # In the background: it reads every active instance's version, which on a big
        # table is a scan the server need not wait for to serve.
        asyncio.create_task(_report_pinned(app[keys.RUNTIME], app[keys.METRICS]),
                            name="pinned")]
    if settings.workers:
        tasks.append(asyncio.create_task(app[keys.TIMERS].run(), name="timers"))
        tasks.append(asyncio.create_task(app[keys.OUTBOX].run(), name="outbox"))
    try:
        yield
    finally:
        # Each loop also checks its flag, should a cancel be swallowed below it.
        stop.set()
        app[keys.TIMERS].stop()
        app[keys.OUTBOX].stop()
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=5.0)


async def _listen_for_reload(redis: RedisClient, channel: str,
                             reload: Callable[[], Awaitable[bool]],
                             stop: asyncio.Event) -> None:
    """Reload when `flowctl reload` publishes, so every process follows the file.

    Redis down: one line now and then (web/logs.py), a new try every second, and one
    line when it listens again.
    """
    lost = False
    while not stop.is_set():
        try:
            if isinstance(redis, RedisCluster):
                # A cluster client reads the slot map at its first command; its pub/sub
                # picks a node from that map and fails on an empty one.
                await redis.initialize()
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                if lost:
                    log.info("reload_listener_resumed")
                    lost = False
                while not stop.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=0.5)
                    if message and message.get("type") == "message":
                        await reload()
        except Exception as exc:  # keep listening after a Redis hiccup
            lost = True
            log.warning("reload_listener_lost_redis", exc_info=exc)
            await asyncio.sleep(1.0)
