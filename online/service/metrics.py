"""Prometheus metrics of one feature-service app, in its own registry (never the process-global one), and
the ASGI middleware that counts and times every request by route template and status.

With several worker processes a scrape reaches one of them, so each worker's own counts would go backwards
from one scrape to the next: the runner then puts the workers in prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``) and ``render_metrics`` answers every worker's counts summed.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """Request counts and latency histograms by route and status, entity rows read, Redis errors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("quasar_feature_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("quasar_feature_request_seconds", "Time to answer a request, by route and status",
                                 ["route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.entity_rows = Counter("quasar_feature_entity_rows", "Entity rows read by feature requests",
                                   registry=self.registry)
        self.redis_errors = Counter("quasar_feature_redis_errors", "Online store (Redis) errors, by error type",
                                    ["type"], registry=self.registry)

    def render(self) -> bytes:
        return render_metrics(self.registry)


def multiprocess_dir() -> str | None:
    """The folder of prometheus_client's multiprocess mode when this process counts in it, else None. The mode
    is fixed when prometheus_client is imported (the variable must be set before), hence both checks."""
    folder = os.environ.get(MULTIPROC_ENV)
    if folder and values.ValueClass is not values.MutexValue:
        return folder
    return None


def render_metrics(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry``; in multiprocess mode, of every worker process's metrics summed
    (counters and histograms only: gauges would need a multiprocess mode of their own)."""
    folder = multiprocess_dir()
    if folder is None:
        return generate_latest(registry)
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=folder)
    return generate_latest(merged)


def route_label(scope: Scope, known: frozenset[str] = frozenset()) -> str:
    """The matched route's template, or the path when it is a known route answered before routing (a 401);
    ``unmatched`` otherwise, so label values stay bounded."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    return scope["path"] if scope["path"] in known else "unmatched"


class MetricsMiddleware:
    """Pure ASGI (no per-request task or body copy): records the status and time of every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, known_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.metrics = metrics
        self.known_paths = known_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            labels: Any = (route_label(scope, self.known_paths), str(status[0]))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - start)
