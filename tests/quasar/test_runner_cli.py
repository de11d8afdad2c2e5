"""``quasar run`` and ``quasar status`` as real processes, on the real clock: a pass then nothing, one runner acting
at a time, a SIGKILLed runner leaving nothing half-done, SIGTERM stopping after the current step, and the
metrics file (issue 19, items 2 and 3)."""

from __future__ import annotations

import itertools
import json
import os
import signal as signals
from pathlib import Path
from typing import Any

import pytest

from fixtures.fault_project import finish, kill, wait_for
from fixtures.prometheus import sample_value
from fixtures.runner_project import RunnerProject, days_before_today, make_runner_project, today
from quasar.runner import LEASE_HELD_EXIT

EVERYTHING = ["clicks", "clicks_daily", "views"]
ONLINE = ["clicks_daily", "views"]


@pytest.fixture
def project(tmp_path: Path, redis_url: str) -> RunnerProject:
    return make_runner_project(tmp_path / "project", redis_url, days_before_today(3))


def done(project: RunnerProject, kind: str) -> list[str]:
    """The signals with a succeeded run of ``kind``, in run order."""
    return [r.signal for r in project.runs() if r.kind == kind and r.status == "succeeded"]


def gated(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    gate = tmp_path / "gate"
    return gate, {"QUASAR_TEST_GATE": str(gate)}


def waiting(gate: Path) -> bool:
    return any(gate.parent.glob(f"{gate.name}.*.waiting"))


def read_until(proc: Any, text: str) -> str:
    """Read a child's output line by line until a line holds ``text``; what was read."""
    read = ""
    while text not in read:
        line = proc.stdout.readline()
        assert line, f"the child exited before printing {text!r}:\n{read}"
        read += line
    return read


def status(project: RunnerProject) -> dict[str, Any]:
    code, out = finish(project.cli("status", "--json"))
    assert code == 0, out
    return {row["signal"]: row for row in json.loads(out)}


def test_run_once_computes_everything_then_nothing_and_status_says_so(project: RunnerProject,
                                                                    tmp_path: Path) -> None:
    before = status(project)
    assert {n: r["state"] for n, r in before.items()} == {n: "never" for n in EVERYTHING}
    first_day, until = days_before_today(3)[0].isoformat(), today().isoformat()
    assert before["clicks"]["next"] == [f"backfill [{first_day}, {until}) (3 days): never computed"]

    metrics = tmp_path / "metrics" / "quasar.prom"
    code, out = finish(project.cli("run", "--once", "--metrics-file", str(metrics)))
    assert code == 0, out
    assert done(project, "backfill") == EVERYTHING and done(project, "materialize") == ONLINE
    assert f"backfilled clicks v1 [{first_day}, {until})" in out and "pass done: 3 backfill(s)" in out
    text = metrics.read_text()
    assert sample_value(text, "quasar_signal_stale", signal="views") == 0
    assert sample_value(text, "quasar_runner_runs_total", kind="backfill", outcome="succeeded") == 3
    assert 0 <= sample_value(text, "quasar_signal_freshness_lag_seconds", signal="views") <= 86400  # type: ignore[operator]
    assert sample_value(text, "quasar_runner_rows_written_total", signal="views", kind="backfill") == 180

    after = status(project)
    assert {n: r["state"] for n, r in after.items()} == {n: "ok" for n in EVERYTHING}
    assert after["views"]["computed_until"].startswith(until) and after["views"]["last_run"]["kind"] == "materialize"
    runs = len(project.runs())
    code, out = finish(project.cli("run", "--once"))
    assert code == 0 and "pass done: 0 backfill(s), 0 materialization(s)" in out, out
    assert len(project.runs()) == runs                                           # a second pass does nothing


def test_two_runners_never_both_act(project: RunnerProject, tmp_path: Path) -> None:
    gate, env = gated(tmp_path)
    first = project.cli("run", "--once", **env)
    wait_for(lambda: waiting(gate), "the first runner inside its first backfill", procs=[first])
    code, out = finish(project.cli("run", "--once"))
    assert code == LEASE_HELD_EXIT, out
    assert "another runner holds the lease:" in out and "nothing done" in out
    patient = project.cli("run", "--once", "--wait")
    said = read_until(patient, "waiting for the runner lease, held by")
    assert len(project.runs()) == 1                                              # the waiting one did nothing
    gate.touch()
    assert finish(first)[0] == 0
    code, out = finish(patient)
    out = said + out
    assert code == 0, out
    assert "pass done: 0 backfill(s), 0 materialization(s)" in out, out
    assert done(project, "backfill") == EVERYTHING and done(project, "materialize") == ONLINE


def test_runners_started_together_take_turns(project: RunnerProject) -> None:
    racers = [project.cli("run", "--once", "--wait") for _ in range(3)]
    outputs = [finish(r) for r in racers]
    assert all(code == 0 for code, _ in outputs), outputs
    runs = [r for r in project.runs() if r.kind in ("backfill", "materialize")]
    assert sorted(r.signal for r in runs if r.kind == "backfill") == EVERYTHING        # each day computed once
    assert sorted(r.signal for r in runs if r.kind == "materialize") == ONLINE
    for earlier, later in itertools.pairwise(runs):                        # never two at once
        assert earlier.finished_at is not None and earlier.finished_at <= later.started_at


def test_a_killed_runner_leaves_nothing_half_done_and_the_next_pass_finishes(project: RunnerProject,
                                                                           tmp_path: Path) -> None:
    gate, env = gated(tmp_path)
    victim = project.cli("run", "--once", **env)
    wait_for(lambda: waiting(gate), "the runner inside its first backfill", procs=[victim])
    kill(victim)
    with project.platform() as p:
        assert p.offline.current_snapshot_id("clicks", 1) is None                 # nothing committed
        assert p.registry.lease("runner") is not None                            # left to run out
    code, out = finish(project.cli("run", "--once", "--wait"), timeout=120)
    assert code == 0, out
    assert done(project, "backfill") == EVERYTHING and done(project, "materialize") == ONLINE
    (killed,) = [r for r in project.runs() if r.status != "succeeded"]
    assert (killed.signal, killed.kind, killed.status) == ("clicks", "backfill", "abandoned")
    assert {n: r["state"] for n, r in status(project).items()} == {n: "ok" for n in EVERYTHING}


def test_sigterm_stops_after_the_current_step(project: RunnerProject, tmp_path: Path) -> None:
    gate, env = gated(tmp_path)
    runner = project.cli("run", "--once", **env)
    wait_for(lambda: waiting(gate), "the runner inside its first backfill", procs=[runner])
    os.kill(runner.pid, signals.SIGTERM)
    said = read_until(runner, "SIGTERM: stopping after the current step")       # noted while in the step
    gate.touch()
    code, out = finish(runner)
    out = said + out
    assert code == 0, out
    assert "SIGTERM: stopping after the current step" in out and "stopped: SIGTERM received" in out, out
    assert [(r.signal, r.kind, r.status) for r in project.runs()] == [("clicks", "backfill", "succeeded")]
    code, out = finish(project.cli("run", "--once"))
    assert code == 0, out
    assert done(project, "backfill") == EVERYTHING and done(project, "materialize") == ONLINE


def test_dry_run_and_json(project: RunnerProject) -> None:
    code, out = finish(project.cli("run", "--dry-run"))
    assert code == 0, out
    assert out.splitlines()[-1] == "plan: 3 backfill(s), 2 materialization(s), 0 skipped; nothing done (--dry-run)"
    assert project.runs() == []
    proc = project.cli("run", "--once", "--json")
    code, out = finish(proc)
    assert code == 0, out
    report = json.loads(out[out.index("\n{") + 1:] if not out.startswith("{") else out)
    assert report["ok"] and [a["signal"] for a in report["actions"] if a["kind"] == "backfill"] == EVERYTHING


def test_the_loop_serves_metrics_keeps_the_lease_and_stops_on_sigterm(project: RunnerProject) -> None:
    import urllib.request

    from fixtures.redis_server import free_port

    port = free_port()
    loop = project.cli("run", "--interval", "1s", "--metrics-port", str(port))

    def scraped() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
                return answer.read().decode()
        except OSError:
            return ""

    wait_for(lambda: (sample_value(scraped(), "quasar_runner_passes_total", outcome="ok") or 0) >= 2,
             "two passes of the loop", procs=[loop])
    text = scraped()
    assert sample_value(text, "quasar_runner_lease_held") == 1
    assert sample_value(text, "quasar_runner_runs_total", kind="backfill", outcome="succeeded") == 3
    assert sample_value(text, "quasar_signal_stale", signal="clicks") == 0
    with project.platform() as p:
        assert p.registry.lease("runner") is not None
    code, out = finish(project.cli("run", "--once"))
    assert code == LEASE_HELD_EXIT, out                                          # the loop holds it
    os.kill(loop.pid, signals.SIGTERM)
    code, out = finish(loop)
    assert code == 0 and "SIGTERM: stopping after the current step" in out, out
    with project.platform() as p:
        assert p.registry.lease("runner") is None                               # given back
    assert done(project, "backfill") == EVERYTHING                              # once, however many passes
