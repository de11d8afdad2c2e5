"""What the runner counts as changed input: new snapshots of an Iceberg source table (appends and overwrites, by
the days of the files they add and remove), a new version of an upstream signal, and not a compaction, which
moves the same rows to other files (issue 19, item 2)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.expressions import GreaterThanOrEqual, LessThan

from fixtures.runner_project import day_events, make_runner_project
from quasar.runner_state import SignalState

T0 = date(2026, 1, 1)

ICEBERG_MODULE = '''\
import pyarrow as pa

from quasar.signals import Entity, Int64, Source, signal

user = Entity(name="user", join_key="user_id")
raw = Source.iceberg(name="raw_events", table="raw.events", timestamp="ts")


@signal(entity=user, source=raw, features={"clicked": Int64()})
def raw_clicks(batch: pa.Table) -> pa.Table:
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"],
                     "created_timestamp": batch["ts"], "clicked": batch["clicked"]})
'''


def day(i: int) -> date:
    return T0 + timedelta(days=i)


def at(i: int, hour: int = 10) -> datetime:
    d = day(i)
    return datetime(d.year, d.month, d.day, hour, tzinfo=UTC)


def backfills(report: Any, signal: str | None = None) -> list[tuple[str, str, str]]:
    return [(a.signal, a.start, a.end) for a in report.actions
            if a.kind == "backfill" and a.status == "succeeded" and signal in (None, a.signal)]


def test_new_snapshots_of_an_iceberg_source_recompute_the_days_their_files_hold(tmp_path: Path,
                                                                              redis_url: str) -> None:
    project = make_runner_project(tmp_path / "project", redis_url, [])
    with project.platform() as p:
        p.catalog.create_namespace_if_not_exists("raw")
        table = p.catalog.create_table("raw.events", schema=day_events(day(0)).schema)
        for i in range(4):
            table.append(day_events(day(i)))
    (project.root / "signals" / "raw.py").write_text(ICEBERG_MODULE)
    with project.platform() as p:
        p.register(project.root / "signals" / "raw.py")
        assert backfills(p.run(now=at(4)), "raw_clicks") == [("raw_clicks", "2026-01-01", "2026-01-05")]
        table = p.catalog.load_table("raw.events")
        table.append(day_events(day(1), seed=4))                                   # late rows of 01-02
        table.append(day_events(day(4)))                                           # the next day
        report = p.run(now=at(5))
        assert backfills(report, "raw_clicks") == [("raw_clicks", "2026-01-02", "2026-01-03"),
                                                   ("raw_clicks", "2026-01-05", "2026-01-06")]
        why = next(a.why for a in report.actions if a.signal == "raw_clicks" and a.start == "2026-01-02")
        assert why.startswith("source raw_events (Iceberg table raw.events): snapshot ")
        start = datetime(2026, 1, 3, tzinfo=UTC)                                   # 01-03 rewritten
        p.catalog.load_table("raw.events").overwrite(
            pa.Table.from_batches(day_events(day(2), seed=8).to_batches()),
            overwrite_filter=GreaterThanOrEqual("ts", start.isoformat()) & LessThan(
                "ts", (start + timedelta(days=1)).isoformat()))
        assert backfills(p.run(now=at(5, 12)), "raw_clicks") == []                   # not due: 1d schedule
        assert backfills(p.run(now=at(6)), "raw_clicks") == [("raw_clicks", "2026-01-03", "2026-01-04"),
                                                             ("raw_clicks", "2026-01-06", "2026-01-07")]
        assert p.run(now=at(6, 12)).actions == []


def test_a_compaction_of_the_upstream_marks_nothing_and_an_append_marks_its_days(tmp_path: Path,
                                                                               redis_url: str) -> None:
    project = make_runner_project(tmp_path / "project", redis_url, [day(i) for i in range(4)], schedule="1h")
    with project.platform() as p:
        p.run(now=at(4))
        sv = p.registry.signal("clicks")
        extra = day_events(day(1), n=5, seed=11)
        for part in range(3):                                                        # small files in 01-02
            rows = extra.slice(part, 1)
            p.offline.append(sv.signal, 1, pa.table({"user_id": rows["user_id"], "event_timestamp": rows["ts"],
                                                     "created_timestamp": rows["ts"], "clicked": rows["clicked"]}))
        report = p.run(now=at(4, 11))
        assert backfills(report, "clicks_daily") == [("clicks_daily", "2026-01-02", "2026-01-05")]
        (compacted,) = p.compact(["clicks"])
        assert compacted.rewritten_files > 1
        report = p.run(now=at(4, 12))
        assert report.actions == [], [a.line() for a in report.actions]              # same rows, other files


def test_a_new_version_of_the_upstream_recomputes_every_day_downstream(tmp_path: Path, redis_url: str) -> None:
    project = make_runner_project(tmp_path / "project", redis_url, [day(i) for i in range(3)])
    with project.platform() as p:
        p.run(now=at(3))
    module = project.root / "signals" / "runner_signals.py"
    module.write_text(module.read_text().replace('"clicked": batch["clicked"]})', '"clicked": batch["clicked"].cast("float64").cast("int64")})'))
    with project.platform() as p:
        changes = {c.name: c.status for c in p.register(project.root / "signals").signals}
        assert changes["clicks"] == "new version"
        report = p.run(now=at(3, 11))                   # not a new boundary, but v2 was never checked
        assert backfills(report) == [("clicks", "2026-01-01", "2026-01-04")]
        report = p.run(now=at(4))
        assert backfills(report, "clicks") == [("clicks", "2026-01-04", "2026-01-05")]
        daily = next(a for a in report.actions if a.signal == "clicks_daily" and a.kind == "backfill")
        assert (daily.start, daily.end) == ("2026-01-01", "2026-01-05")
        assert "upstream clicks is now v2 (was v1)" in daily.why
        assert SignalState.from_json(p.registry.get_state(SignalState.key("clicks_daily", 1))).dirty == []

