"""Issue 13: materialization mirrors the offline truth through corrections, deletions, TTL changes and pushes.

Every test runs on a real project (``quasar init``), real Iceberg tables written by ``Platform.backfill`` from
Parquet sources, and a real redis-server. "Mirrors" means: for every entity, the online read now equals the
point-in-time row a training spine stamped now gets (values and event time), and an entity with no offline
row has no online field at all.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import redis

import quasar
from fixtures.bounds_project import Row, write_source
from fixtures.project import init_project
from quasar.online.materialize import materialize, state_key
from quasar.signals.ufr.codec import record_created_time_us, record_event_time_us

MODULE = '''
import pyarrow as pa
from quasar.signals import Entity, Int64, Source, String, signal

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")


@signal(entity=user, source=events, online=True, ttl="{ttl}", features={{"clicks": Int64(), "country": String()}})
def user_stats(batch: pa.Table) -> pa.Table:
    """Source rows as they are."""
    return batch.rename_columns(["event_timestamp" if c == "ts" else c for c in batch.column_names])
'''
NOW = datetime.now(UTC).replace(microsecond=0)
TODAY = NOW.replace(hour=0, minute=0, second=0)
D0 = TODAY - timedelta(days=3)                     # the backfilled window: [D0, TODAY + 1 day)
END = TODAY + timedelta(days=1)
FIELD = "user_stats@1"


@pytest.fixture
def project(tmp_path: Path, project_env: str) -> Path:
    init_project(tmp_path, "fix")
    (tmp_path / "signals.py").write_text(MODULE.format(ttl="30d"))
    (tmp_path / "data" / "events").mkdir(parents=True)
    return tmp_path


def at(day: int, hour: int) -> datetime:
    return D0 + timedelta(days=day, hours=hour)


def offline_now(p: quasar.Platform, keys: list[int]) -> list[dict[str, Any]]:
    spine = pa.table({"user_id": pa.array(keys, pa.int64()),
                      "event_timestamp": pa.array([NOW] * len(keys), pa.timestamp("us", "UTC"))})
    table = p.training_dataset(spine, ["user_stats"])
    return [{"clicks": r["clicks"], "country": r["country"]} for r in table.to_pylist()]


def online_now(p: quasar.Platform, keys: list[int]) -> list[dict[str, Any]]:
    sv = p.registry.signal("user_stats")
    (got,) = p.online_store.read([(sv.signal, sv.version)], keys, now_us=int(NOW.timestamp() * 1_000_000))
    return [{"clicks": r["clicks"], "country": r["country"]} for r in got.table.to_pylist()]


def fields(redis_url: str) -> dict[int, bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        out = {}
        for key in client.scan_iter(match="fix:user:*"):
            record = client.hget(key, FIELD)
            if record is not None:
                out[int(key.decode().rsplit(":", 1)[1])] = record
        return out
    finally:
        client.close()


def assert_mirrors(p: quasar.Platform, redis_url: str, keys: list[int], absent: tuple[int, ...] = ()) -> None:
    """Online now equals offline now for ``keys``; the ``absent`` entities (no offline row) have no field."""
    assert online_now(p, keys) == offline_now(p, keys)
    stored = fields(redis_url)
    assert not [k for k in absent if k in stored], absent


FIRST: list[Row] = [
    (1, at(0, 1), 10, "FR"), (1, at(2, 5), 11, "FR"),          # 1: its latest value will change
    (2, at(1, 3), 20, "US"),                                   # 2: will be deleted
    (3, at(0, 2), 30, "JP"), (3, at(2, 8), 31, "JP"),          # 3: its latest row will move earlier
    (4, at(1, 1), 40, "FR"),                                   # 4: unchanged
    (5, at(0, 4), 50, "US"),                                   # 5: gets a newer row
]
SECOND: list[Row] = [
    (1, at(0, 1), 10, "FR"), (1, at(2, 5), 99, "DE"),
    (3, at(0, 2), 30, "JP"),
    (4, at(1, 1), 40, "FR"),
    (5, at(0, 4), 50, "US"), (5, at(2, 1), 51, "US"),
]
KEYS = [1, 2, 3, 4, 5, 6]


def test_a_re_backfill_reaches_redis_changed_deleted_and_moved_earlier(project: Path, redis_url: str) -> None:
    """Bug 2: corrections used to stay out of Redis (newer-wins kept the old records forever)."""
    write_source(project, FIRST)
    with quasar.Platform.open(project) as p:
        p.register("signals.py")
        p.backfill("user_stats", D0, END)
        p.materialize()
        assert_mirrors(p, redis_url, KEYS, absent=(6,))
        write_source(project, SECOND)
        p.backfill("user_stats", D0, END)
        (result,) = p.materialize()
        assert result.incremental
        assert_mirrors(p, redis_url, KEYS, absent=(2, 6))
        stored = fields(redis_url)
        assert 2 not in stored                                             # deleted offline: gone online
        assert record_event_time_us(stored[3]) == int(at(0, 2).timestamp() * 1_000_000)     # moved earlier
        assert online_now(p, [1])[0] == {"clicks": 99, "country": "DE"}
        again = p.materialize()[0]
        assert (again.rows_read, again.rows_written) == (0, 0)              # nothing new: a no-op


def test_full_rebuilds_exactly_and_drops_stray_entities(project: Path, redis_url: str) -> None:
    write_source(project, FIRST)
    with quasar.Platform.open(project) as p:
        p.register("signals.py")
        p.backfill("user_stats", D0, END)
        p.materialize()
        sig = p.registry.signal("user_stats").signal
        # Redis changed behind the store's back: a stray entity, an older record, a newer wrong one
        p.online_store.write(sig, 1, pa.table({
            "user_id": pa.array([77, 1, 3], pa.int64()),
            "event_timestamp": pa.array([NOW - timedelta(hours=1), NOW - timedelta(minutes=1),
                                         datetime(9999, 12, 31, tzinfo=UTC)], pa.timestamp("us", "UTC")),
            "clicks": pa.array([7, 1000, 3], pa.int64()), "country": pa.array(["XX", "XX", "XX"])}))
        client = redis.Redis.from_url(redis_url)                           # user 3: poisoned by year 9999
        client.hset("fix:user:4", FIELD, b"garbage")                        # a damaged record
        client.hset("fix:user:5", "other@1", b"kept")                       # another signal's field stays
        client.close()
        (result,) = p.materialize(full=True)
        assert not result.incremental
        assert_mirrors(p, redis_url, [*KEYS, 77], absent=(6, 77))
        assert redis.Redis.from_url(redis_url).hget("fix:user:5", "other@1") == b"kept"
        # then a correction, incrementally, still exact
        write_source(project, SECOND)
        p.backfill("user_stats", D0, END)
        p.materialize()
        assert_mirrors(p, redis_url, [*KEYS, 77], absent=(2, 6, 77))


def test_a_pushed_newer_value_survives_a_correction_but_not_full(project: Path, redis_url: str) -> None:
    """The documented rule (quasar.online.materialize): a value pushed online only, newer than every offline row that a
    correction removed, stays; an older pushed value is replaced; ``--full`` makes online exactly offline."""
    write_source(project, FIRST)
    with quasar.Platform.open(project) as p:
        p.register("signals.py")
        p.backfill("user_stats", D0, END)
        p.materialize()
        newer = NOW - timedelta(minutes=10)
        p.push("user_stats", [{"user_id": 1, "event_timestamp": newer, "clicks": 500, "country": "PU"},
                              {"user_id": 8, "event_timestamp": newer, "clicks": 800, "country": "PU"}])
        write_source(project, SECOND)                                       # corrects users 1, 2, 3
        p.backfill("user_stats", D0, END)
        p.materialize()
        assert online_now(p, [1, 8]) == [{"clicks": 500, "country": "PU"}, {"clicks": 800, "country": "PU"}]
        assert_mirrors(p, redis_url, [2, 3, 4, 5], absent=(2,))
        p.materialize(full=True)
        assert_mirrors(p, redis_url, [1, 2, 3, 4, 5, 8], absent=(2, 8))
        assert online_now(p, [1])[0] == {"clicks": 99, "country": "DE"}


def test_a_row_stamped_in_the_future_is_served_once_it_is_due(project: Path, redis_url: str) -> None:
    later = NOW + timedelta(hours=2)
    write_source(project, [(1, at(1, 0), 1, "FR"), (1, later, 2, "FR"), (2, later, 3, "US")])
    with quasar.Platform.open(project) as p:
        p.register("signals.py")
        p.backfill("user_stats", D0, END + timedelta(days=1))
        p.materialize()
        assert_mirrors(p, redis_url, [1, 2], absent=(2,))
        assert online_now(p, [1, 2]) == [{"clicks": 1, "country": "FR"}, {"clicks": None, "country": None}]
        sv = p.registry.signal("user_stats")
        step = materialize(signal=sv.signal, version=sv.version, offline=p.offline, online=p.online_store,
                           state=p.registry, now=later + timedelta(seconds=1))
        assert step.rows_written == 2
        stored = fields(redis_url)
        assert {k: record_event_time_us(r) for k, r in stored.items()} == {
            1: int(later.timestamp() * 1_000_000), 2: int(later.timestamp() * 1_000_000)}


def test_a_null_created_timestamp_is_the_oldest_through_a_backfill(project: Path, redis_url: str) -> None:
    """Bug 8: the output check filled a null created_timestamp with the run time, making it the newest."""
    t = at(1, 6)
    write_source(project, [(1, t, 1, "NULL"), (1, t, 2, "SET"), (2, t, 3, "SET"), (2, t, 4, "NULL")],
                 created=[None, datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC), None])
    with quasar.Platform.open(project) as p:
        p.register("signals.py")
        p.backfill("user_stats", D0, END)
        sv = p.registry.signal("user_stats")
        stored = p.offline.read(sv.signal, sv.version).sort_by([("user_id", "ascending"), ("clicks", "ascending")])
        assert stored.column("created_timestamp").to_pylist() == [None, datetime(2020, 1, 1, tzinfo=UTC),
                                                                  datetime(2020, 1, 1, tzinfo=UTC), None]
        assert [r["country"] for r in offline_now(p, [1, 2])] == ["SET", "SET"]
        p.materialize()
        assert [r["country"] for r in online_now(p, [1, 2])] == ["SET", "SET"]
        assert {record_created_time_us(r) for r in fields(redis_url).values()} == {
            int(datetime(2020, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)}


def test_a_source_without_created_timestamp_gets_the_run_time(project: Path) -> None:
    write_source(project, [(1, at(1, 6), 1, "A")])
    before = datetime.now(UTC)
    with quasar.Platform.open(project) as p:
        p.register("signals.py")
        p.backfill("user_stats", D0, END)
        sv = p.registry.signal("user_stats")
        (made,) = p.offline.read(sv.signal, sv.version).column("created_timestamp").to_pylist()
        assert made is not None and made >= before - timedelta(seconds=1)


def _pexpiretime(redis_url: str, key: int) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.pexpiretime(f"fix:user:{key}"))
    finally:
        client.close()


def test_a_ttl_change_re_applies_expiry_on_the_next_materialize(project: Path, redis_url: str) -> None:
    """Bug 4: a TTL change updates the signal in place and used to leave every key on the old schedule."""
    event = NOW - timedelta(minutes=30)
    event_ms = int(event.timestamp() * 1000)
    write_source(project, [(1, event, 1, "A"), (2, event, 2, "B"), (3, NOW - timedelta(days=2), 3, "C")])
    (project / "signals.py").write_text(MODULE.format(ttl="1h"))
    with quasar.Platform.open(project) as p:
        p.register("signals.py")
        p.backfill("user_stats", D0, END)
        p.materialize()
        assert _pexpiretime(redis_url, 1) == event_ms + 2 * 3_600_000         # max(event + 2 ttl, now + ttl)
        assert 3 in fields(redis_url)                                           # written, though stale
        assert_mirrors(p, redis_url, [1, 2])

        # lengthen: same version, and Redis follows; a key the short schedule had expired comes back
        (project / "signals.py").write_text(MODULE.format(ttl="3d"))
        p.register("signals.py")
        assert p.registry.signal("user_stats").version == 1
        redis.Redis.from_url(redis_url).delete("fix:user:2")
        assert online_now(p, [2]) != offline_now(p, [2])
        (result,) = p.materialize()
        assert result.rows_read > 0
        assert _pexpiretime(redis_url, 1) == event_ms + 2 * 3 * 86_400_000
        assert _pexpiretime(redis_url, 3) >= int(NOW.timestamp() * 1000) + 3 * 86_400_000 - 60_000
        assert_mirrors(p, redis_url, [1, 2, 3])
        assert p.registry.get_state(state_key("user_stats", 1))["ttl_ms"] == 3 * 86_400_000

        # shorten: the expiry moves earlier (each key holds only this signal)
        (project / "signals.py").write_text(MODULE.format(ttl="1h"))
        p.register("signals.py")
        p.materialize()
        assert _pexpiretime(redis_url, 1) == event_ms + 2 * 3_600_000
        assert_mirrors(p, redis_url, [1, 2, 3])


def test_records_of_the_older_format_are_rewritten_by_a_rebuild(project: Path, redis_url: str) -> None:
    """Upgrading from format 1 (no created time in the header): the first run rebuilds, every record readable."""
    write_source(project, FIRST)
    with quasar.Platform.open(project) as p:
        p.register("signals.py")
        p.backfill("user_stats", D0, END)
        p.materialize()
        key = state_key("user_stats", 1)
        old = p.registry.get_state(key)
        p.registry.set_state(key, {"snapshot_id": old["snapshot_id"], "files": old["files"]})   # an old state
        client = redis.Redis.from_url(redis_url)
        for k, record in fields(redis_url).items():                          # format 1: 18-byte header
            client.hset(f"fix:user:{k}", FIELD, record[:1] + b"\x01" + record[2:18] + record[26:])
        client.close()
        (result,) = p.materialize()
        assert result.rebuilt and result.rows_written == 5
        assert_mirrors(p, redis_url, KEYS, absent=(6,))
        assert p.registry.get_state(key)["format"] == 2
