"""The commands that change what a project defines and serves: ``register``, ``plan``, ``promote``, ``delete``."""

from __future__ import annotations

import click

from quasar.cli_context import fail_cleanly, project_platform, target_path

#: Report lines that a ``SignalChange`` line says better (signals, request-time signals, feature services).
_CHANGE_LINES = ("signal ", "request-time signal ", "feature service ")


@click.command()
@click.argument("targets", nargs=-1, required=True)
@click.pass_context
@fail_cleanly
def register(ctx: click.Context, targets: tuple[str, ...]) -> None:
    """Register the entities, sources, signals, request-time signals and feature services of .py files, folders
    or modules (a feature service is pinned to the signal versions serving now)."""
    p = project_platform(ctx)
    for target in targets:
        report = p.register(target_path(ctx, target))
        for what, lines in (("created", report.created), ("updated", report.updated)):
            for line in lines:
                if not line.startswith(_CHANGE_LINES):
                    click.echo(f"  {what:<10} {line}")
        for change in report.signals:               # unchanged / metadata updated / new version N, and its needs
            click.echo(f"  {change.summary}")
        click.echo(f"registered {report.module}: {len(report.created)} created, {len(report.updated)} updated, "
                   f"{len(report.unchanged)} unchanged")


@click.command()
@click.argument("targets", nargs=-1, required=True)
@click.pass_context
@fail_cleanly
def plan(ctx: click.Context, targets: tuple[str, ...]) -> None:
    """Show what `quasar register TARGETS` would change (new versions, metadata updates), writing nothing."""
    p = project_platform(ctx)
    for target in targets:
        report = p.plan(target_path(ctx, target))
        for what, lines in (("would create", report.created), ("would update", report.updated)):
            for line in lines:
                if not line.startswith(_CHANGE_LINES):
                    click.echo(f"  {what}  {line}")
        for change in report.signals:
            click.echo(f"  {change.summary}")
        click.echo(f"plan for {report.module}: {len(report.created)} to create, {len(report.updated)} to update, "
                   f"{len(report.unchanged)} unchanged; nothing written: `quasar register {target}` applies it")


@click.command()
@click.argument("ref", metavar="SIGNAL@VERSION")
@click.option("--auto", is_flag=True, help="Drop the promotion: serve the newest version whose backfill and "
              "materialization completed.")
@click.pass_context
@fail_cleanly
def promote(ctx: click.Context, ref: str, auto: bool) -> None:
    """Serve SIGNAL@VERSION to unpinned references (datasets, online reads, HTTP) until the next promotion."""
    from quasar.signals.refs import parse_feature_ref
    parsed = parse_feature_ref(ref)
    if parsed.feature is not None or (parsed.version is None) != auto:
        raise click.UsageError("give SIGNAL@VERSION (e.g. user_engagement@2), or SIGNAL --auto")
    serving = project_platform(ctx).promote(parsed.signal, parsed.version)
    click.echo(f"{serving.name} serves v{serving.version} ({serving.reason})")


@click.command()
@click.argument("ref", metavar="SIGNAL[@VERSION]")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@fail_cleanly
def delete(ctx: click.Context, ref: str, yes: bool) -> None:
    """Delete a signal version (every version without @VERSION): its registry rows and runs, its Iceberg tables
    and their files, and its online fields. Asks first; refused while another signal reads it."""
    from quasar.delete import delete as remove
    from quasar.delete import plan_delete
    from quasar.signals.refs import parse_feature_ref
    parsed = parse_feature_ref(ref)
    if parsed.feature is not None:
        raise click.UsageError("give SIGNAL or SIGNAL@VERSION (e.g. user_engagement@2), not a feature")
    p = project_platform(ctx)
    plan = plan_delete(p, parsed.signal, parsed.version)
    for line in plan.lines():
        click.echo(line)
    if not yes:
        click.confirm("delete all of this? it cannot be undone", abort=True)
    remove(p, plan)
    click.echo(f"deleted {plan.label}")


COMMANDS: tuple[click.Command, ...] = (register, plan, promote, delete)
