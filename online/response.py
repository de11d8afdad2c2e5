"""Online feature requests in Feast's shape: plan a request, read it, build the response column by column.

The response is what Feast clients read from ``get-online-features``::

    {"metadata": {"feature_names": ["user_id", "ctr_7d"]},
     "results": [{"values": [...], "statuses": [...], "event_timestamps": [...]}, ...]}

one result per column over the requested entity rows in request order: the join keys first (statuses
PRESENT, event timestamps of the epoch, as Feast does), then the features in request order. Values are
Python objects built once per column (Arrow's ``to_pylist``, numpy's ``tolist``), ready for JSON: vectors and
id lists are lists, weighted id lists are lists of ``{"id": .., "weight": ..}``, float32 values are their
exact float64 widening, and timestamps (event timestamps and Timestamp features) are ISO-8601 UTC strings
with microseconds, ``2026-01-02T03:04:05.678901Z``. A value that is NOT_FOUND, NULL_VALUE or
OUTSIDE_MAX_AGE is None; NaN stays NaN here (``quasar.online.service`` renders it as null).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from quasar.online.record_values import DecodedValues, RecordReader, decode_values, reader_of
from quasar.online.redis_read import ReadPlan, Records, decode_records, plan_read
from quasar.online.store import (
    AsyncOnlineStore,
    FeatureStatus,
    OnlineColumns,
    OnlineStore,
    columns_from_records,
    now_us,
)
from quasar.signals.entity import Entity
from quasar.signals.errors import RequestError, TooManyEntitiesError
from quasar.signals.refs import PlanErrors, Resolve, parse_feature_ref
from quasar.signals.request_plan import (
    FeaturePlan,
    Lookup,
    PlanCache,
    no_request_signals,
    plan_features,
    request_arrays,
)
from quasar.signals.signal import Signal

#: Status names by ``FeatureStatus`` code, for turning a uint8 code column into names in one numpy take.
STATUS_NAMES = np.array([s.name for s in sorted(FeatureStatus)], dtype=object)
EPOCH_ISO = "1970-01-01T00:00:00.000000Z"


@dataclass(frozen=True)
class OutputColumn:
    """One requested feature of one signal version and its name in the response."""

    ref: str
    feature: str
    output: str


@dataclass
class SignalRead:
    """One signal version to read, and its requested columns in request order."""

    signal: Signal
    version: int
    columns: list[OutputColumn] = field(default_factory=list)

    @functools.cached_property
    def features(self) -> list[str]:
        """The requested features, each once (read after planning, when ``columns`` is complete)."""
        return list(dict.fromkeys(c.feature for c in self.columns))

    @functools.cached_property
    def reader(self) -> RecordReader:
        """The signal's record reader (``quasar.online.record_values``)."""
        return reader_of(self.signal.schema)


@dataclass
class EntityRead:
    """The signal versions of one entity, read together in one round trip for that entity's keys."""

    entity: Entity
    keys: list[Any]
    signals: list[SignalRead] = field(default_factory=list)


@dataclass
class OnlinePlan:
    """A checked request: the join key columns, the reads per entity, and the output order."""

    rows: int
    join_keys: dict[str, list[Any]]
    reads: list[EntityRead]
    outputs: list[tuple[int, int, OutputColumn]]     # (entity read, signal read, column): every stored column
    features: FeaturePlan | None = None              # with request-time signals: their steps and the outputs
    request: dict[str, pa.Array] = field(default_factory=dict)    # the request fields they read
    mode: str = "auto"

    @property
    def feature_names(self) -> list[str]:
        if self.features is not None:
            return [*self.join_keys, *(o.output for o in self.features.outputs)]
        return [*self.join_keys, *(c.output for _, _, c in self.outputs)]


_PLAN_ERRORS = PlanErrors(syntax=RequestError, missing=RequestError,
                          full_names_hint='set "full_feature_names": true to name columns <signal>__<feature>')


def parse_refs(features: Sequence[str]) -> list[tuple[str, tuple[str, int | None, str | None]]]:
    """``(ref, (signal, version, feature))`` for each reference; bad syntax is a RequestError naming it."""
    if isinstance(features, str) or not isinstance(features, Sequence):
        raise RequestError("features: give a list of 'signal', 'signal:feature' or 'signal@version:feature'")
    if not features:
        raise RequestError("features: the list is empty; ask for at least one 'signal:feature'")
    parsed = []
    for raw in features:
        ref = parse_feature_ref(raw, RequestError)
        parsed.append((raw, (ref.signal, ref.version, ref.feature)))
    return parsed


