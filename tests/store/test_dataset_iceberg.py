"""Datasets read from real Iceberg tables (SQLite catalog in a temp folder) through the offline store."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from fixtures.pit_data import BASE, SIGNALS, PitWorld, reference_pit
from quasar.signals import Signal
from quasar.signals.errors import NotFoundError
from quasar.signals.ufr.schema import EVENT_TIMESTAMP
from quasar.store.catalog import open_catalog
from quasar.store.dataset import build_training_dataset
from quasar.store.engines.base import Engine
from quasar.store.tables import OfflineStore

DAY = timedelta(days=1)


def _store_rows(store: OfflineStore, world: PitWorld, name: str) -> int | None:
    sd = world.data[name]
    schema = sd.signal.schema.table_schema({sd.key: sd.signal.entity.arrow_key_type})
    rows = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "_pos"} for r in sd.rows], schema=schema)
    return store.replace_window(sd.signal, 1, rows, BASE - DAY, BASE + DAY)


class Wiring:
    """resolve / store_files as the facade wires them: current snapshot, files planned for the window."""

    def __init__(self, store: OfflineStore) -> None:
        self.store = store

    def resolve(self, name: str, version: int | None) -> tuple[Signal, int]:
        return SIGNALS[name], 1

    def store_files(self, name: str, version: int, start: datetime | None,
                    end: datetime | None) -> tuple[list[str], int | None, int | None]:
        snapshot = self.store.current_snapshot_id(name, version)
        if snapshot is None:
            raise NotFoundError(f"signal {name} v{version} has no offline data yet")
        files = self.store.plan_files(name, version, start=start, end=end, snapshot_id=snapshot)
        return files, snapshot, self.store.bucket_count(name, version)


@pytest.fixture
def offline(tmp_path: Path) -> OfflineStore:
    catalog = open_catalog(uri=f"sqlite:///{tmp_path / 'catalog.db'}", warehouse=str(tmp_path / "warehouse"),
                           properties={})
    return OfflineStore(catalog, namespace="signals", buckets=4)


@pytest.mark.parametrize("seed", range(2))
def test_dataset_from_iceberg_tables_matches_the_reference(seed: int, pit_world: Any, pit_engine: Engine,
                                                           offline: OfflineStore) -> None:
    world = pit_world(seed, full_ties=False)    # how a table splits full ties into files is the writer's business
    snapshots = {name: _store_rows(offline, world, name) for name in SIGNALS}
    wiring = Wiring(offline)
    spine = world.spine(random.Random(seed), 80)
    result = build_training_dataset(spine, ["user_stats", "pin_stats", "user_extra:score"], resolve=wiring.resolve,
                                    store_files=wiring.store_files, engine=pit_engine, chunk_rows=25)
    assert result.sources == {"user_stats": {"version": 1, "snapshot_id": snapshots["user_stats"]},
                              "pin_stats": {"version": 1, "snapshot_id": snapshots["pin_stats"]},
                              "user_extra": {"version": 1, "snapshot_id": snapshots["user_extra"]}}
    for name, features in (("user_stats", SIGNALS["user_stats"].schema.names),
                           ("pin_stats", SIGNALS["pin_stats"].schema.names), ("user_extra", ["score"])):
        expected = reference_pit(spine, world.data[name], [(f, f) for f in features])
        for column, values in expected.items():
            assert result.table.column(column).to_pylist() == values, column
    assert result.table.schema.field("taste").type == SIGNALS["user_stats"].schema.type_of("taste").arrow_type()


def test_a_rewritten_window_is_read_from_the_new_snapshot(pit_world: Any, pit_engine: Engine,
                                                          offline: OfflineStore) -> None:
    world = pit_world(5, full_ties=False)
    first = _store_rows(offline, world, "pin_stats")
    wiring = Wiring(offline)
    spine = pa.table({"pin_id": world.pin_ids, EVENT_TIMESTAMP: pa.array([BASE + DAY / 2] * 4,
                                                                          pa.timestamp("us", tz="UTC"))})
    before = build_training_dataset(spine, ["pin_stats:saves"], resolve=wiring.resolve,
                                    store_files=wiring.store_files, engine=pit_engine)
    for row in world.data["pin_stats"].rows:
        row["saves"] = 12345
    second = _store_rows(offline, world, "pin_stats")
    after = build_training_dataset(spine, ["pin_stats:saves"], resolve=wiring.resolve,
                                   store_files=wiring.store_files, engine=pit_engine)
    assert before.sources["pin_stats"]["snapshot_id"] == first
    assert after.sources["pin_stats"]["snapshot_id"] == second != first
    assert set(after.table.column("saves").to_pylist()) == {12345}
    assert before.table.column("saves").to_pylist() == reference_pit(
        spine, pit_world(5, full_ties=False).data["pin_stats"], [("saves", "saves")])["saves"]


def test_a_spine_of_few_keys_opens_only_their_buckets_files(pit_world: Any, pit_engine: Engine,
                                                            offline: OfflineStore) -> None:
    from quasar.store.buckets import iceberg_buckets, path_bucket

    world = pit_world(3, full_ties=False)
    _store_rows(offline, world, "pin_stats")
    wiring = Wiring(offline)
    seen: list[tuple[str, ...]] = []

    class Recording:                         # the real engine, remembering which files each join was given
        name = pit_engine.name

        def point_in_time(self, spine: pa.Table, requests: Any) -> pa.Table:
            seen.extend(r.files for r in requests)
            return pit_engine.point_in_time(spine, requests)

    one = world.pin_ids[:1]
    spine = pa.table({"pin_id": one, EVENT_TIMESTAMP: pa.array([BASE + DAY / 2], pa.timestamp("us", tz="UTC"))})
    pruned = build_training_dataset(spine, ["pin_stats:saves"], resolve=wiring.resolve,
                                    store_files=wiring.store_files, engine=Recording())  # type: ignore[arg-type]
    everything = offline.plan_files("pin_stats", 1)
    bucket = int(iceberg_buckets(spine.column("pin_id"), 4)[0])
    assert len({path_bucket(f, "pin_id") for f in everything}) > 1
    assert seen and all(path_bucket(f, "pin_id") == bucket for files in seen for f in files)
    assert pruned.table.column("saves").to_pylist() == reference_pit(
        spine, world.data["pin_stats"], [("saves", "saves")])["saves"]
