"""The scoring service end to end in process: real Redis, real bundle, scores against a plain reference."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fixtures.prometheus import sample_value
from fixtures.redis_server import RedisServer
from fixtures.serving import (
    SCORING_PROJECT,
    ScoringWorld,
    ranker_spec,
    reference_scores,
    reference_table,
    score_body,
    serving,
    write_world,
)
from quasar.examples.ranker import Ranker
from quasar.online.redis_store import AsyncRedisOnlineStore
from quasar.serving_adapters.bundle import InputColumn, save_bundle
from quasar.serving_adapters.features import (
    assemble_feature_table,
    build_request_batch,
    check_keys,
    fetch_online,
)
from quasar.serving_adapters.models import ModelRegistry


def random_requests(world: ScoringWorld, count: int, seed: int) -> list[tuple[int, list[int]]]:
    """(user, pins): users and pins include ids never written; pins may repeat within a request."""
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(0, world.users)),
             [int(p) for p in rng.integers(0, world.pins, int(rng.integers(1, 40)))]) for _ in range(count)]


def metric(text: str, name: str, **labels: str) -> float:
    """The sample's value; these tests expect every metric they read to be there."""
    value = sample_value(text, name, **labels)
    if value is None:
        raise AssertionError(f"metric {name} {labels} not found")
    return value


def test_scores_equal_the_model_on_the_offline_rows_bit_for_bit(scoring_world: ScoringWorld,
                                                                 scoring_redis: str) -> None:
    model = scoring_world.reference_model()
    requests = random_requests(scoring_world, 25, seed=1)

    async def main() -> list[list[float]]:
        async with serving(scoring_world, scoring_redis) as (_, client):
            out = []
            for user, pins in requests:        # one at a time: each model call holds exactly one request
                response = await client.post("/v1/score", json=score_body(user, pins))
                assert response.status_code == 200, response.text
                assert response.json()["model"] == "ranker"
                out.append(response.json()["scores"])
            return out

    for (user, pins), scores in zip(requests, asyncio.run(main()), strict=True):
        expected = reference_scores(scoring_world, model, user, pins)
        assert torch.equal(torch.tensor(scores, dtype=torch.float32), expected), (user, pins)


def test_fetched_rows_equal_the_offline_rows_and_missing_values_are_masked(scoring_world: ScoringWorld,
                                                                          scoring_redis: str) -> None:
    loaded = ModelRegistry(scoring_world.models, scoring_world.resolver).get("ranker")
    requests = [*random_requests(scoring_world, 10, seed=2), (scoring_world.users - 1, [0, 1, 2])]

    async def main() -> list[Any]:
        store = AsyncRedisOnlineStore(scoring_redis, project=SCORING_PROJECT)
        tables = []
        for user, pins in requests:
            keys = check_keys(loaded, {"user_id": [user]}, {"pin_id": pins})
            request, candidates = await fetch_online(store, loaded, keys)
            tables.append(assemble_feature_table(loaded, request, candidates, len(pins)))
        return tables

    tables = asyncio.run(main())
    for (user, pins), table in zip(requests, tables, strict=True):
        assert table.equals(reference_table(scoring_world, user, pins)), (user, pins)
    # the last user was never written: every request-side value is missing, so masked, never a present 0
    unknown = build_request_batch(loaded, tables[-1])
    for column in ("clicks", "ctr", "active", "taste", "recent"):
        assert not unknown.masks[f"score_user_stats__{column}"].any()
    for i, name in enumerate(unknown.dense_names):
        if name.startswith("score_user_stats__"):
            assert not unknown.dense_mask[:, i].any() and not unknown.dense[:, i].any()
    assert unknown.id_lists["score_user_stats__recent"].values.numel() == 0
    assert tables[-1].column("score_user_stats__clicks").null_count == 3
    # and a present value is never masked: the masks are exactly the non-null slots of the fetched rows
    for table in tables:
        batch = build_request_batch(loaded, table)
        for name in table.column_names:
            expected = torch.tensor(table.column(name).is_valid().to_pylist())
            assert torch.equal(batch.masks[name], expected), name


