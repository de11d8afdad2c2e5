"""Feature logging: what a feature service served, appended in the background to an Iceberg table per service.

``quasar serve`` and ``quasar score-serve`` build one ``ServedVectors`` per answered request
(``served_vectors_from(plan, response, ...)``, or ``vectors_for(...)`` without a plan) and hand it to a
``FeatureLogger``. ``submit`` samples the request with the service's rate and puts it on a queue bounded in
entity rows; it never blocks and never raises (a full queue drops the request's rows and counts them). One
background thread takes batches off the queue and appends them to ``<namespace>.<service>__log``
(``quasar.signals.service.log_table_name``), creating the table on first write and adding the columns of a
new service version by name. A failed write is counted and logged, never raised into a request.

One row per entity row. The log's own columns carry a ``__`` prefix, as Feast's logs do (``__request_id``,
``__log_timestamp``): feature, join key and request field names cannot contain ``__``, so nothing a service
serves can clash with them (the test world serves a feature called ``score``)::

    __request_id (string)  event_timestamp (timestamptz, the serving time)  __service_version (long)
    __source (string: serve | score)  __model (string, null)  __score (double, null)  __versions (JSON string)
    <join keys>  <request fields>  <feature>  <feature>__status (string)  ...

``event_timestamp`` keeps its spine name, so the log's rows are a training spine as they are (the serving time
is the point-in-time of the row). Values are stored as the offline store stores them
(``quasar.store.arrow_types.storage_type``: vectors as ``list<float>``). The columns each service version
logged (and their UFR types) are kept in the table's properties (``quasar.log.v<N>``), so a reader knows
which columns are keys, request fields and features, version by version (``quasar.online.skew``).
"""

from __future__ import annotations

import json
import logging
import pickle
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from quasar.online.feature_log_tables import (
    LOG_COLUMNS,
    META_TYPES,
    MODEL,
    REQUEST_ID,
    SCORE,
    SERVICE_VERSION,
    SOURCE,
    STATUS_SUFFIX,
    VERSIONS,
    LogTables,
)
from quasar.signals.errors import StoreError
from quasar.signals.ufr.schema import EVENT_TIMESTAMP
from quasar.signals.ufr.types import (
    TIMESTAMP_ARROW,
    FeatureType,
    Int64,
    String,
    Timestamp,
)
from quasar.store.arrow_types import storage_type

if TYPE_CHECKING:
    from quasar.online.response import OnlinePlan

log = logging.getLogger("quasar.feature_log")

_KEY_TYPES: dict[str, FeatureType] = {"int64": Int64(), "string": String()}


@dataclass(frozen=True)
class ServedVectors:
    """One served request of a feature service, as it is logged.

    ``response`` is the Feast-shaped body (``metadata.feature_names`` and ``results`` with ``values``,
    ``statuses`` and ``event_timestamps``, join keys first). ``types`` names the UFR type of every logged
    column: each feature, and each join key and request field (``vectors_for`` fills the keys and fields from
    the values' Python types when missing: int -> Int64, else String). ``join_keys`` and ``request_fields``
    hold a list (or an Arrow array) per name, one value per entity row; ``versions`` is signal -> version read.
    """

    service: str
    service_version: int
    sample_rate: float
    request_id: str
    served_at_us: int
    join_keys: dict[str, Any]
    request_fields: dict[str, Any]
    response: dict[str, Any]
    types: dict[str, FeatureType]
    versions: dict[str, int]
    scores: list[float] | None = None
    model: str | None = None
    source: str = "serve"

    @property
    def rows(self) -> int:
        for values in self.join_keys.values():
            return len(values)
        results = self.response.get("results") or []
        return len(results[0]["values"]) if results else 0

    @property
    def features(self) -> list[str]:
        """The logged feature names: the response's names after its join keys."""
        names = list(self.response["metadata"]["feature_names"])
        return [n for n in names if n not in self.join_keys]


