"""Request-time signals and feature services through ``quasar serve``: the values ``/v1/features`` answers over
a socket and in process, and ``Platform.online_features``, equal ``Platform.training_dataset`` on the request's
spine bit for bit, in row mode (1 entity) and batch mode (100 entities), by feature list and by the ``ranker``
service; a failing request-time function, a missing or mistyped request field answer 4xx naming it; a logging
service's answers land in its feature log under the request's ``X-Request-ID``.

The world is ``fixtures.request_world``: stored ``user_stats`` and ``pin_stats``, request-time ``ctr_boost``
(row and vectorised) and ``pin_score`` (reads ``ctr_boost``), the service ``ranker`` logging every vector.
"""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.feature_service import LiveServer
from fixtures.request_world import World, build_world, spine_of

FEATURES = ["user_stats:clicks", "user_stats:ctr", "ctr_boost", "pin_score:score"]
RANKER = ["clicks", "boost", "long_query", "score"]           # what the service ``ranker`` answers
SIZES = (1, 100)                                              # row mode, batch mode


def bits(value: Any) -> Any:
    """A value compared exactly: floats by their IEEE-754 bytes (so -0.0 != 0.0 and NaN == NaN), lists item
    by item, None as None."""
    if isinstance(value, float):
        return ("f", struct.pack("<d", value))
    if isinstance(value, list):
        return [bits(v) for v in value]
    return value


def columns(body: dict[str, Any]) -> dict[str, list[Any]]:
    """A features answer as name -> values."""
    return {n: r["values"] for n, r in zip(body["metadata"]["feature_names"], body["results"], strict=True)}


def offline(world: World, request: dict[str, list[Any]], features: str | list[str], names: list[str],
            at: datetime) -> dict[str, list[Any]]:
    table = world.platform.training_dataset(spine_of(request, at), features)
    return {n: table.column(n).to_pylist() for n in names}


def same(got: dict[str, list[Any]], want: dict[str, list[Any]], where: str) -> None:
    assert set(want) <= set(got), (where, list(got))
    for name, values in want.items():
        assert bits(got[name]) == bits(values), (where, name, got[name], values)


