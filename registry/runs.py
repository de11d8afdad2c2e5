"""The run log, with leases: a run says it is alive while it works, so a dead run never reads as running.

``start`` records a run as ``running`` with a lease (``lease_s``) and ``Heartbeats`` renews it from a daemon
thread (``heartbeat_at``, every quarter lease, at most every 5 s) until ``finish`` records its end or the
process dies. A run still ``running`` whose lease ran out (no heartbeat for ``lease_s``) reads as
``abandoned`` (``effective_status``), and the next run of the same signal writes that into the database,
with the last heartbeat as its end. If an abandoned run was only slow and records its end after all, that end
is kept: what really happened wins over the guess.

Rows written before leases existed have no heartbeat: their start counts as their last sign of life. An
in-memory SQLite registry lives and dies with its one process, so its runs hold no lease (``lease_s`` NULL).
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, inspect, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from quasar.registry import models as m
from quasar.registry.db import transaction, utc_now
from quasar.registry.writer import plain
from quasar.signals.errors import NotFoundError, QuasarError

RUNNING, ABANDONED = "running", "abandoned"
FINAL_STATUSES = ("succeeded", "failed")
DEFAULT_LEASE_S = 60.0
_MAX_BEAT_S = 5.0
_LEASE_COLUMNS = {"heartbeat_at": "TIMESTAMP", "lease_s": "FLOAT"}


def lease_seconds(value: float | timedelta) -> float:
    """A lease as seconds; refused unless positive."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not seconds > 0:
        raise QuasarError(f"the run lease must be a positive duration, got {value!r}")
    return seconds


def ensure_lease_columns(engine: Engine) -> None:
    """Add ``heartbeat_at`` and ``lease_s`` to a run table created before leases existed."""
    try:
        have = {c["name"] for c in inspect(engine).get_columns(m.runs.name)}
    except SQLAlchemyError:
        return
    for name, sql_type in _LEASE_COLUMNS.items():
        if name in have:
            continue
        kind = "TIMESTAMP WITH TIME ZONE" if name == "heartbeat_at" and engine.dialect.name != "sqlite" else sql_type
        try:
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE {m.runs.name} ADD COLUMN {name} {kind}"))
        except SQLAlchemyError:
            pass                                      # another process added it first


def effective_status(row: Any, now: datetime, default_lease_s: float) -> str:
    """The run's status as it stands: a ``running`` row whose lease ran out is ``abandoned``."""
    deadline = expired_at(row, default_lease_s)
    if row.status != RUNNING or deadline is None:
        return str(row.status)
    return ABANDONED if deadline < now else RUNNING


def expired_at(row: Any, default_lease_s: float) -> datetime | None:
    """When the run's lease runs out (None: it holds no lease). A row without a heartbeat predates leases."""
    last = row.heartbeat_at
    if last is None:
        return row.started_at + timedelta(seconds=default_lease_s)  # type: ignore[no-any-return]
    if row.lease_s is None:
        return None
    return last + timedelta(seconds=float(row.lease_s))  # type: ignore[no-any-return]


def start(engine: Engine, *, signal: str, version: int, kind: str, params: dict[str, Any], lease_s: float | None,
          default_lease_s: float) -> int:
    """Mark the signal's runs whose lease ran out as abandoned, then record a new running run; its id."""
    with transaction(engine, write=True) as conn:
        now = utc_now()
        key = conn.execute(insert(m.runs).values(
            signal_name=signal, version=version, kind=kind, status=RUNNING, started_at=now, heartbeat_at=now,
            lease_s=lease_s, params=plain(params), details={})).inserted_primary_key
        assert key is not None
        run_id = int(key[0])
        stale = conn.execute(select(m.runs).where(m.runs.c.signal_name == signal, m.runs.c.status == RUNNING,
                                                  m.runs.c.id != run_id)).all()
        for row in stale:
            if effective_status(row, now, default_lease_s) != ABANDONED:
                continue
            last = row.heartbeat_at or row.started_at
            details = {**dict(row.details or {}),
                       "error": f"abandoned: no heartbeat since {last.isoformat()}, its lease ran out (the process "
                                f"was killed or lost the registry); marked by run {run_id}"}
            conn.execute(update(m.runs).where(m.runs.c.id == row.id, m.runs.c.status == RUNNING).values(
                status=ABANDONED, finished_at=last, duration_s=max(0.0, (last - row.started_at).total_seconds()),
                details=plain(details)))
        return run_id


def finish(engine: Engine, run_id: int, *, status: str, snapshot_id: int | None, rows: int | None,
           details: dict[str, Any] | None) -> None:
    """Record the end of a running (or abandoned, but alive after all) run."""
    if status not in FINAL_STATUSES:
        raise ValueError(f"run status must be one of {', '.join(FINAL_STATUSES)}, got {status!r}")
    with transaction(engine, write=True) as conn:
        row = conn.execute(select(m.runs.c.started_at, m.runs.c.status).where(m.runs.c.id == run_id)).first()
        if row is None:
            raise NotFoundError(f"no run with id {run_id}")
        if row.status not in (RUNNING, ABANDONED):
            raise QuasarError(f"run {run_id} already finished ({row.status})")
        now = utc_now()
        conn.execute(update(m.runs).where(m.runs.c.id == run_id).values(
            status=status, finished_at=now, snapshot_id=snapshot_id, rows=rows, heartbeat_at=now,
            duration_s=max(0.0, (now - row.started_at).total_seconds()), details=plain(details or {})))


class Heartbeats:
    """One daemon thread per running run of this process, renewing its lease until stopped."""

    def __init__(self, engine: Engine, lease_s: float) -> None:
        self._engine = engine
        self._interval = min(_MAX_BEAT_S, lease_s / 4)
        self._beating: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, run_id: int) -> None:
        stop = threading.Event()
        with self._lock:
            self._beating[run_id] = stop
        threading.Thread(target=self._beat, args=(run_id, stop), name=f"quasar-run-{run_id}-heartbeat",
                         daemon=True).start()

    def stop(self, run_id: int) -> None:
        with self._lock:
            stop = self._beating.pop(run_id, None)
        if stop is not None:
            stop.set()

    def stop_all(self) -> None:
        with self._lock:
            stops, self._beating = list(self._beating.values()), {}
        for stop in stops:
            stop.set()

    def _beat(self, run_id: int, stop: threading.Event) -> None:
        while not stop.wait(self._interval):
            try:
                with transaction(self._engine, write=True) as conn:
                    conn.execute(update(m.runs).where(m.runs.c.id == run_id, m.runs.c.status == RUNNING)
                                 .values(heartbeat_at=utc_now()))
            except Exception:  # the registry is unreachable: the lease runs out and the run reads abandoned
                continue
