"""A backfill's stored output before and after the writer rework: the same transform and aggregation backfills,
once through ``quasar.store.writer.write_rows`` and once through pyiceberg's own write path (the writer before),
store the same files (partition folders, names up to the write id) holding the same rows in the same order."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fixtures.offline import random_events, write_events
from fixtures.writer_reference import cells, pyiceberg_write_rows
from quasar.signals import Entity, Float64, Int64, Source, aggregate, count, mean, signal, sum_
from quasar.store import tables
from quasar.store.backfill import backfill
from quasar.store.catalog import open_catalog
from quasar.store.engines.local import LocalEngine
from quasar.store.sources import SourceReader
from quasar.store.tables import OfflineStore

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")


@signal(entity=user, source=events, features={"clicks": Int64(), "dwell": Float64()})
def per_event(batch: pa.Table) -> pa.Table:
    """One row per event."""
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"], "clicks": batch["clicked"],
                     "dwell": batch["dwell_s"]})


rolled = aggregate(name="rolled", entity=user, source=events, step="1d",
                   aggregations=[count("1d"), mean("dwell_s", "2d"), sum_("clicked", "3d", dtype=Int64())])


def stored_files(store: OfflineStore, name: str) -> dict[str, list[dict[str, Any]]]:
    """Each data file's rows but their created time, keyed by its path below the table with the write id left
    out."""
    location = str(store.table(name, 1).location()).removeprefix("file://")
    found = {}
    for path in store.plan_files(name, 1):
        folder, file = os.path.split(os.path.relpath(path, location))
        rows = pq.read_table(path)                    # created_timestamp: each backfill's own time of computing
        found[f"{folder}/{file.split('-')[1]}"] = cells(rows.drop_columns(["created_timestamp"]))
    return found


@pytest.mark.parametrize("sig", [per_event, rolled], ids=["transform", "aggregation"])
def test_a_backfill_stores_the_same_files_as_with_pyiceberg_write_file(tmp_path: Path, monkeypatch: Any,
                                                                       sig: Any) -> None:
    write_events(random_events(n=4000, users=40, days=5, seed=11), tmp_path / "data" / "events", files=5)
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC)
    found = []
    for label in ("ours", "pyiceberg"):
        catalog = open_catalog(uri=f"sqlite:///{tmp_path / label}.db", warehouse=str(tmp_path / label))
        store = OfflineStore(catalog, buckets=4)
        with monkeypatch.context() as m:
            if label == "pyiceberg":
                m.setattr(tables, "write_rows", lambda md, io, rows, uuid, target, counter=None:
                          pyiceberg_write_rows(md, io, rows, uuid, target))
            engine = LocalEngine(threads=2)
            try:
                reader = SourceReader(root=tmp_path, store=store, catalog=catalog)
                result = backfill(signal=sig, version=1, start=start, end=end, store=store, engine=engine,
                                  sources=reader)
            finally:
                engine.close()
        assert result.rows > 0
        found.append(stored_files(store, sig.name))
    ours, reference = found
    assert len(ours) >= 5 * 2 and ours == reference
