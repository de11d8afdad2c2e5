"""Project discovery, like git and Feast: a command looks for ``quasar.toml`` in its folder and the folders
above; outside a project every command but ``init`` and ``demo`` fails with one line and creates nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import quasar
from fixtures.project import OVERRIDES
from quasar.cli import main
from quasar.signals.errors import ConfigError

MODULE = """
from quasar.signals import Entity, Source, aggregate, count

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")
daily = aggregate(name="daily", entity=user, source=events, step="1d", aggregations=[count("1d")])
"""

# Every command that needs a project, with arguments that would otherwise get past click's parsing.
COMMANDS = [
    ["ls"], ["ls", "--entities"], ["ls", "--sources"], ["register", "signals"], ["plan", "signals"],
    ["describe", "daily"], ["promote", "daily@1"], ["backfill", "daily", "--start", "2026-01-01", "--end",
                                                     "2026-01-02"],
    ["validate", "daily", "--start", "2026-01-01", "--end", "2026-01-02"], ["runs", "daily"], ["gc"],
    ["consistency", "daily"], ["materialize"], ["delete", "daily", "--yes"], ["serve"], ["score-serve"],
    ["dataset", "--spine", "SPINE", "--features", "daily", "--out", "out.parquet"],
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in OVERRIDES:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def project(tmp_path: Path, project_env: str) -> Path:
    root = tmp_path / "myproject"
    assert CliRunner().invoke(main, ["init", str(root), "--name", "disc", "--minimal"]).exit_code == 0
    (root / "signals").mkdir()
    (root / "signals" / "engagement.py").write_text(MODULE)
    (root / "data" / "events").mkdir(parents=True)
    return root


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0] + ("-" + a[1] if a[1].startswith("--") else "")
                         if len(a) > 1 else a[0])
def test_outside_a_project_every_command_fails_in_one_line_and_creates_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    spine = tmp_path / "spine.parquet"                  # outside the folder: the folder must stay empty
    pq.write_table(pa.table({"user_id": [1]}), spine)
    monkeypatch.chdir(empty)
    result = CliRunner().invoke(main, [str(spine) if a == "SPINE" else a for a in args])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: not a quasar project"), result.output
    assert str(empty) in lines[0] and "quasar init" in lines[0]
    assert _tree(empty) == []


def test_a_real_shell_outside_a_project(tmp_path: Path) -> None:
    """The installed ``quasar`` in an empty folder: exit 1, one line on stderr, no stray .quasar/."""
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    quasar_bin = Path(sys.executable).parent / "quasar"
    for args in (["ls"], ["register", "."]):
        done = subprocess.run([str(quasar_bin), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              check=False)
        assert done.returncode == 1, done
        assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith("error: not a quasar project"), done.stderr
    assert _tree(tmp_path) == []


def test_init_and_demo_help_work_outside_a_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(main, ["ls", "--help"]).exit_code == 0          # help needs no project
    assert CliRunner().invoke(main, ["demo", "--help"]).exit_code == 0
    assert CliRunner().invoke(main, ["init", "new", "--minimal"]).exit_code == 0
    assert (tmp_path / "new" / "quasar.toml").is_file()


def test_commands_in_a_subfolder_find_the_project_above(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project / "signals")
    result = CliRunner().invoke(main, ["register", "engagement.py"])     # a path relative to where you are
    assert result.exit_code == 0, result.output
    assert "daily v1: new; needs backfill" in result.output
    listing = CliRunner().invoke(main, ["ls"])
    assert listing.exit_code == 0 and listing.output.splitlines()[1].split()[0] == "daily", listing.output
    assert not (project / "signals" / ".quasar").exists()              # the project's state, not a stray one
    monkeypatch.chdir(project)
    with quasar.Platform.open(project) as p:
        assert [sv.name for sv in p.ls()] == ["daily"]


def test_dash_c_names_the_project_or_a_folder_in_it(project: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(main, ["-C", str(project), "register", "signals"]).exit_code == 0
    inside = CliRunner().invoke(main, ["-C", str(project / "data" / "events"), "ls"])
    assert inside.exit_code == 0 and "daily" in inside.output, inside.output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = CliRunner().invoke(main, ["-C", str(elsewhere), "ls"])
    assert outside.exit_code == 1 and outside.output.startswith("error: not a quasar project"), outside.output
    assert _tree(elsewhere) == []


def test_platform_open_searches_upwards_and_refuses_no_project(project: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with quasar.Platform.open(project / "signals") as p:
        assert p.root == project.resolve()
    monkeypatch.chdir(project / "data")
    with quasar.Platform.open() as p:
        assert p.root == project.resolve()
    (tmp_path / "none").mkdir()
    with pytest.raises(ConfigError, match="not a quasar project"):
        quasar.Platform.open(tmp_path / "none")
    assert _tree(tmp_path / "none") == []
