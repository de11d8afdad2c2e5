"""The commands on the online side (Redis and HTTP): ``materialize``, ``consistency``, ``skew``, ``serve``,
``score-serve``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from quasar.cli_context import fail_cleanly, project_platform, project_root


@click.command()
@click.argument("signals", nargs=-1)
@click.option("--batch-rows", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="Rows per Redis write batch (bounds memory).")
@click.option("--full", is_flag=True, help="Rebuild the online state exactly from the current snapshot: every "
              "entity's latest row replaces what Redis holds, entities without offline rows are removed.")
@click.option("--engine", default=None, help="local or spark (Spark executors read the files and write Redis; "
              "default: [engine] default).")
@click.pass_context
@fail_cleanly
def materialize(ctx: click.Context, signals: tuple[str, ...], batch_rows: int, full: bool,
                engine: str | None) -> None:
    """Write the latest row per entity of online signals (all by default) from Iceberg to Redis, incrementally."""
    results = project_platform(ctx).materialize(list(signals) or None, batch_rows=batch_rows, progress=True, full=full,
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


@click.command()
@click.argument("signal")
@click.option("--sample", default=1000, show_default=True, type=click.IntRange(min=1), help="Entities to compare.")
@click.option("--seed", default=None, type=int, help="Seed of the entity sample (default: a fresh one).")
@click.option("--engine", default=None, help="Engine of the offline point-in-time read (local or spark).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@fail_cleanly
def consistency(ctx: click.Context, signal: str, sample: int, seed: int | None, engine: str | None,
                as_json: bool) -> None:
    """Compare SIGNAL's online values with its offline values as of now on sampled entities: mismatch, missing
    and extra rates per feature."""
    from quasar.quality import format_consistency
    report = project_platform(ctx).consistency(signal, sample=sample, seed=seed, engine=engine)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else "\n".join(format_consistency(report)))


#: The exit code of `quasar skew --fail-on-mismatch` when a feature differs (1 stays for errors).
SKEW_EXIT = 3


@click.command()
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
@fail_cleanly
def skew(ctx: click.Context, service: str, start: str | None, end: str | None, sample: int | None,
         seed: int | None, engine: str | None, fail_on_mismatch: bool, as_json: bool) -> None:
    """Compare what SERVICE served (its feature log) with the offline point-in-time values of the same keys,
    request fields and times: per feature the mismatch and missing rates, with examples. Exit 0 with the
    report (1 on an error; with --fail-on-mismatch, 3 when anything differs)."""
    from quasar.online.skew import format_skew, report_json
    report = project_platform(ctx).skew(service, start=start, end=end, sample=sample, seed=seed, engine=engine)
    click.echo(report_json(report) if as_json else "\n".join(format_skew(report)))
    if fail_on_mismatch and not report.consistent:
        sys.exit(SKEW_EXIT)


def _serve(ctx: click.Context, factory: str, host: str, port: int, workers: int | None,
           around: Any = None) -> None:
    import contextlib
    import os

    from quasar.online.service.runner import default_workers, run_service
    from quasar.services import PROJECT_ENV
    project = str(project_root(ctx))
    os.environ[PROJECT_ENV] = project
    factory_module, factory_name = factory.split(":")
    getattr(__import__(factory_module, fromlist=[factory_name]), factory_name)   # fail here, not in a worker
    workers = workers or default_workers()
    click.echo(f"serving {project} on http://{host}:{port} ({workers} worker{'s' * (workers > 1)}); "
               f"OpenAPI at http://{host}:{port}/docs", err=True)
    with around or contextlib.nullcontext():
        run_service(factory, host=host, port=port, workers=workers, log_level="warning")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=6566, show_default=True, type=int)
@click.option("--workers", default=None, type=click.IntRange(min=1),
              help="Worker processes  [default: one per core]")
@click.pass_context
@fail_cleanly
def serve(ctx: click.Context, host: str, port: int, workers: int | None) -> None:
    """Run the HTTP feature service: /v1/features, /get-online-features, /v1/push, /healthz, /metrics, /docs."""
    from quasar.services import FEATURE_APP
    _serve(ctx, FEATURE_APP, host, port, workers)


@click.command(name="score-serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=6567, show_default=True, type=int)
@click.option("--workers", default=None, type=click.IntRange(min=1),
              help="Worker processes  [default: one per core]")
@click.option("--cache/--no-cache", default=None, help="The in-process candidate cache  [default: [serving] cache]")
@click.option("--model-host", default=None, help="Where models run: '' in each worker, 'process', 'shared' (one "
              "model host process for all workers) or HOST:PORT  [default: [serving] model_host]")
@click.pass_context
@fail_cleanly
def score_serve(ctx: click.Context, host: str, port: int, workers: int | None, cache: bool | None,
                model_host: str | None) -> None:
    """Run the scoring service: /v1/score with the bundles of [serving] models, /healthz, /metrics, /docs."""
    import os

    from quasar.config import load_config
    from quasar.services import SCORING_APP
    from quasar.serving_adapters.settings import flag_environment, scorer_settings, shared_model_host
    os.environ.update(flag_environment(cache=cache, model_host=model_host))       # read by every worker
    config = load_config(project_root(ctx))
    scorer_settings(config.serving)                     # a bad [serving] cache or model_host fails here
    _serve(ctx, SCORING_APP, host, port, workers,
           around=shared_model_host(config.serving, config.path(config.serving.models)))


COMMANDS: tuple[click.Command, ...] = (materialize, consistency, skew, serve, score_serve)
