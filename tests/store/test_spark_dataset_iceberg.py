"""Issue 18 item 3, the Iceberg half on Spark: ``out="iceberg:ns.table"`` written by executors.

One table backfilled (local engine, 4 buckets); a Parquet folder spine in time order. On the Spark engine the
executors join the rows and write the output table's data files with the offline store's writer; the driver
gets the files' entries (metadata: no DataFrame holding a dataset column is ever collected) and commits them in
one transaction. The table's rows equal the local engine's in-memory dataset cell by cell, ``make_loader``
reads it, an earlier dataset table is replaced and a failure on the executors leaves the previous one.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fixtures.offline import random_events, write_events
from quasar.registry import Registry
from quasar.signals import Entity, Float64, Int64, Source, signal
from quasar.signals.errors import QuasarError
from quasar.signals.signal import Signal
from quasar.store.backfill import backfill
from quasar.store.catalog import open_catalog
from quasar.store.dataset import DatasetResult, build_training_dataset
from quasar.store.engines.base import Engine
from quasar.store.engines.local import LocalEngine
from quasar.store.sources import SourceReader
from quasar.store.tables import OfflineStore
from quasar.training_adapters import iceberg_source, make_loader

pytestmark = [pytest.mark.spark, pytest.mark.filterwarnings("ignore:This DataLoader will create")]

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")
START, END = datetime.fromisoformat("2026-01-01T00:00:00+00:00"), datetime.fromisoformat("2026-01-06T00:00:00+00:00")


@signal(entity=user, source=events, name="user_clicks", ttl="2d", features={"clicks": Int64(), "dwell": Float64()})
def user_clicks(batch: pa.Table) -> pa.Table:
    """Each event's clicks and dwell, as they came."""
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"], "clicks": batch["clicked"],
                     "dwell": batch["dwell_s"]})


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    write_events(random_events(n=600, days=5, users=30, seed=5, step_us=60_000_000), tmp_path / "data" / "events")
    store = OfflineStore(open_catalog(uri=f"sqlite:///{tmp_path / 'catalog.db'}", warehouse=str(tmp_path / "wh"),
                                      properties={}), namespace="signals", buckets=4)
    with Registry.open(f"sqlite:///{tmp_path / 'registry.db'}") as registry, LocalEngine() as local:
        registry.register_definitions([user], [events], [user_clicks], module="tests.spark_dataset_iceberg")
        backfill(signal=user_clicks, version=1, start=START, end=END, store=store, engine=local, runs=registry,
                 sources=SourceReader(root=tmp_path, store=store, catalog=store.catalog))
        rng = np.random.default_rng(3)
        times = sorted(START + timedelta(microseconds=int(m)) for m in rng.integers(0, 6 * 86_400_000_000, 240))
        spine = pa.table({"user_id": pa.array(rng.integers(1, 35, 240), pa.int64()),
                          "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
                          "label": pa.array(np.arange(240) % 2, pa.int64())})
        folder = tmp_path / "spine"
        folder.mkdir()
        for i in range(3):                                         # three files, in name order = spine order
            pq.write_table(spine.slice(i * 80, 80), folder / f"s-{i}.parquet")
        want = _dataset(store, spine, local).table
        yield {"root": tmp_path, "store": store, "spine": spine, "folder": folder, "want": want}


def _dataset(store: OfflineStore, spine: Any, engine: Engine, **kw: Any) -> DatasetResult:
    def resolve(name: str, version: int | None) -> tuple[Signal, int]:
        return user_clicks, 1

    def store_files(name: str, version: int, start: datetime | None,
                    end: datetime | None) -> tuple[list[str], int | None, int | None]:
        snapshot = store.current_snapshot_id(name, version)
        return (store.plan_files(name, version, start=start, end=end, snapshot_id=snapshot), snapshot,
                store.bucket_count(name, version))

    return build_training_dataset(spine, ["user_clicks"], resolve=resolve, store_files=store_files, engine=engine,
                                  catalog=store.catalog, **kw)


FILE_ENTRY_COLUMNS = {"part", "seq", "data_file"}      # quasar.store.engines.spark_dataset.FILE_ENTRIES


