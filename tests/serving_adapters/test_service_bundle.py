"""Model bundles of a feature service: ``save_bundle(model, features="ranker")`` records the service version,
and ``quasar score-serve`` (a subprocess, over a socket) reads exactly that service's features, its
request-time ones computed from ``request_data`` after the stored ones are read: the values the model used equal
``Platform.training_dataset`` of the same spine bit for bit, for one candidate (row mode) and for a hundred
(batch mode); request-field and request-function errors answer 422 naming them; nothing outside the service is
read from Redis; and the bundle keeps its inputs when a new signal version serves.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import redis
import torch

from fixtures.own_model import get_json, score_serve
from fixtures.prometheus import sample_value
from fixtures.request_world import END, START, World, build_world, spine_of
from quasar.online.redis_store import AsyncRedisOnlineStore
from quasar.serving_adapters.bundle import load_bundle
from quasar.serving_adapters.models import ModelRegistry, registry_resolver
from quasar.serving_adapters.scorer import Scorer
from quasar.signals.request import ROW_MODE_MAX_ROWS
from quasar.signals.ufr.tensors import build_feature_batch

MODEL_MODULE = '''\
"""A probe model: a fixed linear function of every input value and its mask, so the score depends on each."""
import torch
from torch import nn


class Probe(nn.Module):
    def __init__(self, dense_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * dense_dim, 1, dtype=torch.float64)

    def forward(self, batch) -> torch.Tensor:
        x = torch.cat([batch.dense.double(), batch.dense_mask.double()], dim=1)
        return self.linear(x).squeeze(1).float()
'''

OUTPUTS = ["user_stats__clicks", "ctr_boost__boost", "ctr_boost__long_query", "pin_score__score"]


@pytest.fixture
def world(tmp_path: Path, project_env: str, monkeypatch: pytest.MonkeyPatch) -> World:
    made = build_world(tmp_path / "rt")
    (made.root / "rt_model.py").write_text(MODEL_MODULE)
    monkeypatch.syspath_prepend(str(made.root))
    sys.modules.pop("rt_model", None)
    return made


def save_probe(world: World, features: Any = "ranker", name: str = "probe") -> torch.nn.Module:
    from rt_model import Probe  # type: ignore[import-not-found]

    from quasar.serving import save_bundle

    torch.manual_seed(3)
    model = Probe(dense_dim=len(OUTPUTS))
    save_bundle(model, features=features, name=name, project=world.platform, candidate="pin",
                model_kwargs={"dense_dim": len(OUTPUTS)})
    return model


def a_request(world: World, n: int, user: int | None = None) -> dict[str, Any]:
    """One user and ``n`` pins (some unknown), a position per candidate and one query for all of them."""
    rng = world.rng
    return {"user": world.users[0] if user is None else user,
            "pins": [rng.choice([*world.pins, 20999]) for _ in range(n)],
            "position": [rng.randrange(0, 12) for _ in range(n)],
            "query": rng.choice(["cat", "red shoes", "how to plant tulips"])}


def body(req: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "probe", "entities": {"user_id": [req["user"]]}, "candidates": {"pin_id": req["pins"]},
            "request_data": {"position": req["position"], "query": [req["query"]]}, **extra}


def offline(world: World, req: dict[str, Any], features: str = "ranker") -> pa.Table:
    """The training dataset of the request's rows as of now (the query broadcast to every row)."""
    n = len(req["pins"])
    spine = spine_of({"user_id": [req["user"]] * n, "pin_id": req["pins"], "position": req["position"],
                      "query": [req["query"]] * n}, datetime.now(UTC))
    return world.platform.training_dataset(spine, features, full_names=True)


def model_scores(world: World, model: torch.nn.Module, table: pa.Table) -> list[float]:
    spec = load_bundle(world.root / "models", "probe").spec.spec
    model.eval()
    with torch.inference_mode():
        return [float(s) for s in model(build_feature_batch(table, spec))]


def served_columns(features: dict[str, Any]) -> dict[str, list[Any]]:
    names = features["metadata"]["feature_names"]
    return {n: r["values"] for n, r in zip(names, features["results"], strict=True)}


