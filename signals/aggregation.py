"""Declarative windowed aggregations, computed by the store's engines.

Semantics (both engines follow them; tests compare against a Python reference):

* Rows are emitted every ``step``, at times ``T`` that are whole multiples of ``step`` since the
  Unix epoch and lie in the backfill window ``[start, end)``.
* The row stamped ``T`` aggregates the source rows of that entity with ``T - window <= ts < T``:
  strictly before ``T``, so a value stamped ``T`` never contains an event at or after ``T``.
* An entity gets a row at ``T`` when at least one of its source rows falls in the longest window, and one
  more row at the first step where the longest window has emptied (``T - window - step <= ts < T - window``
  for its latest event), so a quiet entity's last row says "nothing in the window" instead of leaving its
  last busy row to be served for a whole TTL. An event at ``ts`` therefore reaches the rows stamped
  ``ts < T <= ts + max_window + step`` (``reach``): a backfill recomputes that far past the days it replaces.
* Empty windows: ``count`` and ``sum`` are 0 (nothing happened: the additive identity, so "clicks in the
  last 7 days" of a quiet user is 0); ``mean``, ``min``, ``max``, ``last`` are null (they have no value
  over nothing). Nulls in the input column are ignored (``count`` of a column counts non-null values;
  ``sum`` adds the non-null values, 0 when there are none; ``count`` without a column counts rows). ``last`` takes the value of the latest ``ts``
  (ties: the larger value, so the result is deterministic).
* Types: ``count`` is Int64; ``mean`` Float64 (or Float32); ``sum`` Int64 for integer and boolean columns, a
  float type for float columns; ``min``, ``max`` and ``last`` keep the column's type (numbers, booleans,
  timestamps, strings). A declared ``dtype`` must hold every value exactly: a float result stored as Int64
  that is not a whole number is refused with an error naming the value, never rounded or truncated (both
  engines). Float32 results are the Float64 result rounded to nearest, identically on both engines.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from quasar.signals.durations import format_duration, parse_duration
from quasar.signals.errors import DefinitionError
from quasar.signals.ufr.schema import check_name
from quasar.signals.ufr.types import (
    FeatureType,
    Float32,
    Float64,
    Int64,
    String,
    check_feature_type,
    feature_type_from_dict,
)

AGG_FUNCTIONS = ("count", "sum", "mean", "min", "max", "last")


#: The dtypes a function's result can be stored in exactly (min, max and last keep their column's type, so
#: any scalar or String fits; whether the column's values fit is checked when they are computed).
_DTYPES: dict[str, tuple[type[FeatureType], ...]] = {
    "count": (Int64,), "sum": (Int64, Float64, Float32), "mean": (Float64, Float32),
}


def reach(step: timedelta, max_window: timedelta) -> timedelta:
    """How far after an event its aggregation rows reach: the longest window, plus the step where it empties."""
    return max_window + step


@dataclass(frozen=True, kw_only=True)
class Aggregation:
    """One aggregated feature: ``Aggregation(function="mean", column="dwell", window="7d")``.

    ``name`` defaults to ``<column>_<function>_<window>`` (``count_<window>`` for a row count);
    ``dtype`` defaults to Int64 for count and Float64 otherwise.
    """

    function: str
    window: timedelta
    column: str | None = None
    name: str = ""
    dtype: FeatureType | None = None

    def __post_init__(self) -> None:
        if self.function not in AGG_FUNCTIONS:
            raise DefinitionError(f"aggregation function {self.function!r} is unknown; "
                                  f"use one of {', '.join(AGG_FUNCTIONS)}")
        window = parse_duration(self.window, "aggregation window")  # type: ignore[arg-type]
        object.__setattr__(self, "window", window)
        if self.column is None and self.function != "count":
            raise DefinitionError(f"aggregation {self.function!r} needs a column")
        if self.column is not None:
            check_name(self.column, "aggregation column")
        if not self.name:
            stem = self.column if self.column else "count"
            fn = "" if self.column is None else f"_{self.function}"
            object.__setattr__(self, "name", f"{stem}{fn}_{format_duration(self.window)}")
        check_name(self.name, "aggregation")
        dtype = self.dtype if self.dtype is not None else (Int64() if self.function == "count" else Float64())
        check_feature_type(dtype, f"aggregation {self.name!r} dtype")
        allowed = _DTYPES.get(self.function)
        if allowed is not None and not isinstance(dtype, allowed):
            names = " or ".join(f"{t.__name__}()" for t in allowed)
            raise DefinitionError(f"aggregation {self.name!r}: a {self.function} is stored as {names}, not {dtype} "
                                  "(values are never rounded or truncated to fit a dtype)")
        if not (dtype.is_scalar or isinstance(dtype, String)):
            raise DefinitionError(f"aggregation {self.name!r}: dtype must be a scalar type or String, got {dtype}")
        object.__setattr__(self, "dtype", dtype)

    def to_dict(self) -> dict[str, Any]:
        assert self.dtype is not None
        return {"function": self.function, "column": self.column, "window": format_duration(self.window),
                "name": self.name, "dtype": self.dtype.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Aggregation:
        return cls(function=data["function"], column=data.get("column"), window=data["window"],
                   name=data.get("name", ""), dtype=feature_type_from_dict(data["dtype"]))


def count(window: str | timedelta, column: str | None = None, name: str = "") -> Aggregation:
    return Aggregation(function="count", column=column, window=window, name=name)  # type: ignore[arg-type]


def sum_(column: str, window: str | timedelta, name: str = "", dtype: FeatureType | None = None) -> Aggregation:
    return Aggregation(function="sum", column=column, window=window, name=name, dtype=dtype)  # type: ignore[arg-type]


def mean(column: str, window: str | timedelta, name: str = "") -> Aggregation:
    return Aggregation(function="mean", column=column, window=window, name=name)  # type: ignore[arg-type]


def min_(column: str, window: str | timedelta, name: str = "", dtype: FeatureType | None = None) -> Aggregation:
    return Aggregation(function="min", column=column, window=window, name=name, dtype=dtype)  # type: ignore[arg-type]


def max_(column: str, window: str | timedelta, name: str = "", dtype: FeatureType | None = None) -> Aggregation:
    return Aggregation(function="max", column=column, window=window, name=name, dtype=dtype)  # type: ignore[arg-type]


def last(column: str, window: str | timedelta, name: str = "", dtype: FeatureType | None = None) -> Aggregation:
    return Aggregation(function="last", column=column, window=window, name=name, dtype=dtype)  # type: ignore[arg-type]
