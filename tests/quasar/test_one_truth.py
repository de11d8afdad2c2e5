"""One truth, proved on random histories: the offline value, the online value and the tensor value of every
entity are identical after every change, and the two engines write identical tables (issue 13).

Hypothesis draws an event stream (equal event times, null created times, quiet users) and a sequence of
changes to it: corrections, deletions, late events re-backfilled one day at a time, and re-registrations
with another TTL. After each change the project runs what an operator runs (``backfill`` of the changed days,
an incremental ``materialize``) and the test checks, for every user (and one that never existed):

* ``training_dataset`` as of now  ==  ``online_features``  (values, and null exactly where online has none);
* the ``FeatureBatch`` built from the offline rows  ==  the one built from the online store's read;
* with Spark: the local engine's Iceberg tables  ==  the Spark engine's, row for row.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import quasar
from fixtures.project import init_project

torch = pytest.importorskip("torch")

from quasar.signals.ufr.tensors import InputSpec, build_feature_batch  # noqa: E402

MODULE = '''
import pyarrow as pa
from quasar.signals import Entity, Float64, Int64, Source, aggregate, count, last, mean, signal, sum_

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")

activity = aggregate(
    name="activity", entity=user, source=events, step="1d", ttl="{ttl}", online=True,
    aggregations=[count("1d", name="n_1d"), sum_("clicked", "3d", name="clicks_3d", dtype=Int64()),
                  mean("score", "3d", name="score_3d"), last("score", "2d", name="score_last")],
)


@signal(entity=user, source=events, ttl="{ttl}", online=True, features={{"score": Float64(), "clicked": Int64()}})
def latest_event(batch: pa.Table) -> pa.Table:
    """Every event as a row: equal event times are decided by the created time (a null one is the oldest)."""
    return pa.table({{"user_id": batch["user_id"], "event_timestamp": batch["ts"],
                      "created_timestamp": batch["created"], "score": batch["score"],
                      "clicked": batch["clicked"]}})
'''
SIGNALS = ("activity", "latest_event")
USERS = 4
DAYS = 8
DAY = timedelta(days=1)
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
BASE = TODAY - DAYS * DAY


@dataclass(frozen=True)
class Event:
    user: int
    day: int                  # days after BASE
    hour: int
    clicked: int
    score: float
    created: int | None       # minutes after BASE, or None

    @property
    def ts(self) -> datetime:
        return BASE + self.day * DAY + timedelta(hours=self.hour)


events_st = st.builds(Event, user=st.integers(1, USERS), day=st.integers(0, DAYS - 1),
                      hour=st.sampled_from([0, 9, 23]), clicked=st.integers(0, 3),
                      score=st.integers(-40, 40).map(lambda i: i / 4),
                      created=st.one_of(st.none(), st.integers(0, 50)))
changes_st = st.lists(st.one_of(
    st.tuples(st.just("correct"), st.integers(1, USERS), st.integers(0, DAYS - 1), st.integers(-8, 8)),
    st.tuples(st.just("delete"), st.integers(1, USERS), st.integers(0, DAYS - 1)),
    st.tuples(st.just("late"), events_st),
    st.tuples(st.just("ttl"), st.sampled_from(["2d", "4d", "9d"])),
), max_size=4)


def _unique(events: list[Event]) -> list[Event]:
    """At most one event per (user, time, created): a full tie has no winner to agree on."""
    seen: dict[tuple[int, int, int, int | None], Event] = {}
    for e in events:
        seen[(e.user, e.day, e.hour, e.created)] = e
    return list(seen.values())


class Project:
    """One quasar project in a temp folder, its source rewritten from a list of events."""

    def __init__(self, root: Path, engine: str) -> None:
        self.root, self.engine, self.ttl = root, engine, "4d"
        init_project(root, f"truth{uuid.uuid4().hex[:8]}")     # its own key prefix in the shared Redis
        self.write_module()
        self.platform = quasar.Platform.open(root)
        self.platform.register("signals.py")

    def write_module(self) -> None:
        (self.root / "signals.py").write_text(MODULE.format(ttl=self.ttl))

    def write_events(self, events: list[Event]) -> None:
        folder = self.root / "data" / "events"
        folder.mkdir(parents=True, exist_ok=True)
        created = [None if e.created is None else BASE + timedelta(minutes=e.created) for e in events]
        pq.write_table(pa.table({
            "user_id": pa.array([e.user for e in events], pa.int64()),
            "ts": pa.array([e.ts for e in events], pa.timestamp("us", tz="UTC")),
            "created": pa.array(created, pa.timestamp("us", tz="UTC")),
            "clicked": pa.array([e.clicked for e in events], pa.int64()),
            "score": pa.array([e.score for e in events], pa.float64()),
        }), folder / "events.parquet")

    def backfill(self, start: datetime, end: datetime) -> None:
        for name in SIGNALS:
            self.platform.backfill(name, start, end, engine=self.engine)

    def reregister(self, ttl: str) -> None:
        self.ttl = ttl
        self.write_module()
        self.platform.register("signals.py")

    def table(self, name: str) -> pa.Table:
        sv = self.platform.registry.signal(name)
        rows = self.platform.offline.read(sv.signal, sv.version).drop_columns(["created_timestamp"])
        return rows.sort_by([(c, "ascending") for c in rows.column_names])

    def close(self) -> None:
        self.platform.close()


def _away_from_the_hour() -> None:
    """Event times are whole hours: keep 'now' clear of them, so the offline 'as of now' and the online read a
    few milliseconds later see the same side of every TTL bound."""
    now = datetime.now(UTC)
    if (now.minute == 59 and now.second >= 57) or (now.minute == 0 and now.second < 2):
        time.sleep(5)


def check_offline_equals_online_equals_tensors(project: Project) -> None:
    p = project.platform
    users = list(range(1, USERS + 2))                 # the last one never had an event
    _away_from_the_hour()
    now = datetime.now(UTC)
    spine = pa.table({"user_id": pa.array(users, pa.int64()),
                      "event_timestamp": pa.array([now] * len(users), pa.timestamp("us", tz="UTC"))})
    offline = p.training_dataset(spine, list(SIGNALS))
    online = p.online_features({"user_id": users}, list(SIGNALS))
    names = online["metadata"]["feature_names"]
    assert names[0] == "user_id" and names[1:] == offline.column_names[2:]
    for name, result in zip(names[1:], online["results"][1:], strict=True):
        assert result["values"] == offline.column(name).to_pylist(), name
        for value, status in zip(result["values"], result["statuses"], strict=True):
            assert (status == "PRESENT") == (value is not None), (name, value, status)
    for name in SIGNALS:
        sv = p.registry.signal(name)
        spec = InputSpec.from_schema(sv.signal.schema)
        (read,) = p.online_store.read([(sv.signal, sv.version)], users)
        want = build_feature_batch(offline.select(sv.signal.schema.names), spec)
        got = build_feature_batch(read.table, spec)
        assert want.dense_names == got.dense_names
        assert torch.equal(want.dense, got.dense) and torch.equal(want.dense_mask, got.dense_mask), name
        for kind in ("scalars", "masks"):
            a, b = getattr(want, kind), getattr(got, kind)
            assert a.keys() == b.keys(), (name, kind)
            for key in a:
                assert torch.equal(a[key], b[key]), (name, kind, key)


def apply_change(events: list[Event], change: tuple[Any, ...]) -> tuple[list[Event], int | None]:
    """The events after a change, and the day to re-backfill (None: nothing to backfill)."""
    kind = change[0]
    if kind == "correct":
        _, user, day, delta = change
        return [replace(e, score=e.score + delta, clicked=max(0, e.clicked + delta))
                if (e.user, e.day) == (user, day) else e for e in events], day
    if kind == "delete":
        _, user, day = change
        return [e for e in events if (e.user, e.day) != (user, day)], day
    if kind == "late":
        return _unique([*events, change[1]]), change[1].day
    return events, None


def run_history(projects: list[Project], events: list[Event], changes: list[tuple[Any, ...]]) -> None:
    for project in projects:
        project.write_events(events)
        project.backfill(BASE, TODAY + DAY)
        project.platform.materialize()
    check_all(projects)
    for change in changes:
        events, day = apply_change(events, change)
        for project in projects:
            if change[0] == "ttl":
                project.reregister(change[1])
            project.write_events(events)
            if day is not None:
                project.backfill(BASE + day * DAY, BASE + (day + 1) * DAY)
            project.platform.materialize()
        check_all(projects)


def check_all(projects: list[Project]) -> None:
    for project in projects:
        check_offline_equals_online_equals_tensors(project)
    if len(projects) == 2:
        for name in SIGNALS:
            assert projects[0].table(name).equals(projects[1].table(name)), name


def _history(events: list[Event], changes: list[tuple[Any, ...]], engines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        projects = [Project(Path(tmp) / engine, engine) for engine in engines]
        try:
            run_history(projects, _unique(events), changes)
        except AssertionError as exc:
            exc.add_note(f"history: events={_unique(events)!r} changes={changes!r}")
            raise
        finally:
            for project in projects:
                project.close()


# Each example runs whole backfills and materializations: no shrinking (minutes), the failure names its history.
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
SLOW = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(max_examples=30, deadline=None, phases=NO_SHRINK, suppress_health_check=SLOW)
@given(events=st.lists(events_st, min_size=1, max_size=24), changes=changes_st)
def test_offline_online_and_tensors_agree_through_every_change(project_env: str,
                                                               events: list[Event],
                                                               changes: list[tuple[Any, ...]]) -> None:
    _history(events, changes, ["local"])


@pytest.mark.spark
@settings(max_examples=4, deadline=None, phases=NO_SHRINK, suppress_health_check=SLOW)
@given(events=st.lists(events_st, min_size=4, max_size=24), changes=changes_st.filter(lambda c: len(c) >= 2))
def test_local_and_spark_write_the_same_tables_through_every_change(project_env: str, spark: Any,
                                                                    events: list[Event],
                                                                    changes: list[tuple[Any, ...]]) -> None:
    _history(events, changes, ["local", "spark"])
