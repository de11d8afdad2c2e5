"""The ``quasar`` command line: each command a thin wrapper over ``quasar.Platform``.

User mistakes print one clear ``error:`` line and exit 1 (``--debug``: the whole traceback); usage mistakes
exit 2; success exits 0. Every command but ``init`` and ``demo`` runs in a project: the nearest folder at or
above ``-C`` (default: here) with a ``quasar.toml``. Imports are lazy: ``quasar --help`` loads click and the
standard library only (tests/quasar/test_cli_imports.py), each command imports what it needs when it runs.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from quasar.runner_cli import add_commands

F = TypeVar("F", bound=Callable[..., Any])
DEBUG_ENV = "QUASAR_DEBUG"


def _fail_cleanly(fn: F) -> F:
    """Print QuasarErrors as one line and exit 1, never a traceback for user mistakes (but with ``--debug``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            from quasar.signals.errors import QuasarError
            if not isinstance(exc, QuasarError):
                raise
            if _debugging():
                import traceback
                click.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def _debugging() -> bool:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and (root.obj or {}).get("debug")) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _root(ctx: click.Context) -> Path:
    """The project of this command: the nearest folder at or above ``-C`` (default: here) with a quasar.toml.
    Outside a project, a QuasarError (one line, exit 1), before anything is created."""
    from quasar.config import find_project_root
    obj = ctx.ensure_object(dict)
    if "root" not in obj:
        obj["root"] = find_project_root(obj["project"])
    return Path(obj["root"])


def _platform(ctx: click.Context) -> Any:
    from quasar.config import load_config
    from quasar.platform import Platform
    obj = ctx.ensure_object(dict)
    if "platform" not in obj:
        obj["platform"] = Platform(load_config(_root(ctx)))
        ctx.call_on_close(obj["platform"].close)
    return obj["platform"]


def _here(ctx: click.Context, target: str) -> str:
    """A register target as typed: a path relative to where the command runs (``-C`` or the current folder),
    like git's paths; a module name (nothing of that name here) unchanged."""
    path = Path(ctx.ensure_object(dict)["project"]) / target
    return str(path.resolve()) if path.exists() else target


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


@main.command()
@click.argument("path", default=".", type=click.Path(file_okay=False))
@click.option("--name", default=None, help="Project name (prefix of online keys); default: the folder name.")
@click.option("-m", "--minimal", is_flag=True, help="Only quasar.toml, .quasar/ and a .gitignore: no sample.")
@_fail_cleanly
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


#: Report lines that a ``SignalChange`` line says better (signals, request-time signals, feature services).
_CHANGE_LINES = ("signal ", "request-time signal ", "feature service ")


@main.command()
@click.argument("targets", nargs=-1, required=True)
@click.pass_context
@_fail_cleanly
def register(ctx: click.Context, targets: tuple[str, ...]) -> None:
    """Register the entities, sources, signals, request-time signals and feature services of .py files, folders
    or modules (a feature service is pinned to the signal versions serving now)."""
    p = _platform(ctx)
    for target in targets:
        report = p.register(_here(ctx, target))
        for what, lines in (("created", report.created), ("updated", report.updated)):
            for line in lines:
                if not line.startswith(_CHANGE_LINES):
                    click.echo(f"  {what:<10} {line}")
        for change in report.signals:               # unchanged / metadata updated / new version N, and its needs
            click.echo(f"  {change.summary}")
        click.echo(f"registered {report.module}: {len(report.created)} created, {len(report.updated)} updated, "
                   f"{len(report.unchanged)} unchanged")


@main.command()
@click.argument("targets", nargs=-1, required=True)
@click.pass_context
@_fail_cleanly
def plan(ctx: click.Context, targets: tuple[str, ...]) -> None:
    """Show what `quasar register TARGETS` would change (new versions, metadata updates), writing nothing."""
    p = _platform(ctx)
    for target in targets:
        report = p.plan(_here(ctx, target))
        for what, lines in (("would create", report.created), ("would update", report.updated)):
            for line in lines:
                if not line.startswith(_CHANGE_LINES):
                    click.echo(f"  {what}  {line}")
        for change in report.signals:
            click.echo(f"  {change.summary}")
        click.echo(f"plan for {report.module}: {len(report.created)} to create, {len(report.updated)} to update, "
                   f"{len(report.unchanged)} unchanged; nothing written: `quasar register {target}` applies it")


