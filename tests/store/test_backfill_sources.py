"""Reading a source's window: Parquet files and folders, Iceberg tables, another signal's table."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fixtures.offline import random_events, write_events
from quasar.signals import Entity, Float64, Int64, Source, signal
from quasar.signals.errors import StoreError
from quasar.store.sources import SourceReader
from quasar.store.tables import OfflineStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
UTC_US = pa.timestamp("us", tz="UTC")

user = Entity(name="user", join_key="user_id")


@signal(entity=user, source=Source.parquet(name="events", path="data/events", timestamp="ts"),
        features={"clicks": Int64(), "dwell": Float64()})
def upstream_clicks(batch: pa.Table) -> pa.Table:
    """An upstream signal whose table another signal reads."""
    return batch


def rows_between(table: pa.Table, start: datetime, end: datetime, ts: str = "ts") -> list[dict[str, Any]]:
    keep = [r for r in table.to_pylist() if start <= r[ts] < end]
    return sorted(keep, key=lambda r: (r[ts], r["user_id"], r["item_id"]))


def ordered(table: pa.Table, ts: str = "ts") -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: (r[ts], r["user_id"], r["item_id"]))


@pytest.fixture
def reader(tmp_path: Path, offline_store: OfflineStore, offline_catalog: Any) -> SourceReader:
    return SourceReader(root=tmp_path, store=offline_store, catalog=offline_catalog,
                        upstream_versions={"upstream_clicks": (upstream_clicks, 1)})


# --- parquet ----------------------------------------------------------------------------------------------
def test_parquet_folder_window(reader: SourceReader, events_parquet: Callable[..., Path]) -> None:
    events_parquet(n=400, days=5, seed=2)
    every = random_events(n=400, days=5, seed=2)
    source = Source.parquet(name="events", path="data/events", timestamp="ts")
    got = reader.read(source, T0 + DAY, T0 + 3 * DAY)
    assert got.schema.field("ts").type == UTC_US
    assert ordered(got) == rows_between(every, T0 + DAY, T0 + 3 * DAY)
    narrow = reader.read(source, T0 + DAY, T0 + 3 * DAY, columns=["user_id"])
    assert narrow.column_names == ["user_id", "ts"]
    assert narrow.num_rows == got.num_rows


def test_parquet_single_file_naive_and_coarse_timestamps(reader: SourceReader, tmp_path: Path) -> None:
    stamps = [T0 - timedelta(microseconds=1), T0, T0 + timedelta(hours=5), T0 + DAY - timedelta(microseconds=1),
              T0 + DAY]
    naive_ns = pa.array([s.replace(tzinfo=None) for s in stamps], pa.timestamp("ns"))
    table = pa.table({"user_id": list(range(5)), "when": naive_ns})
    pq.write_table(table, tmp_path / "one.parquet")
    source = Source.parquet(name="one", path=str(tmp_path / "one.parquet"), timestamp="when")
    got = reader.read(source, T0, T0 + DAY)
    assert got.schema.field("when").type == UTC_US
    assert got.column("user_id").to_pylist() == [1, 2, 3]
    assert got.column("when").to_pylist() == stamps[1:4]
    # whole seconds: the bounds are compared in the column's own unit
    seconds = pa.table({"user_id": [0, 1, 2], "when": pa.array([T0 - timedelta(seconds=1), T0, T0 + DAY],
                                                                pa.timestamp("s", tz="UTC"))})
    pq.write_table(seconds, tmp_path / "sec.parquet")
    got = reader.read(Source.parquet(name="sec", path="sec.parquet", timestamp="when"),
                      T0 - timedelta(milliseconds=500), T0 + DAY)
    assert got.column("user_id").to_pylist() == [1]


def test_parquet_window_is_pushed_down(reader: SourceReader, tmp_path: Path) -> None:
    """Files whose statistics lie outside the window are never decoded: their data pages are garbage."""
    every = random_events(n=300, days=4, seed=5)
    folder = write_events(every, tmp_path / "data" / "pushed", files=4)
    last = sorted(folder.glob("*.parquet"))[-1]
    first_ts = pq.read_table(last).column("ts")[0].as_py()
    assert first_ts >= T0 + 2 * DAY                          # the last file holds only later events
    raw = bytearray(last.read_bytes())
    footer = int.from_bytes(raw[-8:-4], "little")
    raw[4:len(raw) - 8 - footer] = bytes(len(raw) - 12 - footer)   # zero every data page, keep the footer
    last.write_bytes(bytes(raw))
    source = Source.parquet(name="pushed", path="data/pushed", timestamp="ts")
    got = reader.read(source, T0, T0 + DAY)
    assert ordered(got) == rows_between(every, T0, T0 + DAY)
    with pytest.raises(StoreError, match="source pushed: reading the Parquet files"):
        reader.read(source, T0, T0 + 4 * DAY)


def test_parquet_errors_name_the_source(reader: SourceReader, events_parquet: Callable[..., Path],
                                        tmp_path: Path) -> None:
    events_parquet(n=10)
    with pytest.raises(StoreError, match=r"source gone: Parquet path .*nowhere does not exist"):
        reader.read(Source.parquet(name="gone", path="nowhere", timestamp="ts"), T0, T0 + DAY)
    with pytest.raises(StoreError, match=r"source events: file data/events/part-000\.parquet has no timestamp "
                                         r"column 'when'"):
        reader.read(Source.parquet(name="events", path="data/events", timestamp="when"), T0, T0 + DAY)
    with pytest.raises(StoreError, match=r"source events: column\(s\) \['nope'\] not found"):
        reader.read(Source.parquet(name="events", path="data/events", timestamp="ts"), T0, T0 + DAY,
                    columns=["nope"])
    with pytest.raises(StoreError, match="stores the timestamp column 'item_id' as int64, but it must be a timestamp"):
        reader.read(Source.parquet(name="events", path="data/events", timestamp="item_id"), T0, T0 + DAY)


# --- iceberg ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tz", [True, False], ids=["timestamptz", "timestamp"])
def test_iceberg_table_window(reader: SourceReader, offline_catalog: Any, tz: bool) -> None:
    every = random_events(n=300, days=4, seed=9)
    stored = every if tz else every.set_column(1, "ts", every.column("ts").cast(pa.timestamp("us")))
    offline_catalog.create_namespace_if_not_exists("raw")
    table = offline_catalog.create_table("raw.clicks", schema=stored.schema)
    table.append(stored)
    source = Source.iceberg(name="raw_clicks", table="raw.clicks", timestamp="ts")
    got = reader.read(source, T0 + DAY, T0 + 2 * DAY)
    assert got.schema.field("ts").type == UTC_US
    assert ordered(got) == rows_between(every, T0 + DAY, T0 + 2 * DAY)
    assert reader.read(source, T0, T0 + DAY, columns=["clicked"]).column_names == ["clicked", "ts"]


def test_iceberg_errors_name_the_source(reader: SourceReader, offline_catalog: Any) -> None:
    with pytest.raises(StoreError, match=r"source raw_clicks: Iceberg table raw\.missing does not exist"):
        reader.read(Source.iceberg(name="raw_clicks", table="raw.missing", timestamp="ts"), T0, T0 + DAY)
    offline_catalog.create_namespace_if_not_exists("raw")
    offline_catalog.create_table("raw.clicks", schema=random_events(n=1).schema)
    with pytest.raises(StoreError, match="source raw_clicks: timestamp column 'when' is not in Iceberg table"):
        reader.read(Source.iceberg(name="raw_clicks", table="raw.clicks", timestamp="when"), T0, T0 + DAY)
    with pytest.raises(StoreError, match="has type long; it must be a timestamp"):
        reader.read(Source.iceberg(name="raw_clicks", table="raw.clicks", timestamp="item_id"), T0, T0 + DAY)


@pytest.mark.parametrize("tz", [True, False], ids=["timestamptz", "timestamp"])
def test_an_iceberg_source_planned_for_executors_reads_what_the_reader_reads(reader: SourceReader,
                                                                          offline_catalog: Any, tz: bool) -> None:
    """The Spark engine's plan (the same checks, then the scan's files read part by part) gives the read's rows."""
    from quasar.store.engines.spark_source import plan_source, read_part

    every = random_events(n=300, days=4, seed=9)
    stored = every if tz else every.set_column(1, "ts", every.column("ts").cast(pa.timestamp("us")))
    offline_catalog.create_namespace_if_not_exists("raw")
    table = offline_catalog.create_table("raw.clicks", schema=stored.schema)
    for part in range(3):                          # three snapshots: three files to plan
        table.append(stored.slice(part * 100, 100))
    source = Source.iceberg(name="raw_clicks", table="raw.clicks", timestamp="ts")
    plan = plan_source(reader, source, T0 + DAY, T0 + 3 * DAY)
    got = pa.concat_tables([read_part(plan, i) for i in range(len(plan.parts))])
    assert len(plan.parts) > 1 and got.schema == plan.schema
    assert ordered(got) == ordered(reader.read(source, T0 + DAY, T0 + 3 * DAY))
    with pytest.raises(StoreError, match="has type long; it must be a timestamp"):
        plan_source(reader, Source.iceberg(name="raw_clicks", table="raw.clicks", timestamp="item_id"), T0, T0 + DAY)


