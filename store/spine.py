"""Spines: the rows a training dataset is built for (join keys, ``event_timestamp``, labels), made Arrow.

A spine may be a pyarrow Table or RecordBatch, a RecordBatchReader (read chunk by chunk, so it may be
larger than memory) or a pandas DataFrame. ``event_timestamp`` becomes ``timestamp[us, UTC]``:

* timestamps of any unit: zone-aware values keep their instant, naive values are taken as UTC; nanoseconds
  are floored to the microsecond (exact for ``<=`` against microsecond event times);
* dates: midnight UTC;
* strings: parsed as ISO 8601 (``2026-01-05``, ``2026-01-05T10:00:00+02:00``; naive -> UTC);
* anything else, or a null time: a ``DatasetError``.

Join key columns must have the entity's key type: any integer type for ``int64`` keys, any string type for
``string`` keys (both are cast); other types (a float column from pandas, say) are a ``DatasetError``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quasar.signals.errors import DatasetError
from quasar.signals.times import micros as to_micros
from quasar.signals.times import parse_time
from quasar.signals.ufr.schema import EVENT_TIMESTAMP
from quasar.signals.ufr.types import TIMESTAMP_ARROW

#: join key column -> (Arrow key type, the entity it belongs to) for the entities a request needs.
JoinKeys = Mapping[str, tuple[pa.DataType, str]]


def as_arrow(spine: Any) -> pa.Table | pa.RecordBatchReader:
    """A spine as a pyarrow Table (tables, batches, DataFrames) or a RecordBatchReader (left unread)."""
    if isinstance(spine, pa.Table | pa.RecordBatchReader):
        return spine
    if isinstance(spine, pa.RecordBatch):
        return pa.Table.from_batches([spine])
    if _is_pandas(spine):
        try:
            return pa.Table.from_pandas(_pandas_frame(spine), preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DatasetError(f"cannot convert the spine DataFrame to Arrow: {exc}") from exc
    raise DatasetError(f"a spine must be a pyarrow Table, RecordBatch or RecordBatchReader, or a pandas "
                       f"DataFrame; got {type(spine).__name__}")


def spine_chunks(spine: pa.Table | pa.RecordBatchReader, chunk_rows: int) -> Iterator[pa.Table]:
    """The spine as Arrow tables of at most ``chunk_rows`` rows, in order (at least one, maybe empty)."""
    if chunk_rows < 1:
        raise DatasetError(f"chunk_rows must be at least 1, got {chunk_rows}")
    if isinstance(spine, pa.RecordBatchReader):
        yield from _reader_chunks(spine, chunk_rows)
        return
    if spine.num_rows == 0:
        yield spine
    for start in range(0, spine.num_rows, chunk_rows):
        yield spine.slice(start, chunk_rows)


def _reader_chunks(reader: pa.RecordBatchReader, chunk_rows: int) -> Iterator[pa.Table]:
    pending: list[pa.RecordBatch] = []
    size = 0
    emitted = False
    for batch in reader:
        while batch.num_rows:
            take = min(batch.num_rows, chunk_rows - size)
            pending.append(batch.slice(0, take))
            size += take
            batch = batch.slice(take)
            if size == chunk_rows:
                yield pa.Table.from_batches(pending, reader.schema)
                emitted = True
                pending, size = [], 0
    if pending or not emitted:
        yield pa.Table.from_batches(pending, reader.schema)


def check_spine_schema(schema: pa.Schema, join_keys: JoinKeys) -> None:
    """Fail early, before any row is read, when a needed column is missing or of the wrong kind."""
    if EVENT_TIMESTAMP not in schema.names:
        raise DatasetError(f"the spine has no {EVENT_TIMESTAMP!r} column; it needs the time of every row "
                           f"(spine columns: {', '.join(schema.names) or 'none'})")
    if schema.names.count(EVENT_TIMESTAMP) > 1:
        raise DatasetError(f"the spine has more than one {EVENT_TIMESTAMP!r} column")
    _time_kind(schema.field(EVENT_TIMESTAMP).type)
    for key, (key_type, entity) in join_keys.items():
        if key not in schema.names:
            raise DatasetError(f"the spine has no join key column {key!r} (entity {entity!r}); "
                               f"spine columns: {', '.join(schema.names)}")
        _key_target(key, schema.field(key).type, key_type, entity)


def normalize_spine(table: pa.Table, join_keys: JoinKeys) -> pa.Table:
    """``table`` with ``event_timestamp`` as ``timestamp[us, UTC]``; every other column unchanged."""
    check_spine_schema(table.schema, join_keys)
    index = table.schema.get_field_index(EVENT_TIMESTAMP)
    original = table.schema.field(index)
    times = to_utc_micros(table.column(index))
    if original.type == TIMESTAMP_ARROW:
        return table
    return table.set_column(index, original.with_type(TIMESTAMP_ARROW), times)


def join_columns(table: pa.Table, join_keys: JoinKeys) -> pa.Table:
    """The engine's input: the join keys cast to the entities' key types, and ``event_timestamp``."""
    cols: dict[str, Any] = {}
    for key, (key_type, entity) in join_keys.items():
        column = table.column(key)
        target = _key_target(key, column.type, key_type, entity)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if column.type != target:
            try:
                column = column.cast(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DatasetError(f"spine join key {key!r} does not fit entity {entity!r}'s "
                                   f"{key_type} keys: {exc}") from exc
        cols[key] = column
    cols[EVENT_TIMESTAMP] = table.column(EVENT_TIMESTAMP)
    return pa.table(cols)


def to_utc_micros(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A spine time column as ``timestamp[us, UTC]`` (see the module docstring); nulls are an error."""
    kind = _time_kind(column.type)
    if column.null_count:
        raise DatasetError(f"spine column {EVENT_TIMESTAMP!r} has {column.null_count} null value(s); "
                           "every spine row needs a time")
    if kind == "string":
        return _parse_strings(column)
    if kind == "date":
        column = column.cast(pa.timestamp("s"))
    unit = column.type.unit
    if unit == "ns":
        nanos = column.cast(pa.int64()).to_numpy()
        micros = pa.array(np.floor_divide(nanos, 1000), pa.int64())
        return pa.chunked_array([micros.view(TIMESTAMP_ARROW)])
    if column.type == TIMESTAMP_ARROW:
        return column
    # a zone only labels the values (they are UTC instants already); s/ms -> us is exact
    return column.cast(pa.int64()).cast(pa.timestamp(unit)).cast(pa.timestamp("us")).cast(TIMESTAMP_ARROW)


