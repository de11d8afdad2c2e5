"""What the catalog's pages show, as plain data read from a ``Platform``: the index of everything registered
(and the search over it), a signal's page (``Platform.describe`` plus freshness, lineage, runs with their
validation, quarantined batches, the last consistency report, statistics), a request-time signal's, a feature
service's, an entity's, a source's and a run's. Nothing here writes, but the statistics cache
(``quasar.ui.stats``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from quasar.signals.durations import format_duration
from quasar.signals.errors import NotFoundError
from quasar.ui.charts import histogram_svg, top_values_svg
from quasar.ui.graph import Lineage, catalog_lineage, lineage_svg
from quasar.ui.stats import feature_stats

if TYPE_CHECKING:
    from quasar.platform import Platform
    from quasar.registry import SignalVersion
    from quasar.registry.records import RunRecord

RECENT_RUNS = 20
RUN_SEARCH = 5000                      # runs of a signal searched for a run's page
QUARANTINE_SHOWN = 20
REPORT_PREFIX = "ui.report"
RATE_ORDER = ("mismatch_rate", "missing_rate", "missing_online_rate", "missing_offline_rate", "extra_rate")


# --- freshness --------------------------------------------------------------------------------------------------
def freshness_of(p: Platform, sv: SignalVersion, now: datetime) -> dict[str, Any]:
    """``sv``'s freshness against its target as ``quasar status`` reports it (``quasar.status.freshness``):
    its state (``ok``, ``stale``, ``never``, ``no target``), how far its table is computed and the lag."""
    from quasar.status import format_lag, freshness
    f = freshness(p, sv, now)
    return {"state": f.state, "computed_until": f.computed_until.isoformat() if f.computed_until else None,
            "lag": format_lag(f.lag, " "), "lag_s": f.lag.total_seconds() if f.lag is not None else None,
            "target": format_duration(f.target) if f.target else None,
            "schedule": format_duration(f.schedule) if f.schedule else "manual"}


# --- recorded reports -------------------------------------------------------------------------------------------
def report_key(kind: str, subject: str) -> str:
    return f"{REPORT_PREFIX}:{kind}:{subject}"


def record_report(registry: Any, kind: str, subject: str, report: Mapping[str, Any]) -> None:
    """Keep ``report`` (a ``ConsistencyReport.to_dict()`` for ``kind="consistency"`` of a signal, a
    ``SkewReport.to_dict()`` for ``"skew"`` of a service) as the last one the catalog shows."""
    registry.set_state(report_key(kind, subject), {"recorded_at": datetime.now(UTC).isoformat(), **report})


def last_report(registry: Any, kind: str, subject: str) -> dict[str, Any] | None:
    """The last recorded report, with ``rate_columns``: the per-feature rates it holds (``mismatch_rate``, ...)."""
    report = registry.get_state(report_key(kind, subject))
    if report is None:
        return None
    features = report.get("features") or [{}]
    rates = sorted((k for k in features[0] if k.endswith("_rate")),
                   key=lambda k: (RATE_ORDER.index(k) if k in RATE_ORDER else len(RATE_ORDER), k))
    return {**report, "rate_columns": rates}


# --- the index and search ---------------------------------------------------------------------------------------
def _last_run(run: RunRecord | None) -> dict[str, Any] | None:
    if run is None:
        return None
    validation = run.details.get("validation") if isinstance(run.details, Mapping) else None
    return {"id": run.id, "kind": run.kind, "status": run.status, "version": run.version,
            "at": (run.finished_at or run.started_at).isoformat(timespec="seconds"),
            "verdict": validation.get("verdict") if isinstance(validation, Mapping) else None}


def index(p: Platform, now: datetime) -> dict[str, list[dict[str, Any]]]:
    """One row per latest signal, request-time signal, feature service, entity and source."""
    serving = p.registry.serving_versions()
    signals = []
    for sv in p.registry.signals():
        sig = sv.signal
        runs = p.registry.runs(sv.name, limit=1)
        signals.append({"name": sv.name, "kind": sig.kind, "version": sv.version,
                        "serving": serving[sv.name].version if sv.name in serving else None,
                        "entity": sig.entity.name, "source": sig.source.name, "owner": sig.owner,
                        "description": sig.description, "online": sig.online, "features": list(sig.schema.names),
                        "freshness": freshness_of(p, sv, now), "last_run": _last_run(runs[0] if runs else None)})
    requests = [{"name": rv.name, "version": rv.version, "owner": rv.signal.owner,
                 "description": rv.signal.description, "features": list(rv.signal.schema.names),
                 "inputs": [ref for _, ref in rv.signal.inputs], "request": list(rv.signal.request.names)}
                for rv in p.registry.request_signals()]
    services = [{"name": fs.name, "version": fs.version, "owner": fs.service.owner,
                 "description": fs.service.description, "features": list(fs.service.features),
                 "logging": fs.service.logging is not None}
                for fs in p.registry.services()]
    entities = [{"name": e.name, "join_key": e.join_key, "description": e.description, "owner": "",
                 "features": []} for e in p.registry.entities()]
    sources = [{"name": s.name, "kind": s.kind, "description": s.description, "owner": "", "features": []}
               for s in p.registry.sources()]
    return {"signals": signals, "requests": requests, "services": services, "entities": entities,
            "sources": sources}


def search(found: dict[str, list[dict[str, Any]]], query: str) -> dict[str, list[dict[str, Any]]]:
    """The rows where every word of ``query`` occurs (any case) in the name, description, owner or a feature
    (a feature name; for a service a reference, for a request-time signal an input too); each kept row says
    where (``matched``)."""
    words = [w.lower() for w in query.split()]
    if not words:
        return found
    out: dict[str, list[dict[str, Any]]] = {}
    for section, rows in found.items():
        kept = []
        for row in rows:
            fields = {"name": [row["name"]], "description": [row.get("description") or ""],
                      "owner": [row.get("owner") or ""],
                      "feature": [*row.get("features", []), *row.get("inputs", [])]}
            matched: list[str] = []
            for word in words:
                hits = [f"{what} {value}" if what == "feature" else what
                        for what, values in fields.items() for value in values if word in value.lower()]
                if not hits:
                    break
                matched += [h for h in hits if h not in matched]
            else:
                kept.append({**row, "matched": matched})
        out[section] = kept
    return out


# --- a signal ---------------------------------------------------------------------------------------------------
def _window(run: RunRecord) -> str:
    params = run.params or {}
    if "start" in params and "end" in params:
        return f"[{str(params['start'])[:10]}, {str(params['end'])[:10]})"
    return ""


def run_row(run: RunRecord) -> dict[str, Any]:
    details = run.details if isinstance(run.details, Mapping) else {}
    validation = details.get("validation") if isinstance(details.get("validation"), Mapping) else None
    quarantine = details.get("quarantine") if isinstance(details.get("quarantine"), Mapping) else None
    return {"id": run.id, "signal": run.signal, "kind": run.kind, "version": run.version, "status": run.status,
            "started_at": run.started_at.isoformat(timespec="seconds"),
            "finished_at": run.finished_at.isoformat(timespec="seconds") if run.finished_at else None,
            "duration_s": run.duration_s, "rows": run.rows, "snapshot_id": run.snapshot_id, "window": _window(run),
            "verdict": validation.get("verdict") if validation else None,
            "summary": validation.get("summary") if validation else None,
            "quarantine": dict(quarantine) if quarantine else None, "error": details.get("error")}


def _charts(stats: dict[str, Any] | None) -> list[dict[str, Any]]:
    if stats is None:
        return []
    out = []
    for f in stats["features"]:
        chart = ""
        if f.get("counts"):
            chart = histogram_svg(f["name"], f["counts"], f["edges"], f.get("labels"), f.get("of") or "values")
        elif f.get("top"):
            chart = top_values_svg(f["name"], [(v, c) for v, c in f["top"]], f["rows"])
        out.append({**f, "chart": chart})
    return out


def signal_page(p: Platform, name: str, now: datetime, lineage: Lineage | None = None) -> dict[str, Any]:
    described = p.describe(name, "signal")
    sv = p.registry.signal(name)
    lineage = lineage or catalog_lineage(p.registry)
    runs = p.registry.runs(name, limit=RECENT_RUNS)
    quarantined = [run_row(r) for r in p.registry.runs(name, limit=200)
                   if isinstance(r.details, Mapping) and isinstance(r.details.get("quarantine"), Mapping)]
    stats = feature_stats(p, sv)
    types = {f["name"]: f["type"] for f in described["schema"]}
    aggregations = {a["name"]: a for a in described["aggregations"]}
    node = f"signal:{name}"
    return {**described, "freshness": freshness_of(p, sv, now),
            "features": [{"name": n, "type": t, "aggregation": aggregations.get(n)} for n, t in types.items()],
            "lineage_svg": lineage_svg(lineage, node),
            "upstream_all": sorted(lineage.nodes[n] for n in lineage.upstream(node)),
            "downstream_all": sorted(lineage.nodes[n] for n in lineage.downstream(node)),
            "recent_runs": [run_row(r) for r in runs], "quarantined": [q for q in quarantined if q["quarantine"]],
            "stats": stats, "charts": _charts(stats), "consistency": last_report(p.registry, "consistency", name)}


# --- request-time signals, services, entities, sources ----------------------------------------------------------
def request_page(p: Platform, name: str, lineage: Lineage | None = None) -> dict[str, Any]:
    from quasar.signals.refs import parse_feature_ref
    described = p.describe(name, "request")
    lineage = lineage or catalog_lineage(p.registry)
    inputs = [{**i, "href": _href(lineage, parse_feature_ref(i["ref"]).signal)} for i in described["inputs"]]
    return {**described, "inputs": inputs, "lineage_svg": lineage_svg(lineage, f"request:{name}")}


def _href(lineage: Lineage, name: str) -> str:
    """The page of what a reference names: a request-time signal's, else a signal's."""
    node = lineage.nodes.get(f"request:{name}") or lineage.nodes.get(f"signal:{name}")
    return node.href if node is not None else f"/signals/{name}"


def service_page(p: Platform, name: str, lineage: Lineage | None = None) -> dict[str, Any]:
    described = p.describe(name, "service")
    lineage = lineage or catalog_lineage(p.registry)
    return {**described, "lineage_svg": lineage_svg(lineage, f"service:{name}"),
            "links": {k: _href(lineage, k) for k in described["reads"]},
            "skew": last_report(p.registry, "skew", name)}


def entity_page(p: Platform, name: str) -> dict[str, Any]:
    return p.describe(name, "entity")


def source_page(p: Platform, name: str, lineage: Lineage | None = None) -> dict[str, Any]:
    described = p.describe(name, "source")
    lineage = lineage or catalog_lineage(p.registry)
    node = f"source:{name}"
    return {**described, "lineage_svg": lineage_svg(lineage, node) if node in lineage.nodes else ""}


# --- a run ------------------------------------------------------------------------------------------------------
def run_page(p: Platform, name: str, run_id: int) -> dict[str, Any]:
    """Run ``run_id`` of signal ``name``: its record, its validation result (every expectation) and the rows it
    quarantined (the first ``QUARANTINE_SHOWN``)."""
    from quasar.store.gates import GateResult
    p.registry.signal(name)
    run = next((r for r in p.registry.runs(name, limit=RUN_SEARCH) if r.id == run_id), None)
    if run is None:
        raise NotFoundError(f"signal {name} has no run #{run_id} (among its last {RUN_SEARCH})")
    row = run_row(run)
    details = run.details if isinstance(run.details, Mapping) else {}
    validation = details.get("validation")
    outcomes: list[dict[str, Any]] = []
    gate = None
    if isinstance(validation, Mapping):
        result = GateResult.from_dict(validation)
        gate = {"policy": result.policy, "verdict": result.verdict, "rows": result.rows, "engine": result.engine,
                "summary": validation.get("summary"), "failed": len(result.failed),
                "evaluated": len(result.outcomes)}
        outcomes = [{**o.to_dict(), "text": o.describe(), "type": o.expectation["type"]} for o in result.outcomes]
    return {**row, "params": dict(run.params), "heartbeat_at": run.heartbeat_at.isoformat(timespec="seconds")
            if run.heartbeat_at else None, "gate": gate, "outcomes": outcomes,
            "quarantined_rows": _quarantined(p, name, run) if row["quarantine"] else None,
            "details": {k: v for k, v in details.items() if k != "validation"}}


def _quarantined(p: Platform, name: str, run: RunRecord) -> dict[str, Any] | None:
    from quasar.store.quarantine import read_quarantine
    try:
        rows = read_quarantine(p.offline, p.registry.signal(name, run.version).signal, run.version, run_id=run.id)
    except NotFoundError:
        return None
    shown = rows.slice(0, QUARANTINE_SHOWN)
    return {"total": rows.num_rows, "columns": shown.column_names,
            "rows": [[_cell(v) for v in r.values()] for r in shown.to_pylist()]}


def _cell(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    text = str(value)
    return text if len(text) <= 60 else text[:59] + "…"
