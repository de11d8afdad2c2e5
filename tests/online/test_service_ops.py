"""Operations of the feature service: bearer auth, /healthz, /metrics, OpenAPI, a Redis outage under a
running app (503, then recovery without a restart), unexpected errors, and end to end over real sockets
(uvicorn in a thread; ``run_service`` with two worker processes and ``app_from_env`` on a real registry)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.feature_service import (
    FRESH,
    PROJECT,
    LiveServer,
    column,
    iso,
    item_stats,
    live_app,
    serve,
    user_engagement,
    user_engagement_v2,
    user_profile,
    write_world,
)
from fixtures.prometheus import metric
from fixtures.redis_server import RedisServer, free_port
from quasar.online.service.runner import run_service
from quasar.online.service.status import http_status
from quasar.registry.registry import Registry
from quasar.signals.errors import (
    ConfigError,
    NotFoundError,
    OnlineStoreError,
    OnlineUnavailableError,
    QuasarError,
)

READ = {"entities": {"user_id": [1, 2]}, "features": ["user_engagement:clicks"]}
ROOT = Path(__file__).resolve().parents[2]


def test_bearer_auth_guards_every_route_but_healthz(redis_url: str) -> None:
    write_world(redis_url)

    async def main() -> dict[str, Any]:
        async with serve(redis_url, auth_tokens=["s3cret", "other"]) as (_, client):
            good = {"Authorization": "Bearer s3cret"}
            return {
                "none": await client.post("/v1/features", json=READ),
                "wrong": await client.post("/v1/features", json=READ, headers={"Authorization": "Bearer nope"}),
                "scheme": await client.post("/v1/features", json=READ, headers={"Authorization": "Basic s3cret"}),
                "good": await client.post("/v1/features", json=READ, headers=good),
                "second": await client.post("/v1/features", json=READ, headers={"Authorization": "Bearer other"}),
                "push": await client.post("/v1/push", json={"signal": "user_profile", "rows": []}),
                "metrics": await client.get("/metrics"),
                "metrics_ok": await client.get("/metrics", headers=good),
                "docs": await client.get("/docs"),
                "openapi": await client.get("/openapi.json"),
                "health": await client.get("/healthz"),
            }

    r = asyncio.run(main())
    for name in ("none", "wrong", "scheme", "push", "metrics", "docs", "openapi"):
        assert r[name].status_code == 401, name
        assert r[name].headers["www-authenticate"] == "Bearer"
        assert r[name].json()["error"]["type"] == "Unauthorized"
    assert "missing bearer token" in r["none"].json()["error"]["message"]
    assert r["good"].status_code == 200 and r["second"].status_code == 200
    assert column(r["good"].json(), "clicks")["values"] == [10, None]
    assert r["metrics_ok"].status_code == 200
    assert r["health"].status_code == 200
    assert metric(r["metrics_ok"].text, "quasar_feature_requests_total", route="/v1/features", status="401") == 3


def test_healthz_metrics_and_openapi(redis_url: str) -> None:
    write_world(redis_url)

    async def main() -> dict[str, httpx.Response]:
        async with serve(redis_url, max_entities=2) as (_, client):
            await client.post("/v1/features", json=READ)
            await client.post("/v1/features", json=READ)
            await client.post("/v1/features", json={**READ, "features": ["nope"]})
            await client.post("/v1/features", json={"entities": {"user_id": [1, 2, 3]}, "features": ["user_profile"]})
            await client.get("/not-a-route")
            return {"health": await client.get("/healthz"), "metrics": await client.get("/metrics"),
                    "openapi": await client.get("/openapi.json"), "docs": await client.get("/docs")}

    r = asyncio.run(main())
    assert r["health"].status_code == 200 and r["health"].json() == {"status": "ok", "online_store": "ok"}
    text = r["metrics"].text
    assert r["metrics"].headers["content-type"].startswith("text/plain")
    assert metric(text, "quasar_feature_requests_total", route="/v1/features", status="200") == 2
    assert metric(text, "quasar_feature_requests_total", route="/v1/features", status="422") == 1
    assert metric(text, "quasar_feature_requests_total", route="/v1/features", status="413") == 1
    assert metric(text, "quasar_feature_requests_total", route="unmatched", status="404") == 1
    assert metric(text, "quasar_feature_request_seconds_count", route="/v1/features", status="200") == 2
    assert metric(text, "quasar_feature_entity_rows_total") == 4
    paths = r["openapi"].json()["paths"]
    assert {"/v1/features", "/get-online-features", "/v1/push", "/healthz", "/metrics"} <= set(paths)
    assert "FeaturesRequest" in r["openapi"].json()["components"]["schemas"]
    assert r["docs"].status_code == 200 and "swagger" in r["docs"].text.lower()


def test_two_apps_keep_their_own_metrics(redis_url: str) -> None:
    async def main() -> tuple[str, str]:
        async with serve(redis_url) as (_, a), serve(redis_url) as (_, b):
            await a.get("/healthz")
            return (await a.get("/metrics")).text, (await b.get("/metrics")).text

    first, second = asyncio.run(main())
    assert metric(first, "quasar_feature_requests_total", route="/healthz", status="200") == 1
    assert metric(second, "quasar_feature_requests_total", route="/healthz", status="200") == 0


def test_a_redis_outage_answers_503_and_the_app_recovers_without_a_restart(redis_server: RedisServer,
                                                                           redis_url: str) -> None:
    write_world(redis_url)
    push = {"signal": "user_engagement", "rows": [{"user_id": 9, "event_timestamp": iso(FRESH),
                                                   "ctr_7d": 0.5, "clicks": 4, "dwell": 1.0}]}

    async def main() -> dict[str, Any]:
        async with serve(redis_url) as (_, client):
            out: dict[str, Any] = {"before": await client.post("/v1/features", json=READ)}
            redis_server.stop()
            try:
                out["down"] = await client.post("/v1/features", json=READ)
                out["down_push"] = await client.post("/v1/push", json=push)
                out["down_health"] = await client.get("/healthz")
                out["down_bad"] = await client.post("/v1/features", json={**READ, "features": ["nope:x"]})
            finally:
                redis_server.start()
            write_world(redis_url)                      # the throwaway server keeps nothing across restarts
            out["after"] = await client.post("/v1/features", json=READ)
            out["after_push"] = await client.post("/v1/push", json=push)
            out["after_health"] = await client.get("/healthz")
            out["metrics"] = (await client.get("/metrics")).text
            return out

    r = asyncio.run(main())
    assert r["before"].status_code == 200
    for name in ("down", "down_push"):
        assert r[name].status_code == 503, r[name].text
        assert r[name].json()["error"]["type"] == "OnlineUnavailableError"
        assert f"127.0.0.1:{redis_server.port}" in r[name].json()["error"]["message"]
    assert r["down_health"].status_code == 503 and r["down_health"].json()["status"] == "unavailable"
    assert r["down_bad"].status_code == 422                 # bad input is still named while Redis is down
    assert r["after"].status_code == 200 and r["after"].json() == r["before"].json()
    assert r["after_push"].status_code == 200 and r["after_push"].json()["written"] == 1
    assert r["after_health"].json() == {"status": "ok", "online_store": "ok"}
    assert metric(r["metrics"], "quasar_feature_redis_errors_total", type="OnlineUnavailableError") == 2
    assert metric(r["metrics"], "quasar_feature_redis_errors_total", type="health") == 1
    assert metric(r["metrics"], "quasar_feature_requests_total", route="/v1/features", status="503") == 1


def test_unexpected_errors_are_logged_and_answer_500_json(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    def broken(name: str, version: int | None) -> Any:
        raise RuntimeError("registry exploded")

    async def main() -> httpx.Response:
        async with serve(redis_url, resolve=broken, transport_errors=False) as (_, client):
            return await client.post("/v1/features", json=READ)

    response = asyncio.run(main())
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "InternalError"
    assert "registry exploded" not in response.text                # details stay in the log
    assert any("failed unexpectedly" in rec.message and rec.exc_info for rec in caplog.records)


def test_the_status_table() -> None:
    assert http_status(OnlineUnavailableError("down")) == 503
    assert http_status(OnlineStoreError("odd reply")) == 502
    assert http_status(NotFoundError("x")) == 422
    assert http_status(QuasarError("x")) == 500
    assert http_status(ValueError("x")) == 500


def test_end_to_end_over_a_socket(redis_url: str) -> None:
    write_world(redis_url)
    with LiveServer(live_app(redis_url)) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        health = client.get("/healthz")
        features = client.post("/get-online-features", json=READ)
        pushed = client.post("/v1/push", json={"signal": "item_stats", "rows": [
            {"item_id": "c", "event_timestamp": iso(FRESH), "popularity": 0.5}]})
        items = client.post("/v1/features", json={"entities": {"item_id": ["a", "c"]}, "features": ["item_stats"]})
    assert health.status_code == 200
    assert column(features.json(), "clicks")["statuses"] == ["PRESENT", "OUTSIDE_MAX_AGE"]
    assert pushed.json()["written"] == 1
    assert column(items.json(), "popularity")["values"] == [0.1, 0.5]


def test_run_service_with_two_workers_from_the_environment(redis_url: str, tmp_path: Path) -> None:
    """``run_service`` in a child process: two uvicorn workers, each building ``app_from_env`` on a real
    SQLite registry."""
    registry_url = f"sqlite:///{tmp_path / 'registry.db'}"
    with Registry.open(registry_url) as registry:
        registry.register_definitions([user_profile.entity, item_stats.entity],
                                      [user_profile.source, item_stats.source],
                                      [user_profile, user_engagement, item_stats], module="tests.feature_service")
        registry.register_definitions([], [], [user_engagement_v2], module="tests.feature_service")
        assert registry.signal("user_engagement").version == 2
    write_world(redis_url)
    port = free_port()
    env = {**os.environ, "QUASAR_REGISTRY_URL": registry_url, "QUASAR_REDIS_URL": redis_url,
           "QUASAR_PROJECT": PROJECT, "QUASAR_AUTH_TOKENS": "tok", "QUASAR_MAX_ENTITIES": "3",
           "PYTHONPATH": str(ROOT)}
    code = f"from quasar.online.service.runner import run_service; run_service(port={port}, workers=2)"
    child = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert child.poll() is None, child.stdout.read().decode() if child.stdout else ""
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.2)
        auth = {"Authorization": "Bearer tok"}
        with httpx.Client(base_url=url, headers=auth, timeout=10) as client:
            answers = [client.post("/v1/features", json=READ) for _ in range(8)]
            too_many = client.post("/v1/features", json={**READ, "entities": {"user_id": [1, 2, 3, 4]}})
            unknown = client.post("/v1/features", json={**READ, "features": ["ghost:x"]})
        unauthorized = httpx.post(f"{url}/v1/features", json=READ)
    finally:
        child.terminate()
        child.wait(timeout=30)
    assert all(a.status_code == 200 for a in answers)
    assert column(answers[0].json(), "clicks")["values"] == [10, None]
    assert too_many.status_code == 413
    assert unknown.status_code == 422 and "'ghost'" in unknown.json()["error"]["message"]
    assert unauthorized.status_code == 401


def test_run_service_checks_its_arguments() -> None:
    with pytest.raises(ConfigError, match="workers"):
        run_service(workers=0)
    with pytest.raises(ConfigError, match="module:function"):
        run_service("quasar.online.service.app")