def test_a_service_bundle_is_served_with_the_training_values_bit_for_bit(world: World, tmp_path: Path) -> None:
    model = save_probe(world)
    recorded = json.loads((world.root / "models" / "probe" / "bundle.json").read_text())
    service = world.platform.registry.service("ranker")
    assert recorded["service"] == {"name": "ranker", "version": service.version, "full_names": True}
    assert [(c["column"], c["role"]) for c in recorded["inputs"]] == [
        ("user_stats__clicks", "request"), ("ctr_boost__boost", "computed"), ("ctr_boost__long_query", "computed"),
        ("pin_score__score", "computed")]
    ctr_boost = world.platform.feature_lists.lookup("ctr_boost", None)
    assert ctr_boost is not None
    answered: list[tuple[dict[str, Any], dict[str, Any]]] = []

    with score_serve(world.root, world.platform.config.online.redis_url, cwd=tmp_path, logs=tmp_path) as server:
        status, health = get_json(f"{server.url}/healthz")
        assert status == 200, server.output()[-3000:]
        loaded = {m["name"]: m for m in health["models"]}
        assert loaded["probe"]["state"] == "loaded", loaded
        assert loaded["probe"]["service"] == f"ranker@{service.version}"
        assert loaded["probe"]["request_fields"] == ["position", "query"]
        for n, mode in ((1, "row"), (100, "batch")):
            assert ctr_boost[0].mode_for(n) == mode            # the function form the scorer and dataset run
            req = a_request(world, n, user=world.users[n % len(world.users)])
            status, scored = get_json(f"{server.url}/v1/score", body=body(req, return_features=True))
            assert status == 200, scored
            table = offline(world, req)
            served = served_columns(scored["features"])
            assert served["user_id"] == [req["user"]] * n and served["pin_id"] == req["pins"]
            for column in OUTPUTS:                                  # every value the model read, bit for bit
                assert served[column] == table.column(column).to_pylist(), (n, column)
            assert scored["scores"] == model_scores(world, model, table), n
            answered.append((req, scored))
        assert n > ROW_MODE_MAX_ROWS

        # errors a caller can make answer 422 naming the field or the signal, never 500
        req = a_request(world, 3)
        cases = {
            "position": {**body(req), "request_data": {"query": ["cat"]}},
            "'query'": {**body(req), "request_data": {"position": req["position"], "query": [1]}},
            "request_data.position": {**body(req), "request_data": {"position": [1, 2], "query": ["cat"]}},
            "'where'": {**body(req), "request_data": {**body(req)["request_data"], "where": ["x"]}},
        }
        for named, sent in cases.items():
            status, answer = get_json(f"{server.url}/v1/score", body=sent)
            assert status == 422 and named in answer["error"]["message"], (named, answer)
        # a request-time function that fails (0.5 ** -huge overflows in the row form) names its signal
        failing = {"user": next(u for u in world.users if _has_ctr(world, u)), "pins": [world.pins[0]],
                   "position": [-100_000], "query": "cat"}
        status, answer = get_json(f"{server.url}/v1/score", body=body(failing))
        assert status == 422 and answer["error"]["type"] == "RequestSignalError", answer
        assert "ctr_boost" in answer["error"]["message"]
        metrics = _text(f"{server.url}/metrics")
        assert 'status="500"' not in metrics
        assert sample_value(metrics, "quasar_feature_log_rows_total", outcome="dropped") == 0

    # the service logs (sample rate 1): every scored candidate is a row of ranker__log, flushed at shutdown
    from quasar.online.feature_log_tables import LogTables

    logged = LogTables(world.platform.catalog, world.platform.config.offline.namespace).read("ranker")
    assert logged.num_rows == sum(len(req["pins"]) for req, _ in answered)   # the failed requests are not logged
    by_request = {}
    for row in logged.to_pylist():
        by_request.setdefault(row["__request_id"], []).append(row)
    assert len(by_request) == len(answered)
    for req, scored in answered:
        rows = next(r for r in by_request.values() if len(r) == len(req["pins"]))
        served = served_columns(scored["features"])
        assert {r["__source"] for r in rows} == {"score-serve"} and {r["__model"] for r in rows} == {"probe"}
        assert {r["__service_version"] for r in rows} == {service.version}
        assert [r["__score"] for r in rows] == scored["scores"]
        assert [r["pin_id"] for r in rows] == req["pins"] and [r["user_id"] for r in rows] == served["user_id"]
        assert [r["position"] for r in rows] == req["position"]
        assert [r["query"] for r in rows] == [req["query"]] * len(req["pins"])
        for column in OUTPUTS:
            assert [r[column] for r in rows] == served[column], column


def _has_ctr(world: World, user: int) -> bool:
    got = world.platform.online_features({"user_id": [user]}, ["user_stats:ctr"])
    return got["results"][1]["values"][0] is not None


def _text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read().decode()


EXTRA = '''

@signal(entity=user, source=user_events, online=True, ttl="30d", features={"country_code": String()})
def user_extra(batch: pa.Table) -> pa.Table:
    """A user signal outside the ranker service."""
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"], "country_code": batch["country"]})
'''


