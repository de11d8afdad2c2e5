"""The commands on the offline store (Iceberg): ``backfill``, ``validate``, ``runs``, ``dataset``, ``gc``,
``compact``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from quasar.cli_context import fail_cleanly, project_platform


@click.command()
@click.argument("signal")
@click.option("--start", required=True, help="First day (inclusive), e.g. 2026-01-01.")
@click.option("--end", required=True, help="Last day (exclusive), e.g. 2026-02-01.")
@click.option("--engine", default=None, help="local or spark (default: [engine] default).")
@click.option("--with-upstream", is_flag=True, help="Backfill upstream signals first, in dependency order.")
@click.pass_context
@fail_cleanly
def backfill(ctx: click.Context, signal: str, start: str, end: str, engine: str | None, with_upstream: bool) -> None:
    """Compute SIGNAL for the days in [start, end) into its Iceberg table (replacing exactly those days)."""
    results = project_platform(ctx).backfill(signal, start, end, engine=engine, with_upstream=with_upstream,
                                      progress=True)
    for r in results:
        click.echo(f"backfilled {r.signal} v{r.version} [{r.start:%Y-%m-%d}, {r.end:%Y-%m-%d}): {r.rows} rows, "
                   f"snapshot {r.snapshot_id}, {r.duration_s:.2f}s")
        if r.validation:
            click.echo(f"  validation: {r.validation['summary']}", err=r.validation["verdict"] != "passed")


@click.command()
@click.argument("signal")
@click.option("--start", required=True, help="First day (inclusive), e.g. 2026-01-01.")
@click.option("--end", required=True, help="Last day (exclusive), e.g. 2026-02-01.")
@click.option("--engine", default=None, help="local or spark (default: [engine] default).")
@click.option("--json", "as_json", is_flag=True, help="Print the validation result as JSON.")
@click.pass_context
@fail_cleanly
def validate(ctx: click.Context, signal: str, start: str, end: str, engine: str | None, as_json: bool) -> None:
    """Run SIGNAL's data-quality gate on [start, end) without committing; exit 1 if a backfill would be refused."""
    from quasar.quality import format_validation
    checked = project_platform(ctx).validate(signal, start, end, engine=engine)
    result = checked.result
    where = f"{result.signal} v{result.version} [{checked.start:%Y-%m-%d}, {checked.end:%Y-%m-%d}) (run {checked.run_id})"
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else "\n".join(format_validation(result, where)))
    if result.verdict == "failed":
        sys.exit(1)


@click.command()
@click.argument("signal")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1), help="How many runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@fail_cleanly
def runs(ctx: click.Context, signal: str, limit: int, as_json: bool) -> None:
    """List SIGNAL's recent runs (newest first) with their status and validation summaries."""
    from quasar.quality import format_runs, run_rows
    rows = run_rows(project_platform(ctx).runs(signal, limit=limit))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo(f"signal {signal} has no runs yet: run `quasar backfill {signal}`")
    else:
        click.echo("\n".join(format_runs(rows)))


@click.command()
@click.option("--spine", required=True, type=click.Path(exists=True),
              help="Parquet (or CSV) file, or a folder of Parquet files (read chunk by chunk; by executors on "
              "--engine spark): join keys, event_timestamp, request fields, labels.")
@click.option("--features", default=None,
              help="Comma-separated references: signal, signal:feature, signal@2:feature, request-time signals.")
@click.option("--service", default=None, help="A feature service (ranker, or ranker@2): exactly its pinned features.")
@click.option("--out", required=True, type=click.Path(),
              help="Output: a .parquet file, a folder of Parquet part files, or an Iceberg table "
              "(iceberg:namespace.table, committed in one transaction); written chunk by chunk.")
