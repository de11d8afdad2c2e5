"""A transform backfill on Spark whose rows never pass through the driver.

The driver plans (``quasar.store.engines.spark_source``: file listing, schema checks, pyiceberg scan planning),
Spark does the rest, and only metadata comes back:

1. **read**: one Spark task per few read units (a Parquet file, an Iceberg ``FileScanTask``) reads its rows with
   the local reader's filter and types (``mapInArrow``), tagging each row with its source position and the
   transform group it belongs to (``quasar.store.engines.groups``);
2. **compute + check**: ``groupBy(group).applyInArrow`` calls the transform once per group with that group's rows
   in source order (the scope contract) and runs the output check (``quasar.store.output_check``) on what it
   returned, in the task; the computed DataFrame is persisted on the executors;
3. **validate**: the data-quality gate runs great-expectations' Spark datasource on that DataFrame;
4. **write**: the rows go to the task of their Iceberg ``bucket(N, key)`` (a shuffle), sorted by day, bucket and
   source position, and each task writes its partitions' Parquet files with pyiceberg's writer
   (``quasar.store.writer.write_rows``, the local engine's writer: Iceberg field ids, ``day x bucket`` folders,
   file size targets); it returns each file's path and partition;
5. **commit**: the driver commits those files in one snapshot replacing the window (``replace_window_files``,
   conflicts retried by ``quasar.store.commits``). A failure deletes every file the write made.

Only a strict gate's refusal brings rows to the driver, to quarantine them.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quasar.signals.bounds import TimeBounds
from quasar.signals.errors import BackfillError, QuasarError, StoreError
from quasar.signals.signal import Signal
from quasar.signals.ufr.schema import EVENT_TIMESTAMP
from quasar.store.arrow_types import to_storage
from quasar.store.buckets import iceberg_buckets
from quasar.store.data_files import WrittenFile
from quasar.store.engines.groups import call, transform_groups
from quasar.store.engines.spark_session import restore, spark_error, spark_safe
from quasar.store.engines.spark_source import SourcePlan, plan_source, read_part
from quasar.store.gates import GateResult, enforce, snapshot_properties, validate_frame
from quasar.store.layout import buckets_for
from quasar.store.output_check import check_output
from quasar.store.sources import SourceReader
from quasar.store.tables import OfflineStore

PART = "__quasar_part"                 # the read unit a source row came from (source order, first key)
ROW = "__quasar_row"                   # its position in that unit
GROUP = "__quasar_group"               # the transform group (call) it belongs to
DAY = "__quasar_day"
BUCKET = "__quasar_bucket"
BYTES = "__quasar_bytes"               # a computed row's share of its call's Arrow size (the layout estimate)
FILE_SCHEMA = "path string, day int, bucket int, records long"
_DAY_MICROS = 86_400_000_000
LAST_STAGES: dict[str, float] = {}    # seconds per stage of the latest backfill in this process (bench/engines.py)
_TASK_IDS = 10_000                     # file task ids per write task: 7-digit ids stay in write order
# Source bytes (as stored) per compute task: every Spark task costs a scheduling round and a Python worker's
# Arrow round trip whatever its rows (0.15-0.6 s each in local[2]), and a task is also a partition of the
# persisted batch that the stats, every GX job and the write read again; so a small window runs as one task,
# not spark.sql.shuffle.partitions (the most it gets).
PARTITION_BYTES = 8 << 20


@dataclass(frozen=True)
class WindowResult:
    """What a backfill run on the engine did: rows written, source rows read, the snapshot, the gate's verdict."""

    rows: int
    source_rows: int
    snapshot_id: int | None
    gate: GateResult
    last_read: dict[str, Any]


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def _tagged(schema: pa.Schema, *extra: str) -> pa.Schema:
    return pa.schema([*spark_safe(schema.empty_table()).schema, *(pa.field(n, pa.int64()) for n in extra)])


