"""The ``quasar init`` and ``quasar demo`` commands: the two that run outside a project."""

from __future__ import annotations

import os
from pathlib import Path

import click

from quasar.cli_context import fail_cleanly


@click.command()
@click.argument("path", default=".", type=click.Path(file_okay=False))
@click.option("--name", default=None, help="Project name (prefix of online keys); default: the folder name.")
@click.option("-m", "--minimal", is_flag=True, help="Only quasar.toml, .quasar/ and a .gitignore: no sample.")
@fail_cleanly
def init(path: str, name: str | None, minimal: bool) -> None:
    """Create a project in PATH: a runnable sample (signals/, generate_data.py and its data, a .gitignore and a
    README.md with the next commands), or with --minimal only quasar.toml and the .quasar/ state folder."""
    from quasar.scaffold import init_project
    done = init_project(path, name, minimal=minimal)
    click.echo(f"created {done.root / 'quasar.toml'}" if minimal else f"created a sample project in {done.root}")
    for item in done.written:
        click.echo(f"  {item}")
    if minimal:
        return
    assert done.start is not None and done.end is not None and done.backfill_end is not None
    window = f"--start {done.start:%Y-%m-%d} --end {done.backfill_end:%Y-%m-%d}"
    click.echo(f"  ({done.events:,} generated events from {done.start:%Y-%m-%d} to {done.end:%Y-%m-%d})")
    click.echo("next:")
    if done.root != Path.cwd().resolve():
        click.echo(f"  cd {os.path.relpath(done.root)}")
    for line in ("quasar register signals/", f"quasar backfill user_activity {window}",
                 "quasar dataset --spine data/spine.parquet --features user_activity --out train.parquet",
                 "cat README.md       # and the rest: materialize, serve, curl"):
        click.echo(f"  {line}")


@click.command()
@click.option("--dir", "workdir", default=None, type=click.Path(file_okay=False),
              help="Where to build the demo project (default: a fresh temp folder).")
@click.option("--keep", is_flag=True, help="Keep the temp folder afterwards.")
@fail_cleanly
def demo(workdir: str | None, keep: bool) -> None:
    """Run the whole product end to end on generated data."""
    from quasar.demo import run_demo
    run_demo(Path(workdir) if workdir else None, keep=keep)


COMMANDS: tuple[click.Command, ...] = (init, demo)
