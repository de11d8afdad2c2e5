"""Limits and bad input of the feature service: a body over the size limit answers 413 before anything parses
it (from its Content-Length, or as a chunked body's bytes pass the limit), malformed JSON answers one line
naming the position and what is wrong, a NaN fails a between-expectation on push, and an error nobody
expected answers a JSON 500 (never plain text), counted in the metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pyarrow as pa
import pytest

from fixtures.feature_service import LiveServer, live_app, serve, write_world
from fixtures.feature_service import resolve as world_resolve
from fixtures.prometheus import metric
from quasar.signals import Entity, Float64, Source, signal
from quasar.signals.errors import ConfigError
from quasar.signals.signal import Signal

READ = {"entities": {"user_id": [1, 2]}, "features": ["user_engagement:clicks"]}
LIMIT = 64 * 1024


def push_body(rows: int) -> dict[str, Any]:
    return {"signal": "user_engagement", "rows": [
        {"user_id": 1000 + i, "event_timestamp": "2026-01-01T00:00:00Z", "ctr_7d": 0.5, "clicks": 1, "dwell": 1.0}
        for i in range(rows)]}


async def chunks(body: bytes, size: int = 8192) -> AsyncIterator[bytes]:
    for lo in range(0, len(body), size):
        yield body[lo:lo + size]


def test_a_body_over_the_limit_answers_413_before_it_is_parsed(redis_url: str) -> None:
    write_world(redis_url)
    big = json.dumps(push_body(2_000)).encode()
    assert len(big) > LIMIT
    headers = {"content-type": "application/json"}

    async def main() -> dict[str, httpx.Response]:
        async with serve(redis_url, max_body_bytes=LIMIT) as (_, client):
            return {
                "sized": await client.post("/v1/push", content=big, headers=headers),
                "chunked": await client.post("/v1/push", content=chunks(big), headers=headers),
                "features": await client.post("/v1/features", content=b" " * (LIMIT + 1), headers=headers),
                "small": await client.post("/v1/push", json=push_body(3)),
                "read": await client.post("/v1/features", json=READ),
                "metrics": await client.get("/metrics"),
            }

    r = asyncio.run(main())
    for name in ("sized", "chunked", "features"):
        assert r[name].status_code == 413, (name, r[name].text)
        error = r[name].json()["error"]
        assert error["type"] == "RequestTooLarge"
        assert f"over the limit of {LIMIT} bytes" in error["message"], error
    assert "Content-Length" in r["sized"].json()["error"]["message"]
    assert r["small"].status_code == 200 and r["small"].json()["written"] == 3
    assert r["read"].status_code == 200
    assert metric(r["metrics"].text, "quasar_feature_requests_total", route="/v1/push", status="413") == 2


def test_a_50_mb_body_and_a_100k_row_push_are_refused_at_once_over_a_socket(redis_url: str) -> None:
    """The default limit (a few MB) over a real socket; the times are printed, not asserted."""
    write_world(redis_url)
    huge = b'{"entities": {"user_id": [' + b"1, " * (50 * 1024 * 1024 // 3) + b'1]}, "features": ["x"]}'
    rows = json.dumps(push_body(100_000)).encode()
    headers = {"content-type": "application/json"}
    with LiveServer(live_app(redis_url)) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        start = time.perf_counter()
        refused = client.post("/v1/features", content=huge, headers=headers)
        huge_s = time.perf_counter() - start
        start = time.perf_counter()
        pushed = client.post("/v1/push", content=rows, headers=headers)
        rows_s = time.perf_counter() - start
        after = client.post("/v1/features", json=READ)
    print(f"\n50 MB body: {refused.status_code} in {huge_s * 1e3:.0f} ms; 100k-row push ({len(rows) / 1e6:.1f} MB): "
          f"{pushed.status_code} in {rows_s * 1e3:.0f} ms")
    assert refused.status_code == 413 and refused.json()["error"]["type"] == "RequestTooLarge"
    assert pushed.status_code == 413 and pushed.json()["error"]["type"] == "RequestTooLarge"
    assert after.status_code == 200


def test_the_body_limit_must_be_positive(redis_url: str) -> None:
    async def main() -> None:
        async with serve(redis_url, max_body_bytes=0):
            pass

    with pytest.raises(ConfigError, match="max_body_bytes"):
        asyncio.run(main())


@pytest.mark.parametrize(("body", "message"), [
    (b'{"entities": {"user_id": [1 2]}, "features": ["x"]}',
     "body is not valid JSON: Expecting ',' delimiter at line 1 column 29"),
    (b'{"entities":\n  {"user_id": [1]},\n  "features": ["x",]}',
     "body is not valid JSON: Expecting value at line 3 column 20"),
    (b'{"entities": ', "body is not valid JSON: Expecting value at line 1 column 14"),
])
def test_malformed_json_answers_one_line_naming_the_position(redis_url: str, body: bytes, message: str) -> None:
    async def main() -> httpx.Response:
        async with serve(redis_url) as (_, client):
            return await client.post("/v1/features", content=body, headers={"content-type": "application/json"})

    response = asyncio.run(main())
    assert response.status_code == 422
    assert response.json()["error"] == {"type": "RequestError", "message": message}


_user = Entity(name="user", join_key="user_id")
_events = Source.parquet(name="svc_events", path="data/events/", timestamp="ts")


@signal(entity=_user, source=_events, online=True, name="bounded_ctr", features={"ctr": Float64()},
        expectations=[{"type": "expect_column_values_to_be_between",
                       "kwargs": {"column": "ctr", "min_value": 0, "max_value": 1}}])
def bounded_ctr(batch: pa.Table) -> pa.Table:
    """A pushed signal whose ctr must lie in [0, 1]."""
    return batch


def _resolve(name: str, version: int | None) -> tuple[Signal, int]:
    return (bounded_ctr, 1) if name == "bounded_ctr" else world_resolve(name, version)


def test_a_nan_fails_a_between_expectation_on_push(redis_url: str) -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC).isoformat()

    def body(value: str) -> bytes:
        return (f'{{"signal": "bounded_ctr", "rows": [{{"user_id": 1, "event_timestamp": "{when}", '
                f'"ctr": {value}}}]}}').encode()

    async def main() -> list[httpx.Response]:
        async with serve(redis_url, resolve=_resolve) as (_, client):
            headers = {"content-type": "application/json"}
            return [await client.post("/v1/push", content=body(v), headers=headers)
                    for v in ("NaN", "Infinity", "0.5", "null")]

    nan, inf, fine, null = asyncio.run(main())
    for refused in (nan, inf):
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["type"] == "ValidationFailedError"
        assert "expect_column_values_to_be_between(column=ctr" in refused.json()["error"]["message"]
    assert fine.status_code == 200 and fine.json()["written"] == 1
    assert null.status_code == 200                         # a missing value is not judged by between


def test_an_unexpected_error_anywhere_answers_json_500_counted_in_the_metrics(redis_url: str) -> None:
    def broken(name: str, version: int | None) -> Any:
        raise OSError(36, "File name too long")

    async def main() -> tuple[httpx.Response, httpx.Response]:
        async with serve(redis_url, resolve=broken, transport_errors=False) as (_, client):
            return await client.post("/v1/features", json=READ), await client.get("/metrics")

    response, metrics = asyncio.run(main())
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    assert response.json()["error"] == {"type": "InternalError",
                                        "message": "unexpected OSError; the service log has the details"}
    assert metric(metrics.text, "quasar_feature_requests_total", route="/v1/features", status="500") == 1