def test_concurrent_requests_are_batched_and_each_gets_its_own_scores(scoring_world: ScoringWorld,
                                                                      scoring_redis: str) -> None:
    model = scoring_world.reference_model()
    requests = random_requests(scoring_world, 50, seed=3)

    async def main() -> tuple[list[list[float]], str]:
        async with serving(scoring_world, scoring_redis, max_wait_ms=25) as (_, client):
            responses = await asyncio.gather(*(client.post("/v1/score", json=score_body(u, p)) for u, p in requests))
            assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
            return [r.json()["scores"] for r in responses], (await client.get("/metrics")).text

    all_scores, metrics = asyncio.run(main())
    for (user, pins), scores in zip(requests, all_scores, strict=True):
        assert len(scores) == len(pins)
        # batched rows go through a bigger matmul, whose blocking may change the last bit
        torch.testing.assert_close(torch.tensor(scores, dtype=torch.float32),
                                   reference_scores(scoring_world, model, user, pins), rtol=1e-5, atol=1e-6)
    calls = metric(metrics, "quasar_scorer_batch_requests_count", model="ranker")
    requests_in_calls = metric(metrics, "quasar_scorer_batch_requests_sum", model="ranker")
    assert requests_in_calls == 50 and calls < 50
    assert metric(metrics, "quasar_scorer_batch_requests_bucket", model="ranker", le="1.0") < calls
    assert metric(metrics, "quasar_scorer_batch_rows_sum", model="ranker") == sum(len(p) for _, p in requests)
    assert metric(metrics, "quasar_scorer_requests_total", model="ranker", status="200") == 50
    assert metric(metrics, "quasar_scorer_feature_fetch_seconds_count", model="ranker") == 50
    assert metric(metrics, "quasar_scorer_queue_wait_seconds_count", model="ranker") == 50
    assert metric(metrics, "quasar_scorer_model_seconds_count", model="ranker") == calls


def test_batching_off_runs_each_request_alone(scoring_world: ScoringWorld, scoring_redis: str) -> None:
    requests = random_requests(scoring_world, 12, seed=4)

    async def main() -> str:
        async with serving(scoring_world, scoring_redis, batching=False, max_wait_ms=25) as (_, client):
            responses = await asyncio.gather(*(client.post("/v1/score", json=score_body(u, p)) for u, p in requests))
            assert [len(r.json()["scores"]) for r in responses] == [len(p) for _, p in requests]
            return (await client.get("/metrics")).text

    metrics = asyncio.run(main())
    assert metric(metrics, "quasar_scorer_batch_requests_count", model="ranker") == 12
    assert metric(metrics, "quasar_scorer_batch_requests_bucket", model="ranker", le="1.0") == 12


def test_empty_candidates_and_response_headers(scoring_world: ScoringWorld, scoring_redis: str) -> None:
    async def main() -> tuple[Any, Any]:
        async with serving(scoring_world, scoring_redis) as (_, client):
            return (await client.post("/v1/score", json=score_body(3, [])),
                    await client.post("/v1/score", json=score_body(3, [5, 6])))

    empty, scored = asyncio.run(main())
    assert empty.status_code == 200 and empty.json() == {"model": "ranker", "scores": []}
    assert scored.headers["content-type"] == "application/json"
    assert "fetch;dur=" in scored.headers["server-timing"] and "model;dur=" in scored.headers["server-timing"]


@pytest.mark.parametrize(("payload", "status", "detail"), [
    ({"model": "nope", "entities": {"user_id": [1]}, "candidates": {"pin_id": [1]}}, 404,
     r"model 'nope' not found"),
    ({"model": "ranker", "entities": {"user_id": [1]}, "candidates": {"item_id": [1]}}, 422,
     r"candidates: unknown key 'item_id'; model 'ranker' takes candidates as \{'pin_id'"),
    ({"model": "ranker", "entities": {"uid": [1]}, "candidates": {"pin_id": [1]}}, 422,
     r"entities: unknown key 'uid'"),
    ({"model": "ranker", "entities": {}, "candidates": {"pin_id": [1]}}, 422,
     r"entities: missing key 'user_id'"),
    ({"model": "ranker", "entities": {"user_id": [1, 2]}, "candidates": {"pin_id": [1]}}, 422,
     r"entities.user_id: give exactly one key"),
    ({"model": "ranker", "entities": {"user_id": [1]}, "candidates": {"pin_id": [1, "x"]}}, 422,
     r"candidates.pin_id\[1\]: key 'x' must be an int64"),
    ({"model": "ranker", "entities": {"user_id": [1]}, "candidates": {"pin_id": [1, 2.5]}}, 422,
     r"candidates.pin_id.1: Input should be a valid"),
    ({"model": "ranker", "entities": {"user_id": [True]}, "candidates": {"pin_id": [1]}}, 422,
     r"entities.user_id.0: Input should be a valid"),
    ({"model": "ranker", "entities": {"user_id": [2**64]}, "candidates": {"pin_id": [1]}}, 422,
     r"entities.user_id\[0\]: key 18446744073709551616 does not fit in an int64"),
    ({"model": "ranker", "entities": {"user_id": [1]}}, 422, r"candidates: Field required"),
    ({"model": "ranker", "entities": {"user_id": [1]}, "candidates": {"pin_id": [1]}, "extra": 1}, 422,
     r"extra: Extra inputs are not permitted"),
    ({"model": "ranker", "entities": {"user_id": [1]}, "candidates": {"pin_id": list(range(10_001))}}, 413,
     r"candidates.pin_id: 10001 candidates, more than the limit of 10000"),
])
def test_bad_requests_name_the_problem(scoring_world: ScoringWorld, scoring_redis: str, payload: dict[str, Any],
                                       status: int, detail: str) -> None:
    async def main() -> Any:
        async with serving(scoring_world, scoring_redis) as (_, client):
            return await client.post("/v1/score", json=payload)

    response = asyncio.run(main())
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"} and set(response.json()["error"]) == {"type", "message"}
    assert re.search(detail, response.json()["error"]["message"]), response.json()


