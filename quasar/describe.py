"""What ``quasar describe`` and ``quasar ls --entities/--sources`` show, as plain data and as text: a signal's
schema, aggregations, schedule and freshness target, versions, lineage, recent runs and the feature services and
model bundles that read each version; an entity's join key and signals; a source's location, schema and signals. Request-time signals and
feature services are described by ``quasar.describe_features``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quasar.describe_features import (
    describe_request,
    describe_service,
    format_request,
    format_service,
    format_used_by,
    usage,
    used_by,
)
from quasar.quality import last_validation
from quasar.signals.durations import format_duration
from quasar.signals.expectations import describe_expectation

KINDS = ("signal", "request", "service", "entity", "source")


def describe(registry: Any, name: str, what: str | None = None, models: Path | None = None) -> dict[str, Any]:
    """``name`` described as ``what`` (a signal, a request-time signal, a feature service, an entity or a
    source); None: the first kind that has the name, in that order. ``models``: the bundles folder, to name
    the bundles that read a signal version or a service. NotFoundError names what exists."""
    from quasar.signals.errors import NotFoundError
    if what is None:
        what = next((kind for kind, names in (
            ("signal", lambda: {sv.name for sv in registry.signals()}),
            ("request", lambda: {rv.name for rv in registry.request_signals()}),
            ("service", lambda: {sv.name for sv in registry.services()}),
            ("entity", lambda: {e.name for e in registry.entities()}),
            ("source", lambda: {s.name for s in registry.sources()})) if name in names()), None)
    if what is None:
        raise NotFoundError(f"no signal, entity or source named {name!r}, nor a request-time signal or feature "
                            "service; see `quasar ls`, `quasar ls --entities` and `quasar ls --sources`")
    if what in ("signal", "request", "service"):
        return {"signal": describe_signal, "request": describe_request, "service": describe_service}[what](
            registry, name, models)
    return {"entity": describe_entity, "source": describe_source}[what](registry, name)


def entity_rows(registry: Any) -> list[dict[str, Any]]:
    """Every entity with the signals of it (latest versions), for ``quasar ls --entities``."""
    signals = registry.signals()
    return [{**e.to_dict(), "signals": sorted(sv.name for sv in signals if sv.signal.entity.name == e.name)}
            for e in registry.entities()]


def source_rows(registry: Any) -> list[dict[str, Any]]:
    """Every source with where it reads and the signals reading it, for ``quasar ls --sources``."""
    signals = registry.signals()
    return [{"name": s.name, "kind": s.kind, "location": _location(s.to_dict()), "timestamp": s.timestamp,
             "signals": sorted(sv.name for sv in signals if sv.signal.source.name == s.name),
             "description": s.description}
            for s in registry.sources()]


def describe_entity(registry: Any, name: str) -> dict[str, Any]:
    """An entity: its join key, the signals of it and the sources they read."""
    entity = registry.entity(name)
    of = [sv for sv in registry.signals() if sv.signal.entity.name == name]
    return {"what": "entity", **entity.to_dict(), "signals": sorted(sv.name for sv in of),
            "sources": sorted({sv.signal.source.name for sv in of})}


def describe_source(registry: Any, name: str) -> dict[str, Any]:
    """A source: where and how it reads, its schema (declared, or recorded at its first read) and its signals."""
    source = registry.source(name)
    data = source.to_dict()
    recorded = None if source.schema is not None or source.kind == "signal" else registry.source_schema(source)
    schema = (source.schema or (recorded.schema if recorded else None))
    return {"what": "source", **data, "location": _location(data),
            "schema": None if schema is None else [{"name": n, "type": t} for n, t in schema],
            "schema_origin": ("declared" if source.schema is not None else
                              f"recorded from {recorded.origin} at {recorded.recorded_at.isoformat()}"
                              if recorded else None),
            "signals": sorted(sv.name for sv in registry.signals() if sv.signal.source.name == name)}


def describe_signal(registry: Any, name: str, models: Path | None = None) -> dict[str, Any]:
    """A JSON-safe description of signal ``name`` from the registry."""
    latest = registry.signal(name)
    versions = registry.versions(name)
    sig = latest.signal
    runs = registry.runs(name, limit=5)
    serving = registry.serving(name)
    return {
        "what": "signal",
        "name": sig.name,
        "kind": sig.kind,
        "version": latest.version,
        "serving": {"version": serving.version, "reason": serving.reason, "promoted": serving.promoted},
        "owner": sig.owner,
        "description": sig.description,
        "entity": sig.entity.to_dict(),
        "source": sig.source.to_dict(),
        "ttl": format_duration(sig.ttl) if sig.ttl else None,
        "online": sig.online,
        "step": format_duration(sig.step) if sig.step else None,
        "schedule": format_duration(sig.run_schedule) if sig.run_schedule else "manual",
        "freshness_target": format_duration(sig.freshness_target) if sig.freshness_target else None,
        "schema": [{"name": n, "type": str(t)} for n, t in sig.schema],
        "aggregations": [{"name": a.name, "function": a.function, "column": a.column,
                          "window": format_duration(a.window), "dtype": str(a.dtype)} for a in sig.aggregations],
        "schema_fingerprint": sig.schema.fingerprint_hex,
        "module": sig.module,
        "versions": [{"version": v.version, "created_at": v.created_at.isoformat(),
                      "schema_fingerprint": v.signal.schema.fingerprint_hex}
                     for v in versions],
        "upstream": registry.upstream(name),
        "downstream": registry.downstream(name),
        "read_at_request_time_by": sorted(rv.name for rv in registry.request_signals()
                                          if name in rv.signal.upstream),
        "used_by": used_by(usage(registry, models), name, [v.version for v in versions]),
        "runs": [{"id": r.id, "kind": r.kind, "version": r.version, "status": r.status,
                  "started_at": r.started_at.isoformat(), "rows": r.rows, "snapshot_id": r.snapshot_id,
                  "duration_s": r.duration_s} for r in runs],
        "expectations": [describe_expectation(e) for e in sig.expectations],
        "policy": sig.policy,
        "last_validation": last_validation(registry.runs(name, limit=50)),
    }


def format_description(d: dict[str, Any]) -> str:
    """Human-readable text of ``describe`` output (a signal's, an entity's or a source's)."""
    if d.get("what") == "entity":
        return _format_entity(d)
    if d.get("what") == "source":
        return _format_source(d)
    if d.get("what") == "request":
        return format_request(d)
    if d.get("what") == "service":
        return format_service(d)
    lines = [
        f"signal {d['name']} v{d['version']} ({d['kind']})",
        f"  description: {d['description'] or '-'}",
        f"  owner:       {d['owner'] or '-'}",
        f"  entity:      {d['entity']['name']} (join key {d['entity']['join_key']}: {d['entity']['join_key_type']})",
        f"  source:      {_source(d['source'])}",
        f"  ttl:         {d['ttl'] or 'none'}    online: {'yes' if d['online'] else 'no'}"
        + (f"    step: {d['step']}" if d["step"] else ""),
        *_schedule(d),
        f"  module:      {d['module'] or '-'}",
        f"  serving:     v{d['serving']['version']} ({d['serving']['reason']})",
        "  schema:",
    ]
    width = max(len(f["name"]) for f in d["schema"])
    lines += [f"    {f['name']:<{width}}  {f['type']}" for f in d["schema"]]
    if d.get("aggregations"):
        lines.append(f"  aggregations (step {d['step']}: the row stamped T aggregates [T - window, T)):")
        width = max(len(a["name"]) for a in d["aggregations"])
        lines += [f"    {a['name']:<{width}}  {a['function']}({a['column'] or '*'}) over {a['window']} -> {a['dtype']}"
                  for a in d["aggregations"]]
    versions = ", ".join("v" + str(v["version"]) for v in d["versions"])
    lines.append(f"  versions:    {versions}")
    lines.append(f"  upstream:    {', '.join(d['upstream']) or '-'}")
    lines.append(f"  downstream:  {', '.join(d['downstream']) or '-'}")
    if d.get("read_at_request_time_by"):
        lines.append(f"  read by request-time signals: {', '.join(d['read_at_request_time_by'])}")
    lines += format_used_by(d.get("used_by", []))
    for t in d.get("tables", []):
        todo = f"; quasar compact would {t['compaction'][0].lower()}{t['compaction'][1:]}" if t["compaction"] else ""
        lines.append(f"  offline v{t['version']}:  {t['files']} data file(s), {t['bytes'] / 2**20:.1f} MiB, "
                     f"{t['buckets']} key bucket(s){todo}")
    if d.get("expectations"):
        lines.append(f"  expectations ({d['policy']}):")
        lines += [f"    {e}" for e in d["expectations"]]
    last = d.get("last_validation")
    if last:
        lines.append(f"  last validation: #{last['run_id']} {last['kind']} v{last['version']} {last['status']} at "
                     f"{last['started_at']}: {last['summary']}")
        if last.get("quarantine"):
            lines.append(f"    quarantined {last['quarantine']['rows']} rows in {last['quarantine']['table']}")
    if d["runs"]:
        lines.append("  recent runs:")
        for r in d["runs"]:
            rows = "-" if r["rows"] is None else r["rows"]
            lines.append(f"    #{r['id']} {r['kind']} v{r['version']} {r['status']} rows={rows} "
                         f"snapshot={r['snapshot_id'] or '-'} at {r['started_at']}")
    return "\n".join(lines)


def _schedule(d: dict[str, Any]) -> list[str]:
    """The schedule and freshness target, and (from ``Platform.describe``) the freshness now (``quasar.status``)."""
    schedule = d.get("schedule") or "-"
    how = "`quasar backfill` computes it, `quasar run` does not" if schedule == "manual" else "by `quasar run`"
    lines = [f"  schedule:    {schedule} ({how}); freshness target {d.get('freshness_target') or 'none'}"]
    fresh = d.get("freshness")
    if fresh:
        lines.append(f"  freshness:   {fresh['text']}")
    return lines


def _format_entity(d: dict[str, Any]) -> str:
    return "\n".join([
        f"entity {d['name']} (join key {d['join_key']}: {d['join_key_type']})",
        f"  description: {d['description'] or '-'}",
        f"  signals:     {', '.join(d['signals']) or '-'}",
        f"  sources:     {', '.join(d['sources']) or '-'}",
    ])


def _format_source(d: dict[str, Any]) -> str:
    layout = [k for k in ("recursive", "partitioning") if d.get(k)]
    lines = [
        f"source {_source(d)}" if d["kind"] != "signal" else f"source {d['name']} (the output of signal {d['upstream']})",
        f"  description: {d['description'] or '-'}",
        f"  signals:     {', '.join(d['signals']) or '-'}",
    ]
    if layout:
        lines.append("  layout:      " + ", ".join(f"{k}={d[k]}" for k in layout))
    if d.get("null_timestamps"):
        lines.append(f"  null event times: {d['null_timestamps']}")
    if d["kind"] == "signal":
        return "\n".join(lines)
    if d["schema"] is None:
        lines.append("  schema:      not declared; recorded at the first backfill")
    else:
        lines.append(f"  schema ({d['schema_origin']}):")
        width = max(len(c["name"]) for c in d["schema"])
        lines += [f"    {c['name']:<{width}}  {c['type']}" for c in d["schema"]]
    return "\n".join(lines)


def _location(s: dict[str, Any]) -> str:
    return str(s.get("path") or s.get("table") or f"signal {s.get('upstream')}")


def _source(s: dict[str, Any]) -> str:
    where = s.get("path") or s.get("table") or s.get("upstream")
    return f"{s['name']} ({s['kind']}: {where}, timestamp {s['timestamp']})"
