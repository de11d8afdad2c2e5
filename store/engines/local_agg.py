"""Windowed aggregations in DuckDB, with exactly the semantics of ``quasar.signals.aggregation``.

Each source row contributes to the step times ``T`` with ``ts < T <= ts + reach`` inside the backfill window
(``reach`` = the longest window plus one step, ``quasar.signals.aggregation.reach``); rows are joined to those steps
(``range()`` + ``unnest``) and grouped by ``(key, T)``, each aggregation filtering its own window
``T - window <= ts``. A group exists only where some row falls in the longest window or in the step before
it, which is exactly when an entity gets a row (the last such row is the one whose windows are all empty).
Times are integer microseconds throughout. That is the per-event plan; a signal whose windows are all whole
multiples of its step (the usual ``1d``/``7d`` at a ``1d`` step) takes the roll-up plan of
``quasar.store.engines.local_rollup`` instead, which gives the same rows and the same bits with far less work.

The SQL yields each result in its natural type (BIGINT counts and integer sums, DOUBLE float sums and means,
the column's own type for min, max and last); ``result_columns`` then casts to the declared dtypes with
Arrow's checked cast, shared with the Spark engine, so a value that does not fit exactly is refused the same
way on both engines instead of being rounded by one and truncated by the other.

Floating-point sums add values in ``(ts, value)`` order, so results are deterministic run to run whatever
the thread count (and a plain reference can match them bit for bit); integer sums are exact. ``last``
breaks ties on ``ts`` by the larger value.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import duckdb
import pyarrow as pa

from quasar.signals.aggregation import Aggregation, reach
from quasar.signals.errors import SchemaError
from quasar.signals.signal import Signal
from quasar.signals.times import micros
from quasar.signals.ufr.schema import EVENT_TIMESTAMP
from quasar.signals.ufr.types import TIMESTAMP_ARROW, String
from quasar.store.engines import local_rollup


def step_bounds(start: datetime, end: datetime, step_us: int) -> tuple[int, int]:
    """The first and last step times (microseconds) in ``[start, end)``; first > last when there are none."""
    start_us, end_us = micros(start), micros(end)
    first = -(-start_us // step_us) * step_us
    last = ((end_us - 1) // step_us) * step_us
    return first, last


def _value_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A source value column as DuckDB should see it: timestamps as integer microseconds."""
    if pa.types.is_timestamp(column.type):
        tz = column.type.tz or "UTC"
        return column.cast(pa.timestamp(column.type.unit, tz=tz)).cast(TIMESTAMP_ARROW, safe=False).cast(pa.int64())
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column


def prepare_events(signal: Signal, source_rows: pa.Table) -> pa.Table:
    """The columns the aggregation SQL reads: ``_k`` (key), ``_t`` (microseconds), ``_c0``, ``_c1``, ...

    Renaming keeps user column names (which may be ``t`` or a SQL keyword) out of the query text.
    """
    key, ts = signal.entity.join_key, signal.source.timestamp
    for needed in (key, ts, *columns_of(signal)):
        if needed not in source_rows.column_names:
            raise SchemaError(f"signal {signal.name}: source {signal.source.name} has no column {needed!r} "
                              f"(it has {', '.join(source_rows.column_names)})")
    ts_col = source_rows.column(ts)
    if not pa.types.is_timestamp(ts_col.type):
        raise SchemaError(f"signal {signal.name}: source timestamp column {ts!r} has type {ts_col.type}")
    key_col = source_rows.column(key)
    if pa.types.is_dictionary(key_col.type):
        key_col = key_col.cast(key_col.type.value_type)
    arrays = {"_k": key_col, "_t": _value_column(ts_col)}
    for i, col in enumerate(columns_of(signal)):
        arrays[f"_c{i}"] = _value_column(source_rows.column(col))
    return pa.table(arrays)


def columns_of(signal: Signal) -> list[str]:
    """The distinct source columns the aggregations read, in first-use order."""
    return list(dict.fromkeys(a.column for a in signal.aggregations if a.column))


def _needs_order(agg: Aggregation, col_type: pa.DataType | None) -> bool:
    """Float sums and ``last`` depend on the order of their values; they read a rank by ``(ts, value)``."""
    if agg.function == "last":
        return True
    return agg.function in ("sum", "mean") and col_type is not None and pa.types.is_floating(col_type)


def _agg_expr(agg: Aggregation, col: str | None, col_type: pa.DataType | None) -> str:
    window = micros(agg.window)
    cond = f"_t >= _step - {window}"
    rank = f"_r{col[2:]}" if col else ""
    fn = agg.function
    if fn == "count":
        inner = f"CAST(count({col or '*'}) FILTER (WHERE {cond}) AS BIGINT)"
    elif fn in ("sum", "mean"):
        assert col is not None and col_type is not None
        if pa.types.is_floating(col_type):
            total = f"sum(CAST({col} AS DOUBLE) ORDER BY {rank}) FILTER (WHERE {cond})"
        else:
            total = f"CAST(sum(CAST({col} AS BIGINT)) FILTER (WHERE {cond}) AS BIGINT)"
        inner = f"coalesce({total}, 0)" if fn == "sum" else \
            f"CAST({total} AS DOUBLE) / count({col}) FILTER (WHERE {cond})"
    elif fn in ("min", "max"):
        inner = f"{fn}({col}) FILTER (WHERE {cond})"
    elif fn == "last":
        inner = f"arg_max({col}, {rank}) FILTER (WHERE {col} IS NOT NULL AND {cond})"
    else:  # pragma: no cover - Aggregation validates its function
        raise SchemaError(f"aggregation {agg.name}: unknown function {fn!r}")
    return f'{inner} AS "{agg.name}"'


