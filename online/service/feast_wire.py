"""Feast 0.67's wire format, read and written: what its SDK (``online_store: {type: remote}``) and its
feature server's clients send to ``/get-online-features``, ``/write-to-online-store`` and ``/push``, and what
they read back.

* Request keys come in whatever JSON type the client holds; they are coerced by the one rule,
  ``quasar.signals.keys.coerce_key`` (exact conversions only).
* A ``df`` is columns of rows (``{"user_id": [1, 2], "event_timestamp": [...], ...}``), the created time in a
  column ``created`` (null when the client had none: such rows get their arrival time, as every push does), and
  Timestamp features as Feast's ``UnixTimestamp``: epoch seconds, the int64 minimum standing for null (what
  Feast's SDK sends for a missing time).
* Answers are ``quasar.online.response``'s, with Timestamp features in epoch seconds (Feast's type, which its
  SDK reads back as an int) and, on request, ``metadata.feature_view_metadata``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from quasar.online.response import OnlinePlan
from quasar.signals.errors import RequestError, SchemaError
from quasar.signals.keys import INT64_MIN, coerce_key
from quasar.signals.signal import Signal
from quasar.signals.ufr.schema import CREATED_TIMESTAMP
from quasar.signals.ufr.types import Timestamp

#: Feast's name for the created-time column of a written ``df``.
FEAST_CREATED = "created"
#: What Feast writes for a null UnixTimestamp (``NULL_TIMESTAMP_INT_VALUE``, pandas' NaT).
FEAST_NULL_TIMESTAMP = INT64_MIN
_NATIVE: dict[str, type] = {"int64": int, "string": str}      # the JSON type each key type arrives as natively


def coerce_entities(entities: Mapping[str, Sequence[Any]], key_types: Mapping[str, str]) -> dict[str, list[Any]]:
    """Request keys as their join keys' types (``key_types``: join key -> ``"int64"``/``"string"``); keys of a
    join key no requested feature uses are left as given (planning names them)."""
    out: dict[str, list[Any]] = {}
    for key, values in entities.items():
        kind = key_types.get(key)
        if kind is None or all(type(v) is _NATIVE[kind] for v in values):     # the common case: nothing to do
            out[key] = list(values)                                          # (the int64 range is checked later)
        else:
            out[key] = [coerce_key(v, kind, f"entities.{key}[{i}]") for i, v in enumerate(values)]
    return out


def coerce_plan_keys(plan: OnlinePlan) -> None:
    """The planned join keys as their entities' key types (``coerce_entities``), in the plan's reads too:
    done after planning, so the join keys of every entity a request reads (a request-time signal's inputs
    included) are coerced and request fields among the entities are left alone."""
    types: dict[str, str] = {}
    for read in plan.reads:
        types.setdefault(read.entity.join_key, read.entity.join_key_type)
    plan.join_keys.update(coerce_entities(plan.join_keys, types))
    for read in plan.reads:
        read.keys = plan.join_keys[read.entity.join_key]


def epoch_seconds(iso: str | None) -> int | None:
    """An ISO-8601 UTC time as Feast's UnixTimestamp: whole seconds, truncated toward zero as Feast does."""
    if iso is None:
        return None
    return int(datetime.fromisoformat(iso).timestamp())


def feast_answer(plan: OnlinePlan, body: dict[str, Any], *, version_metadata: bool) -> dict[str, Any]:
    """``body`` (``quasar.online.response``'s answer to ``plan``) as Feast answers it: Timestamp features in
    epoch seconds, and with ``version_metadata`` each signal version read, in request order."""
    first = len(plan.join_keys)
    views: dict[tuple[str, int], None] = {}
    for i, (e, s, column) in enumerate(plan.outputs):
        read = plan.reads[e].signals[s]
        views[(read.signal.name, read.version)] = None
        if isinstance(read.signal.schema.type_of(column.feature), Timestamp):
            result = body["results"][first + i]
            result["values"] = [epoch_seconds(v) for v in result["values"]]
    if version_metadata:
        body["metadata"]["feature_view_metadata"] = [{"name": n, "version": v} for n, v in views]
    return body


def _timestamp_value(value: Any, where: str) -> Any:
    """A Timestamp feature's value from Feast: epoch seconds (the int64 minimum is null) as a datetime; a
    string (ISO-8601) or null is left for the push rules."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if value == FEAST_NULL_TIMESTAMP:
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise SchemaError(f"{where}: {value!r} is not a time in epoch seconds") from exc


def feast_rows(signal: Signal, df: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """A Feast ``df`` (columns) as the rows ``quasar.online.push`` checks: ``created`` read as
    ``created_timestamp`` (dropped when all null), join keys coerced exactly, Timestamp features from epoch
    seconds. Times as ISO strings stay strings (the push rules read them)."""
    columns = {name: list(values) for name, values in df.items()}
    if FEAST_CREATED in columns:
        if CREATED_TIMESTAMP in columns:
            raise RequestError(f"df: give the created time once, as {FEAST_CREATED!r} or {CREATED_TIMESTAMP!r}")
        created = columns.pop(FEAST_CREATED)
        if any(v is not None for v in created):
            columns[CREATED_TIMESTAMP] = created
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise RequestError(f"df: every column needs one value per row, but {shown}")
    key = signal.entity.join_key
    if key in columns:
        columns[key] = [coerce_key(v, signal.entity.join_key_type, f"df.{key}[{i}]")
                        for i, v in enumerate(columns[key])]
    for name in _timestamp_features(signal, columns):
        columns[name] = [_timestamp_value(v, f"df.{name}[{i}]") for i, v in enumerate(columns[name])]
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _timestamp_features(signal: Signal, columns: Iterable[str]) -> list[str]:
    return [n for n in columns if n in signal.schema.names and isinstance(signal.schema.type_of(n), Timestamp)]
