"""The table layout and ``quasar compact``: bucket counts chosen from the data, small files rewritten in one commit
with every row and every tie's winner unchanged, nothing lost when compaction fails or is killed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fixtures.fault_project import KILL_CHILD, FaultProject, finish, kill, wait_for
from quasar.signals import Entity, Float64, Int64, Source, signal
from quasar.signals.errors import ConfigError, StoreError
from quasar.signals.ordering import latest_per_entity
from quasar.store.compaction import COMPACTION, plan_compaction
from quasar.store.layout import MAX_BUCKETS, Layout, buckets_for
from quasar.store.tables import OfflineStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 5
user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")


@signal(entity=user, source=events, features={"clicks": Int64(), "score": Float64()})
def scores(batch: pa.Table) -> pa.Table:
    """Rows written directly by the tests."""
    return batch


def rows_of(n: int, *, seed: int, days: int = DAYS, users: int = 200, start: datetime = T0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = pa.array(int(start.timestamp() * 1e6) + rng.integers(0, days * 86_400_000_000, n), pa.int64())
    ts = ts.cast(pa.timestamp("us", tz="UTC"))
    return pa.table({"user_id": pa.array(rng.integers(1, users + 1, n), pa.int64()), "event_timestamp": ts,
                     "created_timestamp": ts, "clicks": pa.array(rng.integers(0, 9, n), pa.int64()),
                     "score": pa.array(rng.random(n), pa.float64())})


def ties(value: int) -> pa.Table:
    """One row of user 7 at T0 + 1 h whose key, event time and created time tie with every other such row."""
    at = pa.array([T0 + timedelta(hours=1)], pa.timestamp("us", tz="UTC"))
    return pa.table({"user_id": pa.array([7], pa.int64()), "event_timestamp": at, "created_timestamp": at,
                     "clicks": pa.array([value], pa.int64()), "score": pa.array([float(value)], pa.float64())})


def plan_order_rows(store: OfflineStore) -> pa.Table:
    """The table's rows in plan order (files in path order, rows in file order), as the engines read them."""
    parts = [pq.read_table(p) for p in store.plan_files("scores", 1)]
    return pa.concat_tables([t.select(parts[0].column_names) for t in parts])


def winners(store: OfflineStore) -> list[dict[str, Any]]:
    return latest_per_entity(plan_order_rows(store), "user_id").to_pylist()


def sorted_rows(store: OfflineStore) -> pa.Table:
    table = store.read(scores, 1)
    return table.sort_by([(c, "ascending") for c in table.column_names])


# --- the layout -----------------------------------------------------------------------------------------------
def test_bucket_count_is_the_smallest_power_of_two_keeping_a_day_under_the_target() -> None:
    target = 1000
    assert [buckets_for(b, target) for b in (0, 1, 1000, 1001, 2000, 2001, 5000, 8000)] == [1, 1, 1, 2, 2, 4, 8, 8]
    assert buckets_for(1e18, target) == MAX_BUCKETS


def test_bad_layout_settings_are_refused_naming_them() -> None:
    with pytest.raises(ConfigError, match=r"\[offline\] buckets"):
        Layout.from_settings(-1, 128)
    with pytest.raises(ConfigError, match=r"\[offline\] target_file_mb"):
        Layout.from_settings(0, 0)
    assert Layout.from_settings(0, 64) == Layout(None, 64 * 1024 * 1024)
    with pytest.raises(StoreError, match="number of buckets"):
        Layout(buckets=0)


def test_a_new_tables_bucket_count_comes_from_its_first_write(offline_catalog: Any) -> None:
    rows = rows_of(5000, seed=1)
    small = OfflineStore(offline_catalog)                     # chosen; 128 MiB target: one bucket
    small.replace_window(scores, 1, rows, T0, T0 + timedelta(days=DAYS))
    assert small.bucket_count("scores", 1) == 1
    assert len(small.plan_files("scores", 1)) == DAYS         # one file per day, not days x 16

    per_day = rows.nbytes / DAYS
    tight = OfflineStore(offline_catalog, target_file_bytes=int(per_day / 3))
    tight.replace_window(scores, 2, rows, T0, T0 + timedelta(days=DAYS))
    assert tight.bucket_count("scores", 2) == 4               # about a third of a day per file: 3 -> 4
    fixed = OfflineStore(offline_catalog, buckets=8)
    fixed.replace_window(scores, 3, rows, T0, T0 + timedelta(days=DAYS))
    assert fixed.bucket_count("scores", 3) == 8