def _table(rows: list[dict[str, Any]], header: dict[str, str]) -> None:
    """Print ``rows`` as aligned columns under ``header`` (key -> title)."""
    table = [header, *rows]
    widths = {k: max(len(str(r[k])) for r in table) for k in header}
    for r in table:
        click.echo("  ".join(f"{r[k]!s:<{widths[k]}}" for k in header).rstrip())


@main.command(name="ls")
@click.option("--entities", is_flag=True, help="List the entities (join key, signals of each) instead.")
@click.option("--sources", is_flag=True, help="List the sources (kind, location, signals reading each) instead.")
@click.option("--requests", is_flag=True, help="List only the request-time signals.")
@click.option("--services", is_flag=True, help="List only the feature services.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_fail_cleanly
def ls_(ctx: click.Context, entities: bool, sources: bool, requests: bool, services: bool, as_json: bool) -> None:
    """List registered signals: latest version, serving version (what unpinned references read), kind, ...,
    then the request-time signals and the feature services (with --json: one list, each row with its kind).
    --entities, --sources, --requests, --services list only those."""
    if entities + sources + requests + services > 1:
        raise click.UsageError("give one of --entities, --sources, --requests, --services (or none, for all)")
    p = _platform(ctx)
    if entities or sources:
        listed = p.entities() if entities else p.sources()
        if as_json:
            click.echo(json.dumps(listed, indent=2))
        elif not listed:
            click.echo(f"no {'entities' if entities else 'sources'} registered: run `quasar register <file or "
                       "folder>`")
        elif entities:
            _table([{**r, "signals": len(r["signals"])} for r in listed],
                   {"name": "ENTITY", "join_key": "JOIN_KEY", "join_key_type": "TYPE", "signals": "SIGNALS",
                    "description": "DESCRIPTION"})
        else:
            _table([{**r, "signals": len(r["signals"])} for r in listed],
                   {"name": "SOURCE", "kind": "KIND", "location": "LOCATION", "timestamp": "TIMESTAMP",
                    "signals": "SIGNALS", "description": "DESCRIPTION"})
        return
    everything = not (requests or services)
    rows: list[dict[str, Any]] = []
    if everything:
        serving = p.serving_versions()
        rows = [{"name": sv.name, "version": sv.version, "serving": serving[sv.name].version,
                 "kind": sv.signal.kind, "entity": sv.signal.entity.name, "features": len(sv.signal.schema),
                 "online": sv.signal.online, "owner": sv.signal.owner, **_schedule(sv.signal)}
                for sv in p.ls()]
    on_demand = p.request_signals() if everything or requests else []
    bound = p.feature_services() if everything or services else []
    if as_json:
        click.echo(json.dumps([*rows, *on_demand, *bound], indent=2))
        return
    if not (rows or on_demand or bound):
        what = "request-time signals" if requests else "feature services" if services else "signals"
        click.echo(f"no {what} registered: run `quasar register <file or folder>`")
        return
    sections = []
    if rows:
        sections.append(lambda: _table(
            [{**r, "version": f"v{r['version']}", "serving": f"v{r['serving']}",
              "online": "yes" if r["online"] else "no", "freshness_target": r["freshness_target"] or "-"}
             for r in rows],
            {"name": "SIGNAL", "version": "VERSION", "serving": "SERVING", "kind": "KIND", "entity": "ENTITY",
             "features": "FEATURES", "online": "ONLINE", "schedule": "SCHEDULE", "freshness_target": "FRESHNESS",
             "owner": "OWNER"}))
    if on_demand:
        sections.append(lambda: _table(
            [{**r, "version": f"v{r['version']}", "inputs": ", ".join(r["inputs"]) or "-",
              "request": ", ".join(r["request"]) or "-", "modes": ", ".join(r["modes"]) or "-"} for r in on_demand],
            {"name": "REQUEST-TIME SIGNAL", "version": "VERSION", "inputs": "INPUTS", "request": "REQUEST FIELDS",
             "features": "FEATURES", "modes": "MODES", "owner": "OWNER"}))
    if bound:
        sections.append(lambda: _table(
            [{**r, "version": f"v{r['version']}", "pins": ", ".join(f"{k}@{v}" for k, v in r["pins"].items()) or "-",
              "logging": "off" if r["logging"] is None else f"{r['logging']:g}"} for r in bound],
            {"name": "FEATURE SERVICE", "version": "VERSION", "features": "FEATURES", "pins": "PINS",
             "logging": "LOGGING", "owner": "OWNER"}))
    for i, show in enumerate(sections):
        if i:
            click.echo("")
        show()


def _schedule(signal: Any) -> dict[str, str | None]:
    """A signal's schedule and freshness target for ``quasar ls`` (``quasar status`` shows the lag)."""
    from quasar.signals.durations import format_duration
    return {"schedule": format_duration(signal.run_schedule) if signal.run_schedule else "manual",
            "freshness_target": format_duration(signal.freshness_target) if signal.freshness_target else None}


@main.command()
@click.argument("name")
@click.option("--entity", "what", flag_value="entity", help="NAME is an entity.")
@click.option("--source", "what", flag_value="source", help="NAME is a source.")
@click.option("--signal", "what", flag_value="signal", help="NAME is a signal (the default when one has it).")
@click.option("--request", "what", flag_value="request", help="NAME is a request-time signal.")
@click.option("--service", "what", flag_value="service", help="NAME is a feature service.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_fail_cleanly
def describe(ctx: click.Context, name: str, what: str | None, as_json: bool) -> None:
    """Show a signal (schema, aggregations, versions, upstream and downstream signals, recent runs, the feature
    services and model bundles reading each version), a request-time signal (inputs, request fields, features,
    modes, versions, users), a feature service (features, pins, versions, logging), an entity (join key,
    signals) or a source (location, schema, signals). NAME is looked up in that order."""
    from quasar.describe import format_description
    d = _platform(ctx).describe(name, what)
    click.echo(json.dumps(d, indent=2) if as_json else format_description(d))


@main.command()
@click.argument("ref", metavar="SIGNAL@VERSION")
@click.option("--auto", is_flag=True, help="Drop the promotion: serve the newest version whose backfill and "
              "materialization completed.")
@click.pass_context
@_fail_cleanly
def promote(ctx: click.Context, ref: str, auto: bool) -> None:
    """Serve SIGNAL@VERSION to unpinned references (datasets, online reads, HTTP) until the next promotion."""
    from quasar.signals.refs import parse_feature_ref
    parsed = parse_feature_ref(ref)
    if parsed.feature is not None or (parsed.version is None) != auto:
        raise click.UsageError("give SIGNAL@VERSION (e.g. user_engagement@2), or SIGNAL --auto")
    serving = _platform(ctx).promote(parsed.signal, parsed.version)
    click.echo(f"{serving.name} serves v{serving.version} ({serving.reason})")


@main.command()
@click.argument("ref", metavar="SIGNAL[@VERSION]")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@_fail_cleanly
def delete(ctx: click.Context, ref: str, yes: bool) -> None:
    """Delete a signal version (every version without @VERSION): its registry rows and runs, its Iceberg tables
    and their files, and its online fields. Asks first; refused while another signal reads it."""
    from quasar.delete import delete as remove
    from quasar.delete import plan_delete
    from quasar.signals.refs import parse_feature_ref
    parsed = parse_feature_ref(ref)
    if parsed.feature is not None:
        raise click.UsageError("give SIGNAL or SIGNAL@VERSION (e.g. user_engagement@2), not a feature")
    p = _platform(ctx)
    plan = plan_delete(p, parsed.signal, parsed.version)
    for line in plan.lines():
        click.echo(line)
    if not yes:
        click.confirm("delete all of this? it cannot be undone", abort=True)
    remove(p, plan)
    click.echo(f"deleted {plan.label}")


@main.command()
@click.argument("signal")
@click.option("--start", required=True, help="First day (inclusive), e.g. 2026-01-01.")
@click.option("--end", required=True, help="Last day (exclusive), e.g. 2026-02-01.")
@click.option("--engine", default=None, help="local or spark (default: [engine] default).")
@click.option("--with-upstream", is_flag=True, help="Backfill upstream signals first, in dependency order.")
@click.pass_context
@_fail_cleanly
def backfill(ctx: click.Context, signal: str, start: str, end: str, engine: str | None, with_upstream: bool) -> None:
    """Compute SIGNAL for the days in [start, end) into its Iceberg table (replacing exactly those days)."""
    results = _platform(ctx).backfill(signal, start, end, engine=engine, with_upstream=with_upstream,
                                      progress=True)
    for r in results:
        click.echo(f"backfilled {r.signal} v{r.version} [{r.start:%Y-%m-%d}, {r.end:%Y-%m-%d}): {r.rows} rows, "
                   f"snapshot {r.snapshot_id}, {r.duration_s:.2f}s")
        if r.validation:
            click.echo(f"  validation: {r.validation['summary']}", err=r.validation["verdict"] != "passed")


@main.command()
@click.argument("signal")
@click.option("--start", required=True, help="First day (inclusive), e.g. 2026-01-01.")
@click.option("--end", required=True, help="Last day (exclusive), e.g. 2026-02-01.")
@click.option("--engine", default=None, help="local or spark (default: [engine] default).")
@click.option("--json", "as_json", is_flag=True, help="Print the validation result as JSON.")
@click.pass_context
@_fail_cleanly
def validate(ctx: click.Context, signal: str, start: str, end: str, engine: str | None, as_json: bool) -> None:
    """Run SIGNAL's data-quality gate on [start, end) without committing; exit 1 if a backfill would be refused."""
    from quasar.quality import format_validation
    checked = _platform(ctx).validate(signal, start, end, engine=engine)
    result = checked.result
    where = f"{result.signal} v{result.version} [{checked.start:%Y-%m-%d}, {checked.end:%Y-%m-%d}) (run {checked.run_id})"
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else "\n".join(format_validation(result, where)))
    if result.verdict == "failed":
        sys.exit(1)


@main.command()
@click.argument("signal")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1), help="How many runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_fail_cleanly
def runs(ctx: click.Context, signal: str, limit: int, as_json: bool) -> None:
    """List SIGNAL's recent runs (newest first) with their status and validation summaries."""
    from quasar.quality import format_runs, run_rows
    rows = run_rows(_platform(ctx).runs(signal, limit=limit))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo(f"signal {signal} has no runs yet: run `quasar backfill {signal}`")
    else:
        click.echo("\n".join(format_runs(rows)))


