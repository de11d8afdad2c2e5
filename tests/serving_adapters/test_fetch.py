"""The scorer's coalesced feature fetch and its candidate cache, against a real redis-server: concurrent
requests share round trips and answer exactly as the same requests one at a time; the cache is bounded, expires,
and answers what an uncached scorer answers (except, within its TTL, for values written since)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import redis
import torch

from fixtures.prometheus import sample_value
from fixtures.serving import SCORING_PROJECT, ScoringWorld, score_body, score_pin_stats, serving
from quasar.online.redis_store import AsyncRedisOnlineStore, RedisOnlineStore
from quasar.serving_adapters.cache import MISS, CacheConfig, RecordCache
from quasar.serving_adapters.models import ModelRegistry
from quasar.serving_adapters.scorer import Scorer
from quasar.signals.errors import ServingError


def requests_of(world: ScoringWorld, count: int, seed: int) -> list[tuple[int, list[int]]]:
    """(user, pins) with unknown users and pins, stale rows and repeated pins among them."""
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(0, world.users)), [int(p) for p in rng.integers(0, world.pins, int(rng.integers(1, 30)))])
            for _ in range(count)]


def metric(text: str, name: str, **labels: str) -> float:
    value = sample_value(text, name, **labels)
    assert value is not None, (name, labels)
    return value


async def answers(client: Any, requests: list[tuple[int, list[int]]], *, concurrent: bool) -> list[dict[str, Any]]:
    bodies = [{**score_body(u, p), "return_features": True} for u, p in requests]
    if concurrent:
        responses = await asyncio.gather(*(client.post("/v1/score", json=b) for b in bodies))
    else:
        responses = [await client.post("/v1/score", json=b) for b in bodies]
    assert [r.status_code for r in responses] == [200] * len(bodies), [r.text for r in responses]
    return [r.json() for r in responses]


def assert_same_answers(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    for a, b in zip(got, expected, strict=True):
        assert a["features"] == b["features"]             # every value, status and event time the model read
        # scored in one bigger model call, whose matmul blocking may change the last bit
        torch.testing.assert_close(torch.tensor(a["scores"]), torch.tensor(b["scores"]), rtol=1e-5, atol=1e-6)


def test_concurrent_requests_share_round_trips_and_answer_as_serial_ones(scoring_world: ScoringWorld,
                                                                         scoring_redis: str) -> None:
    requests = requests_of(scoring_world, 30, seed=11)

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]], str, str]:
        async with serving(scoring_world, scoring_redis) as (_, client):
            serial = await answers(client, requests, concurrent=False)
            serial_metrics = (await client.get("/metrics")).text
        async with serving(scoring_world, scoring_redis) as (_, client):
            together = await answers(client, requests, concurrent=True)
            return serial, together, serial_metrics, (await client.get("/metrics")).text

    serial, together, serial_metrics, metrics = asyncio.run(main())
    assert_same_answers(together, serial)
    # one at a time: a round trip per request; all at once: the requests that waited shared the next one
    assert metric(serial_metrics, "quasar_scorer_fetch_requests_count", model="ranker") == 30
    fetches = metric(metrics, "quasar_scorer_fetch_requests_count", model="ranker")
    assert metric(metrics, "quasar_scorer_fetch_requests_sum", model="ranker") == 30
    assert fetches < 30
    assert metric(metrics, "quasar_scorer_batch_requests_sum", model="ranker") == 30
    assert metric(metrics, "quasar_scorer_batch_rows_sum", model="ranker") == sum(len(p) for _, p in requests)


def test_coalesced_input_tables_equal_the_serial_ones(scoring_world: ScoringWorld, scoring_redis: str) -> None:
    """The model's input rows of each request, read with others, are the rows it reads alone (Arrow-equal)."""
    requests = requests_of(scoring_world, 12, seed=12)

    async def main() -> tuple[list[pa.Table], list[pa.Table], int]:
        store = AsyncRedisOnlineStore(scoring_redis, project=SCORING_PROJECT, socket_timeout=5.0)
        scorer = Scorer(models=ModelRegistry(scoring_world.models, scoring_world.resolver), store=store, device="cpu")
        try:
            alone = [await scorer.features("ranker", {"user_id": [u]}, {"pin_id": p}) for u, p in requests]
            together = await asyncio.gather(*(scorer.features("ranker", {"user_id": [u]}, {"pin_id": p})
                                              for u, p in requests))
            count = sample_value(scorer.metrics.render().decode(), "quasar_scorer_fetch_requests_count",
                                 model="ranker")
        finally:
            await scorer.close()
            await store.close()
        return alone, list(together), int(count or 0)

    alone, together, fetches = asyncio.run(main())
    for a, b in zip(alone, together, strict=True):
        assert a.equals(b)
    assert fetches < 2 * len(requests)


def test_batching_off_fetches_each_request_alone(scoring_world: ScoringWorld, scoring_redis: str) -> None:
    requests = requests_of(scoring_world, 10, seed=13)

    async def main() -> str:
        async with serving(scoring_world, scoring_redis, batching=False) as (_, client):
            await answers(client, requests, concurrent=True)
            return (await client.get("/metrics")).text

    metrics = asyncio.run(main())
    assert metric(metrics, "quasar_scorer_fetch_requests_count", model="ranker") == 10
    assert metric(metrics, "quasar_scorer_fetch_requests_bucket", model="ranker", le="1.0") == 10


