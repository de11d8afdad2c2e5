"""`quasar consistency`: after a materialization the online values equal the offline values as of now (zero
mismatches); rows changed behind its back in Redis (newer records with other values, deleted records, values
where offline has none) show up as exactly those mismatches, missing and extra values, per feature."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import redis
from click.testing import CliRunner

import quasar
from fixtures.project import init_project
from quasar.cli import main
from quasar.online.consistency import sample_keys
from quasar.online.redis_store import RedisOnlineStore
from quasar.signals.errors import QuasarError

MODULE = '''
import pyarrow as pa
from quasar.signals import Entity, Float32, Int64, Source, String, signal

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")


@signal(entity=user, source=events, online=True, features={"clicks": Int64(), "ctr": Float32(), "country": String()})
def user_stats(batch: pa.Table) -> pa.Table:
    """Source rows as they are."""
    return batch.rename_columns(["event_timestamp" if c == "ts" else c for c in batch.column_names])
'''
USERS = 50
NOW = datetime.now(UTC).replace(microsecond=0)


def _source(rng: np.random.Generator) -> pa.Table:
    keys = np.repeat(np.arange(1, USERS + 1), rng.integers(1, 5, USERS))
    n = len(keys)
    times = [NOW - timedelta(hours=1, seconds=int(s)) for s in rng.integers(0, 2 * 86_400, n)]
    ctr = rng.random(n).astype(np.float32)
    return pa.table({
        "user_id": pa.array(keys, pa.int64()), "ts": pa.array(times, pa.timestamp("us", "UTC")),
        "clicks": pa.array(rng.integers(0, 50, n), pa.int64()),
        "ctr": pa.array(ctr, pa.float32(), mask=rng.random(n) < 0.3),
        "country": pa.array(rng.choice(["FR", "US", "JP"], n).tolist(), pa.string()),
    })


def _latest(source: pa.Table) -> dict[int, dict[str, Any]]:
    latest: dict[int, dict[str, Any]] = {}
    for r in source.to_pylist():
        if r["user_id"] not in latest or r["ts"] > latest[r["user_id"]]["ts"]:
            latest[r["user_id"]] = r
    return latest


@pytest.fixture
def project(tmp_path: Path, project_env: str) -> Path:
    init_project(tmp_path, "cons")
    (tmp_path / "signals.py").write_text(MODULE)
    return tmp_path


def _cli(project: Path, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["-C", str(project), "consistency", "user_stats", *args, "--json"])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output))


def test_consistency_after_materialization_and_after_changes(project: Path, redis_url: str) -> None:
    source = _source(np.random.default_rng(8))
    (project / "data" / "events").mkdir(parents=True)
    pq.write_table(source, project / "data" / "events" / "part-0.parquet")
    latest = _latest(source)
    with quasar.Platform.open(project) as p:
        p.register("signals.py")
        day = NOW.replace(hour=0, minute=0, second=0)
        p.backfill("user_stats", day - timedelta(days=3), day + timedelta(days=1))

        # before materializing: every offline value is missing online
        before = p.consistency("user_stats")
        assert before.feature("clicks").missing == USERS and before.feature("clicks").rate("missing") == 1.0

        p.materialize()
        report = _cli(project)
        assert report["consistent"] is True and (report["sampled"], report["population"]) == (USERS, USERS)
        for f in report["features"]:
            assert (f["mismatches"], f["missing"], f["extra"]) == (0, 0, 0), f
            assert f["mismatch_rate"] == f["missing_rate"] == f["extra_rate"] == 0.0
            assert f["matches"] + f["both_null"] == USERS
        assert report["features"][1]["both_null"] > 0                  # some users' latest ctr is null

        # change rows behind its back
        sig = p.registry.signal("user_stats").signal
        changed = [1, 2, 3, 4, 5]                                  # newer records, other clicks
        deleted = [6, 7, 8]                                        # records gone from Redis
        null_ctr = [k for k in sorted(latest) if latest[k]["ctr"] is None and k > 8][:2]   # online gets a ctr
        rows = [{**latest[k], "ts": NOW - timedelta(minutes=5), "clicks": latest[k]["clicks"] + 100}
                for k in changed]
        rows += [{**latest[k], "ts": NOW - timedelta(minutes=5), "ctr": 0.5} for k in null_ctr]
        table = pa.Table.from_pylist(rows, schema=source.schema).rename_columns(
            ["user_id", "event_timestamp", "clicks", "ctr", "country"])
        with RedisOnlineStore(redis_url, project="cons") as store:
            assert store.write(sig, 1, table) == len(rows)
        client = redis.Redis.from_url(redis_url)
        for k in deleted:
            assert client.hdel(f"cons:user:{k}", "user_stats@1") == 1

        report = _cli(project)
        assert report["consistent"] is False
        clicks, ctr, country = report["features"]
        assert (clicks["mismatches"], clicks["missing"], clicks["extra"]) == (len(changed), len(deleted), 0)
        assert clicks["mismatch_rate"] == pytest.approx(len(changed) / USERS)
        assert clicks["missing_rate"] == pytest.approx(len(deleted) / USERS)
        mismatched = {e["key"]: e for e in clicks["examples"] if e["kind"] == "mismatch"}
        assert set(mismatched) == set(changed)
        assert all(e["online"] == e["offline"] + 100 for e in mismatched.values())
        deleted_with_ctr = [k for k in deleted if latest[k]["ctr"] is not None]
        assert (ctr["mismatches"], ctr["missing"], ctr["extra"]) == (0, len(deleted_with_ctr), len(null_ctr))
        assert (country["mismatches"], country["missing"], country["extra"]) == (0, len(deleted), 0)

        # a sample: reproducible with a seed, drawn from the offline entities
        small = _cli(project, "--sample", "10", "--seed", "3")
        assert 10 <= small["sampled"] <= 20 and small["population"] == USERS      # 10 offline and 10 online keys
        assert small == {**_cli(project, "--sample", "10", "--seed", "3"), "as_of": small["as_of"]}
        text = CliRunner().invoke(main, ["-C", str(project), "consistency", "user_stats"])
        assert text.exit_code == 0
        assert f"{USERS} of {USERS} entities sampled, online differs from offline" in text.output
        assert "clicks" in text.output and "10.00%" in text.output            # 5 of 50 mismatched


def test_entities_online_but_not_offline_are_extra(project: Path, redis_url: str) -> None:
    """Issue 13: consistency sampled offline keys only, so an entity deleted offline was never reported."""
    source = _source(np.random.default_rng(9))
    (project / "data" / "events").mkdir(parents=True)
    pq.write_table(source, project / "data" / "events" / "part-0.parquet")
    day = NOW.replace(hour=0, minute=0, second=0)
    with quasar.Platform.open(project) as p:
        p.register("signals.py")
        p.backfill("user_stats", day - timedelta(days=3), day + timedelta(days=1))
        p.materialize()
        assert p.consistency("user_stats").consistent
        sig = p.registry.signal("user_stats").signal
        p.online_store.write(sig, 1, pa.table({
            "user_id": pa.array([1000], pa.int64()),
            "event_timestamp": pa.array([NOW - timedelta(minutes=1)], pa.timestamp("us", "UTC")),
            "clicks": pa.array([1], pa.int64()), "ctr": pa.array([0.5], pa.float32()), "country": ["FR"]}))
        stray = p.consistency("user_stats")
        assert stray.feature("clicks").extra == 1 and stray.online_population == USERS + 1
        assert [e["key"] for e in stray.feature("clicks").examples] == [1000]

        # re-backfill without users 1 and 2: before materializing, online still has them: extra
        pq.write_table(source.filter(pc.greater(source.column("user_id"), 2)),
                       project / "data" / "events" / "part-0.parquet")
        p.backfill("user_stats", day - timedelta(days=3), day + timedelta(days=1))
        before = p.consistency("user_stats")
        assert before.feature("clicks").extra == 3 and before.feature("country").extra == 3
        assert {e["key"] for e in before.feature("clicks").examples} == {1, 2, 1000}
        p.materialize()
        after = p.consistency("user_stats")
        assert after.feature("clicks").extra == 1                                    # the pushed-like stray
        p.materialize(full=True)
        assert p.consistency("user_stats").consistent


def test_sample_keys() -> None:
    keys = pa.chunked_array([pa.array([5, 3, 3, None, 9, 1], pa.int64())])
    assert sample_keys(keys, 10) == [1, 3, 5, 9]
    assert sample_keys(keys, 2, seed=1) == sample_keys(keys, 2, seed=1)
    assert len(sample_keys(keys, 2)) == 2
    with pytest.raises(QuasarError, match="sample size must be a positive int"):
        sample_keys(keys, 0)
