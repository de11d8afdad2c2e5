"""``quasar demo`` end to end on a small world: every step runs, the services answer, the scorer scores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from fixtures.redis_server import RedisServer
from quasar.cli import main
from quasar.demo import STEPS
from quasar.examples.data import World


def test_the_demo_runs_every_step(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch,
                                  redis_server: RedisServer) -> None:
    for var in ("QUASAR_REGISTRY_URL", "QUASAR_CATALOG_URI", "QUASAR_WAREHOUSE", "QUASAR_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("QUASAR_REDIS_URL", redis_url)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    world = World(users=80, pins=150, days=10, events_per_day=600, start=today - timedelta(days=10))
    monkeypatch.setattr("quasar.demo.recent_world", lambda: world)
    result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    out = result.output
    assert [line for line in out.splitlines() if line.startswith("== ")][:len(STEPS)] == [
        "== 1. A project, generated data and the example signals",
        "== 2. Backfill every signal into Iceberg (upstream first)",
        "== 3. A point-in-time correct, labeled training dataset",
        "== 4. Materialize the online signals from Iceberg into Redis (incremental)",
        "== 5. The HTTP feature service",
        "== 6. Train the example ranker on a point-in-time dataset (quasar's PyTorch loader)",
        "== 7. The scoring service: features read at request time, scored by the ranker",
    ]
    assert "Platform.online_features gives the same answer in-process: True" in out
    assert "user 999999 country now: 'FR' PRESENT" in out
    assert "(incremental): 0 rows read from 0 files" in out
    assert out.count("/v1/score -d") == 3 and out.count("pin ") >= 15
    assert (tmp_path / "project" / "models" / "ranker" / "bundle.json").exists()
    # the example project's tables after its backfills: the chosen layout, one data file per day (not days x 16)
    import quasar
    with quasar.Platform.open(tmp_path / "project") as p:
        for sv in p.registry.signals():
            if p.offline.current_snapshot_id(sv.name, sv.version) is None:
                continue
            days = {f.split("event_timestamp_day=")[1].split("/")[0] for f in p.offline.plan_files(sv.name, sv.version)}
            assert len(p.offline.plan_files(sv.name, sv.version)) == len(days) <= 12, sv.name
            assert p.offline.bucket_count(sv.name, sv.version) == 1, sv.name
