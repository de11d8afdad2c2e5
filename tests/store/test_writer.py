"""The one writer of the offline store (``quasar.store.writer.write_rows``) against pyiceberg's own write path, the
writer it replaced: the same files (paths, partitions, rows in the same order, field ids, statistics), so scans
prune them as before and every backfill, push and compaction stores exactly the rows it stored before."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fixtures.writer_reference import cells, pyiceberg_write_rows
from quasar.signals import Entity, Float64, Int64, String, Vector, signal
from quasar.signals import Source as SignalSource
from quasar.store.arrow_types import storage_schema
from quasar.store.tables import OfflineStore
from quasar.store.writer import write_rows

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY_US = 86_400_000_000
user = Entity(name="user", join_key="user_id", join_key_type="string")
events = SignalSource.parquet(name="events", path="data/events", timestamp="ts")


@signal(entity=user, source=events,
        features={"clicks": Int64(), "score": Float64(), "country": String(), "emb": Vector(3)})
def mixed(batch: pa.Table) -> pa.Table:
    """Rows written directly by the tests."""
    return batch


def storage_rows(n: int, seed: int) -> pa.Table:
    """``n`` rows in the table's storage types over 4 days, out of day order, with nulls in every feature."""
    rng = np.random.default_rng(seed)
    schema = storage_schema(mixed)
    ts = pa.array(int(T0.timestamp() * 1e6) + rng.integers(0, 4 * DAY_US, n), pa.int64())
    ts = ts.cast(pa.timestamp("us", tz="UTC"))
    null = rng.random(n) < 0.1
    emb_type = schema.field("emb").type
    embs = [None if null[i] else [float(x) for x in rng.random(3)] for i in range(n)]
    columns = {
        "user_id": pa.array([f"u{k}" for k in rng.integers(0, 300, n)], pa.string()),
        "event_timestamp": ts, "created_timestamp": ts,
        "clicks": pa.array(np.where(null, 0, rng.integers(0, 9, n)), pa.int64(), mask=null),
        "score": pa.array(np.where(rng.random(n) < 0.01, np.nan, rng.random(n)), pa.float64(), mask=null),
        "country": pa.array([None if null[i] else ["fr", "us", "de"][i % 3] for i in range(n)], pa.string()),
        "emb": pa.array(embs, emb_type),
    }
    return pa.table(columns, schema=schema)


def path_of(data_file: Any) -> str:
    return data_file.file_path.removeprefix("file://")


@pytest.mark.parametrize("buckets", [4, 1])
def test_files_match_pyiceberg_write_file_row_for_row_with_the_same_statistics(offline_catalog: Any,
                                                                              buckets: int) -> None:
    store = OfflineStore(offline_catalog, buckets=buckets)
    table = store.ensure_table(mixed, 1)
    rows = storage_rows(6000, seed=3)
    ours_uuid, theirs_uuid = uuid.uuid4(), uuid.uuid4()
    ours = write_rows(table.metadata, table.io, rows, ours_uuid, 1 << 30)
    theirs = pyiceberg_write_rows(table.metadata, table.io, rows, theirs_uuid, 1 << 30)

    assert len(ours) == len(theirs) == 4 * buckets             # 4 days x the buckets
    for mine, ref in zip(ours, theirs, strict=True):
        assert path_of(mine) == path_of(ref).replace(str(theirs_uuid), str(ours_uuid))
        assert mine.partition == ref.partition
        assert mine.content == ref.content and mine.file_format == ref.file_format
        assert mine.record_count == ref.record_count
        for stat in ("value_counts", "null_value_counts", "nan_value_counts", "lower_bounds", "upper_bounds"):
            assert getattr(mine, stat) == getattr(ref, stat), stat
        assert set(mine.column_sizes) == set(ref.column_sizes)
        assert mine.file_size_in_bytes == os.path.getsize(path_of(mine))
        mine_rows, ref_rows = pq.read_table(path_of(mine)), pq.read_table(path_of(ref))
        assert mine_rows.schema == ref_rows.schema                       # field ids included
        assert cells(mine_rows) == cells(ref_rows)                       # same rows in the same order
        ids = [f.metadata[b"PARQUET:field_id"] for f in pq.read_schema(path_of(mine))]
        assert ids == [str(i).encode() for i in range(1, 8)]


def test_a_partition_split_in_several_files_keeps_its_rows_in_order_across_them(offline_catalog: Any) -> None:
    store = OfflineStore(offline_catalog, buckets=4)
    table = store.ensure_table(mixed, 1)
    rows = storage_rows(6000, seed=3)
    target = rows.nbytes // 40                        # ~3 files per partition (sizes are in-memory estimates)
    ours = write_rows(table.metadata, table.io, rows, uuid.uuid4(), target)
    theirs = pyiceberg_write_rows(table.metadata, table.io, rows, uuid.uuid4(), target)

    def by_partition(files: list[Any]) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for data_file in sorted(files, key=path_of):               # plan order: path order
            found.setdefault(os.path.dirname(path_of(data_file)), []).extend(cells(pq.read_table(path_of(data_file))))
        return found

    mine = by_partition(ours)
    assert len(ours) > 2 * len(mine) and len(mine) == 16
    ref = {k.replace(str(table.location()), ""): v for k, v in by_partition(theirs).items()}
    assert {k.replace(str(table.location()), ""): v for k, v in mine.items()} == ref


def test_only_string_columns_get_dictionary_pages(offline_catalog: Any) -> None:
    store = OfflineStore(offline_catalog, buckets=1)
    table = store.ensure_table(mixed, 1)
    rows = storage_rows(2000, seed=4)
    files = write_rows(table.metadata, table.io, rows, uuid.uuid4(), 1 << 30)
    meta = pq.ParquetFile(path_of(files[0])).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    dictionary = {path for path, found in encodings.items() if any("DICTIONARY" in e for e in found)}
    assert dictionary == {"user_id", "country"}


def test_a_window_replaced_through_the_store_reads_back_exactly_and_prunes_by_time(offline_catalog: Any) -> None:
    store = OfflineStore(offline_catalog, buckets=4)
    rows = storage_rows(3000, seed=5)
    start, end = T0, datetime(2026, 1, 5, tzinfo=UTC)
    store.replace_window(mixed, 1, rows, start, end)
    order = [("user_id", "ascending"), ("event_timestamp", "ascending"), ("clicks", "ascending")]
    back = store.read(mixed, 1).select(rows.column_names)
    assert back.num_rows == rows.num_rows
    for name in ("user_id", "event_timestamp", "clicks", "country"):
        assert back.sort_by(order).column(name).equals(rows.sort_by(order).column(name)), name
    one_day = store.plan_files("mixed", 1, start=T0, end=datetime(2026, 1, 2, tzinfo=UTC))
    assert len(one_day) == 4                          # pruned to the first day's 4 buckets
    table = store.table("mixed", 1)
    from pyiceberg.expressions import EqualTo
    scanned = list(table.scan(row_filter=EqualTo("user_id", "u7")).plan_files())
    assert 0 < len(scanned) <= 4                      # bucket pruning from the partition values
