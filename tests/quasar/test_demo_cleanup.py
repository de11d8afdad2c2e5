"""``quasar demo`` leaves nothing behind in a temp run (its Redis keys are removed with its folder), keeps both
with ``--dir``, uses a project name of its own (so it never touches another project's keys) and ends with the
next steps. The steps run are the ones that write online (the full run is tests/quasar/test_demo.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from quasar import demo
from quasar.cli import main
from quasar.examples.data import World


@pytest.fixture
def small_demo(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> str:
    for var in ("QUASAR_REGISTRY_URL", "QUASAR_CATALOG_URI", "QUASAR_WAREHOUSE", "QUASAR_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("QUASAR_REDIS_URL", redis_url)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    world = World(users=20, pins=30, days=4, events_per_day=100, start=today - timedelta(days=4))
    monkeypatch.setattr("quasar.demo.recent_world", lambda: world)
    monkeypatch.setattr("quasar.demo.STEPS", [demo.step_project, demo.step_backfill, demo.step_materialize])
    client = redis.Redis.from_url(redis_url)
    client.hset("demo:user:1", "keep@1", b"another project's record")        # a project called "demo"
    return redis_url


def _keys(url: str) -> set[str]:
    return {k.decode() for k in redis.Redis.from_url(url).scan_iter()}


def test_a_temp_demo_removes_its_keys_and_its_folder(small_demo: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "materialized user_engagement" in result.output                 # it did write online
    assert _keys(small_demo) == {"demo:user:1"}                             # only the other project's key is left
    assert list(tmp_path.iterdir()) == []
    out = result.output.strip().splitlines()
    assert "removed the demo's Redis keys and its folder" in result.output
    assert out[-4:] == [
        "next steps:",
        "  quasar init myproject       # a runnable sample project of your own: cd myproject, then its README.md",
        "  quasar demo --dir DIR       # keep the demo project, then: quasar -C DIR/project status, ui, serve",
        "  README.md                   # the tours: signal author, trainer, online service",
    ]


def test_a_kept_demo_keeps_its_keys_and_says_under_which_name(small_demo: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    name = next(line.split("project ")[1].split(" ")[0] for line in result.output.splitlines()
                if line.startswith("its online values stay in Redis under the project "))
    assert name.startswith("demo_")
    kept = {k for k in _keys(small_demo) if k.startswith(f"{name}:")}
    assert kept and "demo:user:1" in _keys(small_demo)
    assert (tmp_path / "project" / "quasar.toml").is_file()
    assert result.output.strip().splitlines()[-4] == "next steps:"