# --- another signal --------------------------------------------------------------------------------------
def test_signal_on_signal(reader: SourceReader, offline_store: OfflineStore) -> None:
    every = random_events(n=200, days=3, seed=4)
    rows = pa.table({"user_id": every["user_id"], "event_timestamp": every["ts"], "clicks": every["clicked"],
                     "dwell": every["dwell_s"]})
    offline_store.replace_window(upstream_clicks, 1, rows, T0, T0 + 3 * DAY)
    source = Source.signal(upstream_clicks)
    got = reader.read(source, T0 + DAY, T0 + 2 * DAY)
    assert got.schema.field("event_timestamp").type == UTC_US
    want = sorted((r["event_timestamp"], r["user_id"], r["clicks"]) for r in rows.to_pylist()
                  if T0 + DAY <= r["event_timestamp"] < T0 + 2 * DAY)
    assert sorted((r["event_timestamp"], r["user_id"], r["clicks"]) for r in got.to_pylist()) == want
    assert reader.read(source, T0, T0 + DAY, columns=["dwell"]).column_names == ["dwell", "event_timestamp"]


def test_signal_source_errors(reader: SourceReader, tmp_path: Path, offline_store: OfflineStore,
                              offline_catalog: Any) -> None:
    with pytest.raises(StoreError, match="source upstream_clicks_output: signal upstream_clicks v1 has no "
                                         "offline table yet: run quasar backfill upstream_clicks"):
        reader.read(Source.signal(upstream_clicks), T0, T0 + DAY)
    bare = SourceReader(root=tmp_path, store=offline_store, catalog=offline_catalog)
    with pytest.raises(StoreError, match="no version of upstream signal upstream_clicks was given"):
        bare.read(Source.signal("upstream_clicks"), T0, T0 + DAY)


