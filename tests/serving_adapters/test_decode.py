"""The scorer decodes only the features a model reads (``columns_from_records(features=...)``), against a real Redis:
the same values, nulls, event times and statuses as the full decode, the same errors for damaged records, and
the same input table, FeatureBatch and scores as the full read of before."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import redis
import torch

from quasar.examples.ranker import Ranker
from quasar.online.keys import entity_keys, field_name
from quasar.online.redis_store import AsyncRedisOnlineStore, RedisOnlineStore
from quasar.online.store import columns_from_records, now_us
from quasar.serving_adapters.bundle import BundleSpec, InputColumn, save_bundle
from quasar.serving_adapters.features import (
    assemble_feature_table,
    build_request_batch,
    check_keys,
    fetch_online,
)
from quasar.serving_adapters.models import ModelRegistry, static_resolver
from quasar.serving_adapters.runner import ModelRunner
from quasar.serving_adapters.scorer import Scorer
from quasar.signals import (
    Bool,
    Entity,
    Float64,
    IdList,
    Int64,
    Source,
    String,
    Timestamp,
    Vector,
    WeightedIdList,
    signal,
)
from quasar.signals.errors import SchemaError, SchemaMismatchError
from quasar.signals.ufr.tensors import InputSpec

PROJECT = "decodetest"
DIM = 4
d_user = Entity(name="user", join_key="user_id")
d_pin = Entity(name="pin", join_key="pin_id")
_src = Source.parquet(name="decode_events", path="data/decode", timestamp="ts")


@signal(entity=d_user, source=_src, ttl=timedelta(days=7), online=True,
        features={"clicks": Int64(), "country": String(), "taste": Vector(DIM), "recent": IdList()})
def dec_user(batch: pa.Table) -> pa.Table:
    return batch


@signal(entity=d_pin, source=_src, ttl=timedelta(days=7), online=True,
        features={"flag": Bool(), "ctr": Float64(), "category": String(), "embedding": Vector(DIM, "float16"),
                  "topics": IdList(), "dwell": WeightedIdList(), "made": Timestamp()})
def dec_pin(batch: pa.Table) -> pa.Table:
    return batch


USERS, PINS = 30, 300          # the last 5 of each never written (NOT_FOUND); every 7th written 10 days ago (stale)


def _column(rng: np.random.Generator, ftype: object, n: int) -> pa.Array:
    nulls = rng.random(n) < 0.2
    if isinstance(ftype, Vector):
        values = rng.normal(size=n * ftype.dim).astype(ftype.element_numpy_dtype)
        return pa.FixedSizeListArray.from_arrays(pa.array(values), ftype.dim, mask=pa.array(nulls))
    if isinstance(ftype, IdList | WeightedIdList):
        counts = rng.integers(0, 5, n)
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        ids = pa.array(rng.integers(0, 1000, int(counts.sum())), pa.int64())
        if isinstance(ftype, WeightedIdList):
            weights = pa.array(rng.random(int(counts.sum())).astype(np.float32))
            ids = pa.StructArray.from_arrays([ids, weights], fields=list(ftype.arrow_type().value_type))
        return pa.ListArray.from_arrays(offsets, ids, type=ftype.arrow_type(), mask=pa.array(nulls))
    if isinstance(ftype, String):
        return pa.array([f"ü{i % 5}" * (i % 3) for i in range(n)], pa.string(), mask=nulls)
    if isinstance(ftype, Bool):
        return pa.array(rng.random(n) < 0.5, pa.bool_(), mask=nulls)
    if isinstance(ftype, Timestamp):
        return pa.array(rng.integers(1_700_000_000_000_000, 1_800_000_000_000_000, n), pa.int64()).cast(
            ftype.arrow_type())
    if isinstance(ftype, Int64):
        return pa.array(rng.integers(0, 100, n), pa.int64(), mask=nulls)
    return pa.array(rng.random(n), pa.float64(), mask=nulls)


def _write(url: str) -> None:
    rng = np.random.default_rng(3)
    now = datetime.now(UTC)
    store = RedisOnlineStore(url, project=PROJECT)
    try:
        for sig, n in ((dec_user, USERS - 5), (dec_pin, PINS - 5)):
            times = [now - timedelta(days=10 if i % 7 == 0 else 1) for i in range(n)]
            columns = {sig.entity.join_key: pa.array(np.arange(n), pa.int64()),
                       "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC"))}
            columns.update({f: _column(rng, t, n) for f, t in sig.schema})
            store.write(sig, 1, pa.table(columns))
    finally:
        store.close()


@pytest.fixture
def decode_redis(redis_url: str) -> str:
    _write(redis_url)
    return redis_url


def _records(url: str, sig: object, keys: list[int]) -> list[bytes | None]:
    client = redis.Redis.from_url(url)
    try:
        hashes = entity_keys(PROJECT, sig.entity, keys)  # type: ignore[attr-defined]
        pipe = client.pipeline(transaction=False)
        for h in hashes:
            pipe.hget(h, field_name(sig.name, 1))  # type: ignore[attr-defined]
        return pipe.execute()
    finally:
        client.close()


@pytest.mark.parametrize("features", [["embedding"], ["ctr", "embedding"], ["category", "dwell"], ["topics"],
                                      ["made", "flag", "ctr"], ["flag", "ctr", "category", "embedding", "topics",
                                                                "dwell", "made"]])
def test_decoding_some_features_equals_the_full_decode_of_them(decode_redis: str, features: list[str]) -> None:
    keys = [*range(PINS), *range(0, PINS, 3)]       # every pin (absent and stale ones included), some twice
    records = _records(decode_redis, dec_pin, keys)
    assert records.count(None) == sum(k >= PINS - 5 for k in keys)
    now = now_us()
    for rows in (records, records[:12], records[PINS - 8:PINS]):      # numpy path, small path (some absent)
        got = columns_from_records(dec_pin, 1, rows, now=now, features=features)
        full = columns_from_records(dec_pin, 1, rows, now=now)
        kept = [n for n in dec_pin.schema.names if n in features]
        assert got.table.column_names == kept
        assert got.table.equals(full.table.select(kept))
        np.testing.assert_array_equal(got.event_time_us, full.event_time_us)
        assert sorted(got.status) == sorted(kept)
        for name in kept:
            np.testing.assert_array_equal(got.status[name], full.status[name])
            assert got.status[name].dtype == full.status[name].dtype
    statuses = columns_from_records(dec_pin, 1, records, now=now, features=["ctr"]).status["ctr"]
    assert set(statuses.tolist()) == {0, 1, 2, 3}        # present, not found, null and stale all met


def _damaged(records: list[bytes | None], index: int, change: object) -> list[bytes | None]:
    out = list(records)
    out[index] = change(out[index])  # type: ignore[operator]
    return out


@pytest.mark.parametrize("change, error, text", [
    (lambda r: r[:1] + b"\x09" + r[2:], SchemaError, "format version 9"),
    (lambda r: r[:2] + bytes(8) + r[10:], SchemaMismatchError, "fingerprint"),
    (lambda r: r[:-1], SchemaError, "truncated"),
    (lambda r: r + b"x", SchemaError, "too long"),
    (lambda r: b"\x00" + r[1:], SchemaError, "magic"),
])
def test_a_damaged_record_fails_with_the_codecs_own_error(decode_redis: str, change: object, error: type,
                                                          text: str) -> None:
    records = _records(decode_redis, dec_pin, list(range(40)))
    damaged = _damaged(records, 23, change)
    with pytest.raises(error, match=text) as got:
        columns_from_records(dec_pin, 1, damaged, now=now_us(), features=["embedding"])
    with pytest.raises(error) as expected:
        columns_from_records(dec_pin, 1, damaged, now=now_us())
    assert str(got.value) == str(expected.value)
    assert "index 23" in str(got.value)


def _save_model(folder: Path) -> None:
    request = [("dec_user", "clicks"), ("dec_user", "taste"), ("dec_user", "recent")]
    candidate = [("dec_pin", "ctr"), ("dec_pin", "embedding")]        # not category, topics, dwell, flag, made
    types = {"dec_user": dec_user.schema, "dec_pin": dec_pin.schema}
    spec = InputSpec(features=tuple((f"{s}__{f}", types[s].type_of(f)) for s, f in request + candidate))
    inputs = tuple(InputColumn(column=f"{s}__{f}", ref=f"{s}@1:{f}", role="request") for s, f in request)
    inputs += tuple(InputColumn(column=f"{s}__{f}", ref=f"{s}@1:{f}", role="candidate") for s, f in candidate)
    kwargs = {"dense_dim": 2, "vector_pair": ["dec_user__taste", "dec_pin__embedding"], "id_list": "dec_user__recent",
              "buckets": 64, "emb_dim": 4, "hidden": 8}
    torch.manual_seed(0)
    save_bundle(folder, BundleSpec(name="subset", model_class="quasar.examples.ranker:Ranker", model_kwargs=kwargs,
                                   spec=spec, inputs=inputs, request_key="user_id", candidate_key="pin_id"),
                Ranker(**kwargs))


def test_a_model_reading_some_features_scores_as_with_the_full_read(decode_redis: str, tmp_path: Path) -> None:
    """Coalesced requests through the scorer's projected decode give the input table, FeatureBatch and scores of
    the full read of every feature (the store's own ``read``, one request at a time)."""
    _save_model(tmp_path)
    models = ModelRegistry(tmp_path, static_resolver({"dec_user": {1: dec_user}, "dec_pin": {1: dec_pin}}))
    rng = np.random.default_rng(5)

    async def main() -> None:
        store = AsyncRedisOnlineStore(decode_redis, project=PROJECT)
        scorer = Scorer(models=models, store=store, device="cpu")
        try:
            model = await scorer.model("subset")
            keys = [check_keys(model, {"user_id": [u]}, {"pin_id": rng.integers(0, PINS, 40).tolist()})
                    for u in (0, 3, 7, USERS - 1, 12)]       # a stale user and an absent one among them
            fetched = await asyncio.gather(*(scorer.fetch(model, k) for k in keys))
            assert fetched[0].group is fetched[-1].group           # read together
            runner = ModelRunner(torch.device("cpu"))
            for k, got in zip(keys, fetched, strict=True):
                request, candidates = await fetch_online(store, model, k)
                table = assemble_feature_table(model, request, candidates, len(k.candidates))
                assert got.table.equals(table)
                batch = build_request_batch(model, table)
                alone = runner(model, [batch])[0]
                mine = runner(model, [build_request_batch(model, got.table)])[0]
                torch.testing.assert_close(mine, alone, rtol=0, atol=0)
                scores, _ = await got.scores(scorer.batcher)
                torch.testing.assert_close(scores, alone, rtol=1e-5, atol=1e-6)
        finally:
            await scorer.close()
            await store.aclose()

    asyncio.run(main())
