"""Training datasets on Spark that scale: the spine read by executors, the result written by executors.

``build_training_dataset`` (``quasar.store.dataset``) hands its spine here (``open_spine``). On the Spark engine a
spine that is a Parquet path (a file, or a folder of them) or a pyiceberg table, or any in-memory spine with
``out=``, is joined without passing through the driver:

* the driver lists the spine's files (a folder's ``*.parquet`` in name order, an Iceberg table's scan plan) and
  reads only their footers (row counts); executors read the files with pyarrow, one task per file, so every
  row keeps its exact type and its place ``(file, row)`` in spine order;
* rows are routed, as ``quasar.store.engines.spark_pit`` routes them, to the ``bucket(N, key)`` of each signal
  table (``routes``) and split into groups of about ``chunk_rows`` rows; each group (``groupBy`` +
  ``applyInArrow``) runs the local engine's join (``quasar.store.dataset_join.join_chunk``: the per-key kernel of
  ``quasar.store.pit_local``) over its rows and its bucket's files alone;
* with ``out=`` the joined rows are sorted back into spine order by Spark and each sorted partition is written by
  its executor as one ``part-<n>.parquet`` (UFR types and the dataset's ``quasar.sources``/``quasar.features``
  metadata, as ``quasar.store.dataset_out`` writes them) into the output's hidden staging folder, published
  atomically by the driver; a ``.parquet`` path is one file, streamed together from the parts a row group at a
  time. Without ``out=`` the rows come back to the driver as a table (the caller asked for one);
* with ``out="iceberg:ns.table"`` each sorted partition's executor writes the table's data files (the offline
  store's writer, ``quasar.store.dataset_out.write_chunk``: Iceberg field ids, a day's rows a file, about the
  target file size) and returns their ``DataFile`` entries, metadata only; the driver commits them all in the
  sink's one transaction (``IcebergSink``: a failure leaves no table, or the previous one).

The output folder must be on a filesystem every executor writes (local[*], or a shared mount); an Iceberg output's
warehouse must be reachable by the executors through the table's FileIO. A spine with
request-time signals, or a RecordBatchReader, is joined chunk by chunk on the driver as on the local engine.
On the local engine a path or Iceberg spine is read as a RecordBatchReader, chunk by chunk.
"""

from __future__ import annotations

import itertools
import math
import pickle
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from quasar.signals.errors import DatasetError, StoreError
from quasar.store.buckets import iceberg_buckets
from quasar.store.dataset_join import join_chunk
from quasar.store.dataset_out import IcebergOut
from quasar.store.engines.base import Engine, FeatureRequest
from quasar.store.spine import JoinKeys, as_arrow, join_columns, normalize_spine

ROW = "__quasar_row"            # a spine row's place: file index << 40 | row in file
GROUP = "__quasar_group"        # (bucket + 1) * splits + split
_FILE_SHIFT = 40
_TASK_IDS = 10_000              # file task ids per write task (as a backfill's): ids sort in write order
FILE_ENTRIES = "part int, seq int, data_file binary"     # what an executor's Iceberg write returns: metadata


def spine_files(spine: Any) -> list[str] | None:
    """The Parquet files of a path or pyiceberg-table spine, in spine order; None for any other spine."""
    if isinstance(spine, str | Path):
        path = Path(spine).expanduser()
        if not path.exists():
            raise DatasetError(f"spine {spine}: no such file or folder")
        files = sorted(str(p) for p in path.rglob("*.parquet") if not p.name.startswith((".", "_"))) \
            if path.is_dir() else [str(path)]
        if not files:
            raise DatasetError(f"spine folder {spine} holds no .parquet files")
        return files
    if hasattr(spine, "scan") and hasattr(spine, "metadata"):            # a pyiceberg Table
        tasks = list(spine.scan().plan_files())
        if any(t.delete_files for t in tasks):
            raise DatasetError("the spine's Iceberg table has delete files; compact it (or read it into a table) "
                               "before using it as a spine")
        files = [t.file.file_path for t in tasks]
        if not files:
            raise DatasetError("the spine's Iceberg table has no rows")
        return files
    return None


