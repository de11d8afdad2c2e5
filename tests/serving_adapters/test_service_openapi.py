"""The scoring service's OpenAPI document and docs pages: every 200 body is described by its real model, real
answers validate against it, ``/metrics`` is Prometheus text, and ``/docs`` and ``/redoc`` work offline,
behind the token when there are tokens."""

from __future__ import annotations

import asyncio
from typing import Any

from fixtures.openapi_check import (
    assert_docs_offline,
    assert_no_string_bodies,
    assert_route_model,
    validate_answer,
)
from fixtures.serving import ScoringWorld, score_body, serving
from quasar.serving_adapters.service.schemas import HealthResponse, ScoreResponse


def test_openapi_describes_every_answer_by_its_model_and_real_answers_validate(scoring_world: ScoringWorld,
                                                                               scoring_redis: str) -> None:
    async def main() -> dict[str, Any]:
        async with serving(scoring_world, scoring_redis) as (_, client):
            score = await client.post("/v1/score", json=score_body(1, [1, 2, 3]))
            return {"doc": (await client.get("/openapi.json")).json(), "score": score,
                    "health": await client.get("/healthz")}

    r = asyncio.run(main())
    doc = r["doc"]
    assert_no_string_bodies(doc)
    assert_route_model(doc, "/v1/score", "post", ScoreResponse)
    assert_route_model(doc, "/healthz", "get", HealthResponse)
    assert r["score"].status_code == 200 and len(r["score"].json()["scores"]) == 3
    assert r["health"].json()["models"], "healthz lists the loaded model"
    validate_answer(doc, "/v1/score", "post", r["score"].json())
    validate_answer(doc, "/healthz", "get", r["health"].json())
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=1.0.0; charset=utf-8"]


def test_docs_load_only_packaged_assets(scoring_world: ScoringWorld, scoring_redis: str) -> None:
    async def main() -> list[str]:
        async with serving(scoring_world, scoring_redis) as (_, client):
            return await assert_docs_offline(client)

    urls = asyncio.run(main())
    assert "/openapi.json" in urls and any("swagger-ui-bundle" in u for u in urls)


def test_docs_and_their_assets_stay_behind_the_token(scoring_world: ScoringWorld, scoring_redis: str) -> None:
    async def main() -> tuple[list[str], list[int]]:
        async with serving(scoring_world, scoring_redis, auth_tokens=("s3cret",)) as (_, client):
            urls = await assert_docs_offline(client, headers={"Authorization": "Bearer s3cret"})
            return urls, [(await client.get(u)).status_code for u in ["/docs", "/redoc", *urls]]

    urls, refused = asyncio.run(main())
    assert urls and set(refused) == {401}