def plan_request(entities: Mapping[str, Sequence[Any]], features: Sequence[str], resolve: Resolve, *,
                 full_feature_names: bool = False, max_entities: int | None = None,
                 lookup: Lookup = no_request_signals, request_data: Mapping[str, Sequence[Any]] | None = None,
                 mode: str = "auto", plans: PlanCache | None = None, scope: Any = None) -> OnlinePlan:
    """Check a request and plan its reads (output columns from ``quasar.signals.request_plan.plan_features``,
    stored reads grouped by entity); every user mistake is a RequestError (or NotFoundError from ``resolve``)
    that names the signal, feature, join key or request field. Request-time signals' fields come from
    ``request_data`` or, as Feast's SDK sends them, from ``entities``. ``plans`` keeps the entity-independent
    part for a few seconds, keyed by the references and ``scope`` (what the callbacks depend on beyond them:
    a feature service's version)."""
    if not isinstance(entities, Mapping):
        raise RequestError('entities: give a dict of join key -> list of keys, e.g. {"user_id": [1, 2]}')
    if not _plain_refs(features):
        parse_refs(features)                       # raises for a bad list (a good one is parsed in make)

    def resolve_online(name: str, version: int | None) -> tuple[Signal, int]:
        sig, ver = resolve(name, version)
        if not sig.online:
            raise RequestError(f"signal {sig.name!r} is not served online: declare it with online=True and "
                               "materialize it")
        return sig, ver

    def make() -> FeaturePlan:
        parse_refs(features)
        return plan_features(features, resolve_online, lookup, full_names=full_feature_names, errors=_PLAN_ERRORS)

    if plans is None:
        planned = make()
        shape = _shape(planned)
    else:
        planned = plans.plan(("online", tuple(features), full_feature_names, scope), make)
        shape = _cached_shape(planned)
    given = dict(request_data or {})
    keys = dict(entities)
    for name in planned.request_fields:
        if name in keys:
            given.setdefault(name, keys.pop(name))
    if request_data is not None and not isinstance(request_data, Mapping):
        raise RequestError('request_data: give a dict of request field -> list of values, e.g. {"position": [1]}')
    rows = _rows({**keys, **{k: v for k, v in given.items() if k in planned.request_fields}} or keys, max_entities)
    join_keys = _join_keys(keys, shape)
    reads = [EntityRead(entity, join_keys[entity.join_key], signals) for entity, signals in shape.reads]
    if not planned.has_requests:
        return OnlinePlan(rows=rows, join_keys=join_keys, reads=reads, outputs=shape.outputs)
    request = request_arrays(planned, given, rows, RequestError)
    return OnlinePlan(rows=rows, join_keys=join_keys, reads=reads, outputs=shape.outputs,
                      features=planned, request=request, mode=mode)


def _plain_refs(features: Any) -> bool:
    """A non-empty list of strings (what ``parse_refs`` may accept without raising)."""
    return (isinstance(features, Sequence) and not isinstance(features, str) and bool(features)
            and all(type(f) is str for f in features))


@dataclass(frozen=True)
class _Shape:
    """The entity-independent part of an online plan, from its ``FeaturePlan``: the reads grouped by entity
    (their signal reads are shared by every plan of this shape: nothing changes them after planning), the
    stored outputs, the join keys they need, and whether two entities clash on a join key's type."""

    reads: list[tuple[Entity, list[SignalRead]]]
    outputs: list[tuple[int, int, OutputColumn]]
    named: dict[str, str]
    needed: dict[str, Entity]
    clash: str | None


def _shape(planned: FeaturePlan) -> _Shape:
    by_entity: dict[str, tuple[Entity, list[SignalRead]]] = {}
    by_version: dict[tuple[str, int], tuple[int, int]] = {}
    outputs: list[tuple[int, int, OutputColumn]] = []
    for p in planned.stored:
        sig, ver = p.signal, p.version
        if (sig.name, ver) not in by_version:
            entity_read = by_entity.setdefault(sig.entity.name, (sig.entity, []))
            entity_read[1].append(SignalRead(sig, ver))
            by_version[(sig.name, ver)] = (list(by_entity).index(sig.entity.name), len(entity_read[1]) - 1)
        e_index, s_index = by_version[(sig.name, ver)]
        column = OutputColumn(p.ref, p.feature, p.output)
        by_entity[sig.entity.name][1][s_index].columns.append(column)
        outputs.append((e_index, s_index, column))
    needed: dict[str, Entity] = {}
    clash = None
    for entity, _ in by_entity.values():
        other = needed.setdefault(entity.join_key, entity)
        if other.join_key_type != entity.join_key_type and clash is None:
            clash = (f"entities {other.name!r} and {entity.name!r} share the join key {entity.join_key!r} with "
                     "different key types; request them separately")
    return _Shape(list(by_entity.values()), outputs, {o.output: o.ref for o in planned.outputs}, needed, clash)


