"""Issue 14, item 1: a pushed event time far in the future poisoned its key for ever (newer-wins then drops every
real update). Every push path (HTTP over a socket, the app in process, ``Platform.push``) now refuses times
outside the bounds (``quasar.signals.bounds``: not before 1970, not more than ``[time] max_future`` after now), with an
error naming the column, the row, the value and the bound, and writes nothing of the request.

Issue 14, push created time: a pushed row without ``created_timestamp`` gets its arrival time, so it wins a tie
on the event time against an offline row written earlier (and a later push of one event time wins)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
import redis

import quasar
from fixtures.bounds_project import D0, END, FIELD, NOW, make_project, online_now, write_source
from fixtures.feature_service import LiveServer, column, iso, live_app, serve
from quasar.signals.errors import SchemaError
from quasar.signals.times import micros
from quasar.signals.ufr.codec import record_created_time_us
from quasar.signals.ufr.types import TIMESTAMP_ARROW


def engagement(user: int, when: str, clicks: int, **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "event_timestamp": when, "ctr_7d": 0.5, "clicks": clicks, "dwell": 1.0, **extra}


def reads(client: httpx.Client, user: int) -> dict[str, Any]:
    body = client.post("/v1/features", json={"entities": {"user_id": [user]},
                                             "features": ["user_engagement:clicks"]}).json()
    return column(body, "clicks")


def test_a_year_9999_push_is_refused_over_a_socket_and_a_later_real_update_is_written(redis_url: str) -> None:
    real = datetime.now(UTC) - timedelta(minutes=5)
    with LiveServer(live_app(redis_url)) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        poison = client.post("/v1/push", json={"signal": "user_engagement", "rows": [
            engagement(70, iso(real - timedelta(hours=1)), 1), engagement(70, "9999-12-31T00:00:00Z", 666)]})
        after_poison = reads(client, 70)
        update = client.post("/v1/push", json={"signal": "user_engagement", "rows": [engagement(70, iso(real), 3)]})
        after_update = reads(client, 70)
    assert poison.status_code == 422, poison.text
    error = poison.json()["error"]
    assert error["type"] == "SchemaError"
    message = error["message"]
    for part in ("user_engagement", "'event_timestamp'", "row 1", "9999-12-31T00:00:00", "max_future"):
        assert part in message, (part, message)
    assert after_poison["statuses"] == ["NOT_FOUND"]                     # nothing of the refused request written
    assert update.status_code == 200 and update.json()["written"] == 1
    assert after_update["values"] == [3]
    assert after_update["event_timestamps"] == [iso(real)]


@pytest.mark.parametrize(("row", "named"), [
    (engagement(1, "1969-12-31T23:59:59Z", 1), ("'event_timestamp'", "row 0", "1969-12-31T23:59:59", "1970-01-01")),
    (engagement(1, "1900-01-01T00:00:00Z", 1), ("'event_timestamp'", "row 0", "1900-01-01", "earliest")),
    (engagement(1, iso(NOW), 1, created_timestamp="9999-12-31T00:00:00Z"),
     ("'created_timestamp'", "row 0", "9999-12-31T00:00:00", "max_future")),
])
def test_times_out_of_bounds_answer_422_naming_column_row_value_and_bound(redis_url: str, row: dict[str, Any],
                                                                          named: tuple[str, ...]) -> None:
    async def main() -> httpx.Response:
        async with serve(redis_url) as (_, client):
            return await client.post("/v1/push", json={"signal": "user_engagement", "rows": [row]})

    answer = asyncio.run(main())
    assert answer.status_code == 422, answer.text
    for part in named:
        assert part in answer.json()["error"]["message"], (part, answer.json())


def test_a_time_a_little_ahead_of_the_clock_is_accepted(redis_url: str) -> None:
    ahead = datetime.now(UTC) + timedelta(hours=1)           # within the default max_future of one day

    async def main() -> httpx.Response:
        async with serve(redis_url) as (_, client):
            return await client.post("/v1/push", json={"signal": "user_engagement", "rows": [
                engagement(2, iso(ahead), 1, created_timestamp=iso(ahead))]})

    answer = asyncio.run(main())
    assert answer.status_code == 200 and answer.json()["written"] == 1, answer.text


@pytest.fixture
def project(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_project(tmp_path, redis_url, monkeypatch)


def test_platform_push_refuses_a_far_future_time_and_writes_nothing(project: Path, redis_url: str) -> None:
    with quasar.Platform.open(project) as p:
        p.register("signals.py")
        good = {"user_id": 1, "event_timestamp": NOW - timedelta(hours=1), "clicks": 1, "country": "FR"}
        bad = {"user_id": 2, "event_timestamp": datetime(9999, 12, 31, tzinfo=UTC), "clicks": 2, "country": "XX"}
        for to in ("online", "online_and_offline"):
            with pytest.raises(SchemaError, match=r"'event_timestamp' row 1: 9999-12-31T00:00:00.*max_future"):
                p.push("user_stats", [good, bad], to=to)
        assert redis.Redis.from_url(redis_url).keys("tb:user:*") == []
        assert p.offline.current_snapshot_id("user_stats", 1) is None     # nothing appended offline either
        table = pa.table({"user_id": [3], "event_timestamp": pa.array([datetime(1960, 1, 1, tzinfo=UTC)],
                                                                       TIMESTAMP_ARROW),
                          "clicks": [3], "country": ["XX"]})
        with pytest.raises(SchemaError, match=r"row 0: 1960-01-01T00:00:00.*before .*1970-01-01"):
            p.push("user_stats", table)
        assert p.push("user_stats", [good]) == 1


def test_the_bounds_come_from_quasar_toml(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_project(tmp_path, redis_url, monkeypatch,
                           toml='[time]\nearliest = "1900-01-01"\nmax_future = "30d"\n')
    from quasar.services import PROJECT_ENV, feature_app
    monkeypatch.setenv(PROJECT_ENV, str(project))
    old, ahead = datetime(1960, 1, 1, tzinfo=UTC), NOW + timedelta(days=10)
    with quasar.Platform.open(project) as p:
        p.register("signals.py")
        assert p.push("user_stats", [{"user_id": 1, "event_timestamp": old, "clicks": 1, "country": "OLD"}]) == 1
        with pytest.raises(SchemaError, match=r"row 0: .* is after .*\(now \+ 30d"):
            p.push("user_stats", [{"user_id": 1, "event_timestamp": NOW + timedelta(days=31), "clicks": 1,
                                   "country": "X"}])

    async def main() -> tuple[httpx.Response, httpx.Response]:
        app = feature_app()
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), \
                httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            pushed = await client.post("/v1/push", json={"signal": "user_stats", "rows": [
                {"user_id": 2, "event_timestamp": iso(ahead), "clicks": 2, "country": "AHEAD"}]})
            refused = await client.post("/v1/push", json={"signal": "user_stats", "rows": [
                {"user_id": 2, "event_timestamp": "1899-12-31T00:00:00Z", "clicks": 2, "country": "X"}]})
            return pushed, refused

    pushed, refused = asyncio.run(main())
    assert pushed.status_code == 200 and pushed.json()["written"] == 1, pushed.text
    assert refused.status_code == 422 and "1900-01-01" in refused.json()["error"]["message"], refused.text


def _record(redis_url: str, user: int) -> bytes:
    record = redis.Redis.from_url(redis_url).hget(f"tb:user:{user}", FIELD)
    assert isinstance(record, bytes)
    return record


def test_a_push_without_created_time_wins_a_tie_against_an_offline_row(project: Path, redis_url: str) -> None:
    """Before: the pushed row's created time was null (the oldest), so the offline row of the same event time,
    materialized after the push, replaced it. Now a push is created when it arrives."""
    t = NOW - timedelta(hours=2)
    write_source(project, [(1, t, 10, "OFFLINE"), (2, t, 20, "OFFLINE")])
    with quasar.Platform.open(project) as p:
        p.register("signals.py")
        p.backfill("user_stats", D0, END)                  # the offline rows: created at the backfill's run time
        before = datetime.now(UTC)
        assert p.push("user_stats", [{"user_id": 1, "event_timestamp": t, "clicks": 11, "country": "PUSHED"}]) == 1
        after = datetime.now(UTC)
        p.materialize()
        assert online_now(p, [1, 2]) == [{"clicks": 11, "country": "PUSHED"}, {"clicks": 20, "country": "OFFLINE"}]
        stored = record_created_time_us(_record(redis_url, 1))
        assert stored is not None and micros(before) <= stored <= micros(after)
        # a later push of the same event time wins over the earlier one
        p.push("user_stats", [{"user_id": 1, "event_timestamp": t, "clicks": 12, "country": "AGAIN"}])
        assert online_now(p, [1]) == [{"clicks": 12, "country": "AGAIN"}]
        # an explicit created time is kept as given: an older one loses the tie
        p.push("user_stats", [{"user_id": 1, "event_timestamp": t, "clicks": 13, "country": "OLDER",
                               "created_timestamp": t}])
        assert online_now(p, [1]) == [{"clicks": 12, "country": "AGAIN"}]
        # pushed online and offline: both copies carry one created time, so a rebuild keeps the push
        p.push("user_stats", [{"user_id": 2, "event_timestamp": t, "clicks": 21, "country": "BOTH"}],
               to="online_and_offline")
        stored = record_created_time_us(_record(redis_url, 2))
        sv = p.registry.signal("user_stats")
        rows = [r for r in p.offline.read(sv.signal, sv.version).to_pylist() if r["country"] == "BOTH"]
        assert len(rows) == 1 and micros(rows[0]["created_timestamp"]) == stored
        p.materialize(full=True)
        assert online_now(p, [1, 2]) == [{"clicks": 10, "country": "OFFLINE"}, {"clicks": 21, "country": "BOTH"}]