@main.command()
@click.argument("signals", nargs=-1)
@click.option("--retention", default=None, help="Expire snapshots older than this, e.g. 7d (default: [offline] "
              "snapshot_retention).")
@click.option("--grace", default=None, help="Spare unreferenced files younger than this, e.g. 1h (default: "
              "[offline] orphan_grace).")
@click.option("--dry-run", is_flag=True, help="Report what would be expired and removed; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_fail_cleanly
def gc(ctx: click.Context, signals: tuple[str, ...], retention: str | None, grace: str | None, dry_run: bool,
       as_json: bool) -> None:
    """Expire old snapshots of SIGNALS' offline tables (all by default) and remove the files no kept snapshot
    references: what killed or failed commits left behind. Never removes a file a kept snapshot needs."""
    from quasar.gc import duration
    results = _platform(ctx).gc(list(signals) or None, dry_run=dry_run,
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


@main.command()
@click.argument("signals", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Report what would be rewritten; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_fail_cleanly
def compact(ctx: click.Context, signals: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Rewrite the small files of SIGNALS' offline tables (all by default) into files of [offline] target_file_mb,
    re-bucketing a table whose bucket count does not fit its data: one atomic commit per table, rows unchanged."""
    results = _platform(ctx).compact(list(signals) or None, dry_run=dry_run)
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


@main.command()
@click.argument("signal")
@click.option("--sample", default=1000, show_default=True, type=click.IntRange(min=1), help="Entities to compare.")
@click.option("--seed", default=None, type=int, help="Seed of the entity sample (default: a fresh one).")
@click.option("--engine", default=None, help="Engine of the offline point-in-time read (local or spark).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_fail_cleanly
def consistency(ctx: click.Context, signal: str, sample: int, seed: int | None, engine: str | None,
                as_json: bool) -> None:
    """Compare SIGNAL's online values with its offline values as of now on sampled entities: mismatch, missing
    and extra rates per feature."""
    from quasar.quality import format_consistency
    report = _platform(ctx).consistency(signal, sample=sample, seed=seed, engine=engine)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else "\n".join(format_consistency(report)))


SKEW_EXIT = 3


@main.command()
@click.argument("service")
@click.option("--start", default=None, help="Serving time to start at (inclusive, ISO-8601), e.g. 2026-01-01.")
@click.option("--end", default=None, help="Serving time to end at (exclusive, ISO-8601), e.g. 2026-01-02T12:00Z.")
@click.option("--sample", default=None, type=click.IntRange(min=1), help="Compare a random sample of the rows.")
@click.option("--seed", default=None, type=int, help="Seed of the sample.")
@click.option("--engine", default=None, help="Engine of the offline point-in-time read (local or spark).")
@click.option("--fail-on-mismatch", is_flag=True,
              help=f"Exit {SKEW_EXIT} when any feature has a mismatch or a value missing on either side.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_fail_cleanly
def skew(ctx: click.Context, service: str, start: str | None, end: str | None, sample: int | None,
         seed: int | None, engine: str | None, fail_on_mismatch: bool, as_json: bool) -> None:
    """Compare what SERVICE served (its feature log) with the offline point-in-time values of the same keys,
    request fields and times: per feature the mismatch and missing rates, with examples. Exit 0 with the
    report (1 on an error; with --fail-on-mismatch, 3 when anything differs)."""
    from quasar.online.skew import format_skew, report_json
    report = _platform(ctx).skew(service, start=start, end=end, sample=sample, seed=seed, engine=engine)
    click.echo(report_json(report) if as_json else "\n".join(format_skew(report)))
    if fail_on_mismatch and not report.consistent:
        sys.exit(SKEW_EXIT)


@main.command()
@click.option("--spine", required=True, type=click.Path(exists=True),
              help="Parquet (or CSV) file, or a folder of Parquet files (read chunk by chunk; by executors on "
              "--engine spark): join keys, event_timestamp, request fields, labels.")
@click.option("--features", default=None,
              help="Comma-separated references: signal, signal:feature, signal@2:feature, request-time signals.")
@click.option("--service", default=None, help="A feature service (ranker, or ranker@2): exactly its pinned features.")
@click.option("--out", required=True, type=click.Path(),
              help="Output: a .parquet file, or a folder of Parquet part files; written chunk by chunk.")
@click.option("--engine", default=None, help="local or spark.")
@click.option("--full-names", is_flag=True, help="Name columns <signal>__<feature>.")
@click.pass_context
@_fail_cleanly
def dataset(ctx: click.Context, spine: str, features: str | None, service: str | None, out: str,
            engine: str | None, full_names: bool) -> None:
    """Build a point-in-time correct training dataset and write it to Parquet: --features or --service."""
    from quasar.io import read_table
    if (features is None) == (service is None):
        raise click.UsageError("give exactly one of --features and --service")
    p = _platform(ctx)
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


@main.command()
@click.argument("signals", nargs=-1)
@click.option("--batch-rows", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="Rows per Redis write batch (bounds memory).")
@click.option("--full", is_flag=True, help="Rebuild the online state exactly from the current snapshot: every "
              "entity's latest row replaces what Redis holds, entities without offline rows are removed.")
@click.option("--engine", default=None, help="local or spark (Spark executors read the files and write Redis; "
              "default: [engine] default).")
@click.pass_context
@_fail_cleanly
def materialize(ctx: click.Context, signals: tuple[str, ...], batch_rows: int, full: bool,
                engine: str | None) -> None:
    """Write the latest row per entity of online signals (all by default) from Iceberg to Redis, incrementally."""
    results = _platform(ctx).materialize(list(signals) or None, batch_rows=batch_rows, progress=True, full=full,
                                         engine=engine)
    if not results:
        click.echo("nothing to materialize: no online signal has offline data yet (run `quasar backfill`)")
    for r in results:
        mode = "incremental" if r.incremental else "full"
        click.echo(f"materialized {r.signal} v{r.version} ({mode}): {r.rows_read:,} rows read from {r.files_read} "
                   f"files, {r.entities:,} entities, {r.rows_written:,} records written, {r.rows_deleted:,} "
                   f"deleted, snapshot {r.snapshot_id}, {r.duration_s:.2f}s")
        if r.rows_out_of_bounds:
            click.echo(f"  warning: {r.rows_out_of_bounds:,} row(s) outside the time bounds skipped ([time] in "
                       f"quasar.toml), e.g. {r.out_of_bounds_example}", err=True)


def _serve(ctx: click.Context, factory: str, host: str, port: int, workers: int | None,
           around: Any = None) -> None:
    import contextlib
    import os

    from quasar.online.service.runner import default_workers, run_service
    from quasar.services import PROJECT_ENV
    project = str(_root(ctx))
    os.environ[PROJECT_ENV] = project
    factory_module, factory_name = factory.split(":")
    getattr(__import__(factory_module, fromlist=[factory_name]), factory_name)   # fail here, not in a worker
    workers = workers or default_workers()
    click.echo(f"serving {project} on http://{host}:{port} ({workers} worker{'s' * (workers > 1)}); "
               f"OpenAPI at http://{host}:{port}/docs", err=True)
    with around or contextlib.nullcontext():
        run_service(factory, host=host, port=port, workers=workers, log_level="warning")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=6566, show_default=True, type=int)
@click.option("--workers", default=None, type=click.IntRange(min=1),
              help="Worker processes  [default: one per core]")
@click.pass_context
@_fail_cleanly
def serve(ctx: click.Context, host: str, port: int, workers: int | None) -> None:
    """Run the HTTP feature service: /v1/features, /get-online-features, /v1/push, /healthz, /metrics, /docs."""
    from quasar.services import FEATURE_APP
    _serve(ctx, FEATURE_APP, host, port, workers)


@main.command(name="score-serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=6567, show_default=True, type=int)
@click.option("--workers", default=None, type=click.IntRange(min=1),
              help="Worker processes  [default: one per core]")
@click.option("--cache/--no-cache", default=None, help="The in-process candidate cache  [default: [serving] cache]")
@click.option("--model-host", default=None, help="Where models run: '' in each worker, 'process', 'shared' (one "
              "model host process for all workers) or HOST:PORT  [default: [serving] model_host]")
@click.pass_context
@_fail_cleanly
def score_serve(ctx: click.Context, host: str, port: int, workers: int | None, cache: bool | None,
                model_host: str | None) -> None:
    """Run the scoring service: /v1/score with the bundles of [serving] models, /healthz, /metrics, /docs."""
    import os

    from quasar.config import load_config
    from quasar.services import SCORING_APP
    from quasar.serving_adapters.settings import flag_environment, scorer_settings, shared_model_host
    os.environ.update(flag_environment(cache=cache, model_host=model_host))       # read by every worker
    config = load_config(_root(ctx))
    scorer_settings(config.serving)                     # a bad [serving] cache or model_host fails here
    _serve(ctx, SCORING_APP, host, port, workers,
           around=shared_model_host(config.serving, config.path(config.serving.models)))


@main.command()
@click.option("--dir", "workdir", default=None, type=click.Path(file_okay=False),
              help="Where to build the demo project (default: a fresh temp folder).")
@click.option("--keep", is_flag=True, help="Keep the temp folder afterwards.")
@_fail_cleanly
def demo(workdir: str | None, keep: bool) -> None:
    """Run the whole product end to end on generated data."""
    from quasar.demo import run_demo
    run_demo(Path(workdir) if workdir else None, keep=keep)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=6570, show_default=True, type=int)
@click.pass_context
@_fail_cleanly
def ui(ctx: click.Context, host: str, port: int) -> None:
    """Run the web catalog (read-only): every signal, request-time signal and feature service with its lineage,
    freshness, runs, validation and statistics; [online] auth_tokens apply (README: The catalog)."""
    from quasar.ui.app import serve_catalog
    serve_catalog(_root(ctx), host=host, port=port, echo=lambda line: click.echo(line, err=True))


add_commands(main, _platform, _fail_cleanly)      # quasar run, quasar status (quasar.runner_cli)

if __name__ == "__main__":
    main()