def vectors_for(*, service: str, service_version: int, sample_rate: float, response: Mapping[str, Any],
                join_keys: Sequence[str], request_fields: Mapping[str, Any], types: Mapping[str, FeatureType],
                versions: Mapping[str, int], request_id: str, served_at_us: int,
                scores: Sequence[float] | None = None, model: str | None = None,
                source: str = "serve") -> ServedVectors:
    """``ServedVectors`` from a response whose first columns are the named ``join_keys`` (their values are
    taken from the response); join keys and request fields missing from ``types`` are typed from their values."""
    body = dict(response)
    names = list(body["metadata"]["feature_names"])
    results = body["results"]
    keys = {k: list(results[names.index(k)]["values"]) for k in join_keys}
    all_types = dict(types)
    for name, values in [*keys.items(), *request_fields.items()]:
        if name not in all_types:
            all_types[name] = _infer(values)
    return ServedVectors(service=service, service_version=int(service_version), sample_rate=float(sample_rate),
                         request_id=str(request_id), served_at_us=int(served_at_us), join_keys=keys,
                         request_fields=dict(request_fields), response=body, types=all_types,
                         versions={str(k): int(v) for k, v in versions.items()},
                         scores=None if scores is None else list(scores), model=model, source=source)


def served_vectors_from(plan: OnlinePlan, response: Mapping[str, Any], *, service: str, service_version: int,
                        sample_rate: float, request_id: str | None = None, served_at_us: int | None = None,
                        scores: Sequence[float] | None = None, model: str | None = None,
                        source: str = "serve") -> ServedVectors:
    """``ServedVectors`` of an answered ``plan`` (``quasar.online.response.plan_request``): join key types from
    the plan's entities, request fields and their declared types from the plan, feature types from the signals,
    versions from every signal version read or run (hidden inputs included). A new request id (uuid4 hex) and
    the time of now unless given."""
    import uuid

    types: dict[str, FeatureType] = {}
    versions: dict[str, int] = {}
    for read in plan.reads:
        types[read.entity.join_key] = _KEY_TYPES[read.entity.join_key_type]
        for s in read.signals:
            versions[s.signal.name] = s.version
            schema = s.signal.schema.as_dict()
            for column in s.columns:
                types[column.output] = schema[column.feature]
    request: dict[str, Any] = {}
    if plan.features is not None:
        for name, (ftype, _) in plan.features.request_fields.items():
            types[name] = ftype
            request[name] = plan.request[name]
        for step in plan.features.steps:
            versions[step.signal.name] = step.version
        for o in plan.features.outputs:
            types[o.output] = o.ftype
            versions.setdefault(o.signal, o.version)
    return vectors_for(service=service, service_version=service_version, sample_rate=sample_rate,
                       response=response, join_keys=list(plan.join_keys), request_fields=request, types=types,
                       versions=versions, request_id=request_id or uuid.uuid4().hex,
                       served_at_us=time.time_ns() // 1000 if served_at_us is None else served_at_us,
                       scores=scores, model=model, source=source)


def _infer(values: Any) -> FeatureType:
    if isinstance(values, pa.ChunkedArray | pa.Array):
        return Int64() if pa.types.is_integer(values.type) else String()
    first = next((v for v in values if v is not None), None)
    return Int64() if isinstance(first, int) and not isinstance(first, bool) else String()


# --- rows ------------------------------------------------------------------------------------------------------


def to_storage_array(values: Any, ftype: FeatureType) -> pa.Array:
    """Served values (a response column of JSON-ready Python values, or an Arrow array) in the type the offline
    store keeps ``ftype`` in. Timestamps arrive as ISO-8601 strings; float32 values as their exact float64
    widening (narrowed back exactly); float16 vectors widened to float32, as the offline store keeps them."""
    target = storage_type(ftype)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values if values.type == target else values.cast(target)
    values = list(values)
    if isinstance(ftype, Timestamp) and any(isinstance(v, str) for v in values):
        return pa.array([None if v is None else str(v) for v in values], pa.string()).cast(target)
    return pa.array(values, target)


def layout_of(vectors: ServedVectors) -> dict[str, Any]:
    """What one service version logs: its join keys, request fields and features, and their UFR types."""
    features = vectors.features
    names = [*vectors.join_keys, *vectors.request_fields, *features]
    return {"join_keys": list(vectors.join_keys), "request_fields": list(vectors.request_fields),
            "features": features, "types": {n: vectors.types[n].to_dict() for n in names if n in vectors.types}}


