"""The scorer: a request's keys in, its candidates' scores out (features online, model batched on device)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from quasar.serving_adapters.batching import CallInfo, DynamicBatcher
from quasar.serving_adapters.device import choose_device, device_name
from quasar.serving_adapters.features import (
    AsyncOnlineReader,
    assemble_feature_table,
    build_request_batch,
    check_keys,
    fetch_online,
)
from quasar.serving_adapters.metrics import ScorerMetrics
from quasar.serving_adapters.models import LoadedModel, ModelRegistry
from quasar.serving_adapters.runner import ModelRunner, ScorerBackend
from quasar.signals.ufr.tensors import FeatureBatch


@dataclass(frozen=True)
class ScoreResult:
    """Scores in candidate order, and where the time went."""

    scores: torch.Tensor        # float32 [candidates], on the CPU
    fetch_s: float              # online read + table + FeatureBatch
    queue_s: float              # waiting for the model call to start
    model_s: float              # the model call this request rode in
    batch_requests: int         # requests in that call

    def server_timing(self) -> str:
        """A ``Server-Timing`` header value (milliseconds)."""
        return (f"fetch;dur={self.fetch_s * 1e3:.3f}, queue;dur={self.queue_s * 1e3:.3f}, "
                f"model;dur={self.model_s * 1e3:.3f}, batch;desc=\"{self.batch_requests} requests\"")


class Scorer:
    """Scores requests for the models of a ModelRegistry, reading features from an async online store."""

    def __init__(self, *, models: ModelRegistry, store: AsyncOnlineReader, device: str | torch.device | None = None,
                 max_batch_rows: int = 4096, max_wait_ms: float = 2.0, batching: bool = True,
                 max_candidates: int = 10_000, metrics: ScorerMetrics | None = None,
                 backend: ScorerBackend | None = None, cpu_threads: int | None = None) -> None:
        self.models = models
        self.store = store
        self.device = backend.device if backend is not None else choose_device(device)
        self.device_name = device_name(self.device)
        self.max_candidates = max_candidates
        self.metrics = metrics if metrics is not None else ScorerMetrics()
        self.runner = backend if backend is not None else ModelRunner(self.device, cpu_threads=cpu_threads)
        self.batcher: DynamicBatcher[LoadedModel, FeatureBatch, torch.Tensor] = DynamicBatcher(
            self.runner, max_batch_rows=max_batch_rows, max_wait_ms=max_wait_ms, enabled=batching,
            on_call=self._observe_call)

    async def model(self, name: str) -> LoadedModel:
        """The loaded model ``name``; the first load (disk, registry) runs off the event loop."""
        found = self.models.cached(name)
        return found if found is not None else await asyncio.to_thread(self.models.get, name)

    async def score(self, name: str, entities: Mapping[str, Sequence[Any]],
                    candidates: Mapping[str, Sequence[Any]]) -> ScoreResult:
        """Scores of ``candidates`` for the request entity in ``entities``, in candidate order."""
        model = await self.model(name)
        keys = check_keys(model, entities, candidates, max_candidates=self.max_candidates)
        started = time.perf_counter()
        if not keys.candidates:
            return ScoreResult(torch.empty(0), 0.0, 0.0, 0.0, 0)
        request, per_candidate = await fetch_online(self.store, model, keys)
        table = assemble_feature_table(model, request, per_candidate, len(keys.candidates))
        batch = build_request_batch(model, table)
        fetch_s = time.perf_counter() - started
        self.metrics.feature_fetch.labels(model.name).observe(fetch_s)
        scores, info = await self.batcher.submit(model, batch, batch.size)
        self.metrics.queue_wait.labels(model.name).observe(info.queue_s)
        return ScoreResult(scores, fetch_s, info.queue_s, info.call_s, info.batch_items)

    def _observe_call(self, model: LoadedModel, info: CallInfo) -> None:
        self.metrics.batch_rows.labels(model.name).observe(info.batch_rows)
        self.metrics.batch_requests.labels(model.name).observe(info.batch_items)
        self.metrics.model_time.labels(model.name).observe(info.call_s)

    async def close(self) -> None:
        await self.batcher.close()
