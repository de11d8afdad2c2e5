"""The Spark point-in-time join runs bucket by bucket on every table the product writes.

A backfill on the local engine writes through pyiceberg (``<key>_bucket=<b>`` folders); a transform's backfill on
the Spark engine writes the same layout from its executors; the Spark driver-path writer (aggregations, and tables
written before) writes ``__quasar_bucket=<b>`` folders. On both, the join must run one Spark task per
bucket the spine's keys fall in, each reading only its bucket's files, and give the local engine's answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fixtures.offline import random_events, write_events
from quasar.registry import Registry
from quasar.signals import Entity, Float64, Int64, Source, signal
from quasar.signals.signal import Signal
from quasar.store.backfill import backfill
from quasar.store.buckets import iceberg_buckets
from quasar.store.catalog import open_catalog
from quasar.store.dataset import build_training_dataset
from quasar.store.engines.base import Engine
from quasar.store.engines.local import LocalEngine
from quasar.store.engines.spark import SparkEngine
from quasar.store.sources import SourceReader
from quasar.store.tables import OfflineStore

pytestmark = pytest.mark.spark

BUCKETS = 4
user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")
START, END = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC)


@signal(entity=user, source=events, name="user_clicks", ttl="2d", features={"clicks": Int64(), "dwell": Float64()})
def user_clicks(batch: pa.Table) -> pa.Table:
    """Each event's clicks and dwell, as they came."""
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"], "clicks": batch["clicked"],
                     "dwell": batch["dwell_s"]})


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    write_events(random_events(n=800, days=5, users=30, seed=21, step_us=60_000_000), tmp_path / "data" / "events")
    stores = {name: OfflineStore(open_catalog(uri=f"sqlite:///{tmp_path / name / 'catalog.db'}",
                                              warehouse=str(tmp_path / name / "warehouse"), properties={}),
                                 namespace="signals", buckets=BUCKETS) for name in ("local", "spark")}
    with Registry.open(f"sqlite:///{tmp_path / 'registry.db'}") as registry:
        registry.register_definitions([user], [events], [user_clicks], module="tests.spark_pit_routing")
        yield {"root": tmp_path, "stores": stores, "registry": registry}


def _legacy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spark backfills through the driver path: Spark's own Parquet writer, ``__quasar_bucket=`` folders."""
    monkeypatch.setattr(SparkEngine, "backfill_window", lambda self, **kwargs: None)


def _backfill(world: dict[str, Any], engine: Engine, store: OfflineStore) -> None:
    reader = SourceReader(root=world["root"], store=store, catalog=store.catalog)
    backfill(signal=user_clicks, version=1, start=START, end=END, store=store, engine=engine, sources=reader,
             runs=world["registry"])


def _dataset(store: OfflineStore, spine: pa.Table, engine: Engine) -> pa.Table:
    def resolve(name: str, version: int | None) -> tuple[Signal, int]:
        return user_clicks, 1

    def store_files(name: str, version: int, start: datetime | None,
                    end: datetime | None) -> tuple[list[str], int | None, int | None]:
        snapshot = store.current_snapshot_id(name, version)
        files = store.plan_files(name, version, start=start, end=end, snapshot_id=snapshot)
        return files, snapshot, store.bucket_count(name, version)

    return build_training_dataset(spine, ["user_clicks"], resolve=resolve, store_files=store_files,
                                  engine=engine).table


def _spine(n: int = 300, seed: int = 2) -> pa.Table:
    rng = np.random.default_rng(seed)
    micros = rng.integers(0, 6 * 86_400_000_000, n)
    times = [START + timedelta(microseconds=int(m)) for m in micros]
    return pa.table({"user_id": pa.array(rng.integers(1, 35, n), pa.int64()),        # a few users have no rows
                     "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC")), "label": np.arange(n)})


@pytest.mark.parametrize(("writer", "folder"), [("local", "user_id_bucket="), ("spark", "user_id_bucket="),
                                                ("legacy", "__quasar_bucket=")])
