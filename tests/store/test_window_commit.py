"""How a window replace commits: one snapshot for whole days, pyiceberg's rewrite for a window that cuts a file,
conflicts found and retried, and the transaction's staged metadata computed once per staged state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update import update_table_metadata

from quasar.signals import Entity, Float64, Int64, Source, signal
from quasar.signals.errors import StoreError
from quasar.store.arrow_types import to_storage
from quasar.store.commits import WRITE_ID, Write, commit, is_conflict, landed, transaction
from quasar.store.replace import replace
from quasar.store.tables import COVERED_UNTIL, OfflineStore, time_filter
from quasar.store.writer import write_rows

DAY = timedelta(days=1)
T0 = datetime(2026, 1, 1, tzinfo=UTC)

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")


@signal(entity=user, source=events, features={"clicks": Int64(), "score": Float64()})
def clicks(batch: pa.Table) -> pa.Table:
    """Two features."""
    return batch


def rows(n: int, *, seed: int, start: datetime = T0, days: float = 4) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = pa.array(int(start.timestamp() * 1e6) + rng.integers(0, int(days * 86_400_000_000), n), pa.int64())
    ts = ts.cast(pa.timestamp("us", tz="UTC"))
    schema = clicks.schema.table_schema({"user_id": pa.int64()})
    return pa.Table.from_arrays([pa.array(rng.integers(1, 40, n), pa.int64()), ts, ts,
                                 pa.array(rng.integers(0, 9, n), pa.int64()), pa.array(rng.random(n))],
                                schema=schema)


def outside(table: pa.Table, start: datetime, end: datetime) -> pa.Table:
    ts = table.column("event_timestamp")
    return table.filter(pc.or_(pc.less(ts, pa.scalar(start, ts.type)), pc.greater_equal(ts, pa.scalar(end, ts.type))))


def ordered(table: pa.Table) -> pa.Table:
    return table.sort_by([("event_timestamp", "ascending"), ("user_id", "ascending"), ("clicks", "ascending")])


def files(store: OfflineStore) -> set[str]:
    return set(store.plan_files("clicks", 1))


def test_whole_days_replace_in_one_overwrite_snapshot(offline_store: OfflineStore) -> None:
    first = rows(400, seed=1)
    offline_store.replace_window(clicks, 1, first, T0, T0 + 4 * DAY)
    table = offline_store.table("clicks", 1)
    before = table.current_snapshot()
    assert before.summary.operation == Operation.APPEND                # a new table: nothing to drop
    kept = set(offline_store.plan_files("clicks", 1, start=T0, end=T0 + DAY)) | \
        set(offline_store.plan_files("clicks", 1, start=T0 + 3 * DAY, end=T0 + 4 * DAY))
    dropped = set(offline_store.plan_files("clicks", 1, start=T0 + DAY, end=T0 + 3 * DAY))

    second = rows(60, seed=2, start=T0 + DAY, days=2)
    snapshot_id = offline_store.replace_window(clicks, 1, second, T0 + DAY, T0 + 3 * DAY,
                                               properties={"quasar.run-id": "7"})
    table = offline_store.table("clicks", 1)
    new = [s for s in table.metadata.snapshots if s.snapshot_id != before.snapshot_id]
    assert len(new) == 1 and new[0].snapshot_id == snapshot_id == table.current_snapshot().snapshot_id
    snapshot = new[0]
    assert snapshot.parent_snapshot_id == before.snapshot_id
    summary = snapshot.summary
    assert summary.operation == Operation.OVERWRITE
    assert int(summary["deleted-data-files"]) == len(dropped) and int(summary["added-data-files"]) >= 1
    assert summary["quasar.window"] == f"[{(T0 + DAY).isoformat()}, {(T0 + 3 * DAY).isoformat()})"
    assert summary["quasar.rows"] == "60" and summary["quasar.run-id"] == "7"
    assert summary[COVERED_UNTIL] == (T0 + 4 * DAY).isoformat()          # the running maximum, not this end
    assert landed(table, summary[WRITE_ID]) == snapshot_id
    assert kept <= files(offline_store) and not dropped & files(offline_store)   # other days' files untouched
    expected = pa.concat_tables([outside(first, T0 + DAY, T0 + 3 * DAY), second])
    assert ordered(offline_store.read(clicks, 1)).equals(ordered(expected))
    assert int(summary["total-records"]) == expected.num_rows
    assert offline_store.backfilled_until("clicks", 1) == T0 + 4 * DAY


def test_empty_rows_drop_the_window_in_one_delete_snapshot(offline_store: OfflineStore) -> None:
    first = rows(200, seed=3)
    offline_store.replace_window(clicks, 1, first, T0, T0 + 4 * DAY)
    count = len(offline_store.table("clicks", 1).metadata.snapshots)
    offline_store.replace_window(clicks, 1, first.slice(0, 0), T0 + 2 * DAY, T0 + 4 * DAY)
    table = offline_store.table("clicks", 1)
    assert len(table.metadata.snapshots) == count + 1
    assert table.current_snapshot().summary.operation == Operation.DELETE
    assert ordered(offline_store.read(clicks, 1)).equals(ordered(outside(first, T0 + 2 * DAY, T0 + 4 * DAY)))
    # nothing in the window and nothing to add: still one snapshot, carrying the window for the run log
    offline_store.replace_window(clicks, 1, first.slice(0, 0), T0 + 10 * DAY, T0 + 11 * DAY)
    table = offline_store.table("clicks", 1)
    assert len(table.metadata.snapshots) == count + 2
    assert table.current_snapshot().summary["quasar.window"].startswith(f"[{(T0 + 10 * DAY).isoformat()}")
    assert offline_store.backfilled_until("clicks", 1) == T0 + 11 * DAY


def test_a_window_that_cuts_a_file_keeps_the_rows_outside(offline_store: OfflineStore) -> None:
    """A window that is not whole days meets files with rows on both sides: pyiceberg's delete rewrites them."""
    first = rows(300, seed=4)
    offline_store.replace_window(clicks, 1, first, T0, T0 + 4 * DAY)
    start, end = T0 + timedelta(hours=12), T0 + 2 * DAY + timedelta(hours=6)
    second = rows(40, seed=5, start=start, days=(end - start) / DAY)
    offline_store.replace_window(clicks, 1, second, start, end)
    expected = pa.concat_tables([outside(first, start, end), second])
    assert ordered(offline_store.read(clicks, 1)).equals(ordered(expected))
    # and a whole-day replace afterwards still finds every file of its days, the rewritten ones too
    third = rows(30, seed=6, start=T0, days=3)
    offline_store.replace_window(clicks, 1, third, T0, T0 + 3 * DAY)
    assert offline_store.table("clicks", 1).current_snapshot().summary.operation == Operation.OVERWRITE
    assert ordered(offline_store.read(clicks, 1)).equals(
        ordered(pa.concat_tables([outside(expected, T0, T0 + 3 * DAY), third])))


