"""The feature reads' fast path (``quasar.online.service.fast_path``) answers exactly what FastAPI's routes
answer: the same status, headers and body for valid requests, request errors, invalid bodies (which it leaves
to FastAPI) and Feast's routes; its requests are counted under their route in the metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import quasar.online.service.fast_path as fast_path
from fixtures.feature_service import serve, write_world

#: A header FastAPI reads as JSON too, which the fast path leaves to it: the routes' own answer.
ROUTE_JSON = "application/json; charset=utf-8"

BODIES: list[tuple[str, bytes]] = [
    ("/v1/features", b'{"entities": {"user_id": [1, 2, 3, 99]}, "features": ["user_profile", "user_engagement@1"]}'),
    ("/v1/features", b'{"entities": {"user_id": [1]}, "features": ["user_engagement:ctr_7d"], '
                     b'"full_feature_names": true}'),
    ("/v1/features", b'{"entities": {"item_id": ["a", "zz"]}, "features": ["item_stats"], "request_data": null}'),
    ("/v1/features", b'{"entities": {"user_id": [1, 2]}, "features": ["user_profile:label", "item_stats"]}'),
    ("/v1/features", b'{"entities": {"user_id": [1]}, "features": ["no_such_signal"]}'),
    ("/v1/features", b'{"entities": {"user_id": ["1"]}, "features": ["user_profile"]}'),
    ("/v1/features", b'{"entities": {"user_id": [1.5]}, "features": ["user_profile"]}'),
    ("/v1/features", b'{"entities": {"user_id": [12345678901234567890123]}, "features": ["user_profile"]}'),
    ("/v1/features", b'{"entities": {"user_id": [-9223372036854775809]}, "features": ["user_profile"]}'),
    ("/v1/features", b'{"entities": {"user_id": [1, 2, 3, 4]}, "features": ["user_profile"]}'),
    ("/v1/features", b'{"entities": {"user_id": [1]}, "features": ["offline_only"]}'),
    ("/v1/features", b'{"entities": {"user_id": [1]}, "features": []}'),
    ("/v1/features", b'{"entities": {"user_id": [1]}, "feature_service": "nope"}'),
    ("/v1/features", b'{"entities": {"user_id": [1]}, "features": ["user_profile"], "feature_service": "x"}'),
    ("/v1/features", b'{"entities": {"user_id": [1]}}'),
    ("/v1/features", b'{"entities": {"user_id": [1]}, "features": ["user_profile"], "extra": 1}'),
    ("/v1/features", b'{"entities": {"user_id": 1}, "features": ["user_profile"]}'),
    ("/v1/features", b'{"entities": {"user_id": [1]}, "features": "user_profile"}'),
    ("/v1/features", b'{"entities": {"user_id": [1]}, "features": ["user_profile"], "full_feature_names": 1}'),
    ("/v1/features", b'{"entities": {"user_id": [NaN]}, "features": ["user_profile"]}'),
    ("/v1/features", b'{"entities": {"user_id": [1]}, "features": ["user_profile"]'),
    ("/v1/features", b'[1, 2]'),
    ("/v1/features", b""),
    ("/get-online-features", b'{"entities": {"user_id": [1, 2, 99]}, "features": ["user_profile:seen_at", '
                             b'"user_engagement:ctr_7d"]}'),
    ("/get-online-features", b'{"entities": {"user_id": ["1", 2]}, "features": ["user_engagement@2:dwell"], '
                             b'"include_feature_view_version_metadata": true, "ignored": {"a": 1}}'),
    ("/get-online-features", b'{"entities": {"user_id": [1]}, "features": ["nope:x"]}'),
    ("/get-online-features", b'{"entities": {"user_id": [1]}, "features": ["user_profile:nope"]}'),
    ("/get-online-features", b'{"entities": {"user_id": [1]}, "features": ["user_engagement@7:ctr_7d"]}'),
    ("/get-online-features", b'{"entities": {"user_id": [1]}, "feature_service": "nope"}'),
    ("/get-online-features", b'{"entities": {"user_id": [1]}, "features": ["user_profile:label"], '
                             b'"full_feature_names": "true"}'),
    ("/get-online-features", b'{"entities": {"user_id": [1]}, "features": null}'),
    ("/get-online-features", b'{"features": ["user_profile:label"]}'),
]


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The fast path's answers, by path."""
    seen: list[str] = []
    for name in ("answer_features", "answer_feast_features"):
        real = getattr(fast_path, name)

        def spy(ctx: Any, body: Any, rid: str, real: Any = real, name: str = name) -> Any:
            seen.append(name)
            return real(ctx, body, rid)

        monkeypatch.setattr(fast_path, name, spy)
    yield seen


def answers(redis_url: str, content_type: str) -> list[tuple[int, dict[str, str], bytes]]:
    async def main() -> list[tuple[int, dict[str, str], bytes]]:
        out = []
        async with serve(redis_url, max_entities=3) as (_, client):
            for i, (path, body) in enumerate(BODIES):
                response = await client.post(path, content=body, headers={"content-type": content_type,
                                                                           "x-request-id": f"r{i}"})
                headers = dict(response.headers)
                out.append((response.status_code, headers, response.content))
        return out

    return asyncio.run(main())


def test_the_fast_path_answers_what_the_routes_answer(redis_url: str, counted: list[str]) -> None:
    write_world(redis_url)
    routes = answers(redis_url, ROUTE_JSON)
    assert counted == []
    fast = answers(redis_url, "application/json")
    for (path, body), got, want in zip(BODIES, fast, routes, strict=True):
        assert got == want, (path, body)
    assert {s for s, _, _ in fast} >= {200, 404, 413, 422}
    assert counted.count("answer_features") >= 10 and counted.count("answer_feast_features") >= 5


def test_fast_requests_are_counted_under_their_route(redis_url: str, counted: list[str]) -> None:
    write_world(redis_url)

    async def main() -> str:
        async with serve(redis_url) as (_, client):
            for _ in range(3):
                response = await client.post("/v1/features", content=BODIES[0][1],
                                             headers={"content-type": "application/json"})
                assert response.status_code == 200
            return (await client.get("/metrics")).text

    metrics = asyncio.run(main())
    assert counted == ["answer_features"] * 3
    assert 'quasar_feature_requests_total{route="/v1/features",status="200"} 3.0' in metrics


def test_a_chunked_body_goes_to_the_route(redis_url: str, counted: list[str]) -> None:
    write_world(redis_url)

    async def chunks() -> Any:
        yield BODIES[0][1][:10]
        yield BODIES[0][1][10:]

    async def main() -> Any:
        async with serve(redis_url) as (_, client):
            return await client.post("/v1/features", content=chunks(), headers={"content-type": "application/json"})

    response = asyncio.run(main())
    assert response.status_code == 200 and counted == []
    assert response.json()["metadata"]["feature_names"][0] == "user_id"
