"""Feast 0.67's own SDK against ``quasar serve``, over a socket: a Feast user switches by changing one URL.

The world (``fixtures.feast_world``): a quasar project backfilled and materialized into a throwaway Redis, served
by ``quasar serve``'s app under uvicorn; a Feast repo with the same entities and feature views whose SQLite
online store holds the same rows, served by Feast's own feature server app (``feast.feature_server.get_app``,
the app ``feast serve`` runs, here under uvicorn in a thread rather than gunicorn in a subprocess, to keep the
test short); and one client repo per server, ``online_store: {type: remote, path: http://127.0.0.1:PORT}``.

The same SDK calls (``get_online_features(...).to_dict()``, ``write_to_online_store``, ``push``, and Feast's raw
``/push`` body) go to both servers; values, their Python types and the statuses must be equal, except where
quasar is deliberately different, and each such difference is asserted here (and listed in the README's
"Feast clients" paragraph): the TTL is enforced (OUTSIDE_MAX_AGE, null) where Feast's SQLite store answers the
stale value; a record's null is NULL_VALUE where Feast says PRESENT; a key is coerced only when exact (Feast
truncates 1.5 to 1); an older write does not replace a newer one (Feast's last write wins); a feature service must be
registered in quasar (tests/online/test_feast_feature_service.py fetches one).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import numpy as np
import pytest

from fixtures.feast_world import (
    FRESH,
    NOW,
    SEEN,
    USER_FEATURES,
    FeastWorld,
    feast_frame,
    feast_repo,
)
from fixtures.feature_service import LiveServer

pytestmark = pytest.mark.filterwarnings("ignore:'HTTP_422_UNPROCESSABLE_ENTITY' is deprecated")  # Feast's own

REFS = [f"user_stats:{f}" for f in USER_FEATURES]
ROWS = [{"user_id": k} for k in (1, 2, 3, 9)]


def answer(response: Any) -> dict[str, tuple[list[Any], list[str]]]:
    """name -> (the values ``to_dict`` gives, the statuses by name), in the answer's order."""
    from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

    values = response.to_dict()
    names = list(response.proto.metadata.feature_names.val)
    return {n: (values[n], [FieldStatus.Name(s) for s in r.statuses])
            for n, r in zip(names, response.proto.results, strict=True)}


def typed(values: list[Any]) -> list[tuple[str, Any]]:
    """Each value with its Python type's name, so 1 and 1.0 or [1] and [1.0] differ."""
    def one(v: Any) -> Any:
        return [one(x) for x in v] if isinstance(v, list) else (type(v).__name__, v)
    return [one(v) for v in values]


def both(world: FeastWorld, call: Callable[[Any], Any]) -> tuple[Any, Any]:
    """``call(store)`` on the SDK pointed at quasar, then on the SDK pointed at Feast's server."""
    return call(world.quasar), call(world.feast)


def raises(store: Any, refs: Any, rows: list[dict[str, Any]]) -> Exception:
    with pytest.raises(Exception) as info:
        store.get_online_features(refs, rows)
    return info.value


def f32(value: float) -> float:
    return float(np.float32(value))


def test_get_online_features_answers_what_feast_serve_answers(feast_world: FeastWorld) -> None:
    ours, theirs = (answer(r) for r in both(feast_world, lambda s: s.get_online_features(REFS, ROWS)))
    assert list(ours) == ["user_id", *USER_FEATURES] and set(theirs) == set(ours)
    assert ours["user_id"] == theirs["user_id"] == ([1, 2, 3, 9], ["PRESENT"] * 4)
    for name in USER_FEATURES:
        (q, q_status), (f, f_status) = ours[name], theirs[name]
        for row in (0, 3):                            # user 1 (fresh, every value) and user 9 (never written)
            assert typed([q[row]]) == typed([f[row]]) and q_status[row] == f_status[row], (name, row, q, f)
        # user 2 is older than the view's two-day TTL: quasar enforces it, Feast's SQLite store does not
        assert (q[1], q_status[1]) == (None, "OUTSIDE_MAX_AGE"), name
        assert f_status[1] == "PRESENT" and f[1] is not None, name
        # user 3's record holds nulls: NULL_VALUE from quasar, PRESENT from Feast
        assert (q[2], q_status[2]) == (None, "NULL_VALUE"), name
        assert f_status[2] == "PRESENT", name
    assert [ours[n][0][0] for n in USER_FEATURES] == [10, f32(0.25), 1.5, "fr", True, [0.5, -1.0], [3, 1, 2],
                                                     int(SEEN.timestamp())]
    assert ours["clicks"][1] == ["PRESENT", "OUTSIDE_MAX_AGE", "NULL_VALUE", "NOT_FOUND"]
    # Feast stores a null timestamp as the int64 minimum and answers it; quasar answers null
    assert theirs["seen_at"][0][2] == np.iinfo(np.int64).min
    assert all(theirs[n][0][2] is None for n in USER_FEATURES if n != "seen_at")


