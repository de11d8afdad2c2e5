"""The scorer's feature fetch, coalesced: concurrent requests of one model share one round trip and one build.

Each model has a lane (a queue and a task on the event loop, as the model batcher has). A request joins the
queue; the lane takes everything queued (up to ``max_rows`` candidates), reads it in one pipelined round trip
(every request's request-entity hash and every candidate hash), then decodes each signal once for the whole
group, assembles one Arrow table (one row per candidate, each request entity's values broadcast to its own
candidates) and builds one ``FeatureBatch``, which rides to the model as one submission. While a round trip
is in flight the next requests queue up, so under load groups grow by themselves; alone, a request is read
at once (no wait). With ``coalesce=False`` every request is its own group.

A request's answer is the same as if it had been fetched alone: its rows are its own slice of the group's
columns and table (statuses, event times and all), the request-time signals of a feature service's bundle run
on each request's own slice and ``request_data`` (a failure there fails that request only), and a stale or
missing value is a False mask exactly as before, since the decode and the tensor builder are the same.

On the Redis store the round trip is ``quasar.serving_adapters.redis_batch`` (standalone) or the store's own
pipelined read (``ClusterRoundTrip``, a cluster), and candidate records can come from a ``RecordCache``
(``quasar.serving_adapters.cache``; misses only are read, each distinct key once). Any other
``AsyncOnlineReader`` is read through its own ``read``, one call per side per group.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from quasar.online.keys import entity_keys, field_name
from quasar.online.redis_read import ReadPlan
from quasar.online.redis_store import AsyncRedisOnlineStore
from quasar.online.store import OnlineColumns, columns_from_records, now_us
from quasar.serving_adapters.batching import CallInfo, DynamicBatcher
from quasar.serving_adapters.cache import MISS, RecordCache
from quasar.serving_adapters.features import AsyncOnlineReader, RequestKeys, assemble_feature_table, read_side
from quasar.serving_adapters.metrics import ScorerMetrics
from quasar.serving_adapters.models import LoadedModel, SignalRead
from quasar.serving_adapters.redis_batch import HmgetRoundTrip, Reply
from quasar.signals.errors import ServingError
from quasar.signals.ufr.tensors import FeatureBatch, build_feature_batch

_EMPTY = pa.array([], pa.int64())


def _slice(columns: OnlineColumns, start: int, rows: int) -> OnlineColumns:
    return OnlineColumns(columns.signal, columns.version, columns.table.slice(start, rows),
                         columns.event_time_us[start:start + rows],
                         {name: status[start:start + rows] for name, status in columns.status.items()})


@dataclass(eq=False)
class Group:
    """The coalesced fetch of some requests of one model: their columns, one table and one FeatureBatch."""

    model: LoadedModel
    keys: list[RequestKeys]
    fields: list[dict[str, pa.Array]]
    request: list[OnlineColumns]          # one row per request, in the model's request-read order
    candidates: list[OnlineColumns]       # every request's candidates one after the other
    starts: list[int]                     # each request's first row in ``candidates``
    table: pa.Table | None = None         # the requests that built, one after the other
    table_starts: list[int] = field(default_factory=list)    # each one's first row in ``table`` (-1: failed)
    errors: dict[int, BaseException] = field(default_factory=dict)
    batch: FeatureBatch | None = None
    _scoring: asyncio.Future[tuple[torch.Tensor, CallInfo]] | None = None

    def scores(self, batcher: DynamicBatcher[LoadedModel, FeatureBatch, torch.Tensor]
               ) -> asyncio.Future[tuple[torch.Tensor, CallInfo]]:
        """The group's one model call (submitted by whichever request asks first), shared by all of them."""
        if self._scoring is None:
            assert self.batch is not None and self.table is not None
            ok = len(self.keys) - len(self.errors)
            self._scoring = asyncio.ensure_future(batcher.submit(self.model, self.batch, self.table.num_rows,
                                                                 requests=ok))
        return self._scoring


