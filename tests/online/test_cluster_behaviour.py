"""One behaviour suite for the online store, run against a single Redis and against a real three-master Redis
Cluster (``online_backend``, tests/fixtures/redis_cluster.py): writes, reads of one and many entities across
slots, newer-wins, materialization, push, deletion of a version's online keys, and both HTTP services (the
feature service and the scorer) over a socket. Every test must pass on both, with the same answers. The
fault trials (a frozen, restarted or resharded master) are in test_cluster_faults.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from redis.crc import key_slot

from fixtures.cluster_suite import US, P, async_store_of, same_rows, store_of
from fixtures.feature_service import (
    FRESH,
    PROJECT,
    LiveServer,
    column,
    engagement_rows,
    iso,
    item_rows,
    item_stats,
    profile_rows,
    resolve,
    user_engagement,
    user_engagement_v2,
    user_profile,
)
from fixtures.online import NOW, ol_accounts, ol_all_types, ol_short, plain, random_rows
from fixtures.redis_cluster import OnlineBackend
from quasar.online.keys import entity_keys
from quasar.online.materialize import materialize
from quasar.online.push import push
from quasar.online.redis_store import KEYS_PER_ROUND_TRIP, RedisOnlineStore, plan_write
from quasar.online.store import FeatureStatus, OnlineColumns
from quasar.registry import Registry
from quasar.store.tables import OfflineStore


@pytest.fixture
def store(online_backend: OnlineBackend) -> Iterator[RedisOnlineStore]:
    with store_of(online_backend) as s:
        yield s


def pick(got: OnlineColumns, rows: list[int]) -> OnlineColumns:
    """The rows ``rows`` of ``got``."""
    return OnlineColumns(got.signal, got.version, got.table.take(pa.array(rows, pa.int64())),
                         got.event_time_us[rows], {n: s[rows] for n, s in got.status.items()})


def slots(project: str, entity: Any, keys: list[Any]) -> set[int]:
    return {key_slot(k.encode()) for k in entity_keys(project, entity, keys)}


# --- the store: writes, reads, newer-wins -----------------------------------------------------------------


def test_the_backend_is_what_it_says(online_backend: OnlineBackend) -> None:
    client = online_backend.client()
    try:
        if online_backend.cluster:
            masters = [n for n in client.get_nodes() if n.server_type == "primary"]
            assert len(masters) == 3
            info = client.cluster_info()
            assert info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == 3
        else:
            assert client.ping()
    finally:
        client.close()


def test_writes_and_reads_of_one_and_many_entities_across_slots(store: RedisOnlineStore) -> None:
    keys = list(range(300))
    rows = random_rows(ol_all_types, keys, seed=1)
    assert len(slots(P, ol_all_types.entity, keys)) == 300        # every key its own slot: all three nodes
    assert store.write(ol_all_types, 1, rows) == 300
    (one,) = store.read([(ol_all_types, 1)], [7])
    same_rows(one, rows.slice(7, 1))
    asked = [299, *range(0, 300, 3), 1000, 5]                     # out of order, one never written
    got, short = store.read([(ol_all_types, 1), (ol_short, 1)], asked)
    stored = [i for i, k in enumerate(asked) if k < 300]
    same_rows(pick(got, stored), rows.take(pa.array([asked[i] for i in stored])))
    assert got.status["clicks"].tolist()[asked.index(1000)] == FeatureStatus.NOT_FOUND
    assert set(short.status["count"].tolist()) == {FeatureStatus.NOT_FOUND}
    # string keys, hash tags included: "{t}a" and "{t}b" share a slot, the others do not
    accounts = random_rows(ol_accounts, ["{t}a", "{t}b", "x", "y*", ""], seed=2)
    assert store.write(ol_accounts, 1, accounts) == 5
    (acct,) = store.read([(ol_accounts, 1)], ["y*", "{t}b", "", "zz", "{t}a", "x"])
    same_rows(pick(acct, [0, 1, 2, 4, 5]), accounts.take(pa.array([3, 1, 4, 0, 2])))
    assert acct.status["balance"].tolist()[3] == FeatureStatus.NOT_FOUND
    # every key expires (the signal has a TTL)
    assert store.client.pttl(entity_keys(P, ol_all_types.entity, [123])[0]) > 0


def test_the_async_store_writes_and_reads_the_same(online_backend: OnlineBackend, store: RedisOnlineStore) -> None:
    keys = list(range(200))
    rows = random_rows(ol_all_types, keys, seed=3)

    async def main() -> tuple[int, list[OnlineColumns], list[OnlineColumns]]:
        a = async_store_of(online_backend)
        try:
            await a.ping()
            written = await a.write(ol_all_types, 1, rows)        # a fresh backend: the script is loaded first
            return written, await a.read([(ol_all_types, 1)], keys), await a.read([(ol_all_types, 1)], [5])
        finally:
            await a.close()

    written, (many,), (one,) = asyncio.run(main())
    assert written == 200
    same_rows(many, rows)
    same_rows(one, rows.slice(5, 1))
    (sync,) = store.read([(ol_all_types, 1)], keys)
    assert plain(sync.table.to_pylist()) == plain(many.table.to_pylist())


def test_newer_wins_an_older_event_never_overwrites_a_newer_one(store: RedisOnlineStore) -> None:
    keys = list(range(60))
    newer = random_rows(ol_short, keys, times=[NOW] * 60, seed=4)
    older = random_rows(ol_short, keys, times=[NOW - timedelta(hours=1)] * 60, seed=5)
    assert store.write(ol_short, 1, newer) == 60
    assert store.write(ol_short, 1, older) == 0                   # every key, on every node, keeps the newer
    (got,) = store.read([(ol_short, 1)], keys)
    same_rows(got, newer)
    # one write holding both: the newer row of each key wins whatever the order
    both = pa.concat_tables([older.slice(0, 30), newer.slice(0, 30)])
    mixed = random_rows(ol_short, keys[30:], times=[NOW + timedelta(seconds=1)] * 30, seed=6)
    store.write(ol_short, 1, pa.concat_tables([mixed, older.slice(30, 30), both]))
    (got,) = store.read([(ol_short, 1)], keys)
    same_rows(got, pa.concat_tables([newer.slice(0, 30), mixed]))


def test_push_validates_and_applies_newer_wins(store: RedisOnlineStore) -> None:
    rows = [{"user_id": k, "event_timestamp": NOW, "count": k} for k in range(40)]
    assert push(signal=ol_short, version=1, rows=rows, online=store) == 40
    stale = [{"user_id": k, "event_timestamp": NOW - timedelta(days=1), "count": -1} for k in range(40)]
    assert push(signal=ol_short, version=1, rows=stale, online=store) == 0
    (got,) = store.read([(ol_short, 1)], list(range(40)))
    assert got.table.column("count").to_pylist() == list(range(40))


def test_mirror_scan_and_deleting_a_version_online(store: RedisOnlineStore, online_backend: OnlineBackend) -> None:
    """``scan`` finds every entity holding the field on every node; ``mirror`` deletes what is absent; deleting
    a version (``quasar delete``: scan, then mirror every key absent) leaves other fields alone."""
    keys = list(range(150))
    assert store.write(ol_all_types, 1, random_rows(ol_all_types, keys, seed=7)) == 150
    assert store.write(ol_short, 1, random_rows(ol_short, keys[:10], seed=8)) == 10
    assert sorted(k for batch in store.scan(ol_all_types, 1, count=40) for k in batch) == keys
    assert store.mirror(ol_all_types, 1, pa.table({}), absent=keys[100:]) == (0, 50)
    assert sorted(k for batch in store.scan(ol_all_types, 1) for k in batch) == keys[:100]
    for batch in list(store.scan(ol_all_types, 1, count=33)):
        store.mirror(ol_all_types, 1, pa.table({}), absent=batch)
    assert [k for batch in store.scan(ol_all_types, 1) for k in batch] == []
    assert sorted(k for batch in store.scan(ol_short, 1) for k in batch) == keys[:10]
    client = online_backend.client()
    try:
        assert client.exists(*entity_keys(P, ol_all_types.entity, keys[10:20])) == 0     # empty hashes are gone
    finally:
        client.close()


def test_a_cluster_write_packs_its_per_slot_calls_into_few_round_trips() -> None:
    """On a cluster a script call holds the keys of one slot (most hold one key): a round trip carries up to
    ``KEYS_PER_ROUND_TRIP`` keys however many calls that is, as on a single Redis (20,000 keys were 789 round
    trips of 16 calls)."""
    rows = random_rows(ol_short, list(range(20_000)), seed=13)
    plan = plan_write(P, ol_short, 1, rows, cluster=True)
    trips = list(plan.round_trips())
    assert len(plan.calls) > 10_000
    assert len(trips) == 2 and [c for t in trips for c in t] == plan.calls
    assert all(sum(len(c.keys) for c in t) <= KEYS_PER_ROUND_TRIP for t in trips)
    single = plan_write(P, ol_short, 1, rows, cluster=False)
    assert [len(t) for t in single.round_trips()] == [16, 4]


# --- materialization ---------------------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}")
    reg.register_definitions([ol_all_types.entity], [ol_all_types.source], [ol_all_types, ol_short],
                             module="fixtures.online")
    yield reg
    reg.close()


def test_materialization_writes_the_latest_row_per_entity_and_corrects(offline_store: OfflineStore,
                                                                       registry: Registry,
                                                                       store: RedisOnlineStore) -> None:
    day = NOW.replace(hour=0, minute=0, second=0) - timedelta(days=2)
    keys = [k % 90 for k in range(180)]                  # two rows per entity: the later one wins
    times = [day + timedelta(hours=1 + (i // 90) * 5, seconds=i % 90) for i in range(180)]
    rows = random_rows(ol_short, keys, times=times, seed=9)
    now = int((day + timedelta(hours=12)).timestamp() * US)            # within the 1-day TTL
    offline_store.replace_window(ol_short, 1, rows, day, day + timedelta(days=1))
    result = materialize(signal=ol_short, version=1, offline=offline_store, online=store, state=registry,
                         batch_rows=50)
    assert result.entities == 90 and result.rows_read == 180
    (got,) = store.read([(ol_short, 1)], list(range(90)), now_us=now)
    same_rows(got, rows.slice(90, 90))
    # a re-backfill of the day without entities 60..89: a correction deletes them, replaces the others
    redo = random_rows(ol_short, list(range(60)), times=[day + timedelta(hours=2)] * 60, seed=10)
    offline_store.replace_window(ol_short, 1, redo, day, day + timedelta(days=1))
    step = materialize(signal=ol_short, version=1, offline=offline_store, online=store, state=registry)
    assert step.incremental and step.rows_deleted == 30
    (got,) = store.read([(ol_short, 1)], list(range(90)), now_us=now)
    same_rows(pick(got, list(range(60))), redo)
    assert set(got.status["count"].tolist()[60:]) == {FeatureStatus.NOT_FOUND}
    assert sorted(k for batch in store.scan(ol_short, 1) for k in batch) == list(range(60))


# --- the HTTP services, over a socket -------------------------------------------------------------------------


def test_the_feature_service_over_a_socket(online_backend: OnlineBackend) -> None:
    from quasar.online.service.app import create_app

    with store_of(online_backend, PROJECT) as s:      # the feature service tests' world
        s.write(user_profile, 1, profile_rows())
        s.write(user_engagement, 1, engagement_rows(1))
        s.write(user_engagement_v2, 2, engagement_rows(2))
        s.write(item_stats, 1, item_rows())
    app = create_app(store=async_store_of(online_backend, PROJECT, socket_timeout=1.0), resolve=resolve,
                     close_store=True)
    read = {"entities": {"user_id": [1, 2, 3, 4]}, "features": ["user_engagement:clicks", "user_profile:label"]}
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        health = client.get("/healthz")
        features = client.post("/v1/features", json=read)
        feast = client.post("/get-online-features", json={"entities": {"user_id": [1, 2]},
                                                           "features": ["user_engagement:clicks"]})
        pushed = client.post("/v1/push", json={"signal": "item_stats", "rows": [
            {"item_id": k, "event_timestamp": iso(FRESH), "popularity": 0.5} for k in ("c", "d", "{e}f")]})
        stale = client.post("/v1/push", json={"signal": "item_stats", "rows": [
            {"item_id": "a", "event_timestamp": iso(FRESH - timedelta(days=1)), "popularity": 9.0}]})
        items = client.post("/v1/features", json={"entities": {"item_id": ["a", "c", "{e}f", "zz"]},
                                                  "features": ["item_stats"]})
        metrics = client.get("/metrics")
    assert health.status_code == 200, health.text
    assert features.status_code == 200, features.text
    assert column(features.json(), "clicks")["values"] == [10, None, 30, None]
    assert column(features.json(), "clicks")["statuses"] == ["PRESENT", "OUTSIDE_MAX_AGE", "PRESENT", "NOT_FOUND"]
    assert column(features.json(), "label")["values"] == ["héllo", None, "", None]
    assert feast.status_code == 200 and column(feast.json(), "clicks")["values"] == [10, None]
    assert pushed.json()["written"] == 3 and stale.json()["written"] == 0
    assert column(items.json(), "popularity")["values"] == [0.1, 0.5, 0.5, None]
    assert metrics.status_code == 200


def test_the_scorer_over_a_socket(online_backend: OnlineBackend, scoring_world: Any) -> None:
    import torch

    from fixtures.prometheus import sample_value
    from fixtures.serving import (
        SCORING_PROJECT,
        reference_scores,
        score_body,
        score_pin_stats,
        score_user_stats,
    )
    from quasar.serving_adapters.cache import CacheConfig
    from quasar.serving_adapters.models import ModelRegistry
    from quasar.serving_adapters.service import create_scoring_app

    with store_of(online_backend, SCORING_PROJECT) as s:
        s.write(score_user_stats, 1, scoring_world.user_rows)
        s.write(score_pin_stats, 1, scoring_world.pin_rows)
    app = create_scoring_app(models=ModelRegistry(scoring_world.models, scoring_world.resolver),
                             store=async_store_of(online_backend, SCORING_PROJECT, socket_timeout=5.0),
                             device="cpu", close_store=True, cache=CacheConfig(enabled=True, ttl_s=60.0))
    requests = [(0, list(range(40))), (3, [199, 5, 5, 150, 1]), (scoring_world.users - 1, [2, 190])] * 2
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        health = client.get("/healthz")
        answers = [client.post("/v1/score", json=score_body(u, pins)) for u, pins in requests]
        metrics = client.get("/metrics").text
    assert health.status_code == 200, health.text
    # the candidate cache works on both: the second round of requests is answered from it
    assert sample_value(metrics, "quasar_scorer_cache_lookups_total", model="ranker", result="hit") == 51
    assert sample_value(metrics, "quasar_scorer_cache_lookups_total", model="ranker", result="miss") == 43
    model = scoring_world.reference_model()
    for (user, pins), answer in zip(requests, answers, strict=True):
        assert answer.status_code == 200, answer.text
        expected = reference_scores(scoring_world, model, user, pins)
        assert torch.equal(torch.tensor(answer.json()["scores"], dtype=torch.float32), expected), (user, pins)


# --- a project configured for the backend ---------------------------------------------------------------------

PROJECT_MODULE = """
from quasar.signals import Entity, Source, aggregate, count

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")
daily = aggregate(name="daily", entity=user, source=events, step="1d", ttl="3650d", online=True,
                  aggregations=[count("1d", name="n_1d")])