def scorer_of(world: World, redis_url: str) -> tuple[Scorer, AsyncRedisOnlineStore]:
    p = world.platform
    models = ModelRegistry(p.config.path(p.config.serving.models), registry_resolver(p.registry), p.feature_lists)
    store = AsyncRedisOnlineStore(redis_url, project=p.config.project.name)
    return Scorer(models=models, store=store, device="cpu"), store


def test_the_scorer_reads_only_the_services_signals(world: World, project_env: str) -> None:
    p = world.platform
    (world.root / "signals.py").write_text((world.root / "signals.py").read_text() + EXTRA)
    before = p.registry.service("ranker").version
    p.register(world.root / "signals.py")
    p.backfill("user_extra", START, END)
    p.materialize(["user_extra"])
    assert p.registry.service("ranker").version == before           # the service did not change
    assert p.online_features({"user_id": world.users[:3]}, ["user_extra"])["results"][1]["statuses"] == \
        ["PRESENT"] * 3                                              # it is there to be read, by anyone asking
    save_probe(world)
    scorer, store = scorer_of(world, project_env)
    req = a_request(world, 20)
    loaded = scorer.models.get("probe")
    assert {(r.signal.name, r.version) for r in (*loaded.request_reads, *loaded.candidate_reads)} == {
        ("user_stats", 1), ("pin_stats", 1)}

    commands: list[list[str]] = []

    async def main() -> None:
        with _monitoring(project_env, commands):
            await scorer.score("probe", {"user_id": [req["user"]]}, {"pin_id": req["pins"]},
                               {"position": req["position"], "query": [req["query"]]})
        await scorer.close()
        await store.close()

    asyncio.run(main())
    reads = [c for c in commands if c and c[0].upper() == "HMGET"]
    assert reads, commands
    fields = {f for c in reads for f in c[2:]}
    assert fields == {"user_stats@1", "pin_stats@1"}, fields         # no user_extra@1, nothing else
    assert sum(1 for c in reads if ":user:" in c[1]) == 1             # the request entity read once


class _monitoring:
    """MONITOR Redis around a block: the commands land in ``into`` when the block ends."""

    def __init__(self, url: str, into: list[list[str]]) -> None:
        self.url, self.into = url, into
        self.ready = threading.Event()

    def _listen(self) -> None:
        client = redis.Redis.from_url(self.url)
        with client.monitor() as m:
            self.ready.set()
            for command in m.listen():
                words = [w.strip('"') for w in command["command"].split(" ")]
                if words[:2] == ["ECHO", "quasar-monitor-stop"]:
                    return
                self.into.append(words)

    def __enter__(self) -> _monitoring:
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        redis.Redis.from_url(self.url).echo("quasar-monitor-stop")
        self.thread.join(10)


def test_a_bundle_keeps_its_inputs_when_a_new_signal_version_serves(world: World, project_env: str) -> None:
    p = world.platform
    save_probe(world)
    pinned = p.registry.service("ranker")
    assert pinned.service.pins["user_stats"] == 1
    # user_stats v2 doubles the clicks; backfilled and materialized, it becomes the serving version
    source = (world.root / "signals.py").read_text()
    changed = source.replace('    """Source rows as they are."""\n    return batch.rename_columns(["event_timestamp" '
                             'if c == "ts" else c for c in batch.column_names])\n\n\n@signal(entity=pin',
                             '    """Source rows, clicks doubled."""\n    import pyarrow.compute as pc\n'
                             '    batch = batch.set_column(batch.schema.get_field_index("clicks"), "clicks", '
                             'pc.multiply(batch["clicks"], 2))\n'
                             '    return batch.rename_columns(["event_timestamp" if c == "ts" else c for c in '
                             'batch.column_names])\n\n\n@signal(entity=pin', 1)
    assert changed != source
    (world.root / "signals.py").write_text(changed)
    p.register(world.root / "signals.py")
    p.backfill("user_stats", START, END)
    p.materialize(["user_stats"])
    p.register(world.root / "signals.py")                         # the service re-pins to the new serving version
    assert p.registry.resolve("user_stats").version == 2
    newer = p.registry.service("ranker")
    assert newer.version > pinned.version and newer.service.pins["user_stats"] == 2

    scorer, store = scorer_of(world, project_env)
    user = next(u for u in world.users if _clicks(world, u))
    req = a_request(world, 12, user=user)

    async def main() -> pa.Table:
        try:
            return await scorer.features("probe", {"user_id": [user]}, {"pin_id": req["pins"]},
                                         {"position": req["position"], "query": [req["query"]]})
        finally:
            await scorer.close()
            await store.close()

    used = asyncio.run(main())
    assert scorer.models.get("probe").service.version == pinned.version
    kept = offline(world, req, f"ranker@{pinned.version}")
    moved = offline(world, req, "ranker")
    for column in OUTPUTS:
        assert used.column(column).to_pylist() == kept.column(column).to_pylist(), column
    assert used.column("user_stats__clicks").to_pylist() != moved.column("user_stats__clicks").to_pylist()