def test_full_names_two_entities_and_string_keys_match(feast_world: FeastWorld) -> None:
    refs = ["user_stats:clicks", "item_stats:popularity", "user_stats:country"]
    rows = [{"user_id": 1, "item_id": "a"}, {"user_id": 9, "item_id": "5"}, {"user_id": 1, "item_id": "zz"}]
    for full in (False, True):
        ours, theirs = both(feast_world, lambda s, f=full: s.get_online_features(refs, rows, full_feature_names=f))
        assert answer(ours) == answer(theirs)
        assert typed(ours.to_dict()["popularity" if not full else "item_stats__popularity"]) == [
            ("float", 0.125), ("float", 0.5), ("NoneType", None)]
    assert set(ours.to_dict()) == {"user_id", "item_id", "user_stats__clicks", "item_stats__popularity",
                                   "user_stats__country"}


def test_version_references_and_version_metadata(feast_world: FeastWorld) -> None:
    pinned = feast_world.quasar.get_online_features(["user_stats@v1:clicks"], [{"user_id": 1}])
    assert pinned.to_dict() == {"user_id": [1], "clicks": [10]}
    ours, theirs = both(feast_world, lambda s: s.get_online_features(
        ["user_stats:clicks"], [{"user_id": 1}], include_feature_view_version_metadata=True))
    assert ours.to_dict() == theirs.to_dict() == {"user_id": [1], "clicks": [10]}
    # quasar names the signal version it read; Feast (no view versioning in this repo) says 0
    assert [(m.name, m.version) for m in ours.proto.metadata.feature_view_metadata] == [("user_stats", 1)]
    assert [(m.name, m.version) for m in theirs.proto.metadata.feature_view_metadata] == [("user_stats", 0)]


def test_keys_are_coerced_only_when_exact(feast_world: FeastWorld) -> None:
    from feast.errors import FeastError

    clicks = {"user_id": [1], "clicks": [10]}
    for key in ("1", 1.0):
        ours, theirs = both(feast_world, lambda s, k=key: s.get_online_features(["user_stats:clicks"],
                                                                               [{"user_id": k}]).to_dict())
        assert ours == theirs == clicks, key
    ours, theirs = both(feast_world, lambda s: s.get_online_features(["item_stats:popularity"],
                                                                     [{"item_id": 5}]).to_dict())
    assert ours == theirs == {"item_id": ["5"], "popularity": [0.5]}
    # 1.5 is not a user id: Feast truncates it to 1, quasar refuses it with Feast's typed error
    assert feast_world.feast.get_online_features(["user_stats:clicks"], [{"user_id": 1.5}]).to_dict() == clicks
    for bad, named in ((1.5, "1.5"), ("x", "'x'"), (True, "True"), ("1e3", "'1e3'"), (2**63, str(2**63))):
        error = raises(feast_world.quasar, ["user_stats:clicks"], [{"user_id": bad}])
        assert type(error) is FeastError, (bad, error)
        assert "user_id" in str(error) and named in str(error) and "int64" in str(error), (bad, str(error))


def test_errors_are_feasts_typed_exceptions(feast_world: FeastWorld) -> None:
    from feast.errors import (
        FeastError,
        FeastObjectNotFoundException,
        FeatureServiceNotFoundException,
        FeatureViewNotFoundException,
        FeatureViewVersionNotFound,
    )

    ours, theirs = (raises(s, ["ghost:clicks"], [{"user_id": 1}]) for s in (feast_world.quasar, feast_world.feast))
    assert type(ours) is type(theirs) is FeatureViewNotFoundException
    assert "'ghost'" in str(ours)
    version = raises(feast_world.quasar, ["user_stats@v7:clicks"], [{"user_id": 1}])
    assert type(version) is FeatureViewVersionNotFound and "7" in str(version)
    feature = raises(feast_world.quasar, ["user_stats:nope"], [{"user_id": 1}])
    assert type(feature) is FeastObjectNotFoundException and "'nope'" in str(feature) and "clicks" in str(feature)
    missing = raises(feast_world.quasar, ["user_stats:clicks"], [{"item_id": "a"}])
    assert type(missing) is FeastError and "'user_id'" in str(missing)

    service = feast_world.feast.get_feature_service("ranker")
    assert feast_world.feast.get_online_features(service, [{"user_id": 1}]).to_dict() == {"user_id": [1],
                                                                                          "clicks": [10]}
    refused = raises(feast_world.quasar, service, [{"user_id": 1}])
    assert type(refused) is FeatureServiceNotFoundException
    assert "'ranker'" in str(refused) and "features=" in str(refused)     # quasar has no service 'ranker' here

    # a body Feast's models refuse: the answer is Feast's error document, which its SDK turns back into a type
    raw = httpx.post(f"{feast_world.quasar_url}/get-online-features",
                     json={"features": "user_stats:clicks", "entities": {"user_id": [1]}})
    assert raw.status_code == 422 and isinstance(raw.json(), str)
    detail = FeastError.from_error_detail(raw.json())
    assert type(detail) is FeastError and "features" in str(detail)