# --- compaction ------------------------------------------------------------------------------------------------
def test_rebucketing_rewrites_every_file_in_one_commit_keeping_rows_and_tie_winners(offline_catalog: Any) -> None:
    old = OfflineStore(offline_catalog, buckets=16)
    old.replace_window(scores, 1, rows_of(3000, seed=2), T0, T0 + timedelta(days=DAYS))
    for value in (5, 3, 8):                                   # three tied rows of user 7, in three files
        old.append(scores, 1, ties(value))
    before_files = old.plan_files("scores", 1)
    before, before_winners = sorted_rows(old), winners(old)
    snapshot_before = old.current_snapshot_id("scores", 1)
    assert len(before_files) > 60

    store = OfflineStore(offline_catalog)                     # the chosen layout: one bucket for this data
    plan = store.compact("scores", 1, dry_run=True)
    assert plan.rewritten_files == len(before_files) and plan.buckets_after == 1 and plan.snapshot_id is None
    assert old.plan_files("scores", 1) == before_files        # a dry run changes nothing

    result = store.compact("scores", 1)
    assert (result.buckets_before, result.buckets_after) == (16, 1)
    assert result.files_before == len(before_files) and result.files_after == DAYS
    assert result.rows == before.num_rows
    assert store.bucket_count("scores", 1) == 1 and len(store.plan_files("scores", 1)) == DAYS
    assert sorted_rows(store).equals(before)
    assert winners(store) == before_winners                  # the tie still goes to the last row in plan order
    tied = [w for w in winners(store) if w["user_id"] == 7 and w["event_timestamp"] == T0 + timedelta(hours=1)]
    assert not tied or tied[0]["clicks"] == 8
    table = store.table("scores", 1)
    snap = table.current_snapshot()
    assert snap.parent_snapshot_id == snapshot_before and COMPACTION in snap.summary.additional_properties
    assert store.read(scores, 1, snapshot_id=snapshot_before).num_rows == before.num_rows   # time travel still
    again = store.compact("scores", 1)
    assert again.rewritten_files == 0 and again.snapshot_id is None   # nothing left to do


def test_merging_partitions_of_many_small_appends(offline_catalog: Any) -> None:
    store = OfflineStore(offline_catalog, buckets=2)
    store.replace_window(scores, 1, rows_of(800, seed=3, days=2), T0, T0 + timedelta(days=2))
    for i in range(6):
        store.append(scores, 1, rows_of(40, seed=10 + i, days=2))
    store.append(scores, 1, ties(1))
    store.append(scores, 1, ties(2))
    before, before_winners = sorted_rows(store), winners(store)
    n_before = len(store.plan_files("scores", 1))
    plan = plan_compaction(store.table("scores", 1), store.layout)
    assert not plan.rebucket and plan.needed

    result = store.compact("scores", 1)
    assert result.buckets_before == result.buckets_after == 2
    assert result.files_before == n_before and result.files_after == 4    # 2 days x 2 buckets
    assert sorted_rows(store).equals(before) and winners(store) == before_winners


