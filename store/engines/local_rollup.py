"""The local engine's fast plan for aggregations whose windows are whole multiples of the step (``1d``/``7d`` at a
``1d`` step): the same rows and the same bits as the per-event plan of ``quasar.store.engines.local_agg``, with
far less work.

Every event at ``ts`` belongs to the step ``s`` right after it (``s - step <= ts < s``). When a window ``w`` is
a multiple of the step, whether the event falls in the window of step ``T`` depends on ``s`` alone
(``T - w + step <= s <= T``), so the events are first rolled up per ``(key, s)`` (counts, integer sums, min,
max, the ``last`` candidate by rank, the latest ``ts``) and only those groups are expanded to the steps they
reach, instead of every event. Counts, integer sums (exact, in HUGEINT), min, max and ``last`` (the greatest
rank) combine exactly, so they are the per-event plan's values.

Float sums are the one aggregate that does not combine exactly: they are added left to right in ``(ts,
value)`` order (``quasar.store.engines.local_agg``), which rounding makes order-dependent. The events are sorted
by ``(key, ts)`` before the query; a window's events are then one contiguous run of that order (its groups
``s`` are consecutive), whose first and last positions the query returns; ``sequential_sums`` adds each run
left to right in numpy, many windows at once, after sorting ties on ``ts`` by value. The sum is the same
sequence of additions as the per-event plan's ordered ``sum``, so the same bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quasar.signals.aggregation import Aggregation, reach
from quasar.signals.errors import SchemaError
from quasar.signals.signal import Signal
from quasar.signals.times import micros

TAIL = 32                # sequential_sums: runs still open when this few remain are finished one by one


def applies(signal: Signal) -> bool:
    """True when every window of ``signal`` is a whole multiple of its step (this plan's condition)."""
    assert signal.step is not None
    step = micros(signal.step)
    return step > 0 and all(micros(a.window) % step == 0 for a in signal.aggregations)


def is_float_sum(agg: Aggregation, col_type: pa.DataType | None) -> bool:
    """A sum or mean of a float column: added in ``(ts, value)`` order by ``sequential_sums``."""
    return agg.function in ("sum", "mean") and col_type is not None and pa.types.is_floating(col_type)


@dataclass(frozen=True)
class FloatSum:
    """One float sum or mean: its source column (``_c<i>``), and the query's columns holding its window's run
    of positions (``_lo<w>``, ``_hi<w>``, null when the window is empty) and its count of values (``_cnt``)."""

    agg: Aggregation
    column: str
    lo: str
    hi: str
    count: str


@dataclass(frozen=True)
class Plan:
    sql: str
    float_sums: tuple[FloatSum, ...]


def rollup_sql(signal: Signal, events: pa.Table, view: str, first: int, last: int) -> Plan:
    """The query computing ``signal`` for the steps ``first..last`` (microseconds, ``first <= last``) from the
    prepared events view (``_k``, ``_t``, ``_c<i>`` and, when float sums are asked, ``_p``: the position in
    ``(key, ts)`` order); float sums come back as runs of positions, for ``sequential_sums``."""
    from quasar.store.engines.local_agg import columns_of

    assert signal.step is not None and signal.max_window is not None
    step, reach_us = micros(signal.step), micros(reach(signal.step, signal.max_window))
    names = {c: f"_c{i}" for i, c in enumerate(columns_of(signal))}
    partials: dict[str, str] = {}
    finals: list[str] = []
    ranked: dict[str, str] = {}
    float_sums: list[FloatSum] = []

    def window(agg: Aggregation) -> str:
        return f"_s >= _step - {micros(agg.window) - step}"

    def total(partial: str, expr: str, agg: Aggregation, fn: str = "sum") -> str:
        partials[partial] = expr
        return f"{fn}({partial}) FILTER (WHERE {window(agg)})"

    for agg in signal.aggregations:
        col = names.get(agg.column) if agg.column else None
        col_type = events.schema.field(col).type if col else None
        fn, name = agg.function, f'"{agg.name}"'
        if fn == "count":
            counted = total(f"_n{col[2:]}" if col else "_n", f"count({col or '*'})", agg)
            finals.append(f"CAST(coalesce({counted}, 0) AS BIGINT) AS {name}")
        elif fn in ("sum", "mean") and is_float_sum(agg, col_type):
            assert col is not None
            w = micros(agg.window)
            partials["_pmin"], partials["_pmax"] = "min(_p)", "max(_p)"
            lo, hi, cnt = f"_lo{w}", f"_hi{w}", f"_cnt_{len(finals)}"
            finals.append(f"min(_pmin) FILTER (WHERE {window(agg)}) AS {lo}")
            finals.append(f"max(_pmax) FILTER (WHERE {window(agg)}) AS {hi}")
            finals.append(f"CAST(coalesce({total(f'_n{col[2:]}', f'count({col})', agg)}, 0) AS BIGINT) AS {cnt}")
            float_sums.append(FloatSum(agg, col, lo, hi, cnt))
        elif fn in ("sum", "mean"):
            assert col is not None
            summed = f"CAST({total(f'_s{col[2:]}', f'sum(CAST({col} AS BIGINT))', agg)} AS BIGINT)"
            if fn == "sum":
                finals.append(f"coalesce({summed}, 0) AS {name}")
            else:
                counted = total(f"_n{col[2:]}", f"count({col})", agg)
                finals.append(f"CAST({summed} AS DOUBLE) / CAST({counted} AS BIGINT) AS {name}")
        elif fn in ("min", "max"):
            assert col is not None
            finals.append(f"{total(f'_{fn}{col[2:]}', f'{fn}({col})', agg, fn)} AS {name}")
        elif fn == "last":
            assert col is not None
            rank = f"_r{col[2:]}"
            ranked[col] = f"row_number() OVER (ORDER BY _t, {col} NULLS FIRST) AS {rank}"
            partials[f"_l{col[2:]}"] = f"arg_max({col}, {rank}) FILTER (WHERE {col} IS NOT NULL)"
            partials[f"_lr{col[2:]}"] = f"max({rank}) FILTER (WHERE {col} IS NOT NULL)"
            finals.append(f"arg_max(_l{col[2:]}, _lr{col[2:]}) FILTER (WHERE _lr{col[2:]} IS NOT NULL AND "
                          f"{window(agg)}) AS {name}")
        else:  # pragma: no cover - Aggregation validates its function
            raise SchemaError(f"aggregation {agg.name}: unknown function {fn!r}")
    finals = list(dict.fromkeys(finals))                  # float sums of one window share their run
    ranks = "".join(f", {r}" for r in ranked.values())
    parts = "".join(f", {expr} AS {p}" for p, expr in partials.items())
    sql = f"""
        WITH ev AS (
            SELECT *{ranks}, _t - ((_t % {step}) + {step}) % {step} + {step} AS _s FROM {view}
            WHERE _k IS NOT NULL AND _t IS NOT NULL AND _t >= {first - reach_us} AND _t < {last}
        ), g AS (
            SELECT _k, _s, max(_t) AS _tmax{parts} FROM ev GROUP BY _k, _s
        ), x AS (
            SELECT *, unnest(range(greatest(_s, {first}), least(_tmax + {reach_us}, {last}) + 1, {step})) AS _step
            FROM g
        )
        SELECT _k, _step, {", ".join(finals)}
        FROM x GROUP BY _k, _step ORDER BY _k, _step
    """
    return Plan(sql, tuple(float_sums))


def in_key_time_order(events: pa.Table, first: int, last: int, reach_us: int) -> pa.Table:
    """The events the query reads (key and time set, time in its range), sorted by ``(key, ts)``, with ``_p``
    their position in that order."""
    keep = pc.and_(pc.and_(pc.is_valid(events["_k"]), pc.is_valid(events["_t"])),
                   pc.and_(pc.greater_equal(events["_t"], first - reach_us), pc.less(events["_t"], last)))
    kept = events.filter(keep)
    if kept.num_rows:
        kept = kept.take(pa.array(key_time_order(kept["_k"].combine_chunks(), kept["_t"].to_numpy())))
    return kept.append_column("_p", pa.array(np.arange(kept.num_rows, dtype=np.int64)))


def key_time_order(keys: pa.Array, times: np.ndarray) -> np.ndarray:
    """Row indices grouping equal keys together (in some key order), by time within a key, ties in row order.

    Keys become dense codes (``dictionary_encode``), sorted stably by two 16-bit radix passes; a source read in
    time order (the usual case: files by day, rows by time) needs no time sort first."""
    codes = pc.dictionary_encode(keys).indices.to_numpy().astype(np.int64)
    if len(times) > 1 and not bool(np.all(times[1:] >= times[:-1])):
        return np.lexsort((times, codes))
    low = np.argsort((codes & 0xFFFF).astype(np.uint16), kind="stable")
    return low[np.argsort((codes[low] >> 16).astype(np.uint16), kind="stable")]


def values_in_order(events: pa.Table, column: str) -> np.ndarray:
    """``column`` of the ``(key, ts)``-sorted events as float64, in ``(key, ts, value)`` order (ties on ``(key,
    ts)`` sorted by value, as the per-event plan's rank orders them), nulls as 0.0: adding +0.0 to a sum that
    started at +0.0 changes nothing, so a null adds nothing, wherever it lies."""
    values = pc.fill_null(events[column].cast(pa.float64()), 0.0).to_numpy()
    n = events.num_rows
    if n < 2:
        return values
    keys, times = events["_k"], events["_t"]
    tied = pc.and_(pc.equal(keys.slice(1), keys.slice(0, n - 1)), pc.equal(times.slice(1), times.slice(0, n - 1)))
    tied_np = np.asarray(tied.to_numpy(zero_copy_only=False), dtype=bool)
    if not tied_np.any():
        return values
    run = np.concatenate(([0], np.cumsum(~tied_np)))       # one id per run of equal (key, ts)
    return values[np.lexsort((values, run))]


def sequential_sums(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """For each ``i``: ``0.0 + values[lo[i]] + values[lo[i] + 1] + ... + values[hi[i]]`` (``hi`` inclusive),
    added left to right, exactly as a plain Python loop would (numpy's ``sum`` adds pairwise, which rounds
    differently). Vectorized across runs: step ``p`` adds the ``p``-th value of every run still open (runs
    ordered longest first, so those are a prefix); the last ``TAIL`` long runs finish with ``cumsum``, which
    adds left to right too."""
    counts = hi - lo + 1
    order = np.argsort(-counts, kind="stable")
    starts, counts = lo[order], counts[order]
    descending = -counts                                   # ascending, for searchsorted
    acc = np.zeros(len(order), dtype=np.float64)
    p = 0
    open_ = int(np.searchsorted(descending, 0, side="left"))
    while open_ > TAIL:
        acc[:open_] += values[starts[:open_] + p]
        p += 1
        open_ = int(np.searchsorted(descending, -p, side="left"))     # runs longer than p
    for i in range(open_):
        rest = values[starts[i] + p: starts[i] + counts[i]]
        acc[i] = np.cumsum(np.concatenate(([acc[i]], rest)))[-1]
    out = np.empty_like(acc)
    out[order] = acc
    return out


def float_sum_columns(result: pa.Table, events: pa.Table, float_sums: Sequence[FloatSum]) -> pa.Table:
    """``result`` with each float sum or mean added as a float64 column named after it (the runs' positions
    and counts dropped)."""
    values: dict[str, np.ndarray] = {}
    for fs in float_sums:
        if fs.column not in values:
            values[fs.column] = values_in_order(events, fs.column)
        lo_col, hi_col = result[fs.lo], result[fs.hi]
        present = np.asarray(lo_col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        sums = np.zeros(result.num_rows, dtype=np.float64)
        if present.any():
            lo = lo_col.filter(pa.array(present)).to_numpy().astype(np.int64)
            hi = hi_col.filter(pa.array(present)).to_numpy().astype(np.int64)
            sums[present] = sequential_sums(values[fs.column], lo, hi)
        if fs.agg.function == "sum":
            column = pa.array(sums)
        else:
            counts = result[fs.count].to_numpy()
            empty = counts == 0
            column = pa.array(np.divide(sums, counts, out=np.zeros_like(sums), where=~empty), mask=empty)
        result = result.append_column(fs.agg.name, column)
    helpers = {c for fs in float_sums for c in (fs.lo, fs.hi, fs.count)}
    return result.drop_columns(sorted(helpers))


def compute_rollup(connection: duckdb.DuckDBPyConnection, signal: Signal, events: pa.Table, view: str, first: int,
                   last: int) -> pa.Table:
    """The query's result (``_k``, ``_step``, each aggregation by name in its natural type) for the steps
    ``first..last``."""
    assert signal.step is not None and signal.max_window is not None
    plan = rollup_sql(signal, events, view, first, last)
    if plan.float_sums:
        events = in_key_time_order(events, first, last, micros(reach(signal.step, signal.max_window)))
    connection.register(view, events)
    try:
        result = connection.sql(plan.sql).to_arrow_table()
    finally:
        connection.unregister(view)
    return float_sum_columns(result, events, plan.float_sums) if plan.float_sums else result
