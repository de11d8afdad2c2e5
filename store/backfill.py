"""Backfill: compute a signal over whole days and replace those days of its Iceberg table in one commit.

Read the source window (an aggregation reads ``max_window`` and one step further back), compute with an engine, check
the output, validate it against the signal's expectations (``quasar.store.gates``), replace the window. Any failure
leaves the table at its previous snapshot and raises ``BackfillError`` (``ValidationFailedError`` when a
strict gate refused the batch, which is then quarantined); the run log records every run, successful or not,
with the gate's result.

An aggregation's re-backfill also replaces the later days whose windows hold the replaced days' events
(``affected_end``), so a late event or a correction reaches every row it belongs to.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from quasar.signals.aggregation import reach
from quasar.signals.bounds import DEFAULT_BOUNDS, TimeBounds
from quasar.signals.errors import BackfillError, QuasarError, ValidationFailedError
from quasar.signals.signal import Signal
from quasar.signals.times import parse_time
from quasar.store.engines.base import Engine
from quasar.store.gates import enforce, snapshot_properties, validate_batch
from quasar.store.output_check import check_output
from quasar.store.progress import Progress
from quasar.store.sources import SourceReader
from quasar.store.tables import OfflineStore

STEPS = ("read source", "compute", "check output", "validate", "write")


class RunLog(Protocol):
    """Where runs are recorded (``registry.Registry`` implements it)."""

    def start_run(self, *, signal: str, version: int, kind: str, params: dict[str, Any] | None = None) -> int: ...

    def finish_run(self, run_id: int, *, status: str, snapshot_id: int | None = None, rows: int | None = None,
                   details: dict[str, Any] | None = None) -> None: ...


@dataclass(frozen=True, kw_only=True)
class BackfillResult:
    """What one backfill wrote: the window, the rows, the new snapshot and the run that recorded it."""

    signal: str
    version: int
    start: datetime
    end: datetime
    rows: int
    snapshot_id: int | None
    run_id: int | None
    duration_s: float
    validation: dict[str, Any] | None = None         # the gate's result (quasar.store.gates.GateResult.to_dict())


def _to_datetime(value: Any, what: str) -> datetime:
    """A window bound by the one time rule (``quasar.signals.times``): dates, datetimes, ISO strings; naive is UTC."""
    try:
        return parse_time(value, f"backfill {what}", BackfillError)
    except BackfillError as exc:
        raise BackfillError(f"{exc}; a backfill {what} must be a date, e.g. 2026-01-01") from None


def parse_window(start: Any, end: Any) -> tuple[datetime, datetime]:
    """``start`` and ``end`` (dates, ISO strings or datetimes; naive means UTC) as UTC midnights, end > start.

    Backfills replace whole days, so a bound that is not midnight UTC is an error rather than rounded.
    """
    bounds = _to_datetime(start, "start"), _to_datetime(end, "end")
    for what, bound in zip(("start", "end"), bounds, strict=True):
        if bound != bound.replace(hour=0, minute=0, second=0, microsecond=0):
            raise BackfillError(f"backfill {what} {bound.isoformat()} is not midnight UTC: backfills replace "
                                "whole days")
    if bounds[1] <= bounds[0]:
        raise BackfillError(f"backfill end {bounds[1].date()} must be after start {bounds[0].date()}")
    return bounds


def _reach(signal: Signal) -> timedelta | None:
    if signal.kind != "aggregation" or signal.step is None or signal.max_window is None:
        return None
    return reach(signal.step, signal.max_window)


def source_window(signal: Signal, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The source rows a backfill of ``[start, end)`` needs: an aggregation looks back as far as an event's rows
    reach (its longest window and the step where that window empties, ``quasar.signals.aggregation.reach``)."""
    look_back = _reach(signal)
    return (start - look_back if look_back else start), end


def affected_end(signal: Signal, version: int, start: datetime, end: datetime, store: OfflineStore) -> datetime:
    """The end of the days a backfill of ``[start, end)`` must replace.

    An aggregation's rows after ``end`` hold the events of ``[start, end)`` in their windows (up to ``reach``
    past them), so re-backfilling days (a late event, a correction) also recomputes those later days, as far
    as the table already covers them: never beyond what was backfilled before, so no day nobody asked for is
    written. Transforms only ever replace ``[start, end)``.
    """
    look_ahead = _reach(signal)
    covered = store.backfilled_until(signal.name, version) if look_ahead else None
    if look_ahead is None or covered is None or covered <= end:
        return end
    last_reached = end - timedelta(microseconds=1) + look_ahead
    reached_end = datetime(last_reached.year, last_reached.month, last_reached.day, tzinfo=UTC) + timedelta(days=1)
    return max(end, min(reached_end, covered))


def source_columns(signal: Signal) -> list[str] | None:
    """The source columns an aggregation reads (a transform gets every column)."""
    if signal.kind != "aggregation":
        return None
    cols = [signal.entity.join_key, *(a.column for a in signal.aggregations if a.column)]
    return list(dict.fromkeys(cols))


