"""Request-time features: check a request's keys, read its features online, build the model's batch.

One request is one request entity (e.g. a user) and its candidates (e.g. pins). Its request-role features
are read for the one request key and its candidate-role features for every candidate: the scorer reads both
in one round trip shared with the requests waiting at the same time (``quasar.serving_adapters.fetch``);
``fetch_online`` is the plain read of one request (one store read per side, concurrently). The rows are assembled into one
Arrow table (one row per candidate; the request entity's values broadcast to every row) and turned into a
``FeatureBatch`` by ``build_feature_batch``, the very builder the training loader uses, so a missing or
stale value is a False mask here exactly as a null is in training.

A bundle of a feature service with request-time signals also reads their stored inputs (hidden columns of
the same two reads) and then runs the signals over the stored columns just read and the request fields
(``request_data``), by the planner's own ``FeaturePlan.compute``, the code that computes them in
training datasets. Request fields broadcast like the request entity: a field given one value applies to
every candidate (a request-level field such as the query); a field given one value per candidate is
per candidate (its position); any other length is a RequestError naming the field.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from quasar.online.response import EPOCH_ISO, STATUS_NAMES, column_values, event_timestamps, status_names
from quasar.online.store import FeatureStatus
from quasar.serving_adapters.models import LoadedModel, SignalRead
from quasar.signals.entity import Entity
from quasar.signals.errors import RequestError, ServingError, TooManyEntitiesError
from quasar.signals.request_plan import request_arrays
from quasar.signals.signal import Signal
from quasar.signals.ufr.tensors import FeatureBatch, build_feature_batch

Key = int | str
_INT64 = (-(2**63), 2**63 - 1)
_INT, _STR = frozenset((int,)), frozenset((str,))


class AsyncOnlineReader(Protocol):
    """What the scorer needs of the online store (``quasar.online.redis_store.AsyncRedisOnlineStore``)."""

    async def read(self, signal_versions: Sequence[tuple[Signal, int]], keys: Sequence[Any]) -> list[Any]: ...


@dataclass(frozen=True)
class RequestKeys:
    """The checked keys of one scoring request."""

    request: Key | None          # None when the model reads nothing about the request entity
    candidates: list[Key]


def check_keys(model: LoadedModel, entities: Mapping[str, Sequence[Any]], candidates: Mapping[str, Sequence[Any]],
               *, max_candidates: int = 10_000) -> RequestKeys:
    """The request key and the candidate keys, or a RequestError naming the key and the problem."""
    spec = model.spec
    unknown = sorted(set(entities) - {spec.request_key})
    if unknown:
        raise RequestError(f"entities: unknown key {unknown[0]!r}; model {model.name!r} takes the request "
                           f"entity as {{{spec.request_key!r}: [<one key>]}}")
    request: Key | None = None
    if spec.request_key in entities or model.request_reads:
        values = _values(entities, spec.request_key, "entities", model)
        if len(values) != 1:
            raise RequestError(f"entities.{spec.request_key}: give exactly one key (the request entity), "
                               f"got {len(values)}")
        request = _check_key(values[0], model.request_entity, f"entities.{spec.request_key}[0]")
    unknown = sorted(set(candidates) - {spec.candidate_key})
    if unknown:
        raise RequestError(f"candidates: unknown key {unknown[0]!r}; model {model.name!r} takes candidates "
                           f"as {{{spec.candidate_key!r}: [...]}}")
    values = _values(candidates, spec.candidate_key, "candidates", model)
    if len(values) > max_candidates:
        raise TooManyEntitiesError(f"candidates.{spec.candidate_key}: {len(values)} candidates, more than the "
                                   f"limit of {max_candidates}")
    return RequestKeys(request, _check_candidates(values, model.candidate_entity, f"candidates.{spec.candidate_key}"))


def _check_candidates(values: Sequence[Any], entity: Entity | None, where: str) -> list[Key]:
    """The candidate keys as a list; the first bad one is a RequestError (the common case checked at once)."""
    kind = entity.join_key_type if entity is not None else None
    keys = list(values)
    types = set(map(type, keys))            # one C-level pass (a bool is its own type, not int)
    if kind != "string" and types <= _INT and (not keys or (_INT64[0] <= min(keys) and max(keys) <= _INT64[1])):
        return keys
    if kind == "string" and types <= _STR:
        return keys
    return [_check_key(v, entity, f"{where}[{i}]") for i, v in enumerate(keys)]


def _values(mapping: Mapping[str, Sequence[Any]], key: str, where: str, model: LoadedModel) -> Sequence[Any]:
    if key not in mapping:
        raise RequestError(f"{where}: missing key {key!r} (model {model.name!r})")
    values = mapping[key]
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise RequestError(f"{where}.{key}: give a list of keys, got {type(values).__name__}")
    return values


def _check_key(value: Any, entity: Entity | None, where: str) -> Key:
    kind = entity.join_key_type if entity is not None else None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RequestError(f"{where}: key {value!r} must be {'an int64' if kind != 'string' else 'a string'}")
    if kind == "int64" and not isinstance(value, int):
        raise RequestError(f"{where}: key {value!r} must be an int64 ({entity.name if entity else ''} keys are "
                           "integers)")
    if kind == "string" and not isinstance(value, str):
        raise RequestError(f"{where}: key {value!r} must be a string ({entity.name if entity else ''} keys are "
                           "strings)")
    if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        raise RequestError(f"{where}: key {value} does not fit in an int64")
    return value


async def read_side(store: AsyncOnlineReader, reads: Sequence[SignalRead], entity_keys: Sequence[Key]) -> list[Any]:
    """One online read of ``reads`` (one entity's signals) for ``entity_keys``; [] when there is nothing to read."""
    if not reads or not entity_keys:
        return []
    got = await store.read([(r.signal, r.version) for r in reads], entity_keys)
    if len(got) != len(reads):
        raise ServingError(f"the online store answered {len(got)} signals for {len(reads)} asked")
    return list(got)


async def fetch_online(store: AsyncOnlineReader, model: LoadedModel,
                       keys: RequestKeys) -> tuple[list[Any], list[Any]]:
    """The request entity's and the candidates' online columns, read concurrently (one read per side)."""
    request_keys = [keys.request] if keys.request is not None else []
    request, candidates = await asyncio.gather(read_side(store, model.request_reads, request_keys),
                                               read_side(store, model.candidate_reads, keys.candidates))
    return request, candidates


def request_fields(model: LoadedModel, request_data: Mapping[str, Sequence[Any]] | None,
                   rows: int) -> dict[str, pa.Array]:
    """The request fields the model's request-time signals read, as Arrow arrays ``rows`` long (a field of
    one value broadcast to every candidate); a RequestError names an unknown, missing, mistyped or
    wrongly sized field."""
    given = dict(request_data or {})
    plan = model.plan
    wanted = plan.request_fields if plan is not None else {}
    unknown = sorted(set(given) - set(wanted))
    if unknown:
        takes = ", ".join(repr(f) for f in wanted) or "no request fields"
        raise RequestError(f"request_data: unknown field {unknown[0]!r}; model {model.name!r} takes {takes}")
    if plan is None or not wanted:
        return {}
    values: dict[str, Any] = {}
    for name, value in given.items():
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise RequestError(f"request_data.{name}: give a list of values (one per candidate, or one for all), "
                               f"got {type(value).__name__}")
        if len(value) == rows:
            values[name] = value
        elif len(value) == 1:
            values[name] = list(value) * rows
        else:
            raise RequestError(f"request_data.{name}: {len(value)} values for {rows} candidates; give one per "
                               "candidate, or one for every candidate")
    return request_arrays(plan, values, rows, RequestError)


def assemble_feature_table(model: LoadedModel, request: Sequence[Any], candidates: Sequence[Any],
                           rows: int, fields: Mapping[str, pa.Array] | None = None, mode: str = "auto", *,
                           request_rows: pa.Array | None = None) -> pa.Table:
    """One row per candidate, the model's input columns in spec order; request values broadcast to all rows.

    ``request`` and ``candidates`` are the store's ``OnlineColumns`` in the order of the model's reads. A
    service bundle's request-time columns are computed from them and ``fields`` (``request_fields``).
    ``request_rows`` (int64, one per candidate) says which row of ``request`` each candidate takes, for the
    candidates of several requests read together (``quasar.serving_adapters.fetch``); by default all row 0.
    """
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    broadcast = request_rows if request_rows is not None else pa.array(np.zeros(rows, dtype=np.int64))
    for read, got in zip(model.request_reads, request, strict=True):
        for feature, _ in read.features:
            _column(got, read, feature)             # every feature read is there (else a clear error)
        spread = got.table.select(list(dict.fromkeys(read.names))).take(broadcast)    # one take per signal
        for feature, column in read.features:
            columns[column] = spread.column(feature)
    for read, got in zip(model.candidate_reads, candidates, strict=True):
        for feature, column in read.features:
            columns[column] = _column(got, read, feature)
    plan = model.plan
    if plan is None or not plan.has_requests:
        return pa.table({name: columns[name] for name, _ in model.spec.spec.features})
    if fields is None:
        fields = request_fields(model, None, rows)
    computed = plan.compute(columns, fields, rows, mode)
    return pa.table({o.output: computed[o.column] if o.computed else columns[o.column] for o in plan.outputs})


def served_features(model: LoadedModel, keys: RequestKeys, request: Sequence[Any], candidates: Sequence[Any],
                    table: pa.Table) -> dict[str, Any]:
    """What the model read, in the Feast response shape of ``/v1/features`` (one row per candidate): the join
    keys, then every input column with its values, statuses and event times as read (a request-time value
    PRESENT or NULL_VALUE at the epoch). Built only when asked for or logged, never on the scoring path."""
    spec = model.spec
    rows = len(keys.candidates)
    present, epoch = ["PRESENT"] * rows, [EPOCH_ISO] * rows
    names: list[str] = []
    results: list[dict[str, Any]] = []
    if keys.request is not None:
        names.append(spec.request_key)
        results.append({"values": [keys.request] * rows, "statuses": present, "event_timestamps": epoch})
    names.append(spec.candidate_key)
    results.append({"values": list(keys.candidates), "statuses": present, "event_timestamps": epoch})
    inputs = set(table.column_names)
    cells: dict[str, dict[str, Any]] = {}
    for reads, got_all, repeat in ((model.request_reads, request, rows), (model.candidate_reads, candidates, 1)):
        for read, got in zip(reads, got_all, strict=True):
            times = event_timestamps(got.event_time_us)
            for feature, column in read.features:
                if column in inputs:
                    cells[column] = {"values": column_values(table.column(column)),
                                     "statuses": status_names(got.status[feature]) * repeat,
                                     "event_timestamps": times * repeat}
    for name in table.column_names:
        names.append(name)
        cell = cells.get(name)
        if cell is None:                            # computed at request time
            array = table.column(name)
            nulls = array.is_null().to_numpy(zero_copy_only=False)
            statuses = present if not nulls.any() else STATUS_NAMES[
                np.where(nulls, int(FeatureStatus.NULL_VALUE), int(FeatureStatus.PRESENT))].tolist()
            cell = {"values": column_values(array), "statuses": statuses, "event_timestamps": epoch}
        results.append(cell)
    return {"metadata": {"feature_names": names}, "results": results}


def _column(got: Any, read: SignalRead, feature: str) -> pa.ChunkedArray:
    table: pa.Table = got.table
    if feature not in table.column_names:
        raise ServingError(f"the online store's rows of {read.signal.name}@{read.version} have no feature "
                           f"{feature!r}")
    return table.column(feature)


def build_request_batch(model: LoadedModel, table: pa.Table) -> FeatureBatch:
    """The model's FeatureBatch for an assembled table (the training loader's builder)."""
    return build_feature_batch(table, model.spec.spec)
