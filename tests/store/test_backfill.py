"""Backfills: idempotent whole-day replacement, atomic failure, run records, look-back, signals on signals."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fixtures.offline import random_events, write_events
from fixtures.registry_db import example_module, write_module
from quasar.registry import Registry
from quasar.signals import Entity, Float32, Int64, Source, aggregate, count, mean, signal
from quasar.signals.errors import BackfillError
from quasar.signals.signal import Signal
from quasar.store.backfill import BackfillResult, backfill, parse_window
from quasar.store.engines.local import LocalEngine
from quasar.store.sources import SourceReader
from quasar.store.tables import OfflineStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")
FEATURES = {"clicks": Int64(), "dwell": Float32()}


@signal(entity=user, source=events, features=FEATURES)
def user_clicks(batch: pa.Table) -> pa.Table:
    """Clicks and dwell (as float32) per event."""
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"], "clicks": batch["clicked"],
                     "dwell": pc.cast(batch["dwell_s"], pa.float32())})


@signal(entity=user, source=events, features=FEATURES, name="user_clicks")
def raising(batch: pa.Table) -> pa.Table:
    """Fails midway through its work."""
    half = batch.slice(0, batch.num_rows // 2)
    if half.num_rows:
        raise RuntimeError(f"boom after {half.num_rows} rows")
    return half


@signal(entity=user, source=events, features=FEATURES, name="user_clicks")
def lossy_dwell(batch: pa.Table) -> pa.Table:
    """Returns dwell as float64 where float32 is declared."""
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"], "clicks": batch["clicked"],
                     "dwell": batch["dwell_s"]})


@signal(entity=user, source=events, features=FEATURES, name="user_clicks")
def null_keys(batch: pa.Table) -> pa.Table:
    """Loses some join keys."""
    keys = pc.if_else(pc.equal(batch["clicked"], 0), pa.scalar(None, pa.int64()), batch["user_id"])
    return pa.table({"user_id": keys, "event_timestamp": batch["ts"], "clicks": batch["clicked"],
                     "dwell": pc.cast(batch["dwell_s"], pa.float32())})


@signal(entity=user, source=events, features=FEATURES, name="user_clicks")
def late_rows(batch: pa.Table) -> pa.Table:
    """Stamps rows a day late, past the window's end."""
    return pa.table({"user_id": batch["user_id"], "event_timestamp": pc.add(batch["ts"], pa.scalar(DAY)),
                     "clicks": batch["clicked"], "dwell": pc.cast(batch["dwell_s"], pa.float32())})


@signal(entity=user, source=events, features=FEATURES, name="user_clicks")
def no_clicks(batch: pa.Table) -> pa.Table:
    """Forgets a declared feature."""
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"],
                     "dwell": pc.cast(batch["dwell_s"], pa.float32())})


@signal(entity=user, source=events, features=FEATURES, name="user_clicks")
def not_a_table(batch: pa.Table) -> pa.Table:
    """Returns a list."""
    return batch.to_pylist()  # type: ignore[return-value]


activity = aggregate(name="activity", entity=user, source=events, step="1d",
                     aggregations=[count("1d"), mean("dwell_s", "3d", name="dwell_3d")])


@signal(entity=user, source=Source.signal(activity), features={"busy": Int64()})
def busy_days(batch: pa.Table) -> pa.Table:
    """1 where the user had more than 5 events the day before."""
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["event_timestamp"],
                     "busy": pc.cast(pc.greater(batch["count_1d"], 5), pa.int64())})


# --- a run log kept in memory ------------------------------------------------------------------------------
@dataclass
class MemoryRunLog:
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)

    def start_run(self, *, signal: str, version: int, kind: str, params: dict[str, Any] | None = None) -> int:
        run_id = len(self.runs) + 1
        self.runs[run_id] = {"signal": signal, "version": version, "kind": kind, "params": params or {},
                             "status": "running"}
        return run_id

    def finish_run(self, run_id: int, *, status: str, snapshot_id: int | None = None, rows: int | None = None,
                   details: dict[str, Any] | None = None) -> None:
        assert self.runs[run_id]["status"] == "running"
        self.runs[run_id].update(status=status, snapshot_id=snapshot_id, rows=rows, details=details or {})


@dataclass
class Project:
    root: Path
    store: OfflineStore
    reader: SourceReader
    engine: LocalEngine
    runs: MemoryRunLog

    def events(self, *, seed: int = 0, n: int = 600, days: int = 5, start: datetime = T0) -> pa.Table:
        """(Re)write the events source with fresh random data and return it."""
        folder = self.root / "data" / "events"
        for old in folder.glob("*.parquet"):
            old.unlink()
        table = random_events(n=n, days=days, start=start, seed=seed, users=10)
        write_events(table, folder)
        return table

    def backfill(self, sig: Signal, start: Any = "2026-01-01", end: Any = "2026-01-06", version: int = 1,
                 **kwargs: Any) -> BackfillResult:
        return backfill(signal=sig, version=version, start=start, end=end, store=self.store, engine=self.engine,
                        sources=self.reader, runs=self.runs, **kwargs)

    def rows(self, sig: Signal, version: int = 1) -> list[dict[str, Any]]:
        """The stored rows without created_timestamp, in a canonical order."""
        table = self.store.read(sig, version).drop_columns(["created_timestamp"])
        return sorted(table.to_pylist(), key=lambda r: (r["event_timestamp"], r["user_id"], str(r)))


