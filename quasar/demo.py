"""``quasar demo``: the whole product end to end on generated data, in a fresh project folder."""

from __future__ import annotations

import shlex
import shutil
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import click

import examples
from examples.data import World, generate, make_spine

EXAMPLE_SIGNALS = Path(examples.__file__).parent / "signals"
ALL_FEATURES = ["user_engagement", "pin_stats", "user_recent_pins", "pin_profile", "user_profile",
                "user_affinity"]
Step = Callable[[Path, World], None]


def _heading(text: str) -> None:
    click.echo()
    click.secho(f"== {text}", bold=True)


def quasar_cli(project: Path, *args: str) -> None:
    """Run one ``quasar`` command in-process, echoing it as a user would type it."""
    from quasar.cli import main
    click.secho(f"$ quasar {shlex.join(args)}", fg="cyan")
    main.main(args=["-C", str(project), *args], standalone_mode=False)


def step_project(project: Path, world: World) -> None:
    _heading("1. A project, generated data and the example signals")
    quasar_cli(project, "init", str(project), "--name", "demo")
    shutil.copytree(EXAMPLE_SIGNALS, project / "signals", ignore=shutil.ignore_patterns("__pycache__"))
    counts = generate(project, world)
    click.echo(f"generated {counts['events']:,} events, {counts['users']:,} user and {counts['pins']:,} pin "
               f"snapshots over {world.days} days from {world.start:%Y-%m-%d}")
    quasar_cli(project, "register", "signals")
    quasar_cli(project, "ls")
    quasar_cli(project, "describe", "user_engagement")


def step_backfill(project: Path, world: World) -> None:
    _heading("2. Backfill every signal into Iceberg (upstream first)")
    start, end = f"{world.start:%Y-%m-%d}", f"{world.end:%Y-%m-%d}"
    for name in ["user_affinity", "pin_stats", "user_recent_pins", "pin_profile", "user_profile"]:
        quasar_cli(project, "backfill", name, "--start", start, "--end", end, "--with-upstream")
    quasar_cli(project, "describe", "user_affinity")


def step_dataset(project: Path, world: World) -> None:
    _heading("3. A point-in-time correct, labeled training dataset")
    import pyarrow.parquet as pq
    spine = make_spine(project, world.end - timedelta(days=7), world.end, rows=20_000)
    pq.write_table(spine, project / "spine.parquet")
    click.echo(f"spine: {spine.num_rows:,} impressions of the last week (user_id, pin_id, event_timestamp, label)")
    quasar_cli(project, "dataset", "--spine", str(project / "spine.parquet"), "--features", ",".join(ALL_FEATURES),
               "--full-names", "--out", str(project / "train.parquet"))
    table = pq.read_table(project / "train.parquet")
    click.echo(f"columns: {', '.join(table.column_names)}")
    filled = {c: 1 - table[c].null_count / table.num_rows for c in table.column_names[4:]}
    click.echo("share of rows with a value: " + ", ".join(f"{c} {v:.0%}" for c, v in filled.items()))
    click.echo(table.slice(0, 3).select(table.column_names[:8]).to_pandas().to_string())


STEPS: list[Step] = [step_project, step_backfill, step_dataset]


def run_demo(workdir: Path | None = None, *, keep: bool = False, world: World = World()) -> Path:
    """Run every demo step in ``workdir`` (a fresh temp folder by default); return the project folder."""
    base = workdir or Path(tempfile.mkdtemp(prefix="quasar-demo-"))
    project = base / "project"
    if project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True)
    try:
        for step in STEPS:
            step(project.resolve(), world)
        _heading(f"done: the demo project is in {project}" if (keep or workdir) else "done")
    finally:
        if not (keep or workdir):
            shutil.rmtree(base, ignore_errors=True)
    return project
