"""The Spark engine's plumbing: one SparkSession, Arrow types Spark can carry, and exact result transport.

Work crosses into Spark as Arrow (``createDataFrame`` of an Arrow table, ``applyInArrow`` on groups). Spark has
no half floats, fixed-size lists or dictionary arrays, so ``spark_safe`` widens those losslessly and
``restore`` casts them back inside the task, where user code sees exactly the types the local engine gives
it. Results come back as Arrow IPC blobs (``to_blobs``/``from_blobs``), so UFR types survive bit for bit.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quasar.signals.errors import DependencyMissingError, StoreError

BLOB_SCHEMA = "group long, part long, ipc binary"
ROW = "__quasar_row"                                # a shipped row's position in the driver's table
GROUP = "__quasar_group"                            # the group a shipped row is processed in
BLOB_ROWS = 65_536                                  # rows per IPC blob: keeps each far below Spark's 2 GiB limit

DEFAULT_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.shuffle.partitions": "8",
    "spark.driver.memory": "4g",          # in local[*] the executors run in the driver's JVM: their heap too
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "spark.hadoop.parquet.enable.summary-metadata": "false",
}


def build_session(master: str, conf: Mapping[str, str], app_name: str = "quasar") -> tuple[Any, bool]:
    """A SparkSession for ``master`` with quasar's defaults under ``conf``; True when this call created it
    (an active session, e.g. a notebook's or a test's, is reused and left running at close)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise DependencyMissingError("pyspark", "spark", "the spark engine") from exc
    existed = SparkSession.getActiveSession() is not None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)        # workers run this interpreter
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in {**DEFAULT_CONF, "spark.pyspark.python": sys.executable, **dict(conf)}.items():
        builder = builder.config(key, str(value))
    try:
        session = builder.getOrCreate()
    except Exception as exc:
        raise StoreError(f"spark engine: cannot start a Spark session on {master!r}: {type(exc).__name__}: "
                         f"{exc} (is Java 17+ installed and JAVA_HOME set?)") from exc
    return session, not existed


def _safe_type(dtype: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(dtype):
        return _safe_type(dtype.value_type)
    if pa.types.is_float16(dtype):
        return pa.float32()
    if pa.types.is_large_string(dtype):
        return pa.string()
    if pa.types.is_large_binary(dtype):
        return pa.binary()
    if pa.types.is_fixed_size_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_list(dtype):
        return pa.list_(pa.field(dtype.value_field.name, _safe_type(dtype.value_type),
                                 dtype.value_field.nullable))
    if pa.types.is_struct(dtype):
        return pa.struct([pa.field(f.name, _safe_type(f.type), f.nullable) for f in dtype])
    if pa.types.is_timestamp(dtype) and dtype.unit != "us":
        return pa.timestamp("us", dtype.tz)
    return dtype


def spark_safe(table: pa.Table) -> pa.Table:
    """``table`` with every column in a type Spark's Arrow conversion accepts (lossless for UFR types)."""
    schema = pa.schema([pa.field(f.name, _safe_type(f.type), f.nullable) for f in table.schema])
    return table if schema == table.schema else table.cast(schema)


def restore(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A table that went through Spark, back in ``schema`` (column order and types)."""
    columns = []
    for spark_field in schema:
        column = table.column(spark_field.name)
        if column.type != spark_field.type:
            try:
                column = column.cast(spark_field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                column = column.cast(_safe_type(spark_field.type)).cast(spark_field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def to_blobs(group: int, table: pa.Table) -> pa.Table:
    """One group's result as ``(group, part, ipc)`` rows: Arrow IPC streams of up to ``BLOB_ROWS`` rows."""
    parts, blobs = [], []
    for part, offset in enumerate(range(0, max(table.num_rows, 1), BLOB_ROWS)):
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table.slice(offset, BLOB_ROWS))
        parts.append(part)
        blobs.append(sink.getvalue())
    n = len(blobs)
    return pa.table({"group": pa.array([group] * n, pa.int64()), "part": pa.array(parts, pa.int64()),
                     "ipc": pa.array(blobs, pa.binary())})


def from_blobs(blobs: pa.Table) -> list[pa.Table]:
    """The tables of ``to_blobs`` rows, ordered by (group, part)."""
    order = sorted(zip(blobs.column("group").to_pylist(), blobs.column("part").to_pylist(), range(blobs.num_rows),
                       strict=True))
    ipc = blobs.column("ipc")
    return [pa.ipc.open_stream(ipc[i].as_py()).read_all() for _, _, i in order]


def spark_error(exc: BaseException) -> str:
    """A Spark failure in a line or two: a Python worker's own error, not the JVM stack trace."""
    text = str(exc)
    marker = "Traceback (most recent call last):"
    if marker in text:
        tail = [line for line in text.split(marker)[-1].strip().splitlines() if line.strip()]
        if tail:
            return tail[-1].strip()
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:500]


def run_grouped(session: Any, table: pa.Table, groups: np.ndarray,
                fn: Callable[[int, pa.Table, pa.ChunkedArray], pa.Table]) -> list[pa.Table]:
    """Run ``fn(group, rows, positions)`` on Spark once per group of ``table``'s rows (``groupBy``
    + ``applyInArrow``): ``rows`` in table order and in ``table``'s own types, ``positions`` their row numbers
    in ``table``. Returns the results, exact (Arrow IPC), ordered by group."""
    schema = table.schema
    shipped = spark_safe(table).append_column(ROW, pa.array(np.arange(table.num_rows, dtype=np.int64))) \
        .append_column(GROUP, pa.array(np.asarray(groups, dtype=np.int64)))

    def kernel(part: pa.Table) -> pa.Table:
        group = int(part.column(GROUP)[0].as_py())
        part = part.take(pc.sort_indices(part.column(ROW)))
        return to_blobs(group, fn(group, restore(part.drop_columns([GROUP, ROW]), schema), part.column(ROW)))

    blobs = session.createDataFrame(shipped).groupBy(GROUP).applyInArrow(kernel, BLOB_SCHEMA).toArrow()
    return from_blobs(blobs)