#: Shapes of the plans a PlanCache holds, by the plan's id (with the plan, so an id is never reused while
#: its entry lives); a plan out of the cache is planned anew, so its shape is made anew too.
_SHAPES: dict[int, tuple[FeaturePlan, _Shape]] = {}
_MAX_SHAPES = 1024


def _cached_shape(planned: FeaturePlan) -> _Shape:
    hit = _SHAPES.get(id(planned))
    if hit is not None and hit[0] is planned:
        return hit[1]
    shape = _shape(planned)
    if len(_SHAPES) >= _MAX_SHAPES:
        _SHAPES.clear()
    _SHAPES[id(planned)] = (planned, shape)
    return shape


def _rows(entities: Mapping[str, Sequence[Any]], max_entities: int | None) -> int:
    lengths = {}
    for key, values in entities.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise RequestError(f"entities.{key}: give a list of keys, not {type(values).__name__}")
        lengths[key] = len(values)
    if not lengths:
        raise RequestError('entities: give at least one join key with its keys, e.g. {"user_id": [1, 2]}')
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise RequestError(f"entities: every join key needs one value per entity row, but {shown}")
    rows = next(iter(lengths.values()))
    if max_entities is not None and rows > max_entities:
        raise TooManyEntitiesError(f"entities: {rows} entity rows requested; this service answers at most "
                                   f"{max_entities} per request")
    return rows


def _join_keys(entities: Mapping[str, Sequence[Any]], shape: _Shape) -> dict[str, list[Any]]:
    needed = shape.needed
    if shape.clash is not None:
        raise RequestError(shape.clash)
    missing = [k for k in needed if k not in entities]
    if missing:
        who = needed[missing[0]]
        raise RequestError(f"entities: join key {missing[0]!r} of entity {who.name!r} is missing; the requested "
                           f"features need {', '.join(repr(k) for k in needed)}")
    unknown = [k for k in entities if k not in needed]
    if unknown:
        raise RequestError(f"entities: join key {unknown[0]!r} is not used by any requested feature; they need "
                           f"{', '.join(repr(k) for k in needed)}")
    clash = [k for k in entities if k in shape.named]
    if clash:
        raise RequestError(f"feature {shape.named[clash[0]]!r} has the name of the join key {clash[0]!r}: "
                           'set "full_feature_names": true')
    return {k: list(entities[k]) for k in entities}


# --- reading --------------------------------------------------------------------------------------------------


def online_features(store: OnlineStore, entities: Mapping[str, Sequence[Any]], features: Sequence[str],
                    resolve: Resolve, *, full_feature_names: bool = False,
                    max_entities: int | None = None, lookup: Lookup = no_request_signals,
                    request_data: Mapping[str, Sequence[Any]] | None = None, mode: str = "auto",
                    plans: PlanCache | None = None, scope: Any = None) -> dict[str, Any]:
    """Plan, read and build in one call: what ``Platform.online_features`` returns (the HTTP answer's shape)."""
    plan = plan_request(entities, features, resolve, full_feature_names=full_feature_names,
                        max_entities=max_entities, lookup=lookup, request_data=request_data, mode=mode,
                        plans=plans, scope=scope)
    return read_online_features(store, plan)


def read_online_features(store: OnlineStore, plan: OnlinePlan) -> dict[str, Any]:
    """Read ``plan`` from a synchronous online store and build the response: with a store that reads raw
    records (``read_records``, the Redis store), one round trip for every entity and signal, decoded straight
    into the response (``response_from_records``); otherwise one ``read`` per entity."""
    if callable(getattr(store, "read_records", None)):
        plans = read_plans(store, plan)
        return response_from_records(plan, plans, store.read_records(plans), now_us())    # type: ignore[attr-defined]
    columns = [store.read([(s.signal, s.version) for s in r.signals], r.keys) for r in plan.reads]
    return build_response(plan, columns)


