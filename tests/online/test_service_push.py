"""POST /v1/push in process: JSON rows of every UFR type written online (newer event time wins), read back
through /v1/features; invalid rows answer 422 naming the column; offline push through the callback."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyarrow as pa
import pytest

from fixtures.feature_service import column, serve
from quasar.signals.signal import Signal
from quasar.signals.times import micros

# pushed event times: inside the service's time bounds (quasar.signals.bounds: at most a day ahead) and the 1-day TTL
DAY = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
T1, T2 = DAY.strftime("%Y-%m-%dT%H:%M:%S"), (DAY + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")

PROFILE_ROW = {"user_id": 41, "event_timestamp": "2026-03-01T10:00:00.000001Z", "flag": True, "count": 2**60,
               "score32": 0.5, "score64": -2.25, "label": "pushed", "seen_at": "2026-02-28T23:59:59+01:00",
               "taste": [1.0, 2.0, 3.0], "half": [0.5, -0.25], "recent": [5, 6], "weighted": [{"id": 1, "weight": 2.0}]}


def run(redis_url: str, requests: list[tuple[str, dict[str, Any]]], **options: Any) -> list[httpx.Response]:
    async def main() -> list[httpx.Response]:
        async with serve(redis_url, **options) as (_, client):
            return [await client.post(path, json=body) for path, body in requests]

    return asyncio.run(main())


def engagement(user: int, when: str, ctr: float | None, clicks: int = 1, dwell: float = 0.0) -> dict[str, Any]:
    return {"user_id": user, "event_timestamp": when, "ctr_7d": ctr, "clicks": clicks, "dwell": dwell}


def test_pushed_rows_of_every_type_read_back(redis_url: str) -> None:
    null_row = {**{k: None for k in PROFILE_ROW}, "user_id": 42, "event_timestamp": "2026-03-01T10:00:00"}
    pushed, read = run(redis_url, [
        ("/v1/push", {"signal": "user_profile", "rows": [PROFILE_ROW, null_row]}),
        ("/v1/features", {"entities": {"user_id": [41, 42]}, "features": ["user_profile"]}),
    ])
    assert pushed.status_code == 200, pushed.text
    assert pushed.json() == {"signal": "user_profile", "version": 1, "rows": 2, "written": 2, "offline": False}
    body = read.json()
    expected = {**PROFILE_ROW, "seen_at": "2026-02-28T22:59:59.000000Z"}
    for name, value in expected.items():
        if name not in ("user_id", "event_timestamp"):
            assert column(body, name)["values"] == [value, None], name
            assert column(body, name)["statuses"] == ["PRESENT", "NULL_VALUE"], name
    assert column(body, "flag")["event_timestamps"] == ["2026-03-01T10:00:00.000001Z", "2026-03-01T10:00:00.000000Z"]


def test_newer_event_time_wins(redis_url: str) -> None:
    newer = engagement(7, f"{T2}Z", 0.9, clicks=2)
    older = engagement(7, f"{T1}Z", 0.1, clicks=1)
    first, second, again, read = run(redis_url, [
        ("/v1/push", {"signal": "user_engagement", "rows": [newer]}),
        ("/v1/push", {"signal": "user_engagement", "rows": [older]}),
        ("/v1/push", {"signal": "user_engagement@2", "rows": [older, engagement(8, f"{T1}Z", 0.2)]}),
        ("/v1/features", {"entities": {"user_id": [7, 8]}, "features": ["user_engagement:clicks"]}),
    ])
    assert first.json()["written"] == 1 and first.json()["version"] == 2
    assert second.status_code == 200 and second.json()["written"] == 0     # older: skipped, not an error
    assert again.json()["written"] == 1
    assert column(read.json(), "clicks")["values"] == [2, 1]
    assert column(read.json(), "clicks")["event_timestamps"] == [f"{T2}.000000Z", f"{T1}.000000Z"]


def test_a_pinned_version_is_written_under_that_version(redis_url: str) -> None:
    row = {"user_id": 5, "event_timestamp": f"{T1}Z", "ctr_7d": 0.5, "clicks": 3}
    pushed, v1, v2 = run(redis_url, [
        ("/v1/push", {"signal": "user_engagement@1", "rows": [row]}),
        ("/v1/features", {"entities": {"user_id": [5]}, "features": ["user_engagement@1:clicks"]}),
        ("/v1/features", {"entities": {"user_id": [5]}, "features": ["user_engagement@2:clicks"]}),
    ])
    assert pushed.json()["version"] == 1
    assert column(v1.json(), "clicks")["values"] == [3]
    assert column(v2.json(), "clicks")["statuses"] == ["NOT_FOUND"]


@pytest.mark.parametrize(("body", "status", "named"), [
    ({"signal": "user_engagement", "rows": [{"user_id": 1, "event_timestamp": f"{T1}Z",
                                             "ctr_7d": 0.5, "clicks": 1}]}, 422, "'dwell'"),
    ({"signal": "user_engagement", "rows": [engagement(1, f"{T1}Z", 0.5) | {"clicks": "many"}]},
     422, "'clicks'"),
    ({"signal": "user_engagement", "rows": [engagement(1, "yesterday", 0.5)]}, 422, "'event_timestamp'"),
    ({"signal": "user_engagement", "rows": [engagement(1, f"{T1}Z", 0.5) | {"extra": 1}]},
     422, "'extra'"),
    ({"signal": "user_engagement", "rows": [engagement(1, f"{T1}Z", 0.5) | {"user_id": "x"}]},
     422, "'user_id'"),
    ({"signal": "user_profile", "rows": [PROFILE_ROW | {"taste": [1.0, 2.0]}]}, 422, "'taste'"),
    ({"signal": "user_profile", "rows": [PROFILE_ROW | {"weighted": [{"id": 1}]}]}, 422, "'weighted'"),
    ({"signal": "user_profile", "rows": [PROFILE_ROW | {"seen_at": 12}]}, 422, "'seen_at'"),
    ({"signal": "nope", "rows": []}, 422, "'nope'"),
    ({"signal": "user_engagement@9", "rows": []}, 422, "version 9"),
    ({"signal": "offline_only", "rows": []}, 422, "'offline_only'"),
    ({"signal": "user:x", "rows": []}, 422, "signal"),
    ({"signal": "user_engagement", "rows": [], "to": "offline"}, 422, "to"),
    ({"signal": "user_engagement", "rows": [], "to": "online_and_offline"}, 422, "without offline push"),
    ({"signal": "user_engagement", "rows": [engagement(i, f"{T1}Z", 0.1) for i in range(4)]},
     413, "4 rows"),
])
def test_invalid_pushes_answer_4xx_naming_the_problem(redis_url: str, body: dict[str, Any], status: int,
                                                       named: str) -> None:
    (response,) = run(redis_url, [("/v1/push", body)], max_push_rows=3)
    assert response.status_code == status, response.text
    assert named in response.json()["error"]["message"], response.json()


def test_online_and_offline_push_appends_through_the_callback(redis_url: str) -> None:
    appended: list[tuple[str, int, pa.Table]] = []

    def offline_push(signal: Signal, version: int, table: pa.Table) -> None:
        appended.append((signal.name, version, table))

    rows = [engagement(1, f"{T1}Z", 0.5), engagement(2, f"{T1}+02:00", None)]
    pushed, online_only = run(redis_url, [
        ("/v1/push", {"signal": "user_engagement", "rows": rows, "to": "online_and_offline"}),
        ("/v1/push", {"signal": "user_engagement", "rows": rows}),
    ], offline_push=offline_push)
    assert pushed.json() == {"signal": "user_engagement", "version": 2, "rows": 2, "written": 2, "offline": True}
    assert online_only.json()["offline"] is False
    assert len(appended) == 1
    name, version, table = appended[0]
    assert (name, version) == ("user_engagement", 2)
    assert table.column("user_id").to_pylist() == [1, 2]
    assert table.column("ctr_7d").to_pylist() == [0.5, None]
    assert table.column("event_timestamp").cast(pa.int64()).to_pylist() == [micros(DAY),
                                                                          micros(DAY - timedelta(hours=2))]