def rows_of_many(items: Sequence[ServedVectors]) -> pa.Table:
    """The log rows of many served requests of one service version with one layout, built column by column
    (Python lists extended per request, one Arrow conversion per column per batch): what the writer thread
    does per batch, so logging costs a few list extends per request instead of a table per request."""
    first = items[0]
    names = list(first.response["metadata"]["feature_names"])
    features = first.features
    index = {n: names.index(n) for n in features}
    counts = [v.rows for v in items]
    meta: dict[str, list[Any]] = {c: [] for c in LOG_COLUMNS}
    data: dict[str, list[Any]] = {n: [] for n in [*first.join_keys, *first.request_fields]}
    values: dict[str, list[Any]] = {n: [] for n in features}
    statuses: dict[str, list[Any]] = {n: [] for n in features}
    for v, n in zip(items, counts, strict=True):
        meta[REQUEST_ID] += [v.request_id] * n
        meta[EVENT_TIMESTAMP] += [v.served_at_us] * n
        meta[SERVICE_VERSION] += [v.service_version] * n
        meta[SOURCE] += [v.source] * n
        meta[MODEL] += [v.model] * n
        meta[SCORE] += v.scores if v.scores is not None else [None] * n
        meta[VERSIONS] += [json.dumps(dict(sorted(v.versions.items())), separators=(",", ":"))] * n
        for name, column in [*v.join_keys.items(), *v.request_fields.items()]:
            data[name] += column.to_pylist() if isinstance(column, pa.Array | pa.ChunkedArray) else list(column)
        results = v.response["results"]
        for name in features:
            result = results[index[name]]
            values[name] += result["values"]
            statuses[name] += result["statuses"]
    columns: dict[str, pa.Array] = {
        c: (pa.array(meta[c], pa.int64()).cast(TIMESTAMP_ARROW) if c == EVENT_TIMESTAMP
            else pa.array(meta[c], META_TYPES[c])) for c in LOG_COLUMNS}
    for name, column in data.items():
        columns[name] = to_storage_array(column, first.types.get(name) or _infer(column))
    for name in features:
        ftype = first.types.get(name)
        columns[name] = to_storage_array(values[name], ftype) if ftype else pa.array(values[name])
        columns[name + STATUS_SUFFIX] = pa.array(statuses[name], pa.string())
    total = sum(counts)
    for name, array in columns.items():
        if len(array) != total:
            raise StoreError(f"feature log of {first.service}: column {name!r} has {len(array)} values for "
                             f"{total} entity rows")
    return pa.table(columns)


# --- the logger ------------------------------------------------------------------------------------------------


@dataclass
class LogStats:
    """Entity rows by fate: written, dropped at a full queue, failed to write, not sampled; the queue's peak."""

    logged_rows: int = 0
    dropped_rows: int = 0
    failed_rows: int = 0
    sampled_out: int = 0
    peak_queued_rows: int = 0

    def add(self, event: str, rows: int) -> None:
        """Count ``rows`` under an outcome (``logged``, ``dropped``, ``failed``, ``sampled_out``)."""
        name = event if event == "sampled_out" else f"{event}_rows"
        setattr(self, name, getattr(self, name) + rows)

    # short names, as the services' Prometheus outcomes call them
    @property
    def logged(self) -> int:
        return self.logged_rows

    @property
    def dropped(self) -> int:
        return self.dropped_rows

    @property
    def failed(self) -> int:
        return self.failed_rows


def tell(observe: Callable[[str, int], None] | None, event: str, rows: int) -> None:
    """Tell ``observe`` (Prometheus counters) of a count; an observer that fails never breaks logging."""
    if observe is not None:
        try:
            observe(event, rows)
        except Exception as exc:
            log.debug("feature log observer failed: %s", exc)


def sampled(rng: random.Random, vectors: ServedVectors) -> bool:
    """Whether a served request is logged at its service's sample rate (one draw per request)."""
    return vectors.sample_rate >= 1.0 or rng.random() < vectors.sample_rate


@dataclass
class _Queued:
    seq: int
    layout: ServedVectors        # the first request of its layout: service, version, names, types
    payload: bytes               # this request's own data, pickled (see ``pack``)
    rows: int


