"""``quasar init``: a runnable sample project by default (like ``feast init``), ``--minimal`` for an empty one.

The sample's own README is the script: its first bash block runs here command by command, as a newcomer would
(``quasar serve`` aside: the README tour's test serves), and the results are checked against the generated data.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import quasar
from quasar.cli import main


def invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == code, result.output
    return result.output


def readme_commands(readme: Path) -> list[list[str]]:
    """The commands of the README's first bash block, split as a shell would."""
    block = re.search(r"```bash\n(.*?)```", readme.read_text(), flags=re.S)
    assert block, readme.read_text()
    return [shlex.split(line, comments=True) for line in block.group(1).splitlines() if line.strip()]


def test_init_scaffolds_a_sample_that_runs_end_to_end(tmp_path: Path, project_env: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = invoke("init", "myproject")
    root = tmp_path / "myproject"
    assert f"created a sample project in {root}" in out and "cd myproject" in out
    assert "quasar register signals/" in out
    for path in ("quasar.toml", ".quasar", ".gitignore", "README.md", "generate_data.py", "signals/activity.py",
                 "data/events/events.parquet", "data/spine.parquet"):
        assert (root / path).exists(), path
    assert "from quasar.signals import" in (root / "signals" / "activity.py").read_text()
    ignored = (root / ".gitignore").read_text().splitlines()
    assert {".quasar/", "data/", "models/"} <= set(ignored)
    assert quasar.load_config(root, env={}).project.name == "myproject"

    events = pq.read_table(root / "data" / "events")
    spine = pq.read_table(root / "data" / "spine.parquet")
    assert events.num_rows > 0 and spine.column_names == ["user_id", "event_timestamp", "label"]

    monkeypatch.chdir(root)
    ran = []
    for args in readme_commands(root / "README.md"):
        assert args[0] == "quasar", args
        if args[1] == "serve":
            continue
        ran.append(args[1])
        output = invoke(*args[1:])
        if args[1] == "backfill":
            assert f"backfilled {args[2]} v1" in output, output
    assert ran == ["register", "ls", "plan", "backfill", "backfill", "describe", "dataset", "materialize"]

    with quasar.Platform.open(root) as p:
        daily = p.offline.read(p.registry.signal("user_activity").signal, 1)
        # every generated event lies in one day's [T - 1d, T) of the backfilled window
        assert pc.sum(daily["views_1d"]).as_py() == events.num_rows
        hourly = p.offline.read(p.registry.signal("user_hourly").signal, 1)
        assert pc.sum(hourly["views"]).as_py() == events.num_rows
        train = pq.read_table(root / "train.parquet")
        assert train.num_rows == spine.num_rows
        assert train["label"].to_pylist() == spine["label"].to_pylist()
        assert {"views_1d", "clicks_7d", "ctr_7d", "views", "dwell_s"} <= set(train.column_names)
        assert train["ctr_7d"].null_count < train.num_rows
        # online: each user's latest daily row, as the README's curl asks for it
        answer = p.online_features({"user_id": [1, 2]}, ["user_activity:ctr_7d"])
        for i, user in enumerate([1, 2]):
            rows = daily.filter(pc.field("user_id") == user).sort_by([("event_timestamp", "descending")])
            assert answer["results"][1]["values"][i] == pytest.approx(rows["ctr_7d"][0].as_py())
            assert answer["results"][1]["statuses"][i] == "PRESENT"


def test_minimal_makes_only_the_configuration(tmp_path: Path) -> None:
    invoke("init", str(tmp_path / "p"), "--minimal")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [".gitignore", ".quasar", "quasar.toml"]
    assert ".quasar/" in (tmp_path / "p" / ".gitignore").read_text().splitlines()


def test_init_overwrites_nothing(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "signals").mkdir(parents=True)
    (root / ".gitignore").write_text("*.log")
    out = invoke("init", str(root), code=1)
    assert out.startswith("error: ") and "already has signals" in out and "--minimal" in out
    assert sorted(p.name for p in root.iterdir()) == [".gitignore", "signals"]       # nothing written
    invoke("init", str(root), "--minimal")
    assert (root / ".gitignore").read_text().splitlines() == ["*.log", ".quasar/", "__pycache__/"]
    out = invoke("init", str(root), "--minimal", code=1)
    assert "quasar.toml already exists" in out