def _time_kind(dtype: pa.DataType) -> str:
    if pa.types.is_timestamp(dtype):
        return "timestamp"
    if pa.types.is_date(dtype):
        return "date"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return "string"
    raise DatasetError(f"spine column {EVENT_TIMESTAMP!r} must hold timestamps (zone-aware, or naive = UTC), "
                       f"dates or ISO 8601 strings; got {dtype}")


def _parse_strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """ISO 8601 strings -> UTC instants, each distinct string parsed once (naive means UTC)."""
    distinct = pc.unique(column)
    micros = []
    for text in distinct.to_pylist():
        micros.append(to_micros(parse_time(text, f"spine column {EVENT_TIMESTAMP!r}", DatasetError)))
    index = pc.index_in(column, value_set=distinct)
    return pa.chunked_array([pa.array(micros, pa.int64()).take(index.combine_chunks()).view(TIMESTAMP_ARROW)])


def _key_target(key: str, dtype: pa.DataType, key_type: pa.DataType, entity: str) -> pa.DataType:
    value_type = dtype.value_type if pa.types.is_dictionary(dtype) else dtype
    if pa.types.is_integer(key_type) and pa.types.is_integer(value_type):
        return key_type
    if pa.types.is_string(key_type) and (pa.types.is_string(value_type) or pa.types.is_large_string(value_type)
                                         or pa.types.is_string_view(value_type)):
        return key_type
    hint = (" (pandas turns an integer column with missing values into floats: use the 'Int64' dtype)"
            if pa.types.is_floating(value_type) and pa.types.is_integer(key_type) else "")
    raise DatasetError(f"spine join key {key!r} is {dtype} but entity {entity!r} has {key_type} keys{hint}")


def _is_pandas(obj: Any) -> bool:
    module = type(obj).__module__
    return module.startswith("pandas") and type(obj).__name__ == "DataFrame"


def _pandas_frame(frame: Any) -> Any:
    """A named index (``set_index("user_id")``) becomes columns; a plain positional index is dropped."""
    if any(name is not None for name in frame.index.names):
        return frame.reset_index()
    return frame


def time_range(times: pa.ChunkedArray) -> tuple[Any, Any]:
    """(min, max) of a normalised time column as datetimes, (None, None) when empty."""
    bounds = pc.min_max(times)
    return bounds["min"].as_py(), bounds["max"].as_py()