def _stage(store: OfflineStore, write: Write, stored: pa.Table, start: datetime, end: datetime) -> Any:
    def build(table: Any, tx: Any) -> None:
        new = write_rows(tx.table_metadata, table.io, stored, write.uuid, store.layout.target_file_bytes)
        replace(tx, table.io, time_filter("event_timestamp", start, end), new,
                {WRITE_ID: write.id, "quasar.attempt": str(write.attempts)})
    return build


def test_a_commit_into_the_window_meanwhile_is_a_conflict_then_retried(offline_store: OfflineStore) -> None:
    """Another writer replaces the same days after this write read the table: the one-snapshot replace must not
    commit over it (its rows would be kept beside ours); the retry on the fresh table drops them."""
    offline_store.replace_window(clicks, 1, rows(100, seed=7), T0, T0 + 4 * DAY)
    stale, stale_again = offline_store.table("clicks", 1), offline_store.table("clicks", 1)
    theirs = rows(50, seed=8, start=T0 + DAY, days=1)
    offline_store.replace_window(clicks, 1, theirs, T0 + DAY, T0 + 2 * DAY)
    mine = to_storage(rows(20, seed=9, start=T0 + DAY, days=1), clicks)

    write = Write()
    write.attempts = 1
    tx = write.transaction(stale)
    _stage(offline_store, write, mine, T0 + DAY, T0 + 2 * DAY)(stale, tx)
    with pytest.raises(Exception) as raised:
        tx.commit_transaction()
    assert is_conflict(raised.value)

    loads = iter([stale_again])                  # (the failed commit refreshed ``stale`` in place)
    write = Write()
    result = commit(lambda: next(loads, None) or offline_store.table("clicks", 1),
                    _stage(offline_store, write, mine, T0 + DAY, T0 + 2 * DAY), write,
                    fail=lambda exc, gave_up: StoreError(f"gave up: {gave_up}"))
    assert write.attempts == 2 and landed(result, write.id) is not None
    day = offline_store.read(clicks, 1, start=T0 + DAY, end=T0 + 2 * DAY)
    assert ordered(day).equals(ordered(rows(20, seed=9, start=T0 + DAY, days=1)))   # theirs gone, ours once
    assert offline_store.read(clicks, 1).num_rows == day.num_rows + outside(rows(100, seed=7), T0 + DAY,
                                                                            T0 + 2 * DAY).num_rows