@pytest.fixture
def project(tmp_path: Path, offline_store: OfflineStore, offline_catalog: Any) -> Iterator[Project]:
    engine = LocalEngine(threads=2)
    reader = SourceReader(root=tmp_path, store=offline_store, catalog=offline_catalog,
                          upstream_versions={"activity": (activity, 1)})
    yield Project(tmp_path, offline_store, reader, engine, MemoryRunLog())
    engine.close()


def expected_clicks(source: pa.Table, start: datetime, end: datetime) -> list[dict[str, Any]]:
    out = user_clicks(source).to_pylist()
    return sorted((r for r in out if start <= r["event_timestamp"] < end),
                  key=lambda r: (r["event_timestamp"], r["user_id"], str(r)))


# --- windows ---------------------------------------------------------------------------------------------
def test_parse_window() -> None:
    assert parse_window("2026-01-01", "2026-01-03") == (T0, T0 + 2 * DAY)
    assert parse_window(date(2026, 1, 1), datetime(2026, 1, 2)) == (T0, T0 + DAY)
    assert parse_window("2026-01-01T00:00:00Z", "2026-01-02T01:00:00+01:00") == (T0, T0 + DAY)
    with pytest.raises(BackfillError, match="not midnight UTC: backfills replace whole days"):
        parse_window("2026-01-01T06:00:00", "2026-01-03")
    with pytest.raises(BackfillError, match="end 2026-01-01 must be after start 2026-01-01"):
        parse_window("2026-01-01", "2026-01-01")
    with pytest.raises(BackfillError, match=r"'yesterday' is not an ISO-8601 time.*must be a date"):
        parse_window("yesterday", "2026-01-03")
    with pytest.raises(BackfillError, match="must be a date"):
        parse_window(20260101, "2026-01-03")


def test_backfill_is_idempotent(project: Project) -> None:
    source = project.events()
    first = project.backfill(user_clicks, progress=True)
    assert first.rows == source.num_rows and first.snapshot_id is not None
    rows = project.rows(user_clicks)
    assert rows == expected_clicks(source, T0, T0 + 5 * DAY)
    files = project.store.plan_files("user_clicks", 1)
    second = project.backfill(user_clicks)
    assert second.snapshot_id != first.snapshot_id
    assert project.store.current_snapshot_id("user_clicks", 1) == second.snapshot_id
    assert project.rows(user_clicks) == rows
    assert len(project.store.plan_files("user_clicks", 1)) == len(files)
    stored = project.store.read(user_clicks, 1)
    assert stored.column("created_timestamp").null_count == 0


def test_sub_window_replaces_exactly_its_days(project: Project) -> None:
    old = project.events(seed=1)
    project.backfill(user_clicks)
    new = project.events(seed=2)
    result = project.backfill(user_clicks, start=T0 + DAY, end=date(2026, 1, 5))
    assert (result.start, result.end) == (T0 + DAY, T0 + 4 * DAY)
    want = sorted(expected_clicks(old, T0, T0 + DAY) + expected_clicks(new, T0 + DAY, T0 + 4 * DAY)
                  + expected_clicks(old, T0 + 4 * DAY, T0 + 5 * DAY),
                  key=lambda r: (r["event_timestamp"], r["user_id"], str(r)))
    assert project.rows(user_clicks) == want
    # a window with no source rows empties exactly its days
    project.events(seed=3, days=1)
    project.backfill(user_clicks, start="2026-01-02", end="2026-01-06")
    assert {r["event_timestamp"].date() for r in project.rows(user_clicks)} == {date(2026, 1, 1)}


# --- failures ------------------------------------------------------------------------------------------------
FAILURES = [
    (raising, r"compute: RuntimeError: boom after \d+ rows"),
    (lossy_dwell, r"output column 'dwell' has type double, which does not convert exactly to feature type float32"),
    (null_keys, r"output column 'user_id' has \d+ null join key\(s\)"),
    (late_rows, r"output column 'event_timestamp' has \d+ row\(s\) outside the backfill window"),
    (no_clicks, r"output column 'clicks' is missing"),
    (not_a_table, r"its transform returned list, not a pyarrow Table"),
]


@pytest.mark.parametrize(("bad", "message"), FAILURES, ids=[f[0].transform.__name__ for f in FAILURES])
def test_failures_leave_the_previous_snapshot(project: Project, bad: Signal, message: str) -> None:
    project.events()
    good = project.backfill(user_clicks)
    before = project.rows(user_clicks)
    with pytest.raises(BackfillError, match=r"^signal user_clicks v1: backfill of \[2026-01-02, 2026-01-04\) "
                                            r"failed at .*" + message) as info:
        project.backfill(bad, start="2026-01-02", end="2026-01-04")
    assert info.value.__cause__ is not None
    assert project.store.current_snapshot_id("user_clicks", 1) == good.snapshot_id
    assert project.rows(user_clicks) == before
    failed = project.runs.runs[max(project.runs.runs)]
    assert failed["status"] == "failed" and failed["snapshot_id"] is None
    assert failed["details"]["error"] == str(info.value)


