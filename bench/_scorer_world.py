"""The scorer benchmark's world: signals shaped like the example project, their rows in a throwaway Redis, the
ranker bundle (``bench/scorer.py``)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import redis
import torch

from quasar.examples.ranker import Ranker
from quasar.online.redis_store import RedisOnlineStore
from quasar.serving_adapters.bundle import BundleSpec, InputColumn, save_bundle
from quasar.signals import (
    Entity,
    Float64,
    IdList,
    Int64,
    Signal,
    Source,
    String,
    Timestamp,
    Vector,
    WeightedIdList,
    signal,
)
from quasar.signals.ufr.tensors import InputSpec

PROJECT = "benchscorer"
USERS, PINS, CANDIDATES, DIM = 10_000, 100_000, 100, 16

b_user = Entity(name="user", join_key="user_id")
b_pin = Entity(name="pin", join_key="pin_id")
_src = Source.parquet(name="bench_events", path="data/events", timestamp="ts")


def _identity(batch: pa.Table) -> pa.Table:
    return batch


def _signal(name: str, entity: Entity, features: dict[str, Any]) -> Signal:
    return signal(entity=entity, source=_src, ttl="30d", online=True, features=features, name=name)(_identity)


SIGNALS = [
    _signal("user_engagement", b_user, {"impressions_1d": Int64(), "clicks_7d": Int64(), "ctr_7d": Float64(),
                                        "dwell_1d": Float64()}),
    _signal("user_affinity", b_user, {"engagement_score": Float64()}),
    _signal("user_recent_pins", b_user, {"recent_pins": IdList(), "recent_dwell": WeightedIdList(),
                                         "clicks_1h": Int64()}),
    _signal("user_profile", b_user, {"taste": Vector(DIM), "country": String()}),
    _signal("pin_stats", b_pin, {"impressions_7d": Int64(), "ctr_7d": Float64()}),
    _signal("pin_profile", b_pin, {"embedding": Vector(DIM, "float16"), "category": String(), "topics": IdList(),
                                   "created_at": Timestamp()}),
]
REQUEST = ["user_engagement:impressions_1d", "user_engagement:clicks_7d", "user_engagement:ctr_7d",
           "user_engagement:dwell_1d", "user_affinity:engagement_score", "user_recent_pins:recent_pins",
           "user_profile:taste"]
CANDIDATE = ["pin_stats:impressions_7d", "pin_stats:ctr_7d", "pin_profile:embedding"]


# --- the world ------------------------------------------------------------------------------------------------


def _random_column(rng: np.random.Generator, ftype: Any, n: int) -> pa.Array:
    nulls = rng.random(n) < 0.05
    if isinstance(ftype, Vector):
        values = rng.normal(size=n * ftype.dim).astype(ftype.element_numpy_dtype)
        return pa.FixedSizeListArray.from_arrays(pa.array(values), ftype.dim, mask=pa.array(nulls))
    if isinstance(ftype, (IdList, WeightedIdList)):
        counts = rng.integers(0, 21, n)
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        ids = pa.array(rng.integers(0, PINS, int(counts.sum())), pa.int64())
        if isinstance(ftype, WeightedIdList):
            weights = pa.array(rng.random(int(counts.sum())).astype(np.float32))
            ids = pa.StructArray.from_arrays([ids, weights], fields=list(ftype.arrow_type().value_type))
        return pa.ListArray.from_arrays(offsets, ids, type=ftype.arrow_type(), mask=pa.array(nulls))
    if isinstance(ftype, String):
        return pa.array([f"c{i % 8}" for i in range(n)], pa.string(), mask=nulls)
    if isinstance(ftype, Timestamp):
        return pa.array(rng.integers(1_700_000_000_000_000, 1_800_000_000_000_000, n), pa.int64()).cast(
            ftype.arrow_type())
    if isinstance(ftype, Int64):
        return pa.array(rng.integers(0, 1000, n), pa.int64(), mask=nulls)
    return pa.array(rng.random(n), ftype.arrow_type(), mask=nulls)


def write_world(url: str, seed: int = 0) -> float:
    """Write one row per entity for every signal; return the seconds it took."""
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    store = RedisOnlineStore(url, project=PROJECT)
    started = time.perf_counter()
    for sig in SIGNALS:
        n = USERS if sig.entity is b_user else PINS
        key = sig.entity.join_key
        times = pa.array([now - timedelta(hours=1)] * n, pa.timestamp("us", tz="UTC"))
        columns = {key: pa.array(np.arange(n), pa.int64()), "event_timestamp": times}
        columns.update({f: _random_column(rng, t, n) for f, t in sig.schema})
        store.write(sig, 1, pa.table(columns))
    return time.perf_counter() - started


def save_ranker(folder: Path, seed: int = 0) -> None:
    by_name = {s.name: s for s in SIGNALS}

    def column(ref: str) -> str:
        return ref.replace(":", "__")

    refs = REQUEST + CANDIDATE
    spec = InputSpec(features=tuple((column(r), by_name[r.split(":")[0]].schema.type_of(r.split(":")[1]))
                                    for r in refs))
    inputs = tuple(InputColumn(column=column(r), ref=r.replace(":", "@1:"), role="request") for r in REQUEST)
    inputs += tuple(InputColumn(column=column(r), ref=r.replace(":", "@1:"), role="candidate") for r in CANDIDATE)
    kwargs: dict[str, Any] = {"dense_dim": sum(t.is_scalar for _, t in spec.features),
              "vector_pair": ["user_profile__taste", "pin_profile__embedding"], "id_list": "user_recent_pins__recent_pins"}
    torch.manual_seed(seed)
    bundle = BundleSpec(name="ranker", model_class="quasar.examples.ranker:Ranker", model_kwargs=kwargs, spec=spec,
                        inputs=inputs, request_key="user_id", candidate_key="pin_id")
    save_bundle(folder, bundle, Ranker(**kwargs))


# --- redis-server ----------------------------------------------------------------------------------------------


class ThrowawayRedis:
    """A redis-server on a free port in a temp folder, for this run only."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
