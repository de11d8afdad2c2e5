"""The facade's online half on the example project: materialize, online_features, push, the service factories,
and the loader shortcut, against a throwaway Redis and real Iceberg tables."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import redis
from click.testing import CliRunner

import quasar
from fixtures.online import dump_redis
from fixtures.redis_server import RedisServer
from quasar.cli import main
from quasar.demo import EXAMPLE_SIGNALS
from quasar.examples.data import World, generate, make_spine
from quasar.signals.errors import NotFoundError, SchemaError

ONLINE = ["pin_profile", "pin_stats", "user_affinity", "user_engagement", "user_profile", "user_recent_pins"]
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
WORLD = World(users=60, pins=120, days=8, events_per_day=800, start=TODAY - timedelta(days=8))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Path]:
    """The example signals, registered and backfilled over a small world that ends today."""
    if redis_server.proc is None:
        redis_server.start()
    root = tmp_path_factory.mktemp("online-facade")
    mp = pytest.MonkeyPatch()
    for var in ("QUASAR_REGISTRY_URL", "QUASAR_CATALOG_URI", "QUASAR_WAREHOUSE", "QUASAR_PROJECT"):
        mp.delenv(var, raising=False)
    mp.setenv("QUASAR_REDIS_URL", redis_server.url)
    assert CliRunner().invoke(main, ["init", str(root), "--name", "facade", "--minimal"]).exit_code == 0
    shutil.copytree(EXAMPLE_SIGNALS, root / "signals", ignore=shutil.ignore_patterns("__pycache__"))
    generate(root, WORLD)
    with quasar.Platform.open(root) as p:
        p.register("signals")
        for name in ["user_affinity", "pin_stats", "user_recent_pins", "pin_profile", "user_profile"]:
            p.backfill(name, WORLD.start, WORLD.end, with_upstream=True)
    yield root
    mp.undo()


@pytest.fixture
def p(project: Path, redis_server: RedisServer) -> Iterator[quasar.Platform]:
    redis.Redis.from_url(redis_server.url).flushall()
    with quasar.Platform.open(project) as platform:
        yield platform                                  # Redis is empty: tests materialize with full=True


def _latest_offline(p: quasar.Platform, name: str) -> pa.Table:
    """The newest row per entity of a signal's offline table (ties: the later created_timestamp)."""
    sv = p.registry.signal(name)
    rows = p.offline.read(sv.signal, sv.version)
    key = sv.signal.entity.join_key
    order = pc.sort_indices(rows, [(key, "ascending"), ("event_timestamp", "descending"),
                                   ("created_timestamp", "descending")])
    rows = rows.take(order)
    keys = rows.column(key).to_numpy()
    first = np.r_[True, keys[1:] != keys[:-1]]
    return rows.filter(pa.array(first))


def _column(answer: dict[str, Any], feature: str) -> tuple[list[Any], list[str]]:
    index = answer["metadata"]["feature_names"].index(feature)
    result = answer["results"][index]
    return result["values"], result["statuses"]


def test_materialize_writes_the_offline_latest_values_online(p: quasar.Platform) -> None:
    results = p.materialize(full=True)
    assert sorted(r.signal for r in results) == ONLINE
    assert all(not r.incremental and r.rows_written == r.entities > 0 for r in results)
    latest = _latest_offline(p, "user_engagement")
    users = latest.column("user_id").to_pylist()
    answer = p.online_features({"user_id": users}, ["user_engagement"])
    ttl = timedelta(days=2)
    fresh = [t >= datetime.now(UTC) - ttl for t in latest.column("event_timestamp").to_pylist()]
    assert any(fresh)
    for feature in ["impressions_1d", "clicks_7d", "ctr_7d", "dwell_1d"]:
        values, statuses = _column(answer, feature)
        expected = latest.column(feature).to_pylist()
        for got, status, want, is_fresh in zip(values, statuses, expected, fresh, strict=True):
            if not is_fresh:
                assert (got, status) == (None, "OUTSIDE_MAX_AGE")
            elif want is None:
                assert (got, status) == (None, "NULL_VALUE")
            else:
                assert (got, status) == (want, "PRESENT")


