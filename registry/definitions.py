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
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from quasar.registry import models as m
from quasar.registry.records import RegistrationReport, SignalChange
from quasar.signals.errors import NotFoundError, QuasarError, RegistrationError
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
    old = None if current is None else conn.execute(select(d.c.definition, d.c.definition_fingerprint).where(
        d.c.kind == kind, d.c.name == obj.name, d.c.version == current)).one()
    if old is None or old.definition_fingerprint != fingerprint:
        version = 1 if current is None else current + 1
        conn.execute(insert(d).values(kind=kind, name=obj.name, version=version, definition=definition,
                                      definition_fingerprint=fingerprint, source=module_source(obj),
                                      created_at=now, updated_at=now))
        report.created.append(f"{what} {obj.name} v{version}")
        report.signals.append(SignalChange(name=obj.name, status="new" if version == 1 else "new version",
                                           version=version, kind=kind,
                                           changed=[] if old is None else _what_changed(kind, old.definition,
                                                                                       definition),
                                           note=_note(obj, None if old is None else old.definition)))
        return version
    assert current is not None
    if old.definition != definition:
        changed = sorted(k for k in set(old.definition) | set(definition)
                         if old.definition.get(k) != definition.get(k))
        conn.execute(update(d).where(d.c.kind == kind, d.c.name == obj.name, d.c.version == current)
                     .values(definition=definition, updated_at=now))
        report.updated.append(f"{what} {obj.name} v{current}")
        report.signals.append(SignalChange(name=obj.name, status="metadata updated", version=current,
                                           changed=changed, kind=kind))
    else:
        report.unchanged.append(f"{what} {obj.name} v{current}")
        report.signals.append(SignalChange(name=obj.name, status="unchanged", version=current, kind=kind,
                                           note=_note(obj, old.definition) if kind == "service" else ""))
    return current


#: What makes a new version, per kind, as people call it.
IDENTITY = {"request": {"schema": "features", "request": "request fields", "inputs": "inputs", "code": "code"},
            "service": {"features": "features", "pins": "pins"}}


def _what_changed(kind: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [label for key, label in IDENTITY[kind].items() if old.get(key) != new.get(key)]


def module_source(obj: RequestSignal | FeatureService) -> str | None:
    """The text of a request-time signal's module as registered, kept with its version so the version can run
    after the module changes (a feature service pinned to it keeps serving); None when it cannot be read."""
    if not isinstance(obj, RequestSignal) or not obj.module:
        return None
    from quasar.registry.loader import module_file
    try:
        path = Path(obj.module) if obj.module.endswith(".py") else module_file(obj.module)
        return path.read_text()
    except (OSError, QuasarError, UnicodeDecodeError):
        return None


def stored_source(conn: Connection, name: str, version: int) -> str | None:
    d = m.definitions
    text: str | None = conn.execute(select(d.c.source).where(d.c.kind == "request", d.c.name == name,
                                                             d.c.version == version)).scalar()
    return text


def _note(obj: RequestSignal | FeatureService, old: dict[str, Any] | None) -> str:
    """A service's pins (and how they moved since ``old``, the previous version); what a request-time signal
    reads and how it runs."""
    if isinstance(obj, FeatureService):
        before = {str(k): int(v) for k, v in (old or {}).get("pins", {}).items()}
        moved = [f"{k}@{before[k]} -> @{v}" for k, v in obj.pins.items() if k in before and before[k] != v]
        pins = ", ".join(f"{k}@{v}" for k, v in obj.pins.items())
        text = f"pins {pins}" if pins else "no pins"
        return f"{text} (moved: {', '.join(moved)})" if moved else text
    parts = []
    if obj.inputs:
        parts.append("reads " + ", ".join(r for _, r in obj.inputs))
    if len(obj.request):
        parts.append("request fields " + ", ".join(obj.request.names))
    modes = [m for m, fn in (("row", obj.row_fn), ("batch", obj.batch_fn)) if fn is not None]
    if modes:
        parts.append("modes " + ", ".join(modes))
    return "; ".join(parts)


ServingOf = Callable[[str], int]
RequestAt = Callable[[str, int], RequestSignal]


def pin_service(service: FeatureService, stored_serving: ServingOf, request_latest: dict[str, RequestSignal],
                request_version: dict[str, int], stored: set[str],
                request_at: RequestAt | None = None) -> FeatureService:
    """``service`` with its pins: every unpinned reference's signal at its serving version, and the inputs of
    the request-time signals it reads, transitively (of the version it reads: ``request_at`` gives an older
    pinned one). RegistrationError names a reference to nothing."""
    pins: dict[str, int] = {}
    problems: list[str] = []
    seen: set[tuple[str, int]] = set()

    def visit(raw: str, via: str) -> None:
        ref = parse_feature_ref(raw, RegistrationError)
        if ref.signal in request_latest:
            version = ref.version if ref.version is not None else pins.get(ref.signal, request_version[ref.signal])
            if ref.version is None:
                pins.setdefault(ref.signal, version)
            if (ref.signal, version) in seen:
                return
            seen.add((ref.signal, version))
            if version == request_version[ref.signal]:
                rs = request_latest[ref.signal]
            elif request_at is not None:
                rs = request_at(ref.signal, version)
            else:
                return
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


def request_at(conn: Connection) -> RequestAt:
    """A reader of registered request-time signal versions (no functions attached) on ``conn``."""
    def at(name: str, version: int) -> RequestSignal:
        found = rows(conn, "request", name)
        row, _ = pick(found, "request", name, version, [])
        return RequestSignal.from_dict(row.definition)
    return at
