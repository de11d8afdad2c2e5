"""The scoring service's app factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving_adapters.features import AsyncOnlineReader
from serving_adapters.metrics import ScorerMetrics
from serving_adapters.models import ModelRegistry
from serving_adapters.scorer import Scorer
from serving_adapters.service.errors import handle_http_error, handle_quasar_error, handle_validation_error
from serving_adapters.service.ops import ops_router
from serving_adapters.service.score import score_router
from signals.errors import QuasarError


def create_scoring_app(*, models: ModelRegistry, store: AsyncOnlineReader, auth_tokens: Sequence[str] = (),
                       max_batch_rows: int = 4096, max_wait_ms: float = 2.0, device: str | torch.device | None = None,
                       batching: bool = True, max_candidates: int = 10_000,
                       cpu_threads: int | None = None) -> FastAPI:
    """A FastAPI app scoring ``models`` with features from ``store`` (an async online store).

    ``device`` defaults to ``cuda`` when available, else ``cpu``. With ``auth_tokens``, ``/v1/score``
    needs ``Authorization: Bearer <token>`` (``/healthz`` and ``/metrics`` stay open for probes).
    On the CPU, ``cpu_threads`` sets torch's intra-op threads (default: cores - 1, see ``ModelRunner``).
    The store belongs to the caller: the app does not close it.
    """
    metrics = ScorerMetrics()
    scorer = Scorer(models=models, store=store, device=device, max_batch_rows=max_batch_rows,
                    max_wait_ms=max_wait_ms, batching=batching, max_candidates=max_candidates, metrics=metrics,
                    cpu_threads=cpu_threads)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await scorer.close()

    app = FastAPI(title="quasar scoring service", version="1", lifespan=lifespan,
                  description="Request-time features from the online store, scored by model bundles.")
    app.state.scorer = scorer
    app.state.metrics = metrics
    app.add_exception_handler(QuasarError, handle_quasar_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.include_router(score_router(scorer, tuple(auth_tokens)))
    app.include_router(ops_router(scorer))
    return app
