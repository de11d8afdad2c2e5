"""Read a source's rows for a time window: Parquet files, an Iceberg table, or another signal's table.

The window ``[start, end)`` is pushed down to the reader (a pyarrow dataset filter or an Iceberg row
filter), so only the files and row groups that can hold it are read. The timestamp column comes back
as ``timestamp[us, UTC]`` whatever it was stored as (naive values are taken as UTC).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from signals.errors import NotFoundError, StoreError
from signals.signal import Signal
from signals.source import Source
from signals.ufr.types import TIMESTAMP_ARROW
from store.tables import OfflineStore, as_utc, time_filter

_MICROS_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1}


def _epoch_micros(value: datetime) -> int:
    delta = as_utc(value) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def bound_scalar(value: datetime, ts_type: pa.DataType) -> pa.Scalar:
    """``value`` in the column's own timestamp type, rounded up, so ``ts >= bound`` and ``ts < bound`` stay
    exact on columns coarser than microseconds."""
    micros = _epoch_micros(value)
    unit = ts_type.unit
    raw = micros * 1_000 if unit == "ns" else math.ceil(micros / _MICROS_PER_UNIT[unit])
    return pa.scalar(raw, pa.int64()).cast(ts_type)


def normalize_timestamps(table: pa.Table, column: str) -> pa.Table:
    """``column`` as ``timestamp[us, UTC]``: naive values are UTC; nanoseconds are truncated to microseconds."""
    col = table.column(column)
    if col.type == TIMESTAMP_ARROW:
        return table
    idx = table.schema.get_field_index(column)
    return table.set_column(idx, pa.field(column, TIMESTAMP_ARROW, nullable=table.schema.field(column).nullable),
                            col.cast(TIMESTAMP_ARROW, safe=False))


class SourceReader:
    """Reads the rows of a source for a window. ``root`` resolves relative Parquet paths; ``upstream_versions``
    maps an upstream signal's name to the (signal, version) whose table a ``Source.signal`` reads."""

    def __init__(self, *, root: Path, store: OfflineStore, catalog: Any,
                 upstream_versions: Mapping[str, tuple[Signal, int]] | None = None) -> None:
        self.root = Path(root)
        self.store = store
        self.catalog = catalog
        self.upstream_versions = dict(upstream_versions or {})

    def read(self, source: Source, start: datetime, end: datetime, columns: Sequence[str] | None = None) -> pa.Table:
        """Rows of ``source`` with ``start <= timestamp < end`` (only ``columns`` and the timestamp, if given)."""
        start, end = as_utc(start, "start"), as_utc(end, "end")
        wanted = None if columns is None else list(dict.fromkeys([*columns, source.timestamp]))
        if source.kind == "parquet":
            table = self._read_parquet(source, start, end, wanted)
        elif source.kind == "iceberg":
            table = self._read_iceberg(source, start, end, wanted)
        elif source.kind == "signal":
            table = self._read_signal(source, start, end, wanted)
        else:  # pragma: no cover - Source validates its kind
            raise StoreError(f"source {source.name}: unknown kind {source.kind!r}")
        return normalize_timestamps(table, source.timestamp)

    # --- parquet ------------------------------------------------------------------------------------------
    def _read_parquet(self, source: Source, start: datetime, end: datetime,
                      columns: list[str] | None) -> pa.Table:
        assert source.path is not None
        path = Path(source.path).expanduser()
        if not path.is_absolute():
            path = self.root / path
        if not path.exists():
            raise StoreError(f"source {source.name}: Parquet path {path} does not exist")
        try:
            dataset = ds.dataset(str(path), format="parquet", partitioning="hive" if path.is_dir() else None)
        except (pa.ArrowInvalid, OSError) as exc:
            raise StoreError(f"source {source.name}: cannot open the Parquet files at {path}: {exc}") from exc
        ts_type = self._timestamp_type(source, dataset.schema)
        self._check_columns(source, dataset.schema.names, columns)
        ts = ds.field(source.timestamp)
        flt = (ts >= bound_scalar(start, ts_type)) & (ts < bound_scalar(end, ts_type))
        try:
            return dataset.to_table(columns=columns, filter=flt)
        except (pa.ArrowInvalid, OSError) as exc:
            raise StoreError(f"source {source.name}: reading the Parquet files at {path} failed: {exc}") from exc

    # --- iceberg ------------------------------------------------------------------------------------------
    def _read_iceberg(self, source: Source, start: datetime, end: datetime,
                      columns: list[str] | None) -> pa.Table:
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
        from pyiceberg.types import TimestampType, TimestamptzType

        assert source.table is not None
        try:
            table = self.catalog.load_table(source.table)
        except (NoSuchTableError, NoSuchNamespaceError) as exc:
            raise StoreError(f"source {source.name}: Iceberg table {source.table} does not exist") from exc
        except Exception as exc:
            raise StoreError(f"source {source.name}: cannot load Iceberg table {source.table}: {exc}") from exc
        schema = table.schema()
        names = [f.name for f in schema.fields]
        if source.timestamp not in names:
            raise StoreError(f"source {source.name}: timestamp column {source.timestamp!r} is not in Iceberg "
                             f"table {source.table} (columns: {', '.join(names)})")
        self._check_columns(source, names, columns)
        ts_type = schema.find_field(source.timestamp).field_type
        if not isinstance(ts_type, TimestamptzType | TimestampType):
            raise StoreError(f"source {source.name}: timestamp column {source.timestamp!r} of {source.table} "
                             f"has type {ts_type}; it must be a timestamp")
        row_filter = time_filter(source.timestamp, start, end, naive=isinstance(ts_type, TimestampType))
        try:
            result = table.scan(row_filter=row_filter,
                                selected_fields=tuple(columns) if columns else ("*",)).to_arrow()
        except Exception as exc:
            raise StoreError(f"source {source.name}: reading Iceberg table {source.table} failed: {exc}") from exc
        return result.select(columns) if columns else result

    # --- another signal ---------------------------------------------------------------------------------
    def _read_signal(self, source: Source, start: datetime, end: datetime,
                     columns: list[str] | None) -> pa.Table:
        assert source.upstream is not None
        if source.upstream not in self.upstream_versions:
            raise StoreError(f"source {source.name}: no version of upstream signal {source.upstream} was given "
                             "to read (is it registered?)")
        upstream, version = self.upstream_versions[source.upstream]
        try:
            return self.store.read(upstream, version, start=start, end=end, columns=columns)
        except NotFoundError as exc:
            raise StoreError(f"source {source.name}: {exc}") from exc
        except StoreError as exc:
            raise StoreError(f"source {source.name}: {exc}") from exc

    # --- checks -------------------------------------------------------------------------------------------
    @staticmethod
    def _timestamp_type(source: Source, schema: pa.Schema) -> pa.DataType:
        if source.timestamp not in schema.names:
            raise StoreError(f"source {source.name}: timestamp column {source.timestamp!r} is not in its files "
                             f"(columns: {', '.join(schema.names)})")
        ts_type = schema.field(source.timestamp).type
        if not pa.types.is_timestamp(ts_type):
            raise StoreError(f"source {source.name}: timestamp column {source.timestamp!r} has type {ts_type}; "
                             "it must be a timestamp")
        return ts_type

    @staticmethod
    def _check_columns(source: Source, names: Sequence[str], columns: Sequence[str] | None) -> None:
        missing = [c for c in (columns or ()) if c not in names]
        if missing:
            raise StoreError(f"source {source.name}: column(s) {missing} not found "
                             f"(columns: {', '.join(names)})")