def backfill_window_spark(session: Any, *, signal: Signal, version: int, start: datetime, end: datetime,
                          store: OfflineStore, sources: SourceReader, bounds: TimeBounds, run_id: int | None,
                          columns: list[str] | None, step: Callable[[str], None]) -> WindowResult | None:
    """Backfill a transform signal's ``[start, end)`` on Spark, rows kept off the driver; None when the source
    has nothing to read (the caller's driver path handles an empty window, calling the function once)."""
    import time

    from pyspark import StorageLevel

    from quasar.store.backfill import source_window

    LAST_STAGES.clear()
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now_s = time.perf_counter()
        LAST_STAGES[name] = LAST_STAGES.get(name, 0.0) + now_s - clock[0]
        clock[0] = now_s

    step("read source")
    plan = plan_source(sources, signal.source, *source_window(signal, start, end), columns)
    if not plan.parts:
        return None
    lap("plan")
    step("compute")
    now = datetime.now(UTC)
    counted = session.sparkContext.accumulator(0)
    partitions = compute_partitions(session, plan)
    if signal.kind == "aggregation":
        built = _aggregated(session, signal, plan, start, end, bounds, now, counted, partitions)
        if built is None:
            return None
        computed, out_schema = built
    else:
        computed, out_schema = _computed(session, signal, plan, start, end, bounds, now, counted, partitions)
    computed = computed.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        try:   # runs the read, the transform and the output check; brings back a row per day
            stats = computed.groupBy(DAY).agg({BYTES: "sum", "*": "count"}).collect()
        except Exception as exc:
            raise as_quasar_error(signal, exc) from exc
        rows = sum(int(r["count(1)"]) for r in stats)
        lap("read+compute+check")
        step("check output")                       # done in the tasks, on every call's output
        step("validate")
        frame = computed.drop(DAY, BYTES, GROUP, ROW)
        gate = _gate(signal, version, frame, rows)
        if gate.verdict == "failed":               # only a refused batch comes to the driver: to be quarantined
            enforce(gate, signal=signal, rows=restore(frame.toArrow(), out_schema), store=store, run_id=run_id)
        lap("validate")
        step("write")
        largest = max((float(r[f"sum({BYTES})"] or 0.0) for r in stats), default=0.0)
        snapshot = _write(session, signal, version, computed, out_schema, start, end, store, largest,
                          snapshot_properties(gate, run_id), lap)
    finally:
        computed.unpersist()
        lap("commit")
    return WindowResult(rows=rows, source_rows=int(counted.value), snapshot_id=snapshot, gate=gate,
                        last_read=dict(plan.last_read))


def plan_bytes(plan: SourcePlan) -> int | None:
    """The stored size of the plan's read units (Parquet files, Iceberg scan tasks' files); None if unknown."""
    try:
        if plan.parquet is not None:
            return sum(os.path.getsize(path) for path, _ in plan.parts)
        return sum(int(task.file.file_size_in_bytes) for task in plan.parts)
    except (OSError, AttributeError, TypeError, ValueError):
        return None


def compute_partitions(session: Any, plan: SourcePlan) -> int:
    """Spark partitions for the window's read, compute and persisted batch: one per ``PARTITION_BYTES`` of
    source, at most ``spark.sql.shuffle.partitions`` (all of them when the size is unknown)."""
    most = max(1, int(session.conf.get("spark.sql.shuffle.partitions")))
    size = plan_bytes(plan)
    if size is None:
        return most
    return max(1, min(most, math.ceil(size / PARTITION_BYTES)))


def _read_slices(session: Any, plan: SourcePlan, partitions: int) -> int:
    parallelism = int(session.sparkContext.defaultParallelism)
    return max(1, min(len(plan.parts), parallelism * 2, partitions))


def _read(session: Any, signal: Signal, plan: SourcePlan, counted: Any, partitions: int) -> Any:
    """The source rows as a Spark DataFrame read by the executors, tagged with part, row and group."""
    n = len(plan.parts)
    schema = _tagged(plan.schema, PART, ROW, GROUP)

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for index in batch.column("id").to_pylist():
                rows = read_part(plan, index)
                counted.add(rows.num_rows)
                if rows.num_rows == 0:
                    continue
                groups = transform_groups(signal, rows)
                tagged = spark_safe(rows).append_column(PART, pa.array(np.full(rows.num_rows, index, np.int64))) \
                    .append_column(ROW, pa.array(np.arange(rows.num_rows, dtype=np.int64))) \
                    .append_column(GROUP, pa.array(groups.astype(np.int64)))
                yield from tagged.cast(schema).to_batches()

    return session.range(0, n, 1, _read_slices(session, plan, partitions)).mapInArrow(read, _spark_schema(schema))