async def aread_online_features(store: AsyncOnlineStore, plan: OnlinePlan) -> dict[str, Any]:
    """Read ``plan`` from an asyncio online store and build the response (one round trip with a store that
    reads raw records, as ``read_online_features``; otherwise the entities concurrently)."""
    if callable(getattr(store, "read_records", None)):
        plans = read_plans(store, plan)
        records = await store.read_records(plans)                                       # type: ignore[attr-defined]
        return response_from_records(plan, plans, records, now_us())
    reads = [store.read([(s.signal, s.version) for s in r.signals], r.keys) for r in plan.reads]
    columns = await asyncio.gather(*reads) if len(reads) > 1 else [await reads[0]] if reads else []
    return build_response(plan, columns)


def read_plans(store: Any, plan: OnlinePlan) -> list[ReadPlan]:
    """The hashes and fields of every entity read of ``plan`` in ``store``'s project."""
    return [plan_read(store.project, [(s.signal, s.version) for s in r.signals], r.keys) for r in plan.reads]


def response_from_records(plan: OnlinePlan, plans: Sequence[ReadPlan], records: Sequence[Records],
                          now: int) -> dict[str, Any]:
    """The response of ``plan`` from the raw records of its reads (``records[e][s]``: read ``e``'s signal
    ``s``, one record or None per key), as of ``now`` (µs): exactly ``build_response`` of the decoded
    columns, but decoded straight into Python values (``quasar.online.record_values``). A plan with
    request-time signals, or a record the fast path refuses, goes through the codec's columns."""
    if plan.features is not None:
        return build_response(plan, [decode_records(p, r, now) for p, r in zip(plans, records, strict=True)])
    rows = plan.rows
    present = ["PRESENT"] * rows
    epoch = [EPOCH_ISO] * rows
    results = [{"values": keys, "statuses": present, "event_timestamps": epoch} for keys in plan.join_keys.values()]
    decoded = [_decoded(signal_read, records[e][s], now)
               for e, read in enumerate(plan.reads) for s, signal_read in enumerate(read.signals)]
    if len(decoded) == 1:
        times = [iso_strings(np.array(decoded[0].event_time_us, dtype=np.int64))]
    else:
        strings = iso_strings(np.array([t for d in decoded for t in d.event_time_us], dtype=np.int64))
        times = [strings[i * rows:(i + 1) * rows] for i in range(len(decoded))]
    layout = _layout(plan)
    for index, feature, again in layout.columns:
        got = decoded[index]
        values = got.values[feature]
        results.append({"values": list(values) if again else values, "statuses": got.statuses[feature],
                        "event_timestamps": times[index]})
    return {"metadata": {"feature_names": [*plan.join_keys, *layout.names]}, "results": results}


@dataclass(frozen=True)
class _Layout:
    """Per stored output of a plan: the index of its signal read among all of the plan's (entity-major), its
    feature, and whether an earlier output has the same (then it gets its own copy of the values); and the
    outputs' names."""

    columns: list[tuple[int, str, bool]]
    names: list[str]


#: ``_layout``'s answers, by the id of the outputs list they describe (shared by the plans of one shape).
_LAYOUTS: dict[int, tuple[list[Any], _Layout]] = {}


def _layout(plan: OnlinePlan) -> _Layout:
    hit = _LAYOUTS.get(id(plan.outputs))
    if hit is not None and hit[0] is plan.outputs:
        return hit[1]
    first = list(itertools.accumulate((len(r.signals) for r in plan.reads), initial=0))
    seen: set[tuple[int, str]] = set()
    columns = []
    for e, s, column in plan.outputs:
        index = first[e] + s
        columns.append((index, column.feature, (index, column.feature) in seen))
        seen.add((index, column.feature))
    layout = _Layout(columns, [c.output for _, _, c in plan.outputs])
    if len(_LAYOUTS) >= _MAX_SHAPES:
        _LAYOUTS.clear()
    _LAYOUTS[id(plan.outputs)] = (plan.outputs, layout)
    return layout


def _decoded(read: SignalRead, records: Sequence[bytes | None], now: int) -> DecodedValues:
    """One signal's records as values: the fast path, or the codec's (which raises what it refuses)."""
    signal = read.signal
    features = read.features
    got = decode_values(read.reader, records, features, ttl=signal.ttl, now_us=now)
    if got is not None:
        return got
    columns = columns_from_records(signal, read.version, records, now=now, features=features)
    return DecodedValues({f: column_values(columns.table.column(f)) for f in features},
                         {f: status_names(columns.status[f]) for f in features}, columns.event_time_us.tolist())


# --- building -------------------------------------------------------------------------------------------------