def _open(path: str) -> pq.ParquetFile:
    if "://" in path:
        from pyarrow import fs

        filesystem, inner = fs.FileSystem.from_uri(path)
        return pq.ParquetFile(filesystem.open_input_file(inner))
    return pq.ParquetFile(path)


def _schema_of(files: Sequence[str]) -> tuple[pa.Schema, list[int]]:
    """The spine's schema (the first file's; every file must have it) and each file's row count."""
    counts, schema = [], None
    for path in files:
        try:
            parquet = _open(path)
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(f"spine file {path} cannot be read as Parquet: {exc}") from exc
        found = parquet.schema_arrow.remove_metadata()
        if schema is None:
            schema = found
        elif not found.equals(schema):
            raise DatasetError(f"spine file {path} has columns {found} but the first file has {schema}")
        counts.append(parquet.metadata.num_rows)
    assert schema is not None
    return schema, counts


def open_spine(spine: Any, engine: Engine, out: Path | IcebergOut | None, *, has_requests: bool) -> Any:
    """What ``build_training_dataset`` joins: a ``SparkSpine`` when executors do the work (see the module), else
    the spine as Arrow (a path or Iceberg spine as a RecordBatchReader)."""
    files = spine_files(spine)
    distributed = engine.name == "spark" and not has_requests and (files is not None or out is not None) \
        and not isinstance(spine, pa.RecordBatchReader)
    if files is not None and not distributed:
        import pyarrow.dataset as ds

        schema, _ = _schema_of(files)
        return ds.dataset([_local(f) for f in files], schema=schema, format="parquet").scanner().to_reader()
    if not distributed:
        return as_arrow(spine)
    if files is not None:
        schema, counts = _schema_of(files)
        return SparkSpine(schema=schema, files=files, counts=counts)
    table = as_arrow(spine)
    assert isinstance(table, pa.Table)
    return SparkSpine(schema=table.schema, table=table, counts=[table.num_rows])


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


@dataclass(frozen=True)
class SparkSpine:
    """A spine the executors read: Parquet ``files`` (rows per file in ``counts``), or an in-memory ``table``."""

    schema: pa.Schema
    counts: list[int]
    files: list[str] | None = None
    table: pa.Table | None = None

    @property
    def num_rows(self) -> int:
        return sum(self.counts)

    def build(self, engine: Any, join_keys: JoinKeys, requests: Sequence[FeatureRequest],
              stored: Sequence[tuple[str, Any]], result: Any, *, out: Path | IcebergOut | None,
              chunk_rows: int) -> Any:
        """The dataset of this spine (``result`` with its rows, or with ``path`` when written to ``out``)."""
        from quasar.store.engines.local import LocalEngine
        from quasar.store.engines.spark_pit import routes, routing

        empty = join_chunk(normalize_spine(self.schema.empty_table(), join_keys), join_keys, requests, stored,
                           LocalEngine(threads=1))
        finished = empty.schema.with_metadata({**_own(self.schema.metadata), **result.metadata()})
        if self.num_rows == 0:
            return _finish(result, finished.empty_table(), out)
        count = routing(requests) if len(join_keys) == 1 else None     # routed by the one join key, or not at all
        splits = max(1, math.ceil(self.num_rows / max(1, chunk_rows) / (count or 1)))
        by_group = routes(requests, count, range(count) if count else ())
        rows = self._frame(engine.session, join_keys, count, splits)
        joined = _joined(rows, by_group, splits, self.schema, join_keys, stored, engine.task_threads, empty.schema)
        from pyspark import StorageLevel

        joined = joined.persist(StorageLevel.MEMORY_AND_DISK)      # the sort samples it first: join it once
        ordered = joined.repartitionByRange(splits * (count or 1), ROW).sortWithinPartitions(ROW)  # ~chunk_rows each
        try:
            if out is None:
                from quasar.store.engines.spark_session import restore

                table = restore(ordered.toArrow().drop_columns([ROW]), empty.schema)
                return replace(result, table=table.replace_schema_metadata(finished.metadata))
            if isinstance(out, IcebergOut):
                return _write_iceberg(ordered, result, finished, out)
            return _write(ordered, result, finished, out)
        except (DatasetError, StoreError):
            raise
        except Exception as exc:
            from quasar.store.engines.spark_session import spark_error

            raise StoreError(f"building the dataset on Spark failed: {spark_error(exc)}") from exc
        finally:
            joined.unpersist()

    def _frame(self, session: Any, join_keys: JoinKeys, count: int | None, splits: int) -> Any:
        """The spine's rows on Spark in Spark-safe types, with their place (``ROW``) and group (``GROUP``)."""
        from quasar.store.engines.spark_session import spark_safe

        key = next(iter(join_keys))
        schema = self.schema

        def tag(table: pa.Table, base: int) -> pa.Table:
            row = np.arange(base, base + table.num_rows, dtype=np.int64)
            bucket = iceberg_buckets(join_columns(table, join_keys).column(key), count).astype(np.int64) if count \
                else np.zeros(table.num_rows, dtype=np.int64)
            group = (bucket + 1) * splits + row % splits
            return spark_safe(table).append_column(ROW, pa.array(row)).append_column(GROUP, pa.array(group))

        shipped = spark_safe(schema.empty_table()).schema.append(pa.field(ROW, pa.int64())) \
            .append(pa.field(GROUP, pa.int64()))
        if self.table is not None:
            return session.createDataFrame(tag(self.table, 0))
        files = self.files or []

        def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                for index, path in zip(batch.column("file").to_pylist(), batch.column("path").to_pylist(),
                                       strict=True):
                    offset = index << _FILE_SHIFT
                    for part in _open(path).iter_batches(batch_size=65_536, columns=schema.names):
                        table = pa.Table.from_batches([part]).cast(schema)
                        yield from tag(table, offset).to_batches()
                        offset += table.num_rows

        listing = pa.table({"file": pa.array(range(len(files)), pa.int64()), "path": pa.array(files, pa.string())})
        from pyspark.sql.pandas.types import from_arrow_schema

        return session.createDataFrame(listing).repartition(len(files)).mapInArrow(read, from_arrow_schema(shipped))


