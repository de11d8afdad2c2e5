"""Feast 0.67's own SDK fetches a quasar feature service from ``quasar serve`` over a socket, request data in
the entity rows as a Feast user writes them.

The quasar world is ``fixtures.request_world`` (stored ``user_stats``/``pin_stats``, request-time ``ctr_boost``
and ``pin_score``, the service ``ranker``). The Feast repo declares what a Feast user would for the same
service: entities, feature views, a RequestSource with the request fields, on-demand feature views and the
FeatureService ``ranker`` over them, with ``online_store: {type: remote}`` pointing at quasar's server. The
SDK sends the service's name and the entity rows (request data among them); quasar answers with its own
service's pinned features, computed by its own request-time functions, which must equal the training
dataset's values bit for bit.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.feast_world import feast_repo
from fixtures.feature_service import LiveServer
from fixtures.request_world import World, build_world, spine_of

pytestmark = [pytest.mark.filterwarnings("ignore:'HTTP_422_UNPROCESSABLE_ENTITY' is deprecated"),  # Feast's own
              pytest.mark.filterwarnings("ignore:On demand feature view is an experimental feature")]
RANKER = ["clicks", "boost", "long_query", "score"]           # what quasar's service ``ranker`` answers


def bits(value: Any) -> Any:
    """Floats compared by their IEEE-754 bytes, lists item by item."""
    if isinstance(value, float):
        return ("f", struct.pack("<d", value))
    return [bits(v) for v in value] if isinstance(value, list) else value


def feast_objects(root: Path) -> list[Any]:
    """The Feast-side declarations of the ``ranker`` service (the SDK sends only its name), and a service
    ``ghost`` that quasar does not have."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource, ValueType
    from feast import types as ft
    from feast.on_demand_feature_view import on_demand_feature_view

    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    pin = Entity(name="pin", join_keys=["pin_id"], value_type=ValueType.INT64)
    users = FileSource(name="users_file", path=str(root / "users.parquet"), timestamp_field="event_timestamp")
    pins = FileSource(name="pins_file", path=str(root / "pins.parquet"), timestamp_field="event_timestamp")
    user_stats = FeatureView(name="user_stats", entities=[user], ttl=timedelta(days=30), source=users,
                             schema=[Field(name="clicks", dtype=ft.Int64), Field(name="ctr", dtype=ft.Float32),
                                     Field(name="country", dtype=ft.String)])
    pin_stats = FeatureView(name="pin_stats", entities=[pin], ttl=timedelta(0), source=pins,
                            schema=[Field(name="quality", dtype=ft.Float64)])
    request = RequestSource(name="ranker_request", schema=[Field(name="position", dtype=ft.Int64),
                                                           Field(name="query", dtype=ft.String)])

    @on_demand_feature_view(sources=[user_stats, request], mode="python",
                            schema=[Field(name="boost", dtype=ft.Float64), Field(name="long_query", dtype=ft.Int64)])
    def ctr_boost(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"boost": [0.0 for _ in inputs["position"]], "long_query": [0 for _ in inputs["position"]]}

    @on_demand_feature_view(sources=[pin_stats, request], mode="python", schema=[Field(name="score", dtype=ft.Float64)])
    def pin_score(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"score": [0.0 for _ in inputs["position"]]}

    ranker = FeatureService(name="ranker", features=[user_stats[["clicks"]], ctr_boost, pin_score[["score"]]])
    ghost = FeatureService(name="ghost", features=[user_stats[["clicks"]]])
    return [user, pin, users, pins, user_stats, pin_stats, request, ctr_boost, pin_score, ranker, ghost]


@pytest.fixture
def world(project_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    from quasar.services import PROJECT_ENV

    made = build_world(tmp_path / "rt")
    monkeypatch.setenv(PROJECT_ENV, str(made.root))
    monkeypatch.setenv("FEAST_USAGE", "False")                  # no telemetry, nothing leaves the machine
    return made


def rows_of(request: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """A request as Feast's entity rows: the join keys and the request data, one dict per row."""
    return [dict(zip(request, values, strict=True)) for values in zip(*request.values(), strict=True)]


def test_feasts_sdk_fetches_a_feature_service_with_request_data(world: World, tmp_path: Path) -> None:
    from feast.errors import FeastError, FeatureServiceNotFoundException

    from quasar.services import feature_app

    repos = tmp_path / "feast"
    repos.mkdir()
    requests = [world.request(n) for n in (1, 100)]
    with LiveServer(feature_app()) as server:
        store = feast_repo(repos, "to_quasar", ["type: remote", f"path: {server.url}"])
        store.apply(feast_objects(repos))
        ranker = store.get_feature_service("ranker")
        fetched = [store.get_online_features(features=ranker, entity_rows=rows_of(r)).to_dict() for r in requests]
        with pytest.raises(FeatureServiceNotFoundException) as unknown:
            store.get_online_features(features=store.get_feature_service("ghost"), entity_rows=[{"user_id": 1}])
        raw = httpx.post(f"{server.url}/get-online-features",
                         json={"feature_service": "ghost", "entities": {"user_id": [1]}})
        user = next(u for u in world.users if world.platform.online_features(
            {"user_id": [u]}, ["user_stats:ctr"])["results"][1]["values"][0] is not None)
        with pytest.raises(FeastError) as failing:                  # 0.5 ** -5000 overflows in ctr_boost's row form
            store.get_online_features(features=ranker, entity_rows=[{"user_id": user, "pin_id": world.pins[0],
                                                                     "position": -5000, "query": "q"}])
        with pytest.raises(FeastError) as missing:
            store.get_online_features(features=ranker, entity_rows=[{"user_id": user, "pin_id": world.pins[0],
                                                                     "position": 1}])
    at = datetime.now(UTC)
    for request, got in zip(requests, fetched, strict=True):
        assert list(got) == ["user_id", "pin_id", *RANKER]
        assert got["user_id"] == request["user_id"] and got["pin_id"] == request["pin_id"]
        offline = world.platform.training_dataset(spine_of(request, at), "ranker")
        for name in RANKER:
            assert bits(got[name]) == bits(offline.column(name).to_pylist()), name
    assert any(v is not None for v in fetched[1]["score"])
    assert "'ghost'" in str(unknown.value)
    assert raw.status_code == 404
    assert FeastError.from_error_detail(raw.json()).__class__ is FeatureServiceNotFoundException
    assert type(failing.value) is FeastError and "'ctr_boost'" in str(failing.value)
    assert type(missing.value) is FeastError and "'query'" in str(missing.value)
