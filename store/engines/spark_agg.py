"""Windowed aggregations as Spark SQL, with exactly the semantics (and the bits) of ``quasar.store.engines.local_agg``.

Each event joins the step times ``T`` with ``ts < T <= ts + reach`` (the longest window plus one step, where an
entity's windows empty) inside the backfill window
(``explode(sequence(...))``), rows are grouped by ``(key, T)`` and every aggregation filters its own window
``T - window <= ts``. Float sums add their values in ``(ts, value)`` order (``aggregate`` over the sorted
values), as the local engine does, so both engines give the same floats; ``last`` takes the value of the
greatest ``(ts, value)``; integer sums are exact.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pyarrow as pa

from quasar.signals.aggregation import Aggregation, reach
from quasar.signals.errors import SchemaError
from quasar.signals.signal import Signal
from quasar.signals.ufr.types import TIMESTAMP_ARROW
from quasar.store.engines.local_agg import (
    check_column_types,
    columns_of,
    micros,
    output_schema,
    prepare_events,
    result_columns,
    step_bounds,
)


def _agg_expr(agg: Aggregation, col: str | None, col_type: pa.DataType | None) -> str:
    cond = f"_t >= _step - {micros(agg.window)}L"
    fn = agg.function
    if fn == "count":
        inner = f"CAST(count({col or 1}) FILTER (WHERE {cond}) AS BIGINT)"
    elif fn in ("sum", "mean"):
        assert col is not None and col_type is not None
        if pa.types.is_floating(col_type):
            ordered = f"array_sort(collect_list(named_struct('t', _t, 'v', {col})) " \
                      f"FILTER (WHERE {col} IS NOT NULL AND {cond}))"
            total = f"aggregate({ordered}, CAST(NULL AS DOUBLE), (acc, x) -> coalesce(acc, 0D) + CAST(x.v AS DOUBLE))"
        else:
            total = f"CAST(sum(CAST({col} AS BIGINT)) FILTER (WHERE {cond}) AS BIGINT)"
        inner = f"coalesce({total}, 0)" if fn == "sum" else \
            f"CAST({total} AS DOUBLE) / nullif(count({col}) FILTER (WHERE {cond}), 0)"
    elif fn in ("min", "max"):
        inner = f"{fn}({col}) FILTER (WHERE {cond})"
    elif fn == "last":
        inner = f"max_by({col}, named_struct('t', _t, 'v', {col})) FILTER (WHERE {col} IS NOT NULL AND {cond})"
    else:  # pragma: no cover - Aggregation validates its function
        raise SchemaError(f"aggregation {agg.name}: unknown function {fn!r}")
    return f"{inner} AS `{agg.name}`"


def aggregation_sql(signal: Signal, events: pa.Table, view: str, start: datetime, end: datetime) -> str | None:
    """The Spark SQL computing ``signal`` over ``[start, end)`` from the prepared events view; None if no step
    fits the window."""
    assert signal.step is not None and signal.max_window is not None
    step_us, max_w = micros(signal.step), micros(reach(signal.step, signal.max_window))
    first, last = step_bounds(start, end, step_us)
    if first > last:
        return None
    col_names = {c: f"_c{i}" for i, c in enumerate(columns_of(signal))}
    exprs = []
    for agg in signal.aggregations:
        col = col_names.get(agg.column) if agg.column else None
        exprs.append(_agg_expr(agg, col, events.schema.field(col).type if col else None))
    return f"""
        WITH ev AS (
            SELECT * FROM {view}
            WHERE _k IS NOT NULL AND _t IS NOT NULL AND _t >= {first - max_w}L AND _t < {last}L
        ), bounds AS (
            SELECT *, greatest(_t - pmod(_t, {step_us}L) + {step_us}L, {first}L) AS _lo,
                      least(_t + {max_w}L, {last}L) AS _hi
            FROM ev
        ), ex AS (
            SELECT *, explode(sequence(_lo, _hi, {step_us}L)) AS _step FROM bounds WHERE _lo <= _hi
        )
        SELECT _k, _step, {", ".join(exprs)}
        FROM ex GROUP BY _k, _step ORDER BY _k, _step
    """


def compute_aggregation_spark(session: Any, signal: Signal, source_rows: pa.Table, start: datetime,
                              end: datetime) -> pa.Table:
    """Rows of an aggregation signal stamped at its steps in ``[start, end)``, computed by Spark."""
    from quasar.store.engines.spark_session import spark_safe

    schema = output_schema(signal)
    events = prepare_events(signal, source_rows)
    check_column_types(signal, events)
    view = f"quasar_events_{uuid.uuid4().hex[:12]}"
    sql = aggregation_sql(signal, events, view, start, end)
    if sql is None or events.num_rows == 0:
        return schema.empty_table()
    session.createDataFrame(spark_safe(events)).createOrReplaceTempView(view)
    try:
        result = session.sql(sql).toArrow()
    finally:
        session.catalog.dropTempView(view)
    columns = [result.column("_k").cast(signal.entity.arrow_key_type),
               result.column("_step").cast(pa.int64()).cast(TIMESTAMP_ARROW), *result_columns(signal, result)]
    return pa.Table.from_arrays(columns, schema=schema)
