"""The Spark engine against the local engine on the same random data, in local[2]: transforms of every UFR
output type and order-dependent logic, whole backfills into real Iceberg tables (Spark writes the files,
pyiceberg commits them), re-runs, and failures midway that must leave the previous snapshot in place.

Aggregations and point-in-time joins run on both engines in test_aggregations.py, test_dataset.py and
test_dataset_iceberg.py (the ``engine`` / ``pit_engine`` fixtures), each against the same Python reference.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fixtures.offline import random_events, write_events
from quasar.registry import Registry
from quasar.signals import (
    Entity,
    Float32,
    Float64,
    IdList,
    Int64,
    Source,
    String,
    Vector,
    WeightedIdList,
    aggregate,
    count,
    last,
    mean,
    signal,
    sum_,
)
from quasar.signals.errors import BackfillError
from quasar.signals.signal import Signal
from quasar.signals.ufr.types import WEIGHTED_ID_STRUCT
from quasar.store.backfill import backfill
from quasar.store.catalog import open_catalog
from quasar.store.engines.local import LocalEngine
from quasar.store.engines.spark import SparkEngine
from quasar.store.sources import SourceReader
from quasar.store.tables import OfflineStore, local_path

pytestmark = pytest.mark.spark

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")
START, END = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC)


@signal(entity=user, source=events, name="user_history", online=True,
        features={"running_clicks": Int64(), "dwell": Float32(), "seen": IdList(), "weighted": WeightedIdList(),
                  "taste": Vector(4, "float16"), "label": String(), "share": Float64()})
def user_history(batch: pa.Table) -> pa.Table:
    """Order-dependent per-user state: a running click count in source order, and the ids seen so far."""
    users = batch["user_id"].to_numpy()
    clicks = batch["clicked"].to_numpy()
    items = batch["item_id"].to_pylist()
    running, seen, weighted = np.zeros(len(users), dtype=np.int64), [], []
    totals: dict[int, int] = {}
    history: dict[int, list[int]] = {}
    for i, u in enumerate(users.tolist()):
        totals[u] = totals.get(u, 0) + int(clicks[i])
        running[i] = totals[u]
        history.setdefault(u, []).append(items[i])
        seen.append(history[u][-5:])
        weighted.append([{"id": x, "weight": float(n)} for n, x in enumerate(history[u][-3:])])
    dwell = batch["dwell_s"]
    taste = pa.FixedSizeListArray.from_arrays(
        pa.array(np.repeat(dwell.fill_null(0).to_numpy(), 4).astype(np.float16) / 7, pa.float16()), 4)
    share = pc.divide(pa.array(running, pa.float64()), pc.add(pc.cast(batch["item_id"], pa.float64()), 0.5))
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"], "running_clicks": running,
                     "dwell": pc.cast(dwell, pa.float32()), "seen": pa.array(seen, pa.list_(pa.int64())),
                     "weighted": pa.array(weighted, pa.list_(WEIGHTED_ID_STRUCT)), "taste": taste,
                     "label": pc.cast(batch["item_id"], pa.string()), "share": share})


@signal(entity=user, source=events, name="derived_key", features={"clicks": Int64()})
def derived_key(batch: pa.Table) -> pa.Table:
    """The key is computed inside the function: the source has no ``user_id`` column to group by."""
    return pa.table({"user_id": pc.add(batch["uid"], 1000), "event_timestamp": batch["ts"],
                     "clicks": batch["clicked"]})


user_activity = aggregate(name="user_activity", entity=user, source=events, step="6h",
                          aggregations=[count("1d", name="events_1d"), sum_("dwell_s", "2d", name="dwell_2d"),
                                        mean("clicked", "1d", name="ctr_1d"), last("item_id", "2d", name="last_item")])
SIGNALS = [user_history, user_activity]


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("user_id", "ascending"), ("event_timestamp", "ascending")])


@pytest.mark.parametrize("seed", [3, 4])
def test_transforms_equal_the_local_engine(spark_engine: SparkEngine, seed: int) -> None:
    source = random_events(n=400, days=5, users=25, seed=seed, step_us=3_600_000_000)
    with LocalEngine() as local:
        want = local.compute(user_history, source, START, END)
    got = spark_engine.compute(user_history, source, START, END)
    assert got.schema == want.schema
    assert _sorted(got).equals(_sorted(want))
    assert got.num_rows == source.num_rows


def test_a_key_derived_inside_the_function_runs_in_one_group(spark_engine: SparkEngine) -> None:
    source = random_events(n=50, seed=5).rename_columns(["uid", "ts", "clicked", "dwell_s", "item_id"])
    got = spark_engine.compute(derived_key, source, START, END)
    assert _sorted(got).equals(_sorted(derived_key.transform(source)))     # type: ignore[misc]


def test_an_empty_source_still_gives_the_function_schema(spark_engine: SparkEngine) -> None:
    source = random_events(n=10, seed=1).slice(0, 0)
    got = spark_engine.compute(user_history, source, START, END)
    assert got.num_rows == 0 and got.schema == user_history.transform(source).schema  # type: ignore[misc]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Two stores on two catalogs over the same events, and a registry for the run log."""
    write_events(random_events(n=600, days=5, users=30, seed=11, step_us=60_000_000), tmp_path / "data" / "events")
    stores = {name: OfflineStore(open_catalog(uri=f"sqlite:///{tmp_path / name / 'catalog.db'}",
                                              warehouse=str(tmp_path / name / "warehouse"), properties={}),
                                 namespace="signals", buckets=4) for name in ("local", "spark")}
    with Registry.open(f"sqlite:///{tmp_path / 'registry.db'}") as registry:
        registry.register_definitions([user], [events], [*SIGNALS, derived_key], module="tests.spark_engine")
        yield {"root": tmp_path, "stores": stores, "registry": registry}


