"""Push: rows of a signal, checked against its schema, written straight to the online store (newer wins).

``validate_push_rows`` is the check alone, so the facade can append the same validated table to the
offline store. A pushed row must give the join key, ``event_timestamp`` and every feature (a missing value
is a null, never an absent column, so a push cannot silently blank a feature); ``created_timestamp`` may be
given. Times are timestamps or ISO-8601 strings, read by the one time rule (``quasar.signals.times``: an offset is
honoured, a naive time is UTC).

Times outside the bounds (``quasar.signals.bounds``: an event time before ``[time] earliest`` or more than ``[time]
max_future`` after now, a created time that far ahead) refuse the whole push with a SchemaError naming the
column, the row, the value and the bound: one row stamped 9999-12-31 would otherwise win newer-wins for ever.
Rows pushed without ``created_timestamp`` get their arrival time (``quasar.signals.ordering.stamp_created``), so a
later push of one event time wins, and a push beats an offline row of the same event time written before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from quasar.online.store import OnlineStore
from quasar.signals.bounds import DEFAULT_BOUNDS, TimeBounds, check_times, clock_us
from quasar.signals.errors import RequestError, SchemaError
from quasar.signals.ordering import stamp_created
from quasar.signals.signal import Signal
from quasar.signals.times import parse_times, utc_column
from quasar.signals.ufr.codec_arrow import coerce_feature
from quasar.signals.ufr.schema import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from quasar.signals.ufr.types import TIMESTAMP_ARROW
from quasar.store.row_checks import check_rows

_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError, TypeError,
                ValueError)


def push(*, signal: Signal, version: int, rows: pa.Table | Sequence[Mapping[str, Any]], online: OnlineStore,
         bounds: TimeBounds = DEFAULT_BOUNDS) -> int:
    """Validate ``rows`` and write them to ``online``; returns the rows written (not older than the stored ones)."""
    if not signal.online:
        raise RequestError(f"signal {signal.name!r} is not an online signal: declare it with online=True to push "
                           "rows to it")
    return online.write(signal, version, validate_push_rows(signal, rows, bounds=bounds))


def validate_push_rows(signal: Signal, rows: Any, *, bounds: TimeBounds = DEFAULT_BOUNDS,
                       now_us: int | None = None) -> pa.Table:
    """``rows`` (an Arrow table or record batch, a pandas DataFrame, or a list of dicts) as a table of the join
    key, ``event_timestamp``, ``created_timestamp`` and the features, in UFR types, as they arrive at ``now_us``
    (default: the clock).

    A missing, unknown or mistyped column is a SchemaError naming it, and so is a time outside ``bounds``; rows
    that break one of the signal's row-level expectations (not-null, between, in-set: ``quasar.store.row_checks``) are
    a ValidationFailedError. Without ``created_timestamp`` every row gets the arrival time.
    """
    now = clock_us() if now_us is None else now_us
    expected = _expected_columns(signal)
    if isinstance(rows, pa.RecordBatch):
        rows = pa.Table.from_batches([rows])
    elif type(rows).__module__.startswith("pandas"):
        rows = pa.Table.from_pandas(rows, preserve_index=False)
    if isinstance(rows, pa.Table):
        _check_names(signal, list(rows.column_names), "the rows")
        columns = {name: rows.column(name) for name in rows.column_names}
    elif isinstance(rows, Sequence) and not isinstance(rows, (str, bytes)):
        columns = _columns_of_dicts(signal, rows, expected)
    else:
        raise SchemaError(f"signal {signal.name}: push rows as a pyarrow Table or a list of dicts, "
                          f"not {type(rows).__name__}")
    out: dict[str, pa.Array | pa.ChunkedArray] = {}
    for name, arrow_type in expected.items():
        if name not in columns:
            continue
        out[name] = _convert(signal, name, arrow_type, columns[name])
    table = pa.table(out, schema=pa.schema([pa.field(n, expected[n]) for n in out]))
    for name in (EVENT_TIMESTAMP, CREATED_TIMESTAMP):
        if name in table.column_names:
            check_times(table.column(name), now_us=now, bounds=bounds, created=name == CREATED_TIMESTAMP,
                        what=f"signal {signal.name}: column {name!r}")
    check_rows(signal, table)
    return stamp_created(table, now)


def _expected_columns(signal: Signal) -> dict[str, pa.DataType]:
    return {signal.entity.join_key: signal.entity.arrow_key_type, EVENT_TIMESTAMP: TIMESTAMP_ARROW,
            CREATED_TIMESTAMP: TIMESTAMP_ARROW, **{n: t.arrow_type() for n, t in signal.schema}}


def _check_names(signal: Signal, names: list[str], where: str) -> None:
    expected = _expected_columns(signal)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SchemaError(f"signal {signal.name}: column {dupes[0]!r} appears more than once in {where}")
    extra = [n for n in names if n not in expected]
    if extra:
        raise SchemaError(f"signal {signal.name}: unknown column {extra[0]!r} in {where}; the signal's columns are "
                          f"{', '.join(expected)}")
    missing = [n for n in expected if n != CREATED_TIMESTAMP and n not in names]
    if missing:
        what = "feature " if missing[0] in signal.schema.names else ""
        raise SchemaError(f"signal {signal.name}: {what}column {missing[0]!r} is missing from {where} (give every "
                          "feature; null for a missing value)")


def _columns_of_dicts(signal: Signal, rows: Sequence[Any], expected: dict[str, pa.DataType]) -> dict[str, Any]:
    if not rows:
        return {n: pa.array([], t) for n, t in expected.items() if n != CREATED_TIMESTAMP}
    first = rows[0]
    if not isinstance(first, Mapping):
        raise SchemaError(f"signal {signal.name}: row 0 is a {type(first).__name__}, not a dict of column -> value")
    names = list(first)
    _check_names(signal, names, "row 0")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise SchemaError(f"signal {signal.name}: row {i} is a {type(row).__name__}, not a dict")
        if row.keys() != first.keys():
            _check_names(signal, list(row), f"row {i}")
            raise SchemaError(f"signal {signal.name}: row {i} has columns {sorted(row)}, row 0 has {sorted(first)}")
    columns = {}
    for name in names:
        values = [row[name] for row in rows]
        if pa.types.is_timestamp(expected[name]):         # ISO strings and datetimes by the one time rule
            values = parse_times(values, f"signal {signal.name}: column {name!r}")
        try:                  # inferred first: pyarrow would truncate 1.5 given int64 as the type
            column = pa.array(values)
        except _CAST_ERRORS:
            column = None
        if column is None or _has_null_type(column.type):     # all None, empty lists: the type decides
            try:
                column = pa.array(values, type=expected[name])
            except _CAST_ERRORS as exc:
                raise SchemaError(f"signal {signal.name}: column {name!r} has values that do not read as "
                                  f"{expected[name]}: {exc}") from exc
        columns[name] = column
    return columns


def _has_null_type(t: pa.DataType) -> bool:
    if pa.types.is_null(t):
        return True
    if pa.types.is_struct(t):
        return any(_has_null_type(f.type) for f in t)
    value_type = getattr(t, "value_type", None)
    return value_type is not None and _has_null_type(value_type)


def _convert(signal: Signal, name: str, arrow_type: pa.DataType, column: Any) -> Any:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_timestamp(arrow_type) and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = utc_column(column, f"signal {signal.name}: column {name!r}")
    if name in signal.schema.names:
        return coerce_feature(name, column, signal.schema.type_of(name))
    where = f"signal {signal.name}: column {name!r}"
    if name == signal.entity.join_key:
        integer = signal.entity.join_key_type == "int64"
        ok = (pa.types.is_integer(column.type) if integer
              else pa.types.is_string(column.type) or pa.types.is_large_string(column.type))
        if not ok:
            raise SchemaError(f"{where} has Arrow type {column.type}, but {signal.entity.name} keys are "
                              f"{signal.entity.join_key_type}")
    elif not pa.types.is_timestamp(column.type):
        raise SchemaError(f"{where} has Arrow type {column.type}; give timezone-aware (or naive UTC) timestamps")
    try:
        converted = column.cast(arrow_type, safe=True)
    except _CAST_ERRORS as exc:
        raise SchemaError(f"{where} of Arrow type {column.type} cannot be read as {arrow_type}: {exc}") from exc
    if name != CREATED_TIMESTAMP and converted.null_count:
        raise SchemaError(f"{where} has {converted.null_count} null value(s); every row needs one")
    return converted
