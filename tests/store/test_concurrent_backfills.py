"""Concurrent backfills of one signal, as real processes: every one commits, the table holds the union of their
windows exactly once, equal to the same backfills run one after another (issue 14, item 4)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fixtures.fault_project import T0, FaultProject, finish, make_fault_project, wait_for
from quasar.store.gc import referenced_files

TIMESTAMP = pa.timestamp("us", tz="UTC")
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
    # the losers' attempts (and a lost race to create the table) left nothing behind: every file is referenced
    assert racing.files() == {r.removeprefix(f"{table.location()}/") for r in referenced_files(table)}


def test_a_backfill_that_loses_every_attempt_says_so_and_leaves_nothing(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A rival writer (a push kept offline) commits into the window before each of the backfill's attempts:
    the backfill gives up after its retry budget with a message that says why, and leaves no file behind."""
    from pyiceberg.table import Transaction

    from quasar.signals.errors import BackfillError

    project = make_fault_project(tmp_path / "p")
    with project.platform() as p:
        p.backfill("clicks", "2026-01-01", "2026-01-03")
        signal = p.registry.signal("clicks").signal
        row = pa.table({"user_id": [7], "event_timestamp": pa.array([T0 + timedelta(hours=30)], TIMESTAMP),
                        "created_timestamp": pa.array([T0], TIMESTAMP), "clicked": [1], "item": [100]})
        original, busy, rivals = Transaction.commit_transaction, [False], [0]

        def rival_first(tx: Any) -> Any:
            if not busy[0]:
                busy[0] = True
                try:
                    p.offline.append(signal, 1, row)             # another writer lands in the window first
                    rivals[0] += 1
                finally:
                    busy[0] = False
            return original(tx)

        monkeypatch.setattr(Transaction, "commit_transaction", rival_first)
        with pytest.raises(BackfillError, match=r"other writers kept committing to the table at the same time "
                                                r"\(8 attempts\); run it again"):
            p.backfill("clicks", "2026-01-01", "2026-01-03")
        monkeypatch.undo()
        table = p.offline.table("clicks", 1)
        assert rivals[0] == 8 and project.rows().num_rows == p.offline.read(signal, 1).num_rows
        refs = {r.removeprefix(f"{table.location()}/") for r in referenced_files(table)}
    assert project.files() == refs                             # not one file of the eight attempts is left