def test_conflicts_that_outlast_the_attempts_raise_the_store_error(offline_store: OfflineStore) -> None:
    offline_store.replace_window(clicks, 1, rows(100, seed=10), T0, T0 + 4 * DAY)
    others = iter(range(100, 200))

    def load() -> Any:
        """The table as this writer reads it, then another writer replaces the same day before it commits."""
        table = offline_store.table("clicks", 1)
        offline_store.replace_window(clicks, 1, rows(10, seed=next(others), start=T0, days=1), T0, T0 + DAY)
        return table

    write = Write()
    mine = to_storage(rows(5, seed=12, start=T0, days=1), clicks)
    with pytest.raises(StoreError, match="gave up: True"):
        commit(load, _stage(offline_store, write, mine, T0, T0 + DAY), write, attempts=2,
               fail=lambda exc, gave_up: StoreError(f"gave up: {gave_up}"))
    assert write.attempts == 2 and landed(offline_store.table("clicks", 1), write.id) is None
    assert offline_store.read(clicks, 1, start=T0, end=T0 + DAY).num_rows == 10   # the last other writer's day
    assert not [f for f in files(offline_store) if write.id in f]


def test_staged_metadata_is_pyicebergs_for_every_staged_state(offline_store: OfflineStore) -> None:
    offline_store.replace_window(clicks, 1, rows(50, seed=13), T0, T0 + 4 * DAY)
    table = offline_store.table("clicks", 1)
    tx = transaction(table)

    def same() -> None:                      # (pyiceberg stamps last-updated-ms with the clock of each call)
        ours, theirs = (m.model_dump(exclude={"last_updated_ms"})
                        for m in (tx.table_metadata, update_table_metadata(table.metadata, tx._updates)))
        assert ours == theirs

    same()
    assert tx.table_metadata is tx.table_metadata                     # computed once while nothing changes
    tx.set_properties(a="1")
    same()
    assert tx.table_metadata.properties["a"] == "1"
    write = Write()
    _stage(offline_store, write, to_storage(rows(5, seed=14, start=T0, days=1), clicks), T0, T0 + DAY)(table, tx)
    same()
    assert tx.table_metadata.current_snapshot().summary[WRITE_ID] == write.id
    tx.commit_transaction()
    assert offline_store.table("clicks", 1).properties["a"] == "1"
    assert landed(offline_store.table("clicks", 1), write.id) is not None


