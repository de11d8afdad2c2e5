"""POST /v1/features and Feast's /get-online-features in process: real Redis, rows written with
``RedisOnlineStore.write``; every status, every UFR type's JSON form, and the 4xx answers."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from fixtures.feature_service import FRESH, PROJECT, STALE, column, f32, iso, resolve, serve, write_world
from quasar.online.redis_store import RedisOnlineStore
from quasar.online.response import online_features, plan_request, read_online_features
from quasar.online.service.errors import ORJSON_OPTIONS

EPOCH = "1970-01-01T00:00:00.000000Z"


def call(redis_url: str, path: str, body: dict[str, Any], **options: Any) -> httpx.Response:
    async def main() -> httpx.Response:
        async with serve(redis_url, **options) as (_, client):
            return await client.post(path, json=body)

    return asyncio.run(main())


@pytest.fixture
def world(redis_url: str) -> str:
    write_world(redis_url)
    return redis_url


def test_every_ufr_type_has_its_json_form(world: str) -> None:
    response = call(world, "/v1/features", {"entities": {"user_id": [1, 3]}, "features": ["user_profile"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metadata"]["feature_names"] == ["user_id", "flag", "count", "score32", "score64", "label",
                                                 "seen_at", "taste", "half", "recent", "weighted"]
    values = {name: body["results"][i]["values"] for i, name in enumerate(body["metadata"]["feature_names"])}
    assert values["user_id"] == [1, 3]
    assert values["flag"] == [True, False]
    assert values["count"] == [-(2**62), 7]                     # int64 beyond 2**53 stays exact
    assert values["score32"] == [0.25, None]                     # NaN is null
    assert values["score64"] == [1e-300, None]                   # inf is null
    assert values["label"] == ["héllo", ""]
    assert values["seen_at"] == ["2026-01-02T03:04:05.678901Z", "1969-12-31T00:00:00.000000Z"]
    assert values["taste"] == [[0.5, -1.0, 2.0], [None, 0.0, 1.0]]
    assert values["half"] == [[1.5, -2.0], [0.0, 65504.0]]      # float16 vectors as exact numbers
    assert values["recent"] == [[3, 1, 2], []]
    assert values["weighted"] == [[{"id": 9, "weight": 0.5}, {"id": 8, "weight": -1.0}], []]
    for result in body["results"][1:]:
        assert result["statuses"] == ["PRESENT", "PRESENT"]      # NaN and inf are present values
        assert result["event_timestamps"] == [iso(FRESH)] * 2


def test_every_status_and_feast_timestamps(world: str) -> None:
    body = call(world, "/v1/features", {"entities": {"user_id": [1, 2, 3, 99]},
                                        "features": ["user_engagement@1:ctr_7d", "user_profile:label"]}).json()
    assert body["metadata"]["feature_names"] == ["user_id", "ctr_7d", "label"]
    key = column(body, "user_id")
    assert key == {"values": [1, 2, 3, 99], "statuses": ["PRESENT"] * 4, "event_timestamps": [EPOCH] * 4}
    ctr = column(body, "ctr_7d")
    assert ctr["values"] == [0.5, None, None, None]               # a stale value is never returned
    assert ctr["statuses"] == ["PRESENT", "OUTSIDE_MAX_AGE", "NULL_VALUE", "NOT_FOUND"]
    assert ctr["event_timestamps"] == [iso(FRESH), iso(STALE), iso(FRESH), EPOCH]
    label = column(body, "label")
    assert label["statuses"] == ["PRESENT", "NULL_VALUE", "PRESENT", "NOT_FOUND"]
    assert label["values"] == ["héllo", None, "", None]


def test_timestamps_are_iso_8601_utc(world: str) -> None:
    body = call(world, "/v1/features", {"entities": {"user_id": [1]}, "features": ["user_profile:seen_at"]}).json()
    stamp = column(body, "seen_at")["event_timestamps"][0]
    assert stamp.endswith("Z")
    assert datetime.fromisoformat(stamp) == FRESH
    assert datetime.fromisoformat(column(body, "seen_at")["values"][0]) == datetime(2026, 1, 2, 3, 4, 5, 678901,
                                                                                  tzinfo=UTC)


def test_request_order_duplicates_and_versions(world: str) -> None:
    body = call(world, "/v1/features", {"entities": {"user_id": [3, 1, 3]},
                                        "features": ["user_engagement:dwell", "user_engagement@1:clicks",
                                                     "user_profile:count"]}).json()
    assert body["metadata"]["feature_names"] == ["user_id", "dwell", "clicks", "count"]
    assert column(body, "user_id")["values"] == [3, 1, 3]
    assert column(body, "dwell")["values"] == [3.5, 1.5, 3.5]       # latest is v2, which has dwell
    assert column(body, "clicks")["values"] == [30, 10, 30]
    assert column(body, "count")["values"] == [7, -(2**62), 7]


def test_full_feature_names(world: str) -> None:
    body = call(world, "/v1/features", {"entities": {"user_id": [1]}, "full_feature_names": True,
                                        "features": ["user_engagement:ctr_7d", "user_profile:count"]}).json()
    assert body["metadata"]["feature_names"] == ["user_id", "user_engagement__ctr_7d", "user_profile__count"]
    assert column(body, "user_engagement__ctr_7d")["values"] == [f32(0.5)]


def test_features_of_two_entities_need_both_join_keys(world: str) -> None:
    body = call(world, "/v1/features", {"entities": {"user_id": [1, 2], "item_id": ["b", "zz"]},
                                        "features": ["item_stats:popularity", "user_engagement:clicks"]}).json()
    assert body["metadata"]["feature_names"] == ["user_id", "item_id", "popularity", "clicks"]
    assert column(body, "item_id")["values"] == ["b", "zz"]
    assert column(body, "popularity")["values"] == [0.2, None]
    assert column(body, "popularity")["statuses"] == ["PRESENT", "NOT_FOUND"]
    assert column(body, "clicks")["statuses"] == ["PRESENT", "OUTSIDE_MAX_AGE"]

    missing = call(world, "/v1/features", {"entities": {"user_id": [1]},
                                           "features": ["item_stats:popularity", "user_engagement:clicks"]})
    assert missing.status_code == 422
    assert "'item_id'" in missing.json()["error"]["message"]
    assert "missing" in missing.json()["error"]["message"]


def test_feast_route_takes_feast_bodies(world: str) -> None:
    body = {"features": ["user_engagement:ctr_7d", "user_engagement:clicks"], "entities": {"user_id": [1, 2]},
            "full_feature_names": False}
    feast = call(world, "/get-online-features", body)
    ours = call(world, "/v1/features", body)
    assert feast.status_code == 200, feast.text
    assert feast.json() == ours.json()
    assert feast.json()["results"][1]["statuses"] == ["PRESENT", "OUTSIDE_MAX_AGE"]
    service = call(world, "/get-online-features", {**body, "feature_service": "ranker_v1"})
    assert service.status_code == 404
    detail = orjson.loads(service.json())                # Feast's error document, as a JSON string
    assert detail["module"] == "feast.errors" and detail["class"] == "FeatureServiceNotFoundException"
    assert "ranker_v1" in detail["message"]


def test_feast_route_answers_timestamp_features_in_epoch_seconds(world: str) -> None:
    body = {"entities": {"user_id": [1, 2, 3]}, "features": ["user_profile:seen_at", "user_profile:count"]}
    feast, ours = call(world, "/get-online-features", body).json(), call(world, "/v1/features", body).json()
    seen = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert column(ours, "seen_at")["values"] == [iso(seen), None, "1969-12-31T00:00:00.000000Z"]
    assert column(feast, "seen_at")["values"] == [int(seen.timestamp()), None, -86400]   # Feast's UnixTimestamp
    assert column(feast, "seen_at")["statuses"] == column(ours, "seen_at")["statuses"]
    assert column(feast, "count") == column(ours, "count")


def test_nan_and_inf_render_as_null_json(world: str) -> None:
    response = call(world, "/v1/features", {"entities": {"user_id": [3]}, "features": ["user_profile:score64"]})
    assert b"null" in response.content and b"NaN" not in response.content and b"Infinity" not in response.content
    assert all(v is None or math.isfinite(v) for v in column(response.json(), "score64")["values"])


@pytest.mark.parametrize(("body", "status", "error_type", "named"), [
    ({"entities": {"user_id": [1]}, "features": ["nope:x"]}, 422, "NotFoundError", "'nope'"),
    ({"entities": {"user_id": [1]}, "features": ["user_profile:nope"]}, 422, "RequestError", "'nope'"),
    ({"entities": {"user_id": [1]}, "features": ["user_engagement@7:ctr_7d"]}, 422, "NotFoundError", "version 7"),
    ({"entities": {"user_id": [1]}, "features": ["user:profile:x"]}, 422, "RequestError", "'user:profile:x'"),
    ({"entities": {"user_id": [1], "pin_id": [2]}, "features": ["user_profile:count"]}, 422, "RequestError",
     "'pin_id'"),
    ({"entities": {"member_id": [1]}, "features": ["user_profile:count"]}, 422, "RequestError", "'user_id'"),
    ({"entities": {"user_id": ["one"]}, "features": ["user_profile:count"]}, 422, "RequestError", "'one'"),
    ({"entities": {"item_id": [5]}, "features": ["item_stats"]}, 422, "RequestError", "item_id[0]"),
    ({"entities": {"user_id": [2**63]}, "features": ["user_profile:count"]}, 422, "RequestError", "int64"),
    ({"entities": {"user_id": [1.5]}, "features": ["user_profile:count"]}, 422, "RequestError", "user_id.0"),
    ({"entities": {"user_id": [True]}, "features": ["user_profile:count"]}, 422, "RequestError", "user_id.0"),
    ({"entities": {"user_id": [1], "item_id": ["a", "b"]},
      "features": ["user_profile:count", "item_stats"]}, 422, "RequestError", "item_id has 2"),
    ({"entities": {"user_id": [1]}, "features": ["offline_only:x"]}, 422, "RequestError", "'offline_only'"),
    ({"entities": {"user_id": [1]}, "features": ["user_engagement@1:ctr_7d", "user_engagement@2:ctr_7d"]}, 422,
     "RequestError", "full_feature_names"),
    ({"entities": {"user_id": [1]}, "features": []}, 422, "RequestError", "features"),
    ({"entities": {}, "features": ["user_profile"]}, 422, "RequestError", "entities"),
    ({"entities": {"user_id": [1]}}, 422, "RequestError", "features"),
    ({"entities": {"user_id": [1]}, "features": ["user_profile"], "extra": 1}, 422, "RequestError", "extra"),
    ({"entities": {"user_id": list(range(6))}, "features": ["user_profile"]}, 413, "TooManyEntitiesError", "6"),
])
def test_bad_requests_name_the_problem(world: str, body: dict[str, Any], status: int, error_type: str,
                                       named: str) -> None:
    response = call(world, "/v1/features", body, max_entities=5)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type
    assert named in error["message"], error["message"]


def test_at_the_entity_limit_is_fine_and_zero_rows_answer_empty_columns(world: str) -> None:
    ok = call(world, "/v1/features", {"entities": {"user_id": [1, 2, 3, 4, 5]}, "features": ["user_profile"]},
              max_entities=5)
    assert ok.status_code == 200
    empty = call(world, "/v1/features", {"entities": {"user_id": []}, "features": ["user_profile:count"]}).json()
    assert empty == {"metadata": {"feature_names": ["user_id", "count"]},
                     "results": [{"values": [], "statuses": [], "event_timestamps": []}] * 2}


def test_malformed_json_and_unknown_routes_answer_json(world: str) -> None:
    async def main() -> list[httpx.Response]:
        async with serve(world) as (_, client):
            return [await client.post("/v1/features", content=b"{not json",
                                      headers={"content-type": "application/json"}),
                    await client.get("/v1/nothing-here"), await client.get("/v1/features")]

    bad_json, unknown, wrong_method = asyncio.run(main())
    assert bad_json.status_code == 422 and bad_json.json()["error"]["type"] == "RequestError"
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "NotFound"
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["type"] == "MethodNotAllowed"


def test_the_python_reader_gives_the_same_document(world: str) -> None:
    """``read_online_features`` (what the facade calls) on the synchronous store equals the HTTP answer
    once rendered."""
    entities = {"user_id": [1, 2, 3, 99]}
    features = ["user_profile", "user_engagement@1:ctr_7d"]
    with RedisOnlineStore(world, project=PROJECT) as store:
        document = read_online_features(store, plan_request(entities, features, resolve))
        again = online_features(store, entities, features, resolve)
    assert orjson.dumps(again, option=ORJSON_OPTIONS) == orjson.dumps(document, option=ORJSON_OPTIONS)
    assert column(document, "seen_at")["values"][0] == "2026-01-02T03:04:05.678901Z"
    assert math.isnan(column(document, "score32")["values"][2])     # NaN in Python, null once rendered
    http = call(world, "/v1/features", {"entities": entities, "features": features}).json()
    assert orjson.loads(orjson.dumps(document, option=ORJSON_OPTIONS)) == http
