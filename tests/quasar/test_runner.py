"""``Platform.run`` (``quasar run``) in process, with the pass's clock given: exactly the missing and stale days,
upstream first, in as few backfills as possible, then the materializations; a second pass does nothing; a failure
skips only what is downstream of it; the state survives what a killed pass leaves (issue 19, item 2)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from fixtures.runner_project import RunnerProject, make_runner_project
from quasar.runner import Runner
from quasar.runner_state import SignalState

T0 = date(2026, 1, 1)


def day(i: int) -> date:
    return T0 + timedelta(days=i)


def at(i: int, hour: int = 10) -> datetime:
    """10:00 UTC on day ``i`` after 2026-01-01."""
    d = day(i)
    return datetime(d.year, d.month, d.day, hour, tzinfo=UTC)


def backfills(report: Any) -> list[tuple[str, str, str]]:
    return [(a.signal, a.start, a.end) for a in report.actions if a.kind == "backfill" and a.status == "succeeded"]


def materialized(report: Any) -> list[str]:
    return [a.signal for a in report.actions if a.kind == "materialize" and a.status == "succeeded"]


def rows(p: Any, name: str) -> pa.Table:
    sv = p.registry.signal(name)
    table = p.offline.read(sv.signal, sv.version).drop_columns(["created_timestamp"])
    return table.sort_by([(c, "ascending") for c in table.column_names])


@pytest.fixture
def project(tmp_path: Path, redis_url: str) -> RunnerProject:
    return make_runner_project(tmp_path / "project", redis_url, [day(i) for i in range(5)])      # 01-01 .. 01-05


def test_new_data_computes_exactly_the_missing_and_stale_days_upstream_first(project: RunnerProject,
                                                                           tmp_path: Path, redis_url: str) -> None:
    with project.platform() as p:
        first = p.run(now=at(5))
        assert first.ok, first.failed
        assert backfills(first) == [("clicks", "2026-01-01", "2026-01-06"), ("clicks_daily", "2026-01-01", "2026-01-06"),
                                    ("views", "2026-01-01", "2026-01-06")]
        assert materialized(first) == ["clicks_daily", "views"]
        online = p.online_features({"user_id": [1]}, ["views"])["results"][1]["statuses"]
        assert online == ["OUTSIDE_MAX_AGE"]            # in Redis (January's rows are older than the TTL by now)
        runs = len(p.registry.runs(limit=1000))
        second = p.run(now=at(5, 23))                      # the same day: nothing new, nothing done
        assert (second.actions, second.failed, second.skipped) == ([], {}, {})
        assert len(p.registry.runs(limit=1000)) == runs

    project.add_day(day(5))                                 # the next day's events, and late events of 01-03
    project.add_day(day(2), name="2026-01-03-late", seed=7)
    with project.platform() as p:
        third = p.run(now=at(6))
        assert third.ok, third.failed
        assert backfills(third) == [
            ("clicks", "2026-01-03", "2026-01-04"), ("clicks", "2026-01-06", "2026-01-07"),
            ("clicks_daily", "2026-01-03", "2026-01-07"),           # the late day's reach joined with the new day
            ("views", "2026-01-03", "2026-01-04"), ("views", "2026-01-06", "2026-01-07")]
        assert materialized(third) == ["clicks_daily", "views"]
        why = {(a.signal, a.start): a.why for a in third.actions if a.kind == "backfill"}
        assert why[("clicks", "2026-01-03")] == "source events: 2026-01-03-late.parquet added"
        assert why[("clicks", "2026-01-06")].startswith("never computed")
        assert "upstream clicks v1: snapshot" in why[("clicks_daily", "2026-01-03")]
        assert p.run(now=at(6, 12)).actions == []
        incremental = {name: rows(p, name) for name in ("clicks", "clicks_daily", "views")}

    fresh = make_runner_project(tmp_path / "fresh", redis_url, [day(i) for i in range(6)])   # all the data at once
    fresh.add_day(day(2), name="2026-01-03-late", seed=7)
    with fresh.platform() as p:
        assert backfills(p.run(now=at(6)))[0] == ("clicks", "2026-01-01", "2026-01-07")
        for name, table in incremental.items():
            assert rows(p, name).equals(table), name


def test_a_changed_or_removed_file_recomputes_the_days_of_its_old_and_new_rows(project: RunnerProject) -> None:
    with project.platform() as p:
        p.run(now=at(5))
    (project.root / "data" / "events" / "2026-01-02.parquet").unlink()
    project.add_day(day(3), seed=5)                         # 01-04 rewritten in place
    with project.platform() as p:
        report = p.run(now=at(6))
        got = [b for b in backfills(report) if b[0] == "views"]
        assert got == [("views", "2026-01-02", "2026-01-03"), ("views", "2026-01-04", "2026-01-05"),
                       ("views", "2026-01-06", "2026-01-07")]
        why = [a.why for a in report.actions if a.signal == "views" and a.kind == "backfill"]
        assert why[:2] == ["source events: 2026-01-02.parquet removed", "source events: 2026-01-04.parquet changed"]
        sv = p.registry.signal("views")
        stored = p.offline.read(sv.signal, sv.version)
        days = {t.date() for t in stored.column("event_timestamp").to_pylist()}
        assert date(2026, 1, 2) not in days and date(2026, 1, 4) in days


def test_a_failure_skips_only_what_is_downstream_and_the_next_pass_finishes(project: RunnerProject,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUASAR_TEST_FAIL", "clicks")
    with project.platform() as p:
        report = p.run(now=at(5))
        assert list(report.failed) == ["clicks"] and "clicks fails on purpose" in report.failed["clicks"]
        assert report.skipped == {"clicks_daily": "upstream clicks failed"}
        assert backfills(report) == [("views", "2026-01-01", "2026-01-06")]        # unrelated: not blocked
        (failed,) = [r for r in p.registry.runs("clicks") if r.kind == "backfill"]
        assert failed.status == "failed"                                         # a recorded run
        monkeypatch.delenv("QUASAR_TEST_FAIL")
        again = p.run(now=at(5, 11))
        assert backfills(again) == [("clicks", "2026-01-01", "2026-01-06"), ("clicks_daily", "2026-01-01", "2026-01-06")]


def test_the_loop_retries_a_failed_signal_after_a_delay(project: RunnerProject,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUASAR_TEST_FAIL", "views")
    with project.platform() as p:
        runner = Runner(p)
        assert list(runner.pass_once(at(5)).failed) == ["views"]
        held_off = runner.pass_once(at(5))
        assert held_off.skipped["views"].startswith("failed 1 time(s) in a row; retrying at")
        monkeypatch.delenv("QUASAR_TEST_FAIL")
        count, retry_at = runner.backoff["views"]
        runner.backoff["views"] = (count, retry_at - timedelta(hours=1))          # its delay is over
        assert backfills(runner.pass_once(at(5))) == [("views", "2026-01-01", "2026-01-06")]
        assert "views" not in runner.backoff


def test_a_dry_run_plans_without_acting_and_says_why(project: RunnerProject) -> None:
    with project.platform() as p:
        plan = p.run(now=at(5), dry_run=True)
        assert plan.actions == [] and p.registry.runs(limit=10) == []
        assert p.registry.get_state(SignalState.key("clicks", 1)) is None
        lines = [line for pl in plan.plans for line in pl.lines()]
        assert lines == [
            "clicks v1: backfill [2026-01-01, 2026-01-06) (5 days): never computed",
            "clicks_daily v1: backfill [2026-01-01, 2026-01-06) (5 days): never computed",
            "clicks_daily v1: materialize v1: after its backfill",
            "views v1: backfill [2026-01-01, 2026-01-06) (5 days): never computed",
            "views v1: materialize v1: after its backfill"]
        p.run(now=at(5))
    project.add_day(day(1), name="2026-01-02-late", seed=3)
    with project.platform() as p:
        plan = p.run(now=at(6), dry_run=True)
        daily = next(pl for pl in plan.plans if pl.signal == "clicks_daily")
        assert [b.text() for b in daily.backfills] == [           # what clicks will recompute first, predicted
            "backfill [2026-01-02, 2026-01-07) (5 days): never computed; upstream clicks: recomputed first in this pass"]


def test_max_days_cuts_a_long_range_into_backfills(project: RunnerProject) -> None:
    with project.platform() as p:
        report = p.run(now=at(5), max_days=2)
        assert [b for b in backfills(report) if b[0] == "views"] == [
            ("views", "2026-01-01", "2026-01-03"), ("views", "2026-01-03", "2026-01-05"),
            ("views", "2026-01-05", "2026-01-06")]


def test_a_manual_signal_is_left_alone_and_a_weekly_one_waits_for_its_boundary(tmp_path: Path,
                                                                              redis_url: str) -> None:
    project = make_runner_project(tmp_path / "manual", redis_url, [day(i) for i in range(5)], schedule="manual")
    with project.platform() as p:
        report = p.run(now=at(5))
        assert report.actions == [] and all("schedule manual" in pl.note for pl in report.plans)
    weekly = make_runner_project(tmp_path / "weekly", redis_url, [day(i) for i in range(10)], schedule="7d")
    with weekly.platform() as p:                        # weeks start on Thursdays: 2026-01-01, 2026-01-08
        assert backfills(p.run(now=at(9)))[0] == ("clicks", "2026-01-01", "2026-01-08")
        assert p.run(now=at(13)).actions == []              # 2026-01-14: the next boundary is 01-15
        assert backfills(p.run(now=at(14)))[0] == ("clicks", "2026-01-08", "2026-01-15")


def test_a_killed_pass_leaves_its_record_of_changed_days_and_the_next_pass_redoes_them(project: RunnerProject) -> None:
    with project.platform() as p:
        p.run(now=at(5))
    project.add_day(day(2), name="2026-01-03-late", seed=9)
    with project.platform() as p:
        # the pass saw the new file and recorded the changed day, then died before its backfill
        runner = Runner(p)
        plan = next(pl for pl in runner.pass_once(at(6), dry_run=True).plans if pl.signal == "views")
        p.registry.set_state(SignalState.key("views", 1), plan.state.to_json())
        recorded = SignalState.from_json(p.registry.get_state(SignalState.key("views", 1)))
        assert recorded.dirty_days.text() == "[2026-01-03, 2026-01-04) (1 day)"
        report = p.run(now=at(6))
        assert next(b for b in backfills(report) if b[0] == "views") == ("views", "2026-01-03", "2026-01-04")
        assert not SignalState.from_json(p.registry.get_state(SignalState.key("views", 1))).dirty


def test_status_before_and_after(project: RunnerProject) -> None:
    with project.platform() as p:
        before = {s.fresh.signal: s for s in p.status(now=at(5))}
        assert {n: s.fresh.state for n, s in before.items()} == {"clicks": "never", "clicks_daily": "never",
                                                                 "views": "never"}
        assert before["clicks"].next == ["backfill [2026-01-01, 2026-01-06) (5 days): never computed"]
        p.run(now=at(5))
        after = {s.fresh.signal: s for s in p.status(now=at(5))}
        assert {n: (s.fresh.state, s.fresh.lag) for n, s in after.items()} == {
            n: ("ok", timedelta(hours=10)) for n in after}
        assert after["views"].last_run["kind"] == "materialize"                 # type: ignore[index]
        assert after["views"].next[0].startswith("nothing to do (checked for 2026-01-06T00:00Z")
        later = {s.fresh.signal: s for s in p.status(now=at(7))}               # two days on, nothing ran
        assert {n: s.fresh.state for n, s in later.items()} == {n: "stale" for n in later}
        assert later["clicks"].next == ["backfill [2026-01-06, 2026-01-08) (2 days): never computed"]
        assert later["clicks"].to_dict()["lag_s"] == 2 * 86400 + 10 * 3600


def test_without_redis_the_offline_work_still_gets_done(tmp_path: Path) -> None:
    from fixtures.redis_server import free_port

    project = make_runner_project(tmp_path / "project", f"redis://127.0.0.1:{free_port()}/0",
                                  [day(i) for i in range(3)])
    with project.platform() as p:
        report = p.run(now=at(3))
        assert [b[0] for b in backfills(report)] == ["clicks", "clicks_daily", "views"]
        assert sorted(report.failed) == ["clicks_daily", "views"] and report.skipped == {}
        assert all(e.startswith(f"materializing {n} v1 failed") for n, e in report.failed.items())
        again = p.run(now=at(3, 11))                       # not due: only the materializations are tried again
        assert backfills(again) == [] and sorted(again.failed) == ["clicks_daily", "views"]