def test_malformed_json_is_422(scoring_world: ScoringWorld, scoring_redis: str) -> None:
    async def main() -> Any:
        async with serving(scoring_world, scoring_redis) as (_, client):
            return await client.post("/v1/score", content=b"{not json", headers={"content-type": "application/json"})

    response = asyncio.run(main())
    assert response.status_code == 422 and "JSON" in response.json()["error"]["message"]


def test_a_bundle_that_no_longer_matches_is_409_naming_the_mismatch(scoring_world: ScoringWorld,
                                                                   scoring_redis: str, tmp_path: Path) -> None:
    shutil.copytree(scoring_world.models, tmp_path, dirs_exist_ok=True)
    inputs = tuple(InputColumn(column=c.column, ref=c.ref.replace("@1:", "@3:"), role=c.role)
                   for c in ranker_spec().inputs)
    broken = ranker_spec("stale_ranker", inputs=inputs)
    save_bundle(tmp_path, broken, Ranker(**broken.model_kwargs))

    async def main() -> tuple[Any, Any]:
        async with serving(scoring_world, scoring_redis,
                           models=ModelRegistry(tmp_path, scoring_world.resolver)) as (_, client):
            return (await client.post("/v1/score", json=score_body(1, [1], model="stale_ranker")),
                    await client.post("/v1/score", json=score_body(1, [1])))

    refused, fine = asyncio.run(main())
    assert refused.status_code == 409 and refused.json()["error"]["type"] == "BundleError"
    assert "model 'stale_ranker'" in refused.json()["error"]["message"]
    assert "score_user_stats@3:clicks" in refused.json()["error"]["message"]
    assert "current version of 'score_user_stats' is 1" in refused.json()["error"]["message"]
    assert fine.status_code == 200


def test_healthz_reports_device_and_each_models_state(scoring_world: ScoringWorld, scoring_redis: str) -> None:
    """Without ``load_all`` (the service's start-up) a bundle is unloaded until its first request; after it,
    loaded with what it reads."""
    async def main() -> tuple[Any, Any]:
        async with serving(scoring_world, scoring_redis) as (_, client):
            before = (await client.get("/healthz")).json()
            await client.post("/v1/score", json=score_body(1, [1]))
            return before, await client.get("/healthz")

    before, after = asyncio.run(main())
    assert before["status"] == "ok" and before["device"] == "cpu"
    assert before["models"] == [{"name": "ranker", "state": "unloaded"}]
    assert before["model_states"] == {"unloaded": 1}
    assert after.status_code == 200
    (model,) = after.json()["models"]
    assert model["name"] == "ranker" and model["state"] == "loaded"
    assert model["model_class"] == "quasar.examples.ranker:Ranker"
    assert "score_pin_stats@1:embedding" in model["inputs"]
    assert after.json()["model_states"] == {"loaded": 1}


