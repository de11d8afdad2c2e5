"""Text for the data-quality commands (``quasar validate``, ``runs``, ``consistency``) and ``describe``'s last
validation: plain data in, lines out, so the CLI stays a thin wrapper."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from quasar.online.consistency import KINDS, ConsistencyReport
from quasar.store.gates import ExpectationOutcome, GateResult


def validation_summary(details: Mapping[str, Any]) -> str:
    """A run's validation in one line (``-`` when the run did not validate)."""
    validation = details.get("validation")
    return str(validation.get("summary", "-")) if isinstance(validation, Mapping) else "-"


def last_validation(runs: Iterable[Any]) -> dict[str, Any] | None:
    """The newest run (of the given, newest first) that ran the gate: its id, kind, status and result."""
    for run in runs:
        validation = run.details.get("validation")
        if isinstance(validation, Mapping):
            return {"run_id": run.id, "kind": run.kind, "version": run.version, "status": run.status,
                    "started_at": run.started_at.isoformat(), "params": dict(run.params),
                    "verdict": validation.get("verdict"), "summary": validation.get("summary"),
                    "quarantine": run.details.get("quarantine")}
    return None


def run_rows(runs: Iterable[Any]) -> list[dict[str, Any]]:
    """``quasar runs`` as JSON-safe rows."""
    return [{"id": r.id, "kind": r.kind, "version": r.version, "status": r.status,
             "started_at": r.started_at.isoformat(), "duration_s": r.duration_s, "rows": r.rows,
             "snapshot_id": r.snapshot_id, "params": r.params, "validation": validation_summary(r.details),
             "error": r.details.get("error"),
             "heartbeat_at": r.heartbeat_at.isoformat() if getattr(r, "heartbeat_at", None) else None} for r in runs]


def format_runs(rows: list[dict[str, Any]]) -> list[str]:
    """One line per run, then its validation (and error) indented below it."""
    lines = []
    for r in rows:
        window = ""
        if "start" in r["params"] and "end" in r["params"]:
            window = f" [{r['params']['start'][:10]}, {r['params']['end'][:10]})"
        rows_text = "-" if r["rows"] is None else f"{r['rows']:,}"
        lines.append(f"#{r['id']:<5} {r['kind']:<11} v{r['version']:<3} {r['status']:<9} {r['started_at'][:19]}"
                     f"{window} rows={rows_text} snapshot={r['snapshot_id'] or '-'}")
        if r["validation"] != "-":
            lines.append(f"       validation: {r['validation']}")
        if r["error"] and r["status"] in ("failed", "abandoned") and r["validation"] == "-":
            lines.append(f"       error: {r['error']}")
        elif r["status"] == "abandoned":
            lines.append(f"       abandoned: no heartbeat since {(r['heartbeat_at'] or r['started_at'])[:19]}, its "
                         "lease ran out (the process was killed or lost the registry)")
    return lines


def format_outcome(outcome: ExpectationOutcome) -> str:
    return f"  {'ok  ' if outcome.success else 'FAIL'}  {outcome.describe()}"


def format_validation(result: GateResult, where: str) -> list[str]:
    """``quasar validate``: the verdict, then every expectation."""
    if not result.outcomes:
        return [f"{where}: signal {result.signal} declares no expectations: nothing to validate ({result.rows:,} rows)"]
    n = len(result.outcomes)
    if result.success:
        verdict = f"passed {n} of {n} expectation{'s' * (n != 1)}"
    elif result.verdict == "failed":
        verdict = f"FAILED {len(result.failed)} of {n}: a backfill would be refused and its batch quarantined"
    else:
        verdict = f"warned {len(result.failed)} of {n} failed: a backfill would commit it (policy warn)"
    lines = [f"{where}: {result.rows:,} rows, policy {result.policy}: {verdict}"]
    return lines + [format_outcome(o) for o in result.outcomes]


def format_consistency(report: ConsistencyReport) -> list[str]:
    """``quasar consistency``: one row per feature with its rates and counts, then a few examples."""
    lines = [f"consistency of {report.signal} v{report.version} as of {report.as_of.isoformat(timespec='seconds')}: "
             f"{report.sampled:,} of {report.population:,} entities sampled, "
             + ("online equals offline" if report.consistent else "online differs from offline")]
    width = max([len("FEATURE"), *(len(f.feature) for f in report.features)])
    lines.append(f"  {'FEATURE':<{width}}  {'MISMATCH':>9}  {'MISSING':>9}  {'EXTRA':>9}  MATCHED  BOTH_NULL")
    for f in report.features:
        rates = "  ".join(f"{f.rate(k):>9.2%}" for k in KINDS)
        lines.append(f"  {f.feature:<{width}}  {rates}  {f.matches:>7}  {f.both_null:>9}")
    for f in report.features:
        for e in f.examples[:3]:
            lines.append(f"  e.g. {f.feature} of {e['key']!r}: {e['kind']}: offline {e['offline']!r}, "
                         f"online {e['online']!r}")
    return lines
