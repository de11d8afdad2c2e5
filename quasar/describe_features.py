"""What ``quasar describe`` and ``quasar ls`` show of request-time signals and feature services, and who uses a
signal version: the feature service versions that read it (directly, or through a request-time signal they
pin, transitively) and the model bundles whose manifest names it or names such a service.

Everything here reads the registry (and, for bundles, the ``bundle.json`` manifests of the models folder as
JSON: no torch import), so ``describe`` is cheap.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quasar.signals.refs import parse_feature_ref
from quasar.signals.request import ROW_MODE_MAX_ROWS, RequestSignal
from quasar.signals.service import FeatureService, log_table_name

BUNDLE_FILE = "bundle.json"        # serving_adapters.bundle.BUNDLE_FILE, without importing torch


@dataclass
class Usage:
    """Who reads which signal versions: ``services[(signal, version)]`` lists ``(service, service_version,
    is_latest)``; ``bundles[(signal, version)]`` lists bundle names."""

    services: dict[tuple[str, int], list[tuple[str, int, bool]]] = field(default_factory=dict)
    bundles: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    service_bundles: dict[tuple[str, int], list[str]] = field(default_factory=dict)


class _Requests:
    """Registered request-time signal versions, read once each."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self.names = {rv.name for rv in registry.request_signals()}
        self._at: dict[tuple[str, int], RequestSignal] = {}

    def at(self, name: str, version: int | None) -> tuple[RequestSignal, int]:
        if version is None:
            rv = self.registry.request_signal(name)
            version = int(rv.version)
            self._at.setdefault((name, version), rv.signal)
        if (name, version) not in self._at:
            self._at[(name, version)] = self.registry.request_signal(name, version).signal
        return self._at[(name, version)], version


def service_reads(service: FeatureService, requests: _Requests) -> dict[str, list[int]]:
    """The signal versions a (pinned) service version reads, request-time signals' inputs included,
    transitively: signal -> versions. An unpinned input that no pin covers is left out (it follows serving)."""
    reads: dict[str, set[int]] = {}

    def visit(raw: str, pins: dict[str, int]) -> None:
        ref = parse_feature_ref(raw)
        version = ref.version if ref.version is not None else pins.get(ref.signal)
        if version is None or version in reads.get(ref.signal, set()):
            return
        reads.setdefault(ref.signal, set()).add(version)
        if ref.signal in requests.names:
            rs, _ = requests.at(ref.signal, version)
            for _, up in rs.inputs:
                visit(up, pins)

    for raw in service.features:
        visit(raw, dict(service.pins))
    return {name: sorted(versions) for name, versions in sorted(reads.items())}