# --- the cache ------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_record_cache_is_bounded_least_recently_used_first_and_expires() -> None:
    clock = Clock()
    cache = RecordCache(CacheConfig(enabled=True, max_entries=3, ttl_s=2.0), clock=clock)
    cache.put_many(["a", "b", "c"], [1, 2, 3])
    assert cache.get_many(["a"]) == [1]                   # a is now the most recently used
    cache.put_many(["d"], [4])
    assert len(cache) == 3 and cache.evictions == 1
    assert cache.get_many(["a", "b", "c", "d"]) == [1, MISS, 3, 4]
    clock.now += 1.9
    assert cache.get_many(["a"]) == [1]                   # a hit does not extend the TTL
    clock.now += 0.1
    assert cache.get_many(["a", "c", "d"]) == [MISS, MISS, MISS]
    assert len(cache) == 0
    assert (cache.hits, cache.misses) == (5, 4)
    cache.put_many(["e"], [None])                         # "nothing stored" is cached as such
    assert cache.get_many(["e"]) == [None]


@pytest.mark.parametrize("config", [{"max_entries": 0}, {"max_entries": 1.5}, {"ttl_s": 0}, {"ttl_s": -1},
                                    {"ttl_s": True}])
def test_cache_config_is_checked(config: dict[str, Any]) -> None:
    with pytest.raises(ServingError, match="cache"):
        CacheConfig(enabled=True, **config)


def test_cached_answers_equal_uncached_ones_until_the_ttl_then_see_new_writes(scoring_world: ScoringWorld,
                                                                            scoring_redis: str) -> None:
    requests = requests_of(scoring_world, 16, seed=14)
    requests += requests[:8]                              # asked again: from the cache
    clock = Clock()
    pins = sorted({p for _, ps in requests for p in ps if p < scoring_world.pins - 10})[:20]

    def rewrite_pins() -> None:
        """New values for some stored pins, newer than what is stored."""
        rows = scoring_world.pin_rows
        keys = rows.column("pin_id").to_pylist()
        picked = rows.take(pa.array([keys.index(p) for p in pins]))
        times = [t + timedelta(seconds=1) for t in picked.column("event_timestamp").to_pylist()]
        picked = picked.set_column(1, "event_timestamp", pa.array(times, pa.timestamp("us", tz="UTC")))
        picked = picked.set_column(2, "ctr", pa.array([0.5] * len(pins), pa.float64()))
        with RedisOnlineStore(scoring_redis, project=SCORING_PROJECT) as store:
            store.write(score_pin_stats, 1, picked)

    server = redis.Redis.from_url(scoring_redis)

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with serving(scoring_world, scoring_redis, cache=CacheConfig(enabled=True, max_entries=10_000,
                                                                          ttl_s=5.0)) as (app, cached):
            scorer = app.state.scorer
            scorer.cache.clock = clock
            async with serving(scoring_world, scoring_redis) as (_, fresh):
                server.config_resetstat()
                out["cached"] = await answers(cached, requests, concurrent=False)
                out["hmgets"] = server.info("commandstats")["cmdstat_hmget"]["calls"]
                out["fresh"] = await answers(fresh, requests, concurrent=False)
                out["metrics"] = (await cached.get("/metrics")).text
                rewrite_pins()
                clock.now += 4.9                          # within the TTL: the old values, as documented
                out["within"] = await answers(cached, requests, concurrent=False)
                clock.now += 0.2                          # past it: read again
                out["after"] = await answers(cached, requests, concurrent=False)
                out["fresh_after"] = await answers(fresh, requests, concurrent=False)
                out["entries"] = len(scorer.cache)
        return out

    got = asyncio.run(main())
    assert_same_answers(got["cached"], got["fresh"])
    metrics = got["metrics"]
    hits = metric(metrics, "quasar_scorer_cache_lookups_total", model="ranker", result="hit")
    misses = metric(metrics, "quasar_scorer_cache_lookups_total", model="ranker", result="miss")
    asked = sum(len(p) for _, p in requests)
    assert hits + misses == asked and hits >= sum(len(p) for _, p in requests[16:])
    # Redis saw one HMGET per request (its user) and one per distinct pin: each pin was read once
    assert got["hmgets"] == len(requests) + len({p for _, ps in requests for p in ps})
    assert_same_answers(got["within"], got["cached"])                   # served from the cache, as filled
    assert got["after"] != got["within"]                                # the rewritten pins changed scores
    assert_same_answers(got["after"], got["fresh_after"])
    assert 0 < got["entries"] <= 10_000


def test_the_scorers_cache_stays_within_its_bound(scoring_world: ScoringWorld, scoring_redis: str) -> None:
    requests = requests_of(scoring_world, 20, seed=15)

    async def main() -> tuple[int, int, list[dict[str, Any]], list[dict[str, Any]]]:
        async with serving(scoring_world, scoring_redis,
                           cache=CacheConfig(enabled=True, max_entries=25)) as (app, client):
            cached = await answers(client, requests, concurrent=True)
            cache = app.state.scorer.cache
            size, evicted = len(cache), cache.evictions
        async with serving(scoring_world, scoring_redis) as (_, client):
            fresh = await answers(client, requests, concurrent=True)
        return size, evicted, cached, fresh

    size, evicted, cached, fresh = asyncio.run(main())
    assert size == 25 and evicted > 0
    assert_same_answers(cached, fresh)


def test_the_cache_is_off_by_default(scoring_world: ScoringWorld, scoring_redis: str) -> None:
    async def main() -> Any:
        async with serving(scoring_world, scoring_redis) as (app, client):
            await answers(client, requests_of(scoring_world, 2, seed=16), concurrent=False)
            return app.state.scorer.cache, (await client.get("/metrics")).text

    cache, metrics = asyncio.run(main())
    assert cache is None
    assert sample_value(metrics, "quasar_scorer_cache_lookups_total", model="ranker", result="hit") is None