@pytest.fixture
def rows_stay_on_executors(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Collecting any DataFrame but the written files' entries fails the test; returns the frames collected."""
    from pyspark.sql.classic.dataframe import DataFrame

    collected: list[list[str]] = []

    def guard(name: str) -> Any:
        original = getattr(DataFrame, name)

        def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
            if set(self.columns) != FILE_ENTRY_COLUMNS:
                raise AssertionError(f"rows collected on the driver: {self.columns}")
            collected.append(list(self.columns))
            return original(self, *args, **kwargs)
        return checked

    for name in ("toArrow", "collect", "toPandas", "toLocalIterator", "take", "head"):
        monkeypatch.setattr(DataFrame, name, guard(name))
    return collected


def _read(table: Any) -> pa.Table:
    source = iceberg_source(table)
    return pa.concat_tables([source.read(piece, source.schema.names) for piece in source.pieces()])


def _plain(table: pa.Table) -> pa.Table:
    return table.replace_schema_metadata(None)


def test_executors_write_the_iceberg_table_and_the_driver_commits_it(world: dict[str, Any], spark_engine: Any,
                                                                    rows_stay_on_executors: list[list[str]]) -> None:
    result = _dataset(world["store"], world["folder"], spark_engine, out="iceberg:datasets.train", chunk_rows=60)
    assert rows_stay_on_executors == [["part", "seq", "data_file"]]      # only the files' entries came back
    table = result.iceberg
    assert result.path is None and result.num_rows == 240 and result.table.num_rows == 0
    assert len(list(table.scan().plan_files())) > 1 and len(table.metadata.snapshots) == 1   # one commit
    got = _read(table)
    assert got.schema.equals(world["want"].schema, check_metadata=False)
    assert _plain(got).equals(_plain(world["want"]))                    # spine order, types and values
    assert table.properties["quasar.features"] == result.metadata()[b"quasar.features"].decode()

    batches = list(make_loader(result, batch_size=100, labels=("label",)))
    assert sum(len(b.labels["label"]) for b in batches) == 240
    assert batches[0].features.dense_names == ["clicks", "dwell"]


def test_an_earlier_table_is_replaced_and_an_executor_failure_leaves_it(world: dict[str, Any], spark_engine: Any,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = world["store"].catalog
    _dataset(world["store"], world["spine"], spark_engine, out="iceberg:datasets.train")
    first = _dataset(world["store"], world["spine"].slice(0, 50), spark_engine, out="iceberg:datasets.train").iceberg
    assert _plain(_read(first)).equals(_plain(world["want"].slice(0, 50)))          # replaced
    data = Path(first.location().removeprefix("file://")) / "data"
    files = set(data.rglob("*.parquet"))

    from pyspark import cloudpickle

    from quasar.store.dataset_out import IcebergSink

    cloudpickle.register_pickle_by_value(sys.modules[__name__])        # FailingIO travels to the executors
    args = IcebergSink.writer_args
    monkeypatch.setattr(IcebergSink, "writer_args",
                        lambda self: (lambda m, io, u, t: (m, FailingIO(io), u, t))(*args(self)))
    try:
        with pytest.raises(QuasarError, match="disk full"):
            _dataset(world["store"], world["spine"], spark_engine, out="iceberg:datasets.train")
        with pytest.raises(QuasarError, match="disk full"):
            _dataset(world["store"], world["spine"], spark_engine, out="iceberg:datasets.fresh")
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    after = catalog.load_table("datasets.train")
    assert after.metadata.current_snapshot_id == first.metadata.current_snapshot_id    # the previous table
    assert set(data.rglob("*.parquet")) == files                                      # no file of the failed write
    assert not catalog.table_exists("datasets.fresh")                                  # no table
    assert not list((data.parent.parent / "fresh").rglob("*.parquet"))

class FailingIO:
    """The table's FileIO, but the disk is full for every write task after the first (partition 0 writes its
    files, another task fails after them)."""

    def __init__(self, io: Any) -> None:
        self.io = io

    def new_output(self, location: str) -> Any:
        task = int(location.rsplit("/", 1)[-1].split("-")[1])
        if task >= 1_000_000 + 10_000:
            raise OSError("disk full")
        return self.io.new_output(location)

    def __getattr__(self, name: str) -> Any:
        if name == "io":                                # unpickling: not set yet
            raise AttributeError(name)
        return getattr(self.io, name)
