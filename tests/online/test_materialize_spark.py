"""Issue 18 item 2: materialization on Spark gives the local path's Redis, byte for byte.

One project (``quasar init``), one Iceberg table backfilled from Parquet, two real redis-servers: the local
path materializes into one, the Spark path (``local[2]``, the session fixture) into the other, each with its own
watermark; after a first run, a re-backfill that changes, deletes and moves rows earlier (the correction
rules of ``quasar.online.materialize``), and a full rebuild, both servers hold the same keys, fields, records
and expiries, and the runs report the same counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

import quasar
from fixtures.bounds_project import D0, END, NOW, Row, write_source
from fixtures.project import init_project
from fixtures.redis_server import RedisServer
from quasar.online.materialize import materialize, state_key
from quasar.online.materialize_spark import materialize_spark
from quasar.online.redis_store import RedisOnlineStore

pytestmark = pytest.mark.spark

MODULE = '''
import pyarrow as pa
from quasar.signals import Entity, Int64, Source, String, signal

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")


@signal(entity=user, source=events, online=True, ttl="30d", features={"clicks": Int64(), "country": String()})
def user_stats(batch: pa.Table) -> pa.Table:
    """Source rows as they are."""
    return batch.rename_columns(["event_timestamp" if c == "ts" else c for c in batch.column_names])
'''


def at(day: int, hour: int) -> Any:
    return D0 + timedelta(days=day, hours=hour)


FIRST: list[Row] = [(k, at(k % 3, k % 7), 10 * k, "FR") for k in range(1, 40)] + [
    (1, at(2, 5), 11, "FR"), (3, at(2, 8), 31, "JP"), (5, at(0, 4), 50, "US")]
SECOND: list[Row] = [r for r in FIRST if r[0] not in (2, 7)  # 2 and 7: deleted
                     and not (r[0] == 3 and r[1] == at(2, 8))] + [  # 3: its latest row moves earlier
    (1, at(2, 5), 99, "DE"), (5, at(2, 1), 51, "US"), (40, at(1, 1), 400, "NEW")]


class _State:
    """The registry as the watermark store, under a key of its own (two watermarks for one signal version)."""

    def __init__(self, registry: Any, prefix: str) -> None:
        self.registry, self.prefix = registry, prefix

    def get_state(self, key: str) -> dict[str, Any] | None:
        return self.registry.get_state(self.prefix + key)  # type: ignore[no-any-return]

    def set_state(self, key: str, value: dict[str, Any]) -> None:
        self.registry.set_state(self.prefix + key, value)

    def start_run(self, **kwargs: Any) -> int:
        return self.registry.start_run(**kwargs)  # type: ignore[no-any-return]

    def finish_run(self, run_id: int, **kwargs: Any) -> None:
        self.registry.finish_run(run_id, **kwargs)


@pytest.fixture
def other_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis-spark"))
    server.start()
    yield server.url
    server.stop()


def dump(url: str) -> dict[bytes, tuple[dict[bytes, bytes], int]]:
    client = redis.Redis.from_url(url)
    try:
        return {k: (client.hgetall(k), int(client.pexpiretime(k))) for k in client.scan_iter(match="fix:*")}
    finally:
        client.close()


SAME = ("rows_written", "rows_deleted", "entities", "rows_read", "files_read", "incremental", "rebuilt",
        "snapshot_id", "rows_out_of_bounds")


def test_spark_materialize_writes_the_local_paths_redis(tmp_path: Path, project_env: str, other_redis: str,
                                                        spark: Any) -> None:
    init_project(tmp_path, "fix")
    config = tmp_path / "quasar.toml"
    config.write_text(config.read_text().replace('namespace = "signals"', 'namespace = "signals"\nbuckets = 4'))
    (tmp_path / "signals.py").write_text(MODULE)
    (tmp_path / "data" / "events").mkdir(parents=True)
    write_source(tmp_path, FIRST)
    with quasar.Platform.open(tmp_path) as p, RedisOnlineStore(other_redis, project="fix") as theirs:
        p.register("signals.py")
        sv = p.registry.signal("user_stats")
        local_state, spark_state = _State(p.registry, ""), _State(p.registry, "spark:")

        def both(**kw: Any) -> Any:
            mine = materialize(signal=sv.signal, version=sv.version, offline=p.offline, online=p.online_store,
                               state=local_state, now=NOW, **kw)
            other = materialize_spark(session=spark, signal=sv.signal, version=sv.version, offline=p.offline,
                                      online=theirs, state=spark_state, now=NOW, **kw)
            assert {f: getattr(other, f) for f in SAME} == {f: getattr(mine, f) for f in SAME}
            assert dump(other_redis) == dump(project_env)
            return other

        p.backfill("user_stats", D0, END)
        assert p.offline.bucket_count("user_stats", 1) not in (None, 1)     # several buckets: several tasks
        both()
        assert len(dump(project_env)) == 39
        write_source(tmp_path, SECOND)                                     # corrections: changed, deleted, earlier
        p.backfill("user_stats", D0, END)
        corrected = both()
        assert corrected.incremental and corrected.rows_deleted == 2
        stored = dump(project_env)
        assert b"fix:user:2" not in stored and b"fix:user:40" in stored
        assert p.registry.get_state("spark:" + state_key("user_stats", 1))["snapshot_id"] == \
            p.offline.current_snapshot_id("user_stats", 1)
        both()
        redis.Redis.from_url(other_redis).hset("fix:user:77", "user_stats@1", b"stray")
        redis.Redis.from_url(project_env).hset("fix:user:77", "user_stats@1", b"stray")
        both(full=True)                                                    # a rebuild drops the strays on both
        assert b"fix:user:77" not in dump(other_redis)


def test_the_cli_materializes_and_builds_a_dataset_on_spark(tmp_path: Path, project_env: str, spark: Any) -> None:
    """``quasar materialize --engine spark``, and ``quasar dataset --engine spark`` from a spine folder to an out
    folder (``quasar.store.engines.spark_dataset``)."""
    from click.testing import CliRunner

    from quasar.cli import main

    init_project(tmp_path, "fix")
    (tmp_path / "signals.py").write_text(MODULE)
    (tmp_path / "data" / "events").mkdir(parents=True)
    write_source(tmp_path, FIRST[:5])
    with quasar.Platform.open(tmp_path) as p:
        p.register("signals.py")
        p.backfill("user_stats", D0, END)
    result = CliRunner().invoke(main, ["--project", str(tmp_path), "materialize", "--engine", "spark"])
    assert result.exit_code == 0, result.output
    assert "5 entities, 5 records written" in result.output
    assert len(dump(project_env)) == 5
    spine = tmp_path / "spine"
    spine.mkdir()
    pq.write_table(pa.table({"user_id": pa.array([1, 2, 9], pa.int64()),
                             "event_timestamp": pa.array([NOW] * 3, pa.timestamp("us", "UTC"))}),
                   spine / "s.parquet")
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "dataset", "--engine", "spark", "--spine", str(spine),
                                       "--features", "user_stats:clicks", "--out", str(tmp_path / "train")])
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "train").column("clicks").to_pylist() == [10, 20, None]