def test_a_second_materialize_reads_nothing_new(p: quasar.Platform, redis_server: RedisServer) -> None:
    p.materialize(["user_profile"], full=True)
    before = dump_redis(redis_server.url)
    again = p.materialize(["user_profile"])
    assert [(r.incremental, r.rows_read, r.files_read, r.rows_written) for r in again] == [(True, 0, 0, 0)]
    assert dump_redis(redis_server.url) == before
    redis.Redis.from_url(redis_server.url).flushall()          # Redis lost its data: only --full brings it back
    assert p.materialize(["user_profile"])[0].rows_written == 0
    assert p.materialize(["user_profile"], full=True)[0].rows_written > 0
    assert dump_redis(redis_server.url) == before
    with pytest.raises(NotFoundError, match="no_such_signal"):
        p.materialize(["no_such_signal"])


def _profile_row(user: int, when: datetime, country: str) -> dict[str, Any]:
    return {"user_id": user, "event_timestamp": when, "country": country, "taste": [0.5] * 16}


def test_push_online_and_offline_is_point_in_time_correct(p: quasar.Platform) -> None:
    sv = p.registry.signal("user_profile")
    before = p.offline.current_snapshot_id("user_profile", sv.version)
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    assert p.push("user_profile", [_profile_row(10_001, when, "FR")], to="online_and_offline") == 1
    values, statuses = _column(p.online_features({"user_id": [10_001]}, ["user_profile:country"]), "country")
    assert (values, statuses) == (["FR"], ["PRESENT"])
    assert p.offline.current_snapshot_id("user_profile", sv.version) != before
    stored = p.offline.read(sv.signal, sv.version).filter(pc.field("user_id") == 10_001)
    assert stored.num_rows == 1 and stored.column("created_timestamp").null_count == 0
    spine = pa.table({"user_id": [10_001, 10_001],
                      "event_timestamp": pa.array([when - timedelta(seconds=1), when], pa.timestamp("us", "UTC"))})
    ds = p.training_dataset(spine, ["user_profile:country"])
    assert ds.column("country").to_pylist() == [None, "FR"]


def test_push_online_only_leaves_the_offline_table_alone(p: quasar.Platform) -> None:
    sv = p.registry.signal("user_profile")
    before = p.offline.current_snapshot_id("user_profile", sv.version)
    p.push("user_profile", [_profile_row(10_002, datetime.now(UTC), "JP")])
    assert p.offline.current_snapshot_id("user_profile", sv.version) == before
    assert _column(p.online_features({"user_id": [10_002]}, ["user_profile:country"]), "country")[0] == ["JP"]


def test_a_bad_push_names_the_problem_and_changes_nothing(p: quasar.Platform, redis_server: RedisServer) -> None:
    sv = p.registry.signal("user_profile")
    snapshot = p.offline.current_snapshot_id("user_profile", sv.version)
    p.materialize(["user_profile"], full=True)
    before = dump_redis(redis_server.url)
    row = _profile_row(10_003, datetime.now(UTC), "DE")
    del row["taste"]
    with pytest.raises(SchemaError, match="taste"):
        p.push("user_profile", [row], to="online_and_offline")
    with pytest.raises(SchemaError, match="colour"):
        p.push("user_profile", [{**_profile_row(10_003, datetime.now(UTC), "DE"), "colour": 1}],
               to="online_and_offline")
    with pytest.raises(quasar.QuasarError, match="online_and_offline"):
        p.push("user_profile", [_profile_row(10_003, datetime.now(UTC), "DE")], to="everywhere")
    assert dump_redis(redis_server.url) == before
    assert p.offline.current_snapshot_id("user_profile", sv.version) == snapshot