@pytest.fixture
def world(project_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    from quasar.services import PROJECT_ENV

    made = build_world(tmp_path / "rt")
    monkeypatch.setenv(PROJECT_ENV, str(made.root))
    return made


def in_process(app: Any, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            return [await client.post("/v1/features", json=b) for b in bodies]
    return asyncio.run(main())


def test_online_values_equal_the_training_dataset_bit_for_bit(world: World) -> None:
    from quasar.online.feature_log_tables import LogTables
    from quasar.services import feature_app

    requests = {n: world.request(n) for n in SIZES}
    names = ["clicks", "ctr", "boost", "long_query", "score"]
    bodies: list[tuple[str, int, dict[str, Any], list[str]]] = []
    for n, req in requests.items():
        keys = {"user_id": req["user_id"], "pin_id": req["pin_id"]}
        fields = {"position": req["position"], "query": req["query"]}
        bodies += [("list, request_data", n, {"entities": keys, "features": FEATURES, "request_data": fields}, names),
                   ("list, Feast style", n, {"entities": {**keys, **fields}, "features": FEATURES}, names),
                   ("service", n, {"entities": keys, "feature_service": "ranker", "request_data": fields}, RANKER)]
    with LiveServer(feature_app()) as server:
        over_http = [httpx.post(f"{server.url}/v1/features", json=b, headers={"X-Request-ID": f"req-{i}"})
                     for i, (_, _, b, _) in enumerate(bodies)]
    at = datetime.now(UTC)
    ours = in_process(feature_app(), [b for _, _, b, _ in bodies])
    for i, ((what, n, body, shown), http, local) in enumerate(zip(bodies, over_http, ours, strict=True)):
        assert http.status_code == local.status_code == 200, (what, http.text, local.text)
        assert http.headers["x-request-id"] == f"req-{i}"
        assert len(local.headers["x-request-id"]) == 32           # a fresh uuid4 hex when none was sent
        features: str | list[str] = "ranker" if "feature_service" in body else FEATURES
        want = offline(world, requests[n], features, shown, at)
        assert http.json()["metadata"]["feature_names"] == ["user_id", "pin_id", *shown], what
        same(columns(http.json()), want, f"HTTP {what} x{n}")
        same(columns(local.json()), want, f"in-process {what} x{n}")
        platform = world.platform.online_features(
            {"user_id": requests[n]["user_id"], "pin_id": requests[n]["pin_id"]}, features,
            request_data={"position": requests[n]["position"], "query": requests[n]["query"]})
        same(columns(platform), want, f"Platform {what} x{n}")
    assert any(v is None for v in want["boost"]) and any(v is not None for v in want["score"])   # both kinds seen

    # the server flushed its log on shutdown: every ranker answer is there under its request id
    logged = LogTables(world.platform.catalog, world.platform.config.offline.namespace).read("ranker")
    ids = logged.column("__request_id").to_pylist()
    for i, (what, n, _, _) in enumerate(bodies):
        assert ids.count(f"req-{i}") == (n if what == "service" else 0), what


def test_row_mode_equals_batch_mode(world: World) -> None:
    for n in SIZES:
        req = world.request(n)
        keys = {"user_id": req["user_id"], "pin_id": req["pin_id"]}
        fields = {"position": req["position"], "query": req["query"]}
        for features in (FEATURES, "ranker"):
            row, batch = (columns(world.platform.online_features(keys, features, request_data=fields, mode=m))
                          for m in ("row", "batch"))
            same(row, batch, f"{features} x{n}")


def test_request_errors_answer_4xx_naming_the_signal_or_field(world: World) -> None:
    from feast.errors import FeastError

    from quasar.services import feature_app
    from quasar.signals.errors import RequestError

    known = world.platform.online_features({"user_id": world.users}, ["user_stats:ctr"])
    user = next(u for u, ctr in zip(world.users, known["results"][1]["values"], strict=True) if ctr is not None)
    entities, both = {"user_id": [user]}, {"user_id": [user], "pin_id": [world.pins[0]]}
    overflow = {"position": [-5000], "query": ["q"]}         # 0.5 ** -5000 overflows in the row function
    cases = [
        ({"entities": entities, "features": ["ctr_boost"], "request_data": overflow}, "'ctr_boost'"),
        ({"entities": both, "feature_service": "ranker", "request_data": overflow}, "'ctr_boost'"),
        ({"entities": {**entities, "position": [1]}, "features": ["ctr_boost"]}, "'query'"),
        ({"entities": entities, "features": ["ctr_boost"], "request_data": {"position": ["x"], "query": ["q"]}},
         "'position'"),
        ({"entities": both, "feature_service": "ranker", "request_data": {"position": [1.5], "query": ["q"]}},
         "'position'"),
        ({"entities": entities, "feature_service": "nope"}, "'nope'"),
        ({"entities": entities, "feature_service": "ranker", "features": ["ctr_boost"]}, "feature_service"),
        ({"entities": entities}, "features"),
    ]
    with LiveServer(feature_app()) as server:
        answers = [httpx.post(f"{server.url}/v1/features", json=body) for body, _ in cases]
        feast = [httpx.post(f"{server.url}/get-online-features", json={"entities": {**body["entities"],
                                                                                    **body.get("request_data", {})},
                                                                       "features": body["features"]})
                 for body, _ in cases[:4] if "features" in body]
    for (body, named), answer in zip(cases, answers, strict=True):
        assert answer.status_code == 422, (body, answer.text)
        error = answer.json()["error"]
        assert named in error["message"], (body, error)
    assert answers[0].json()["error"]["type"] == "RequestSignalError"
    # an Int64 request field refuses 1.5 and True rather than truncating them (and a Float64 one refuses True)
    for bad in (1.5, True):
        with pytest.raises(RequestError, match="'position'"):
            world.platform.online_features(entities, ["ctr_boost"], request_data={"position": [bad], "query": ["q"]})
    assert world.platform.online_features(entities, ["ctr_boost:long_query"],
                                          request_data={"position": [2.0], "query": ["long query"]}
                                          )["results"][1]["values"] == [1]          # 2.0 is exactly 2: taken
    for answer, named in zip(feast, ["'ctr_boost'", "'query'", "'position'"], strict=True):
        assert answer.status_code == 422, answer.text
        detail = FeastError.from_error_detail(answer.json())
        assert type(detail) is FeastError and named in str(detail), str(detail)


def test_logging_counts_logged_and_dropped_rows_in_metrics(world: World) -> None:
    """A logger whose queue holds 50 entity rows: a 100-row answer of ``ranker`` is dropped (counted), a 3-row
    one logged once the lifespan's shutdown flushed it; both answer 200, and a feature list is never logged."""
    from fixtures.prometheus import metric
    from quasar.online.feature_log import FeatureLogger
    from quasar.online.feature_log_tables import LogTables
    from quasar.online.service.app import create_app
    from quasar.services import _async_store

    p = world.platform

    def logger(observe: Any) -> FeatureLogger:
        return FeatureLogger(lambda: p.catalog, p.config.offline.namespace, max_queue=50, observe=observe)

    app = create_app(resolve=p._resolve, store=_async_store(p), feature_lists=p.feature_lists,
                     feature_logger=logger, close_store=True)
    big, small = world.request(100), world.request(3)

    def body(req: dict[str, list[Any]], **what: Any) -> dict[str, Any]:
        return {"entities": {"user_id": req["user_id"], "pin_id": req["pin_id"]},
                "request_data": {"position": req["position"], "query": req["query"]}, **what}

    async def main() -> list[int]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
                sent = [body(big, feature_service="ranker"), body(small, feature_service="ranker"),
                        body(small, features=FEATURES)]
                return [(await client.post("/v1/features", json=b)).status_code for b in sent]

    assert asyncio.run(main()) == [200, 200, 200]
    text = app.state.metrics.render().decode()
    assert metric(text, "quasar_feature_log_rows_total", outcome="dropped") == 100
    assert metric(text, "quasar_feature_log_rows_total", outcome="logged") == 3
    assert metric(text, "quasar_feature_log_rows_total", outcome="failed") == 0
    assert LogTables(p.catalog, p.config.offline.namespace).read("ranker").num_rows == 3


def test_registry_is_read_in_worker_threads_never_on_the_event_loop(world: World) -> None:
    """Expanding a service, looking up request-time signals and resolving signals are synchronous registry
    queries: the planner makes them in a worker thread and answers later requests from what it recorded."""
    import threading

    from quasar.online.service.app import create_app
    from quasar.registry.feature_lists import FeatureLists
    from quasar.services import _async_store

    p = world.platform
    calls: list[tuple[str, bool]] = []

    class Watched:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            real = getattr(self.inner, name)

            def call(*args: Any, **kwargs: Any) -> Any:
                calls.append((name, threading.current_thread() is threading.main_thread()))
                return real(*args, **kwargs)
            return call if callable(real) else real

    def resolve(name: str, version: int | None) -> Any:
        calls.append(("resolve", threading.current_thread() is threading.main_thread()))
        return p._resolve(name, version)

    app = create_app(resolve=resolve, store=_async_store(p), feature_lists=FeatureLists(Watched(p.registry)),
                     close_store=True)
    req = world.request(5)
    bodies = [{"entities": {"user_id": req["user_id"], "pin_id": req["pin_id"]}, "feature_service": "ranker",
               "request_data": {"position": req["position"], "query": req["query"]}},
              {"entities": {**req}, "features": FEATURES}]
    answers = in_process(app, bodies * 3)
    assert [a.status_code for a in answers] == [200] * 6
    assert {name for name, _ in calls} >= {"resolve", "service", "request_signal", "load_request"}, calls
    assert not [name for name, on_loop in calls if on_loop], calls            # the loop runs in the main thread
