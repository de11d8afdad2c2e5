"""A dry run of the data-quality gate: compute a window exactly as a backfill would and validate it, committing
nothing and quarantining nothing (``quasar validate``). The run log records it as a ``validate`` run with the
gate's result; its status is ``failed`` when a backfill of the same batch would be refused."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from quasar.signals.bounds import DEFAULT_BOUNDS, TimeBounds
from quasar.signals.errors import BackfillError, QuasarError
from quasar.signals.signal import Signal
from quasar.store.backfill import RunLog, parse_window, source_columns, source_window
from quasar.store.engines.base import Engine
from quasar.store.gates import GateResult, validate_batch
from quasar.store.output_check import check_output
from quasar.store.sources import SourceReader


@dataclass(frozen=True, kw_only=True)
class WindowValidation:
    """The gate's result on the batch a backfill of ``[start, end)`` would write, and the run that recorded it."""

    result: GateResult
    start: datetime
    end: datetime
    run_id: int | None
    duration_s: float


def validate_window(*, signal: Signal, version: int, start: Any, end: Any, engine: Engine, sources: SourceReader,
                    runs: RunLog | None = None, bounds: TimeBounds = DEFAULT_BOUNDS) -> WindowValidation:
    """Read, compute and check ``[start, end)`` as ``backfill`` does, then run the gate; nothing is written."""
    start_dt, end_dt = parse_window(start, end)
    began = time.perf_counter()
    params = {"start": start_dt.isoformat(), "end": end_dt.isoformat(), "engine": engine.name, "dry_run": True}
    run_id = runs.start_run(signal=signal.name, version=version, kind="validate", params=params) if runs else None
    try:
        src_start, src_end = source_window(signal, start_dt, end_dt)
        source_rows = sources.read(signal.source, src_start, src_end, source_columns(signal))
        rows = check_output(engine.compute(signal, source_rows, start_dt, end_dt), signal, start_dt, end_dt,
                            bounds=bounds)
        frame = engine.validation_frame(rows) if signal.expectations else None
        result = validate_batch(signal, version, rows, frame=frame)
    except Exception as exc:
        detail = str(exc) if isinstance(exc, QuasarError) else f"{type(exc).__name__}: {exc}"
        error = f"signal {signal.name} v{version}: validating [{start_dt.date()}, {end_dt.date()}) failed: {detail}"
        if runs is not None and run_id is not None:
            runs.finish_run(run_id, status="failed", details={"error": error, "error_type": type(exc).__name__})
        raise BackfillError(error) from exc
    duration = time.perf_counter() - began
    if runs is not None and run_id is not None:
        runs.finish_run(run_id, status="failed" if result.verdict == "failed" else "succeeded", rows=rows.num_rows,
                        details={"duration_s": round(duration, 6), "validation": result.to_dict()})
    return WindowValidation(result=result, start=start_dt, end=end_dt, run_id=run_id, duration_s=duration)
