"""Prometheus metrics of one scoring service, in its own CollectorRegistry (two apps never share counters)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from quasar.online.service.metrics import render_metrics

_SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_ROWS = (1, 10, 50, 100, 250, 500, 1000, 2000, 4096, 8192, 16384)
_REQUESTS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class ModelSeries:
    """One model's labelled series, looked up once (``labels()`` takes a lock and checks its values each call)."""

    batch_rows: Any
    batch_requests: Any
    queue_wait: Any
    feature_fetch: Any
    model_time: Any
    fetch_requests: Any
    answered: Any           # requests answered 200


class ScorerMetrics:
    """Batch sizes, queue wait, feature fetch and model time, requests by status, fetch coalescing and the
    candidate cache. The device's busy fraction over an interval is the growth of
    ``quasar_scorer_model_seconds_sum`` divided by the interval (one model call runs at a time)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.batch_rows = Histogram("quasar_scorer_batch_rows", "Rows (candidates) per model call",
                                    ["model"], buckets=_ROWS, registry=r)
        self.batch_requests = Histogram("quasar_scorer_batch_requests", "Requests coalesced into one model call",
                                        ["model"], buckets=_REQUESTS, registry=r)
        self.queue_wait = Histogram("quasar_scorer_queue_wait_seconds",
                                    "Time a request waited for its model call to start", ["model"],
                                    buckets=_SECONDS, registry=r)
        self.feature_fetch = Histogram("quasar_scorer_feature_fetch_seconds",
                                       "Online feature fetch and tensor build per request", ["model"],
                                       buckets=_SECONDS, registry=r)
        self.model_time = Histogram("quasar_scorer_model_seconds",
                                    "Duration of one model call (collate, transfer, forward, copy back)",
                                    ["model"], buckets=_SECONDS, registry=r)
        self.fetch_requests = Histogram("quasar_scorer_fetch_requests",
                                        "Requests coalesced into one feature fetch (one round trip, one build)",
                                        ["model"], buckets=_REQUESTS, registry=r)
        self.cache_lookups = Counter("quasar_scorer_cache_lookups", "Candidate cache look-ups by result (hit, miss)",
                                     ["model", "result"], registry=r)
        self.requests = Counter("quasar_scorer_requests", "Scoring requests by model and HTTP status",
                                ["model", "status"], registry=r)

        self._series: dict[str, ModelSeries] = {}

    def of(self, model: str) -> ModelSeries:
        """``model``'s series (a model name that exists: label values stay bounded)."""
        series = self._series.get(model)
        if series is None:
            series = self._series[model] = ModelSeries(
                self.batch_rows.labels(model), self.batch_requests.labels(model), self.queue_wait.labels(model),
                self.feature_fetch.labels(model), self.model_time.labels(model), self.fetch_requests.labels(model),
                self.requests.labels(model, "200"))
        return series

    def render(self) -> bytes:
        """The text exposition format (every worker's metrics summed when the runner started several)."""
        return render_metrics(self.registry)
