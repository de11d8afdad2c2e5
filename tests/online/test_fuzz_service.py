"""Fuzz both services against their own OpenAPI schemas (schemathesis): no input answers 5xx.

Each app runs under uvicorn in a thread (one event loop for its Redis connections) over a real Redis holding
its test world: the feature service, and the scorer with the test ranker bundle. Each operation gets a
bounded number of generated requests, valid and invalid (schemathesis' positive and negative modes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.case import Case

from fixtures.feature_service import LiveServer, live_app, write_world
from fixtures.serving import SCORING_PROJECT, ScoringWorld
from fixtures.serving import write_world as write_scoring_world

NOWHERE = "redis://127.0.0.1:9/0"


def scoring_app(redis_url: str, models: Path, world: ScoringWorld | None = None):  # type: ignore[no-untyped-def]
    from quasar.online.redis_store import AsyncRedisOnlineStore
    from quasar.serving_adapters.models import ModelRegistry, static_resolver
    from quasar.serving_adapters.service import create_scoring_app
    resolver = world.resolver if world is not None else static_resolver({})
    return create_scoring_app(models=ModelRegistry(models, resolver), device="cpu", close_store=True,
                              store=AsyncRedisOnlineStore(redis_url, project=SCORING_PROJECT))


# the schemas are the apps' own; a store that is never used does not connect, so nothing runs at import
schema = schemathesis.openapi.from_dict(live_app(NOWHERE).openapi())
scorer_schema = schemathesis.openapi.from_dict(scoring_app(NOWHERE, Path("models")).openapi())


@pytest.fixture(scope="module")
def live_service(redis_server) -> Iterator[str]:  # type: ignore[no-untyped-def]
    if redis_server.proc is None:
        redis_server.start()
    write_world(redis_server.url)
    with LiveServer(live_app(redis_server.url, max_entities=50)) as server:
        yield server.url


@pytest.fixture(scope="module")
def live_scorer(redis_server, scoring_world: ScoringWorld) -> Iterator[str]:  # type: ignore[no-untyped-def]
    if redis_server.proc is None:
        redis_server.start()
    write_scoring_world(scoring_world, redis_server.url)
    with LiveServer(scoring_app(redis_server.url, scoring_world.models, scoring_world)) as server:
        yield server.url


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_answers_5xx(case: Case, live_service: str) -> None:
    response = case.call(base_url=live_service, timeout=10)
    case.validate_response(response, checks=[not_a_server_error])


@scorer_schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_answers_5xx_from_the_scorer(case: Case, live_scorer: str) -> None:
    response = case.call(base_url=live_scorer, timeout=10)
    case.validate_response(response, checks=[not_a_server_error])