def test_bundles_loaded_at_start_up_show_their_state_before_any_request(scoring_world: ScoringWorld,
                                                                       scoring_redis: str, tmp_path: Path) -> None:
    shutil.copytree(scoring_world.models, tmp_path, dirs_exist_ok=True)
    inputs = tuple(InputColumn(column=c.column, ref=c.ref.replace("@1:", "@3:"), role=c.role)
                   for c in ranker_spec().inputs)
    broken = ranker_spec("stale_ranker", inputs=inputs)
    save_bundle(tmp_path, broken, Ranker(**broken.model_kwargs))
    models = ModelRegistry(tmp_path, scoring_world.resolver)
    states = models.load_all()
    assert [(s.name, s.state) for s in states] == [("ranker", "loaded"), ("stale_ranker", "failed")]

    async def main() -> Any:
        async with serving(scoring_world, scoring_redis, models=models) as (_, client):
            return (await client.get("/healthz")).json()

    health = asyncio.run(main())
    by_name = {m["name"]: m for m in health["models"]}
    assert by_name["ranker"]["state"] == "loaded"
    assert by_name["stale_ranker"]["state"] == "failed"
    assert by_name["stale_ranker"]["error"]["type"] == "BundleError"
    assert "current version of 'score_user_stats' is 1" in by_name["stale_ranker"]["error"]["message"]
    assert health["model_states"] == {"loaded": 1, "failed": 1}


def test_redis_down_is_503_and_the_service_recovers(scoring_world: ScoringWorld, scoring_redis: str,
                                                    redis_server: RedisServer) -> None:
    async def main() -> list[Any]:
        async with serving(scoring_world, scoring_redis) as (_, client):
            ok = await client.post("/v1/score", json=score_body(1, [1, 2]))
            redis_server.stop()
            try:
                down = await client.post("/v1/score", json=score_body(1, [1, 2]))
                health = await client.get("/healthz")
            finally:
                redis_server.start()
            write_world(scoring_world, scoring_redis)
            again = await client.post("/v1/score", json=score_body(1, [1, 2]))
            healthy = await client.get("/healthz")
            metrics = (await client.get("/metrics")).text
            return [ok, down, health, again, healthy, metrics]

    ok, down, health, again, healthy, metrics = asyncio.run(main())
    assert ok.status_code == 200
    assert down.status_code == 503 and down.json()["error"]["type"] == "OnlineUnavailableError"
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    assert again.status_code == 200 and again.json() == ok.json()
    assert healthy.status_code == 200
    assert metric(metrics, "quasar_scorer_requests_total", model="ranker", status="503") == 1


def test_bearer_token_auth(scoring_world: ScoringWorld, scoring_redis: str) -> None:
    async def main() -> list[Any]:
        async with serving(scoring_world, scoring_redis, auth_tokens=("s3cret", "other")) as (_, client):
            return [await client.post("/v1/score", json=score_body(1, [1])),
                    await client.post("/v1/score", json=score_body(1, [1]), headers={"Authorization": "Bearer nope"}),
                    await client.post("/v1/score", json=score_body(1, [1]), headers={"Authorization": "Basic s3cret"}),
                    await client.post("/v1/score", json=score_body(1, [1]), headers={"Authorization": "Bearer s3cret"}),
                    await client.post("/v1/score", json=score_body(1, [1]), headers={"Authorization": "Bearer other"}),
                    await client.get("/healthz")]

    none, wrong, basic, right, other, health = asyncio.run(main())
    for refused in (none, wrong, basic):
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"]["type"] == "Unauthorized"
    assert right.status_code == 200 and other.status_code == 200 and right.json() == other.json()
    assert health.status_code == 200


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_scoring_on_cuda_matches_the_cpu(scoring_world: ScoringWorld, scoring_redis: str) -> None:
    model = scoring_world.reference_model()
    requests = random_requests(scoring_world, 20, seed=5)

    async def main() -> tuple[list[list[float]], dict[str, Any]]:
        async with serving(scoring_world, scoring_redis, device=None, max_wait_ms=10) as (_, client):
            responses = await asyncio.gather(*(client.post("/v1/score", json=score_body(u, p)) for u, p in requests))
            return [r.json()["scores"] for r in responses], (await client.get("/healthz")).json()

    all_scores, health = asyncio.run(main())
    assert health["device"].startswith("cuda") and health["device_name"] == torch.cuda.get_device_name()
    for (user, pins), scores in zip(requests, all_scores, strict=True):
        torch.testing.assert_close(torch.tensor(scores, dtype=torch.float32),
                                   reference_scores(scoring_world, model, user, pins), rtol=1e-4, atol=1e-5)