def _own(metadata: dict[bytes, bytes] | None) -> dict[bytes, bytes]:
    return {k: v for k, v in (metadata or {}).items() if k != b"pandas"}


def _joined(rows: Any, by_group: dict[int, list[FeatureRequest]], splits: int, spine_schema: pa.Schema,
            join_keys: JoinKeys, stored: Sequence[tuple[str, Any]], threads: int, schema: pa.Schema) -> Any:
    """Every group's rows joined by the local engine's kernel with its bucket's files, Spark-safe, with ``ROW``."""
    from pyspark.sql.pandas.types import from_arrow_schema

    from quasar.store.engines.spark_session import restore, spark_safe

    safe = spark_safe(schema.empty_table()).schema.append(pa.field(ROW, pa.int64()))

    def kernel(part: pa.Table) -> pa.Table:
        from quasar.store.engines.local import LocalEngine

        group = int(part.column(GROUP)[0].as_py())
        part = part.take(pc.sort_indices(part.column(ROW)))
        chunk = normalize_spine(restore(part.drop_columns([GROUP, ROW]), spine_schema), join_keys)
        with LocalEngine(threads=threads) as local:
            done = join_chunk(chunk, join_keys, by_group[group // splits - 1], stored, local)
        return spark_safe(done).append_column(ROW, part.column(ROW)).cast(safe)

    return rows.groupBy(GROUP).applyInArrow(kernel, from_arrow_schema(safe))


def _write(ordered: Any, result: Any, schema: pa.Schema, out: str | Path) -> Any:
    """Executors write the sorted partitions as part files into the sink's staging folder; the driver publishes."""
    from pyspark import TaskContext

    from quasar.store.dataset_out import PART, ParquetSink
    from quasar.store.engines.spark_session import restore

    sink = ParquetSink(out, result.metadata())
    parts = sink.staging if not sink.single_file else \
        sink.path.parent / f".{sink.path.name}.parts-{uuid.uuid4().hex[:12]}"
    try:
        parts.mkdir(parents=True, exist_ok=True)
        folder = str(parts)

        def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            writer, rows = None, 0
            context = TaskContext.get()
            assert context is not None, "runs in a Spark task"
            name = PART.format(context.partitionId())
            try:
                for batch in batches:
                    if batch.num_rows == 0:
                        continue
                    table = restore(pa.Table.from_batches([batch]).drop_columns([ROW]), schema) \
                        .replace_schema_metadata(schema.metadata)
                    if writer is None:
                        writer = pq.ParquetWriter(f"{folder}/{name}", schema)
                    writer.write_table(table)
                    rows += table.num_rows
            finally:
                if writer is not None:
                    writer.close()
            yield pa.RecordBatch.from_pydict({"rows": pa.array([rows], pa.int64())})

        ordered.mapInArrow(write, "rows long").count()    # runs the writes; nothing but a count comes back
        total = sum(pq.read_metadata(p).num_rows for p in parts.iterdir())
        if not any(parts.iterdir()):                       # no rows: one empty part holds the schema
            pq.write_table(schema.empty_table(), parts / PART.format(0))
        if sink.single_file:
            for path in sorted(parts.iterdir()):
                for batch in pq.ParquetFile(path).iter_batches():
                    sink.write(pa.Table.from_batches([batch]).cast(schema))
            if sink.rows == 0:
                sink.write(schema.empty_table())
        else:
            sink.schema, sink.rows = schema, total
        path = sink.close()
    except BaseException:
        sink.abort()
        raise
    finally:
        if sink.single_file:
            shutil.rmtree(parts, ignore_errors=True)
    return replace(result, table=schema.empty_table(), path=path, written_rows=total)


def _write_iceberg(ordered: Any, result: Any, schema: pa.Schema, out: IcebergOut) -> Any:
    """Executors write the sorted partitions as the table's data files; the driver commits their entries."""
    from pyspark import TaskContext

    from quasar.store.dataset_out import IcebergSink, write_chunk
    from quasar.store.engines.spark_session import restore, spark_error
    from quasar.store.writer import FIRST_TASK

    sink = IcebergSink(out, result.metadata())
    sink.start(schema)
    assert sink.schema is not None
    dataset_schema = sink.schema
    metadata, io, write_uuid, target = sink.writer_args()

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        context = TaskContext.get()
        assert context is not None, "runs in a Spark task"
        part = context.partitionId()
        counter = itertools.count(FIRST_TASK + part * _TASK_IDS)
        pending: list[pa.Table] = []
        size, seq = 0, 0

        def flush() -> Iterator[pa.RecordBatch]:
            nonlocal size, seq
            if not pending:
                return
            rows = pa.concat_tables(pending)
            pending.clear()
            size = 0
            files = write_chunk(rows, dataset_schema, metadata, io, write_uuid, target, counter)
            yield pa.RecordBatch.from_pydict(
                {"part": pa.array([part] * len(files), pa.int32()),
                 "seq": pa.array(range(seq, seq + len(files)), pa.int32()),
                 "data_file": pa.array([pickle.dumps(f) for f in files], pa.binary())})
            seq += len(files)

        for batch in batches:
            if batch.num_rows == 0:
                continue
            table = restore(pa.Table.from_batches([batch]).drop_columns([ROW]), schema)
            pending.append(table)
            size += table.nbytes
            if size >= target:                  # a flush holds about one file's rows
                yield from flush()
        yield from flush()

    try:
        try:
            listed = ordered.mapInArrow(write, FILE_ENTRIES).toArrow()    # one row per file: metadata only
        except Exception as exc:
            raise StoreError(f"Spark failed writing the dataset to the Iceberg table {out.name!r}: "
                             f"{spark_error(exc)}") from exc
        entries = sorted(zip(listed.column("part").to_pylist(), listed.column("seq").to_pylist(),
                             listed.column("data_file").to_pylist(), strict=True))
        sink.add(pickle.loads(entry) for _, _, entry in entries)
        table = sink.close()
    except BaseException:
        sink.abort()
        raise
    return replace(result, table=schema.empty_table(), iceberg=table, written_rows=sink.rows)


def _finish(result: Any, table: pa.Table, out: Path | IcebergOut | None) -> Any:
    """The dataset of an empty spine (nothing for Spark to do)."""
    if out is None:
        return replace(result, table=table)
    from quasar.store.dataset_out import open_sink

    sink = open_sink(out, result.metadata())
    try:
        sink.write(table)
        sink.close()
    except BaseException:
        sink.abort()
        raise
    return replace(result, table=table, written_rows=0, **sink.where())
