"""The registry: what exists (entities, sources, signal versions), lineage, the run log and small state."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from quasar.registry import definitions as defs
from quasar.registry import leases
from quasar.registry import models as m
from quasar.registry.db import open_engine, transaction, utc_now
from quasar.registry.deletion import delete_versions, readers
from quasar.registry.loader import (
    Collected,
    Found,
    collect_files,
    collect_module,
    exec_file,
    fresh_imports,
    module_file,
    resolve_files,
    top_level,
)
from quasar.registry.records import RegistrationReport, RunRecord, Serving, SignalVersion
from quasar.registry.runs import (
    DEFAULT_LEASE_S,
    FINAL_STATUSES,
    Heartbeats,
    effective_status,
    ensure_lease_columns,
    lease_seconds,
)
from quasar.registry.runs import finish as finish_run
from quasar.registry.runs import start as start_run
from quasar.registry.schemes import same_meaning
from quasar.registry.serving import serving_versions
from quasar.registry.source_schemas import record_schema, recorded_schema
from quasar.registry.writer import apply_registration, plain
from quasar.signals.entity import Entity
from quasar.signals.errors import DefinitionError, NotFoundError, RegistrationError
from quasar.signals.request import RequestSignal
from quasar.signals.signal import Signal
from quasar.signals.source import Source
from quasar.signals.source_schema import RecordedSchema, SourceSchema

RUN_STATUSES = FINAL_STATUSES
_RETRIES = 10


class Registry:
    """Entities, sources and versioned signals in a SQL database (SQLite by default, PostgreSQL for teams)."""

    def __init__(self, url: str, *, run_lease: float | timedelta = DEFAULT_LEASE_S) -> None:
        self.url = url
        self.run_lease_s = lease_seconds(run_lease)
        self._engine = open_engine(url)
        ensure_lease_columns(self._engine)
        in_memory = self._engine.url.get_backend_name() == "sqlite" and self._engine.url.database in (None, "",
                                                                                                    ":memory:")
        self._heartbeats = None if in_memory else Heartbeats(self._engine, self.run_lease_s)

    @classmethod
    def open(cls, url: str, *, run_lease: float | timedelta = DEFAULT_LEASE_S) -> Registry:
        """Open (and create, if needed) the registry at a SQLAlchemy URL; a run not heard from for ``run_lease``
        (seconds or a timedelta) reads as abandoned (``quasar.registry.runs``)."""
        return cls(url, run_lease=run_lease)

    def close(self) -> None:
        if self._heartbeats is not None:
            self._heartbeats.stop_all()            # runs left open read as abandoned once their lease runs out
        self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- registering ----------------------------------------------------------------------------------------
    def register(self, target: str | Path, *, root: Path | None = None) -> RegistrationReport:
        """Register every top-level Entity, Source and Signal of a .py file, a folder of them, or a module."""
        return self._apply(_collect(target, root))

    def plan(self, target: str | Path, *, root: Path | None = None) -> RegistrationReport:
        """What ``register(target)`` would do, writing nothing: the same import, validation and decisions (new
        version, metadata updated, unchanged) run in a transaction that is rolled back, so a plan cannot drift
        from what registering does. Errors are those registering would raise."""
        collected = _collect(target, root)
        try:
            with self._engine.connect() as conn:
                trans = conn.begin()
                try:
                    return apply_registration(conn, collected.found, collected.module, utc_now())
                finally:
                    trans.rollback()
        except SQLAlchemyError as exc:
            raise RegistrationError(f"cannot plan {collected.module}: the registry database failed: "
                                    f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}") from exc

    def register_definitions(self, entities: Iterable[Entity], sources: Iterable[Source],
                             signals: Iterable[Signal], *, module: str) -> RegistrationReport:
        """Register already-built definitions, with the same checks and all-or-nothing write as ``register``."""
        found: list[Found] = [Found(e, f"entity {e.name!r} of {module}") for e in entities]
        found += [Found(s, f"source {s.name!r} of {module}") for s in sources]
        found += [Found(dataclasses.replace(s, module=s.module or module).with_fresh_code()
                        if isinstance(s, Signal) else s, f"signal {s.name!r} of {module}") for s in signals]
        bad = [f for f in found if not isinstance(f.obj, Entity | Source | Signal)]
        if bad:
            raise RegistrationError(f"cannot register {module}: {bad[0].obj!r} is not an Entity, Source or Signal")
        return self._apply(Collected(module=module, found=found))

    def _apply(self, collected: Collected) -> RegistrationReport:
        for attempt in range(_RETRIES):
            try:
                with transaction(self._engine, write=True) as conn:
                    return apply_registration(conn, collected.found, collected.module, utc_now())
            except IntegrityError as exc:
                # another registration wrote the same signal version first; re-read and re-plan
                if attempt == _RETRIES - 1:
                    raise RegistrationError(f"cannot register {collected.module}: other registrations kept "
                                            f"writing the same definitions at the same time; try again") from exc
            except SQLAlchemyError as exc:
                raise RegistrationError(f"cannot register {collected.module}: the registry database failed: "
                                        f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}") from exc
        raise AssertionError("unreachable")

    # --- reading definitions --------------------------------------------------------------------------------
    def entities(self) -> list[Entity]:
        with transaction(self._engine) as conn:
            rows = conn.execute(select(m.entities.c.definition).order_by(m.entities.c.name)).all()
        return [Entity.from_dict(r.definition) for r in rows]

    def entity(self, name: str) -> Entity:
        with transaction(self._engine) as conn:
            row = conn.execute(select(m.entities.c.definition).where(m.entities.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"no entity named {name!r}; {_known('entities', [e.name for e in self.entities()])}")
        return Entity.from_dict(row.definition)

    def sources(self) -> list[Source]:
        with transaction(self._engine) as conn:
            rows = conn.execute(select(m.sources.c.definition).order_by(m.sources.c.name)).all()
        return [Source.from_dict(r.definition) for r in rows]

    def source(self, name: str) -> Source:
        with transaction(self._engine) as conn:
            row = conn.execute(select(m.sources.c.definition).where(m.sources.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"no source named {name!r}; {_known('sources', [s.name for s in self.sources()])}")
        return Source.from_dict(row.definition)

    def source_schema(self, source: Source) -> RecordedSchema | None:
        """The schema recorded for ``source`` (declaring none) at its first read, or None (``quasar.registry.source_schemas``)."""
        return recorded_schema(self._engine, source)

    def record_source_schema(self, source: Source, schema: SourceSchema, *, origin: str) -> RecordedSchema:
        """Record the schema inferred at ``source``'s first read, unless one is recorded: returns the one that holds."""
        return record_schema(self._engine, source, schema, origin=origin)

    def signals(self) -> list[SignalVersion]:
        """The latest version of every signal, sorted by name."""
        sv = m.signal_versions
        query = (select(sv.c.signal_name, sv.c.version, sv.c.definition, sv.c.created_at, m.signals.c.latest_version)
                 .join(m.signals, (m.signals.c.name == sv.c.signal_name)
                       & (m.signals.c.latest_version == sv.c.version))
                 .order_by(sv.c.signal_name))
        with transaction(self._engine) as conn:
            return [_version(r) for r in conn.execute(query)]

    def versions(self, name: str) -> list[SignalVersion]:
        """Every version of signal ``name``, oldest first."""
        rows = self._version_rows(name)
        if not rows:
            raise NotFoundError(self._unknown_signal(name))
        return [_version(r) for r in rows]

    def signal(self, name: str, version: int | None = None) -> SignalVersion:
        """Signal ``name`` at ``version`` (latest when None); NotFoundError names what exists."""
        return _version(self._version_row(name, version))

    def _version_row(self, name: str, version: int | None) -> Any:
        rows = self._version_rows(name)
        if not rows:
            raise NotFoundError(self._unknown_signal(name))
        if version is None:
            return rows[-1]
        for row in rows:
            if row.version == version:
                return row
        have = ", ".join(f"v{r.version}" for r in rows)
        raise NotFoundError(f"signal {name!r} has no version {version}; it has {have}")

    # --- serving versions -----------------------------------------------------------------------------------
    def resolve(self, name: str, version: int | None = None) -> SignalVersion:
        """What a feature reference means: ``signal@version`` that version, an unpinned ``signal`` its serving
        version (``serving``). Every reader (datasets, online reads, the HTTP service) resolves through here."""
        if version is not None:
            return self.signal(name, version)
        return self.signal(name, self.serving(name).version)

    def serving(self, name: str) -> Serving:
        """The version unpinned references to ``name`` resolve to: the promoted one if any, else the newest whose
        backfill (and, online, materialization) succeeded, else the newest (``quasar.registry.serving``)."""
        with transaction(self._engine) as conn:
            found = serving_versions(conn, [name]).get(name)
        if found is None:
            raise NotFoundError(self._unknown_signal(name))
        return found

    def serving_versions(self) -> dict[str, Serving]:
        """The serving version of every signal, by name."""
        with transaction(self._engine) as conn:
            return serving_versions(conn)

    def promote(self, name: str, version: int | None) -> Serving:
        """Make ``version`` of ``name`` its serving version until the next promotion (it need not have completed
        a backfill: the operator decides); ``None`` returns to the automatic rule. NotFoundError names the
        versions that exist."""
        if version is not None:
            self.signal(name, version)
        else:
            self.signal(name)
        with transaction(self._engine, write=True) as conn:
            conn.execute(delete(m.promotions).where(m.promotions.c.signal_name == name))
            if version is not None:
                conn.execute(insert(m.promotions).values(signal_name=name, version=version, promoted_at=utc_now()))
        return self.serving(name)

    def delete_versions(self, name: str, versions: Sequence[int], *, state_keys: Sequence[str] = ()) -> None:
        """Remove ``versions`` of ``name`` with their lineage, promotion, runs and ``state_keys``, in one
        transaction; refused while another signal reads the latest of them or a run of them is live
        (``quasar.registry.deletion``). NotFoundError names the versions that exist."""
        for version in versions:
            self.signal(name, version)
        live = [r.id for r in self.runs(name, limit=1000) if r.version in versions and r.status == "running"]
        with transaction(self._engine, write=True) as conn:
            latest = conn.execute(select(m.signals.c.latest_version).where(m.signals.c.name == name)).scalar_one()
            delete_versions(conn, name, versions, latest=latest, live_runs=live, state_keys=list(state_keys))

    def readers(self, name: str) -> list[str]:
        """Other signals with a version that reads ``name``."""
        with transaction(self._engine) as conn:
            return readers(conn, name)

    def _version_rows(self, name: str) -> list[Any]:
        sv = m.signal_versions
        query = (select(sv.c.signal_name, sv.c.version, sv.c.definition, sv.c.created_at, m.signals.c.latest_version,
                        sv.c.definition_fingerprint)
                 .join(m.signals, m.signals.c.name == sv.c.signal_name)
                 .where(sv.c.signal_name == name).order_by(sv.c.version))
        with transaction(self._engine) as conn:
            return list(conn.execute(query).all())

    def _unknown_signal(self, name: str) -> str:
        with transaction(self._engine) as conn:
            names = list(conn.execute(select(m.signals.c.name).order_by(m.signals.c.name)).scalars())
        return f"no signal named {name!r}; {_known('signals', names)}"

    # --- request-time signals and feature services -----------------------------------------------------
    def request_signals(self) -> list[defs.RequestVersion]:
        """The latest version of every request-time signal, sorted by name."""
        with transaction(self._engine) as conn:
            return [defs.request_version(r, True) for r in defs.latest(conn, "request").values()]

    def request_signal(self, name: str, version: int | None = None) -> defs.RequestVersion:
        """Request-time signal ``name`` at ``version`` (latest when None); NotFoundError names what exists."""
        with transaction(self._engine) as conn:
            found = defs.rows(conn, "request", name)
            row, is_latest = defs.pick(found, "request", name, version, [] if found else defs.names(conn, "request"))
        return defs.request_version(row, is_latest)

    def load_request(self, name: str, version: int | None = None) -> defs.RequestVersion:
        """Like ``request_signal`` with its functions attached, re-imported from the recorded module;
        DefinitionError when that code no longer matches the version (the author must register)."""
        found = self.request_signal(name, version)
        recorded = found.signal
        try:
            loaded: RequestSignal | None = _import_definition(recorded.module, name, found.version, RequestSignal)
        except DefinitionError:
            loaded = None
        if loaded is None or loaded.definition_fingerprint != recorded.definition_fingerprint:
            with transaction(self._engine) as conn:
                source = defs.stored_source(conn, name, found.version)
            loaded = _from_source(source, recorded, found.version) if source is not None else None
        if loaded is None or loaded.definition_fingerprint != recorded.definition_fingerprint:
            raise DefinitionError(f"request-time signal {name}: the code in {recorded.module} changed since "
                                  f"version {found.version} was registered, and the module text kept with the "
                                  "version no longer runs to the same code; run quasar register")
        return dataclasses.replace(found, signal=dataclasses.replace(recorded, row_fn=loaded.row_fn,
                                                                     batch_fn=loaded.batch_fn))

    def services(self) -> list[defs.ServiceVersion]:
        """The latest version of every feature service, sorted by name."""
        with transaction(self._engine) as conn:
            return [defs.service_version(r, True) for r in defs.latest(conn, "service").values()]

    def service(self, name: str, version: int | None = None) -> defs.ServiceVersion:
        """Feature service ``name`` at ``version`` (latest when None), pins included; NotFoundError names the
        registered services."""
        with transaction(self._engine) as conn:
            found = defs.rows(conn, "service", name)
            row, is_latest = defs.pick(found, "service", name, version, [] if found else defs.names(conn, "service"))
        return defs.service_version(row, is_latest)

    def service_versions(self, name: str) -> list[defs.ServiceVersion]:
        """Every version of feature service ``name``, oldest first."""
        with transaction(self._engine) as conn:
            found = defs.rows(conn, "service", name)
            if not found:
                defs.pick(found, "service", name, None, defs.names(conn, "service"))
        return [defs.service_version(r, r.version == found[-1].version) for r in found]

    # --- lineage --------------------------------------------------------------------------------------------
    def upstream(self, name: str) -> list[str]:
        """The signals the latest version of ``name`` is computed from."""
        return sorted(self.signal(name).signal.upstream)

    def downstream(self, name: str) -> list[str]:
        """The signals whose latest version is computed from ``name``."""
        self.signal(name)
        lin = m.lineage
        query = (select(lin.c.signal_name).join(m.signals, (m.signals.c.name == lin.c.signal_name)
                                                & (m.signals.c.latest_version == lin.c.version))
                 .where(lin.c.upstream_name == name).order_by(lin.c.signal_name))
        with transaction(self._engine) as conn:
            return list(dict.fromkeys(conn.execute(query).scalars()))

    # --- code -----------------------------------------------------------------------------------------------
    def load_signal(self, name: str, version: int | None = None) -> SignalVersion:
        """Like ``signal`` but with the Python transform attached, re-imported from the recorded module.

        DefinitionError when that module's code no longer matches the version (the author must register).
        """
        row = self._version_row(name, version)
        found = _version(row)
        recorded = found.signal
        if recorded.kind == "aggregation":
            return found
        loaded = _import_signal(recorded.module, name, found.version)
        if not same_meaning(row.definition, row.definition_fingerprint, loaded):
            raise DefinitionError(f"signal {name}: the code in {recorded.module} changed since version "
                                  f"{found.version} was registered; run quasar register")
        return dataclasses.replace(found, signal=dataclasses.replace(recorded, transform=loaded.transform))

    # --- run log --------------------------------------------------------------------------------------------
    def start_run(self, *, signal: str, version: int, kind: str, params: dict[str, Any] | None = None) -> int:
        """Record a run of ``signal`` v``version`` as running, holding a lease this process renews until
        ``finish_run``; the signal's runs whose lease ran out are marked abandoned. Returns the run's id."""
        self.signal(signal, version)
        run_id = start_run(self._engine, signal=signal, version=version, kind=kind, params=params or {},
                           lease_s=None if self._heartbeats is None else self.run_lease_s,
                           default_lease_s=self.run_lease_s)
        if self._heartbeats is not None:
            self._heartbeats.start(run_id)
        return run_id

    def finish_run(self, run_id: int, *, status: str, snapshot_id: int | None = None, rows: int | None = None,
                   details: dict[str, Any] | None = None) -> None:
        """Close run ``run_id`` as succeeded or failed, with its snapshot, row count and details. Its lease stops
        being renewed even when recording the end fails, so such a run reads as abandoned once it runs out."""
        try:
            finish_run(self._engine, run_id, status=status, snapshot_id=snapshot_id, rows=rows, details=details)
        finally:
            if self._heartbeats is not None:
                self._heartbeats.stop(run_id)

    def runs(self, signal: str | None = None, *, kind: str | None = None, limit: int = 50) -> list[RunRecord]:
        """Recent runs, newest first, optionally of one signal and/or one kind; a running run whose lease ran out
        reads as ``abandoned``."""
        query = select(m.runs).order_by(m.runs.c.id.desc()).limit(limit)
        if signal is not None:
            query = query.where(m.runs.c.signal_name == signal)
        if kind is not None:
            query = query.where(m.runs.c.kind == kind)
        with transaction(self._engine) as conn:
            rows = conn.execute(query).all()
        now = utc_now()
        return [_run(r, effective_status(r, now, self.run_lease_s)) for r in rows]

    # --- leases ---------------------------------------------------------------------------------------------
    def take_lease(self, name: str, owner: str, seconds: float, *,
                   details: dict[str, Any] | None = None) -> leases.Lease:
        """Take lease ``name`` for ``seconds`` if it is free, run out or already ``owner``'s; the lease as it stands
        after the attempt (``held_by(owner)``: taken), atomically on SQLite and PostgreSQL (``quasar.registry.leases``)."""
        return leases.take(self._engine, name, owner, seconds, details=details)

    def renew_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Extend ``owner``'s lease ``name`` by ``seconds`` from now; False when it no longer holds it."""
        return leases.renew(self._engine, name, owner, seconds)

    def release_lease(self, name: str, owner: str) -> None:
        """Give lease ``name`` up if ``owner`` holds it."""
        leases.release(self._engine, name, owner)

    def lease(self, name: str) -> leases.Lease | None:
        """Lease ``name`` as it stands (it may have run out: see ``Lease.held_by``), or None."""
        return leases.holder(self._engine, name)

    def keep_lease(self, name: str, owner: str, seconds: float) -> leases.Keeper:
        """A started ``Keeper`` renewing ``owner``'s lease ``name`` until stopped; its ``lost`` says if it was lost."""
        return leases.Keeper(self._engine, name, owner, seconds).start()

    # --- state ----------------------------------------------------------------------------------------------
    def get_state(self, key: str) -> dict[str, Any] | None:
        """The value stored under ``key`` (e.g. a materialization watermark), or None."""
        with transaction(self._engine) as conn:
            value = conn.execute(select(m.state.c.value).where(m.state.c.key == key)).scalar()
        return dict(value) if value is not None else None

    def set_state(self, key: str, value: dict[str, Any]) -> None:
        """Store ``value`` under ``key``, replacing what was there."""
        if not isinstance(value, dict):
            raise ValueError(f"state {key!r}: value must be a dict, got {type(value).__name__}")
        for attempt in range(_RETRIES):
            try:
                with transaction(self._engine, write=True) as conn:
                    conn.execute(delete(m.state).where(m.state.c.key == key))
                    conn.execute(insert(m.state).values(key=key, value=plain(value), updated_at=utc_now()))
                return
            except IntegrityError:
                if attempt == _RETRIES - 1:
                    raise


