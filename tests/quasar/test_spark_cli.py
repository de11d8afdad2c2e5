"""``--engine spark`` end to end through the CLI: the example signals backfilled on Spark and a training dataset
joined on Spark equal, row for row and bit for bit, what the local engine gives on the same generated data."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from quasar.cli import main
from quasar.demo import ALL_FEATURES, EXAMPLE_SIGNALS
from quasar.examples.data import World, generate, make_spine
from quasar.platform import Platform

pytestmark = pytest.mark.spark

WORLD = World(users=40, pins=80, days=5, events_per_day=400, start=datetime(2026, 1, 1, tzinfo=UTC))
ROOTS = ["user_affinity", "pin_stats", "user_recent_pins", "pin_profile", "user_profile"]
ALL = ["user_engagement", *ROOTS]


def _cli(root: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["-C", str(root), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _project(root: Path) -> Path:
    _cli(root, "init", str(root), "--name", "sparkcli", "--minimal")
    shutil.copytree(EXAMPLE_SIGNALS, root / "signals", ignore=shutil.ignore_patterns("__pycache__"))
    generate(root, WORLD)
    _cli(root, "register", "signals")
    return root


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("QUASAR_REGISTRY_URL", "QUASAR_CATALOG_URI", "QUASAR_WAREHOUSE", "QUASAR_PROJECT"):
        monkeypatch.delenv(var, raising=False)


def test_cli_backfill_and_dataset_on_spark_equal_the_local_engine(tmp_path: Path, spark: Any,
                                                                    clean_env: None) -> None:
    roots = {engine: _project(tmp_path / engine) for engine in ("local", "spark")}
    spine = make_spine(roots["local"], WORLD.end - timedelta(days=3), WORLD.end, rows=3_000)
    pq.write_table(spine, tmp_path / "spine.parquet")
    for engine, root in roots.items():
        for name in ROOTS:
            out = _cli(root, "backfill", name, "--start", f"{WORLD.start:%Y-%m-%d}", "--end",
                       f"{WORLD.end:%Y-%m-%d}", "--with-upstream", "--engine", engine)
            assert name in out
        _cli(root, "dataset", "--spine", str(tmp_path / "spine.parquet"), "--features", ",".join(ALL_FEATURES),
             "--full-names", "--engine", engine, "--out", str(tmp_path / f"{engine}.parquet"))
    with Platform.open(roots["local"]) as local, Platform.open(roots["spark"]) as spark_project:
        for name in ALL:
            sv = local.registry.signal(name)
            order = [(sv.signal.entity.join_key, "ascending"), ("event_timestamp", "ascending")]
            want = local.offline.read(sv.signal, sv.version).drop_columns(["created_timestamp"]).sort_by(order)
            got = spark_project.offline.read(sv.signal, sv.version).drop_columns(["created_timestamp"]).sort_by(order)
            assert want.num_rows > 0 and got.equals(want), name
            runs = spark_project.registry.runs(name)
            assert runs[0].status == "succeeded" and runs[0].params["engine"] == "spark"
    want, got = pq.read_table(tmp_path / "local.parquet"), pq.read_table(tmp_path / "spark.parquet")
    assert got.num_rows == spine.num_rows and got.equals(want)
    filled = [c for c in want.column_names[spine.num_columns:] if want[c].null_count < want.num_rows]
    assert len(filled) >= len(ALL_FEATURES) // 2      # the comparison is over real values, not nulls


def test_an_unknown_engine_is_a_clear_error(tmp_path: Path, clean_env: None) -> None:
    root = _project(tmp_path / "p")
    result = CliRunner().invoke(main, ["-C", str(root), "backfill", "pin_profile", "--start", "2026-01-01",
                                       "--end", "2026-01-02", "--engine", "flink"])
    assert result.exit_code != 0
    assert "unknown engine 'flink'; known engines: local, spark" in result.output
