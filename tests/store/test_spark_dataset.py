"""Issue 18 item 3 (Spark half): a dataset whose spine and result never pass through the driver.

One table backfilled (local engine, 4 buckets); the same spine as an in-memory table, a Parquet folder and an
Iceberg table. The Spark engine reads the folder or table on executors and writes ``out=`` from executors, with
the driver's collect paths disabled; the rows equal the local engine's in-memory dataset, in spine order, and
``make_loader`` reads the folder.
"""

from __future__ import annotations

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
from quasar.signals.signal import Signal
from quasar.store.backfill import backfill
from quasar.store.catalog import open_catalog
from quasar.store.dataset import DatasetResult, build_training_dataset
from quasar.store.engines.base import Engine
from quasar.store.engines.local import LocalEngine
from quasar.store.sources import SourceReader
from quasar.store.tables import OfflineStore

pytestmark = pytest.mark.spark

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
        registry.register_definitions([user], [events], [user_clicks], module="tests.spark_dataset")
        backfill(signal=user_clicks, version=1, start=START, end=END, store=store, engine=local, runs=registry,
                 sources=SourceReader(root=tmp_path, store=store, catalog=store.catalog))
        rng = np.random.default_rng(3)
        times = [START + timedelta(microseconds=int(m)) for m in rng.integers(0, 6 * 86_400_000_000, 240)]
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
                                  **kw)


@pytest.fixture
def no_driver_collect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any DataFrame brought to the driver fails the test."""
    from pyspark.sql.classic.dataframe import DataFrame

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("rows collected on the driver")

    for name in ("toArrow", "collect", "toPandas", "toLocalIterator", "take", "head"):
        monkeypatch.setattr(DataFrame, name, refuse)


def _plain(table: pa.Table) -> pa.Table:
    return table.replace_schema_metadata(None)


def test_a_folder_spine_joined_and_written_by_executors(world: dict[str, Any], spark_engine: Any,
                                                        no_driver_collect: None) -> None:
    out = world["root"] / "train"
    result = _dataset(world["store"], world["folder"], spark_engine, out=out, chunk_rows=60)   # 2 groups a bucket
    assert result.path == out and result.num_rows == 240
    parts = sorted(p.name for p in out.iterdir())
    assert len(parts) > 1 and all(p.startswith("part-") and p.endswith(".parquet") for p in parts)
    got = pq.read_table(out)
    assert _plain(got).equals(_plain(world["want"]))                 # spine order, types and values
    assert b"quasar.features" in pq.read_schema(out / parts[0]).metadata

    from quasar.training_adapters import make_loader

    batches = list(make_loader(out, batch_size=100, labels=("label",)))
    assert sum(len(b.labels["label"]) for b in batches) == 240


def test_an_iceberg_spine_to_one_file_and_to_a_table(world: dict[str, Any], spark_engine: Any) -> None:
    catalog = world["store"].catalog
    catalog.create_namespace_if_not_exists("spines")
    table = catalog.create_table("spines.s", schema=world["spine"].schema)
    table.append(world["spine"])
    out = world["root"] / "train.parquet"
    assert _dataset(world["store"], table, spark_engine, out=out).path == out
    assert _plain(pq.read_table(out)).equals(_plain(world["want"]))
    back = _dataset(world["store"], catalog.load_table("spines.s"), spark_engine).table    # no out: a table back
    assert _plain(back).equals(_plain(world["want"]))
    _dataset(world["store"], world["spine"], spark_engine, out=world["root"] / "mem")        # an in-memory spine
    assert _plain(pq.read_table(world["root"] / "mem")).equals(_plain(world["want"]))


def test_the_local_engine_reads_a_folder_spine_chunk_by_chunk(world: dict[str, Any]) -> None:
    with LocalEngine() as local:
        got = _dataset(world["store"], world["folder"], local, chunk_rows=70).table
    assert _plain(got).equals(_plain(world["want"]))