def build_response(plan: OnlinePlan, columns: Sequence[Sequence[OnlineColumns]]) -> dict[str, Any]:
    """The Feast-shaped response of ``plan`` from the store's columns (``columns[e][s]`` for read ``e``,
    signal ``s``): Python lists built once per column, no per-value work beyond ``to_pylist``."""
    rows = plan.rows
    present = ["PRESENT"] * rows
    epoch = [EPOCH_ISO] * rows
    results = [{"values": keys, "statuses": present, "event_timestamps": epoch} for keys in plan.join_keys.values()]
    if plan.features is not None:
        return _with_requests(plan, plan.features, columns, results, epoch)
    times: dict[tuple[int, int], list[Any]] = {}
    for e, s, column in plan.outputs:
        got = columns[e][s]
        if (e, s) not in times:
            times[(e, s)] = event_timestamps(got.event_time_us)
        results.append({"values": column_values(got.table.column(column.feature)),
                        "statuses": status_names(got.status[column.feature]),
                        "event_timestamps": times[(e, s)]})
    return {"metadata": {"feature_names": plan.feature_names}, "results": results}


def _with_requests(plan: OnlinePlan, features: FeaturePlan, columns: Sequence[Sequence[OnlineColumns]],
                   results: list[dict[str, Any]], epoch: list[str]) -> dict[str, Any]:
    """The response of a plan with request-time signals: run them on the stored columns just read (null where
    not present, as offline), then every output in request order. A computed value is PRESENT or NULL_VALUE
    and carries no event time (the epoch)."""
    stored: dict[str, Any] = {}
    cells: dict[str, dict[str, Any]] = {}
    times: dict[tuple[int, int], list[Any]] = {}
    shown = {o.column for o in features.outputs if not o.computed}
    for e, s, column in plan.outputs:
        got = columns[e][s]
        array = got.table.column(column.feature)
        stored[column.output] = array
        if column.output not in shown:
            continue                                       # a hidden input: read, not answered
        if (e, s) not in times:
            times[(e, s)] = event_timestamps(got.event_time_us)
        cells[column.output] = {"values": column_values(array), "statuses": status_names(got.status[column.feature]),
                                "event_timestamps": times[(e, s)]}
    computed = features.compute(stored, plan.request, plan.rows, plan.mode)
    for o in features.outputs:
        if not o.computed:
            results.append(cells[o.column])
            continue
        array = computed[o.column]
        values = column_values(array)
        statuses = (["NULL_VALUE" if v is None else "PRESENT" for v in values] if array.null_count
                    else ["PRESENT"] * plan.rows)
        results.append({"values": values, "statuses": statuses, "event_timestamps": epoch})
    return {"metadata": {"feature_names": plan.feature_names}, "results": results}


def column_values(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """A feature column as Python values (float16 vectors widened exactly to float32 first, timestamps as
    ISO strings)."""
    dtype = column.type
    if pa.types.is_timestamp(dtype):
        return timestamp_strings(column)
    if pa.types.is_fixed_size_list(dtype) and pa.types.is_float16(dtype.value_type):
        column = column.cast(pa.list_(pa.field("item", pa.float32(), nullable=False), dtype.list_size))
    values: list[Any] = column.to_pylist()
    return values


def iso_strings(micros: np.ndarray) -> list[str]:
    """Microseconds since the epoch as ISO-8601 UTC strings, formatted by numpy in one call."""
    as_int = np.ascontiguousarray(micros, dtype=np.int64)
    strings: list[str] = np.datetime_as_string(as_int.view("datetime64[us]"), unit="us", timezone="UTC").tolist()
    return strings


def timestamp_strings(column: pa.ChunkedArray | pa.Array) -> list[str | None]:
    """A timestamp column (µs, UTC) as ISO strings, None where null."""
    ints = column.cast(pa.int64())
    values: list[str | None] = list(iso_strings(ints.fill_null(0).to_numpy()))
    if ints.null_count:
        for i in np.flatnonzero(ints.is_null().to_numpy(zero_copy_only=False)).tolist():
            values[i] = None
    return values


def status_names(codes: np.ndarray) -> list[str]:
    """``FeatureStatus`` codes as names; all-PRESENT, the common case, without a gather."""
    if not np.count_nonzero(codes):
        return ["PRESENT"] * len(codes)
    names: list[str] = STATUS_NAMES[codes].tolist()
    return names


def event_timestamps(event_time_us: np.ndarray) -> list[str]:
    """Record event times (µs since the epoch; 0, the epoch, where not found) as ISO-8601 UTC strings."""
    return iso_strings(event_time_us)
