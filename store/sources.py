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
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from quasar.signals.errors import NotFoundError, StoreError
from quasar.signals.signal import Signal
from quasar.signals.source import Source
from quasar.signals.source_schema import ARROW_OF, RecordedSchema, SourceSchema
from quasar.signals.ufr.types import TIMESTAMP_ARROW
from quasar.store.source_checks import (
    Layout,
    Reference,
    check_columns,
    check_null_timestamps,
    list_files,
    null_timestamps,
)
from quasar.store.tables import OfflineStore, as_utc, time_filter

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


class SchemaBook(Protocol):
    """Where the schema of a source that declares none is recorded at its first read (``registry.Registry``)."""

    def source_schema(self, source: Source) -> RecordedSchema | None: ...

    def record_source_schema(self, source: Source, schema: SourceSchema, *, origin: str) -> RecordedSchema: ...


class SourceReader:
    """Reads the rows of a source for a window. ``root`` resolves relative Parquet paths; ``upstream_versions``
    maps an upstream signal's name to the (signal, version) whose table a ``Source.signal`` reads; ``schemas``
    records the schema of a source that declares none at its first read and holds later reads to it
    (``quasar.store.source_checks``). ``last_read`` says what the latest read found (files, dropped rows), for the
    run log."""

    def __init__(self, *, root: Path, store: OfflineStore, catalog: Any,
                 upstream_versions: Mapping[str, tuple[Signal, int]] | None = None,
                 schemas: SchemaBook | None = None) -> None:
        self.root = Path(root)
        self.store = store
        self.catalog = catalog
        self.upstream_versions = dict(upstream_versions or {})
        self.schemas = schemas
        self.last_read: dict[str, Any] = {}

    def read(self, source: Source, start: datetime, end: datetime, columns: Sequence[str] | None = None) -> pa.Table:
        """Rows of ``source`` with ``start <= timestamp < end`` (only ``columns`` and the timestamp, if given)."""
        start, end = as_utc(start, "start"), as_utc(end, "end")
        wanted = None if columns is None else list(dict.fromkeys([*columns, source.timestamp]))
        self.last_read = {}
        if source.kind == "parquet":
            table = self._read_parquet(source, start, end, wanted)
        elif source.kind == "iceberg":
            table = self._read_iceberg(source, start, end, wanted)
        elif source.kind == "signal":
            table = self._read_signal(source, start, end, wanted)
        else:  # pragma: no cover - Source validates its kind
            raise StoreError(f"source {source.name}: unknown kind {source.kind!r}")
        return normalize_timestamps(table, source.timestamp)

    # --- schema -------------------------------------------------------------------------------------------
    def _schema(self, source: Source, schemas: Sequence[tuple[str, pa.Schema]]) -> SourceSchema:
        """The schema to read ``source`` with: declared, else recorded, else agreed by the files and recorded."""
        ref = Reference.declared(source)
        if ref is None and self.schemas is not None:
            recorded = self.schemas.source_schema(source)
            ref = Reference(recorded.schema, recorded) if recorded is not None else None
        schema = check_columns(source, schemas, ref)
        if ref is None and self.schemas is not None:
            origin = ", ".join(where for where, s in schemas if SourceSchema.of(s) == schema)
            recorded = self.schemas.record_source_schema(source, schema, origin=_shorten(origin))
            if recorded.schema != schema:                   # a concurrent first read recorded another schema
                schema = check_columns(source, schemas, Reference(recorded.schema, recorded))
        return schema

    def _show(self, path: Path) -> str:
        """``path`` relative to the project root when it lies under it (what error messages name)."""
        try:
            return str(path.resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)

    # --- parquet ------------------------------------------------------------------------------------------
    def _read_parquet(self, source: Source, start: datetime, end: datetime,
                      columns: list[str] | None) -> pa.Table:
        assert source.path is not None
        path = Path(source.path).expanduser()
        if not path.is_absolute():
            path = self.root / path
        if not path.exists():
            raise StoreError(f"source {source.name}: Parquet path {path} does not exist")
        layout = list_files(source, path, self._show)
        try:
            found = ds.dataset([str(f) for f in layout.files], format="parquet",
                               partitioning=_partitioning(source, layout),
                               partition_base_dir=str(path) if layout.partition_keys else None)
        except (pa.ArrowInvalid, OSError) as exc:
            self._name_unreadable(source, layout.files)
            raise StoreError(f"source {source.name}: cannot open the Parquet files at {self._show(path)}: "
                             f"{_first_line(exc)}") from exc
        keys = [found.schema.field(k) for k in layout.partition_keys if k in found.schema.names]
        fragments, schemas = [], []
        for fragment in found.get_fragments():
            where = f"file {self._show(Path(fragment.path))}"
            try:
                physical = fragment.physical_schema
            except (pa.ArrowInvalid, OSError) as exc:
                raise StoreError(f"source {source.name}: {where} cannot be read as Parquet: {_first_line(exc)}; "
                                 "delete or rewrite it") from exc
            fragments.append(fragment)
            schemas.append((where, pa.schema([*(f for f in physical if f.name not in layout.partition_keys), *keys])))
        schema = self._schema(source, schemas)
        self._check_columns(source, schema.names, columns)
        counts = [(where, null_timestamps(frag, source.timestamp)) for frag, (where, _) in zip(fragments, schemas,
                                                                                               strict=True)]
        dropped = check_null_timestamps(source, counts)
        self.last_read = {"source_files": len(fragments),
                          **({"source_null_timestamps_dropped": dropped} if source.null_timestamps == "drop" else {})}
        names = columns if columns is not None else schema.names
        try:
            return _read_groups(found, fragments, [s for _, s in schemas], names, source.timestamp, start, end)
        except (pa.ArrowInvalid, OSError) as exc:
            raise StoreError(f"source {source.name}: reading the Parquet files at {self._show(path)} failed: "
                             f"{_first_line(exc)}") from exc

    def _name_unreadable(self, source: Source, files: Sequence[Path]) -> None:
        """Raise the error naming the first file that is not Parquet (opening the dataset read the first one)."""
        for file in files:
            try:
                pq.read_schema(file)
            except (pa.ArrowInvalid, OSError) as exc:
                raise StoreError(f"source {source.name}: file {self._show(file)} cannot be read as Parquet: "
                                 f"{_first_line(exc)}; delete or rewrite it") from exc

    # --- iceberg ------------------------------------------------------------------------------------------
    def iceberg_scan(self, source: Source, start: datetime, end: datetime,
                     columns: list[str] | None) -> tuple[Any, Any, list[str], dict[str, int]]:
        """The Iceberg table of ``source``, checked as a read checks it (table, timestamp column, schema,
        columns, null timestamps), its scan of [start, end) over the wanted columns, those columns, and the
        read's record (null timestamps dropped). Planning the scan reads nothing but the null count."""
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
        from pyiceberg.expressions import IsNull
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
        ts_type = schema.find_field(source.timestamp).field_type
        if not isinstance(ts_type, TimestamptzType | TimestampType):
            raise StoreError(f"source {source.name}: timestamp column {source.timestamp!r} of {source.table} "
                             f"has type {ts_type}; it must be a timestamp")
        read_schema = self._schema(source, [(f"Iceberg table {source.table}", schema.as_arrow())])
        self._check_columns(source, read_schema.names, columns)
        wanted = list(columns if columns is not None else read_schema.names)
        is_null = IsNull(source.timestamp)  # type: ignore[call-arg, arg-type]
        nulls = table.scan(row_filter=is_null, selected_fields=(source.timestamp,)).to_arrow()
        dropped = check_null_timestamps(source, [(f"Iceberg table {source.table}", nulls.num_rows)])
        record = {"source_null_timestamps_dropped": dropped} if source.null_timestamps == "drop" else {}
        row_filter = time_filter(source.timestamp, start, end, naive=isinstance(ts_type, TimestampType))
        return table, table.scan(row_filter=row_filter, selected_fields=tuple(wanted)), wanted, record

    def _read_iceberg(self, source: Source, start: datetime, end: datetime,
                      columns: list[str] | None) -> pa.Table:
        try:
            _, scan, wanted, self.last_read = self.iceberg_scan(source, start, end, columns)
            result = scan.to_arrow()
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"source {source.name}: reading Iceberg table {source.table} failed: {exc}") from exc
        return result.select(wanted)

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
    def _check_columns(source: Source, names: Sequence[str], columns: Sequence[str] | None) -> None:
        missing = [c for c in (columns or ()) if c not in names]
        if missing:
            raise StoreError(f"source {source.name}: column(s) {missing} not found in the source's columns "
                             f"({', '.join(names)}); add them to the files (and to the source's schema=, if "
                             "it declares one)")