def test_source_failure_is_recorded(project: Project) -> None:
    with pytest.raises(BackfillError, match=r"failed at read source: source events: Parquet path .* does not exist"):
        project.backfill(user_clicks)
    assert project.runs.runs[1]["status"] == "failed"
    assert project.runs.runs[1]["details"]["step"] == "read source"
    assert project.store.current_snapshot_id("user_clicks", 1) is None


def test_interrupts_are_recorded_and_not_wrapped(project: Project) -> None:
    project.events(n=50)

    @signal(entity=user, source=events, features=FEATURES, name="user_clicks")
    def interrupted(batch: pa.Table) -> pa.Table:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        project.backfill(interrupted)
    assert project.runs.runs[1]["status"] == "failed"
    assert project.runs.runs[1]["details"]["error_type"] == "KeyboardInterrupt"


def test_successful_runs_are_recorded(project: Project) -> None:
    source = project.events()
    result = project.backfill(user_clicks, end="2026-01-03")
    run = project.runs.runs[result.run_id]
    assert run["signal"] == "user_clicks" and run["version"] == 1 and run["kind"] == "backfill"
    assert run["params"] == {"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-03T00:00:00+00:00",
                             "engine": "local"}
    assert run["status"] == "succeeded" and run["snapshot_id"] == result.snapshot_id
    assert run["rows"] == result.rows == len(expected_clicks(source, T0, T0 + 2 * DAY))
    assert run["details"]["duration_s"] >= 0


# --- aggregations and signals on signals -------------------------------------------------------------------
def test_aggregation_reads_its_look_back(project: Project) -> None:
    source = project.events(n=800, days=6, start=T0 - DAY)
    project.backfill(activity, start="2026-01-02", end="2026-01-05")
    want = project.engine.compute(activity, source, T0 + DAY, T0 + 4 * DAY).to_pylist()
    assert project.rows(activity) == sorted(want, key=lambda r: (r["event_timestamp"], r["user_id"], str(r)))
    # the first day's 3-day means include events from before the window start
    first_day = [r for r in want if r["event_timestamp"] == T0 + DAY]
    assert any(r["count_1d"] > 0 for r in first_day)


def test_signal_on_signal(project: Project) -> None:
    project.events(n=900)
    project.backfill(activity)
    result = project.backfill(busy_days)
    upstream = project.rows(activity)
    assert result.rows == len(upstream)
    assert [(r["user_id"], r["event_timestamp"], r["busy"]) for r in project.rows(busy_days)] == [
        (r["user_id"], r["event_timestamp"], int(r["count_1d"] > 5)) for r in upstream]


# --- the real registry as the run log --------------------------------------------------------------------
def test_backfill_with_the_registry(tmp_path: Path, offline_store: OfflineStore, offline_catalog: Any,
                                    events_parquet: Callable[..., Path]) -> None:
    events_parquet(n=500, days=4, seed=11)
    module = write_module(tmp_path / "signals" / "example.py", example_module())
    registry = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        registry.register(module, root=tmp_path)
        engine = LocalEngine()
        results = {}
        for name in ("user_clicks", "user_activity", "user_score"):
            sv = registry.load_signal(name)
            upstream = {u: (registry.signal(u).signal, registry.signal(u).version) for u in sv.signal.upstream}
            reader = SourceReader(root=tmp_path, store=offline_store, catalog=offline_catalog,
                                  upstream_versions=upstream)
            results[name] = backfill(signal=sv.signal, version=sv.version, start="2026-01-01", end="2026-01-05",
                                     store=offline_store, engine=engine, sources=reader, runs=registry)
        engine.close()
        runs = {r.signal: r for r in registry.runs(kind="backfill")}
        for name, result in results.items():
            run = runs[name]
            assert run.id == result.run_id and run.status == "succeeded"
            assert run.snapshot_id == result.snapshot_id and run.rows == result.rows > 0
            assert run.duration_s is not None and run.params["engine"] == "local"
        assert results["user_clicks"].rows == 500
        assert results["user_score"].rows == results["user_activity"].rows

        sv = registry.signal("user_clicks")
        with pytest.raises(BackfillError, match="output column 'clicks' is missing"):
            backfill(signal=sv.signal.__class__.from_dict(sv.signal.to_dict(), transform=no_clicks.transform),
                     version=sv.version, start="2026-01-01", end="2026-01-02", store=offline_store,
                     engine=LocalEngine(), sources=SourceReader(root=tmp_path, store=offline_store,
                                                                catalog=offline_catalog), runs=registry)
        failed = registry.runs("user_clicks", kind="backfill")[0]
        assert failed.status == "failed" and "output column 'clicks' is missing" in failed.details["error"]
        assert offline_store.current_snapshot_id("user_clicks", 1) == results["user_clicks"].snapshot_id
    finally:
        registry.close()
