"""The README's "keeping signals fresh" tour, run as a reader would: its module defines what it says, and its
commands run in a ``quasar init`` sample project (whose events end today), printing what the README shows."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import timedelta
from pathlib import Path

from fixtures.prometheus import sample_value
from fixtures.readme import Command, Shell, commands, find_block, readme_blocks, run_python, shell_env
from quasar.signals.errors import DefinitionError
from quasar.signals.signal import Signal


def shown_shape(line: str) -> re.Pattern[str]:
    """A README output line as a pattern: words exact, any digits where it shows digits, any run of spaces."""
    parts = [r"\d+" if t.isdigit() else r"\s+" if t.isspace() else re.escape(t)
             for t in re.split(r"(\d+|\s+)", line.strip()) if t]
    return re.compile("".join(parts))


def test_the_schedule_module_means_what_the_readme_says() -> None:
    block = find_block(readme_blocks(), "python", 'schedule="6h", freshness="30h"')
    namespace: dict[str, object] = {}
    run_python(block, namespace)
    views, clicks = namespace["user_views"], namespace["user_clicks"]
    assert isinstance(views, Signal) and isinstance(clicks, Signal)
    assert (views.run_schedule, views.freshness_target) == (timedelta(days=1), timedelta(hours=26))
    assert (clicks.run_schedule, clicks.freshness_target) == (timedelta(hours=6), timedelta(hours=30))
    assert views.schedule is None                          # the defaults, as the comment says: nothing declared
    try:
        run_python(dataclasses.replace(block, text=block.text.replace('freshness="30h"', 'freshness="20h"')), {})
    except DefinitionError as exc:                          # "refused when the module is defined"
        assert "freshness 20h is shorter than 1d" in str(exc)
    else:
        raise AssertionError("a freshness shorter than a day was accepted")


def test_the_runner_commands_run_in_a_sample_project(tmp_path: Path, project_env: str) -> None:
    shell = Shell(tmp_path, shell_env(project_env), tmp_path / "logs")
    for text in ("quasar init myproject", "cd myproject && quasar register signals/"):
        shell.run(Command(text=text, line=0))
    metrics = tmp_path / "node_exporter"
    cmds = commands(find_block(readme_blocks(), "bash", "quasar run --once --dry-run"))
    assert [c.text.split("  ")[0].strip() for c in cmds] == [
        "quasar run --once --dry-run", "quasar run --once", "quasar status",
        "quasar run --once --metrics-file /var/lib/node_exporter/quasar.prom"]
    outputs = []
    for cmd in cmds:
        real = Command(text=cmd.text.replace("/var/lib/node_exporter/", f"{metrics}/"), line=cmd.line)
        outputs.append(shell.run(real))
    dry, once, status, again = outputs
    assert "user_activity v1: backfill [" in dry and "never computed" in dry and "nothing done (--dry-run)" in dry
    assert "backfilled user_activity v1" in once and "materialized user_hourly v1" in once
    printed = [line.strip() for line in status.splitlines()]
    (shown_status,) = [c for c in cmds if c.text.startswith("quasar status")]
    for line in shown_status.shown:                        # the columns exactly, the values by shape
        assert any(shown_shape(line).fullmatch(p) for p in printed), (line, status)
    assert "pass done: 0 backfill(s), 0 materialization(s)" in again
    text = (metrics / "quasar.prom").read_text()
    assert sample_value(text, "quasar_signal_stale", signal="user_activity") == 0
    assert sample_value(text, "quasar_signal_freshness_target_seconds", signal="user_activity") == 26 * 3600
    rows = json.loads(shell.run(Command(text="quasar status --json", line=0)))
    assert {r["signal"]: r["state"] for r in rows} == {"user_activity": "ok", "user_hourly": "ok"}