@dataclass(eq=False)
class Fetched:
    """One request's view of its group: its keys, fields, columns and input table, built on demand."""

    group: Group
    index: int

    @property
    def keys(self) -> RequestKeys:
        return self.group.keys[self.index]

    @property
    def fields(self) -> dict[str, pa.Array]:
        return self.group.fields[self.index]

    @property
    def rows(self) -> int:
        return len(self.keys.candidates)

    @property
    def request(self) -> list[OnlineColumns]:
        """The request entity's OnlineColumns (one row each), in the model's read order."""
        return [_slice(c, self.index, 1) for c in self.group.request]

    @property
    def candidates(self) -> list[OnlineColumns]:
        """The candidates' OnlineColumns, in the model's read order."""
        start = self.group.starts[self.index]
        return [_slice(c, start, self.rows) for c in self.group.candidates]

    @property
    def table(self) -> pa.Table:
        """The model's input table of this request (one row per candidate)."""
        assert self.group.table is not None
        return self.group.table.slice(self.group.table_starts[self.index], self.rows)

    async def scores(self, batcher: DynamicBatcher[LoadedModel, FeatureBatch, torch.Tensor]
                     ) -> tuple[torch.Tensor, CallInfo]:
        """This request's scores (its slice of the group's model call) and how that call ran."""
        scores, info = await asyncio.shield(self.group.scores(batcher))
        start = self.group.table_starts[self.index]
        return scores[start:start + self.rows], info


@dataclass
class _Waiting:
    keys: RequestKeys
    fields: dict[str, pa.Array]
    future: asyncio.Future[Fetched]


class _Lane:
    def __init__(self) -> None:
        self.queue: deque[_Waiting] = deque()
        self.arrived = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.reading = 0                  # requests whose group is being read or built


def _fields(signal_versions: list[tuple[Any, int]]) -> tuple[str, ...]:
    return tuple(field_name(s.name, v) for s, v in signal_versions)


def _sides(model: LoadedModel) -> tuple[list[tuple[Any, int]], list[tuple[Any, int]]]:
    return ([(r.signal, r.version) for r in model.request_reads], [(r.signal, r.version) for r in model.candidate_reads])


class ClusterRoundTrip:
    """``HmgetRoundTrip``'s call on a Redis Cluster: the store's ``read_records`` (redis-py's cluster pipeline
    sends each node its keys' HMGETs), the replies in the same shape, so the decode and the cache are the same."""

    def __init__(self, store: AsyncRedisOnlineStore) -> None:
        self.store = store

    async def __call__(self, reads: Sequence[tuple[Sequence[str], Sequence[str]]]) -> list[list[Reply]]:
        plans = [ReadPlan([], list(fields), list(keys)) for keys, fields in reads]
        records = await self.store.read_records(plans)
        return [[[by_field[i] for by_field in got] for i in range(len(plan.keys))]
                for plan, got in zip(plans, records, strict=True)]


