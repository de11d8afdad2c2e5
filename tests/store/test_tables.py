"""The Iceberg layout of signal tables: names, partitioning, field types, exact UFR round trips, windows."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.schema import index_by_id

from quasar.signals import (
    Bool,
    Entity,
    Float32,
    Float64,
    IdList,
    Int64,
    Source,
    String,
    Timestamp,
    Vector,
    WeightedIdList,
    signal,
)
from quasar.signals.errors import NotFoundError, StoreError
from quasar.store.arrow_types import iceberg_schema, restore_ufr_types, storage_schema, to_storage
from quasar.store.catalog import open_catalog
from quasar.store.tables import OfflineStore, table_name

DAY = timedelta(days=1)
T0 = datetime(2026, 1, 1, tzinfo=UTC)

user = Entity(name="user", join_key="user_id")
pin = Entity(name="pin", join_key="pin_id", join_key_type="string")
events = Source.parquet(name="events", path="data/events", timestamp="ts")

FEATURES = {"clicks": Int64(), "ctr": Float32(), "score": Float64(), "flag": Bool(), "label": String(),
            "seen_at": Timestamp(), "taste": Vector(4), "half": Vector(3, "float16"), "recent": IdList(),
            "weighted": WeightedIdList()}


@signal(entity=user, source=events, features=FEATURES)
def everything(batch: pa.Table) -> pa.Table:
    """Every UFR type."""
    return batch


@signal(entity=pin, source=events, features={"views": Int64()})
def pin_views(batch: pa.Table) -> pa.Table:
    """A string-keyed signal."""
    return batch


@signal(entity=user, source=events, features={"clicks": Float64()})
def everything_v2(batch: pa.Table) -> pa.Table:
    """Same name as a feature of ``everything`` with another type (for the fingerprint check)."""
    return batch


def random_rows(n: int, *, seed: int = 0, start: datetime = T0, days: int = 3) -> pa.Table:
    """Rows of ``everything`` in UFR types, with nulls in every feature."""
    rng = np.random.default_rng(seed)
    ts = pa.array((int(start.timestamp() * 1e6) + rng.integers(0, days * 86_400_000_000, n)), pa.int64())
    ts = ts.cast(pa.timestamp("us", tz="UTC"))
    null = rng.random(n) < 0.2
    half = rng.standard_normal(n * 3).astype(np.float16)
    lengths = rng.integers(0, 4, n)
    ids = [None if null[i] else [int(x) for x in rng.integers(0, 1000, lengths[i])] for i in range(n)]
    weighted = [None if null[i] else [{"id": int(x), "weight": float(np.float32(rng.random()))}
                                      for x in rng.integers(0, 1000, lengths[i])] for i in range(n)]
    schema = everything.schema.table_schema({"user_id": pa.int64()})
    return pa.Table.from_arrays([
        pa.array(rng.integers(1, 50, n), pa.int64()), ts, ts,
        pa.array(rng.integers(0, 10, n), pa.int64(), mask=null),
        pa.array(rng.random(n).astype(np.float32), pa.float32(), mask=null),
        pa.array(rng.random(n), pa.float64(), mask=null),
        pa.array(rng.random(n) < 0.5, pa.bool_(), mask=null),
        pa.array([None if null[i] else f"label-{i}" for i in range(n)], pa.string()),
        pc.if_else(pa.array(null), pa.scalar(None, ts.type), ts),
        pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * 4).astype(np.float32)), 4,
                                          mask=pa.array(null)),
        pa.FixedSizeListArray.from_arrays(pa.array(half), 3, mask=pa.array(null)),
        pa.array(ids, FEATURES["recent"].arrow_type()),
        pa.array(weighted, FEATURES["weighted"].arrow_type()),
    ], schema=schema)


def sorted_rows(table: pa.Table) -> pa.Table:
    return table.sort_by([("event_timestamp", "ascending"), ("user_id", "ascending")])


# --- layout ---------------------------------------------------------------------------------------------
def test_table_name() -> None:
    assert table_name("user_engagement", 3) == "user_engagement__v3"


def test_table_layout(offline_store: OfflineStore, offline_catalog: Any) -> None:
    from pyiceberg.transforms import BucketTransform, DayTransform
    from pyiceberg.types import FloatType, ListType, LongType, StringType, StructType, TimestamptzType

    offline_store.ensure_table(everything, 2)
    table = offline_catalog.load_table("signals.everything__v2")
    schema = table.schema()
    assert [f.name for f in schema.fields][:3] == ["user_id", "event_timestamp", "created_timestamp"]
    assert [f.name for f in schema.fields][3:] == list(FEATURES)
    assert schema.find_field("user_id").required and isinstance(schema.find_field("user_id").field_type, LongType)
    ets = schema.find_field("event_timestamp")
    assert ets.required and isinstance(ets.field_type, TimestamptzType)
    assert not schema.find_field("created_timestamp").required
    for name in ("taste", "half"):
        ftype = schema.find_field(name).field_type
        assert isinstance(ftype, ListType) and isinstance(ftype.element_type, FloatType)
    recent = schema.find_field("recent").field_type
    assert isinstance(recent, ListType) and isinstance(recent.element_type, LongType)
    assert isinstance(schema.find_field("weighted").field_type.element_type, StructType)
    assert isinstance(schema.find_field("seen_at").field_type, TimestamptzType)

    spec = table.spec()
    assert len(spec.fields) == 2
    day, bucket = spec.fields
    assert isinstance(day.transform, DayTransform) and schema.find_column_name(day.source_id) == "event_timestamp"
    assert isinstance(bucket.transform, BucketTransform) and bucket.transform.num_buckets == 4
    assert schema.find_column_name(bucket.source_id) == "user_id"

    props = table.properties
    assert props["quasar.signal"] == "everything"
    assert props["quasar.version"] == "2"
    assert props["quasar.schema_fingerprint"] == everything.schema.fingerprint_hex

    pin_table = offline_store.ensure_table(pin_views, 1)
    assert isinstance(pin_table.schema().find_field("pin_id").field_type, StringType)
    assert offline_store.ensure_table(pin_views, 1).metadata.table_uuid == pin_table.metadata.table_uuid


def test_schema_mapping_functions() -> None:
    arrow = storage_schema(everything)
    assert arrow.names == ["user_id", "event_timestamp", "created_timestamp", *FEATURES]
    assert not arrow.field("user_id").nullable and not arrow.field("event_timestamp").nullable
    assert arrow.field("half").type == pa.list_(pa.field("element", pa.float32(), nullable=False))
    assert arrow.field("taste").type == pa.list_(pa.field("element", pa.float32(), nullable=False))
    assert arrow.field("recent").type == IdList().arrow_type()
    ice = iceberg_schema(everything)
    ids = [f.field_id for f in ice.fields]
    assert ids == list(range(1, len(FEATURES) + 4))
    assert max(index_by_id(ice)) == len(index_by_id(ice))            # nested ids follow, unique


# --- round trips ------------------------------------------------------------------------------------------
def test_every_type_round_trips_exactly(offline_store: OfflineStore) -> None:
    rows = random_rows(300)
    snapshot = offline_store.replace_window(everything, 1, rows, T0, T0 + 3 * DAY)
    assert snapshot == offline_store.current_snapshot_id("everything", 1)
    out = offline_store.read(everything, 1)
    expected_schema = everything.schema.table_schema({"user_id": pa.int64()})
    assert out.schema.equals(expected_schema)
    assert str(out.schema.field("taste").type) == "fixed_size_list<item: float not null>[4]"
    assert str(out.schema.field("half").type) == "fixed_size_list<item: halffloat not null>[3]"
    assert sorted_rows(out).equals(sorted_rows(rows))
    # float16 is exact, bit for bit (NaN included)
    got = sorted_rows(out).column("half").combine_chunks()
    want = sorted_rows(rows).column("half").combine_chunks()
    assert np.array_equal(got.values.to_numpy(zero_copy_only=False).view(np.uint16),
                          want.values.to_numpy(zero_copy_only=False).view(np.uint16))


def test_float16_nan_and_extremes_survive(offline_store: OfflineStore) -> None:
    halves = np.array([np.nan, 65504, -0.0, 6e-8, np.inf, 1.0009765625], dtype=np.float16)
    rows = random_rows(2)
    half = pa.FixedSizeListArray.from_arrays(pa.array(halves), type=Vector(3, "float16").arrow_type())
    rows = rows.set_column(rows.schema.get_field_index("half"), rows.schema.field("half"), half)
    offline_store.replace_window(everything, 1, rows, T0, T0 + 3 * DAY)
    out = sorted_rows(offline_store.read(everything, 1, columns=["event_timestamp", "user_id", "half"]))
    order = np.argsort(np.asarray(rows.column("event_timestamp").cast(pa.int64())), kind="stable")
    expected = halves.reshape(2, 3)[order].ravel()
    got = out.column("half").combine_chunks().values.to_numpy(zero_copy_only=False)
    assert np.array_equal(got.view(np.uint16), expected.view(np.uint16))


def test_restore_ufr_types_passes_other_columns_through() -> None:
    stored = to_storage(random_rows(5), everything).append_column("extra", pa.array(["x"] * 5, pa.large_string()))
    restored = restore_ufr_types(stored, everything.schema)
    assert restored.schema.field("taste").type == Vector(4).arrow_type()
    assert restored.schema.field("half").type == Vector(3, "float16").arrow_type()
    assert restored.schema.field("extra").type == pa.large_string()
    assert restore_ufr_types(restored, everything.schema) is restored          # nothing left to do


# --- windows ---------------------------------------------------------------------------------------------
def test_replace_window_replaces_exactly_its_days(offline_store: OfflineStore) -> None:
    first = random_rows(200, seed=1, days=4)
    offline_store.replace_window(everything, 1, first, T0, T0 + 4 * DAY)
    second = random_rows(50, seed=2, start=T0 + DAY, days=2)
    offline_store.replace_window(everything, 1, second, T0 + DAY, T0 + 3 * DAY)
    out = sorted_rows(offline_store.read(everything, 1))
    ts = first.column("event_timestamp")
    import pyarrow.compute as pc
    keep = pc.or_(pc.less(ts, pa.scalar(T0 + DAY, ts.type)), pc.greater_equal(ts, pa.scalar(T0 + 3 * DAY, ts.type)))
    expected = sorted_rows(pa.concat_tables([first.filter(keep), second]))
    assert out.equals(expected)
    # an empty window replace deletes those days
    offline_store.replace_window(everything, 1, first.slice(0, 0), T0, T0 + 4 * DAY)
    assert offline_store.read(everything, 1).num_rows == 0


def test_read_and_plan_files_push_the_window_down(offline_store: OfflineStore) -> None:
    rows = random_rows(400, days=4)
    offline_store.replace_window(everything, 1, rows, T0, T0 + 4 * DAY)
    window = offline_store.read(everything, 1, start=T0 + DAY, end=T0 + 2 * DAY, columns=["user_id", "event_timestamp"])
    ts = rows.column("event_timestamp").to_pylist()
    assert sorted(window.column("event_timestamp").to_pylist()) == sorted(t for t in ts if T0 + DAY <= t < T0 + 2 * DAY)
    assert window.column_names == ["user_id", "event_timestamp"]
    all_files = offline_store.plan_files("everything", 1)
    day_files = offline_store.plan_files("everything", 1, start=T0 + DAY, end=T0 + 2 * DAY)
    assert 0 < len(day_files) < len(all_files)
    assert all("event_timestamp_day=2026-01-02" in p for p in day_files)
    assert all(Path(p).is_file() and not p.startswith("file:") for p in all_files)


def test_time_travel_by_snapshot(offline_store: OfflineStore) -> None:
    first = random_rows(30, seed=3)
    old = offline_store.replace_window(everything, 1, first, T0, T0 + 3 * DAY)
    offline_store.replace_window(everything, 1, random_rows(10, seed=4), T0, T0 + 3 * DAY)
    assert offline_store.read(everything, 1).num_rows == 10
    assert sorted_rows(offline_store.read(everything, 1, snapshot_id=old)).equals(sorted_rows(first))
    assert len(offline_store.plan_files("everything", 1, snapshot_id=old)) >= 1
    with pytest.raises(NotFoundError, match="no snapshot 42"):
        offline_store.read(everything, 1, snapshot_id=42)


def test_bad_rows_leave_the_table_unchanged(offline_store: OfflineStore) -> None:
    rows = random_rows(20)
    snap = offline_store.replace_window(everything, 1, rows, T0, T0 + 3 * DAY)
    with pytest.raises(StoreError, match="outside the window"):
        offline_store.replace_window(everything, 1, rows, T0, T0 + DAY)
    nulled = rows.set_column(0, rows.schema.field(0).with_nullable(True), pa.nulls(20, pa.int64()))
    with pytest.raises(StoreError, match="null user_id"):
        offline_store.replace_window(everything, 1, nulled, T0, T0 + 3 * DAY)
    with pytest.raises(StoreError, match="not after start"):
        offline_store.replace_window(everything, 1, rows, T0, T0)
    assert offline_store.current_snapshot_id("everything", 1) == snap
    assert sorted_rows(offline_store.read(everything, 1)).equals(sorted_rows(rows))


def test_missing_table_and_columns(offline_store: OfflineStore) -> None:
    with pytest.raises(NotFoundError, match="signal everything v7 has no offline table yet: run quasar backfill"):
        offline_store.table("everything", 7)
    assert offline_store.current_snapshot_id("everything", 7) is None
    offline_store.ensure_table(everything, 1)
    assert offline_store.current_snapshot_id("everything", 1) is None
    assert offline_store.read(everything, 1).num_rows == 0
    assert offline_store.plan_files("everything", 1) == []
    with pytest.raises(StoreError, match=r"no column\(s\) \['nope'\]"):
        offline_store.read(everything, 1, columns=["nope"])


def test_schema_fingerprint_mismatch_is_refused(offline_store: OfflineStore) -> None:
    offline_store.ensure_table(everything, 1)
    clash = dataclasses.replace(everything_v2, name="everything")
    with pytest.raises(StoreError, match="created for schema"):
        offline_store.ensure_table(clash, 1)


# --- catalogs --------------------------------------------------------------------------------------------
def test_open_catalog_creates_folders(tmp_path: Path) -> None:
    catalog = open_catalog(uri=f"sqlite:///{tmp_path / 'deep' / 'er' / 'cat.db'}", warehouse=str(tmp_path / "wh"))
    assert (tmp_path / "deep" / "er" / "cat.db").exists() and (tmp_path / "wh").is_dir()
    store = OfflineStore(catalog, namespace="team")
    store.ensure_table(pin_views, 1)
    assert ("team", "pin_views__v1") in catalog.list_tables("team")


def test_open_catalog_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open the Iceberg catalog"):
        open_catalog(uri="sqlite:///" + str(tmp_path / "db"), warehouse=str(tmp_path / "wh"),
                     properties={"schema_version": "v9"})
    with pytest.raises(StoreError, match="cannot open the Iceberg catalog at nowhere://x"):
        open_catalog(uri="nowhere://x", warehouse=str(tmp_path / "wh"), properties={"type": "no-such-type"})
    with pytest.raises(StoreError, match="buckets"):
        OfflineStore(None, buckets=0)


@pytest.mark.postgres
def test_offline_store_on_a_postgresql_catalog(pg_database: str, tmp_path: Path) -> None:
    catalog = open_catalog(uri=pg_database, warehouse=str(tmp_path / "wh"))
    store = OfflineStore(catalog, buckets=2)
    rows = random_rows(40)
    snap = store.replace_window(everything, 1, rows, T0, T0 + 3 * DAY)
    again = open_catalog(uri=pg_database, warehouse=str(tmp_path / "wh"))
    assert OfflineStore(again).current_snapshot_id("everything", 1) == snap
    assert sorted_rows(OfflineStore(again).read(everything, 1)).equals(sorted_rows(rows))


def test_concurrent_windows_all_land(offline_store: OfflineStore) -> None:
    """Writers of different days race for the same table; conflicts are retried, nothing is lost."""
    offline_store.ensure_table(everything, 1)
    days = [random_rows(60, seed=20 + i, start=T0 + i * DAY, days=1) for i in range(4)]
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            offline_store.replace_window(everything, 1, days[i], T0 + i * DAY, T0 + (i + 1) * DAY)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted_rows(offline_store.read(everything, 1)).equals(sorted_rows(pa.concat_tables(days)))