# --- one logical schema in several encodings; declared schemas on Iceberg (issue 14, item 3) -------------------
def test_parquet_files_in_other_encodings_of_one_type_read_together(reader: SourceReader, tmp_path: Path) -> None:
    """Each writer picks its own encoding (string or large_string or a dictionary; ms, us or ns, naive or UTC):
    every file is scanned in its own types, the window exact in each, and the rows come back in one schema."""
    folder = tmp_path / "data" / "mixed"
    folder.mkdir(parents=True)
    stamps = [T0 + timedelta(hours=1), T0 + DAY + timedelta(milliseconds=3), T0 - timedelta(milliseconds=1)]
    pq.write_table(pa.table({"user_id": [1, 2, 3], "ts": pa.array(stamps, UTC_US),
                             "name": pa.array(["a", "b", "c"])}), folder / "a.parquet")
    pq.write_table(pa.table({"user_id": [4, 5, 6], "ts": pa.array([s.replace(tzinfo=None) for s in stamps],
                                                                  pa.timestamp("ms")),
                             "name": pa.array(["d", "e", "f"], pa.large_string())}), folder / "b.parquet")
    pq.write_table(pa.table({"user_id": [7, 8, 9], "ts": pa.array(stamps, pa.timestamp("ns", tz="UTC")),
                             "name": pa.array(["g", "h", "i"]).dictionary_encode()}), folder / "c.parquet")
    got = reader.read(Source.parquet(name="mixed", path="data/mixed", timestamp="ts"), T0, T0 + DAY)
    assert got.schema == pa.schema([("user_id", pa.int64()), ("ts", UTC_US), ("name", pa.string())])
    assert sorted(got.to_pylist(), key=lambda r: r["user_id"]) == [
        {"user_id": u, "ts": T0 + timedelta(hours=1), "name": n} for u, n in ((1, "a"), (4, "d"), (7, "g"))]


def test_iceberg_source_declared_schema_and_null_event_times(reader: SourceReader, offline_catalog: Any) -> None:
    every = random_events(n=50, days=2, seed=3)
    offline_catalog.create_namespace_if_not_exists("raw")
    table = offline_catalog.create_table("raw.clicks", schema=every.schema)
    table.append(every)
    declared = Source.iceberg(name="raw_clicks", table="raw.clicks", timestamp="ts",
                              schema={"user_id": "int64", "clicked": "bool"})
    with pytest.raises(StoreError, match=r"source raw_clicks: Iceberg table raw\.clicks stores column 'clicked' as "
                                         r"int64, but the source's schema= declares bool"):
        reader.read(declared, T0, T0 + DAY)
    typed = Source.iceberg(name="raw_clicks", table="raw.clicks", timestamp="ts",
                           schema={"user_id": "int64", "clicked": "int64"})
    got = reader.read(typed, T0, T0 + DAY)
    assert got.column_names == ["user_id", "clicked", "ts"]            # the declared columns, nothing else
    holes = every.slice(0, 2).set_column(1, "ts", pa.array([None, None], UTC_US))
    table.append(holes)
    with pytest.raises(StoreError, match=r"Iceberg table raw\.clicks has 2 rows with a null event time in 'ts'"):
        reader.read(typed, T0, T0 + DAY)
    dropping = Source.iceberg(name="raw_clicks", table="raw.clicks", timestamp="ts", null_timestamps="drop")
    assert reader.read(dropping, T0, T0 + 2 * DAY).num_rows == every.num_rows
    assert reader.last_read == {"source_null_timestamps_dropped": 2}
