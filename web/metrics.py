"""Prometheus metrics, one registry per application."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flows.passwords import Hasher

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_cpu_seconds_total, resident memory, open files (where /proc is): the
        # hashing threads' CPU is read against the process's.
        ProcessCollector(registry=self.registry)
        # Collections and objects collected per generation (python_gc_*); a served
        # process freezes what it made to start (web/serve.py): how much, beside them.
        GCCollector(registry=self.registry)
        Gauge("python_gc_objects_frozen",
              "Objects the collector no longer looks at (frozen when the server started)",
              registry=self.registry).set_function(gc.get_freeze_count)
        self.steps = Counter("flow_steps", "Steps by flow, trigger and outcome",
                             ["flow", "trigger", "outcome"], registry=self.registry)
        self.step_seconds = Histogram(
            "flow_step_seconds", "Time to take one step", ["flow"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.requests = Counter("http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self._step_counters: dict[tuple[str, str, str], Any] = {}
        self._request_counters: dict[tuple[str, str, int], Any] = {}
        self._step_timers: dict[str, Any] = {}
        self.reloads = Counter("flows_reloads", "Reloads of flows.yaml by outcome",
                               ["outcome"], registry=self.registry)
        self.unrunnable_versions = Gauge(
            "flow_versions_unrunnable",
            "Definition versions active instances run on that this code cannot run",
            registry=self.registry)
        self.flows_file_invalid = Gauge(
            "flows_file_invalid",
            "1 while the flows file is invalid and the flows last served are served",
            registry=self.registry)

    def step(self, flow: str, trigger: str, outcome: str, seconds: float) -> None:
        """Record one step: the engine's Observer port."""
        # labels() is a lock and a dict lookup per call: keep the children instead.
        counter = self._step_counters.get((flow, trigger, outcome))
        if counter is None:
            counter = self._step_counters.setdefault(
                (flow, trigger, outcome), self.steps.labels(flow, trigger, outcome))
        timer = self._step_timers.get(flow)
        if timer is None:
            timer = self._step_timers.setdefault(flow, self.step_seconds.labels(flow))
        counter.inc()
        timer.observe(seconds)

    def request(self, method: str, route: str, status: int) -> None:
        """Count one HTTP request (route: the route's pattern, never the raw path)."""
        # A client picks the method: an unknown one is counted as "other", so no client
        # can grow the number of series.
        if method not in _METHODS:
            method = "other"
        counter = self._request_counters.get((method, route, status))
        if counter is None:
            counter = self._request_counters.setdefault(
                (method, route, status), self.requests.labels(method, route, str(status)))
        counter.inc()

    def watch_hashing(self, hasher: Hasher) -> None:
        """Report the password hasher's work at each scrape (read then, not counted per
        hash on the event loop): hashes made, their threads' CPU, refusals, and how many
        run or wait now."""
        self.registry.register(_Hashing(hasher))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Hashing(Collector):
    """The hasher's figures, read at each scrape. ``password_hash_cpu_seconds_total``
    over ``password_hashes_total`` is what one hash costs this server under its load;
    against the process's CPU it is the share of the server that went to hashing."""

    def __init__(self, hasher: Hasher) -> None:
        self.hasher = hasher

    def collect(self) -> Iterator[Metric]:
        spent = self.hasher.spent()
        yield CounterMetricFamily(
            "password_hashes", "Argon2id hashes and verifies made (dummy ones included)",
            value=spent.hashes)
        yield CounterMetricFamily(
            "password_hash_cpu_seconds",
            "CPU seconds the hashing threads spent in Argon2id", value=spent.cpu_seconds)
        yield CounterMetricFamily(
            "password_hashes_refused",
            "Hashes refused at once because every thread was busy and the queue full "
            "(503 server_busy)", value=spent.refused)
        yield GaugeMetricFamily(
            "password_hashes_admitted", "Hashes running or waiting for a thread now",
            value=self.hasher.admitted)