def backfill(*, signal: Signal, version: int, start: Any, end: Any, store: OfflineStore, engine: Engine,
             sources: SourceReader, runs: RunLog | None = None, progress: bool = False,
             bounds: TimeBounds = DEFAULT_BOUNDS) -> BackfillResult:
    """Compute ``signal`` v``version`` for the days in ``[start, end)`` and replace them in its table; output
    times outside ``bounds`` (``quasar.signals.bounds``) fail it."""
    start_dt, end_dt = parse_window(start, end)
    end_dt = affected_end(signal, version, start_dt, end_dt, store)
    began = time.perf_counter()
    params = {"start": start_dt.isoformat(), "end": end_dt.isoformat(), "engine": engine.name}
    run_id = runs.start_run(signal=signal.name, version=version, kind="backfill", params=params) if runs else None
    step = STEPS[0]
    try:
        with Progress(f"backfill {signal.name} v{version} [{start_dt.date()}, {end_dt.date()})", total=len(STEPS),
                      unit="step", enabled=progress) as bar:
            bar.step(step)

            def advance(name: str) -> None:
                nonlocal step
                bar.update(1)
                step = name
                bar.step(name)

            done = engine.backfill_window(signal=signal, version=version, start=start_dt, end=end_dt, store=store,
                                          sources=sources, bounds=bounds, run_id=run_id,
                                          columns=source_columns(signal), step=lambda name: None if name == step
                                          else advance(name))
            if done is not None:                        # the engine's workers did it all (Spark, rows off the driver)
                gate, snapshot_id = done.gate, done.snapshot_id
                row_count, source_count = done.rows, done.source_rows
                bar.update(1)
            else:
                src_start, src_end = source_window(signal, start_dt, end_dt)
                source_rows = sources.read(signal.source, src_start, src_end, source_columns(signal))
                source_count = source_rows.num_rows
                advance(STEPS[1])
                computed = engine.compute(signal, source_rows, start_dt, end_dt)
                advance(STEPS[2])
                rows = check_output(computed, signal, start_dt, end_dt, bounds=bounds)
                row_count = rows.num_rows
                advance(STEPS[3])
                frame = engine.validation_frame(rows) if signal.expectations else None
                gate = validate_batch(signal, version, rows, frame=frame)
                enforce(gate, signal=signal, rows=rows, store=store, run_id=run_id)
                advance(STEPS[4])
                snapshot_id = engine.write_window(store, signal, version, rows, start_dt, end_dt,
                                                  properties=snapshot_properties(gate, run_id))
                bar.update(1)
    except BaseException as exc:
        duration = time.perf_counter() - began
        error = _describe(signal, version, start_dt, end_dt, step, exc)
        if runs is not None and run_id is not None:
            unrecorded = _record_failure(runs, run_id, exc, error, step, duration)
            if unrecorded:
                error += f" ({unrecorded}; the run reads as abandoned once its lease runs out)"
        if not isinstance(exc, Exception):
            raise                                       # KeyboardInterrupt and friends: recorded, not wrapped
        if isinstance(exc, ValidationFailedError):
            raise ValidationFailedError(error, details=exc.details) from exc
        raise BackfillError(error) from exc
    duration = time.perf_counter() - began
    validation = gate.to_dict() if gate.outcomes else None
    if runs is not None and run_id is not None:
        details: dict[str, Any] = {"duration_s": round(duration, 6), "source_rows": source_count,
                                   **sources.last_read}       # files read, rows dropped for a null event time
        runs.finish_run(run_id, status="succeeded", snapshot_id=snapshot_id, rows=row_count,
                        details={**details, "validation": validation} if validation else details)
    return BackfillResult(signal=signal.name, version=version, start=start_dt, end=end_dt, rows=row_count,
                          snapshot_id=snapshot_id, run_id=run_id, duration_s=duration, validation=validation)


def _describe(signal: Signal, version: int, start: datetime, end: datetime, step: str, exc: BaseException) -> str:
    window = f"[{start.date()}, {end.date()})"
    detail = str(exc) if isinstance(exc, QuasarError) else f"{type(exc).__name__}: {exc}"
    return f"signal {signal.name} v{version}: backfill of {window} failed at {step}: {detail}"


def _record_failure(runs: RunLog, run_id: int, exc: BaseException, error: str, step: str,
                    duration: float) -> str | None:
    """Record the failed run; when that fails too, say so (returned, and noted on ``exc``)."""
    details = {"error": error, "error_type": type(exc).__name__, "step": step, "duration_s": round(duration, 6),
               **getattr(exc, "details", {})}          # a refused gate's validation and quarantine
    try:
        runs.finish_run(run_id, status="failed", details=details)
    except Exception as log_exc:  # the backfill's own error matters more than the log's
        note = f"recording the failed run {run_id} also failed: {log_exc}"
        exc.add_note(note)
        return note
    return None

