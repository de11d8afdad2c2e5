"""Row-level expectations on pushed rows: a signal's cheap per-row expectations, checked before anything is written.

Pushes are small and on the request path, so these run vectorised on the Arrow rows rather than through
great-expectations (seconds to import, tens of milliseconds a call). Only expectations that judge each row
alone are checked (``quasar.signals.expectations.ROW_LEVEL``: not-null, between, in-set, not-in-set); row counts and
uniqueness need the whole batch and are left to the backfill gate. The semantics are GX's, as the gate sees
the same rows through pandas: a float NaN is missing like a null; between and in-set ignore missing values;
``mostly`` is the share of the considered rows (all rows for not-null, non-missing rows otherwise) that must
pass. One exception, on purpose: a NaN is not between anything, so a between check judges it (and fails it)
where GX would skip it; a NaN ``ctr`` must not pass ``between(0, 1)``. A test compares the verdicts with GX's on
random rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from quasar.signals.errors import DefinitionError, ValidationFailedError
from quasar.signals.expectations import ROW_LEVEL, describe_expectation
from quasar.signals.signal import Signal
from quasar.signals.times import parse_time

EXAMPLES = 3


def _missing(column: pa.ChunkedArray, kind: str = "") -> pa.ChunkedArray:
    """Null, or NaN for floats: what pandas (and so GX on pandas) calls missing; for a between check only
    null (a NaN is judged, and is out of every range)."""
    nan_is_null = pa.types.is_floating(column.type) and kind != "expect_column_values_to_be_between"
    return pc.fill_null(pc.is_null(column, nan_is_null=nan_is_null), True)


def _scalar(value: Any, column: pa.ChunkedArray, where: str) -> pa.Scalar:
    target = column.type
    if pa.types.is_timestamp(target) and isinstance(value, str):
        value = parse_time(value, where, DefinitionError)
    try:
        return pa.scalar(value).cast(target) if not pa.types.is_floating(target) else pa.scalar(float(value), target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise DefinitionError(f"{where}: {value!r} cannot be compared with column values of type {target}") from exc


def _unexpected(kind: str, kwargs: Mapping[str, Any], column: pa.ChunkedArray, where: str) -> pa.ChunkedArray:
    """A boolean mask of the rows that break the expectation (missing values never do, except for not-null)."""
    missing = _missing(column, kind)
    if kind == "expect_column_values_to_not_be_null":
        return missing
    if pa.types.is_nested(column.type):
        raise DefinitionError(f"{where}: column values of type {column.type} cannot be checked row by row")
    if kind == "expect_column_values_to_be_between":
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        bad = pa.chunked_array([pa.array([False] * len(column), pa.bool_())])
        if low is not None:
            below = (pc.less_equal if kwargs.get("strict_min") else pc.less)(column, _scalar(low, column, where))
            bad = pc.or_(bad, below)
        if high is not None:
            above = (pc.greater_equal if kwargs.get("strict_max") else pc.greater)(column, _scalar(high, column, where))
            bad = pc.or_(bad, above)
        if pa.types.is_floating(column.type):
            bad = pc.or_(bad, pc.is_nan(column))
    else:
        values = kwargs.get("value_set") or []
        try:
            value_set = pa.array(values).cast(column.type) if values else pa.array([], column.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise DefinitionError(f"{where}: value_set {values!r} cannot be compared with column values of type "
                                  f"{column.type}") from exc
        inside = pc.is_in(column, value_set=value_set)
        bad = pc.invert(inside) if kind == "expect_column_values_to_be_in_set" else inside
    return pc.and_(pc.fill_null(bad, False), pc.invert(missing))


def check_rows(signal: Signal, rows: pa.Table) -> None:
    """ValidationFailedError naming the first row-level expectation ``rows`` fail (with the rows that broke it)."""
    for expectation in signal.expectations:
        kind, kwargs = expectation["type"], expectation["kwargs"]
        if kind not in ROW_LEVEL or kwargs.get("column") not in rows.column_names:
            continue
        what = describe_expectation(expectation)
        where = f"signal {signal.name}: expectation {what}"
        column = rows.column(kwargs["column"])
        bad = _unexpected(kind, kwargs, column, where)
        unexpected = int(pc.sum(bad).as_py() or 0)
        if not unexpected:
            continue
        considered = len(column) if kind == "expect_column_values_to_not_be_null" else \
            len(column) - int(pc.sum(_missing(column, kind)).as_py() or 0)
        mostly = float(kwargs.get("mostly", 1.0))
        if considered and (considered - unexpected) / considered >= mostly:
            continue
        index = pc.indices_nonzero(bad.combine_chunks())[:EXAMPLES].to_pylist()
        key = signal.entity.join_key
        examples = [{"row": i, **({key: rows.column(key)[i].as_py()} if key in rows.column_names else {}),
                     kwargs["column"]: _plain(column[i].as_py())} for i in index]
        shown = "; ".join(" ".join(f"{k}={v}" for k, v in e.items()) for e in examples)
        raise ValidationFailedError(
            f"{where}: {unexpected} of {considered} pushed row(s) unexpected, e.g. {shown}; nothing was written",
            details={"expectation": expectation, "unexpected_count": unexpected, "element_count": len(column),
                     "unexpected_examples": examples})


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None                                      # NaN: JSON has no NaN
    return value.isoformat() if isinstance(value, datetime) else value