def test_write_to_online_store_and_push_land_like_feasts(feast_world: FeastWorld) -> None:
    rows = {"user_id": [11, 12], "ts": [FRESH, FRESH], "clicks": [5, None], "ctr": [0.5, None],
            "dwell": [2.0, None], "country": ["it", None], "active": [False, None], "taste": [[1.0, 2.0], None],
            "recent": [[9], [4, 5]], "seen_at": [SEEN, SEEN]}
    written = both(feast_world, lambda s: s.write_to_online_store("user_stats", feast_frame(rows)))
    assert written == (None, None)
    pushed_rows = {**rows, "user_id": [21, 22], "clicks": [6, 7]}
    both(feast_world, lambda s: s.push("user_stats", feast_frame(pushed_rows)))
    keys = [{"user_id": k} for k in (11, 12, 21, 22)]
    ours, theirs = (answer(r) for r in both(feast_world, lambda s: s.get_online_features(REFS, keys)))
    assert ours["clicks"][0] == theirs["clicks"][0] == [5, None, 6, 7]
    for name in ["user_id", *USER_FEATURES]:
        q, f = ours[name], theirs[name]
        assert typed([q[0][i] for i in (0, 2, 3)]) == typed([f[0][i] for i in (0, 2, 3)]), name
        assert q[1][0] == f[1][0] == "PRESENT", name
    assert ours["recent"][0] == theirs["recent"][0] == [[9], [4, 5], [9], [4, 5]]
    assert ours["seen_at"][0] == theirs["seen_at"][0] == [int(SEEN.timestamp())] * 4

    # an older row for user 11: quasar keeps the newer one (newer event time wins), Feast's last write wins
    older = {**rows, "user_id": [11], "ts": [FRESH - timedelta(hours=5)], "clicks": [99]}
    older = {k: v[:1] for k, v in older.items()}
    both(feast_world, lambda s: s.write_to_online_store("user_stats", feast_frame(older)))
    ours, theirs = both(feast_world, lambda s: s.get_online_features(["user_stats:clicks"],
                                                                     [{"user_id": 11}]).to_dict())
    assert ours["clicks"] == [5] and theirs["clicks"] == [99]


def test_feasts_raw_push_and_write_bodies(feast_world: FeastWorld) -> None:
    from feast.errors import FeastError, FeastObjectNotFoundException, PushSourceNotFoundException

    df = {"user_id": [31], "event_timestamp": [NOW.isoformat()], "clicks": [3], "ctr": [0.75], "dwell": [0.5],
          "country": ["es"], "active": [True], "taste": [[0.25, 0.5]], "recent": [[1, 2]],
          "seen_at": [int(SEEN.timestamp())]}
    urls = (feast_world.quasar_url, feast_world.feast_url)
    assert [(h.status_code, h.content) for h in (httpx.get(f"{u}/health") for u in urls)] == [(200, b"")] * 2
    pushed = [httpx.post(f"{u}/push", json={"push_source_name": "user_stats", "df": df, "to": "online"}) for u in urls]
    assert [(p.status_code, p.content) for p in pushed] == [(200, b""), (200, b"")]
    written = [httpx.post(f"{u}/write-to-online-store", json={"feature_view_name": "user_stats",
                                                               "df": {**df, "user_id": [32]}}) for u in urls]
    assert [(w.status_code, w.json()) for w in written] == [(200, None), (200, None)]
    ours, theirs = (answer(r) for r in both(feast_world, lambda s: s.get_online_features(
        REFS, [{"user_id": 31}, {"user_id": 32}])))
    assert ours == theirs
    assert ours["seen_at"][0] == [int(SEEN.timestamp())] * 2 and ours["ctr"][0] == [0.75, 0.75]

    for url in urls:
        unknown = httpx.post(f"{url}/push", json={"push_source_name": "ghost", "df": df})
        assert unknown.status_code == 422, unknown.text
        assert type(FeastError.from_error_detail(unknown.json())) is PushSourceNotFoundException
        view = httpx.post(f"{url}/write-to-online-store", json={"feature_view_name": "ghost", "df": df})
        assert type(FeastError.from_error_detail(view.json())) is FeastObjectNotFoundException, view.text
    stale = httpx.post(f"{feast_world.quasar_url}/push",
                       json={"push_source_name": "user_stats", "df": {**df, "event_timestamp": ["9999-12-31T00:00:00"]}})
    assert stale.status_code == 422
    assert "event_timestamp" in str(FeastError.from_error_detail(stale.json()))   # quasar's time bounds hold


