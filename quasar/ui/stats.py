"""Per-feature statistics of a signal version's last backfill, for the catalog: null rate, min, max, mean and a
histogram (the most frequent values of a string feature), read from the rows the table holds for the window of
the version's last successful backfill, at the table's current snapshot.

Computed once per ``(signal, version, snapshot id)`` and kept in the registry's state (``ui.stats:<signal>:v<n>``),
so a page load reads one registry row, not the table; a new snapshot (a backfill, a push to the offline store,
a compaction) makes the next page load compute them again.

What is measured per type: numbers and booleans (as 0/1) their values; timestamps their values (shown as
times); strings their distinct count and most frequent values; vectors (fixed-size lists of numbers) their
elements; other lists (id lists, weighted id lists) their lengths.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from quasar.platform import Platform
    from quasar.registry import SignalVersion
    from quasar.registry.records import RunRecord

BINS = 20
TOP = 8
STATE_PREFIX = "ui.stats"


def state_key(signal: str, version: int) -> str:
    return f"{STATE_PREFIX}:{signal}:v{version}"


def last_backfill(runs: list[RunRecord], version: int) -> RunRecord | None:
    """The newest succeeded backfill of ``version`` among ``runs`` (newest first) that names its window."""
    for run in runs:
        if (run.kind == "backfill" and run.status == "succeeded" and run.version == version
                and "start" in run.params and "end" in run.params):
            return run
    return None


def feature_stats(p: Platform, sv: SignalVersion) -> dict[str, Any] | None:
    """The statistics of ``sv``'s last backfilled window (see the module doc); None before its first backfill.
    Cached in the registry's state, keyed by the table's current snapshot."""
    snapshot = p.offline.current_snapshot_id(sv.name, sv.version)
    if snapshot is None:
        return None
    key = state_key(sv.name, sv.version)
    cached = p.registry.get_state(key)
    if cached is not None and cached.get("snapshot_id") == snapshot:
        return cached
    run = last_backfill(p.registry.runs(sv.name, kind="backfill", limit=50), sv.version)
    start = datetime.fromisoformat(run.params["start"]) if run is not None else None
    end = datetime.fromisoformat(run.params["end"]) if run is not None else None
    names = list(sv.signal.schema.names)
    rows = p.offline.read(sv.signal, sv.version, start=start, end=end, columns=names, snapshot_id=snapshot)
    value = {"signal": sv.name, "version": sv.version, "snapshot_id": snapshot,
             "run_id": run.id if run is not None else None,
             "start": start.isoformat() if start else None, "end": end.isoformat() if end else None,
             "rows": rows.num_rows, "computed_at": datetime.now(UTC).isoformat(),
             "features": [column_stats(name, rows.column(name)) for name in names]}
    p.registry.set_state(key, value)
    return value


def column_stats(name: str, column: pa.ChunkedArray | pa.Array) -> dict[str, Any]:
    """One feature's statistics (JSON-safe), by its Arrow type."""
    rows = len(column)
    nulls = column.null_count
    out: dict[str, Any] = {"name": name, "type": str(column.type), "rows": rows, "nulls": nulls,
                           "null_rate": nulls / rows if rows else None, "of": None}
    t = column.type
    if pa.types.is_boolean(t):
        out.update(_numeric(pc.cast(column, pa.int8()), integer=True), of="values (true = 1)")
    elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        out.update(_numeric(column, integer=pa.types.is_integer(t)), of="values")
    elif pa.types.is_timestamp(t):
        micros = pc.cast(pc.cast(column, pa.timestamp("us", tz=t.tz)), pa.int64())
        out.update(_numeric(micros, integer=False), of="times")
        for k in ("min", "max", "mean"):
            out[k] = _time(out[k])
        if out.get("edges"):
            out["labels"] = [_time(out["edges"][0], day=True), _time(out["edges"][-1], day=True)]
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        out.update(_strings(column), of="values")
    elif pa.types.is_fixed_size_list(t) and (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)):
        flat = pc.list_flatten(column)
        out.update(_numeric(flat, integer=pa.types.is_integer(t.value_type)), of="elements")
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        out.update(_numeric(pc.list_value_length(column), integer=True), of="lengths")
    return out


def _numeric(values: pa.ChunkedArray | pa.Array, *, integer: bool) -> dict[str, Any]:
    data = values.drop_null() if hasattr(values, "drop_null") else pc.drop_null(values)
    arr = np.asarray(data.to_numpy(zero_copy_only=False) if isinstance(data, pa.Array)
                     else data.to_numpy(), dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    out: dict[str, Any] = {"nan": int(arr.size - finite.size), "min": None, "max": None, "mean": None,
                           "counts": [], "edges": []}
    if not finite.size:
        return out
    lo, hi = float(finite.min()), float(finite.max())
    out.update(min=int(lo) if integer else lo, max=int(hi) if integer else hi, mean=float(finite.mean()))
    if integer and hi - lo + 1 <= BINS:
        bins: Any = np.arange(lo, hi + 2) - 0.5 if hi > lo else np.array([lo - 0.5, lo + 0.5])
    else:
        bins = BINS
    counts, edges = np.histogram(finite, bins=bins)
    out.update(counts=[int(c) for c in counts], edges=[float(e) for e in edges])
    return out


def _strings(column: pa.ChunkedArray | pa.Array) -> dict[str, Any]:
    counted = pc.value_counts(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
    pairs = sorted(((v, int(c)) for v, c in zip(counted.field("values").to_pylist(),
                                                counted.field("counts").to_pylist(), strict=True)),
                   key=lambda vc: (-vc[1], "" if vc[0] is None else str(vc[0])))
    return {"distinct": sum(1 for v, _ in pairs if v is not None), "top": [[v, c] for v, c in pairs[:TOP]]}


def _time(micros: float | None, *, day: bool = False) -> str | None:
    if micros is None:
        return None
    when = datetime.fromtimestamp(micros / 1e6, tz=UTC)
    return f"{when:%Y-%m-%d}" if day else when.isoformat(timespec="seconds")