def test_the_spark_join_runs_one_task_per_bucket_on_tables_either_engine_wrote(
        world: dict[str, Any], spark_engine: SparkEngine, writer: str, folder: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if writer == "legacy":
        _legacy(monkeypatch)
    store = world["stores"]["spark" if writer == "legacy" else writer]
    with LocalEngine() as local:
        _backfill(world, local if writer == "local" else spark_engine, store)
        files = store.plan_files(user_clicks.name, 1)
        assert files and all(folder in f for f in files)            # the layout this writer produces
        spine = _spine()
        want = _dataset(store, spine, local)
    got = _dataset(store, spine, spark_engine)
    assert got.equals(want)
    assert pc.count(got["clicks"]).as_py() > 100                      # real values, not all nulls
    buckets = set(iceberg_buckets(spine["user_id"], BUCKETS).tolist())
    assert len(buckets) == BUCKETS
    assert spark_engine.last_join_groups == BUCKETS                   # one task per bucket, not one for all


def test_a_table_with_both_layouts_still_routes_by_bucket(world: dict[str, Any], spark_engine: SparkEngine,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A Spark backfill, then rows pushed offline (appended by pyiceberg): files of both layouts in one table."""
    store = world["stores"]["spark"]
    _legacy(monkeypatch)
    _backfill(world, spark_engine, store)
    monkeypatch.undo()
    when = START + timedelta(days=2, hours=5)
    pushed = pa.table({"user_id": pa.array([3, 4, 5, 6], pa.int64()),
                       "event_timestamp": pa.array([when] * 4, pa.timestamp("us", tz="UTC")),
                       "created_timestamp": pa.array([when] * 4, pa.timestamp("us", tz="UTC")),
                       "clicks": pa.array([70, 71, 72, 73], pa.int64()), "dwell": pa.array([1.0] * 4)})
    store.append(user_clicks, 1, pushed)
    files = store.plan_files(user_clicks.name, 1)
    assert any("__quasar_bucket=" in f for f in files) and any("user_id_bucket=" in f for f in files)
    spine = pa.table({"user_id": pa.array([3, 4, 5, 6, *range(1, 31)], pa.int64()),
                      "event_timestamp": pa.array([when + timedelta(seconds=1)] * 34, pa.timestamp("us", tz="UTC"))})
    with LocalEngine() as local:
        want = _dataset(store, spine, local)
    got = _dataset(store, spine, spark_engine)
    assert got.equals(want)
    assert got["clicks"].to_pylist()[:4] == [70, 71, 72, 73]
    assert spark_engine.last_join_groups == len(set(iceberg_buckets(spine["user_id"], BUCKETS).tolist())) == BUCKETS


def test_a_compacted_spark_table_rebucketed_still_joins_and_takes_spark_writes(
        world: dict[str, Any], spark_engine: SparkEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spark's files (name-mapped, ``__quasar_bucket=`` folders) and a push, re-bucketed 4 -> 2 by compaction: the
    same answers on both engines, routed by the new count, and the next Spark backfill writes into the new spec."""
    store = world["stores"]["spark"]
    _legacy(monkeypatch)
    _backfill(world, spark_engine, store)
    monkeypatch.undo()
    when = START + timedelta(days=2, hours=5)
    store.append(user_clicks, 1, pa.table({
        "user_id": pa.array([3, 4], pa.int64()), "event_timestamp": pa.array([when] * 2, pa.timestamp("us", tz="UTC")),
        "created_timestamp": pa.array([when] * 2, pa.timestamp("us", tz="UTC")),
        "clicks": pa.array([70, 71], pa.int64()), "dwell": pa.array([1.0] * 2)}))
    spine = _spine()
    with LocalEngine() as local:
        want = _dataset(store, spine, local)
        two = OfflineStore(store.catalog, namespace="signals", buckets=2)
        result = two.compact(user_clicks.name, 1)
        assert (result.buckets_before, result.buckets_after) == (4, 2)
        assert all("user_id_bucket=" in f for f in two.plan_files(user_clicks.name, 1))
        assert _dataset(two, spine, local).equals(want)
    assert _dataset(two, spine, spark_engine).equals(want)
    assert spark_engine.last_join_groups == 2
    _backfill(world, spark_engine, two)                               # a Spark re-backfill of every day
    rewritten = two.plan_files(user_clicks.name, 1)
    assert rewritten and all("user_id_bucket=" in f for f in rewritten)   # the executors write the new spec
    assert {int(f.split("user_id_bucket=")[1].split("/")[0]) for f in rewritten} == {0, 1}
    with LocalEngine() as local:
        again = _dataset(two, spine, local)
    assert _dataset(two, spine, spark_engine).equals(again)
    assert pc.count(again["clicks"]).as_py() > 100