def _backfill(world: dict[str, Any], engine: Any, store: OfflineStore, sig: Signal, start: Any = START,
              end: Any = END) -> Any:
    reader = SourceReader(root=world["root"], store=store, catalog=store.catalog)
    return backfill(signal=sig, version=1, start=start, end=end, store=store, engine=engine, sources=reader,
                    runs=world["registry"])


def test_backfills_write_the_same_iceberg_tables(world: dict[str, Any], spark_engine: SparkEngine) -> None:
    local, spark = world["stores"]["local"], world["stores"]["spark"]
    with LocalEngine() as engine:
        for sig in SIGNALS:
            _backfill(world, engine, local, sig)
    for sig in SIGNALS:
        result = _backfill(world, spark_engine, spark, sig)
        assert result.rows > 0
        want, got = local.read(sig, 1), spark.read(sig, 1)
        assert got.schema == want.schema
        assert _sorted(got.drop_columns(["created_timestamp"])).equals(
            _sorted(want.drop_columns(["created_timestamp"]))), sig.name
        files = spark.plan_files(sig.name, 1)
        location = local_path(spark.location(sig, 1))
        assert files and all(f.startswith(location + "/data/") for f in files)
        if sig is user_history:       # written by the executors with pyiceberg's writer: Iceberg field ids
            ids = pq.read_schema(files[0]).field("user_id").metadata
            assert ids is not None and ids.get(b"PARQUET:field_id") == b"1"
        # the partition each file is committed under is the one pyiceberg computes for its rows
        tasks = list(spark.table(sig.name, 1).scan().plan_files())
        assert sum(t.file.record_count for t in tasks) == want.num_rows
        # one file per (day, bucket) partition at these sizes, however many transform groups fed it
        partitions = [tuple(t.file.partition) for t in tasks]
        assert len(partitions) == len(set(partitions)), sig.name
        snapshot = spark.table(sig.name, 1).current_snapshot()
        assert snapshot.summary["quasar.rows"] == str(want.num_rows)