@click.option("--engine", default=None, help="local or spark.")
@click.option("--full-names", is_flag=True, help="Name columns <signal>__<feature>.")
@click.pass_context
@fail_cleanly
def dataset(ctx: click.Context, spine: str, features: str | None, service: str | None, out: str,
            engine: str | None, full_names: bool) -> None:
    """Build a point-in-time correct training dataset and write it to Parquet or Iceberg: --features or --service."""
    from quasar.io import read_table
    if (features is None) == (service is None):
        raise click.UsageError("give exactly one of --features and --service")
    p = project_platform(ctx)
    chosen: str | list[str]
    if service is not None:
        from quasar.registry.feature_lists import service_name
        named = service_name(service.strip())
        if named is None:
            raise click.UsageError(f"--service takes a feature service name (ranker or ranker@2), got {service!r}")
        found = p.registry.service(*named)             # NotFoundError names the registered services
        chosen = f"{found.name}@{found.version}"
    else:
        assert features is not None
        chosen = [f.strip() for f in features.split(",") if f.strip()]
        if not chosen:
            raise click.UsageError("--features names no feature")
    from pathlib import Path
    rows: Any = Path(spine) if Path(spine).is_dir() else read_table(spine)
    result = p.dataset(rows, chosen, engine=engine, full_names=full_names, progress=True, out=out)
    click.echo(f"wrote {result.num_rows} rows x {result.table.num_columns} columns to {out}")
    if service is not None:
        click.echo(f"  feature service {chosen}: {', '.join(dict.fromkeys(result.features.values()))}")


@click.command()
@click.argument("signals", nargs=-1)
@click.option("--retention", default=None, help="Expire snapshots older than this, e.g. 7d (default: [offline] "
              "snapshot_retention).")
@click.option("--grace", default=None, help="Spare unreferenced files younger than this, e.g. 1h (default: "
              "[offline] orphan_grace).")
@click.option("--dry-run", is_flag=True, help="Report what would be expired and removed; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@fail_cleanly
def gc(ctx: click.Context, signals: tuple[str, ...], retention: str | None, grace: str | None, dry_run: bool,
       as_json: bool) -> None:
    """Expire old snapshots of SIGNALS' offline tables (all by default) and remove the files no kept snapshot
    references: what killed or failed commits left behind. Never removes a file a kept snapshot needs."""
    from quasar.gc import duration
    results = project_platform(ctx).gc(list(signals) or None, dry_run=dry_run,
                                retention=duration(retention, "--retention") if retention else None,
                                grace=duration(grace, "--grace") if grace else None)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return
    verb = ("would expire", "would remove") if dry_run else ("expired", "removed")
    for r in results:
        young = f"; {r.kept_young_orphans} younger unreferenced file(s) spared" if r.kept_young_orphans else ""
        click.echo(f"{r.table}: {verb[0]} {len(r.expired_snapshots)} snapshot(s), {verb[1]} {len(r.removed_files)} "
                   f"file(s), {r.kept_snapshots} snapshot(s) kept{young}")
    if not results:
        click.echo("no offline tables yet: nothing to collect")


@click.command()
@click.argument("signals", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Report what would be rewritten; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@fail_cleanly
def compact(ctx: click.Context, signals: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Rewrite the small files of SIGNALS' offline tables (all by default) into files of [offline] target_file_mb,
    re-bucketing a table whose bucket count does not fit its data: one atomic commit per table, rows unchanged."""
    results = project_platform(ctx).compact(list(signals) or None, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return
    for r in results:
        if not r.rewritten_files:
            click.echo(f"{r.table}: {r.files_before} file(s); {r.reason}")
            continue
        buckets = f", {r.buckets_before} -> {r.buckets_after} key buckets" if r.buckets_before != r.buckets_after else ""
        if dry_run:
            click.echo(f"{r.table}: would rewrite {r.rewritten_files} of {r.files_before} file(s) "
                       f"(about {r.files_after} after{buckets}): {r.reason}")
        else:
            click.echo(f"{r.table}: {r.files_before} -> {r.files_after} file(s){buckets}, {r.rows:,} rows rewritten "
                       f"in {r.seconds:.1f} s (snapshot {r.snapshot_id})")
    if not results:
        click.echo("no offline tables yet: nothing to compact")


COMMANDS: tuple[click.Command, ...] = (backfill, validate, runs, dataset, gc, compact)