def _computed(session: Any, signal: Signal, plan: SourcePlan, start: datetime, end: datetime, bounds: TimeBounds,
              now: datetime, counted: Any, partitions: int) -> tuple[Any, pa.Schema]:
    """The checked output (UFR types, Spark-safe) with its day, byte share, group and position in the call."""
    fn = signal.transform
    assert fn is not None
    key = signal.entity.join_key
    out_schema = signal.schema.table_schema({key: signal.entity.arrow_key_type})
    schema = pa.schema([*spark_safe(out_schema.empty_table()).schema, pa.field(DAY, pa.int64()),
                        pa.field(BYTES, pa.float64()), pa.field(GROUP, pa.int64()), pa.field(ROW, pa.int64())])
    source_schema = plan.schema

    def kernel(part: pa.Table) -> pa.Table:
        group = int(part.column(GROUP)[0].as_py())
        part = part.sort_by([(PART, "ascending"), (ROW, "ascending")])
        rows = restore(part.drop_columns([PART, ROW, GROUP]), source_schema)
        checked = check_output(call(signal, fn, rows), signal, start, end, created=now, bounds=bounds, now=now)
        return _checked_columns(checked, signal, group, schema)

    frame = _spread(_read(session, signal, plan, counted, partitions), partitions, GROUP) \
        .groupBy(GROUP).applyInArrow(kernel, _spark_schema(schema))
    return frame, out_schema


def _spread(frame: Any, partitions: int, column: str) -> Any:
    """``frame`` over ``partitions`` by ``column``'s hash, so a grouping by it (or by it and more) needs no other
    exchange and runs as that many tasks; one partition is a coalesce, in the reading task, with no shuffle."""
    return frame.coalesce(1) if partitions == 1 else frame.repartition(partitions, column)


def _checked_columns(checked: pa.Table, signal: Signal, group: int, schema: pa.Schema) -> pa.Table:
    n = checked.num_rows
    days = checked.column(EVENT_TIMESTAMP).cast(pa.int64()).to_numpy(zero_copy_only=False) // _DAY_MICROS
    share = to_storage(checked, signal).nbytes / n if n else 0.0
    return spark_safe(checked).append_column(DAY, pa.array(days.astype(np.int64))) \
        .append_column(BYTES, pa.array(np.full(n, share))) \
        .append_column(GROUP, pa.array(np.full(n, group, np.int64))) \
        .append_column(ROW, pa.array(np.arange(n, dtype=np.int64))).cast(schema)


