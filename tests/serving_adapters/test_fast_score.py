"""The score route's fast path (``quasar.serving_adapters.service.fast_score``) answers exactly what the FastAPI
route answers: the same status, headers and body for valid requests, request errors and invalid bodies (which
it leaves to FastAPI), and the same request metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import quasar.serving_adapters.service.fast_score as fast_score
from fixtures.prometheus import sample_value
from fixtures.serving import ScoringWorld, serving

#: A header FastAPI reads as JSON too, which the fast path leaves to it: the route's own answer.
ROUTE_JSON = "application/json; charset=utf-8"

BODIES: list[bytes] = [
    b'{"model": "ranker", "entities": {"user_id": [3]}, "candidates": {"pin_id": [1, 2, 3, 199, 5000]}}',
    b'{"model": "ranker", "entities": {"user_id": [39]}, "candidates": {"pin_id": [4]}, "return_features": true}',
    b'{"model": "ranker", "entities": {"user_id": [3]}, "candidates": {"pin_id": []}}',
    b'{"model": "ranker", "entities": {"user_id": [3]}, "candidates": {"pin_id": [1]}, "request_data": {}}',
    b'{"model": "ranker", "entities": {"user_id": [3]}, "candidates": {"pin_id": [1]}, "request_data": {"x": [1]}}',
    b'{"model": "nope", "entities": {"user_id": [3]}, "candidates": {"pin_id": [1]}}',
    b'{"model": "ranker", "entities": {"user_id": [3, 4]}, "candidates": {"pin_id": [1]}}',
    b'{"model": "ranker", "entities": {"user_id": ["3"]}, "candidates": {"pin_id": [1]}}',
    b'{"model": "ranker", "entities": {"uid": [3]}, "candidates": {"pin_id": [1]}}',
    b'{"model": "ranker", "entities": {"user_id": [3]}, "candidates": {"pin_id": [1, "x"]}}',
    b'{"model": "ranker", "entities": {"user_id": [3]}, "candidates": {"pin_id": [1, 2.5]}}',
    b'{"model": "ranker", "entities": {"user_id": [3]}, "candidates": {"pin_id": [true]}}',
    b'{"model": "ranker", "entities": {"user_id": [3]}, "candidates": {"pin_id": [9223372036854775808]}}',
    b'{"model": "ranker", "entities": {"user_id": [3]}, "candidates": {"pin_id": [123456789012345678901234]}}',
    b'{"model": "ranker", "entities": {"user_id": [3]}, "candidates": {"pin_id": [1]}, "extra": 1}',
    b'{"model": "ranker", "entities": {"user_id": [3]}, "candidates": {"pin_id": 1}}',
    b'{"model": "ranker", "entities": {"user_id": [3]}}',
    b'{"model": "", "entities": {"user_id": [3]}, "candidates": {"pin_id": [1]}}',
    b'{"model": "ranker", "entities": {"user_id": [3]}, "candidates": {"pin_id": [1]}, "return_features": 1}',
    b'{"model": "ranker", "entities": {"user_id": [3]}, "candidates": {"pin_id": [1]}, "request_data": {"x": 1}}',
    b'{"model": "ranker", "entities": {"user_id": [NaN]}, "candidates": {"pin_id": [1]}}',
    b'{"model": "ranker", "entities": {"user_id": [3]}, "candidates": {"pin_id": [1]}',
    b'[1, 2]',
    b"",
]


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The fast path's answers."""
    seen: list[str] = []
    real = fast_score.answer_score

    def spy(scorer: Any, body: Any, rid: str) -> Any:
        seen.append(rid)
        return real(scorer, body, rid)

    monkeypatch.setattr(fast_score, "answer_score", spy)
    yield seen


def answers(world: ScoringWorld, redis_url: str, content_type: str) -> tuple[list[tuple[int, dict[str, str], bytes]],
                                                                              str]:
    async def main() -> tuple[list[tuple[int, dict[str, str], bytes]], str]:
        out = []
        async with serving(world, redis_url, batching=False) as (_, client):
            for i, body in enumerate(BODIES):
                response = await client.post("/v1/score", content=body,
                                             headers={"content-type": content_type, "x-request-id": f"r{i}"})
                headers = {k: v for k, v in response.headers.items() if k != "server-timing"}
                out.append((response.status_code, headers, response.content))
            return out, (await client.get("/metrics")).text

    return asyncio.run(main())


def test_the_fast_path_answers_what_the_route_answers(scoring_world: ScoringWorld, scoring_redis: str,
                                                      counted: list[str]) -> None:
    routed, route_metrics = answers(scoring_world, scoring_redis, ROUTE_JSON)
    assert counted == []
    fast, fast_metrics = answers(scoring_world, scoring_redis, "application/json")
    assert fast == routed
    assert [status for status, _, _ in fast][:6] == [200, 200, 200, 200, 422, 404]
    # the valid bodies (requests the scorer answers, its own errors included) took the fast path
    assert counted == [f"r{i}" for i in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12)]
    for status in ("200", "404", "413", "422"):
        for model in ("ranker", "unknown"):
            assert sample_value(fast_metrics, "quasar_scorer_requests_total", model=model, status=status) == \
                sample_value(route_metrics, "quasar_scorer_requests_total", model=model, status=status), (model, status)