"""


def test_a_project_configured_for_the_backend(online_backend: OnlineBackend, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``[online] cluster`` in quasar.toml selects the cluster client everywhere: ``quasar materialize``,
    ``quasar consistency`` (its scan of the online keys), ``quasar delete`` and the feature service that
    ``quasar serve`` runs (``quasar.services.feature_app``)."""
    import json
    from datetime import UTC, datetime

    import pyarrow.parquet as pq
    from click.testing import CliRunner

    import quasar
    from fixtures.project import OVERRIDES, init_project
    from quasar.cli import main
    from quasar.services import PROJECT_ENV, feature_app

    for var in (*OVERRIDES, "QUASAR_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    root = init_project(tmp_path / "p", "clp")
    toml = (root / "quasar.toml").read_text()
    toml = toml.replace('redis_url = "redis://127.0.0.1:6379/0"',
                        f'redis_url = "{online_backend.url}"\ncluster = {str(online_backend.cluster).lower()}')
    (root / "quasar.toml").write_text(toml)
    (root / "data" / "events").mkdir(parents=True)
    users = list(range(40))
    ts = [datetime(2026, 1, d, 5, tzinfo=UTC) for d in (1, 2) for _ in users]
    pq.write_table(pa.table({"user_id": users * 2, "ts": pa.array(ts, pa.timestamp("us", "UTC"))}),
                   root / "data" / "events" / "e.parquet")
    (root / "signals.py").write_text(PROJECT_MODULE)

    def run(*args: str, answer: str | None = None) -> str:
        result = CliRunner().invoke(main, ["-C", str(root), *args], input=answer)
        assert result.exit_code == 0, result.output
        return result.output

    run("register", "signals.py")
    run("backfill", "daily", "--start", "2026-01-01", "--end", "2026-01-03")
    run("materialize")
    report = json.loads(run("consistency", "daily", "--json", "--seed", "1"))
    with quasar.Platform.open(root) as p:
        store = p.online_store
        assert isinstance(store, RedisOnlineStore) and store.cluster is online_backend.cluster
        signal_ = p.registry.signal("daily", 1).signal
        assert sorted(k for batch in store.scan(signal_, 1) for k in batch) == users
    assert report["consistent"] and (report["population"], report["online_population"]) == (40, 40)
    assert [(f["feature"], f["matches"]) for f in report["features"]] == [("n_1d", 40)]

    monkeypatch.setenv(PROJECT_ENV, str(root))
    with LiveServer(feature_app()) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        health = client.get("/healthz")
        got = client.post("/v1/features", json={"entities": {"user_id": [0, 39, 99]}, "features": ["daily:n_1d"]})
    assert health.status_code == 200, health.text
    assert got.status_code == 200, got.text
    assert column(got.json(), "n_1d")["values"] == [1, 1, None]

    run("delete", "daily", answer="y\n")
    client_ = online_backend.client()
    try:
        assert [k for k in client_.scan_iter(match="clp:*")] == []
    finally:
        client_.close()
