"""The commands that show what is registered: ``ls``, ``describe`` and the web catalog ``ui``."""

from __future__ import annotations

import json
from typing import Any

import click

from quasar.cli_context import fail_cleanly, project_platform, project_root


def _table(rows: list[dict[str, Any]], header: dict[str, str]) -> None:
    """Print ``rows`` as aligned columns under ``header`` (key -> title)."""
    table = [header, *rows]
    widths = {k: max(len(str(r[k])) for r in table) for k in header}
    for r in table:
        click.echo("  ".join(f"{r[k]!s:<{widths[k]}}" for k in header).rstrip())


@click.command(name="ls")
@click.option("--entities", is_flag=True, help="List the entities (join key, signals of each) instead.")
@click.option("--sources", is_flag=True, help="List the sources (kind, location, signals reading each) instead.")
@click.option("--requests", is_flag=True, help="List only the request-time signals.")
@click.option("--services", is_flag=True, help="List only the feature services.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@fail_cleanly
def ls_(ctx: click.Context, entities: bool, sources: bool, requests: bool, services: bool, as_json: bool) -> None:
    """List registered signals: latest version, serving version (what unpinned references read), kind, ...,
    then the request-time signals and the feature services (with --json: one list, each row with its kind).
    --entities, --sources, --requests, --services list only those."""
    if entities + sources + requests + services > 1:
        raise click.UsageError("give one of --entities, --sources, --requests, --services (or none, for all)")
    p = project_platform(ctx)
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


@click.command()
@click.argument("name")
@click.option("--entity", "what", flag_value="entity", help="NAME is an entity.")
@click.option("--source", "what", flag_value="source", help="NAME is a source.")
@click.option("--signal", "what", flag_value="signal", help="NAME is a signal (the default when one has it).")
@click.option("--request", "what", flag_value="request", help="NAME is a request-time signal.")
@click.option("--service", "what", flag_value="service", help="NAME is a feature service.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@fail_cleanly
def describe(ctx: click.Context, name: str, what: str | None, as_json: bool) -> None:
    """Show a signal (schema, aggregations, versions, upstream and downstream signals, recent runs, the feature
    services and model bundles reading each version), a request-time signal (inputs, request fields, features,
    modes, versions, users), a feature service (features, pins, versions, logging), an entity (join key,
    signals) or a source (location, schema, signals). NAME is looked up in that order."""
    from quasar.describe import format_description
    d = project_platform(ctx).describe(name, what)
    click.echo(json.dumps(d, indent=2) if as_json else format_description(d))


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=6570, show_default=True, type=int)
@click.pass_context
@fail_cleanly
def ui(ctx: click.Context, host: str, port: int) -> None:
    """Run the web catalog (read-only): every signal, request-time signal and feature service with its lineage,
    freshness, runs, validation and statistics; [online] auth_tokens apply (README: The catalog)."""
    from quasar.ui.app import serve_catalog
    serve_catalog(project_root(ctx), host=host, port=port, echo=lambda line: click.echo(line, err=True))


COMMANDS: tuple[click.Command, ...] = (ls_, describe, ui)
