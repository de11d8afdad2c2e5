"""Request-time signals and feature services in the registry: versioned definitions, written and read.

Both are rows of ``quasar_definitions`` (kind, name, version). A definition whose
``definition_fingerprint`` changed is version N+1; any other change (owner, description, module, a service's
logging) updates the latest version in place. A feature service is pinned as it is written
(``pin_service``): each unpinned reference, and each unpinned input of the request-time signals it reads,
transitively, is pinned to the signal's serving version (a request-time signal's serving version is its
newest), so a registered service reads the same versions until its pins change, which is a new version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from quasar.registry import models as m
from quasar.registry.records import RegistrationReport, SignalChange
from quasar.signals.errors import NotFoundError, RegistrationError
from quasar.signals.refs import parse_feature_ref
from quasar.signals.request import RequestSignal
from quasar.signals.service import FeatureService

KINDS = {"request": "request-time signal", "service": "feature service"}


@dataclass(frozen=True, kw_only=True)
class RequestVersion:
    """One registered version of a request-time signal (functions attached only by ``load_request``)."""

    name: str
    version: int
    signal: RequestSignal
    created_at: datetime
    is_latest: bool


@dataclass(frozen=True, kw_only=True)
class ServiceVersion:
    """One registered version of a feature service, pins included."""

    name: str
    version: int
    service: FeatureService
    created_at: datetime
    is_latest: bool


def rows(conn: Connection, kind: str, name: str | None = None) -> list[Any]:
    d = m.definitions
    query = select(d).where(d.c.kind == kind).order_by(d.c.name, d.c.version)
    if name is not None:
        query = query.where(d.c.name == name)
    return list(conn.execute(query).all())


def names(conn: Connection, kind: str) -> list[str]:
    d = m.definitions
    return list(conn.execute(select(d.c.name).where(d.c.kind == kind).distinct().order_by(d.c.name)).scalars())


def latest(conn: Connection, kind: str) -> dict[str, Any]:
    """The latest row of every definition of ``kind``, by name."""
    out: dict[str, Any] = {}
    for row in rows(conn, kind):
        out[row.name] = row
    return out


def pick(found: list[Any], kind: str, name: str, version: int | None, known: list[str]) -> tuple[Any, bool]:
    """The row of ``version`` (latest when None) among ``found`` (one name's rows, oldest first) and whether it
    is the latest; NotFoundError names what exists."""
    what = KINDS[kind]
    if not found:
        have = f"registered: {', '.join(known)}" if known else f"no {what}s are registered"
        raise NotFoundError(f"no {what} named {name!r}; {have}")
    if version is None:
        return found[-1], True
    for row in found:
        if row.version == version:
            return row, row.version == found[-1].version
    raise NotFoundError(f"{what} {name!r} has no version {version}; it has "
                        f"{', '.join(f'v{r.version}' for r in found)}")


def request_version(row: Any, is_latest: bool) -> RequestVersion:
    return RequestVersion(name=row.name, version=row.version, signal=RequestSignal.from_dict(row.definition),
                          created_at=row.created_at, is_latest=is_latest)


def service_version(row: Any, is_latest: bool) -> ServiceVersion:
    return ServiceVersion(name=row.name, version=row.version, service=FeatureService.from_dict(row.definition),
                          created_at=row.created_at, is_latest=is_latest)


# --- writing ------------------------------------------------------------------------------------------------
def write(conn: Connection, kind: str, obj: RequestSignal | FeatureService, definition: dict[str, Any],
          now: datetime, report: RegistrationReport) -> int:
    """Insert version N+1, update the latest in place, or nothing; reports it. Returns the version."""
    d = m.definitions
    what = KINDS[kind]
    fingerprint = obj.definition_fingerprint
    current = conn.execute(select(func.max(d.c.version)).where(d.c.kind == kind, d.c.name == obj.name)).scalar()
    if current is None or conn.execute(select(d.c.definition_fingerprint).where(
            d.c.kind == kind, d.c.name == obj.name, d.c.version == current)).scalar() != fingerprint:
        version = 1 if current is None else current + 1
        conn.execute(insert(d).values(kind=kind, name=obj.name, version=version, definition=definition,
                                      definition_fingerprint=fingerprint, created_at=now, updated_at=now))
        report.created.append(f"{what} {obj.name} v{version}")
        report.signals.append(SignalChange(name=obj.name, status="new" if version == 1 else "new version",
                                           version=version, note=_note(obj)))
        return version
    old = conn.execute(select(d.c.definition).where(d.c.kind == kind, d.c.name == obj.name,
                                                    d.c.version == current)).scalar()
    if old != definition:
        changed = sorted(k for k in set(old) | set(definition) if old.get(k) != definition.get(k))
        conn.execute(update(d).where(d.c.kind == kind, d.c.name == obj.name, d.c.version == current)
                     .values(definition=definition, updated_at=now))
        report.updated.append(f"{what} {obj.name} v{current}")
        report.signals.append(SignalChange(name=obj.name, status="metadata updated", version=current,
                                           changed=changed))
    else:
        report.unchanged.append(f"{what} {obj.name} v{current}")
        report.signals.append(SignalChange(name=obj.name, status="unchanged", version=current))
    return current


def _note(obj: RequestSignal | FeatureService) -> str:
    if isinstance(obj, FeatureService):
        return "pins " + ", ".join(f"{k}@{v}" for k, v in obj.pins.items()) if obj.pins else ""
    return f"request-time signal reading {', '.join(r for _, r in obj.inputs)}" if obj.inputs else ""


ServingOf = Callable[[str], int]


def pin_service(service: FeatureService, stored_serving: ServingOf, request_latest: dict[str, RequestSignal],
                request_version: dict[str, int], stored: set[str]) -> FeatureService:
    """``service`` with its pins: every unpinned reference's signal at its serving version, and the inputs of
    the request-time signals it reads, transitively. RegistrationError names a reference to nothing."""
    pins: dict[str, int] = {}
    problems: list[str] = []

    def visit(raw: str, via: str) -> None:
        ref = parse_feature_ref(raw, RegistrationError)
        if ref.signal in request_latest:
            if ref.version is None:
                pins.setdefault(ref.signal, request_version[ref.signal])
            rs = request_latest[ref.signal]
            if ref.version is None or ref.version == request_version[ref.signal]:
                for _, up in rs.inputs:
                    visit(up, f"request-time signal {rs.name!r}")
            return
        if ref.signal not in stored:
            problems.append(f"{via} reads {raw!r}: no signal or request-time signal named {ref.signal!r} is "
                            "registered or defined in the module")
            return
        if ref.version is None:
            pins.setdefault(ref.signal, stored_serving(ref.signal))

    for raw in service.features:
        visit(raw, f"feature service {service.name!r}")
    if problems:
        raise RegistrationError("; ".join(dict.fromkeys(problems)))
    return service.pinned(pins)
