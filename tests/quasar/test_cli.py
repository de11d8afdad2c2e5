"""The CLI: thin wrappers over the facade; user mistakes print one error line and exit non-zero."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import quasar
from quasar.cli import main
from quasar.demo import EXAMPLE_SIGNALS

EXAMPLE_NAMES = ["pin_profile", "pin_stats", "user_affinity", "user_engagement", "user_profile", "user_recent_pins"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("QUASAR_REGISTRY_URL", "QUASAR_CATALOG_URI", "QUASAR_WAREHOUSE", "QUASAR_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(main, ["init", str(tmp_path), "--name", "t", "--minimal"])
    assert result.exit_code == 0, result.output
    shutil.copytree(EXAMPLE_SIGNALS, tmp_path / "signals", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def run(project: Path, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, ["-C", str(project), *args])
    assert result.exit_code == code, result.output
    return result.output


def test_init_register_ls_describe(project: Path) -> None:
    assert (project / "quasar.toml").exists() and (project / ".quasar").is_dir()
    out = run(project, "register", "signals")
    assert "12 created, 0 updated, 0 unchanged" in out
    listing = json.loads(run(project, "ls", "--json"))
    assert [r["name"] for r in listing] == EXAMPLE_NAMES
    assert all(r["version"] == 1 for r in listing)
    text = run(project, "ls")
    assert text.splitlines()[0].split() == ["SIGNAL", "VERSION", "SERVING", "KIND", "ENTITY", "FEATURES", "ONLINE",
                                        "SCHEDULE", "FRESHNESS", "OWNER"]
    d = json.loads(run(project, "describe", "user_engagement", "--json"))
    assert [f["name"] for f in d["schema"]] == ["impressions_1d", "clicks_7d", "ctr_7d", "dwell_1d"]
    assert d["downstream"] == ["user_affinity"] and d["upstream"] == []
    human = run(project, "describe", "user_affinity")
    assert "upstream:    user_engagement" in human and "engagement_score  float64" in human
    assert "0 created, 0 updated, 12 unchanged" in run(project, "register", "signals")


def test_facade_sees_what_the_cli_registered(project: Path) -> None:
    run(project, "register", "signals")
    with quasar.Platform.open(project) as p:
        assert [sv.name for sv in p.ls()] == EXAMPLE_NAMES
        assert p.describe("pin_profile")["schema"][0] == {"name": "embedding", "type": "vector(16, float16)"}


def test_user_mistakes_are_one_line_errors(project: Path) -> None:
    (project / "broken.py").write_text("from quasar.signals import Entity\nuser = Entity(name='user', join_key=)\n")
    out = run(project, "register", "broken.py", code=1)
    assert out.startswith("error: ") and "broken.py:2: syntax error" in out and len(out.strip().splitlines()) == 1
    assert "Traceback" not in out
    out = run(project, "describe", "nope", code=1)
    assert "no signal, entity or source named 'nope'" in out and "Traceback" not in out
    assert run(project, "ls").startswith("no signals registered")
    run(project, "init", str(project), code=1)
    run(project, "backfill", "x", code=2)          # usage error: --start/--end missing


def test_help_for_every_command() -> None:
    for cmd in ["init", "register", "ls", "describe", "backfill", "dataset", "demo"]:
        result = CliRunner().invoke(main, [cmd, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output
