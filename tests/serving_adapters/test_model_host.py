"""The model side in a process of its own (``RemoteBackend``): a spawned model host and one listening on a
socket score exactly as the in-process runner, through the scoring app too; a host that dies fails its call and
the next call gets a new one; a feature host without the key is refused."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from fixtures.redis_server import free_port
from fixtures.serving import SCORING_PROJECT, ScoringWorld, score_body, serving
from quasar.online.redis_store import AsyncRedisOnlineStore
from quasar.serving_adapters.model_host import KEY_ENV, RemoteBackend
from quasar.serving_adapters.models import ModelRegistry
from quasar.serving_adapters.runner import ModelRunner
from quasar.serving_adapters.scorer import Scorer
from quasar.signals.errors import ServingError


async def batches_of(world: ScoringWorld, redis_url: str, sizes: list[int]) -> tuple[Any, list[Any]]:
    store = AsyncRedisOnlineStore(redis_url, project=SCORING_PROJECT, socket_timeout=5.0)
    scorer = Scorer(models=ModelRegistry(world.models, world.resolver), store=store, device="cpu", batching=False)
    try:
        model = scorer.models.get("ranker")
        out = []
        for i, n in enumerate(sizes):
            keys = scorer_keys(model, i, n, world)
            out.append((await scorer.fetch(model, keys)).group.batch)
        return model, out
    finally:
        await scorer.close()
        await store.close()


def scorer_keys(model: Any, i: int, n: int, world: ScoringWorld) -> Any:
    from quasar.serving_adapters.features import check_keys
    return check_keys(model, {"user_id": [i % world.users]}, {"pin_id": [(7 * i + j) % world.pins for j in range(n)]})


def test_a_spawned_model_host_scores_as_the_runner_and_comes_back_after_dying(scoring_world: ScoringWorld,
                                                                            scoring_redis: str) -> None:
    model, batches = asyncio.run(batches_of(scoring_world, scoring_redis, [5, 40, 1]))
    expected = ModelRunner(torch.device("cpu"))(model, batches)
    backend = RemoteBackend.spawn(scoring_world.models, device="cpu")
    try:
        got = backend(model, batches)
        assert [torch.equal(a, b) for a, b in zip(got, expected, strict=True)] == [True] * 3
        assert backend.busy_s > 0
        backend._process.kill()                         # the host dies: its call fails, the next one works
        backend._process.join(10)
        with pytest.raises(ServingError, match="model host went away"):
            backend(model, batches)
        again = backend(model, batches[:1])
        assert torch.equal(again[0], expected[0])
    finally:
        backend.close()


def test_the_scoring_app_on_a_model_host_answers_as_in_process(scoring_world: ScoringWorld,
                                                              scoring_redis: str) -> None:
    requests = [(u, [(3 * u + j) % scoring_world.pins for j in range(1 + u % 17)]) for u in range(20)]

    async def answers(**options: Any) -> list[list[float]]:
        async with serving(scoring_world, scoring_redis, **options) as (_, client):
            got = [await client.post("/v1/score", json=score_body(u, p)) for u, p in requests]
            assert [r.status_code for r in got] == [200] * len(requests), [r.text for r in got]
            health = (await client.get("/healthz")).json()
            assert health["device"] == "cpu"
            return [r.json()["scores"] for r in got]

    backend = RemoteBackend.spawn(scoring_world.models, device="cpu")
    remote = asyncio.run(answers(backend=backend))
    local = asyncio.run(answers())
    assert remote == local
    assert not backend.connected                        # the app's scorer stopped its model host


@pytest.fixture
def listening_host(scoring_world: ScoringWorld) -> Iterator[tuple[int, str]]:
    port, key = free_port(), "test-key-123"
    proc = subprocess.Popen([sys.executable, "-m", "quasar.serving_adapters.model_host", "--listen",
                             f"127.0.0.1:{port}", "--models", str(scoring_world.models), "--device", "cpu"],
                            env={**os.environ, KEY_ENV: key}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()                   # it says so once it listens
        assert "listening" in line, line + proc.stdout.read()
        yield port, key
    finally:
        proc.kill()
        proc.wait(10)


def test_a_model_host_on_a_socket_needs_the_key(scoring_world: ScoringWorld, scoring_redis: str,
                                                listening_host: tuple[int, str]) -> None:
    port, key = listening_host
    model, batches = asyncio.run(batches_of(scoring_world, scoring_redis, [3, 9]))
    expected = ModelRunner(torch.device("cpu"))(model, batches)
    backend = RemoteBackend.connect(("127.0.0.1", port), authkey=key.encode(), device="cpu")
    try:
        got = backend(model, batches)
        assert [torch.equal(a, b) for a, b in zip(got, expected, strict=True)] == [True, True]
    finally:
        backend.close()
    with pytest.raises(ServingError, match="cannot be reached"):
        RemoteBackend.connect(("127.0.0.1", port), authkey=b"wrong", device="cpu")
    with pytest.raises(ServingError, match="cannot be reached"):
        RemoteBackend.connect(("127.0.0.1", free_port()), authkey=key.encode(), device="cpu")
