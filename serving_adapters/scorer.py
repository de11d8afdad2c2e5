"""The scorer: a request's keys in, its candidates' scores out (features online, model batched on device)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import torch

from quasar.serving_adapters.batching import CallInfo, DynamicBatcher
from quasar.serving_adapters.cache import CacheConfig, RecordCache
from quasar.serving_adapters.device import choose_device, device_name
from quasar.serving_adapters.features import (
    AsyncOnlineReader,
    RequestKeys,
    check_keys,
    request_fields,
    served_features,
)
from quasar.serving_adapters.fetch import FeatureFetcher, Fetched
from quasar.serving_adapters.metrics import ScorerMetrics
from quasar.serving_adapters.models import LoadedModel, ModelRegistry
from quasar.serving_adapters.runner import ModelRunner, ScorerBackend
from quasar.serving_adapters.served_log import logs, submit
from quasar.signals.ufr.tensors import FeatureBatch


@dataclass(frozen=True)
class ScoreResult:
    """Scores in candidate order, and where the time went."""

    scores: torch.Tensor        # float32 [candidates], on the CPU
    fetch_s: float              # online read + table + FeatureBatch (with the requests it was coalesced with)
    queue_s: float              # waiting for the model call to start
    model_s: float              # the model call this request rode in
    batch_requests: int         # requests in that call
    features: dict[str, Any] | None = None     # what the model read (Feast's shape), when asked for

    def server_timing(self) -> str:
        """A ``Server-Timing`` header value (milliseconds)."""
        return (f"fetch;dur={self.fetch_s * 1e3:.3f}, queue;dur={self.queue_s * 1e3:.3f}, "
                f"model;dur={self.model_s * 1e3:.3f}, batch;desc=\"{self.batch_requests} requests\"")


class Scorer:
    """Scores requests for the models of a ModelRegistry, reading features from an async online store.

    With ``batching`` (the default) concurrent requests of one model share their feature fetch (one round
    trip, one decode, one FeatureBatch: ``quasar.serving_adapters.fetch``) and their model call (the
    ``DynamicBatcher``, which waits up to ``max_wait_ms`` for more only while more requests of that model are
    being fetched); without, every request is fetched and scored alone. ``cache`` (off by default) keeps
    candidate records in process for ``ttl_s`` (``quasar.serving_adapters.cache`` says what that means for
    freshness).
    """

    def __init__(self, *, models: ModelRegistry, store: AsyncOnlineReader, device: str | torch.device | None = None,
                 max_batch_rows: int = 4096, max_wait_ms: float = 2.0, batching: bool = True,
                 max_candidates: int = 10_000, metrics: ScorerMetrics | None = None,
                 backend: ScorerBackend | None = None, cpu_threads: int | None = None,
                 cache: CacheConfig | None = None) -> None:
        self.models = models
        self.store = store
        self.device = backend.device if backend is not None else choose_device(device)
        self.device_name = device_name(self.device)
        self.max_candidates = max_candidates
        self.served_log: Any = None      # a quasar.online.service.served_log.ServedLog, set by the app's lifespan
        self.metrics = metrics if metrics is not None else ScorerMetrics()
        self.runner = backend if backend is not None else ModelRunner(self.device, cpu_threads=cpu_threads)
        config = cache if cache is not None else CacheConfig()
        self.cache = RecordCache(config) if config.enabled else None
        self.fetcher = FeatureFetcher(store, coalesce=batching, max_rows=max_batch_rows, cache=self.cache,
                                      metrics=self.metrics)
        self.batcher: DynamicBatcher[LoadedModel, FeatureBatch, torch.Tensor] = DynamicBatcher(
            self.runner, max_batch_rows=max_batch_rows, max_wait_ms=max_wait_ms, enabled=batching,
            on_call=self._observe_call, more_coming=self.fetcher.busy)

    async def model(self, name: str) -> LoadedModel:
        """The loaded model ``name``; the first load (disk, registry) runs off the event loop."""
        found = self.models.cached(name)
        return found if found is not None else await asyncio.to_thread(self.models.get, name)

    async def fetch(self, model: LoadedModel, keys: RequestKeys,
                    request_data: Mapping[str, Sequence[Any]] | None = None) -> Fetched:
        """The model's input table for checked keys: the online reads (shared with the requests waiting at the
        same time), then its request-time signals over them and the request fields (checked first, before
        any read)."""
        fields = request_fields(model, request_data, len(keys.candidates))
        return await self.fetcher.fetch(model, keys, fields)

    async def features(self, name: str, entities: Mapping[str, Sequence[Any]], candidates: Mapping[str, Sequence[Any]],
                       request_data: Mapping[str, Sequence[Any]] | None = None) -> pa.Table:
        """The input table the model ``name`` would score for this request (one row per candidate)."""
        model = await self.model(name)
        keys = check_keys(model, entities, candidates, max_candidates=self.max_candidates)
        return (await self.fetch(model, keys, request_data)).table

    async def score(self, name: str, entities: Mapping[str, Sequence[Any]], candidates: Mapping[str, Sequence[Any]],
                    request_data: Mapping[str, Sequence[Any]] | None = None, *,
                    return_features: bool = False, request_id: str | None = None) -> ScoreResult:
        """Scores of ``candidates`` for the request entity in ``entities``, in candidate order; request-time
        signals read ``request_data`` (field -> one value per candidate, or one for all). A model of a
        feature service that declares logging has the request submitted to ``served_log`` (when set)."""
        model = await self.model(name)
        keys = check_keys(model, entities, candidates, max_candidates=self.max_candidates)
        started = time.perf_counter()
        if not keys.candidates:
            request_fields(model, request_data, 0)
            return ScoreResult(torch.empty(0), 0.0, 0.0, 0.0, 0)
        fetched = await self.fetch(model, keys, request_data)
        fetch_s = time.perf_counter() - started
        series = self.metrics.of(model.name)
        series.feature_fetch.observe(fetch_s)
        scores, info = await fetched.scores(self.batcher)
        series.queue_wait.observe(info.queue_s)
        logged = self.served_log is not None and logs(model)
        served = served_features(model, keys, fetched.request, fetched.candidates, fetched.table) \
            if return_features or logged else None
        if logged and served is not None:
            submit(self.served_log, model, keys, fetched.fields, served, scores.tolist(), request_id or uuid.uuid4().hex)
        return ScoreResult(scores, fetch_s, info.queue_s, info.call_s, info.batch_items,
                           served if return_features else None)

    def _observe_call(self, model: LoadedModel, info: CallInfo) -> None:
        series = self.metrics.of(model.name)
        series.batch_rows.observe(info.batch_rows)
        series.batch_requests.observe(info.batch_items)
        series.model_time.observe(info.call_s)

    async def close(self) -> None:
        self.fetcher.close()
        await self.batcher.close()
        close = getattr(self.runner, "close", None)      # a backend with resources of its own (a model host)
        if close is not None:
            await asyncio.to_thread(close)
