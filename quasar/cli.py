"""The ``quasar`` command line: each command a thin wrapper over ``quasar.Platform``.

User mistakes print one clear ``error:`` line and exit 1 (``--debug``: the whole traceback); usage mistakes
exit 2; success exits 0. Every command but ``init`` and ``demo`` runs in a project: the nearest folder at or
above ``-C`` (default: here) with a quasar.toml. Imports are lazy: ``quasar --help`` loads click and the
standard library only (tests/quasar/test_cli_imports.py), each command imports what it needs when it runs.

This module assembles the group; the commands live by theme: ``cli_project`` (init, demo), ``cli_registry``
(register, plan, promote, delete), ``cli_catalog`` (ls, describe, ui), ``cli_store`` (backfill, validate, runs,
dataset, gc, compact), ``cli_online`` (materialize, consistency, skew, serve, score-serve), ``cli_runner`` (run,
status); ``cli_context`` holds what they share.
"""

from __future__ import annotations

import click

from quasar import cli_catalog, cli_online, cli_project, cli_registry, cli_store
from quasar.cli_context import DEBUG_ENV, fail_cleanly, project_platform
from quasar.cli_online import SKEW_EXIT
from quasar.cli_runner import add_commands

__all__ = ["SKEW_EXIT", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-C", "--project", default=".", envvar="QUASAR_PROJECT", show_default=True,
              type=click.Path(file_okay=False),
              help="Run in this folder: the project is the nearest folder at or above it with a quasar.toml.")
@click.option("--debug", is_flag=True, envvar=DEBUG_ENV,
              help="On an error, print the whole traceback (and the one-line error after it).")
@click.version_option(package_name="quasar")
@click.pass_context
def main(ctx: click.Context, project: str, debug: bool) -> None:
    """quasar: signals into Iceberg and Redis, datasets into PyTorch, features and scores over HTTP."""
    ctx.ensure_object(dict).update(project=project, debug=debug)


for _theme in (cli_project, cli_registry, cli_catalog, cli_store, cli_online):
    for _command in _theme.COMMANDS:
        main.add_command(_command)
add_commands(main, project_platform, fail_cleanly)      # quasar run, quasar status (quasar.cli_runner)

if __name__ == "__main__":
    main()
