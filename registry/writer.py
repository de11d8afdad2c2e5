"""Writing one registration: read the registry's state, validate against it, then insert or update rows.

Runs inside the caller's transaction, so a failure at any point writes nothing. Versioning: a signal that
computes something else (a new ``definition_fingerprint``, compared under the scheme the latest version was
stored with: ``quasar.registry.schemes``) makes version N+1; any other change (owner, TTL, online, descriptions,
expectations, policy, module, schedule, freshness) updates the latest version's row in place; no change writes
nothing. Each signal's outcome is reported as a ``SignalChange``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from quasar.registry import definitions as d
from quasar.registry import models as m
from quasar.registry.loader import Found
from quasar.registry.records import RegistrationReport, SignalChange
from quasar.registry.schemes import SCHEME, SCHEME_KEY, same_meaning, scheme_of, stamp
from quasar.registry.serving import needs, serving_versions
from quasar.registry.validate import Definitions, RegistryState, validate
from quasar.signals.entity import Entity
from quasar.signals.signal import Signal
from quasar.signals.source import Source


def plain(data: Any) -> Any:
    """``data`` as it reads back from a JSON column (tuples become lists), so comparisons are exact."""
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def read_state(conn: Connection) -> RegistryState:
    """Every entity and source, and the latest version of every signal."""
    state = RegistryState()
    for row in conn.execute(select(m.entities.c.definition)):
        ent = Entity.from_dict(row.definition)
        state.entities[ent.name] = ent
    for row in conn.execute(select(m.sources.c.definition)):
        src = Source.from_dict(row.definition)
        state.sources[src.name] = src
    latest = select(m.signal_versions.c.definition).join(
        m.signals, (m.signals.c.name == m.signal_versions.c.signal_name)
        & (m.signals.c.latest_version == m.signal_versions.c.version))
    for row in conn.execute(latest):
        sig = Signal.from_dict(row.definition)
        state.signals[sig.name] = sig
    state.requests = {n: d.request_version(r, True).signal for n, r in d.latest(conn, "request").items()}
    state.services = {n: d.service_version(r, True).service for n, r in d.latest(conn, "service").items()}
    return state


def apply_registration(conn: Connection, found: list[Found], module: str, now: datetime) -> RegistrationReport:
    """Validate ``found`` against the registry and write it; returns what was created, updated, unchanged."""
    state = read_state(conn)
    defs = validate(found, state, module)
    report = RegistrationReport(module=module)
    _write_entities(conn, defs, now, report)
    _write_sources(conn, defs, now, report)
    for name in sorted(defs.signals):
        _write_signal(conn, defs.signals[name], now, report)
    _write_requests_and_services(conn, defs, state, now, report)
    return report


def _write_requests_and_services(conn: Connection, defs: Definitions, state: RegistryState, now: datetime,
                                 report: RegistrationReport) -> None:
    """Request-time signals (after the stored signals they read), then feature services, pinned now."""
    versions = {n: r.version for n, r in d.latest(conn, "request").items()}
    for name in sorted(defs.requests):
        rs = defs.requests[name]
        versions[name] = d.write(conn, "request", rs, plain(rs.to_dict()), now, report)
    if not defs.services:
        return
    requests = {**state.requests, **defs.requests}
    stored = set(state.signals) | set(defs.signals)
    serving = serving_versions(conn)
    for name in sorted(defs.services):
        pinned = d.pin_service(defs.services[name], lambda s: serving[s].version, requests, versions, stored,
                               d.request_at(conn))
        d.write(conn, "service", pinned, plain(pinned.to_dict()), now, report)


def _write_entities(conn: Connection, defs: Definitions, now: datetime, report: RegistrationReport) -> None:
    t = m.entities
    for name in sorted(defs.entities):
        ent = defs.entities[name]
        definition = plain(ent.to_dict())
        old = conn.execute(select(t.c.definition).where(t.c.name == name)).first()
        fields = {"join_key": ent.join_key, "join_key_type": ent.join_key_type, "description": ent.description,
                  "definition": definition, "updated_at": now}
        if old is None:
            conn.execute(insert(t).values(name=name, created_at=now, **fields))
            report.created.append(f"entity {name}")
        elif old.definition != definition:
            conn.execute(update(t).where(t.c.name == name).values(**fields))
            report.updated.append(f"entity {name}")
        else:
            report.unchanged.append(f"entity {name}")


def _write_sources(conn: Connection, defs: Definitions, now: datetime, report: RegistrationReport) -> None:
    t = m.sources
    for name in sorted(defs.sources):
        definition = plain(defs.sources[name].to_dict())
        old = conn.execute(select(t.c.definition).where(t.c.name == name)).first()
        if old is None:
            conn.execute(insert(t).values(name=name, kind=definition["kind"], definition=definition,
                                          created_at=now, updated_at=now))
            report.created.append(f"source {name}")
        elif old.definition != definition:
            conn.execute(update(t).where(t.c.name == name).values(kind=definition["kind"], definition=definition,
                                                                   updated_at=now))
            report.updated.append(f"source {name}")
        else:
            report.unchanged.append(f"source {name}")


def version_fields(sig: Signal, now: datetime) -> dict[str, Any]:
    """The columns of a signal version row that a registration may write."""
    return {
        "kind": sig.kind, "entity_name": sig.entity.name, "source_name": sig.source.name,
        "definition": stamp(plain(sig.to_dict())), "schema": plain(sig.schema.to_dict()),
        "schema_fingerprint": sig.schema.fingerprint_hex, "code_fingerprint": sig.code_fingerprint,
        "definition_fingerprint": sig.definition_fingerprint, "owner": sig.owner,
        "ttl_seconds": int(sig.ttl.total_seconds()) if sig.ttl else None, "online": sig.online,
        "upstream": list(sig.upstream), "module": sig.module, "updated_at": now,
    }


def _write_signal(conn: Connection, sig: Signal, now: datetime, report: RegistrationReport) -> None:
    sv = m.signal_versions
    latest = conn.execute(select(m.signals.c.latest_version).where(m.signals.c.name == sig.name)).scalar()
    fields = version_fields(sig, now)
    if latest is None:
        conn.execute(insert(m.signals).values(name=sig.name, latest_version=1, created_at=now))
        _insert_version(conn, sig, 1, fields, now)
        report.created.append(f"signal {sig.name} v1")
        report.signals.append(SignalChange(name=sig.name, status="new", version=1, needs=needs(sig.online)))
        return
    old = conn.execute(select(sv.c.definition, sv.c.definition_fingerprint)
                       .where(sv.c.signal_name == sig.name, sv.c.version == latest)).one()
    if not same_meaning(old.definition, old.definition_fingerprint, sig):
        serving = serving_versions(conn, [sig.name])[sig.name].version
        version = latest + 1
        _insert_version(conn, sig, version, fields, now)
        conn.execute(update(m.signals).where(m.signals.c.name == sig.name).values(latest_version=version))
        report.created.append(f"signal {sig.name} v{version}")
        report.signals.append(SignalChange(name=sig.name, status="new version", version=version,
                                           needs=needs(sig.online), serving=serving))
    elif old.definition != fields["definition"]:
        conn.execute(update(sv).where(sv.c.signal_name == sig.name, sv.c.version == latest).values(**fields))
        report.updated.append(f"signal {sig.name} v{latest}")
        restamped = scheme_of(old.definition) != SCHEME
        # scope is identity (a change is a new version): it differs here only where an old row lacks it
        changed = _changed(old.definition, fields["definition"],
                           skip=("code", SCHEME_KEY, "scope") if restamped else ("scope",))
        report.signals.append(SignalChange(
            name=sig.name, status="metadata updated", version=latest, changed=changed,
            needs=["materialize"] if "online" in changed and sig.online else [],     # newly online: fill Redis
            note=f"re-stamped with fingerprint scheme {SCHEME}" if restamped else ""))
    else:
        report.unchanged.append(f"signal {sig.name} v{latest}")
        report.signals.append(SignalChange(name=sig.name, status="unchanged", version=latest))


def _changed(old: dict[str, Any], new: dict[str, Any], *, skip: tuple[str, ...] = ()) -> list[str]:
    """The metadata fields that differ, named for people (``entity description`` for the entity's)."""
    names = []
    for key in sorted(set(old) | set(new)):
        if key in skip or old.get(key) == new.get(key):
            continue
        if key in ("entity", "source") and isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            inner = sorted(k for k in set(old[key]) | set(new[key]) if old[key].get(k) != new[key].get(k))
            names += [f"{key} {k}" for k in inner]
        else:
            names.append(key)
    return names


def _insert_version(conn: Connection, sig: Signal, version: int, fields: dict[str, Any], now: datetime) -> None:
    conn.execute(insert(m.signal_versions).values(signal_name=sig.name, version=version, created_at=now, **fields))
    if sig.upstream:
        conn.execute(insert(m.lineage), [{"signal_name": sig.name, "version": version, "upstream_name": up}
                                         for up in sig.upstream])