def test_a_spark_backfill_rerun_and_a_narrower_window_replace_exactly_their_days(
        world: dict[str, Any], spark_engine: SparkEngine) -> None:
    spark = world["stores"]["spark"]
    for sig, (start, end) in [(user_history, (START, END)), (user_activity, ("2026-01-02", "2026-01-04"))]:
        first = _backfill(world, spark_engine, spark, sig)
        before = _sorted(spark.read(sig, 1).drop_columns(["created_timestamp"]))
        files = set(spark.plan_files(sig.name, 1))
        again = _backfill(world, spark_engine, spark, sig, start, end)
        assert again.snapshot_id != first.snapshot_id
        assert _sorted(spark.read(sig, 1).drop_columns(["created_timestamp"])).equals(before), sig.name
        now = set(spark.plan_files(sig.name, 1))
        if sig is user_history:                  # the whole window: every file replaced
            assert now.isdisjoint(files)
        else:                                    # two of five days: those files replaced, the others kept
            assert now & files and now - files


@signal(entity=user, source=events, name="user_history", online=True,
        features={"running_clicks": Int64(), "dwell": Float32(), "seen": IdList(), "weighted": WeightedIdList(),
                  "taste": Vector(4, "float16"), "label": String(), "share": Float64()})
def failing_history(batch: pa.Table) -> pa.Table:
    """The same signal, failing for the entities of one bucket group only: most of the job succeeds."""
    if (pc.max(batch["user_id"]).as_py() or 0) >= 29:
        raise RuntimeError("the source went away for user 29")
    return user_history.transform(batch)  # type: ignore[misc]


def _data_dirs(store: OfflineStore) -> set[str]:
    data = Path(local_path(store.location(user_history, 1))) / "data"
    return {p.name for p in data.iterdir()} if data.exists() else set()


