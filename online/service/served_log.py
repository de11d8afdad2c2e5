"""The feature service's side of feature logging: after a successful answer for a feature service that
declares ``logging``, its served vectors go to a ``quasar.online.feature_log.FeatureLogger`` (which samples,
queues without blocking and drops and counts when its queue is full), and what became of them is counted in
``/metrics``: ``quasar_feature_log_rows_total{outcome}`` (entity rows logged, dropped, failed, sampled_out),
Prometheus counters in the app's registry, so several workers' counts are summed (multiprocess mode).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from quasar.online.response import OnlinePlan
from quasar.online.service.metrics import ServiceMetrics

if TYPE_CHECKING:
    from quasar.online.feature_log import FeatureLogger
    from quasar.online.service.context import Prepared, ServiceContext

log = logging.getLogger("quasar.service")
OUTCOMES = ("logged", "dropped", "failed", "sampled_out")
#: ``factory(observe)``: a FeatureLogger that tells ``observe(outcome, rows)`` of every count.
LoggerFactory = Callable[[Callable[[str, int], None]], "FeatureLogger"]


class ServedLog:
    """A ``FeatureLogger`` (built by ``factory``) and the Prometheus counter of its rows by outcome."""

    def __init__(self, factory: LoggerFactory, metrics: ServiceMetrics) -> None:
        self.rows = Counter("quasar_feature_log_rows", "Served entity rows of logging feature services, by "
                            "outcome: logged (written to Iceberg), dropped (queue full), failed (write failed), "
                            "sampled_out", ["outcome"], registry=metrics.registry)
        for outcome in OUTCOMES:
            self.rows.labels(outcome)
        self.logger = factory(self.observe)

    def observe(self, outcome: str, rows: int) -> None:
        if outcome in OUTCOMES and rows > 0:
            self.rows.labels(outcome).inc(rows)

    def close(self) -> None:
        """Flush the logger (blocks until what is queued is written) and stop it."""
        self.logger.close()


def log_served(ctx: ServiceContext, prepared: Prepared, plan: OnlinePlan, body: dict[str, Any],
               request_id: str, *, source: str = "serve") -> bool:
    """Submit the answer ``body`` of a logging feature service to the context's logger (before the answer is
    rewritten for Feast's wire); False when nothing was queued (no logger, not a logging service, not
    sampled, dropped). Never raises: logging never fails a request."""
    found = prepared.service
    served = ctx.served_log
    if served is None or found is None or found.service.logging is None or plan.rows == 0:
        return False
    try:
        from quasar.online.feature_log import served_vectors_from

        response = {"metadata": dict(body["metadata"]), "results": [dict(r) for r in body["results"]]}
        vectors = served_vectors_from(plan, response, service=found.name, service_version=found.version,
                                      sample_rate=found.service.logging.sample_rate, request_id=request_id,
                                      source=source)
        return bool(served.logger.submit(vectors))
    except Exception:
        log.warning("feature logging: request %s of service %r could not be submitted", request_id, found.name,
                    exc_info=True)
        return False
