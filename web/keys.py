"""Typed application state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from engine import Clock, OutboxDispatcher, Registry, Runtime, TimerWorker
from flows.sessions import Session
from flows.support import Services
from storage import PgStore, RedisClient
from web.metrics import Metrics
from web.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
REGISTRY = web.AppKey("registry", Registry)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS: web.AppKey[RedisClient] = web.AppKey("redis")
STORE = web.AppKey("store", PgStore)
RUNTIME = web.AppKey("runtime", Runtime)
METRICS = web.AppKey("metrics", Metrics)
TIMERS = web.AppKey("timers", TimerWorker)
OUTBOX = web.AppKey("outbox", OutboxDispatcher)
Reload = Callable[[], Awaitable[bool]]
RELOAD: web.AppKey[Reload] = web.AppKey("reload")
REQUEST_ID = web.RequestKey("request_id", str)
SERVICES = web.AppKey("services", Services)
SESSION = web.RequestKey("session", Session)
# Set when the request carries a token but the dependency holding sessions is down.
SESSION_UNKNOWN = web.RequestKey("session_unknown", str)
