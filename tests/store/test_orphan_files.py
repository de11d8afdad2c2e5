"""No garbage: a failed write removes its files at once; a killed one's files are removed by the next backfill of
the signal or by ``quasar gc``, never a file a live snapshot needs (issue 14, item 6).

Kills are real: a ``quasar`` child process is stopped at a controlled point of its write (mid-compute, after a
few data files, after the new metadata file) and SIGKILLed; the table must still read as before, the run must
end abandoned, and after the next run every file under the table's folder must be one a snapshot references.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner

from fixtures.fault_project import FaultProject, kill, make_fault_project, wait_for
from quasar.cli import main
from quasar.signals.errors import BackfillError
from quasar.store.gc import referenced_files

BASE = ("2026-01-01", "2026-01-06")
NEXT = ("2026-01-03", "2026-01-09")


def orphans(project: FaultProject) -> set[str]:
    """Files under the table's folder that no snapshot (nor the metadata log) references."""
    with project.platform() as p:
        table = p.offline.table("clicks", 1)
        refs = {r.removeprefix(f"{table.location()}/") for r in referenced_files(table)}
    return project.files() - refs


def expected(tmp_path: Path, *windows: tuple[str, str]) -> pa.Table:
    """The table a clean project holds after these backfills, one after the other."""
    clean = make_fault_project(tmp_path / "clean")
    with clean.platform() as p:
        for start, end in windows:
            p.backfill("clicks", start, end)
    return clean.rows()


@pytest.fixture
def based(fault_project: FaultProject) -> FaultProject:
    with fault_project.platform() as p:
        p.backfill("clicks", *BASE)
    return fault_project


def _kill_at(project: FaultProject, point: str, tmp_path: Path) -> int:
    """Run a backfill of NEXT in a child, SIGKILL it at ``point``; the id of its run."""
    marker = tmp_path / "at-point"
    if point == "compute":
        gate = tmp_path / "gate"
        child = project.backfill(*NEXT, QUASAR_TEST_GATE=str(gate))
        wait_for(lambda: any(tmp_path.glob("gate.*.waiting")), "the transform", procs=[child])
    else:
        child = project.kill_child(*NEXT, point, marker)
        wait_for(marker.exists, f"the child to reach {point}", procs=[child])
    kill(child)
    with project.platform() as p:
        run = p.runs("clicks")[0]
    assert run.params["start"].startswith(NEXT[0]) and run.status in ("running", "abandoned")   # the 2 s lease may run out on a loaded machine
    return run.id


@pytest.mark.parametrize("point", ["compute", "data:3", "metadata", "committed"])
def test_a_killed_backfill_leaves_the_old_or_new_table_and_the_next_run_collects_its_files(
        point: str, based: FaultProject, tmp_path: Path) -> None:
    before, files = based.rows(), based.files()
    killed = _kill_at(based, point, tmp_path)
    after = expected(tmp_path, BASE, NEXT)
    assert based.rows().equals(after if point == "committed" else before)   # old or new snapshot, whole
    left = based.files() - files
    if point in ("data:3", "metadata"):
        assert left and left == orphans(based)               # the kill left files no snapshot references
    with based.platform() as p:
        wait_for(lambda: p.runs("clicks")[0].status == "abandoned", "the killed run to read as abandoned")
        p.backfill("clicks", *NEXT)                           # the next run of the signal
        statuses = {r.id: r.status for r in p.runs("clicks")}
    assert statuses[killed] == "abandoned"
    assert orphans(based) == set()                           # nothing left behind, nothing needed removed
    assert based.rows().equals(after)


def test_quasar_gc_collects_a_killed_commit_and_the_table_reads_the_same(based: FaultProject, tmp_path: Path) -> None:
    before = based.rows()
    _kill_at(based, "metadata", tmp_path)
    left = orphans(based)
    assert any(f.endswith(".metadata.json") for f in left) and any(f.endswith(".parquet") for f in left)
    out = CliRunner().invoke(main, ["-C", str(based.root), "gc", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert orphans(based) == left                            # a dry run removes nothing
    wait_for(lambda: based.platform().runs("clicks")[0].status == "abandoned", "the lease to run out")
    out = CliRunner().invoke(main, ["-C", str(based.root), "gc"])
    assert out.exit_code == 0, out.output
    assert f"removed {len(left)} file(s)" in out.output
    assert orphans(based) == set() and based.rows().equals(before)


def disk_full(n: int) -> Any:
    """pyiceberg's file output, failing with ENOSPC from the ``n``-th data file on (after writing a few bytes)."""
    from pyiceberg.io.pyarrow import PyArrowFileIO

    original, seen = PyArrowFileIO.new_output, [0]

    def new_output(io: Any, location: str) -> Any:
        if "/data/" in location:
            seen[0] += 1
            if seen[0] >= n:
                path = Path(location.removeprefix("file://"))
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"PAR1")                       # a torn file, as a full disk leaves it
                raise OSError(errno.ENOSPC, "No space left on device", location)
        return original(io, location)

    return new_output


def test_a_full_disk_during_the_write_removes_that_attempts_files_at_once(based: FaultProject,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from pyiceberg.io.pyarrow import PyArrowFileIO

    before, files = based.rows(), based.files()
    with based.platform() as p:
        snapshot = p.offline.current_snapshot_id("clicks", 1)
        monkeypatch.setattr(PyArrowFileIO, "new_output", disk_full(4))
        with pytest.raises(BackfillError, match="No space left on device"):
            p.backfill("clicks", *NEXT)
        monkeypatch.undo()
        assert p.offline.current_snapshot_id("clicks", 1) == snapshot
        assert p.runs("clicks")[0].status == "failed"
    assert based.files() == files and based.rows().equals(before)   # not one file of that attempt is left
