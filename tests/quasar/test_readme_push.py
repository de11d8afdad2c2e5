"""The README's in-process online example runs as written: ``p.online_features(...)`` then ``p.push(...)`` with an
ISO-8601 ``event_timestamp`` string, on the example project, and the pushed row is what both stores then hold."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import redis
from click.testing import CliRunner

import quasar
from examples.data import World, generate
from fixtures.redis_server import RedisServer
from quasar.cli import main
from quasar.demo import EXAMPLE_SIGNALS

README = Path(__file__).resolve().parents[2] / "README.md"
PUSHED = datetime(2026, 11, 23, 10, tzinfo=UTC)            # the README row's "2026-11-23T10:00:00Z"
WORLD = World(users=20, pins=40, days=8, events_per_day=300, start=datetime(2026, 11, 11, tzinfo=UTC))


def readme_python_blocks(containing: str) -> list[str]:
    """The README's ```python blocks whose code contains ``containing``."""
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)
    return [b for b in blocks if containing in b]


@pytest.fixture
def p(tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[quasar.Platform]:
    """The example project over a world that ends before the README's pushed time, backfilled and materialized."""
    if redis_server.proc is None:
        redis_server.start()
    redis.Redis.from_url(redis_server.url).flushall()
    for var in ("QUASAR_REGISTRY_URL", "QUASAR_CATALOG_URI", "QUASAR_WAREHOUSE", "QUASAR_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("QUASAR_REDIS_URL", redis_server.url)
    root = tmp_path / "readme"
    assert CliRunner().invoke(main, ["init", str(root), "--name", "readme"]).exit_code == 0
    shutil.copytree(EXAMPLE_SIGNALS, root / "signals", ignore=shutil.ignore_patterns("__pycache__"))
    generate(root, WORLD)
    with quasar.Platform.open(root) as platform:
        platform.register("signals")
        for name in ("user_engagement", "user_profile"):
            platform.backfill(name, WORLD.start, WORLD.end, with_upstream=True)
        platform.materialize(["user_engagement", "user_profile"])
        yield platform


def test_the_readme_push_example_runs_and_both_stores_hold_the_row(p: quasar.Platform) -> None:
    (block,) = readme_python_blocks("p.push(")
    assert '"event_timestamp": "2026-11-23T10:00:00Z"' in block           # the example this test is about
    exec(compile(block, str(README), "exec"), {"p": p})                    # the README, as written
    sv = p.registry.signal("user_profile")
    redis_store: Any = p.online_store                                      # read as of the pushed time
    (online,) = redis_store.read([(sv.signal, sv.version)], [7], now_us=int(PUSHED.timestamp() * 1_000_000))
    assert online.table.column("country").to_pylist() == ["FR"]
    assert online.event_time_us.tolist() == [int(PUSHED.timestamp() * 1_000_000)]
    stored = p.offline.read(sv.signal, sv.version).filter(pc.field("user_id") == 7)
    assert PUSHED in stored.column("event_timestamp").to_pylist()
    spine = pa.table({"user_id": [7], "event_timestamp": pa.array([PUSHED], pa.timestamp("us", "UTC"))})
    assert p.training_dataset(spine, ["user_profile:country"]).column("country").to_pylist() == ["FR"]
