"""Issue 14, item 1 on the materialize path: rows another writer put in the offline table with an event time
outside the bounds (``quasar.signals.bounds``) are skipped, counted in the result and the run log with the first one
named (file, row, value, bound), and the CLI says so; every other row is materialized, so serving stays current.

Why skip rather than refuse: materialization reads what others wrote; refusing would leave every entity of the
signal stale until somebody deletes the row, while the skipped row is never served either way (a row after now
is not served before its time, and one before ``earliest`` never). Push and backfill refuse, because there the
caller is at hand to fix the input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import redis
from click.testing import CliRunner

import quasar
from fixtures.bounds_project import D0, END, FIELD, NOW, make_project, online_now, write_source
from quasar.cli import main
from quasar.signals.ufr.types import TIMESTAMP_ARROW


@pytest.fixture
def project(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_project(tmp_path, redis_url, monkeypatch)


def _append(p: quasar.Platform, rows: list[tuple[int, datetime, int, str]]) -> None:
    sv = p.registry.signal("user_stats")
    p.offline.append(sv.signal, sv.version, pa.table({
        "user_id": pa.array([r[0] for r in rows], pa.int64()),
        "event_timestamp": pa.array([r[1] for r in rows], TIMESTAMP_ARROW),
        "created_timestamp": pa.array([NOW] * len(rows), TIMESTAMP_ARROW),
        "clicks": pa.array([r[2] for r in rows], pa.int64()),
        "country": pa.array([r[3] for r in rows], pa.string())}))


def test_rows_out_of_bounds_written_by_another_tool_are_skipped_and_counted(project: Path, redis_url: str) -> None:
    write_source(project, [(1, NOW - timedelta(hours=2), 1, "FR"), (2, NOW - timedelta(hours=2), 2, "US")])
    with quasar.Platform.open(project) as p:
        p.register("signals.py")
        p.backfill("user_stats", D0, END)
        assert p.materialize()[0].rows_out_of_bounds == 0
        _append(p, [(1, datetime(9999, 12, 31, tzinfo=UTC), 666, "POISON"),     # would win for ever
                    (5, datetime(1960, 1, 1, tzinfo=UTC), 5, "ANCIENT"),         # would be served
                    (2, NOW - timedelta(hours=1), 22, "UPDATED")])               # a real update
        (result,) = p.materialize()
        assert result.rows_out_of_bounds == 2
        assert result.out_of_bounds_example is not None
        example = result.out_of_bounds_example
        for part in ("data file ", ".parquet", "'event_timestamp' row 0: "):
            assert part in example, (part, example)
        assert ("9999-12-31T00:00:00Z is after" in example and "max_future" in example) or \
            ("1960-01-01T00:00:00Z is before the earliest accepted time 1970-01-01T00:00:00Z" in example), example
        assert online_now(p, [1, 2, 5]) == [{"clicks": 1, "country": "FR"}, {"clicks": 22, "country": "UPDATED"},
                                            {"clicks": None, "country": None}]
        assert redis.Redis.from_url(redis_url).hget("tb:user:5", FIELD) is None      # not even stored
        (run,) = [r for r in p.registry.runs("user_stats", kind="materialize") if r.id == result.run_id]
        assert run.details["rows_out_of_bounds"] == 2
        assert run.details["out_of_bounds_example"] == result.out_of_bounds_example
        (full,) = p.materialize(full=True)                 # a rebuild skips them the same way
        assert full.rows_out_of_bounds == 2
        assert redis.Redis.from_url(redis_url).hget("tb:user:5", FIELD) is None
        assert online_now(p, [1, 2, 5]) == [{"clicks": 1, "country": "FR"}, {"clicks": 22, "country": "UPDATED"},
                                            {"clicks": None, "country": None}]
    out = CliRunner().invoke(main, ["--project", str(project), "materialize", "--full"])
    assert out.exit_code == 0, out.output
    assert "2 row(s) outside the time bounds skipped" in out.output, out.output