def _collect(target: str | Path, root: Path | None) -> Collected:
    """The definitions of a registration target: a .py file, a folder of them, or a module name."""
    resolved = resolve_files(target, root)
    return collect_module(str(target)) if resolved is None else collect_files(*resolved)


def _version(row: Any) -> SignalVersion:
    return SignalVersion(name=row.signal_name, version=row.version, signal=Signal.from_dict(row.definition),
                         created_at=row.created_at, is_latest=row.version == row.latest_version)


def _run(row: Any, status: str) -> RunRecord:
    return RunRecord(id=row.id, signal=row.signal_name, version=row.version, kind=row.kind, status=status,
                     started_at=row.started_at, finished_at=row.finished_at, snapshot_id=row.snapshot_id,
                     rows=row.rows, duration_s=row.duration_s, params=dict(row.params or {}),
                     details=dict(row.details or {}), heartbeat_at=row.heartbeat_at)


def _known(what: str, names: list[str]) -> str:
    return f"registered {what}: {', '.join(names)}" if names else f"no {what} are registered"


def _from_source(source: str, recorded: RequestSignal, version: int) -> RequestSignal | None:
    """Run the module text kept with a request-time version (its folder on the path, for sibling imports) and
    take the signal; None when it no longer runs or defines it."""
    import tempfile
    home = Path(recorded.module).parent if recorded.module.endswith(".py") else None
    with tempfile.TemporaryDirectory(prefix="quasar-code-") as tmp:
        file = Path(tmp) / f"{recorded.name}_v{version}.py"
        file.write_text(source)
        folders = [file.parent, *([home] if home is not None and home.is_dir() else [])]
        try:
            with fresh_imports(folders):
                loaded = exec_file(file, None, folders)
        except RegistrationError:
            return None
        for _, obj in top_level(loaded):
            if isinstance(obj, RequestSignal) and obj.name == recorded.name:
                return obj
    return None


def _import_signal(module: str, name: str, version: int) -> Signal:
    """Re-import ``module`` (a file path or module name) fresh and take the signal called ``name``."""
    return _import_definition(module, name, version, Signal)


_T = TypeVar("_T", Signal, RequestSignal)


def _import_definition(module: str, name: str, version: int, kind: type[_T]) -> _T:
    """Re-import ``module`` fresh and take the ``kind`` object called ``name``."""
    if os.path.isabs(module) and module.endswith(".py"):
        if not os.path.isfile(module):
            raise DefinitionError(f"signal {name}: version {version} was registered from {module}, which no "
                                  "longer exists; run quasar register")
        file, module_name = Path(module), None
    else:
        try:
            file, module_name = module_file(module), module
        except RegistrationError as exc:
            raise DefinitionError(f"signal {name}: version {version} was registered from module {module!r}, "
                                  f"which cannot be imported now; run quasar register") from exc
    with fresh_imports([file.parent]):
        loaded = exec_file(file, module_name, [file.parent])
    for _, obj in top_level(loaded):
        if isinstance(obj, kind) and obj.name == name:
            return obj
    raise DefinitionError(f"signal {name}: {module} no longer defines it (version {version} was registered from "
                          "there); run quasar register")
