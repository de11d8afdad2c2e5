"""A backfill's source planned on the driver and read by Spark executors, with the local reader's exact rows.

``plan_source`` does on the driver everything ``quasar.store.sources.SourceReader.read`` does before it reads
rows: the file listing, the schema checks (and the first read's recorded schema), the null-event-time check,
pyiceberg's scan planning. What it returns is a list of picklable read units (one Parquet file, one Iceberg
``FileScanTask``) in the order the local reader concatenates them, and ``read_part`` reads one of them on an
executor with the same filter, the same types and the same row order, so the union of the parts, in part
order, is row for row the table ``SourceReader.read`` returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from quasar.signals.errors import NotFoundError, StoreError
from quasar.signals.source import Source
from quasar.store.arrow_types import restore_ufr_types
from quasar.store.source_checks import check_null_timestamps, list_files, null_timestamps
from quasar.store.sources import SourceReader, _partitioning, bound_scalar, normalize_timestamps
from quasar.store.tables import as_utc


@dataclass
class SourcePlan:
    """The read units of one window of a source, in source order, and the schema every unit is read in."""

    source: Source
    start: datetime
    end: datetime
    schema: pa.Schema
    parts: list[Any]
    last_read: dict[str, Any] = field(default_factory=dict)
    parquet: dict[str, Any] | None = None          # how to open one Parquet file (partitioning, base folder)
    iceberg: dict[str, Any] | None = None          # the scan's metadata, io, projection and filter
    post: dict[str, Any] | None = None             # an upstream signal's read: key type and UFR schema


def plan_source(reader: SourceReader, source: Source, start: datetime, end: datetime,
                columns: Sequence[str] | None = None) -> SourcePlan:
    """The plan of ``reader.read(source, start, end, columns)`` without reading its rows."""
    start, end = as_utc(start, "start"), as_utc(end, "end")
    wanted = None if columns is None else list(dict.fromkeys([*columns, source.timestamp]))
    reader.last_read = {}
    if source.kind == "parquet":
        plan = _plan_parquet(reader, source, start, end, wanted)
    elif source.kind == "iceberg":
        plan = _plan_iceberg(reader, source, start, end, wanted)
    elif source.kind == "signal":
        plan = _plan_signal(reader, source, start, end, wanted)
    else:  # pragma: no cover - Source validates its kind
        raise StoreError(f"source {source.name}: unknown kind {source.kind!r}")
    reader.last_read = dict(plan.last_read)
    return plan


def read_part(plan: SourcePlan, index: int) -> pa.Table:
    """The rows of read unit ``index`` in ``plan.schema`` (on an executor)."""
    part = plan.parts[index]
    if plan.parquet is not None:
        path, schema = part
        found = ds.dataset([path], format="parquet", partitioning=plan.parquet["partitioning"],
                           partition_base_dir=plan.parquet["base"])
        fragment = next(iter(found.get_fragments()))
        one = ds.FileSystemDataset([fragment], schema=schema, format=found.format, filesystem=found.filesystem)
        ts_type = schema.field(plan.source.timestamp).type
        flt = (ds.field(plan.source.timestamp) >= bound_scalar(plan.start, ts_type)) & \
            (ds.field(plan.source.timestamp) < bound_scalar(plan.end, ts_type))
        table = normalize_timestamps(one.to_table(filter=flt), plan.source.timestamp)
        return table if table.schema == plan.schema else table.cast(plan.schema)
    assert plan.iceberg is not None
    from pyiceberg.io.pyarrow import ArrowScan

    scan = plan.iceberg
    table = ArrowScan(scan["metadata"], scan["io"], scan["projection"], scan["filter"]).to_table([part])
    return _finish(plan, table)


def _finish(plan: SourcePlan, table: pa.Table) -> pa.Table:
    assert plan.iceberg is not None
    table = table.select(plan.iceberg["names"])
    if plan.post is not None:
        key, key_type = plan.post["key"], plan.post["key_type"]
        if key in table.column_names and table.schema.field(key).type != key_type:
            table = table.set_column(table.schema.get_field_index(key), key, table.column(key).cast(key_type))
        table = restore_ufr_types(table, plan.post["schema"])
    return normalize_timestamps(table, plan.source.timestamp)


def _plan_parquet(reader: SourceReader, source: Source, start: datetime, end: datetime,
                  columns: list[str] | None) -> SourcePlan:
    assert source.path is not None
    path = Path(source.path).expanduser()
    if not path.is_absolute():
        path = reader.root / path
    if not path.exists():
        raise StoreError(f"source {source.name}: Parquet path {path} does not exist")
    layout = list_files(source, path, reader._show)
    partitioning = _partitioning(source, layout)
    base = str(path) if layout.partition_keys else None
    try:
        found = ds.dataset([str(f) for f in layout.files], format="parquet", partitioning=partitioning,
                           partition_base_dir=base)
    except (pa.ArrowInvalid, OSError) as exc:
        reader._name_unreadable(source, layout.files)
        raise StoreError(f"source {source.name}: cannot open the Parquet files at {reader._show(path)}: "
                         f"{exc}") from exc
    keys = [found.schema.field(k) for k in layout.partition_keys if k in found.schema.names]
    fragments, schemas = [], []
    for fragment in found.get_fragments():
        where = f"file {reader._show(Path(fragment.path))}"
        try:
            physical = fragment.physical_schema
        except (pa.ArrowInvalid, OSError) as exc:
            raise StoreError(f"source {source.name}: {where} cannot be read as Parquet: {exc}; "
                             "delete or rewrite it") from exc
        fragments.append(fragment)
        schemas.append((where, pa.schema([*(f for f in physical if f.name not in layout.partition_keys), *keys])))
    schema = reader._schema(source, schemas)
    reader._check_columns(source, schema.names, columns)
    counts = [(where, null_timestamps(frag, source.timestamp))
              for frag, (where, _) in zip(fragments, schemas, strict=True)]
    dropped = check_null_timestamps(source, counts)
    last_read = {"source_files": len(fragments),
                 **({"source_null_timestamps_dropped": dropped} if source.null_timestamps == "drop" else {})}
    names = columns if columns is not None else schema.names
    # the local reader scans the files of one physical schema together, groups in first-seen order
    groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for i, (_, physical_schema) in enumerate(schemas):
        groups.setdefault(tuple((n, str(physical_schema.field(n).type)) for n in names), []).append(i)
    parts: list[tuple[str, pa.Schema]] = []
    for members in groups.values():
        group_schema = pa.schema([schemas[members[0]][1].field(n) for n in names])
        parts.extend((fragments[i].path, group_schema) for i in members)
    if not parts:                                  # nothing to read: the caller computes on the driver
        return SourcePlan(source=source, start=start, end=end, schema=pa.schema([]), parts=[], last_read=last_read,
                          parquet={"partitioning": partitioning, "base": base})
    first = parts[0][1]
    out = normalize_timestamps(first.empty_table(), source.timestamp).schema
    return SourcePlan(source=source, start=start, end=end, schema=out, parts=parts, last_read=last_read,
                      parquet={"partitioning": partitioning, "base": base})


def _scan_plan(source: Source, start: datetime, end: datetime, table: Any, scan: Any, names: list[str],
               last_read: dict[str, Any], post: dict[str, Any] | None = None) -> SourcePlan:
    from pyiceberg.io.pyarrow import ArrowScan

    iceberg = {"metadata": table.metadata, "io": table.io, "projection": scan.projection(),
               "filter": scan.row_filter, "names": names}
    parts = list(scan.plan_files())
    plan = SourcePlan(source=source, start=start, end=end, schema=pa.schema([]), parts=parts,
                      last_read=last_read, iceberg=iceberg, post=post)
    empty = ArrowScan(table.metadata, table.io, scan.projection(), scan.row_filter).to_table([])
    plan.schema = _finish(plan, empty).schema
    return plan


def _plan_iceberg(reader: SourceReader, source: Source, start: datetime, end: datetime,
                  columns: list[str] | None) -> SourcePlan:
    try:
        table, scan, wanted, last_read = reader.iceberg_scan(source, start, end, columns)
        return _scan_plan(source, start, end, table, scan, wanted, last_read)
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"source {source.name}: planning Iceberg table {source.table} failed: {exc}") from exc


def _plan_signal(reader: SourceReader, source: Source, start: datetime, end: datetime,
                 columns: list[str] | None) -> SourcePlan:
    assert source.upstream is not None
    if source.upstream not in reader.upstream_versions:
        raise StoreError(f"source {source.name}: no version of upstream signal {source.upstream} was given "
                         "to read (is it registered?)")
    upstream, version = reader.upstream_versions[source.upstream]
    store = reader.store
    try:
        table = store.table(upstream.name, version)
    except (NotFoundError, StoreError) as exc:
        raise StoreError(f"source {source.name}: {exc}") from exc
    try:
        store._check_fingerprint(table, upstream, version)
    except StoreError as exc:
        raise StoreError(f"source {source.name}: {exc}") from exc
    names = [f.name for f in table.schema().fields]
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise StoreError(f"source {source.name}: signal {upstream.name} v{version} has no column(s) "
                             f"{missing}; its columns: {', '.join(names)}")
    selected = list(dict.fromkeys(columns)) if columns is not None else names
    scan = store._scan(table, upstream.name, version, start, end, None, tuple(selected) if columns else ("*",))
    post = {"key": upstream.entity.join_key, "key_type": upstream.entity.arrow_key_type, "schema": upstream.schema}
    return _scan_plan(source, start, end, table, scan, selected, {}, post)
