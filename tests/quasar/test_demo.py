"""``quasar demo`` end to end on a small world: every step runs, the services answer, the scorer scores, ``quasar
run --once`` computes exactly the day that landed (and a second pass nothing), the catalog serves."""

from __future__ import annotations

import re
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
        "== 5. New data lands: `quasar run --once` computes what is missing or stale, then materializes",
        "== 6. The HTTP feature service",
        "== 7. Train the example ranker on a point-in-time dataset (quasar's PyTorch loader)",
        "== 8. The scoring service: features read at request time, scored by the ranker",
        "== 9. The catalog: `quasar ui`, every signal with its lineage, freshness, runs and statistics",
    ]
    # step 5: the held-back day landed; one pass computes exactly that day of every signal, upstream first, and
    # materializes; a second pass does nothing; status says every signal is fresh
    last, until = f"{today - timedelta(days=1):%Y-%m-%d}", f"{today:%Y-%m-%d}"
    fresh = out.split("== 5.")[1].split("== 6.")[0]
    first, second = fresh.split("$ quasar run --once")[1:3]
    backfilled = [line.split()[1] for line in first.splitlines() if line.startswith("  backfilled ")]
    assert backfilled == ["pin_profile", "pin_stats", "user_engagement", "user_affinity", "user_profile",
                          "user_recent_pins"], first
    assert all(f" v1 [{last}, {until}): " in line for line in first.splitlines() if "backfilled " in line), first
    assert sorted(line.split()[1] for line in first.splitlines() if line.startswith("  materialized ")) == sorted(
        backfilled)
    assert "pass done: 6 backfill(s), 6 materialization(s), 0 failed, 0 skipped" in first
    assert "pass done: 0 backfill(s), 0 materialization(s), 0 failed, 0 skipped" in second
    status_after = second.split("$ quasar status")[1]
    rows = [line.split() for line in status_after.splitlines()[2:8]]
    assert [(r[0], r[4].startswith(until), r[6]) for r in rows] == [(n, True, "ok") for n in backfilled], status_after
    # step 9: the catalog answered over HTTP at the URL it printed, with every signal and a page of one
    catalog = out.split("== 9.")[1]
    assert re.search(r"the catalog of the demo project is at http://127\.0\.0\.1:\d+/", catalog), catalog
    assert "6 signals listed: pin_profile, pin_stats, user_affinity, user_engagement, user_profile" in catalog
    assert "freshness ok, a lineage graph of 3 nodes, 4 histograms" in catalog, catalog
    assert "the last consistency check: online equals offline" in catalog and "stopped the catalog" in catalog
    assert f"`quasar -C {tmp_path / 'project'} ui` serves its catalog again" in out
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
            assert len(p.offline.plan_files(sv.name, sv.version)) == len(days), sv.name
            assert p.offline.bucket_count(sv.name, sv.version) == 1, sv.name
