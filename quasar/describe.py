"""What ``quasar describe`` shows: schema, versions, lineage and recent runs of a signal, as plain data."""

from __future__ import annotations

from typing import Any

from quasar.quality import last_validation
from quasar.signals.durations import format_duration
from quasar.signals.expectations import describe_expectation


def describe_signal(registry: Any, name: str) -> dict[str, Any]:
    """A JSON-safe description of signal ``name`` from the registry."""
    latest = registry.signal(name)
    sig = latest.signal
    runs = registry.runs(name, limit=5)
    serving = registry.serving(name)
    return {
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
        "schema": [{"name": n, "type": str(t)} for n, t in sig.schema],
        "schema_fingerprint": sig.schema.fingerprint_hex,
        "module": sig.module,
        "versions": [{"version": v.version, "created_at": v.created_at.isoformat(),
                      "schema_fingerprint": v.signal.schema.fingerprint_hex}
                     for v in registry.versions(name)],
        "upstream": registry.upstream(name),
        "downstream": registry.downstream(name),
        "runs": [{"id": r.id, "kind": r.kind, "version": r.version, "status": r.status,
                  "started_at": r.started_at.isoformat(), "rows": r.rows, "snapshot_id": r.snapshot_id,
                  "duration_s": r.duration_s} for r in runs],
        "expectations": [describe_expectation(e) for e in sig.expectations],
        "policy": sig.policy,
        "last_validation": last_validation(registry.runs(name, limit=50)),
    }


def format_description(d: dict[str, Any]) -> str:
    """Human-readable text of ``describe_signal`` output."""
    lines = [
        f"signal {d['name']} v{d['version']} ({d['kind']})",
        f"  description: {d['description'] or '-'}",
        f"  owner:       {d['owner'] or '-'}",
        f"  entity:      {d['entity']['name']} (join key {d['entity']['join_key']}: {d['entity']['join_key_type']})",
        f"  source:      {_source(d['source'])}",
        f"  ttl:         {d['ttl'] or 'none'}    online: {'yes' if d['online'] else 'no'}"
        + (f"    step: {d['step']}" if d["step"] else ""),
        f"  module:      {d['module'] or '-'}",
        f"  serving:     v{d['serving']['version']} ({d['serving']['reason']})",
        "  schema:",
    ]
    width = max(len(f["name"]) for f in d["schema"])
    lines += [f"    {f['name']:<{width}}  {f['type']}" for f in d["schema"]]
    versions = ", ".join("v" + str(v["version"]) for v in d["versions"])
    lines.append(f"  versions:    {versions}")
    lines.append(f"  upstream:    {', '.join(d['upstream']) or '-'}")
    lines.append(f"  downstream:  {', '.join(d['downstream']) or '-'}")
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


def _source(s: dict[str, Any]) -> str:
    where = s.get("path") or s.get("table") or s.get("upstream")
    return f"{s['name']} ({s['kind']}: {where}, timestamp {s['timestamp']})"