def _partitioning(source: Source, layout: Layout) -> ds.Partitioning | str | None:
    """Hive partitioning for a ``partitioning="hive"`` folder, with the declared types of its keys (a key not
    declared is a string); pyarrow infers the types when the source declares no schema."""
    if not layout.partition_keys:
        return None
    if source.schema is None:
        return "hive"
    fields = []
    for key in layout.partition_keys:
        declared = source.schema.get(key)
        arrow = ARROW_OF.get(declared or "string")
        if arrow is None:
            raise StoreError(f"source {source.name}: partition key {key!r} is declared {declared}, which a folder "
                             f"name cannot hold; declare it as one of {', '.join(ARROW_OF)}")
        fields.append(pa.field(key, arrow))
    return ds.partitioning(pa.schema(fields), flavor="hive")


def _read_groups(found: ds.FileSystemDataset, fragments: list[ds.Fragment], schemas: list[pa.Schema],
                 names: Sequence[str], ts: str, start: datetime, end: datetime) -> pa.Table:
    """``names`` of the rows in ``[start, end)``: files with one physical schema are scanned together (the
    window pushed down in their own timestamp type), and the groups' tables concatenated in the first one's
    types (the schema check made sure they are the same logical types)."""
    groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for i, schema in enumerate(schemas):
        groups.setdefault(tuple((n, str(schema.field(n).type)) for n in names), []).append(i)
    tables = []
    for members in groups.values():
        schema = pa.schema([schemas[members[0]].field(n) for n in names])
        group = ds.FileSystemDataset([fragments[i] for i in members], schema=schema, format=found.format,
                                     filesystem=found.filesystem)
        ts_type = schema.field(ts).type
        flt = (ds.field(ts) >= bound_scalar(start, ts_type)) & (ds.field(ts) < bound_scalar(end, ts_type))
        tables.append(normalize_timestamps(group.to_table(filter=flt), ts))
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables([tables[0], *(t.cast(tables[0].schema) for t in tables[1:])])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit - 12] + " and others"
