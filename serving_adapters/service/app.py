"""The scoring service's app factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import cast

import anyio.to_thread
import torch
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from quasar.online.service.app import DOCS_ASSETS
from quasar.online.service.auth import BearerAuthMiddleware
from quasar.online.service.limits import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware, check_limit
from quasar.online.service.metrics import ServiceMetrics
from quasar.online.service.request_id import RequestIdMiddleware
from quasar.online.service.served_log import LoggerFactory, ServedLog
from quasar.serving_adapters.cache import CacheConfig
from quasar.serving_adapters.features import AsyncOnlineReader
from quasar.serving_adapters.metrics import ScorerMetrics
from quasar.serving_adapters.models import ModelRegistry
from quasar.serving_adapters.runner import ScorerBackend
from quasar.serving_adapters.scorer import Scorer
from quasar.serving_adapters.service.errors import (
    handle_http_error,
    handle_quasar_error,
    handle_unexpected,
    handle_validation_error,
)
from quasar.serving_adapters.service.fast_score import FastScore
from quasar.serving_adapters.service.ops import ops_router
from quasar.serving_adapters.service.score import score_router
from quasar.signals.errors import QuasarError


def create_scoring_app(*, models: ModelRegistry, store: AsyncOnlineReader, auth_tokens: Sequence[str] = (),
                       max_batch_rows: int = 4096, max_wait_ms: float = 2.0, device: str | torch.device | None = None,
                       batching: bool = True, max_candidates: int = 10_000,
                       cpu_threads: int | None = None, close_store: bool = False,
                       max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                       backend: ScorerBackend | None = None,
                       feature_logger: LoggerFactory | None = None, cache: CacheConfig | None = None) -> FastAPI:
    """A FastAPI app scoring ``models`` with features from ``store`` (an async online store).

    ``device`` defaults to ``cuda`` when available, else ``cpu`` (``backend`` replaces the torch runner).
    With ``auth_tokens`` every endpoint (``/v1/score``, ``/metrics``, ``/docs``, ``/openapi.json``) needs
    ``Authorization: Bearer <token>``, the feature service's rule: only ``/healthz`` stays open for probes,
    and without a token it names no model and no feature reference. A request body over ``max_body_bytes``
    is answered 413 before it is parsed. On the CPU, ``cpu_threads`` sets torch's intra-op threads (default:
    cores - 1, see ``ModelRunner``). The store belongs to the caller unless ``close_store``.
    ``feature_logger(observe)`` builds a ``quasar.online.feature_log.FeatureLogger`` at start-up: the bundles of
    feature services that declare logging submit each scored request to it (``quasar.serving_adapters.served_log``),
    ``/metrics`` counts its rows by outcome (``quasar_feature_log_rows_total``: logged, dropped, failed,
    sampled_out), and it is flushed at shutdown. A valid score request skips FastAPI's routing and validation
(``quasar.serving_adapters.service.fast_score``), with the same answer. Every answer carries an ``X-Request-ID`` (the caller's, or a new one), the id logged.
    ``cache`` turns on the in-process candidate cache (off by default; ``quasar.serving_adapters.cache``).
    """
    check_limit(max_body_bytes)
    metrics = ScorerMetrics()
    scorer = Scorer(models=models, store=store, device=device, max_batch_rows=max_batch_rows,
                    max_wait_ms=max_wait_ms, batching=batching, max_candidates=max_candidates, metrics=metrics,
                    cpu_threads=cpu_threads, backend=backend, cache=cache)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        served = None
        if feature_logger is not None:       # ServedLog needs only the metrics' registry
            served = scorer.served_log = await anyio.to_thread.run_sync(ServedLog, feature_logger,
                                                                        cast(ServiceMetrics, metrics))
        try:
            yield
        finally:
            await scorer.close()
            scorer.served_log = None
            if served is not None:
                await anyio.to_thread.run_sync(served.close)      # flush what was scored
            if close_store:
                close = getattr(store, "close", None)
                if close is not None:
                    await close()

    def count_refusal(scope: Scope, status: int) -> None:
        """Answers the middlewares give by themselves (401, 413) count as scoring requests too."""
        if scope["path"].endswith("/score"):
            metrics.requests.labels("unknown", str(status)).inc()

    app = FastAPIOffline(title="quasar scoring service", version="1", lifespan=lifespan, static_url=DOCS_ASSETS,
                         description="Request-time features from the online store, scored by model bundles. Errors "
                                     "answer `{\"error\": {\"type\", \"message\"}}`: 404 for an unknown model, 422 for a "
                                     "bad request, 413 for too many candidates or a body over the size limit, 401 "
                                     "without a valid bearer token (when the service has tokens), 503 while the online "
                                     "store cannot be reached.")
    app.state.scorer = scorer
    app.state.metrics = metrics
    app.add_exception_handler(QuasarError, handle_quasar_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.add_exception_handler(Exception, handle_unexpected)
    tokens = tuple(auth_tokens)
    app.include_router(score_router(scorer))
    app.include_router(ops_router(scorer))
    app.add_middleware(FastScore, scorer=scorer)                                       # innermost: valid bodies
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes, on_answer=count_refusal)
    app.add_middleware(BearerAuthMiddleware, tokens=tokens, on_answer=count_refusal)   # outer: before the body
    app.add_middleware(RequestIdMiddleware)                                            # outermost: every answer
    return app
