"""Concurrent backfills of one signal, as real processes: every one commits, the table holds the union of their
windows exactly once, equal to the same backfills run one after another (issue 14, item 4)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from fixtures.fault_project import FaultProject, finish, make_fault_project, wait_for
from store.gc import referenced_files

WINDOWS = {
    "same window twice": [("2026-01-02", "2026-01-06"), ("2026-01-02", "2026-01-06")],
    "overlapping and disjoint": [("2026-01-01", "2026-01-06"), ("2026-01-04", "2026-01-09"),
                                 ("2026-01-02", "2026-01-04"), ("2026-01-09", "2026-01-11")],
}


def _race(project: FaultProject, windows: list[tuple[str, str]], gate: Path) -> list[tuple[int, str]]:
    """Start one ``quasar backfill`` process per window, hold them all in the transform, release them at once."""
    procs = [project.backfill(start, end, QUASAR_TEST_GATE=str(gate)) for start, end in windows]
    wait_for(lambda: len(list(gate.parent.glob(f"{gate.name}.*.waiting"))) == len(procs),
             "every backfill to reach its transform", procs=procs)
    gate.touch()
    return [finish(p) for p in procs]


@pytest.mark.parametrize("case", list(WINDOWS))
def test_concurrent_backfills_all_commit_the_union_once(case: str, tmp_path: Path) -> None:
    _check_race(WINDOWS[case], make_fault_project(tmp_path / "racing"), tmp_path)


@pytest.mark.postgres
def test_concurrent_backfills_on_a_postgresql_catalog_and_registry(pg_database: str, tmp_path: Path) -> None:
    racing = make_fault_project(tmp_path / "racing", registry_url=pg_database, catalog_uri=pg_database)
    _check_race(WINDOWS["overlapping and disjoint"], racing, tmp_path)


def _check_race(windows: list[tuple[str, str]], racing: FaultProject, tmp_path: Path) -> None:
    results = _race(racing, windows, tmp_path / "go")
    for code, out in results:
        assert code == 0, out
        assert "backfilled clicks v1" in out and "ValidationException" not in out

    serial = make_fault_project(tmp_path / "serial")
    with serial.platform() as p:
        for start, end in windows:
            p.backfill("clicks", start, end)

    got, want = racing.rows(), serial.rows()
    assert got.num_rows == want.num_rows and got.equals(want)
    keys = pc.binary_join_element_wise(pc.cast(got["user_id"], "string"),
                                       pc.cast(pc.cast(got["event_timestamp"], "int64"), "string"), "|")
    events = pc.count_distinct(keys).as_py()
    assert events == got.num_rows                        # no event stored twice
    first = min(s for s, _ in windows)
    last = max(e for _, e in windows)
    with racing.platform() as p:
        runs = p.runs("clicks")
        assert [r.status for r in runs] == ["succeeded"] * len(windows)
        table = p.offline.table("clicks", 1)
    assert pc.min(got["event_timestamp"]).as_py().date().isoformat() == first
    assert pc.max(got["event_timestamp"]).as_py().date().isoformat() < last
    # the losers' first attempts left nothing behind: every data file is one a snapshot references
    data = {str(f) for f in (racing.table_folder() / "data").rglob("*.parquet")}
    assert data <= {f.removeprefix("file://") for f in referenced_files(table)}
