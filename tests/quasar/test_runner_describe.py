"""``quasar ls`` shows each signal's schedule and freshness target; ``quasar describe`` those and its freshness
now (``quasar.status``): never computed before a pass, computed until today's midnight after one."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from fixtures.runner_project import days_before_today, make_runner_project, today
from quasar.cli import main


def cli(root: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["-C", str(root), *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_ls_and_describe_show_the_schedule_the_target_and_the_lag(tmp_path: Path, redis_url: str) -> None:
    project = make_runner_project(tmp_path / "project", redis_url, days_before_today(2), schedule="6h")
    root = project.root
    lines = cli(root, "ls").splitlines()
    header = lines[0].split()
    assert header[-3:] == ["SCHEDULE", "FRESHNESS", "OWNER"]
    rows = {line.split()[0]: line.split() for line in lines[1:] if line.strip()}
    at = header.index("SCHEDULE")
    assert {name: row[at:at + 2] for name, row in rows.items()} == {n: ["6h", "26h"] for n in
                                                                    ("clicks", "clicks_daily", "views")}
    listed = {r["name"]: r for r in json.loads(cli(root, "ls", "--json")) if "schedule" in r}
    assert (listed["views"]["schedule"], listed["views"]["freshness_target"]) == ("6h", "26h")

    text = cli(root, "describe", "views")
    assert "  schedule:    6h (by `quasar run`); freshness target 26h" in text
    assert "  freshness:   never computed" in text
    with project.platform() as p:
        p.run(once=True)
    text = cli(root, "describe", "views")
    assert f"  freshness:   ok: computed until {today().isoformat()}T00:00Z, lag " in text, text
    described = json.loads(cli(root, "describe", "views", "--json"))
    assert (described["schedule"], described["freshness_target"]) == ("6h", "26h")
    fresh = described["freshness"]
    assert fresh["state"] == "ok" and fresh["computed_until"].startswith(today().isoformat())
    assert 0 <= fresh["lag_s"] <= 86_400
