"""Fuzz the feature service against its own OpenAPI schema (schemathesis): no input answers 5xx.

The app runs under uvicorn in a thread (one event loop for its Redis connections) over a real Redis holding
the test world; each operation gets a bounded number of generated requests, valid and invalid."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.case import Case

from fixtures.feature_service import LiveServer, live_app, write_world

# the schema is the app's own; a store that is never used does not connect, so nothing runs at import
schema = schemathesis.openapi.from_dict(live_app("redis://127.0.0.1:9/0").openapi())


@pytest.fixture(scope="module")
def live_service(redis_server) -> Iterator[str]:  # type: ignore[no-untyped-def]
    if redis_server.proc is None:
        redis_server.start()
    write_world(redis_server.url)
    with LiveServer(live_app(redis_server.url, max_entities=50)) as server:
        yield server.url


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_answers_5xx(case: Case, live_service: str) -> None:
    response = case.call(base_url=live_service, timeout=10)
    case.validate_response(response, checks=[not_a_server_error])
