"""Issue 14, item 1 on the backfill path: a transform's output rows with times outside the bounds
(``quasar.signals.bounds``) fail the backfill with a BackfillError naming the column, the row, the value and the bound,
and the table keeps its snapshot. Before, only the backfill window limited event times, and a window may reach
into the future (or lie before 1970); created times were not checked at all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import quasar
from fixtures.bounds_project import D0, END, NOW, TODAY, make_project, write_source
from quasar.signals.errors import BackfillError


@pytest.fixture
def project(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_project(tmp_path, redis_url, monkeypatch)


def _refused(p: quasar.Platform, start: datetime, end: datetime, *parts: str) -> None:
    before = p.offline.current_snapshot_id("user_stats", 1)
    rows = p.offline.read(p.registry.signal("user_stats").signal, 1).num_rows if before is not None else 0
    with pytest.raises(BackfillError) as raised:
        p.backfill("user_stats", start, end)
    for part in parts:
        assert part in str(raised.value), (part, str(raised.value))
    assert p.offline.current_snapshot_id("user_stats", 1) == before          # the table keeps its snapshot
    if before is not None:
        assert p.offline.read(p.registry.signal("user_stats").signal, 1).num_rows == rows


def test_an_event_time_beyond_the_allowed_skew_fails_the_backfill(project: Path) -> None:
    good = [(1, NOW - timedelta(hours=1), 1, "FR"), (2, NOW - timedelta(hours=2), 2, "US")]
    write_source(project, good)
    with quasar.Platform.open(project) as p:
        p.register("signals.py")
        p.backfill("user_stats", D0, END)
        ahead = TODAY + timedelta(days=10, hours=3)                          # inside the window asked for
        write_source(project, [*good, (3, ahead, 3, "XX")])
        _refused(p, D0, TODAY + timedelta(days=30), "'event_timestamp'", "(user_id 3)", ahead.isoformat()[:19],
                 "max_future")
        # a time a little ahead (within the default day) is accepted
        write_source(project, [*good, (3, NOW + timedelta(hours=2), 3, "SOON")])
        assert p.backfill("user_stats", D0, TODAY + timedelta(days=30))[0].rows == 3


def test_a_created_time_far_in_the_future_fails_the_backfill(project: Path) -> None:
    t = NOW - timedelta(hours=1)
    write_source(project, [(1, t, 1, "FR"), (2, t, 2, "XX")],
                 created=[t, datetime(9999, 12, 31, tzinfo=UTC)])
    with quasar.Platform.open(project) as p:
        p.register("signals.py")
        _refused(p, D0, END, "'created_timestamp'", "(user_id 2)", "9999-12-31T00:00:00", "max_future")


def test_an_event_time_before_1970_fails_the_backfill_unless_the_project_allows_it(
        tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    old = datetime(1960, 1, 1, 12, tzinfo=UTC)
    start, end = datetime(1960, 1, 1, tzinfo=UTC), datetime(1960, 1, 2, tzinfo=UTC)
    strict = make_project(tmp_path / "strict", redis_url, monkeypatch)
    write_source(strict, [(1, old, 1, "OLD")])
    with quasar.Platform.open(strict) as p:
        p.register("signals.py")
        _refused(p, start, end, "'event_timestamp'", "row 0 (user_id 1)", "1960-01-01T12:00:00", "1970-01-01", "earliest")
    lenient = make_project(tmp_path / "lenient", redis_url, monkeypatch, toml='[time]\nearliest = "1900-01-01"\n')
    write_source(lenient, [(1, old, 1, "OLD")])
    with quasar.Platform.open(lenient) as p:
        p.register("signals.py")
        assert p.backfill("user_stats", start, end)[0].rows == 1
