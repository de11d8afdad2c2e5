"""The feature service's OpenAPI document and docs pages: every 200 body is described by its real pydantic
model (generated clients get typed answers, not strings), real answers validate against those schemas, and
``/docs`` and ``/redoc`` load their assets from the service itself, behind the token when there are tokens."""

from __future__ import annotations

import asyncio
from typing import Any

from fixtures.feature_service import FRESH, iso, serve, write_world
from fixtures.openapi_check import (
    assert_docs_offline,
    assert_no_string_bodies,
    assert_route_model,
    validate_answer,
)
from quasar.online.service.models import FeaturesResponse, HealthResponse, PushResponse

EVERY_TYPE = {"entities": {"user_id": [1, 2, 3, 4]}, "features": ["user_profile", "user_engagement@1:ctr_7d"]}


def test_openapi_describes_every_answer_by_its_model_and_real_answers_validate(redis_url: str) -> None:
    write_world(redis_url)

    async def main() -> dict[str, Any]:
        async with serve(redis_url) as (_, client):
            return {
                "doc": (await client.get("/openapi.json")).json(),
                "features": await client.post("/v1/features", json=EVERY_TYPE),
                "feast": await client.post("/get-online-features", json=EVERY_TYPE),
                "push": await client.post("/v1/push", json={"signal": "item_stats", "rows": [
                    {"item_id": "z", "event_timestamp": iso(FRESH), "popularity": 0.5}]}),
                "health": await client.get("/healthz"),
                "metrics": (await client.get("/openapi.json")).json()["paths"]["/metrics"]["get"],
            }

    r = asyncio.run(main())
    doc = r["doc"]
    assert_no_string_bodies(doc)
    assert_route_model(doc, "/v1/features", "post", FeaturesResponse)
    assert_route_model(doc, "/get-online-features", "post", FeaturesResponse)
    assert_route_model(doc, "/v1/push", "post", PushResponse)
    assert_route_model(doc, "/healthz", "get", HealthResponse)
    column = doc["components"]["schemas"]["FeatureColumn"]
    assert {"values", "statuses", "event_timestamps"} <= set(column["properties"])
    assert set(column["properties"]["statuses"]["items"]["enum"]) == {"PRESENT", "NOT_FOUND", "NULL_VALUE",
                                                                      "OUTSIDE_MAX_AGE"}
    for name, path, method in [("features", "/v1/features", "post"), ("feast", "/get-online-features", "post"),
                               ("push", "/v1/push", "post"), ("health", "/healthz", "get")]:
        assert r[name].status_code == 200, (name, r[name].text)
        validate_answer(doc, path, method, r[name].json())
    statuses = {s for col in r["features"].json()["results"] for s in col["statuses"]}
    assert statuses == {"PRESENT", "NOT_FOUND", "NULL_VALUE", "OUTSIDE_MAX_AGE"}   # the answer had every kind
    assert list(r["metrics"]["responses"]["200"]["content"]) == ["text/plain; version=1.0.0; charset=utf-8"]


def test_docs_load_only_packaged_assets(redis_url: str) -> None:
    async def main() -> list[str]:
        async with serve(redis_url) as (_, client):
            return await assert_docs_offline(client)

    urls = asyncio.run(main())
    assert "/openapi.json" in urls and any("swagger-ui-bundle" in u for u in urls)


def test_docs_and_their_assets_stay_behind_the_token(redis_url: str) -> None:
    async def main() -> tuple[list[str], list[int]]:
        async with serve(redis_url, auth_tokens=["s3cret"]) as (_, client):
            urls = await assert_docs_offline(client, headers={"Authorization": "Bearer s3cret"})
            refused = [(await client.get(u)).status_code for u in ["/docs", "/redoc", *urls]]
            return urls, refused

    urls, refused = asyncio.run(main())
    assert urls and set(refused) == {401}
