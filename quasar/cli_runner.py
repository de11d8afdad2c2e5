"""The ``quasar run`` and ``quasar status`` commands, added to ``quasar.cli.main`` by ``add_commands``; like the rest
of the CLI they import click and the standard library only until they run."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click


def add_commands(main: click.Group, platform: Callable[[click.Context], Any],
                 fail_cleanly: Callable[[Any], Any]) -> None:
    """Add ``run`` and ``status`` to ``main``; ``platform`` opens the command's project, ``fail_cleanly`` prints
    user mistakes as one line (both from ``quasar.cli``)."""

    @main.command()
    @click.option("--once", is_flag=True, help="One pass, then exit (for cron, Airflow, a Kubernetes CronJob).")
    @click.option("--interval", default="1m", show_default=True,
                  help="Without --once: start a pass this often (e.g. 30s, 5m); a failed signal is retried sooner.")
    @click.option("--dry-run", is_flag=True, help="Print what one pass would do (signal, days, why); do nothing.")
    @click.option("--wait", is_flag=True, help="With --once: wait while another runner holds the lease, instead of "
                  "exiting 75.")
    @click.option("--max-days", default=31, show_default=True, type=click.IntRange(min=1),
                  help="The most days one backfill computes (a backfill holds its window in memory).")
    @click.option("--metrics-file", default=None, type=click.Path(dir_okay=False),
                  help="Write Prometheus metrics here after every pass (node exporter's textfile collector reads "
                       "*.prom files).")
    @click.option("--metrics-port", default=None, type=click.IntRange(1, 65535),
                  help="Serve Prometheus metrics on this port while running.")
    @click.option("--json", "as_json", is_flag=True, help="Print the last pass's report as JSON (progress on stderr).")
    @click.pass_context
    @fail_cleanly
    def run(ctx: click.Context, once: bool, interval: str, dry_run: bool, wait: bool, max_days: int,
            metrics_file: str | None, metrics_port: int | None, as_json: bool) -> None:
        """Keep every registered signal computed and fresh, upstream first: backfill the days that are missing or
        whose source changed (new or changed files, new Iceberg snapshots, a recomputed upstream signal) of the
        signals whose schedule is due, then materialize the online ones. One runner acts at a time (a lease in
        the registry). SIGTERM or SIGINT stops it after the current step. Exit 0 when every signal succeeded,
        1 when one failed, 75 when another runner holds the lease (--once without --wait)."""
        from quasar.gc import duration
        from quasar.runner import LEASE_HELD_EXIT

        p = platform(ctx)
        metrics = None
        if (metrics_file or metrics_port) and not dry_run:
            from quasar.runner_metrics import RunnerMetrics
            metrics = RunnerMetrics(metrics_file, metrics_port)

        def echo(line: str) -> None:
            click.echo(line, err=as_json)

        report = p.run(once=once or dry_run, dry_run=dry_run, interval=duration(interval, "--interval"), wait=wait,
                       max_days=max_days, metrics=metrics, echo=echo)
        if as_json:
            click.echo(json.dumps(report.to_dict() if report is not None else None, indent=2))
        if report is not None and report.held_by:
            sys.exit(LEASE_HELD_EXIT)
        if report is not None and report.failed and (once or dry_run):
            sys.exit(1)

    @main.command()
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.pass_context
    @fail_cleanly
    def status(ctx: click.Context, as_json: bool) -> None:
        """Show each signal's freshness against its target (ok, stale, never), its schedule, its last run, and
        what the next pass of `quasar run` would do (the plan of `quasar run --dry-run`)."""
        from quasar.status import format_status
        rows = platform(ctx).status()
        if as_json:
            click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        elif not rows:
            click.echo("no signals registered: run `quasar register <file or folder>`")
        else:
            click.echo("\n".join(format_status(rows)))
