"""Data-quality gates on real Iceberg tables, the real registry run log and a real Redis: a strict failure commits
nothing, quarantines exactly its batch and records why; warn commits and records; a pass commits; materialization
never sees a refused batch and refuses a snapshot marked as failed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import great_expectations as gx
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fixtures.offline import random_events, write_events
from quasar.online.materialize import materialize
from quasar.online.redis_store import RedisOnlineStore
from quasar.registry import Registry
from quasar.signals import Entity, Float32, Int64, Source, signal
from quasar.signals.errors import BackfillError, DefinitionError, NotFoundError, ValidationFailedError
from quasar.signals.signal import Signal
from quasar.store.backfill import BackfillResult, backfill
from quasar.store.engines.local import LocalEngine
from quasar.store.gates import PROP_RUN_ID, PROP_VALIDATION, GateResult, validate_batch
from quasar.store.quarantine import QUARANTINED_AT, RUN_ID, quarantine_identifier, read_quarantine
from quasar.store.sources import SourceReader
from quasar.store.tables import OfflineStore

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")
FEATURES = {"clicks": Int64(), "dwell": Float32()}
T0 = datetime(2026, 1, 1, tzinfo=UTC)

PASSING = [
    gx.expectations.ExpectColumnValuesToBeBetween(column="clicks", min_value=0, max_value=2),
    gx.expectations.ExpectColumnValuesToNotBeNull(column="user_id"),
    gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "event_timestamp"]),
    gx.expectations.ExpectTableRowCountToBeBetween(min_value=1, max_value=100_000),
]
FAILING = [
    gx.expectations.ExpectColumnValuesToBeBetween(column="clicks", min_value=0, max_value=1),   # clicks go to 2
    gx.expectations.ExpectColumnValuesToNotBeNull(column="user_id"),
    gx.expectations.ExpectTableRowCountToBeBetween(min_value=1, max_value=10),                # far more rows
]


def clicks_signal(expectations: Sequence[Any], policy: str = "strict") -> Signal:
    """The same signal version (same code and schema) with other expectations: those never make a version."""

    @signal(entity=user, source=events, features=FEATURES, online=True, name="user_clicks",
            expectations=expectations, policy=policy)
    def user_clicks(batch: pa.Table) -> pa.Table:
        """Clicks and dwell per event."""
        return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"], "clicks": batch["clicked"],
                         "dwell": pc.cast(batch["dwell_s"], pa.float32())})

    return user_clicks


@dataclass
class Project:
    root: Path
    store: OfflineStore
    registry: Registry
    engine: LocalEngine
    online: RedisOnlineStore

    def events(self, seed: int) -> pa.Table:
        folder = self.root / "data" / "events"
        for old in folder.glob("*.parquet"):
            old.unlink()
        table = random_events(n=400, days=4, seed=seed, users=15)
        write_events(table, folder)
        return table

    def backfill(self, sig: Signal, start: str = "2026-01-01", end: str = "2026-01-05") -> BackfillResult:
        reader = SourceReader(root=self.root, store=self.store, catalog=self.store.catalog)
        return backfill(signal=sig, version=1, start=start, end=end, store=self.store, engine=self.engine,
                        sources=reader, runs=self.registry)

    def snapshot(self) -> int | None:
        return self.store.current_snapshot_id("user_clicks", 1)

    def stored(self, sig: Signal) -> list[dict[str, Any]]:
        return _canonical(self.store.read(sig, 1).drop_columns(["created_timestamp"]))

    def materialize(self, sig: Signal) -> Any:
        return materialize(signal=sig, version=1, offline=self.store, online=self.online, state=self.registry)


def _canonical(table: pa.Table) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: (r["event_timestamp"], r["user_id"], str(r)))


def _computed(sig: Signal, source: pa.Table, start: datetime, end: datetime) -> list[dict[str, Any]]:
    rows = sig(source)
    keep = pc.and_(pc.greater_equal(rows["event_timestamp"], start), pc.less(rows["event_timestamp"], end))
    return _canonical(rows.filter(keep))


@pytest.fixture
def project(tmp_path: Path, offline_store: OfflineStore, redis_url: str) -> Iterator[Project]:
    registry = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}")
    registry.register_definitions([user], [events], [clicks_signal(PASSING)], module="tests.gates")
    engine = LocalEngine(threads=2)
    online = RedisOnlineStore(redis_url, project="gates")
    yield Project(tmp_path, offline_store, registry, engine, online)
    online.close()
    engine.close()
    registry.close()


def _run(project: Project, run_id: int | None) -> Any:
    (run,) = [r for r in project.registry.runs("user_clicks") if r.id == run_id]
    return run


def test_strict_failure_commits_nothing_quarantines_the_batch_and_records_why(project: Project) -> None:
    good_source = project.events(seed=1)
    good = project.backfill(clicks_signal(PASSING))
    assert good.validation is not None and good.validation["verdict"] == "passed"
    before = project.stored(clicks_signal(PASSING))

    bad_source = project.events(seed=2)                     # other rows, so a leak would show
    strict = clicks_signal(FAILING)
    with pytest.raises(ValidationFailedError, match=r"^signal user_clicks v1: backfill of \[2026-01-02, "
                       r"2026-01-04\) failed at validate: the data-quality gate refused the batch \(failed 2 of 3 "
                       r"expectations: expect_column_values_to_be_between\(column=clicks.*\); its \d+ rows are in "
                       r"the quarantine table signals.user_clicks__v1__quarantine \(run \d+\)") as info:
        project.backfill(strict, start="2026-01-02", end="2026-01-04")

    # no new snapshot: the table is exactly what the passing backfill wrote
    assert project.snapshot() == good.snapshot_id
    assert project.stored(strict) == before == _computed(strict, good_source, T0, datetime(2026, 1, 5, tzinfo=UTC))

    # the run log: failed at the gate, with which expectations failed, observed values and unexpected rows
    (failed_run,) = [r for r in project.registry.runs("user_clicks") if r.status == "failed"]
    assert failed_run.kind == "backfill" and failed_run.snapshot_id is None
    details = failed_run.details
    assert details["step"] == "validate" and details["error_type"] == "ValidationFailedError"
    assert details["error"] == str(info.value) and info.value.details["validation"] == details["validation"]
    validation = details["validation"]
    assert (validation["verdict"], validation["policy"], validation["evaluated"], validation["failed"]) == (
        "failed", "strict", 3, 2)
    between, not_null, row_count = validation["results"]
    batch = _computed(strict, bad_source, datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 4, tzinfo=UTC))
    over = [r for r in batch if r["clicks"] > 1]
    assert between["success"] is False and between["expectation"]["type"] == "expect_column_values_to_be_between"
    assert between["unexpected_count"] == len(over) > 0 and between["element_count"] == len(batch)
    assert between["unexpected_examples"] and all(e["clicks"] == 2 for e in between["unexpected_examples"])
    over_keys = {(r["user_id"], r["event_timestamp"].isoformat()) for r in over}
    assert {(e["user_id"], e["event_timestamp"]) for e in between["unexpected_examples"]} <= over_keys
    assert not_null["success"] is True and not_null["unexpected_count"] == 0
    assert row_count["success"] is False and row_count["observed_value"] == len(batch)
    assert details["quarantine"] == {"table": "signals.user_clicks__v1__quarantine", "rows": len(batch),
                                     "run_id": failed_run.id}

    # the quarantine table holds exactly that batch, tagged with the run
    quarantined = read_quarantine(project.store, strict, 1)
    assert quarantined.column(RUN_ID).to_pylist() == [failed_run.id] * len(batch)
    assert quarantined.column(QUARANTINED_AT).null_count == 0
    assert quarantined.column("created_timestamp").null_count == 0
    assert _canonical(quarantined.drop_columns([RUN_ID, QUARANTINED_AT, "created_timestamp"])) == batch
    assert quarantined.schema.field("dwell").type == pa.float32()

    # materialization serves the last good snapshot, never the refused batch
    result = project.materialize(strict)
    assert result.snapshot_id == good.snapshot_id and result.rows_read == len(before)
    keys = sorted({r["user_id"] for r in before})
    (got,) = project.online.read([(strict, 1)], keys)
    latest = {r["user_id"]: r for r in before}                # canonical order: the last is the latest
    assert got.table.column("clicks").to_pylist() == [latest[k]["clicks"] for k in keys]


def test_strict_failure_on_a_new_table_leaves_nothing_to_materialize(project: Project) -> None:
    project.events(seed=3)
    strict = clicks_signal(FAILING)
    with pytest.raises(ValidationFailedError):
        project.backfill(strict)
    assert project.snapshot() is None
    assert read_quarantine(project.store, strict, 1).num_rows == 400
    result = project.materialize(strict)
    assert (result.rows_written, result.snapshot_id) == (0, None)
    (got,) = project.online.read([(strict, 1)], list(range(1, 16)))
    assert not got.event_time_us.any()                        # nothing reached Redis
    # a second refused run appends its own batch under its own run id
    with pytest.raises(ValidationFailedError):
        project.backfill(strict, start="2026-01-01", end="2026-01-02")
    runs = [r.id for r in project.registry.runs("user_clicks") if r.status == "failed"]
    assert read_quarantine(project.store, strict, 1, run_id=max(runs)).num_rows > 0
    assert read_quarantine(project.store, strict, 1).num_rows > 400


def test_warn_commits_and_records(project: Project) -> None:
    source = project.events(seed=4)
    warn = clicks_signal(FAILING, policy="warn")
    result = project.backfill(warn)
    assert result.snapshot_id is not None and project.snapshot() == result.snapshot_id
    assert project.stored(warn) == _computed(warn, source, T0, datetime(2026, 1, 5, tzinfo=UTC))
    run = _run(project, result.run_id)
    assert run.status == "succeeded"
    assert run.details["validation"] == result.validation
    assert result.validation is not None
    assert (result.validation["verdict"], result.validation["failed"]) == ("warned", 2)
    assert result.validation["summary"].startswith("warned 2 of 3 expectations: expect_column_values_to_be_between")
    summary = project.store.table("user_clicks", 1).current_snapshot().summary
    assert summary[PROP_VALIDATION] == "warned" and summary[PROP_RUN_ID] == str(result.run_id)
    with pytest.raises(NotFoundError, match="no quarantine table"):
        read_quarantine(project.store, warn, 1)
    assert project.materialize(warn).entities == 15          # a snapshot committed under warn is served


def test_passing_batch_commits_and_records(project: Project) -> None:
    source = project.events(seed=5)
    passing = clicks_signal(PASSING)
    result = project.backfill(passing)
    assert project.stored(passing) == _computed(passing, source, T0, datetime(2026, 1, 5, tzinfo=UTC))
    assert result.validation is not None
    assert (result.validation["verdict"], result.validation["evaluated"], result.validation["failed"]) == (
        "passed", 4, 0)
    assert result.validation["summary"] == "passed 4 of 4 expectations"
    assert all(r["success"] for r in result.validation["results"])
    assert _run(project, result.run_id).details["validation"] == result.validation
    summary = project.store.table("user_clicks", 1).current_snapshot().summary
    assert summary[PROP_VALIDATION] == "passed"


def test_no_expectations_no_gate(project: Project) -> None:
    project.events(seed=6)
    result = project.backfill(clicks_signal([]))
    assert result.validation is None
    assert "validation" not in _run(project, result.run_id).details
    assert project.store.table("user_clicks", 1).current_snapshot().summary[PROP_VALIDATION] is None


def test_materialize_refuses_a_snapshot_marked_failed(project: Project) -> None:
    source = project.events(seed=7)
    sig = clicks_signal(PASSING)
    rows = sig(source).filter(pc.less(source["ts"], datetime(2026, 1, 2, tzinfo=UTC)))
    snapshot = project.store.replace_window(sig, 1, rows, T0, datetime(2026, 1, 2, tzinfo=UTC),
                                            properties={PROP_VALIDATION: "failed", PROP_RUN_ID: "41"})
    with pytest.raises(ValidationFailedError, match=rf"signal user_clicks v1: snapshot {snapshot} failed its "
                                                    r"data-quality gate \(run 41\); refusing to materialize it"):
        project.materialize(sig)
    last = project.registry.runs("user_clicks", kind="materialize")[0]
    assert last.status == "failed" and "refusing to materialize" in last.details["error"]
    (got,) = project.online.read([(sig, 1)], list(range(1, 16)))
    assert not got.event_time_us.any()
    # a good backfill on top is served again
    project.backfill(sig)
    assert project.materialize(sig).entities == 15


def test_unknown_expectation_fails_the_backfill_clearly(project: Project) -> None:
    project.events(seed=8)
    sig = clicks_signal([{"type": "expect_column_values_to_be_purple", "kwargs": {"column": "clicks"}}])
    with pytest.raises(DefinitionError, match="great-expectations cannot build expect_column_values_to_be_purple"):
        validate_batch(sig, 1, pa.table({"clicks": [1]}))
    with pytest.raises(BackfillError, match=r"failed at validate: .*cannot build expect_column_values_to_be_purple"):
        project.backfill(sig)
    assert project.snapshot() is None


def test_gate_result_round_trips_and_reads_well() -> None:
    sig = clicks_signal(FAILING, policy="warn")
    rows = pa.table({"user_id": pa.array([1, 2, 3], pa.int64()),
                     "event_timestamp": pa.array([T0] * 3, pa.timestamp("us", "UTC")),
                     "clicks": pa.array([0, 5, None], pa.int64()), "dwell": pa.array([1.0, None, 2.0], pa.float32())})
    result = validate_batch(sig, 1, rows)
    assert result.engine == "pandas" and result.verdict == "warned" and not result.success
    assert GateResult.from_dict(result.to_dict()) == result
    between = result.failed[0]
    assert (between.unexpected_count, between.element_count) == (1, 3)
    assert between.unexpected_examples == [{"clicks": 5, "user_id": 2, "event_timestamp": "2026-01-01T00:00:00+00:00"}]
    assert between.describe() == ("expect_column_values_to_be_between(column=clicks, max_value=1.0, min_value=0.0): "
                                  "1 of 3 unexpected (50%), e.g. clicks=5.0 user_id=2 "
                                  "event_timestamp=2026-01-01T00:00:00+00:00")
    assert quarantine_identifier(OfflineStore(None, namespace="ns"), "x", 3) == ("ns", "x__v3__quarantine")