class FeatureFetcher:
    """``await fetch(model, keys, fields)`` -> the request's ``Fetched``, read with whoever else is waiting."""

    def __init__(self, store: AsyncOnlineReader, *, coalesce: bool = True, max_rows: int = 4096,
                 cache: RecordCache | None = None, metrics: ScorerMetrics | None = None) -> None:
        if max_rows < 1:
            raise ServingError(f"max_rows must be at least 1, got {max_rows}")
        self.store = store
        self.coalesce = coalesce
        self.max_rows = max_rows
        self.metrics = metrics
        self.round_trip: HmgetRoundTrip | ClusterRoundTrip | None = None
        if isinstance(store, AsyncRedisOnlineStore):
            self.round_trip = ClusterRoundTrip(store) if store.cluster else HmgetRoundTrip(store)
        self.cache = cache if self.round_trip is not None else None
        self._lanes: dict[LoadedModel, _Lane] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def fetch(self, model: LoadedModel, keys: RequestKeys, fields: dict[str, pa.Array]) -> Fetched:
        loop = asyncio.get_running_loop()
        if not self.coalesce:
            group = await self._read([_Waiting(keys, fields, loop.create_future())], model)
            return self._answer(group, 0)
        if self._loop is not loop:            # a new event loop (e.g. a new test): the old lanes are gone
            self._loop, self._lanes = loop, {}
        lane = self._lanes.get(model)
        if lane is None:
            lane = self._lanes[model] = _Lane()
        if lane.task is None or lane.task.done():
            lane.task = loop.create_task(self._drain(model, lane), name=f"quasar-fetch-{model.name}")
        waiting = _Waiting(keys, fields, loop.create_future())
        lane.queue.append(waiting)
        lane.arrived.set()
        return await waiting.future

    def busy(self, model: LoadedModel) -> bool:
        """Whether requests of ``model`` are waiting for their fetch or being fetched (more model work is
        on its way: the model batcher waits for it, up to its ``max_wait_ms``)."""
        lane = self._lanes.get(model)
        return lane is not None and bool(lane.queue or lane.reading)

    def close(self) -> None:
        """Stop the lanes; waiting requests fail with ServingError."""
        for lane in self._lanes.values():
            if lane.task is not None:
                lane.task.cancel()
            for w in lane.queue:
                if not w.future.done():
                    w.future.set_exception(ServingError("the scorer is shutting down"))
        self._lanes = {}

    async def _drain(self, model: LoadedModel, lane: _Lane) -> None:
        while True:
            if not lane.queue:
                lane.arrived.clear()
                await lane.arrived.wait()
                continue
            batch = self._take(lane)
            if not batch:
                continue
            lane.reading = len(batch)
            try:
                group = await self._read(batch, model)
            except asyncio.CancelledError:
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(ServingError("the scorer is shutting down"))
                raise
            except Exception as exc:       # every request of the group hears about it
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(exc)
                continue
            finally:
                lane.reading = 0
            for i, w in enumerate(batch):
                if not w.future.done():
                    error = group.errors.get(i)
                    if error is not None:       # this request's own failure (its request-time signals)
                        w.future.set_exception(error)
                    else:
                        w.future.set_result(Fetched(group, i))

    def _take(self, lane: _Lane) -> list[_Waiting]:
        """Everything queued, up to ``max_rows`` candidates (at least one request)."""
        batch: list[_Waiting] = []
        rows = 0
        while lane.queue:
            head = lane.queue[0]
            if head.future.done():          # the caller went away
                lane.queue.popleft()
                continue
            if batch and rows + len(head.keys.candidates) > self.max_rows:
                break
            batch.append(lane.queue.popleft())
            rows += len(head.keys.candidates)
        return batch

    @staticmethod
    def _answer(group: Group, index: int) -> Fetched:
        error = group.errors.get(index)
        if error is not None:
            raise error
        return Fetched(group, index)

    # --- one group: read, decode, assemble, build -----------------------------------------------------------

    async def _read(self, batch: list[_Waiting], model: LoadedModel) -> Group:
        keys = [w.keys for w in batch]
        request_keys = [k.request for k in keys] if model.request_reads else []
        candidate_keys = [c for k in keys for c in k.candidates] if model.candidate_reads else []
        if self.round_trip is not None:
            request, candidates = await self._redis(model, request_keys, candidate_keys)
        else:
            request, candidates = await self._generic(model, request_keys, candidate_keys)
        if self.metrics is not None:
            self.metrics.of(model.name).fetch_requests.observe(len(batch))
        starts = np.concatenate([[0], np.cumsum([len(k.candidates) for k in keys])]).tolist()
        group = Group(model, keys, [w.fields for w in batch], request, candidates, starts[:-1])
        self._build(group)
        return group

    async def _generic(self, model: LoadedModel, request_keys: list[Any],
                       candidate_keys: list[Any]) -> tuple[list[OnlineColumns], list[OnlineColumns]]:
        request, candidates = await asyncio.gather(read_side(self.store, model.request_reads, request_keys),
                                                   read_side(self.store, model.candidate_reads, candidate_keys))
        return request, candidates

    async def _redis(self, model: LoadedModel, request_keys: list[Any],
                     candidate_keys: list[Any]) -> tuple[list[OnlineColumns], list[OnlineColumns]]:
        assert self.round_trip is not None
        project = self.round_trip.store.project
        request_sv, candidate_sv = _sides(model)
        reads: list[tuple[Sequence[str], Sequence[str]]] = []
        if request_sv:
            reads.append((entity_keys(project, request_sv[0][0].entity, request_keys), _fields(request_sv)))
        hashes: list[str] = []
        cached: list[Any] = []
        missing: list[str] = []
        if candidate_sv:
            fields = _fields(candidate_sv)
            hashes = entity_keys(project, candidate_sv[0][0].entity, candidate_keys)
            if self.cache is not None:
                cached = self.cache.get_many([(h, fields) for h in hashes])
                missing = list(dict.fromkeys(h for h, got in zip(hashes, cached, strict=True) if got is MISS))
                absent = sum(got is MISS for got in cached)
                self._count_cache(model, len(cached) - absent, absent)
                reads.append((missing, fields))
            else:
                reads.append((hashes, fields))
        replies = await self.round_trip(reads) if reads else []
        now = now_us()
        request: list[OnlineColumns] = []
        candidates: list[OnlineColumns] = []
        if request_sv:
            request = self._decode(model.request_reads, replies[0], now)
        if candidate_sv:
            rows: list[Reply] = replies[-1]
            if self.cache is not None:
                fields = _fields(candidate_sv)
                # tuples of bytes: once the collector sees them, it never walks 100,000 entries again
                self.cache.put_many([(h, fields) for h in missing], [tuple(r) for r in rows])
                read_now = dict(zip(missing, rows, strict=True))
                rows = [read_now[h] if got is MISS else got for h, got in zip(hashes, cached, strict=True)]
            candidates = self._decode(model.candidate_reads, rows, now)
        return request, candidates

    def _count_cache(self, model: LoadedModel, hits: int, misses: int) -> None:
        if self.metrics is not None:
            self.metrics.cache_lookups.labels(model.name, "hit").inc(hits)
            self.metrics.cache_lookups.labels(model.name, "miss").inc(misses)

    @staticmethod
    def _decode(reads: Sequence[SignalRead], rows: Sequence[Reply], now: int) -> list[OnlineColumns]:
        """Each read's features only (``columns_from_records(features=...)``), straight from the replies."""
        if len(rows) and len(rows[0]) != len(reads):
            raise ServingError(f"the online store answered {len(rows[0])} fields for {len(reads)} asked")
        return [columns_from_records(read.signal, read.version, [row[j] for row in rows], now=now,
                                     features=read.names)
                for j, read in enumerate(reads)]

    @staticmethod
    def _build(group: Group) -> None:
        """The group's input table and FeatureBatch (requests whose request-time signals failed left out)."""
        model = group.model
        plan = model.plan
        counts = [len(k.candidates) for k in group.keys]
        if plan is None or not plan.has_requests:
            repeat = pa.array(np.repeat(np.arange(len(counts), dtype=np.int64), counts)) if counts else _EMPTY
            group.table = assemble_feature_table(model, group.request, group.candidates, sum(counts),
                                                 request_rows=repeat)
            group.table_starts = list(group.starts)
        else:
            tables: list[pa.Table] = []
            at = 0
            for i, rows in enumerate(counts):
                view = Fetched(group, i)
                try:
                    table = assemble_feature_table(model, view.request, view.candidates, rows, view.fields)
                except Exception as exc:          # this request's own request-time failure
                    group.errors[i] = exc
                    group.table_starts.append(-1)
                    continue
                tables.append(table)
                group.table_starts.append(at)
                at += rows
            group.table = pa.concat_tables(tables) if tables else None
        if group.table is not None:
            group.batch = build_feature_batch(group.table, model.spec.spec)