def test_cli_materialize(project: Path, p: quasar.Platform) -> None:
    out = CliRunner().invoke(main, ["-C", str(project), "materialize", "--full", "pin_stats"])
    assert out.exit_code == 0, out.output
    assert "materialized pin_stats v1 (full)" in out.output
    again = CliRunner().invoke(main, ["-C", str(project), "materialize", "pin_stats"])
    assert "(incremental): 0 rows read from 0 files" in again.output
    bad = CliRunner().invoke(main, ["-C", str(project), "materialize", "nope"])
    assert bad.exit_code == 1 and bad.output.startswith("error:") and "nope" in bad.output


def test_feature_app_answers_like_the_facade(project: Path, p: quasar.Platform,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from quasar.services import PROJECT_ENV, feature_app
    p.materialize(full=True)
    monkeypatch.setenv(PROJECT_ENV, str(project))
    app = feature_app()
    entities: dict[str, list[Any]] = {"user_id": [1, 2, 3, 77_777]}
    features = ["user_engagement:ctr_7d", "user_profile", "user_recent_pins:recent_pins"]
    when = datetime.now(UTC).replace(microsecond=0)
    push = {"signal": "user_profile", "to": "online_and_offline",
            "rows": [{**_profile_row(10_004, when, "BR"), "event_timestamp": when.isoformat()}]}

    async def main() -> tuple[httpx.Response, httpx.Response]:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            answer = await client.post("/v1/features", json={"entities": entities, "features": features})
            return answer, await client.post("/v1/push", json=push)

    answer, pushed = asyncio.run(main())
    assert answer.status_code == 200 and answer.json() == p.online_features(entities, features)
    assert pushed.status_code == 200 and pushed.json()["offline"] is True
    sv = p.registry.signal("user_profile")
    stored = p.offline.read(sv.signal, sv.version).filter(pc.field("user_id") == 10_004)
    assert stored.column("country").to_pylist() == ["BR"]


def test_loader_shortcut_streams_every_spine_row(p: quasar.Platform, project: Path) -> None:
    spine = make_spine(project, WORLD.end - timedelta(days=3), WORLD.end, rows=500)
    loader = p.loader(spine, ["user_engagement", "pin_stats:ctr_7d", "user_recent_pins:recent_pins"],
                      batch_size=128, num_workers=0)
    batches = list(loader)
    assert sum(b.features.size for b in batches) == spine.num_rows
    first = batches[0].features
    assert "user_recent_pins__recent_pins" in first.id_lists
    assert first.dense.shape[1] == 5                              # 4 user_engagement features + pin_stats ctr
    labels = np.concatenate([b.labels["label"].numpy() for b in batches])
    assert labels.sum() == pc.sum(spine.column("label")).as_py()


def test_scoring_app_scores_the_trained_ranker(project: Path, p: quasar.Platform,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from quasar.examples.train_ranker import train
    from quasar.services import PROJECT_ENV, scoring_app
    p.materialize(full=True)
    spine = make_spine(project, WORLD.end - timedelta(days=4), WORLD.end, rows=2_000)
    train(project, project / "models", spine=spine)
    monkeypatch.setenv(PROJECT_ENV, str(project))
    app = scoring_app()
    pins = [3, 1, 4, 1, 5, 9, 2, 6]

    async def main() -> list[httpx.Response]:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return [await client.post("/v1/score", json={"model": model, "entities": {"user_id": [7]},
                                                         "candidates": {"pin_id": pins}})
                    for model in ("ranker", "nope")] + [await client.get("/healthz")]

    answer, missing, health = asyncio.run(main())
    assert answer.status_code == 200, answer.text
    scores = answer.json()["scores"]
    assert len(scores) == len(pins) and all(np.isfinite(scores))
    assert scores[1] == scores[3]                             # the same pin twice scores the same
    assert len(set(scores)) > 1                               # different pins, different features
    assert missing.status_code == 404 and "nope" in missing.text
    assert str(health.json()["device"]).startswith(("cpu", "cuda"))