def test_repeated_replaces_keep_the_manifest_list_short(offline_store: OfflineStore) -> None:
    """Manifests left with only deleted entries are dropped, so a table re-backfilled every day keeps a few
    manifests however many replaces it has seen (pyiceberg's overwrite carried every one on)."""
    first = rows(200, seed=15)
    offline_store.replace_window(clicks, 1, first, T0, T0 + 4 * DAY)
    for i in range(6):
        day = rows(20, seed=30 + i, start=T0 + DAY, days=1)
        offline_store.replace_window(clicks, 1, day, T0 + DAY, T0 + 2 * DAY)
        whole = rows(50, seed=40 + i)
        offline_store.replace_window(clicks, 1, whole, T0, T0 + 4 * DAY)
    table = offline_store.table("clicks", 1)
    assert len(table.current_snapshot().manifests(table.io)) <= 2
    assert ordered(offline_store.read(clicks, 1)).equals(ordered(whole))
    day = rows(20, seed=99, start=T0 + 2 * DAY, days=1)
    offline_store.replace_window(clicks, 1, day, T0 + 2 * DAY, T0 + 3 * DAY)
    table = offline_store.table("clicks", 1)
    assert len(table.current_snapshot().manifests(table.io)) <= 3
    assert ordered(offline_store.read(clicks, 1)).equals(
        ordered(pa.concat_tables([outside(whole, T0 + 2 * DAY, T0 + 3 * DAY), day])))
    assert offline_store.read(clicks, 1, snapshot_id=table.current_snapshot().parent_snapshot_id).num_rows == 50


def test_files_written_elsewhere_replace_whole_days_in_one_snapshot(offline_store: OfflineStore) -> None:
    """``replace_window_files`` (the Spark engine's commit): Parquet files without field ids, one per (day,
    bucket), replace their days in one snapshot that also sets the table's name mapping."""
    import pyarrow.parquet as pq

    from quasar.store.buckets import iceberg_buckets
    from quasar.store.data_files import WrittenFile
    from quasar.store.tables import local_path

    first = rows(200, seed=16)
    offline_store.replace_window(clicks, 1, first, T0, T0 + 4 * DAY)
    count = len(offline_store.table("clicks", 1).metadata.snapshots)
    new = to_storage(rows(80, seed=17, start=T0 + DAY, days=2), clicks)
    folder = local_path(offline_store.location(clicks, 1)) + "/data/elsewhere"
    Path(folder).mkdir(parents=True)
    day = pc.divide(new.column("event_timestamp").cast(pa.int64()), 86_400_000_000).to_numpy()
    bucket = iceberg_buckets(new.column("user_id"), offline_store.bucket_count("clicks", 1) or 1)
    written = []
    for d, b in sorted({(int(d), int(b)) for d, b in zip(day, bucket, strict=True)}):
        path = f"{folder}/{d}-{b}.parquet"
        pq.write_table(new.filter(pa.array((day == d) & (bucket == b))), path)
        written.append(WrittenFile(path=path, day=d, bucket=b))
    offline_store.replace_window_files(clicks, 1, written, T0 + DAY, T0 + 3 * DAY, properties={"quasar.run-id": "9"})
    table = offline_store.table("clicks", 1)
    assert len(table.metadata.snapshots) == count + 1
    summary = table.current_snapshot().summary
    assert summary.operation == Operation.OVERWRITE and summary["quasar.rows"] == "80"
    assert summary["quasar.run-id"] == "9" and table.metadata.name_mapping() is not None
    expected = pa.concat_tables([outside(first, T0 + DAY, T0 + 3 * DAY), rows(80, seed=17, start=T0 + DAY, days=2)])
    assert ordered(offline_store.read(clicks, 1)).equals(ordered(expected))