def test_a_failing_compaction_leaves_the_table_and_its_folder_as_they_were(offline_catalog: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import quasar.store.compaction as compaction

    old = OfflineStore(offline_catalog, buckets=8)
    old.replace_window(scores, 1, rows_of(2000, seed=4), T0, T0 + timedelta(days=DAYS))
    store = OfflineStore(offline_catalog)
    before, files = sorted_rows(store), store.plan_files("scores", 1)
    folder = Path(str(store.table("scores", 1).location()).removeprefix("file://"))
    on_disk = {p for p in folder.rglob("*") if p.is_file()}
    calls = [0]
    real = compaction._rewrite

    def rewrite_then_fail(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 3:                                     # two days' files written, then the disk fails
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(compaction, "_rewrite", rewrite_then_fail)
    with pytest.raises(StoreError, match=r"compacting signals\.scores__v1 failed.*No space left.*as it was"):
        store.compact("scores", 1)
    assert store.plan_files("scores", 1) == files and sorted_rows(store).equals(before)
    assert {p for p in folder.rglob("*") if p.is_file()} == on_disk    # the written files were deleted


def test_a_killed_compaction_leaves_the_table_complete_and_gc_removes_what_it_wrote(
        fault_project: FaultProject, tmp_path: Path) -> None:
    project = fault_project
    with project.platform() as p:
        p.backfill("clicks", "2026-01-01", "2026-01-11")
    before = project.rows()
    files_before = project.files()
    config = project.root / "quasar.toml"
    config.write_text(config.read_text().replace("buckets = 4", "buckets = 1"))
    for point in ("data:3", "metadata"):
        marker = tmp_path / f"killed-{point.replace(':', '')}"
        child = subprocess.Popen([sys.executable, str(KILL_CHILD), str(project.root), "compact", "-", point,
                                  str(marker)], cwd=project.root, env=project.env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        wait_for(marker.exists, f"the compaction to stop at {point}", procs=[child])
        kill(child)
        assert project.rows().equals(before)                  # readable and complete: the old snapshot
    with project.platform() as p:
        assert p.offline.bucket_count("clicks", 1) == 4
        assert {r.status for r in p.registry.runs("clicks", kind="compact")} <= {"running", "abandoned"}
        assert len(p.registry.runs("clicks", kind="compact")) == 2    # both recorded, neither finished
    assert project.files() > files_before                     # the killed ones' files are still there
    time.sleep(2.2)                                           # past the 2 s lease and the 1 s orphan grace
    with project.platform() as p:
        assert [r.status for r in p.registry.runs("clicks", kind="compact")] == ["abandoned", "abandoned"]
        p.gc()
    assert project.files() == files_before                    # gc removed every file they wrote
    code, out = finish(project.cli("compact", "--json"))
    assert code == 0, out
    (result,) = json.loads(out)
    assert (result["buckets_before"], result["buckets_after"], result["files_after"]) == (4, 1, 10)
    assert project.rows().equals(before)


def test_quasar_compact_prints_the_plan_and_what_it_did(fault_project: FaultProject) -> None:
    project = fault_project
    with project.platform() as p:
        p.backfill("clicks", "2026-01-01", "2026-01-11")
        assert len(p.offline.plan_files("clicks", 1)) == 40   # 10 days x 4 buckets ([offline] buckets = 4)
    config = project.root / "quasar.toml"
    config.write_text(config.read_text().replace("buckets = 4", "buckets = 0"))
    code, out = finish(project.cli("describe", "clicks"))
    assert code == 0, out
    assert "offline v1:  40 data file(s)" in out and "4 key bucket(s); quasar compact would re-bucket 4 -> 1" in out
    code, out = finish(project.cli("compact", "--dry-run"))
    assert code == 0, out
    assert "signals.clicks__v1: would rewrite 40 of 40 file(s) (about 10 after, 4 -> 1 key buckets)" in out
    assert "re-bucket 4 -> 1" in out
    code, out = finish(project.cli("compact", "clicks"))
    assert code == 0, out
    assert "signals.clicks__v1: 40 -> 10 file(s), 4 -> 1 key buckets, 3,000 rows rewritten" in out
    code, out = finish(project.cli("compact", "clicks"))
    assert code == 0 and "signals.clicks__v1: 10 file(s); nothing to do" in out, out
    with project.platform() as p:
        (table,) = p.describe("clicks")["tables"]
        assert (table["files"], table["buckets"], table["compaction"]) == (10, 1, None)
    code, out = finish(project.cli("compact", "nope"))
    assert code != 0 and "nope" in out


def test_a_backfill_compacts_a_table_of_small_files_and_the_default_layout_needs_none(
        fault_project: FaultProject) -> None:
    project = fault_project
    with project.platform() as p:
        p.backfill("clicks", "2026-01-01", "2026-01-11")
        assert p.offline.bucket_count("clicks", 1) == 4
    config = project.root / "quasar.toml"
    config.write_text(config.read_text().replace("buckets = 4", "buckets = 0"))
    with project.platform() as p:
        p.backfill("clicks", "2026-01-10", "2026-01-11")     # one day again: the table is compacted after it
        assert p.offline.bucket_count("clicks", 1) == 1
        assert len(p.offline.plan_files("clicks", 1)) == 10
        assert [r.status for r in p.registry.runs("clicks", kind="compact")] == ["succeeded"]
        p.backfill("clicks", "2026-01-01", "2026-01-11")
        assert len(p.offline.plan_files("clicks", 1)) == 10   # the chosen layout: one file per day, no compaction
        assert len(p.registry.runs("clicks", kind="compact")) == 1


def test_materialize_after_a_compaction_writes_nothing_and_serves_the_same(tmp_path: Path, redis_url: str) -> None:
    from fixtures.fault_project import make_fault_project

    project = make_fault_project(tmp_path / "online", redis_url=redis_url)
    with project.platform() as p:
        p.backfill("clicks", "2026-01-01", "2026-01-11")
        first = p.materialize()
        assert first[0].rows_written > 0
        keys = {"user_id": list(range(1, 41))}
        served = p.online_features(keys, ["clicks:clicked", "clicks:item"])
        spine = pa.table({"user_id": pa.array(range(1, 41), pa.int64()),
                          "event_timestamp": pa.array([datetime(2026, 1, 11, tzinfo=UTC)] * 40,
                                                      pa.timestamp("us", tz="UTC"))})
        trained = p.training_dataset(spine, ["clicks:clicked", "clicks:item"])
    config = project.root / "quasar.toml"
    config.write_text(config.read_text().replace("buckets = 4", "buckets = 0"))
    with project.platform() as p:
        assert p.compact(["clicks"])[0].files_after == 10
        again = p.materialize()
        assert again[0].incremental and again[0].rows_written == 0 and again[0].entities == 0
        assert p.online_features(keys, ["clicks:clicked", "clicks:item"]) == served
        assert p.training_dataset(spine, ["clicks:clicked", "clicks:item"]).equals(trained)
        p.backfill("clicks", "2026-01-10", "2026-01-11")   # a real change after the compaction still reaches Redis
        assert p.materialize()[0].rows_written > 0


def test_a_window_replaced_during_a_compaction_wins_and_the_compaction_plans_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import quasar.store.compaction as compaction
    from quasar.store.catalog import open_catalog

    def store(buckets: int | None) -> OfflineStore:
        return OfflineStore(open_catalog(uri=f"sqlite:///{tmp_path / 'catalog.db'}", warehouse=str(tmp_path / "wh")),
                            buckets=buckets)

    first = rows_of(2000, seed=5)
    writer = store(8)
    writer.replace_window(scores, 1, first, T0, T0 + timedelta(days=DAYS))
    new_day = rows_of(300, seed=6, days=1, start=T0 + timedelta(days=2))
    paused, go = threading.Event(), threading.Event()
    real = compaction._rewrite
    calls = [0]

    def rewrite_waiting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:                                     # the first attempt has planned: let a writer commit
            paused.set()
            assert go.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(compaction, "_rewrite", rewrite_waiting)
    done: list[Any] = []
    worker = threading.Thread(target=lambda: done.append(store(None).compact("scores", 1)))
    worker.start()
    assert paused.wait(30)
    writer.replace_window(scores, 1, new_day, T0 + timedelta(days=2), T0 + timedelta(days=3))
    go.set()
    worker.join(60)
    assert done and done[0].buckets_after == 1 and done[0].files_after == DAYS
    assert calls[0] > DAYS                                    # it wrote again on the writer's snapshot
    day = pa.compute.floor_temporal(first["event_timestamp"], unit="day")
    kept = first.filter(pa.compute.not_equal(day, pa.scalar(T0 + timedelta(days=2), day.type)))
    serial = pa.concat_tables([kept, new_day])               # the window's new rows, every other day as it was
    got = store(None).read(scores, 1)
    order = [(c, "ascending") for c in got.column_names]
    assert got.sort_by(order).equals(restore(serial).sort_by(order))


def restore(rows: pa.Table) -> pa.Table:
    """Rows as the store reads them back (UFR types)."""
    from quasar.store.arrow_types import restore_ufr_types, to_storage

    return restore_ufr_types(to_storage(rows, scores), scores.schema)
