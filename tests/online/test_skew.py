"""No training/serving skew: random data of every UFR type goes through the whole pipeline (Parquet source ->
backfill into Iceberg -> materialize into Redis -> the HTTP service), and for random entities the online values
equal the offline values as of now, bit for bit, with the right status for missing entities, null values and
values older than the TTL."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import quasar
from fixtures.online import plain, random_rows
from fixtures.project import init_project
from quasar.signals.ufr.codec import encode
from quasar.signals.ufr.schema import EVENT_TIMESTAMP

MODULE = '''
import pyarrow as pa
from quasar.signals import (Bool, Entity, Float32, Float64, IdList, Int64, Source, String, Timestamp, Vector,
                     WeightedIdList, signal)

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")


@signal(entity=user, source=events, ttl="2d", online=True,
        features={"flag": Bool(), "clicks": Int64(), "ctr": Float32(), "score": Float64(), "name": String(),
                  "seen_at": Timestamp(), "taste": Vector(4), "half": Vector(3, "float16"), "recent": IdList(),
                  "weighted": WeightedIdList()})
def every_type(batch: pa.Table) -> pa.Table:
    """Source rows as they are, ts renamed to event_timestamp."""
    return batch.rename_columns(["event_timestamp" if c == "ts" else c for c in batch.column_names])
'''
TTL = timedelta(days=2)
KEYS = 300


def _times(rng: np.random.Generator, n: int, now: datetime) -> list[datetime]:
    """Up to 4 days back, keeping 10 minutes clear of the TTL bound so the test's 'now' and the service's agree."""
    seconds = rng.integers(0, 4 * 86_400, n)
    bound = int(TTL.total_seconds())
    seconds = np.where(np.abs(seconds - bound) < 600, seconds + 1_200, seconds)
    return [now - timedelta(seconds=int(s)) for s in seconds]


@pytest.fixture
def project(tmp_path: Path, project_env: str) -> Path:
    init_project(tmp_path, "skew")
    (tmp_path / "signals.py").write_text(MODULE)
    return tmp_path


def test_online_values_equal_offline_values_as_of_now(project: Path) -> None:
    rng = np.random.default_rng(42)
    now = datetime.now(UTC).replace(microsecond=0)
    with quasar.Platform.open(project) as p:
        p.register("signals.py")
        sig = p.registry.signal("every_type").signal
        # 300 keys with 1 to 6 rows each (so "latest" matters), some stale, ~20% nulls per feature
        keys = np.repeat(np.arange(KEYS), rng.integers(1, 7, KEYS))
        rows = random_rows(sig, keys.tolist(), seed=7, times=_times(rng, len(keys), now))
        source = rows.rename_columns(["ts" if c == EVENT_TIMESTAMP else c for c in rows.column_names])
        (project / "data" / "events").mkdir(parents=True)
        for i, part in enumerate(np.array_split(np.arange(source.num_rows), 3)):
            pq.write_table(source.take(pa.array(part)), project / "data" / "events" / f"part-{i}.parquet")
        day = now.replace(hour=0, minute=0, second=0)
        p.backfill("every_type", day - timedelta(days=5), day + timedelta(days=1))
        assert p.materialize()[0].entities == KEYS

        asked = [int(k) for k in rng.choice(KEYS + 60, 120, replace=False)]   # keys >= 300 do not exist
        # offline, as of now: the trainer's view, and the latest stored row of each key
        spine = pa.table({"user_id": pa.array(asked, pa.int64()),
                          "event_timestamp": pa.array([now] * len(asked), pa.timestamp("us", "UTC"))})
        as_of_now = p.training_dataset(spine, ["every_type"])
        stored = p.offline.read(sig, 1)
        stored = stored.take(pc.sort_indices(stored, [("user_id", "ascending"), (EVENT_TIMESTAMP, "descending")]))
        latest = {}
        for row_index, key in enumerate(stored.column("user_id").to_pylist()):
            latest.setdefault(key, row_index)

        # online, in process: bit for bit where present, null everywhere else
        (got,) = p.online_store.read([(sig, 1)], asked)
        names = sig.schema.names
        assert plain(got.table.to_pylist()) == plain(as_of_now.select(names).to_pylist())
        fresh = [k for k in asked if k in latest
                 and stored.column(EVENT_TIMESTAMP)[latest[k]].as_py() >= now - TTL]
        expected_rows = stored.take(pa.array([latest[k] for k in fresh]))
        fresh_index = pa.array([asked.index(k) for k in fresh])
        online_rows = got.table.take(fresh_index).append_column(
            EVENT_TIMESTAMP, pa.array(got.event_time_us[fresh_index.to_numpy()], pa.int64()))
        assert encode(sig.schema, online_rows) == encode(sig.schema, expected_rows.select([EVENT_TIMESTAMP, *names]))
        assert len(fresh) > 20 and len(fresh) < len([k for k in asked if k in latest])   # some stale, some fresh

        # over HTTP: the same values, and every status from the offline rows
        expected_status: dict[str, list[str]] = {name: [] for name in names}
        for k in asked:
            for name in names:
                if k not in latest:
                    status = "NOT_FOUND"
                elif stored.column(EVENT_TIMESTAMP)[latest[k]].as_py() < now - TTL:
                    status = "OUTSIDE_MAX_AGE"
                elif not stored.column(name)[latest[k]].is_valid:
                    status = "NULL_VALUE"
                else:
                    status = "PRESENT"
                expected_status[name].append(status)
        answer = _http_features(project, {"user_id": asked}, ["every_type"])
        assert answer["metadata"]["feature_names"] == ["user_id", *names]
        assert answer["results"][0]["values"] == asked
        for name, result in zip(names, answer["results"][1:], strict=True):
            assert result["statuses"] == expected_status[name], name
        assert {s for column in expected_status.values() for s in column} == {
            "PRESENT", "NOT_FOUND", "NULL_VALUE", "OUTSIDE_MAX_AGE"}
        # JSON values: integers, strings and id lists exactly as stored; floats exactly as float32/float64
        for name in ["clicks", "name", "recent", "flag"]:
            http = answer["results"][1 + names.index(name)]["values"]
            assert http == as_of_now.column(name).to_pylist(), name
        for name in ["ctr", "score"]:
            http = answer["results"][1 + names.index(name)]["values"]
            offline = as_of_now.column(name).to_pylist()
            for h, o in zip(http, offline, strict=True):
                assert h == (None if o is None or math.isnan(o) else o), name


def _http_features(project: Path, entities: dict[str, list[Any]], features: list[str]) -> dict[str, Any]:
    import os

    from quasar.services import PROJECT_ENV, feature_app
    os.environ[PROJECT_ENV] = str(project)
    try:
        app = feature_app()
    finally:
        del os.environ[PROJECT_ENV]

    async def call() -> httpx.Response:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.post("/v1/features", json={"entities": entities, "features": features})

    response = asyncio.run(call())
    assert response.status_code == 200, response.text
    return dict(response.json())
