"""Aggregations never report activity outside their windows, offline or online, and a re-backfill of a day
reaches every later step whose windows it overlaps (issue 13, bugs 1, 5 and 7).

Everything goes through a real project: the signal module as an author writes it, Parquet source files,
``Platform.backfill`` into Iceberg, ``training_dataset``, ``materialize`` into a throwaway Redis and
``online_features``.
"""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import quasar
from fixtures.project import init_project
from quasar.signals.errors import QuasarError

DAY = timedelta(days=1)
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

SIGNALS = textwrap.dedent("""
    from quasar.signals import Entity, Int64, Source, aggregate, count, mean, sum_

    user = Entity(name="user", join_key="user_id")
    events = Source.parquet(name="events", path="data/events", timestamp="ts")

    engagement = aggregate(
        name="engagement", entity=user, source=events, step="1d", ttl="{ttl}", online=True,
        aggregations=[
            sum_("clicked", "7d", name="clicks_7d", dtype=Int64()),
            mean("clicked", "7d", name="ctr_7d"),
            count("1d", name="impressions_1d"),
        ],
    )
""")


def _project(root: Path, ttl: str) -> Path:
    init_project(root, "honest")
    (root / "signals").mkdir(exist_ok=True)
    (root / "signals" / "engagement.py").write_text(SIGNALS.format(ttl=ttl))
    return root


def _write_events(root: Path, rows: list[tuple[int, datetime, int]], name: str = "part-0.parquet") -> None:
    folder = root / "data" / "events"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"user_id": pa.array([r[0] for r in rows], pa.int64()),
                             "ts": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
                             "clicked": pa.array([r[2] for r in rows], pa.int64())}), folder / name)