def aggregation_sql(signal: Signal, events: pa.Table, view: str, start: datetime, end: datetime) -> str | None:
    """The query computing ``signal`` over ``[start, end)`` from the prepared events view; None if no step fits.

    Order-dependent aggregations read ``_r<i>``, the rank of each event by ``(ts, value)`` among all events:
    a float sum adds in rank order, ``last`` takes the value of the highest rank (latest ts, then largest
    value). One global rank per column is far cheaper than ordering inside every group.
    """
    assert signal.step is not None and signal.max_window is not None
    step_us, max_w = micros(signal.step), micros(reach(signal.step, signal.max_window))
    first, last = step_bounds(start, end, step_us)
    if first > last:
        return None
    col_names = {c: f"_c{i}" for i, c in enumerate(columns_of(signal))}
    exprs, ranked = [], {}
    for agg in signal.aggregations:
        col = col_names.get(agg.column) if agg.column else None
        col_type = events.schema.field(col).type if col else None
        if col and _needs_order(agg, col_type):
            ranked[col] = f"row_number() OVER (ORDER BY _t, {col} NULLS FIRST) AS _r{col[2:]}"
        exprs.append(_agg_expr(agg, col, col_type))
    ranks = "".join(f", {r}" for r in ranked.values())
    return f"""
        WITH ev AS (
            SELECT *{ranks} FROM {view}
            WHERE _k IS NOT NULL AND _t IS NOT NULL AND _t >= {first - max_w} AND _t < {last}
        ), ex AS (
            SELECT *, unnest(range(greatest(_t - ((_t % {step_us}) + {step_us}) % {step_us} + {step_us}, {first}),
                                   least(_t + {max_w}, {last}) + 1, {step_us})) AS _step
            FROM ev
        )
        SELECT _k, _step, {", ".join(exprs)}
        FROM ex GROUP BY _k, _step ORDER BY _k, _step
    """


def check_column_types(signal: Signal, events: pa.Table) -> None:
    """Refuse, before any SQL runs, an aggregation whose column cannot give its function or its dtype."""
    names = {c: f"_c{i}" for i, c in enumerate(columns_of(signal))}
    for agg in signal.aggregations:
        if agg.column is None:
            continue
        col_type = events.schema.field(names[agg.column]).type
        text = pa.types.is_string(col_type) or pa.types.is_large_string(col_type)
        numeric = pa.types.is_integer(col_type) or pa.types.is_floating(col_type) or pa.types.is_boolean(col_type)
        where = f"signal {signal.name}: aggregation {agg.name!r} over source column {agg.column!r} ({col_type})"
        if agg.function in ("sum", "mean") and not numeric:
            raise SchemaError(f"{where}: a {agg.function} needs a numeric or boolean column")
        if agg.function in ("min", "max", "last") and text != isinstance(agg.dtype, String):
            hint = "declare dtype=String()" if text else "String() holds text columns only"
            raise SchemaError(f"{where} cannot be stored as {agg.dtype}: {hint}")


def result_columns(signal: Signal, result: pa.Table) -> list[pa.ChunkedArray]:
    """The aggregations' result columns (natural types, by name) in their declared dtypes, cast exactly.

    Arrow's checked cast refuses a float that is not a whole number as an integer and an integer a float
    cannot hold; the error names the aggregation and the first value that does not fit.
    """
    columns = []
    for agg in signal.aggregations:
        assert agg.dtype is not None
        column, target = result.column(agg.name), agg.dtype.arrow_type()
        try:
            columns.append(column.cast(target, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaError(f"signal {signal.name}: aggregation {agg.name!r} gives {column.type} values that "
                              f"its dtype {agg.dtype} cannot hold exactly ({_first_misfit(column, target)}); "
                              "declare a dtype that holds them (e.g. Float64()) instead of rounding") from exc
    return columns


def _first_misfit(column: pa.ChunkedArray, target: pa.DataType) -> str:
    for value in column.to_pylist():
        try:
            pa.array([value], column.type).cast(target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return f"e.g. {value!r}"
    return "a value does not fit"


def output_schema(signal: Signal) -> pa.Schema:
    """Key, event_timestamp and the aggregations in their dtypes (no created_timestamp: the backfill adds it)."""
    fields = [pa.field(signal.entity.join_key, signal.entity.arrow_key_type, nullable=False),
              pa.field(EVENT_TIMESTAMP, TIMESTAMP_ARROW, nullable=False)]
    fields += [pa.field(a.name, a.dtype.arrow_type()) for a in signal.aggregations if a.dtype is not None]
    return pa.schema(fields)


def compute_aggregation(connection: duckdb.DuckDBPyConnection, signal: Signal, source_rows: pa.Table, start: datetime,
                        end: datetime) -> pa.Table:
    """Rows of an aggregation signal stamped at its steps in ``[start, end)`` (see the module docstring)."""
    schema = output_schema(signal)
    events = prepare_events(signal, source_rows)
    check_column_types(signal, events)
    view = f"quasar_events_{uuid.uuid4().hex[:12]}"
    assert signal.step is not None
    first, last = step_bounds(start, end, micros(signal.step))
    if first > last:
        return schema.empty_table()
    if local_rollup.applies(signal):
        result = local_rollup.compute_rollup(connection, signal, events, view, first, last)
    else:
        sql = aggregation_sql(signal, events, view, start, end)
        assert sql is not None
        connection.register(view, events)
        try:
            result = connection.sql(sql).to_arrow_table()
        finally:
            connection.unregister(view)
    columns = [result.column("_k").cast(signal.entity.arrow_key_type),
               result.column("_step").cast(TIMESTAMP_ARROW), *result_columns(signal, result)]
    return pa.Table.from_arrays(columns, schema=schema)
