"""What operators see of runs that did not finish: ``quasar runs``, ``--json``, ``describe`` and ``Platform.runs``
show a killed backfill as abandoned once its lease runs out, never as running for good (issue 14, item 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fixtures.fault_project import FaultProject, kill, make_fault_project, wait_for
from quasar.cli import main
from quasar.signals.errors import BackfillError


def cli(project: FaultProject, *args: str) -> str:
    result = CliRunner().invoke(main, ["-C", str(project.root), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_killed_backfill_shows_as_abandoned_then_is_marked_by_the_next_run(fault_project: FaultProject,
                                                                            tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    child = fault_project.backfill("2026-01-01", "2026-01-04", QUASAR_TEST_GATE=str(gate))
    wait_for(lambda: any(tmp_path.glob("gate.*.waiting")), "the transform", procs=[child])
    kill(child)                                            # mid-compute: nobody records its end
    wait_for(lambda: json.loads(cli(fault_project, "runs", "clicks", "--json"))[0]["status"] == "abandoned",
             "the killed run to read as abandoned")
    text = cli(fault_project, "runs", "clicks")
    assert " abandoned " in text and "running" not in text and "no heartbeat since" in text
    described = json.loads(cli(fault_project, "describe", "clicks", "--json"))
    assert [r["status"] for r in described["runs"]] == ["abandoned"]
    assert "abandoned" in cli(fault_project, "describe", "clicks")

    out = cli(fault_project, "backfill", "clicks", "--start", "2026-01-01", "--end", "2026-01-04")
    assert "backfilled clicks v1" in out
    with fault_project.platform() as p:
        done, killed = p.runs("clicks")
    assert (done.status, killed.status) == ("succeeded", "abandoned")
    assert killed.finished_at is not None and f"marked by run {done.id}" in killed.details["error"]
    assert "error: abandoned: no heartbeat since" in cli(fault_project, "runs", "clicks")


def test_a_backfill_whose_failure_cannot_be_recorded_ends_abandoned(fault_project: FaultProject,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    journal = fault_project.root / ".quasar" / "registry.db-journal"
    monkeypatch.setenv("QUASAR_TEST_FAIL_BLOCKING", str(journal))
    with fault_project.platform() as p:
        with pytest.raises(BackfillError, match=r"No space left on device.*recording the failed run .* also failed"):
            p.backfill("clicks", "2026-01-01", "2026-01-04")
        journal.rmdir()                                    # the registry writes again; the process lives on
        wait_for(lambda: p.runs("clicks")[0].status == "abandoned", "the unrecorded run to read as abandoned")


def test_a_killed_materialization_ends_abandoned_and_the_rerun_is_consistent(tmp_path: Path, redis_url: str) -> None:
    project = make_fault_project(tmp_path / "p", redis_url=redis_url)
    with project.platform() as p:
        p.backfill("clicks", "2026-01-01", "2026-01-05")
    marker = tmp_path / "writing"
    child = project.kill_child("-", "-", "materialize", marker)
    wait_for(marker.exists, "the materialization's first write", procs=[child])
    kill(child)
    with project.platform() as p:
        wait_for(lambda: p.runs("clicks")[0].status == "abandoned", "the killed materialization to read abandoned")
        killed = p.runs("clicks")[0]
        assert killed.kind == "materialize"
        rerun = p.materialize()[0]
        runs = {r.id: r for r in p.runs("clicks")}
        assert runs[killed.id].status == "abandoned" and runs[rerun.run_id].status == "succeeded"
        assert f"marked by run {rerun.run_id}" in runs[killed.id].details["error"]
        assert p.consistency("clicks").consistent