def layout_id(v: ServedVectors) -> tuple[Any, ...]:
    """What requests of one layout share (service, version, names, source): the key their rows are grouped and
    their ``ServedVectors`` kept once by."""
    return (v.service, v.service_version, tuple(v.response["metadata"]["feature_names"]), tuple(v.join_keys),
            tuple(v.request_fields), v.source)


def _plain(column: Any) -> list[Any]:
    return column.to_pylist() if isinstance(column, pa.Array | pa.ChunkedArray) else list(column)


def pack(v: ServedVectors) -> bytes:
    """A served request's own data as one bytes object: queued requests are then not objects the garbage
    collector walks (a queue of response dicts made every full collection slower, which cost the event loop
    a fifth of its throughput at 1,000 requests/s), and pickling keeps NaN and every Python value exact."""
    results = v.response["results"]
    names = v.response["metadata"]["feature_names"]
    index = {n: i for i, n in enumerate(names)}
    features = [n for n in names if n not in v.join_keys]
    return pickle.dumps((v.request_id, v.served_at_us, [_plain(c) for c in v.join_keys.values()],
                         [_plain(c) for c in v.request_fields.values()],
                         [results[index[n]]["values"] for n in features],
                         [results[index[n]]["statuses"] for n in features], v.scores, v.model, v.versions),
                        protocol=5)


def unpack(layout: ServedVectors, payload: bytes) -> ServedVectors:
    """The ``ServedVectors`` ``pack`` made ``payload`` of (``layout`` gives what requests of a layout share)."""
    request_id, served_at_us, keys, fields, values, statuses, scores, model, versions = pickle.loads(payload)
    features = layout.features
    return ServedVectors(
        service=layout.service, service_version=layout.service_version, sample_rate=layout.sample_rate,
        request_id=request_id, served_at_us=served_at_us, join_keys=dict(zip(layout.join_keys, keys, strict=True)),
        request_fields=dict(zip(layout.request_fields, fields, strict=True)),
        response={"metadata": {"feature_names": features},
                  "results": [{"values": v, "statuses": st} for v, st in zip(values, statuses, strict=True)]},
        types=layout.types, versions=versions, scores=scores, model=model, source=layout.source)


@dataclass
class _State:
    queue: deque[_Queued] = field(default_factory=deque)
    queued_rows: int = 0
    submitted: int = 0
    done: int = 0
    flush_to: int = 0
    closing: bool = False


