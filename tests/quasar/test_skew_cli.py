"""``quasar skew`` on the request world: requests served through the product's online read path and logged with
the FeatureLogger report no skew while Redis agrees with Iceberg; after Redis is changed behind the platform's
back (a newer record with other values for one user, the record of another deleted) the report names exactly
those users' rows, for the stored feature and for the request-time features computed from it, and nothing else.
The log is a training spine as it is."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import redis
from click.testing import CliRunner

from fixtures.request_world import World, build_world
from quasar.cli import SKEW_EXIT, main
from quasar.online.feature_log import FeatureLogger, served_vectors_from
from quasar.online.response import plan_request, read_online_features
from quasar.registry.feature_lists import Expanded

FEATURES = ["clicks", "boost", "long_query", "score"]


def _expanded(world: World) -> Expanded:
    p = world.platform

    def resolve(name: str, version: int | None) -> tuple[Any, int]:
        sv = p.registry.resolve(name, version)
        return sv.signal, sv.version

    return p.feature_lists.expand("ranker", resolve)


def _serve(world: World, logger: FeatureLogger, expanded: Expanded, request: dict[str, list[Any]]) -> None:
    """Answer ``request`` as ``quasar serve`` does (plan, read Redis, run request-time signals) and log it."""
    keys = {k: request[k] for k in ("user_id", "pin_id")}
    fields = {k: request[k] for k in ("position", "query")}
    plan = plan_request(keys, expanded.refs, expanded.resolve, lookup=expanded.lookup, request_data=fields)
    response = read_online_features(world.platform.online_store, plan)
    service = expanded.service
    assert service is not None
    assert logger.submit(served_vectors_from(plan, response, service=service.name, service_version=service.version,
                                             sample_rate=1.0))


def _requests(world: World, users: list[int]) -> list[dict[str, list[Any]]]:
    """One-row requests (row mode) and larger ones (batch mode) over ``users`` and random others."""
    out = [world.request(1) for _ in range(3)] + [world.request(12), world.request(30)]
    for u in users:
        for n in (1, 10):
            r = world.request(n)
            r["user_id"] = [u] * n
            r["pin_id"] = [world.rng.choice(world.pins) for _ in range(n)]      # known pins: score has a value
            out.append(r)
    return out


def _skew(root: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(main, ["-C", str(root), "skew", "ranker", "--json", *args])
    assert result.exit_code in (0, SKEW_EXIT), result.output
    return result.exit_code, json.loads(result.output)


def test_skew_is_zero_on_a_consistent_world_and_names_the_rows_redis_changed(tmp_path: Path,
                                                                             project_env: str) -> None:
    world = build_world(tmp_path)
    p = world.platform
    expanded = _expanded(world)
    online = p.online_features({"user_id": world.users}, ["user_stats:clicks", "user_stats:ctr"])
    clicks, ctr = online["results"][1]["values"], online["results"][2]["values"]
    full = [u for u, c, r in zip(world.users, clicks, ctr, strict=True) if c is not None and r is not None]
    changed, deleted = full[0], full[1]

    with FeatureLogger(lambda: p.catalog, p.config.offline.namespace) as logger:
        for request in _requests(world, [changed, deleted]):
            _serve(world, logger, expanded, request)
    first_rows = logger.stats.logged_rows
    assert first_rows > 0 and logger.stats.failed_rows == 0

    code, report = _skew(tmp_path, "--fail-on-mismatch")
    assert code == 0 and report["consistent"] and report["rows"] == first_rows and report["versions"] == [1]
    assert [f["feature"] for f in report["features"]] == FEATURES
    for f in report["features"]:
        assert f["rows"] == first_rows and (f["mismatch"], f["missing_online"], f["missing_offline"]) == (0, 0, 0)
    text = CliRunner().invoke(main, ["-C", str(tmp_path), "skew", "ranker"])
    assert text.exit_code == 0 and "online equals offline" in text.output and "boost" in text.output

    # the log is a training spine: the offline dataset of what was served equals what was served
    spine = p.feature_log("ranker")
    assert spine.num_rows == first_rows and not set(FEATURES) & set(spine.column_names)
    offline = p.training_dataset(spine, "ranker")
    served = p.feature_log("ranker", features=True)
    for name in FEATURES:
        assert offline.column(name).to_pylist() == served.column(name).to_pylist(), name

    # Redis changed behind the platform's back: a newer record with other values, and a deleted record
    between = datetime.now(UTC)
    sig = p.registry.resolve("user_stats").signal
    p.push("user_stats", pa.table({"user_id": pa.array([changed], pa.int64()),
                                   "event_timestamp": pa.array([between], pa.timestamp("us", "UTC")),
                                   "clicks": pa.array([123_456], pa.int64()),
                                   "ctr": pa.array([0.0625], pa.float32()),
                                   "country": pa.array(["zz"], pa.string())}))
    client = redis.Redis.from_url(project_env)
    assert client.hdel(f"rt:user:{deleted}", f"user_stats@{p.registry.resolve('user_stats').version}") == 1
    assert sig.name == "user_stats"

    with FeatureLogger(lambda: p.catalog, p.config.offline.namespace) as logger:
        second = _requests(world, [changed, deleted])
        for request in second:
            _serve(world, logger, expanded, request)
    rows = [(u, q) for r in second for u, q in zip(r["user_id"], r["pin_id"], strict=True)]
    n_changed = sum(u == changed for u, _ in rows)
    n_deleted = sum(u == deleted for u, _ in rows)
    known_pin = set(world.pins)
    score_changed = sum(u == changed and q in known_pin for u, q in rows)
    score_deleted = sum(u == deleted and q in known_pin for u, q in rows)

    code, report = _skew(tmp_path, "--start", between.isoformat(), "--fail-on-mismatch")
    assert code == SKEW_EXIT and not report["consistent"] and report["rows"] == len(rows)
    got = {f["feature"]: (f["mismatch"], f["missing_online"], f["missing_offline"]) for f in report["features"]}
    assert got == {"clicks": (n_changed, n_deleted, 0), "boost": (n_changed, n_deleted, 0),
                   "long_query": (0, 0, 0), "score": (score_changed, score_deleted, 0)}
    by_name = {f["feature"]: f for f in report["features"]}
    assert by_name["clicks"]["mismatch_rate"] == n_changed / len(rows)
    for name in ("clicks", "boost", "score"):
        examples = by_name[name]["examples"]
        assert examples and all(e["keys"]["user_id"] == (changed if e["kind"] == "mismatch" else deleted)
                                for e in examples)
    clicks_example = next(e for e in by_name["clicks"]["examples"] if e["kind"] == "mismatch")
    assert clicks_example["online"] == 123_456 and clicks_example["offline"] == clicks[world.users.index(changed)]

    # the whole log: the first requests still agree, so the rates halve-ish but the counts stay
    _, everything = _skew(tmp_path)
    assert everything["rows"] == first_rows + len(rows)
    assert {f["feature"]: f["mismatch"] for f in everything["features"]}["clicks"] == n_changed
    window = p.feature_log("ranker", start=between)
    assert window.num_rows == len(rows)
    assert pc.all(pc.greater_equal(window.column("event_timestamp"), pa.scalar(between, pa.timestamp("us", "UTC"))))


def test_skew_of_a_service_never_logged_is_a_clean_error(tmp_path: Path, project_env: str) -> None:
    build_world(tmp_path)
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "skew", "ranker"])
    assert result.exit_code == 1 and "no feature log yet" in result.output
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "skew", "nope"])
    assert result.exit_code == 1 and "ranker" in result.output             # names the registered services
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "skew", "ranker", "--start", "2026-02-01",
                                       "--end", "2026-01-01"])
    assert result.exit_code == 1 and "not after" in result.output


def test_skew_reads_the_log_quasar_serve_wrote(tmp_path: Path, project_env: str, monkeypatch: Any) -> None:
    import httpx

    from fixtures.feature_service import LiveServer
    from quasar.services import PROJECT_ENV, feature_app

    world = build_world(tmp_path)
    monkeypatch.setenv(PROJECT_ENV, str(world.root))
    sent = 0
    with LiveServer(feature_app()) as server:
        for n in (1, 1, 25):
            r = world.request(n)
            body = {"entities": {"user_id": r["user_id"], "pin_id": r["pin_id"]}, "feature_service": "ranker",
                    "request_data": {"position": r["position"], "query": r["query"]}}
            assert httpx.post(f"{server.url}/v1/features", json=body).status_code == 200
            sent += n
    code, report = _skew(tmp_path, "--fail-on-mismatch")          # the server flushed its log on shutdown
    assert code == 0 and report["consistent"] and report["rows"] == sent
    assert [f["feature"] for f in report["features"]] == FEATURES
