"""Limits, auth and bad input of the scoring service: model names are checked against the bundles that exist
before any path is made of them (a 256-character name is a 404, not an ``OSError``), every endpoint but
``/healthz`` is behind the bearer token, ``/healthz`` lists no model or feature reference without one, a body
over the size limit is a 413 before it is parsed, malformed JSON is one line naming the position, and an error
nobody expected answers a JSON 500 counted in the metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fixtures.prometheus import metric
from fixtures.serving import SCORING_PROJECT, ScoringWorld, score_body, serving
from quasar.serving_adapters.bundle import load_bundle
from quasar.serving_adapters.models import LoadedModel
from quasar.serving_adapters.runner import ScorerBackend
from quasar.signals.errors import ModelNotFoundError
from quasar.signals.ufr.tensors import FeatureBatch

GOOD = {"Authorization": "Bearer s3cret"}


@pytest.mark.parametrize("name", ["r" * 256, "../ranker", "ranker/../ranker", ".", "..", "rank\x00er",
                                  "ranker/", "/etc/passwd", "nope"])
def test_a_model_name_is_checked_against_the_bundles_before_any_path_use(scoring_world: ScoringWorld,
                                                                         scoring_redis: str, name: str) -> None:
    async def main() -> tuple[httpx.Response, httpx.Response]:
        async with serving(scoring_world, scoring_redis) as (_, client):
            return await client.post("/v1/score", json=score_body(1, [1], model=name)), await client.get("/metrics")

    response, metrics = asyncio.run(main())
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["type"] == "ModelNotFoundError"
    assert "known models: ranker" in error["message"]
    assert len(error["message"]) < 300                     # a long name is shortened in the message
    assert metric(metrics.text, "quasar_scorer_requests_total", model="unknown", status="404") == 1


def test_load_bundle_refuses_an_unknown_name_before_making_a_path(scoring_world: ScoringWorld) -> None:
    with pytest.raises(ModelNotFoundError, match="known models: ranker"):
        load_bundle(scoring_world.models, "x" * 256)
    assert load_bundle(scoring_world.models, "ranker").spec.name == "ranker"


def test_every_endpoint_but_healthz_needs_the_token(scoring_world: ScoringWorld, scoring_redis: str) -> None:
    async def main() -> dict[str, httpx.Response]:
        async with serving(scoring_world, scoring_redis, auth_tokens=("s3cret",)) as (_, client):
            scored = await client.post("/v1/score", json=score_body(1, [1]), headers=GOOD)
            return {
                "scored": scored,
                "metrics": await client.get("/metrics"),
                "openapi": await client.get("/openapi.json"),
                "docs": await client.get("/docs"),
                "redoc": await client.get("/redoc"),
                "unknown_path": await client.get("/nope"),
                "big": await client.post("/v1/score", content=b" " * (8 * 1024 * 1024)),
                "health": await client.get("/healthz"),
                "health_wrong": await client.get("/healthz", headers={"Authorization": "Bearer nope"}),
                "health_token": await client.get("/healthz", headers=GOOD),
                "metrics_token": await client.get("/metrics", headers=GOOD),
                "openapi_token": await client.get("/openapi.json", headers=GOOD),
            }

    r = asyncio.run(main())
    assert r["scored"].status_code == 200
    for name in ("metrics", "openapi", "docs", "redoc", "unknown_path", "big"):
        assert r[name].status_code == 401, (name, r[name].text)
        assert r[name].headers["www-authenticate"] == "Bearer"
        assert r[name].json()["error"]["type"] == "Unauthorized"
    for name in ("health", "health_wrong"):               # open, but it names no model and no feature
        assert r[name].status_code == 200
        body = r[name].json()
        assert body["status"] == "ok" and body["models"] == []
        assert "score_user_stats" not in r[name].text and "ranker" not in r[name].text
    assert [m["name"] for m in r["health_token"].json()["models"]] == ["ranker"]
    assert "score_pin_stats@1:embedding" in r["health_token"].json()["models"][0]["inputs"]
    assert r["metrics_token"].status_code == 200 and r["openapi_token"].status_code == 200
    assert metric(r["metrics_token"].text, "quasar_scorer_requests_total", model="ranker", status="200") == 1


async def chunks(body: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for lo in range(0, len(body), size):
        yield body[lo:lo + size]


def test_a_body_over_the_limit_answers_413_before_it_is_parsed(scoring_world: ScoringWorld,
                                                               scoring_redis: str) -> None:
    limit = 16 * 1024
    big = json.dumps(score_body(1, list(range(5000)))).encode()
    assert len(big) > limit
    headers = {"content-type": "application/json"}

    async def main() -> dict[str, httpx.Response]:
        async with serving(scoring_world, scoring_redis, max_body_bytes=limit) as (_, client):
            return {"sized": await client.post("/v1/score", content=big, headers=headers),
                    "chunked": await client.post("/v1/score", content=chunks(big), headers=headers),
                    "fine": await client.post("/v1/score", json=score_body(1, [1, 2])),
                    "metrics": await client.get("/metrics")}

    r = asyncio.run(main())
    for name in ("sized", "chunked"):
        assert r[name].status_code == 413, (name, r[name].text)
        assert r[name].json()["error"]["type"] == "RequestTooLarge"
        assert f"over the limit of {limit} bytes" in r[name].json()["error"]["message"]
    assert r["fine"].status_code == 200
    assert metric(r["metrics"].text, "quasar_scorer_requests_total", model="unknown", status="413") == 2


def test_malformed_json_names_the_position(scoring_world: ScoringWorld, scoring_redis: str) -> None:
    async def main() -> httpx.Response:
        async with serving(scoring_world, scoring_redis) as (_, client):
            return await client.post("/v1/score", content=b'{"model": "ranker" "candidates": {}}',
                                     headers={"content-type": "application/json"})

    response = asyncio.run(main())
    assert response.status_code == 422
    assert response.json()["error"] == {
        "type": "RequestError", "message": "body is not valid JSON: Expecting ',' delimiter at line 1 column 20"}


class Exploding(ScorerBackend):
    """A backend with a bug: every call raises something nobody expected."""

    def __init__(self) -> None:
        import torch
        self.device = torch.device("cpu")

    def __call__(self, model: LoadedModel, batches: list[FeatureBatch]) -> list[Any]:
        raise KeyError("a bug in the backend")


def test_an_unexpected_error_answers_json_500_counted_in_the_metrics(scoring_world: ScoringWorld,
                                                                     scoring_redis: str,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    from quasar.online.redis_store import AsyncRedisOnlineStore
    from quasar.serving_adapters.models import ModelRegistry
    from quasar.serving_adapters.service import create_scoring_app

    async def main() -> tuple[httpx.Response, httpx.Response]:
        store = AsyncRedisOnlineStore(scoring_redis, project=SCORING_PROJECT)
        app = create_scoring_app(models=ModelRegistry(scoring_world.models, scoring_world.resolver), store=store,
                                 backend=Exploding(), close_store=True)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with app.router.lifespan_context(app), \
                httpx.AsyncClient(transport=transport, base_url="http://scorer") as client:
            return await client.post("/v1/score", json=score_body(1, [1])), await client.get("/metrics")

    response, metrics = asyncio.run(main())
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    assert response.json()["error"] == {"type": "InternalError",
                                        "message": "unexpected KeyError; the service log has the details"}
    assert "a bug in the backend" not in response.text
    assert metric(metrics.text, "quasar_scorer_requests_total", model="ranker", status="500") == 1
    assert any("failed unexpectedly" in rec.message and rec.exc_info for rec in caplog.records)
