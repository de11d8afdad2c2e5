"""Using what is registered: transforms re-imported by load_signal, the run log and the state table."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from fixtures.registry_db import example_module, write_module
from quasar.registry import Registry
from quasar.signals.errors import DefinitionError, NotFoundError, QuasarError


@pytest.fixture
def registry(registry_url: str) -> Iterator[Registry]:
    reg = Registry.open(registry_url)
    yield reg
    reg.close()


@pytest.fixture
def module(registry: Registry, tmp_path: Path) -> Path:
    path = write_module(tmp_path / "engagement.py", example_module())
    registry.register(path)
    return path


BATCH = pa.table({"user_id": pa.array([1, 2], pa.int64()),
                  "ts": pa.array([datetime(2026, 1, 1, tzinfo=UTC)] * 2, pa.timestamp("us", "UTC")),
                  "clicked": pa.array([1, 0], pa.int64()), "dwell_s": pa.array([2.5, 4.0])})


def test_load_signal_attaches_a_callable_transform(registry: Registry, module: Path) -> None:
    loaded = registry.load_signal("user_clicks")
    assert loaded.version == 1 and loaded.signal.transform is not None
    out = loaded.signal(BATCH)
    assert out.column_names == ["user_id", "event_timestamp", "clicks", "dwell"]
    assert out["dwell"].to_pylist() == [2.5, 4.0]
    assert loaded.signal.definition_fingerprint == registry.signal("user_clicks").signal.definition_fingerprint


def test_load_signal_of_an_aggregation_needs_no_code(registry: Registry, module: Path) -> None:
    module.unlink()
    loaded = registry.load_signal("user_activity")
    assert loaded.signal.kind == "aggregation" and loaded.signal.transform is None


def test_load_signal_refuses_code_that_changed_since_registration(registry: Registry, module: Path) -> None:
    write_module(module, example_module(factor="2.0"))
    expected = (f"signal user_clicks: the code in {module} changed since version 1 was registered; "
                "run quasar register")
    with pytest.raises(DefinitionError) as info:
        registry.load_signal("user_clicks")
    assert str(info.value) == expected

    registry.register(module)
    assert registry.load_signal("user_clicks").signal(BATCH)["dwell"].to_pylist() == [5.0, 8.0]
    with pytest.raises(DefinitionError, match="changed since version 1 was registered"):
        registry.load_signal("user_clicks", version=1)


def test_load_signal_names_a_module_that_is_gone(registry: Registry, module: Path) -> None:
    module.unlink()
    with pytest.raises(DefinitionError, match=f"registered from {module}, which no longer exists"):
        registry.load_signal("user_score")
    write_module(module, "x = 1\n")
    with pytest.raises(DefinitionError, match="no longer defines it"):
        registry.load_signal("user_score")


def test_the_run_log_records_start_and_finish(registry: Registry, module: Path) -> None:
    first = registry.start_run(signal="user_clicks", version=1, kind="backfill",
                               params={"start": "2026-01-01", "days": (1, 2)})
    running = registry.runs("user_clicks")[0]
    assert (running.id, running.status, running.finished_at, running.duration_s) == (first, "running", None, None)
    assert running.params == {"start": "2026-01-01", "days": [1, 2]} and running.started_at.tzinfo is not None

    registry.finish_run(first, status="succeeded", snapshot_id=123456789012345, rows=42, details={"files": 3})
    second = registry.start_run(signal="user_activity", version=1, kind="materialize")
    registry.finish_run(second, status="failed", details={"error": "redis down"})

    done = registry.runs()
    assert [r.id for r in done] == [second, first]
    ok = done[1]
    assert (ok.signal, ok.version, ok.kind, ok.status, ok.snapshot_id, ok.rows) == (
        "user_clicks", 1, "backfill", "succeeded", 123456789012345, 42)
    assert ok.details == {"files": 3} and ok.finished_at is not None and ok.finished_at >= ok.started_at
    assert ok.duration_s == pytest.approx((ok.finished_at - ok.started_at).total_seconds())
    assert [r.id for r in registry.runs("user_activity")] == [second]
    assert [r.id for r in registry.runs(kind="backfill")] == [first]
    assert [r.id for r in registry.runs(limit=1)] == [second]
    assert registry.runs("user_score") == []


def test_the_run_log_refuses_bad_input(registry: Registry, module: Path) -> None:
    with pytest.raises(NotFoundError, match="no signal named 'nope'"):
        registry.start_run(signal="nope", version=1, kind="backfill")
    with pytest.raises(NotFoundError, match="has no version 2"):
        registry.start_run(signal="user_clicks", version=2, kind="backfill")
    run = registry.start_run(signal="user_clicks", version=1, kind="backfill")
    with pytest.raises(ValueError, match="succeeded, failed"):
        registry.finish_run(run, status="done")
    with pytest.raises(NotFoundError, match="no run with id 999"):
        registry.finish_run(999, status="failed")
    registry.finish_run(run, status="failed")
    with pytest.raises(QuasarError, match=f"run {run} already finished"):
        registry.finish_run(run, status="succeeded")


def test_state_get_and_set(registry: Registry) -> None:
    assert registry.get_state("materialize:user_clicks@1") is None
    registry.set_state("materialize:user_clicks@1", {"watermark": "2026-01-02T00:00:00+00:00", "snapshot": 7})
    assert registry.get_state("materialize:user_clicks@1") == {"watermark": "2026-01-02T00:00:00+00:00",
                                                               "snapshot": 7}
    registry.set_state("materialize:user_clicks@1", {"watermark": "2026-01-03T00:00:00+00:00", "nested": {"a": [1]}})
    assert registry.get_state("materialize:user_clicks@1") == {"watermark": "2026-01-03T00:00:00+00:00",
                                                               "nested": {"a": [1]}}
    assert registry.get_state("other") is None