def test_a_spark_backfill_that_fails_midway_leaves_the_previous_snapshot(world: dict[str, Any],
                                                                        spark_engine: SparkEngine,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    spark = world["stores"]["spark"]
    good = _backfill(world, spark_engine, spark, user_history)
    rows = _sorted(spark.read(user_history, 1))
    dirs = _data_dirs(spark)
    with pytest.raises(BackfillError, match=r"failed at compute.*the source went away for user 29"):
        _backfill(world, spark_engine, spark, failing_history)
    assert spark.current_snapshot_id(user_history.name, 1) == good.snapshot_id
    assert _sorted(spark.read(user_history, 1)).equals(rows)
    assert _data_dirs(spark) == dirs

    def refuse(*args: Any, **kwargs: Any) -> None:       # the files are written, then the commit fails
        raise OSError("catalog unreachable")

    monkeypatch.setattr(OfflineStore, "replace_window_files", refuse)
    with pytest.raises(BackfillError, match=r"failed at write.*catalog unreachable"):
        _backfill(world, spark_engine, spark, user_history)
    monkeypatch.undo()
    assert spark.current_snapshot_id(user_history.name, 1) == good.snapshot_id
    assert _sorted(spark.read(user_history, 1)).equals(rows)
    assert _data_dirs(spark) == dirs                       # the written folder is gone with the failed run
    statuses = [r.status for r in world["registry"].runs(user_history.name)]
    assert statuses[:3] == ["failed", "failed", "succeeded"]


def test_a_spark_transform_backfill_keeps_the_window_s_rows_off_the_driver(
        world: dict[str, Any], spark_engine: SparkEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver plans and commits: it reads no source row, sends none to Spark and collects none back (only
    a row per day and a row per written file come back); the table equals the local engine's."""
    from pyspark.sql import SparkSession
    from pyspark.sql.classic.dataframe import DataFrame

    local, spark = world["stores"]["local"], world["stores"]["spark"]
    with LocalEngine() as engine:
        _backfill(world, engine, local, user_history)
    rows_of_the_window = {"user_id", "running_clicks", "clicked", "ts"}
    pulled: list[list[str]] = []

    def refuse_read(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the driver read the source rows")

    def guard(name: str) -> Any:
        original = getattr(DataFrame, name)

        def guarded(self: DataFrame, *args: Any, **kwargs: Any) -> Any:
            pulled.append(list(self.columns))
            if rows_of_the_window & set(self.columns):
                raise AssertionError(f"DataFrame.{name} brought rows of the window to the driver: {self.columns}")
            return original(self, *args, **kwargs)
        return guarded

    create = SparkSession.createDataFrame

    def guarded_create(self: SparkSession, data: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(data, pa.Table) or type(data).__name__ == "DataFrame":
            raise AssertionError("the driver sent rows to Spark")
        return create(self, data, *args, **kwargs)

    monkeypatch.setattr(SourceReader, "read", refuse_read)
    for name in ("collect", "toArrow", "toPandas", "toLocalIterator", "take", "head", "first", "tail"):
        monkeypatch.setattr(DataFrame, name, guard(name))
    monkeypatch.setattr(SparkSession, "createDataFrame", guarded_create)
    result = _backfill(world, spark_engine, spark, user_history)
    monkeypatch.undo()
    assert [c for c in pulled if "path" in c] == [["path", "day", "bucket", "records"]]   # the written files
    assert result.rows == local.read(user_history, 1).num_rows
    want, got = local.read(user_history, 1), spark.read(user_history, 1)
    assert _sorted(got.drop_columns(["created_timestamp"])).equals(_sorted(want.drop_columns(["created_timestamp"])))
    run = world["registry"].runs(user_history.name)[0]
    assert run.details["source_rows"] == 600 and run.details["source_files"] >= 1


def test_a_window_over_several_compute_partitions_writes_the_local_engine_s_tables(
        world: dict[str, Any], spark_engine: SparkEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small window is read, computed and persisted as one Spark partition (each task costs a round trip
    whatever its rows); a window of more than ``PARTITION_BYTES`` of source is spread over more, up to
    ``spark.sql.shuffle.partitions``, and the tables are the local engine's all the same."""
    from quasar.store.engines import spark_backfill
    from quasar.store.engines.spark_source import plan_source

    local, spark = world["stores"]["local"], world["stores"]["spark"]
    plan = plan_source(SourceReader(root=world["root"], store=spark, catalog=spark.catalog), events, START, END)
    session = spark_engine.session
    most = int(session.conf.get("spark.sql.shuffle.partitions"))
    assert spark_backfill.compute_partitions(session, plan) == 1
    monkeypatch.setattr(spark_backfill, "PARTITION_BYTES", 1)
    assert spark_backfill.compute_partitions(session, plan) == most > 1
    seen: list[int] = []
    write = spark_backfill._write

    def counting(session: Any, signal: Signal, version: int, computed: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(computed.rdd.getNumPartitions())
        return write(session, signal, version, computed, *args, **kwargs)

    monkeypatch.setattr(spark_backfill, "_write", counting)
    with LocalEngine() as engine:
        for sig in SIGNALS:
            _backfill(world, engine, local, sig)
    for sig in SIGNALS:
        _backfill(world, spark_engine, spark, sig)
        assert _sorted(spark.read(sig, 1).drop_columns(["created_timestamp"])).equals(
            _sorted(local.read(sig, 1).drop_columns(["created_timestamp"]))), sig.name
    assert seen == [most] * len(SIGNALS)


def test_a_spark_backfill_loads_its_table_once(world: dict[str, Any], spark_engine: SparkEngine,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The table the driver loads to write into is the one its commit stages on: a rerun into an existing table
    loads it once (the commit loaded it a second time; a fresh load only follows another writer's commit). The
    SQL catalog's own commit_table reads the current metadata to check the commit's requirements: not counted."""
    spark = world["stores"]["spark"]
    _backfill(world, spark_engine, spark, user_history)                  # the table exists from here on
    catalog = spark.catalog
    loads: list[Any] = []
    committing: list[bool] = []
    load, commit_table = catalog.load_table, catalog.commit_table

    def counting(identifier: Any) -> Any:
        if not committing:
            loads.append(tuple(identifier) if not isinstance(identifier, str) else identifier)
        return load(identifier)

    def commit(*args: Any, **kwargs: Any) -> Any:
        committing.append(True)
        try:
            return commit_table(*args, **kwargs)
        finally:
            committing.pop()

    monkeypatch.setattr(catalog, "load_table", counting)
    monkeypatch.setattr(catalog, "commit_table", commit)
    result = _backfill(world, spark_engine, spark, user_history)
    monkeypatch.undo()
    assert result.rows > 0
    assert loads.count(("signals", "user_history__v1")) == 1, loads
