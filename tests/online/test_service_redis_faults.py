"""Redis stopped, restarted and frozen under both running services (the feature service and the scorer), each
served by uvicorn over a real socket, each on an async store with its default timeouts.

While Redis is stopped a request answers 503 (OnlineUnavailableError). After a restart every pooled connection is stale: its first use fails ("Connection closed by server"), and
the store must retry it once on a fresh connection, so no request answers 503 once Redis is back. Under a
frozen Redis (SIGSTOP) requests answer 503 after the read timeout, and the first request after SIGCONT is
200. The times (to the 503, to the first 200) are printed for FAULTS.md (``pytest -s``), never asserted."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from fixtures.feature_service import PROJECT, LiveServer, resolve
from fixtures.feature_service import write_world as write_feature_world
from fixtures.redis_server import RedisServer
from fixtures.serving import SCORING_PROJECT, ScoringWorld, score_body
from fixtures.serving import write_world as write_scoring_world
from quasar.online.redis_store import AsyncRedisOnlineStore

READ = {"entities": {"user_id": [1, 2, 3]}, "features": ["user_engagement:clicks", "user_profile:label"]}
CONCURRENT = 8          # requests in flight at once, so the pool holds several connections


@contextmanager
def feature_service(redis_url: str) -> Iterator[tuple[httpx.Client, Callable[[], httpx.Response], Callable[[], None]]]:
    from quasar.online.service.app import create_app
    app = create_app(resolve=resolve, store=AsyncRedisOnlineStore(redis_url, project=PROJECT), close_store=True)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, lambda: client.post("/v1/features", json=READ), lambda: write_feature_world(redis_url)


@contextmanager
def scoring_service(world: ScoringWorld,
                    redis_url: str) -> Iterator[tuple[httpx.Client, Callable[[], httpx.Response], Callable[[], None]]]:
    from quasar.serving_adapters.models import ModelRegistry
    from quasar.serving_adapters.service import create_scoring_app
    store = AsyncRedisOnlineStore(redis_url, project=SCORING_PROJECT)
    app = create_scoring_app(models=ModelRegistry(world.models, world.resolver), store=store, device="cpu",
                             close_store=True)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, lambda: client.post("/v1/score", json=score_body(1, [1, 2, 3])), \
            lambda: write_scoring_world(world, redis_url)


def burst(call: Callable[[], httpx.Response], n: int = CONCURRENT) -> list[httpx.Response]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: call(), range(n)))


def restart_then_serve(redis_server: RedisServer, call: Callable[[], httpx.Response],
                       rewrite: Callable[[], None]) -> dict[str, Any]:
    """Fill the pool, stop Redis (a request: 503), start it again, then: the first request, the time to the
    first 200, and a burst."""
    rewrite()
    before = burst(call)
    assert {r.status_code for r in before} == {200}, [r.text for r in before]
    redis_server.stop()
    start = time.perf_counter()
    down = call()                                 # every pooled connection is dead, nothing listens
    down_s = time.perf_counter() - start
    redis_server.start()
    rewrite()                                     # the throwaway server keeps nothing across restarts
    back = time.perf_counter()
    first = call()
    first_s = time.perf_counter() - back
    answered, failed = first, 0
    while answered.status_code != 200 and time.perf_counter() - back < 30:
        failed += 1
        answered = call()
    to_200_s = time.perf_counter() - back
    after = burst(call)
    return {"before": before[0], "down": down, "down_s": down_s, "first": first, "first_s": first_s,
            "to_200_s": to_200_s, "failed": failed, "after": after}


def freeze_then_thaw(redis_server: RedisServer, call: Callable[[], httpx.Response]) -> dict[str, Any]:
    """SIGSTOP Redis under the service: a request (503, and how long it took); SIGCONT: the next request."""
    assert redis_server.proc is not None
    pid = redis_server.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.perf_counter()
        frozen = call()
        frozen_s = time.perf_counter() - start
    finally:
        os.kill(pid, signal.SIGCONT)
    thawed = time.perf_counter()
    first = call()
    return {"frozen": frozen, "frozen_s": frozen_s, "first": first, "first_s": time.perf_counter() - thawed}


def check(service: str, restart: dict[str, Any], freeze: dict[str, Any]) -> None:
    print(f"\n{service}: with Redis stopped a request answered {restart['down'].status_code} in "
          f"{restart['down_s'] * 1e3:.1f} ms; after a Redis restart the first request answered {restart['first'].status_code} in "
          f"{restart['first_s'] * 1e3:.1f} ms, the first 200 came after {restart['failed']} failed request(s) "
          f"and {restart['to_200_s'] * 1e3:.1f} ms; frozen Redis answered {freeze['frozen'].status_code} in "
          f"{freeze['frozen_s'] * 1e3:.1f} ms; first request after SIGCONT {freeze['first'].status_code} in "
          f"{freeze['first_s'] * 1e3:.1f} ms")
    assert restart["down"].status_code == 503 and restart["down"].json()["error"]["type"] == "OnlineUnavailableError"
    # a stale pooled connection is retried on a fresh one: nothing answers 503 once Redis is back
    assert restart["first"].status_code == 200, restart["first"].text
    assert [r.status_code for r in restart["after"]] == [200] * CONCURRENT, [r.text for r in restart["after"]]
    assert restart["first"].json() == restart["before"].json()
    # a frozen Redis answers 503 (OnlineUnavailableError), and the service answers again as soon as it thaws
    assert freeze["frozen"].status_code == 503, freeze["frozen"].text
    assert freeze["frozen"].json()["error"]["type"] == "OnlineUnavailableError"
    assert freeze["first"].status_code == 200, freeze["first"].text


@pytest.fixture
def restartable(redis_server: RedisServer, redis_url: str) -> Iterator[RedisServer]:
    yield redis_server
    if redis_server.proc is None:                 # a failed test must not leave the session's server down
        redis_server.start()


PUSH = {"signal": "user_engagement", "rows": [{"user_id": 9, "event_timestamp": "2026-01-01T00:00:00Z",
                                               "ctr_7d": 0.5, "clicks": 4, "dwell": 1.0}]}


def test_the_feature_service_rides_out_a_redis_restart_and_freeze(restartable: RedisServer) -> None:
    with feature_service(restartable.url) as (client, call, rewrite):
        def push() -> httpx.Response:
            return client.post("/v1/push", json=PUSH)

        assert push().status_code == 200                  # the write pool has a connection too
        restart = restart_then_serve(restartable, call, rewrite)
        pushed = push()                                   # a stale write connection, an empty script cache
        freeze = freeze_then_thaw(restartable, call)
        frozen_push = freeze_then_thaw(restartable, push)
    check("feature service", restart, freeze)
    print(f"feature service push: after a restart {pushed.status_code}; frozen Redis answered "
          f"{frozen_push['frozen'].status_code} in {frozen_push['frozen_s'] * 1e3:.1f} ms (the write timeout); "
          f"after SIGCONT {frozen_push['first'].status_code}")
    assert pushed.status_code == 200 and pushed.json()["written"] == 1, pushed.text
    assert frozen_push["frozen"].status_code == 503, frozen_push["frozen"].text
    # the timed-out push may still have been applied when Redis thawed (the command was in its socket):
    # pushing it again writes it, or finds it there already
    assert frozen_push["first"].status_code == 200 and frozen_push["first"].json()["written"] in (0, 1)


def test_the_scorer_rides_out_a_redis_restart_and_freeze(restartable: RedisServer,
                                                        scoring_world: ScoringWorld) -> None:
    with scoring_service(scoring_world, restartable.url) as (_, call, rewrite):
        restart = restart_then_serve(restartable, call, rewrite)
        freeze = freeze_then_thaw(restartable, call)
    check("scorer", restart, freeze)
