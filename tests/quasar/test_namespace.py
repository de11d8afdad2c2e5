"""quasar installs under one import namespace (issue 15): nothing generic such as ``signals`` or ``store`` lands
in site-packages, and a user project with its own ``signals/`` folder imports both its modules and
``quasar.signals`` — at a REPL, in a notebook-style ``python -c`` and under pytest at the project root."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("signals", "store", "registry", "online", "training_adapters", "serving_adapters", "examples")


def test_every_package_folder_is_installed_under_quasar() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapping = config["package-dir"]
    found = {"quasar"} | {f"quasar.{p.parent.relative_to(ROOT / 'quasar').as_posix().replace('/', '.')}"
                          for p in (ROOT / "quasar").rglob("__init__.py") if p.parent != ROOT / "quasar"}
    for room in ROOMS:
        assert mapping[f"quasar.{room}"] == room
        for init in (ROOT / room).rglob("__init__.py"):
            found.add("quasar." + ".".join((room, *init.parent.relative_to(ROOT / room).parts)))
    assert found <= listed, f"package folders missing from pyproject's [tool.setuptools] packages: {found - listed}"


def test_the_wheel_holds_only_the_quasar_namespace(tmp_path: Path) -> None:
    """Build the distribution as pip would and look at its top-level names."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("quasar-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
        names = archive.namelist()
    assert {t for t in top if not t.endswith(".dist-info")} == {"quasar"}
    for room in ROOMS:
        assert f"quasar/{room}/__init__.py" in names, room
    assert "quasar/signals/ufr/codec.py" in names and "quasar/store/engines/local.py" in names


USER_SIGNAL = """
from quasar.signals import Entity, Source, aggregate, count

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")
daily = aggregate(name="daily", entity=user, source=events, step="1d", aggregations=[count("1d")])
"""
CHECK = ("import quasar.signals, signals.engagement as e; "
         "assert e.daily.name == 'daily' and isinstance(e.user, quasar.signals.Entity); "
         "print('both', quasar.signals.__name__, e.__name__)")


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """A project laid out as the README shows: its own signals/ folder (a package, as notebooks import it)."""
    (tmp_path / "signals").mkdir()
    (tmp_path / "signals" / "__init__.py").write_text("")
    (tmp_path / "signals" / "engagement.py").write_text(USER_SIGNAL)
    return tmp_path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env


def test_a_notebook_style_python_c_at_the_project_root(user_project: Path) -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=user_project, env=_env(), capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "both quasar.signals signals.engagement"


def test_a_repl_at_the_project_root(user_project: Path) -> None:
    out = subprocess.run([sys.executable, "-i", "-q"], input=CHECK + "\n", cwd=user_project, env=_env(),
                         capture_output=True, text=True)
    assert out.returncode == 0 and "both quasar.signals signals.engagement" in out.stdout, out.stderr


def test_pytest_at_the_project_root(user_project: Path) -> None:
    (user_project / "tests").mkdir()
    (user_project / "tests" / "test_mine.py").write_text(
        "import quasar.signals\nfrom signals.engagement import daily, user\n\n\n"
        "def test_mine():\n    assert isinstance(user, quasar.signals.Entity) and daily.name == 'daily'\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                         cwd=user_project, env=_env(), capture_output=True, text=True)
    assert out.returncode == 0 and "1 passed" in out.stdout, out.stdout + out.stderr