def _clicks(world: World, user: int) -> bool:
    got = world.platform.online_features({"user_id": [user]}, ["user_stats@1:clicks"])
    return bool(got["results"][1]["values"][0])


def test_a_full_log_queue_drops_and_counts_without_failing_a_request(world: World, project_env: str) -> None:
    import httpx

    from quasar.online.feature_log import FeatureLogger
    from quasar.online.feature_log_tables import LogTables
    from quasar.serving_adapters.service import create_scoring_app

    p = world.platform
    save_probe(world)
    models = ModelRegistry(p.config.path(p.config.serving.models), registry_resolver(p.registry), p.feature_lists)
    store = AsyncRedisOnlineStore(project_env, project=p.config.project.name)

    def logger(observe: Any) -> FeatureLogger:          # room for 5 rows in the queue
        return FeatureLogger(lambda: p.catalog, p.config.offline.namespace, max_queue=5, observe=observe)

    app = create_scoring_app(models=models, store=store, device="cpu", feature_logger=logger, close_store=True)
    big, small = a_request(world, 20), a_request(world, 3)

    async def main() -> tuple[list[Any], str]:
        answers = []
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://scorer") as client:
                for req, rid in ((big, "big-1"), (small, "small-1")):
                    answers.append(await client.post("/v1/score", json=body(req), headers={"X-Request-ID": rid}))
                metrics = (await client.get("/metrics")).text
        return answers, metrics

    answers, metrics = asyncio.run(main())
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert [a.headers["x-request-id"] for a in answers] == ["big-1", "small-1"]
    assert len(answers[0].json()["scores"]) == 20                    # served in full, though not logged
    assert sample_value(metrics, "quasar_feature_log_rows_total", outcome="dropped") == 20
    logged = LogTables(p.catalog, p.config.offline.namespace).read("ranker")     # flushed at shutdown
    assert logged.column("__request_id").to_pylist() == ["small-1"] * 3
    assert logged.column("__score").to_pylist() == answers[1].json()["scores"]


def test_coalesced_requests_of_a_service_bundle_answer_as_alone_and_fail_alone(world: World,
                                                                              project_env: str) -> None:
    """Concurrent requests with their own request_data share round trips; each one's request-time features
    are its own (equal to the same request scored alone), and one whose request-time function fails answers
    its error while the others of its group are scored."""
    from quasar.signals.request import RequestSignalError

    save_probe(world)
    scorer, store = scorer_of(world, project_env)
    reqs = [a_request(world, n, user=world.users[i % len(world.users)]) for i, n in enumerate((1, 3, 40, 7, 100, 2))]
    failing = {"user": next(u for u in world.users if _has_ctr(world, u)), "pins": [world.pins[0]],
               "position": [-100_000], "query": "cat"}

    async def score(req: dict[str, Any]) -> Any:
        return await scorer.score("probe", {"user_id": [req["user"]]}, {"pin_id": req["pins"]},
                                  {"position": req["position"], "query": [req["query"]]}, return_features=True)

    async def main() -> tuple[list[Any], list[Any], float]:
        try:
            alone = [await score(r) for r in reqs]
            together = await asyncio.gather(*(score(r) for r in [*reqs[:3], failing, *reqs[3:]]),
                                            return_exceptions=True)
            text = scorer.metrics.render().decode()
            return alone, list(together), (sample_value(text, "quasar_scorer_fetch_requests_count", model="probe")
                                           or 0.0)
        finally:
            await scorer.close()
            await store.close()

    alone, together, fetches = asyncio.run(main())
    error = together.pop(3)
    assert isinstance(error, RequestSignalError) and "ctr_boost" in str(error), error
    for a, b in zip(alone, together, strict=True):
        assert not isinstance(b, BaseException), b
        assert b.features == a.features
        torch.testing.assert_close(b.scores, a.scores, rtol=1e-5, atol=1e-6)
    assert fetches - len(reqs) < len(reqs) + 1              # the 7 concurrent requests shared round trips
