"""Input checks before encoding: find each column, bring it to its UFR Arrow type, read the event times.

A column of a compatible type (int32 for Int64, float64 for Float32, large_string, list<double> for a
Vector...) is cast safely; anything else, or a cast that would lose data, is a ``SchemaError`` naming
the column.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quasar.signals.errors import SchemaError
from quasar.signals.ufr.types import FeatureType, IdList, Vector, WeightedIdList

_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def find_column(data: pa.Table | pa.RecordBatch, name: str, what: str) -> pa.Array:
    """The column ``name`` as one Arrow array; a ``SchemaError`` if it is missing or ambiguous."""
    indices = data.schema.get_all_field_indices(name)
    if not indices:
        raise SchemaError(f"{what} column {name!r} is missing; the data has columns {data.schema.names}")
    if len(indices) > 1:
        raise SchemaError(f"{what} column {name!r} appears {len(indices)} times in the data")
    column = data.column(indices[0])
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks()
    return column


def _family(t: pa.DataType) -> Any:
    """A coarse kind of an Arrow type: casts are only tried between types of one family."""
    if pa.types.is_dictionary(t):
        return _family(t.value_type)
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or pa.types.is_list_view(t) or pa.types.is_large_list_view(t)):
        return ("list", _family(t.value_type))
    if pa.types.is_struct(t):
        return ("struct", tuple((f.name, _family(f.type)) for f in t))
    return str(t)


def _has_floats(t: pa.DataType) -> bool:
    """Whether a type holds float values at any nesting depth."""
    if pa.types.is_floating(t):
        return True
    if pa.types.is_struct(t):
        return any(_has_floats(f.type) for f in t)
    value_type = getattr(t, "value_type", None)
    return value_type is not None and _has_floats(value_type)


def _nonfinite_floats(arr: pa.Array) -> int:
    """How many present float values (at any nesting depth) are NaN or infinite."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if isinstance(arr, pa.DictionaryArray):
        arr = arr.dictionary_decode()
    t = arr.type
    if pa.types.is_floating(t):
        finite = pc.sum(pc.is_finite(arr)).as_py() or 0
        return len(arr) - arr.null_count - finite
    if pa.types.is_struct(t):
        return sum(_nonfinite_floats(child) for child in arr.flatten())
    if getattr(t, "value_type", None) is not None:  # any list type
        return _nonfinite_floats(arr.flatten())
    return 0


def _cast(name: str, arr: pa.Array, ftype: FeatureType, target: pa.DataType) -> pa.Array:
    if _family(arr.type) != _family(target):
        raise SchemaError(f"feature column {name!r} has Arrow type {arr.type}, but the schema declares "
                          f"{ftype} ({target})")
    try:
        cast = arr.cast(target, safe=True)
    except _CAST_ERRORS as exc:
        raise SchemaError(f"feature column {name!r} of Arrow type {arr.type} cannot be cast safely to "
                          f"{ftype} ({target}): {exc}") from exc
    # Arrow's safe cast lets float64 -> float32 overflow to infinity; that loses data too.
    if _has_floats(target) and _nonfinite_floats(cast) > _nonfinite_floats(arr):
        raise SchemaError(f"feature column {name!r}: values of Arrow type {arr.type} overflow {target}")
    return cast


def _check_no_inner_nulls(name: str, arr: pa.Array, ftype: FeatureType) -> None:
    if isinstance(ftype, Vector):
        inner = [arr.flatten()]
        what = "a vector holds a null element (NaN is allowed; make the whole vector null instead)"
    elif isinstance(ftype, IdList):
        inner = [pc.list_flatten(arr)]
        what = "an id list holds a null id (drop it, or make the whole list null)"
    elif isinstance(ftype, WeightedIdList):
        flat = pc.list_flatten(arr)
        inner = [flat, *flat.flatten()]
        what = "a weighted id list holds a null element, id or weight"
    else:
        return
    if any(part.null_count for part in inner):
        raise SchemaError(f"feature column {name!r}: {what}")


def coerce_feature(name: str, arr: pa.Array, ftype: FeatureType) -> pa.Array:
    """``arr`` as exactly ``ftype.arrow_type()``, with no nulls inside lists or vectors."""
    target = ftype.arrow_type()
    if arr.type != target:
        arr = _cast(name, arr, ftype, target)
    _check_no_inner_nulls(name, arr, ftype)
    return arr


def event_times_us(data: pa.Table | pa.RecordBatch, column: str) -> np.ndarray:
    """The event time column as int64 microseconds since the epoch (naive timestamps are taken as UTC)."""
    arr = find_column(data, column, "event time")
    t = arr.type
    try:
        if pa.types.is_timestamp(t):
            arr = arr.cast(pa.timestamp("us", tz=t.tz), safe=True).cast(pa.int64())
        elif pa.types.is_integer(t):
            arr = arr.cast(pa.int64(), safe=True)
        else:
            raise SchemaError(f"event time column {column!r} has Arrow type {t}; give timestamp[us, UTC] "
                              "or int64 microseconds since the epoch")
    except _CAST_ERRORS as exc:
        raise SchemaError(f"event time column {column!r} of Arrow type {t} cannot be read as int64 "
                          f"microseconds: {exc}") from exc
    if arr.null_count:
        raise SchemaError(f"event time column {column!r} has {arr.null_count} null value(s); every record "
                          "needs an event time")
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)
