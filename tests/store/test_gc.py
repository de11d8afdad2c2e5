"""``quasar gc``: snapshots past retention expire, files nothing kept references go, and everything kept still
reads in full: the current snapshot, a materialization watermark's snapshot and files (issue 14, item 6)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from fixtures.fault_project import make_fault_project, wait_for
from quasar.cli import main
from quasar.store.gc import referenced_files


def test_gc_expires_old_snapshots_and_every_kept_one_still_reads_in_full(tmp_path: Path, redis_url: str) -> None:
    project = make_fault_project(tmp_path / "p", redis_url=redis_url)
    with project.platform() as p:
        p.backfill("clicks", "2026-01-01", "2026-01-04")
        assert p.materialize()[0].rows_written > 0
        pinned = p.offline.current_snapshot_id("clicks", 1)       # the watermark's snapshot
        p.backfill("clicks", "2026-01-03", "2026-01-06")
        p.backfill("clicks", "2026-01-02", "2026-01-03")
        current = p.offline.current_snapshot_id("clicks", 1)
        snapshots = [s.snapshot_id for s in p.offline.table("clicks", 1).metadata.snapshots]
        before = {s: project.rows(snapshot_id=s) for s in snapshots}
        files = project.files()
        covered = p.offline.backfilled_until("clicks", 1)

        dry = p.gc(retention=timedelta(0), grace=timedelta(0), dry_run=True)
        assert set(dry[0].expired_snapshots) == set(snapshots) - {pinned, current} and dry[0].removed_files
        assert project.files() == files and len(p.offline.table("clicks", 1).metadata.snapshots) == len(snapshots)

        done = p.gc(retention=timedelta(0), grace=timedelta(0))
        table = p.offline.table("clicks", 1)
        kept = {s.snapshot_id for s in table.metadata.snapshots}
        assert kept == {pinned, current} and set(done[0].expired_snapshots) == set(snapshots) - kept
        for snapshot in kept:                                     # nothing a kept snapshot needs was removed
            assert project.rows(snapshot_id=snapshot).equals(before[snapshot])
        refs = {r.removeprefix(f"{table.location()}/") for r in referenced_files(table)}
        assert project.files() == refs                            # and nothing unreferenced was left
        assert len(files - project.files()) == len(done[0].removed_files) > 0
        assert p.offline.backfilled_until("clicks", 1) == covered  # expired ancestors lose no coverage

        again = p.materialize()[0]                                # the watermark's files were kept for it
        assert again.incremental and not again.rebuilt
        assert p.consistency("clicks").consistent


def test_gc_with_the_default_retention_keeps_every_recent_snapshot(tmp_path: Path) -> None:
    project = make_fault_project(tmp_path / "p")
    with project.platform() as p:
        p.backfill("clicks", "2026-01-01", "2026-01-04")
        p.backfill("clicks", "2026-01-02", "2026-01-05")
        snapshots = len(p.offline.table("clicks", 1).metadata.snapshots)
    files = project.files()
    out = CliRunner().invoke(main, ["-C", str(project.root), "gc", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report == [{"table": "signals.clicks__v1", "expired_snapshots": [], "removed_files": 0,
                       "kept_snapshots": snapshots, "kept_young_orphans": 0}]
    assert project.files() == files
    out = CliRunner().invoke(main, ["-C", str(project.root), "gc", "--retention", "soon"])
    assert out.exit_code == 1 and "--retention 'soon' is invalid" in out.output


def test_retention_counts_from_when_a_snapshot_stopped_being_current(tmp_path: Path) -> None:
    """A snapshot committed long ago but superseded just now is kept: a reader that started on it while it was
    current (a dataset, a materialization) has the whole retention to finish."""
    from quasar.store.gc import expirable

    project = make_fault_project(tmp_path / "p")
    with project.platform() as p:
        p.backfill("clicks", "2026-01-01", "2026-01-03")
        first = p.offline.table("clicks", 1).current_snapshot()
        wait_for(lambda: datetime.now(UTC) > datetime.fromtimestamp(first.timestamp_ms / 1000 + 0.05, UTC),
                 "the clock to pass the first commit")
        between = datetime.now(UTC)
        p.backfill("clicks", "2026-01-02", "2026-01-04")
        table = p.offline.table("clicks", 1)
    assert first.timestamp_ms < between.timestamp() * 1000         # committed before the cutoff ...
    assert first.snapshot_id not in expirable(table, older_than=between)   # ... but current after it: kept
    assert first.snapshot_id in expirable(table, older_than=datetime.now(UTC) + timedelta(seconds=1))
