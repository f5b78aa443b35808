"""The composition root: ``create_app(settings)`` wires engine, storage and flows."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable

import redis.asyncio as aioredis
import structlog
from aiohttp import web

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
from flows.support import VaultSealer
from storage import PgStore, RedisEphemeral, RedisLimiter, create_pool
from web import keys
from web.admin import admin_routes
from web.apidocs import docs_routes
from web.callbacks import callback_routes
from web.clock import OffsetFileClock
from web.httpclient import AiohttpClient
from web.logs import quiet_malformed_requests
from web.metrics import Metrics
from web.middleware import problems, request_context
from web.platform import build_services
from web.problems import HttpProblem, problem_response
from web.routes import routes
from web.sandbox import BRANCHES, CAPTCHA_ANSWERS, PROVIDERS, branch_routes, sandbox_routes
from web.sessions import sessions
from web.settings import Settings, SettingsError

log = structlog.get_logger("web.app")

# Responses that are not pages (JSON, problem+json, PNG, metrics) load nothing and are
# framed by no one.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
# A page that sets no policy of its own may use its own origin's scripts, styles and
# images; a page that needs more (the sandbox's inline styles) sets its own.
PAGE_CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
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
        headers.setdefault("Referrer-Policy", "no-referrer")
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
    # The file is checked before anything starts: an invalid file never serves.
    flows = load_file(settings.flows_file, app[keys.REGISTRY])
    app.cleanup_ctx.append(_resources(flows))
    app.add_routes(routes)
    app.add_routes(callback_routes)
    app.add_routes(admin_routes)
    app.add_routes(docs_routes)
    app.add_routes(branch_routes())
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


def _resources(flows: FlowSet) -> Callable[[web.Application], AsyncIterator[None]]:
    async def resources(app: web.Application) -> AsyncIterator[None]:
        settings = app[keys.SETTINGS]
        assert settings.database_url
        assert settings.redis_url
        pool = await create_pool(settings.database_url, min_size=settings.pool_min,
                                 max_size=settings.pool_max)
        redis = aioredis.from_url(settings.redis_url)
        store = PgStore(pool)
        outbox = OutboxDispatcher(store, app[keys.CLOCK], app[keys.REGISTRY],
                                  interval=settings.outbox_interval)
        ephemeral = RedisEphemeral(redis, settings.redis_prefix)
        http_client = AiohttpClient()
        services = build_services(settings, pool=pool, ephemeral=ephemeral,
                                  http_client=http_client, clock=app[keys.CLOCK], flows=flows,
                                  registry=app[keys.REGISTRY])
        app[keys.SERVICES] = services
        app[PROVIDERS] = services.providers
        if services.captchas.answers is not None:
            app[CAPTCHA_ANSWERS] = services.captchas.answers
        app[BRANCHES] = services.providers.branches
        runtime = Runtime(store, app[keys.CLOCK], app[keys.REGISTRY], flows,
                          observer=app[keys.METRICS], on_commit=outbox.notify,
                          limiter=RedisLimiter(ephemeral),
                          sealer=VaultSealer(services.vault),
                          services={**services.as_mapping(), "all": services})
        await runtime.publish()
        timers = TimerWorker(runtime, store, app[keys.CLOCK], interval=settings.timer_interval)
        app[keys.POOL] = pool
        app[keys.REDIS] = redis
        app[keys.STORE] = store
        app[keys.RUNTIME] = runtime
        app[keys.OUTBOX] = outbox
        app[keys.TIMERS] = timers

        async def reload() -> bool:
            try:
                new = load_file(settings.flows_file, app[keys.REGISTRY])
            except DefinitionError as exc:
                app[keys.METRICS].reloads.labels("refused").inc()
                log.error("flows_reload_refused", file=settings.flows_file,
                          errors=[str(d) for d in exc.diagnostics])
                return False
            changed = await runtime.reload(new)
            app[keys.METRICS].reloads.labels("applied").inc()
            log.info("flows_reloaded", file=settings.flows_file, changed=changed)
            return True

        app[keys.RELOAD] = reload
        stop = asyncio.Event()
        tasks = [asyncio.create_task(
            _listen_for_reload(redis, settings.redis_prefix + "reload", reload, stop),
            name="reload"),
            # In the background: it reads every active instance's version, which on a big
            # table is a scan the server need not wait for to serve.
            asyncio.create_task(_report_pinned(runtime, app[keys.METRICS]), name="pinned")]
        if settings.workers:
            tasks.append(asyncio.create_task(timers.run(), name="timers"))
            tasks.append(asyncio.create_task(outbox.run(), name="outbox"))
        try:
            yield
        finally:
            stop.set()  # the listener also checks this, should Redis swallow the cancel
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=5.0)
            await services.providers.aclose()
            await http_client.aclose()
            await redis.aclose()
            await pool.close()

    return resources


async def _listen_for_reload(redis: aioredis.Redis, channel: str,
                            reload: Callable[[], Awaitable[bool]],
                            stop: asyncio.Event) -> None:
    """Reload when `flowctl reload` publishes, so every process follows the file."""
    while not stop.is_set():
        try:
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                while not stop.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=0.5)
                    if message and message.get("type") == "message":
                        await reload()
        except Exception:  # noqa: BLE001 - keep listening after a Redis hiccup
            log.warning("reload_listener_lost_redis")
            await asyncio.sleep(1.0)