def _aggregated(session: Any, signal: Signal, plan: SourcePlan, start: datetime, end: datetime, bounds: TimeBounds,
                now: datetime, counted: Any, partitions: int) -> tuple[Any, pa.Schema] | None:
    """An aggregation's checked output: events prepared in the read tasks, the Spark SQL of
    ``quasar.store.engines.spark_agg`` over them, the result's types and the output check in the tasks."""
    from quasar.signals.ufr.types import TIMESTAMP_ARROW
    from quasar.store.engines.local_agg import (
        check_column_types,
        output_schema,
        prepare_events,
        result_columns,
    )
    from quasar.store.engines.spark_agg import aggregation_sql

    key = signal.entity.join_key
    empty = prepare_events(signal, plan.schema.empty_table())
    check_column_types(signal, empty)
    view = f"quasar_events_{uuid.uuid4().hex[:12]}"
    sql = aggregation_sql(signal, empty, view, start, end)
    if sql is None:
        return None
    sql = sql[: sql.rindex("ORDER BY")]          # rows go to their bucket's write task anyway: no global sort job
    events_schema = spark_safe(empty).schema
    n = len(plan.parts)

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for index in batch.column("id").to_pylist():
                rows = read_part(plan, index)
                counted.add(rows.num_rows)
                if rows.num_rows:
                    yield from spark_safe(prepare_events(signal, rows)).cast(events_schema).to_batches()

    # events hashed by key into ``partitions``: the SQL's GROUP BY (key, step) needs no other exchange, and
    # what crosses the shuffle is the events, not their rows exploded over the steps
    events = _spread(session.range(0, n, 1, _read_slices(session, plan, partitions))
                     .mapInArrow(read, _spark_schema(events_schema)), partitions, "_k")
    events.createOrReplaceTempView(view)
    result = session.sql(sql)
    session.catalog.dropTempView(view)             # the plan keeps its source; the name is not needed again
    out_schema = signal.schema.table_schema({key: signal.entity.arrow_key_type})
    raw = output_schema(signal)
    schema = pa.schema([*spark_safe(out_schema.empty_table()).schema, pa.field(DAY, pa.int64()),
                        pa.field(BYTES, pa.float64()), pa.field(GROUP, pa.int64()), pa.field(ROW, pa.int64())])

    def finish(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            got = pa.Table.from_batches([batch])
            columns = [got.column("_k").cast(signal.entity.arrow_key_type),
                       got.column("_step").cast(pa.int64()).cast(TIMESTAMP_ARROW), *result_columns(signal, got)]
            rows = pa.Table.from_arrays(columns, schema=raw)
            checked = check_output(rows, signal, start, end, created=now, bounds=bounds, now=now)
            yield from _checked_columns(checked, signal, 0, schema).to_batches()

    return result.mapInArrow(finish, _spark_schema(schema)), out_schema


def _gate(signal: Signal, version: int, frame: Any, rows: int) -> GateResult:
    if not signal.expectations:
        return GateResult(signal=signal.name, version=version, policy=signal.policy, rows=rows, engine="")
    name = f"signal {signal.name} v{version}"
    # Unexpected examples, and naming their rows by key and time, cost GX Spark jobs per expectation even when
    # no row is unexpected (17 jobs against 9 for the five expectations of the example user_engagement):
    # validate without them, and again with them only when some row was unexpected, so the examples are the
    # ones the gate always gave and an outcome without any is the same either way.
    outcomes = validate_frame(frame, signal.expectations, name=name, examples=0)
    if any(not o.success or o.unexpected_count or o.error for o in outcomes):
        outcomes = validate_frame(frame, signal.expectations, name=name,
                                  index_columns=[signal.entity.join_key, EVENT_TIMESTAMP])
    return GateResult(signal=signal.name, version=version, policy=signal.policy, rows=rows, engine="spark",
                      outcomes=tuple(outcomes))


def _write(session: Any, signal: Signal, version: int, computed: Any, out_schema: pa.Schema, start: datetime,
           end: datetime, store: OfflineStore, largest_day_bytes: float, properties: dict[str, str],
           lap: Callable[[str], None]) -> int | None:
    """Executors write the rows as the table's data files; the driver commits them in one snapshot."""
    from pyiceberg.transforms import BucketTransform

    from quasar.store.commits import Write
    from quasar.store.gc import delete_files, list_files
    from quasar.store.writer import FIRST_TASK, write_rows

    # one table load: a new table's bucket count comes from the computed rows' size, as the local engine's first
    # write chooses it
    sized = copy.copy(store)
    if store.layout.buckets is None:
        sized.layout = dataclasses.replace(store.layout, buckets=buckets_for(largest_day_bytes,
                                                                             store.layout.target_file_bytes))
    table = sized.ensure_table(signal, version)
    metadata, io = table.metadata, table.io
    buckets = next((int(f.transform.num_buckets) for f in table.spec().fields
                    if isinstance(f.transform, BucketTransform)), None)
    if buckets is None:
        raise StoreError(f"signal {signal.name} v{version}: its table has no bucket partition to write into")
    key = signal.entity.join_key
    target = store.layout.target_file_bytes
    write_uuid = Write().uuid

    def add_bucket(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            b = iceberg_buckets(batch.column(key), buckets).astype(np.int64)
            yield pa.RecordBatch.from_arrays([*batch.columns, pa.array(b)],
                                             names=[*batch.schema.names, BUCKET])

    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StructField, StructType

    frame = computed.drop(BYTES)
    if buckets == 1:
        # every row is in bucket 0: no Python pass hashing the keys, and no shuffle: one task writes it all
        ordered = frame.withColumn(BUCKET, F.lit(0).cast(LongType())).coalesce(1) \
            .sortWithinPartitions(DAY, BUCKET, GROUP, ROW)
    else:
        bucketed_schema = StructType([*frame.schema.fields, StructField(BUCKET, LongType(), False)])
        bucketed = frame.mapInArrow(add_bucket, bucketed_schema)
        tasks = max(1, min(buckets, int(session.conf.get("spark.sql.shuffle.partitions"))))
        ordered = bucketed.repartition(tasks, BUCKET).sortWithinPartitions(DAY, BUCKET, GROUP, ROW)

    def write_files(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        context = TaskContext.get()
        counter = itertools.count(FIRST_TASK + (context.partitionId() if context else 0) * _TASK_IDS)
        pending: list[pa.Table] = []
        current: tuple[int, int] | None = None

        def flush() -> Iterator[pa.RecordBatch]:
            if not pending:
                return
            rows = restore(pa.concat_tables(pending).drop_columns([DAY, BUCKET, GROUP, ROW]), out_schema)
            pending.clear()
            written = write_rows(metadata, io, to_storage(rows, signal), write_uuid, target, counter)
            yield pa.RecordBatch.from_pydict({
                "path": [f.file_path for f in written], "day": [int(f.partition[0]) for f in written],
                "bucket": [int(f.partition[1]) for f in written],
                "records": [int(f.record_count) for f in written]},
                schema=pa.schema([("path", pa.string()), ("day", pa.int32()), ("bucket", pa.int32()),
                                  ("records", pa.int64())]))

        for batch in batches:
            chunk = pa.Table.from_batches([batch])
            if chunk.num_rows == 0:
                continue
            parts = pc.add(pc.multiply(chunk.column(DAY), 1 << 20), chunk.column(BUCKET)).to_numpy()
            cuts = np.flatnonzero(np.diff(parts)) + 1
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(parts)], strict=True):
                here = (int(parts[lo]) >> 20, int(parts[lo]) & ((1 << 20) - 1))
                if current is not None and here != current:
                    yield from flush()
                current = here
                pending.append(chunk.slice(int(lo), int(hi - lo)))
        yield from flush()

    location = str(table.location()).rstrip("/")
    try:
        try:
            listed = ordered.mapInArrow(write_files, FILE_SCHEMA).toArrow()      # one row per file: metadata
        except Exception as exc:
            raise StoreError(f"signal {signal.name} v{version}: Spark failed writing the window's files: "
                             f"{spark_error(exc)}") from exc
        files = [WrittenFile(path=p, day=d, bucket=b) for p, d, b in zip(
            listed.column("path").to_pylist(), listed.column("day").to_pylist(),
            listed.column("bucket").to_pylist(), strict=True)]
        files.sort(key=lambda f: f.path)
        lap("write files")
        return store.replace_window_files(signal, version, files, start, end, properties=properties, table=table)
    except BaseException:
        try:
            mine = [uri for uri, _ in list_files(f"{location}/data") if str(write_uuid) in uri.rsplit("/", 1)[-1]]
            delete_files(location, mine)
        except Exception:  # nothing was committed; what is left is garbage for quasar gc
            pass
        raise


def as_quasar_error(signal: Signal, exc: BaseException) -> QuasarError:
    """A task's error as the error the local engine raises: a BackfillError/StoreError keeps its own message."""
    text = str(exc)
    for cls in (BackfillError, StoreError):
        marker = f"{cls.__name__}: "
        if marker in text:
            return cls(spark_error(exc).split(marker, 1)[-1])
    return StoreError(f"signal {signal.name}: its transform failed on Spark: {spark_error(exc)}")