ENGINES = ["local", pytest.param("spark", marks=pytest.mark.spark)]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Each backfill test runs on both engines (Spark's session is the tests' shared local[2] one)."""
    if request.param == "spark":
        request.getfixturevalue("spark")
    return str(request.param)


def _spine(*rows: tuple[int, datetime]) -> pa.Table:
    return pa.table({"user_id": pa.array([r[0] for r in rows], pa.int64()),
                     "event_timestamp": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC"))})


def test_quiet_entity_gets_an_empty_window_not_a_stale_aggregate(tmp_path: Path, project_env: str,
                                                                  engine: str) -> None:
    """The issue's case: step 1d, ttl 2d, two clicks on 01-01 and nothing after; on 01-09 the 7-day window is
    empty, so clicks_7d is 0 and ctr_7d null (not 2 and 1.0 for a whole TTL)."""
    root = _project(tmp_path, "2d")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    _write_events(root, [(1, t0 + timedelta(hours=9), 1), (1, t0 + timedelta(hours=10), 1)])
    with quasar.Platform.open(root) as p:
        p.register("signals")
        p.backfill("engagement", "2026-01-01", "2026-01-15", engine=engine)
        ds = p.training_dataset(_spine((1, t0 + 4 * DAY), (1, datetime(2026, 1, 9, 12, tzinfo=UTC)),
                                       (1, datetime(2026, 1, 13, tzinfo=UTC))),
                                ["engagement:clicks_7d", "engagement:ctr_7d"])
    assert ds.column("clicks_7d").to_pylist() == [2, 0, None]
    assert ds.column("ctr_7d").to_pylist() == [1.0, None, None]


def test_online_serves_the_empty_window_too(tmp_path: Path, project_env: str,
                                            engine: str) -> None:
    """Nine days after an entity's only events, online answers count 0 (present) and a null mean, exactly as
    the offline row as of now; before, it answered the stale 7-day sum for a whole TTL."""
    root = _project(tmp_path, "3d")
    day0 = TODAY - 9 * DAY
    _write_events(root, [(1, day0 + timedelta(hours=9), 1), (1, day0 + timedelta(hours=10), 0),
                         (2, TODAY - DAY + timedelta(hours=3), 1)])
    with quasar.Platform.open(root) as p:
        p.register("signals")
        p.backfill("engagement", day0, TODAY + DAY, engine=engine)
        p.materialize(full=True)
        answer = p.online_features({"user_id": [1, 2]}, ["engagement:clicks_7d", "engagement:ctr_7d"])
        offline = p.training_dataset(_spine((1, datetime.now(UTC)), (2, datetime.now(UTC))),
                                     ["engagement:clicks_7d", "engagement:ctr_7d"])
    names = answer["metadata"]["feature_names"]
    clicks = answer["results"][names.index("clicks_7d")]
    ctr = answer["results"][names.index("ctr_7d")]
    assert clicks["values"] == [0, 1] and clicks["statuses"] == ["PRESENT", "PRESENT"]
    assert ctr["values"] == [None, 1.0] and ctr["statuses"] == ["NULL_VALUE", "PRESENT"]
    assert offline.column("clicks_7d").to_pylist() == clicks["values"]
    assert offline.column("ctr_7d").to_pylist() == ctr["values"]


def test_rebackfilling_a_day_reaches_the_following_windows(tmp_path: Path, project_env: str,
                                                          engine: str) -> None:
    """A late event on 01-03, then a backfill of 01-03 alone: the 7-day windows of 01-04 .. 01-10 hold it too,
    so they are recomputed (the table equals a backfill of the whole range from scratch)."""
    root = _project(tmp_path, "30d")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    _write_events(root, [(1, t0 + timedelta(hours=5), 1), (2, t0 + 6 * DAY, 1)])
    with quasar.Platform.open(root) as p:
        p.register("signals")
        p.backfill("engagement", "2026-01-01", "2026-01-20", engine=engine)
        _write_events(root, [(1, t0 + 2 * DAY + timedelta(hours=7), 1)], name="late.parquet")
        result = p.backfill("engagement", "2026-01-03", "2026-01-04", engine=engine)[0]
        sv = p.registry.signal("engagement")
        after = p.offline.read(sv.signal, sv.version).drop_columns(["created_timestamp"])
        p.backfill("engagement", "2026-01-01", "2026-01-20", engine=engine)
        fresh = p.offline.read(sv.signal, sv.version).drop_columns(["created_timestamp"])
    order = [("user_id", "ascending"), ("event_timestamp", "ascending")]
    assert after.sort_by(order).equals(fresh.sort_by(order))
    assert result.end == datetime(2026, 1, 12, tzinfo=UTC)          # 01-03 + 7d window + one step, whole days
    by_day = {(r["user_id"], r["event_timestamp"].day): r["clicks_7d"] for r in fresh.to_pylist()}
    assert by_day[(1, 10)] == 1 and by_day[(1, 11)] == 0            # the late click leaves the window on 01-11


def test_rebackfilling_does_not_reach_days_never_backfilled(tmp_path: Path, project_env: str,
                                                           ) -> None:
    """The look-ahead only recomputes days the table already holds: it never writes days nobody asked for."""
    root = _project(tmp_path, "30d")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    _write_events(root, [(1, t0 + timedelta(hours=5), 1)])
    with quasar.Platform.open(root) as p:
        p.register("signals")
        p.backfill("engagement", "2026-01-01", "2026-01-05")
        result = p.backfill("engagement", "2026-01-02", "2026-01-03")[0]
        sv = p.registry.signal("engagement")
        days = {r["event_timestamp"].day for r in p.offline.read(sv.signal, sv.version).to_pylist()}
    assert result.end == datetime(2026, 1, 5, tzinfo=UTC)
    assert days == {2, 3, 4}


LOSSY = textwrap.dedent("""
    from quasar.signals import Entity, Int64, Source, aggregate, sum_, max_

    user = Entity(name="user", join_key="user_id")
    events = Source.parquet(name="events", path="data/events", timestamp="ts")

    lossy = aggregate(name="lossy", entity=user, source=events, step="1d",
                      aggregations=[sum_("dwell", "1d", name="dwell_sum", dtype=Int64())])
""")


def test_a_lossy_integer_dtype_is_refused_not_rounded(tmp_path: Path, project_env: str,
                                                      engine: str) -> None:
    """A float sum declared Int64: DuckDB rounded 0.6 to 1 and Spark truncated it to 0; now the backfill
    refuses it, names the aggregation, and writes nothing."""
    root = _project(tmp_path, "30d")
    (root / "signals" / "engagement.py").write_text(LOSSY)
    folder = root / "data" / "events"
    folder.mkdir(parents=True)
    t0 = datetime(2026, 1, 1, 3, tzinfo=UTC)
    pq.write_table(pa.table({"user_id": [1, 2], "ts": pa.array([t0, t0], pa.timestamp("us", tz="UTC")),
                             "dwell": [0.6, 2.0]}), folder / "a.parquet")
    with quasar.Platform.open(root) as p:
        p.register("signals")
        with pytest.raises(QuasarError, match=r"dwell_sum.*int64.*0\.6"):
            p.backfill("lossy", "2026-01-01", "2026-01-03", engine=engine)
        sv = p.registry.signal("lossy")
        assert p.offline.current_snapshot_id(sv.signal.name, sv.version) is None