def bundle_manifests(models: Path | None) -> dict[str, dict[str, Any]]:
    """``bundle.json`` of every bundle in the models folder, by bundle name; unreadable ones are skipped."""
    if models is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    try:
        entries = sorted(os.scandir(models), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    for entry in entries:
        path = Path(entry.path) / BUNDLE_FILE
        if entry.is_dir() and path.is_file():
            try:
                out[entry.name] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
    return out


def _bundle_service(manifest: dict[str, Any]) -> tuple[str, int | None] | None:
    named = manifest.get("service")
    if isinstance(named, dict) and named.get("name"):
        version = named.get("version")
        return str(named["name"]), int(version) if version is not None else None
    if isinstance(named, str) and named:
        ref = parse_feature_ref(named)
        return ref.signal, ref.version
    return None


def usage(registry: Any, models: Path | None) -> Usage:
    """Which service versions and bundles read each signal version (stored or request-time)."""
    found = Usage()
    requests = _Requests(registry)
    for latest in registry.services():
        for sv in registry.service_versions(latest.name):
            for signal, versions in service_reads(sv.service, requests).items():
                for v in versions:
                    found.services.setdefault((signal, v), []).append((sv.name, sv.version, sv.is_latest))
    for name, manifest in bundle_manifests(models).items():
        for column in manifest.get("inputs", []):
            try:
                ref = parse_feature_ref(str(column.get("ref", "")))
            except Exception:       # a hand-edited manifest: not ours to judge here
                continue
            if ref.version is not None and name not in found.bundles.get((ref.signal, ref.version), []):
                found.bundles.setdefault((ref.signal, ref.version), []).append(name)
        service = _bundle_service(manifest)
        if service is not None and service[1] is not None:
            found.service_bundles.setdefault((service[0], service[1]), []).append(name)
    return found


def used_by(found: Usage, name: str, versions: list[int]) -> list[dict[str, Any]]:
    """Per version of ``name``: the service versions and bundles that read it."""
    out = []
    for v in versions:
        services = [{"name": s, "version": sv, "latest": latest} for s, sv, latest in found.services.get((name, v), [])]
        bundles = list(found.bundles.get((name, v), []))
        if services or bundles:
            out.append({"version": v, "services": services, "bundles": bundles})
    return out


# --- request-time signals ---------------------------------------------------------------------------------
def _fields(schema: Any) -> list[dict[str, str]]:
    return [{"name": n, "type": str(t)} for n, t in schema]


def describe_request(registry: Any, name: str, models: Path | None = None) -> dict[str, Any]:
    """A request-time signal: inputs, request fields, features, modes, versions and who reads each version."""
    latest = registry.request_signal(name)
    rs = latest.signal
    versions = [registry.request_signal(name, v) for v in range(1, latest.version + 1)]
    found = usage(registry, models)
    readers = sorted(rv.name for rv in registry.request_signals() if name in rv.signal.upstream)
    return {
        "what": "request",
        "name": rs.name,
        "kind": "request-time signal",
        "version": latest.version,
        "owner": rs.owner,
        "description": rs.description,
        "module": rs.module,
        "inputs": [{"name": n, "ref": r} for n, r in rs.inputs],
        "request": _fields(rs.request),
        "schema": _fields(rs.schema),
        "modes": rs.modes,
        "upstream": rs.upstream,
        "downstream": readers,
        "versions": [{"version": rv.version, "created_at": rv.created_at.isoformat(),
                      "inputs": [r for _, r in rv.signal.inputs], "modes": rv.signal.modes,
                      "fingerprint": rv.signal.definition_fingerprint} for rv in versions],
        "used_by": used_by(found, name, [rv.version for rv in versions]),
    }


def format_request(d: dict[str, Any]) -> str:
    width = max([len(f["name"]) for f in [*d["schema"], *d["request"]]] + [len(i["name"]) for i in d["inputs"]])
    lines = [
        f"request-time signal {d['name']} v{d['version']}",
        f"  description: {d['description'] or '-'}",
        f"  owner:       {d['owner'] or '-'}",
        f"  module:      {d['module'] or '-'}",
        f"  modes:       {', '.join(d['modes']) or '-'}" + (
            f" (batches of up to {ROW_MODE_MAX_ROWS} rows run the row form, larger ones the vectorised form)"
            if len(d["modes"]) == 2 else ""),
        "  inputs:" + ("" if d["inputs"] else "      -"),
    ]
    lines += [f"    {i['name']:<{width}}  {i['ref']}" for i in d["inputs"]]
    lines.append("  request fields:" + ("" if d["request"] else " -"))
    lines += [f"    {f['name']:<{width}}  {f['type']}" for f in d["request"]]
    lines.append("  features:")
    lines += [f"    {f['name']:<{width}}  {f['type']}" for f in d["schema"]]
    lines.append(f"  versions:    {', '.join('v' + str(v['version']) for v in d['versions'])}")
    lines.append(f"  upstream:    {', '.join(d['upstream']) or '-'}")
    lines.append(f"  read by request-time signals: {', '.join(d['downstream']) or '-'}")
    lines += format_used_by(d["used_by"])
    return "\n".join(lines)


def format_used_by(used: list[dict[str, Any]]) -> list[str]:
    if not used:
        return ["  used by:     no feature service or model bundle"]
    lines = ["  used by:"]
    for u in used:
        parts = []
        if u["services"]:
            parts.append("feature service " + ", ".join(
                f"{s['name']}@{s['version']}" + (" (latest)" if s["latest"] else "") for s in u["services"]))
        if u["bundles"]:
            parts.append("model bundle " + ", ".join(u["bundles"]))
        lines.append(f"    v{u['version']}: {'; '.join(parts)}")
    return lines


# --- feature services -------------------------------------------------------------------------------------
def describe_service(registry: Any, name: str, models: Path | None = None) -> dict[str, Any]:
    """A feature service: its references, pins, the signal versions it reads, logging, versions and the bundles
    that name it."""
    versions = registry.service_versions(name)
    latest = versions[-1]
    fs = latest.service
    requests = _Requests(registry)
    bundles = usage(registry, models).service_bundles
    return {
        "what": "service",
        "name": fs.name,
        "kind": "feature service",
        "version": latest.version,
        "owner": fs.owner,
        "description": fs.description,
        "module": fs.module,
        "features": list(fs.features),
        "refs": fs.refs(),
        "pins": dict(fs.pins),
        "reads": service_reads(fs, requests),
        "logging": None if fs.logging is None else {**fs.logging.to_dict(), "table": log_table_name(fs.name)},
        "versions": [{"version": sv.version, "created_at": sv.created_at.isoformat(), "pins": dict(sv.service.pins),
                      "features": list(sv.service.features), "latest": sv.is_latest,
                      "bundles": list(bundles.get((name, sv.version), []))} for sv in versions],
    }


def format_service(d: dict[str, Any]) -> str:
    log = d["logging"]
    logging = "off" if log is None else f"sample rate {log['sample_rate']:g} into {log['table']}"
    lines = [
        f"feature service {d['name']} v{d['version']}",
        f"  description: {d['description'] or '-'}",
        f"  owner:       {d['owner'] or '-'}",
        f"  module:      {d['module'] or '-'}",
        f"  logging:     {logging}",
        "  features (as read, pinned):",
    ]
    width = max(len(f) for f in d["features"])
    lines += [f"    {raw:<{width}}  -> {ref}" for raw, ref in zip(d["features"], d["refs"], strict=True)]
    lines.append("  pins:        " + (", ".join(f"{k}@{v}" for k, v in d["pins"].items()) or "-"))
    lines.append("  reads:       " + (", ".join(f"{k}@{v}" for k, vs in d["reads"].items() for v in vs) or "-"))
    lines.append("  versions:")
    for v in d["versions"]:
        pins = ", ".join(f"{k}@{n}" for k, n in v["pins"].items()) or "-"
        extra = f"; model bundle {', '.join(v['bundles'])}" if v["bundles"] else ""
        lines.append(f"    v{v['version']}{' (latest)' if v['latest'] else ''}: pins {pins}{extra}")
    return "\n".join(lines)


# --- listing ----------------------------------------------------------------------------------------------
def request_rows(registry: Any) -> list[dict[str, Any]]:
    """The latest version of every request-time signal, for ``quasar ls``."""
    return [{"name": rv.name, "version": rv.version, "kind": "request", "inputs": [r for _, r in rv.signal.inputs],
             "request": rv.signal.request.names, "features": len(rv.signal.schema),
             "modes": rv.signal.modes, "owner": rv.signal.owner}
            for rv in registry.request_signals()]


def service_rows(registry: Any) -> list[dict[str, Any]]:
    """The latest version of every feature service, for ``quasar ls``."""
    return [{"name": sv.name, "version": sv.version, "kind": "service", "features": len(sv.service.features),
             "pins": dict(sv.service.pins),
             "logging": None if sv.service.logging is None else sv.service.logging.sample_rate,
             "owner": sv.service.owner}
            for sv in registry.services()]
