"""Check a transform's output before it is stored: keys, timestamps and features, in their UFR types.

Only exact conversions are made (int32 -> int64, float32 -> float64, naive timestamps -> UTC, a list of
the right length -> a fixed-size vector); anything that could change a value (float64 -> float32,
float -> int) is an error that names the signal, the column and what is wrong. Event and created times must also
lie inside the time bounds (``quasar.signals.bounds``): a window may reach into the future or lie before 1970, but no
row may, or it would win newer-wins for ever.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from quasar.signals.bounds import DEFAULT_BOUNDS, TimeBounds, first_outside
from quasar.signals.errors import BackfillError
from quasar.signals.ordering import stamp_created
from quasar.signals.signal import Signal
from quasar.signals.times import micros
from quasar.signals.ufr.schema import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from quasar.signals.ufr.types import TIMESTAMP_ARROW
from quasar.store.tables import as_utc

_INT_BITS = {pa.int8(): 8, pa.int16(): 16, pa.int32(): 32, pa.int64(): 64,
             pa.uint8(): 8, pa.uint16(): 16, pa.uint32(): 32, pa.uint64(): 64}


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def exact_cast_ok(src: pa.DataType, dst: pa.DataType) -> bool:
    """True when every value of type ``src`` converts to ``dst`` without change (overflow is checked later)."""
    if pa.types.is_null(src) or src == dst:
        return True
    if pa.types.is_boolean(dst):
        return pa.types.is_boolean(src)
    if pa.types.is_int64(dst):
        return pa.types.is_integer(src)
    if pa.types.is_float32(dst):
        return pa.types.is_float16(src) or (pa.types.is_integer(src) and _INT_BITS[src] <= 16)
    if pa.types.is_float64(dst):
        return (pa.types.is_float16(src) or pa.types.is_float32(src)
                or (pa.types.is_integer(src) and _INT_BITS[src] <= 32))
    if pa.types.is_float16(dst):
        return pa.types.is_float16(src)
    if _is_string(dst):
        return _is_string(src)
    if pa.types.is_timestamp(dst):
        return pa.types.is_timestamp(src)
    if _is_list(dst):
        return _is_list(src) and exact_cast_ok(src.value_type, dst.value_type)
    if pa.types.is_struct(dst):
        if not pa.types.is_struct(src) or [f.name for f in src] != [f.name for f in dst]:
            return False
        return all(exact_cast_ok(s.type, d.type) for s, d in zip(src, dst, strict=True))
    return False


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(column.type):
        return pa.chunked_array([c.dictionary_decode() for c in column.chunks], type=column.type.value_type)
    return column


def _null_elements(values: pa.Array | pa.ChunkedArray) -> int:
    """Null list elements, or null fields inside struct elements (UFR lists never hold nulls)."""
    if pa.types.is_struct(values.type):
        chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
        return sum(c.null_count + sum(c.field(i).null_count for i in range(c.type.num_fields)) for c in chunks)
    return values.null_count


def _first(mask: pa.ChunkedArray | pa.Array) -> int:
    """Index of the first true value of a boolean mask (nulls as false)."""
    return int(pc.index(pc.fill_null(mask, False), True).as_py())


class _Checker:
    """Checks one output table against one signal; every error names the signal and the column."""

    def __init__(self, rows: pa.Table, signal: Signal) -> None:
        self.rows = rows
        self.signal = signal

    def fail(self, column: str, problem: str) -> BackfillError:
        return BackfillError(f"signal {self.signal.name}: output column {column!r} {problem}")

    def column(self, name: str) -> pa.ChunkedArray:
        if name not in self.rows.column_names:
            raise self.fail(name, f"is missing (the transform returned {', '.join(self.rows.column_names)})")
        return _decoded(self.rows.column(name))

    def cast(self, name: str, column: pa.ChunkedArray, target: pa.DataType, what: str) -> pa.ChunkedArray:
        if not exact_cast_ok(column.type, target):
            raise self.fail(name, f"has type {column.type}, which does not convert exactly to {what} ({target})")
        if _is_list(target):
            self._check_list(name, column, target)
        if column.type == target and str(column.type) == str(target):
            return column
        try:
            return column.cast(target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise self.fail(name, f"does not convert exactly to {what} ({target}): {exc}") from exc

    def _check_list(self, name: str, column: pa.ChunkedArray, target: pa.DataType) -> None:
        if pa.types.is_null(column.type):
            return
        if _null_elements(pc.list_flatten(column)):
            raise self.fail(name, "holds null elements inside its lists; a missing value must be a null list")
        if pa.types.is_fixed_size_list(target):
            lengths = pc.list_value_length(column)
            bad = pc.not_equal(lengths, target.list_size)
            if pc.any(bad).as_py():
                row = _first(bad)
                raise self.fail(name, f"must hold vectors of {target.list_size} values; row {row} has "
                                      f"{lengths[row].as_py()}")

    def timestamps(self, name: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
        if not pa.types.is_timestamp(column.type) and not pa.types.is_null(column.type):
            raise self.fail(name, f"has type {column.type}; it must be a timestamp")
        if pa.types.is_timestamp(column.type) and column.type.tz is None:
            column = column.cast(pa.timestamp(column.type.unit, tz="UTC"))   # naive values are UTC
        return self.cast(name, column, TIMESTAMP_ARROW, "timestamp[us, UTC]")

    def bounded(self, name: str, column: pa.ChunkedArray, keys: pa.ChunkedArray, now_us: int,
                bounds: TimeBounds) -> None:
        found = first_outside(column, now_us=now_us, bounds=bounds, created=name == CREATED_TIMESTAMP)
        if found is not None:
            count, row, why = found
            key = f"{self.signal.entity.join_key} {keys[row].as_py()!r}"
            raise self.fail(name, f"row {row} ({key}): {why}; {count} row(s) outside the time bounds: fix the "
                                  "transform or its source, or widen [time] earliest or max_future in quasar.toml")


def check_output(rows: Any, signal: Signal, start: datetime, end: datetime, *,
                 created: datetime | None = None, bounds: TimeBounds = DEFAULT_BOUNDS,
                 now: datetime | None = None) -> pa.Table:
    """Validate a transform's output and return it in UFR types and storage column order.

    Join key and ``event_timestamp`` must be present, non-null and of an exactly convertible type, every
    event time inside ``[start, end)``; every declared feature present and exactly convertible to its UFR
    type. Extra columns are dropped. ``created_timestamp``: a column the transform returns is kept as it is, its
    nulls included (a null created time is the oldest, ``quasar.signals.ordering``); without one, every row gets
    ``created`` (default now), the run time. Event and created times outside ``bounds`` as of ``now`` (default:
    the clock) are a BackfillError naming the column, the first such row, its value and the bound.
    """
    table = as_table(rows, signal)
    start, end = as_utc(start, "start"), as_utc(end, "end")
    dupes = sorted(n for n, c in Counter(table.column_names).items() if c > 1)
    if dupes:
        raise BackfillError(f"signal {signal.name}: output has duplicate column(s) {dupes}")
    check = _Checker(table, signal)
    key = signal.entity.join_key
    key_col = check.cast(key, check.column(key), signal.entity.arrow_key_type, "the join key type")
    if key_col.null_count:
        raise check.fail(key, f"has {key_col.null_count} null join key(s)")

    ts = check.timestamps(EVENT_TIMESTAMP, check.column(EVENT_TIMESTAMP))
    if ts.null_count:
        raise check.fail(EVENT_TIMESTAMP, f"has {ts.null_count} null value(s)")
    if len(ts):
        outside = pc.or_(pc.less(ts, pa.scalar(start, TIMESTAMP_ARROW)),
                         pc.greater_equal(ts, pa.scalar(end, TIMESTAMP_ARROW)))
        count = pc.sum(outside).as_py() or 0
        if count:
            row = _first(outside)
            raise check.fail(EVENT_TIMESTAMP, f"has {count} row(s) outside the backfill window "
                                              f"[{start.isoformat()}, {end.isoformat()}), e.g. row {row} at "
                                              f"{ts[row].as_py().isoformat()}")

    now_us = micros(now or datetime.now(UTC))
    check.bounded(EVENT_TIMESTAMP, ts, key_col, now_us, bounds)
    if CREATED_TIMESTAMP not in table.column_names:  # the run time; one given is kept, nulls too (quasar.signals.ordering)
        table = stamp_created(table, micros(created) if created else now_us)
        check.rows = table
    made = check.timestamps(CREATED_TIMESTAMP, check.column(CREATED_TIMESTAMP))
    check.bounded(CREATED_TIMESTAMP, made, key_col, now_us, bounds)

    features = [check.cast(name, check.column(name), ftype.arrow_type(), f"feature type {ftype}")
                for name, ftype in signal.schema]
    schema = signal.schema.table_schema({key: signal.entity.arrow_key_type})
    return pa.Table.from_arrays([key_col, ts, made, *features], schema=schema)


def as_table(rows: Any, signal: Signal) -> pa.Table:
    """A transform's output as a table: a pyarrow Table, RecordBatch or pandas DataFrame (both engines, every call)."""
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    module = type(rows).__module__ or ""
    if module.startswith("pandas") and type(rows).__name__ == "DataFrame":
        try:
            return pa.Table.from_pandas(rows, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise BackfillError(f"signal {signal.name}: its output DataFrame does not convert to Arrow: {exc}") from exc
    raise BackfillError(f"signal {signal.name}: its transform returned {type(rows).__name__}, not a pyarrow Table")