def test_a_token_and_the_body_limit_answer_feasts_way(feast_world: FeastWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """A service with ``[online] auth_tokens``: Feast's OIDC client config with a static token (from an
    environment variable) is all a Feast repo needs; without it, and for a body over ``max_body_bytes``, the
    SDK raises FeastError saying why."""
    from feast.errors import FeastError

    from quasar.services import feature_app

    toml = feast_world.project / "quasar.toml"
    original = toml.read_text()
    toml.write_text(original.replace("[online]\n", '[online]\nauth_tokens = ["s3cret"]\nmax_body_bytes = 2000\n'))
    try:
        app = feature_app()
    finally:
        toml.write_text(original)
    monkeypatch.setenv("QUASAR_TOKEN", "s3cret")
    with LiveServer(app) as server:
        online = ["type: remote", f"path: {server.url}"]
        with_token = feast_repo(feast_world.root, "with_token", online, auth=["type: oidc", "token_env_var: QUASAR_TOKEN"])
        without = feast_repo(feast_world.root, "without_token", online)
        probe = httpx.get(f"{server.url}/health")                 # Feast's probe stays open, like /healthz
        got = with_token.get_online_features(["user_stats:clicks"], [{"user_id": 1}]).to_dict()
        refused = raises(without, ["user_stats:clicks"], [{"user_id": 1}])
        too_big = raises(with_token, ["user_stats:clicks"], [{"user_id": k} for k in range(1000)])
        with pytest.raises(FeastError, match="missing bearer token"):
            without.write_to_online_store("user_stats", feast_frame({"user_id": [41], "ts": [FRESH], "clicks": [1],
                                                                    "ctr": [0.5], "dwell": [1.0], "country": ["x"],
                                                                    "active": [True], "taste": [[1.0, 1.0]],
                                                                    "recent": [[1]], "seen_at": [SEEN]}))
    assert (probe.status_code, probe.content) == (200, b"")
    assert got == {"user_id": [1], "clicks": [10]}
    assert type(refused) is FeastError and "missing bearer token" in str(refused)
    assert type(too_big) is FeastError and "over the limit of 2000 bytes" in str(too_big)


def test_feasts_push_to_offline_lands_in_the_signals_table(feast_world: FeastWorld) -> None:
    """``"to": "offline"`` appends to the signal's Iceberg table only, ``"online_and_offline"`` to both."""
    import pyarrow as pa

    import quasar

    df = {"event_timestamp": [FRESH.isoformat()], "clicks": [8], "ctr": [0.5], "dwell": [0.5], "country": ["pt"],
          "active": [False], "taste": [[0.0, 1.0]], "recent": [[5]], "seen_at": [None]}
    for user, to in ((51, "offline"), (52, "online_and_offline")):
        answer = httpx.post(f"{feast_world.quasar_url}/push", json={"push_source_name": "user_stats", "to": to,
                                                                    "df": {"user_id": [user], **df}})
        assert answer.status_code == 200, answer.text
    online = feast_world.quasar.get_online_features(["user_stats:clicks"], [{"user_id": 51}, {"user_id": 52}])
    assert online.to_dict() == {"user_id": [51, 52], "clicks": [None, 8]}
    spine = pa.table({"user_id": [51, 52], "event_timestamp": pa.array([NOW, NOW], pa.timestamp("us", tz="UTC"))})
    with quasar.Platform.open(feast_world.project) as p:
        offline = p.training_dataset(spine, ["user_stats:clicks", "user_stats:seen_at"])
    assert offline.column("clicks").to_pylist() == [8, 8]
    assert offline.column("seen_at").to_pylist() == [None, None]