class FeatureLogger:
    """Samples served requests, queues them (at most ``max_queue`` entity rows) and appends them in batches of
    about ``batch_rows`` rows (or every ``flush_interval_s``) from one background thread. ``catalog_factory``
    opens the Iceberg catalog, in that thread, on the first write (a failure is counted and tried again on the
    next). ``observe(event, rows)`` (optional) is told of every count as it happens, for Prometheus counters:
    events ``logged``, ``dropped``, ``failed``, ``sampled_out``."""

    def __init__(self, catalog_factory: Callable[[], Any], namespace: str, *, max_queue: int = 10_000,
                 batch_rows: int = 5_000, flush_interval_s: float = 1.0, seed: int | None = None,
                 observe: Callable[[str, int], None] | None = None) -> None:
        if max_queue <= 0 or batch_rows <= 0 or flush_interval_s <= 0:
            raise ValueError("max_queue, batch_rows and flush_interval_s must be positive")
        self.catalog_factory = catalog_factory
        self.namespace = namespace
        self.max_queue = max_queue
        self.batch_rows = batch_rows
        self.flush_interval_s = flush_interval_s
        self.stats = LogStats()
        self._observe = observe
        self._rng = random.Random(seed)
        self._state = _State()
        self._cond = threading.Condition()
        self._tables: LogTables | None = None
        self._layouts: dict[tuple[Any, ...], ServedVectors] = {}
        self._thread = threading.Thread(target=self._run, name="quasar-feature-log", daemon=True)
        self._thread.start()

    @property
    def queued_rows(self) -> int:
        return self._state.queued_rows

    def submit(self, vectors: ServedVectors) -> bool:
        """Queue a served request with probability ``vectors.sample_rate``; False when not sampled, dropped (the
        queue is full or the logger closed: counted) or not loggable. Never blocks on I/O, never raises."""
        try:
            rows = vectors.rows
            if not sampled(self._rng, vectors):
                self._count("sampled_out", rows)
                return False
            payload = pack(vectors)                     # outside the lock
            with self._cond:
                s = self._state
                if s.closing or s.queued_rows + rows > self.max_queue:
                    accepted = False
                else:
                    s.submitted += 1
                    layout = self._layouts.setdefault(layout_id(vectors), vectors)
                    s.queue.append(_Queued(s.submitted, layout, payload, rows))
                    s.queued_rows += rows
                    self.stats.peak_queued_rows = max(self.stats.peak_queued_rows, s.queued_rows)
                    accepted = True
                    if s.queued_rows >= self.batch_rows:
                        self._cond.notify_all()
            if not accepted:
                self._count("dropped", rows)
            return accepted
        except Exception as exc:  # a request must never fail for its log
            log.warning("feature log: a served request could not be queued: %s: %s", type(exc).__name__, exc)
            return False

    def flush(self, timeout_s: float | None = None) -> None:
        """Write everything queued so far; return when it is written (or failed), or after ``timeout_s``."""
        with self._cond:
            target = self._state.submitted
            self._state.flush_to = max(self._state.flush_to, target)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._state.done >= target or not self._thread.is_alive(), timeout_s)

    def close(self, timeout_s: float | None = None) -> None:
        """Write what is queued, then stop the thread; later submits are dropped."""
        with self._cond:
            self._state.closing = True
            self._cond.notify_all()
        self._thread.join(timeout_s)

    def __enter__(self) -> FeatureLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the writer thread ---------------------------------------------------------------------------------
    def _count(self, event: str, rows: int) -> None:
        with self._cond:
            self.stats.add(event, rows)
        tell(self._observe, event, rows)

    def _take(self) -> list[_Queued] | None:
        """The next batch (up to ``batch_rows`` rows, at least one request), waiting for one; None to stop."""
        s = self._state
        with self._cond:
            self._cond.wait_for(lambda: s.closing or s.flush_to > s.done or s.queued_rows >= self.batch_rows,
                                self.flush_interval_s)
            if not s.queue:
                if s.flush_to > s.done:
                    s.done = s.submitted
                    self._cond.notify_all()
                return None if s.closing else []
            batch: list[_Queued] = []
            rows = 0
            while s.queue and (not batch or rows + s.queue[0].rows <= self.batch_rows):
                item = s.queue.popleft()
                batch.append(item)
                rows += item.rows
            s.queued_rows -= rows
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if not batch:
                continue
            try:
                self._write(self._unpacked(batch))
            finally:
                with self._cond:
                    self._state.done = max(self._state.done, batch[-1].seq)
                    self._cond.notify_all()

    def _unpacked(self, batch: list[_Queued]) -> list[ServedVectors]:
        out = []
        for q in batch:
            try:
                out.append(unpack(q.layout, q.payload))
            except Exception as exc:  # counted, never raised: the thread must live on
                log.warning("feature log: a queued request could not be read back: %s: %s", type(exc).__name__, exc)
                self._count("failed", q.rows)
        return out

    def _write(self, batch: list[ServedVectors]) -> None:
        by_service: dict[str, list[ServedVectors]] = {}
        for v in batch:
            by_service.setdefault(v.service, []).append(v)
        for service, items in by_service.items():
            rows = sum(v.rows for v in items)
            try:
                if self._tables is None:
                    self._tables = LogTables(self.catalog_factory(), self.namespace)
                groups: dict[tuple[Any, ...], list[ServedVectors]] = {}
                for v in items:
                    groups.setdefault(layout_id(v), []).append(v)
                tables = [rows_of_many(group) for group in groups.values()]
                merged = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
                found = {v.service_version: layout_of(v) for v in items}
                self._tables.append(service, merged, found)
            except Exception as exc:  # counted and logged; the next batch tries again
                log.warning("feature log of %s: %d row(s) could not be written: %s: %s", service, rows,
                            type(exc).__name__, exc)
                self._count("failed", rows)
                continue
            self._count("logged", rows)
