"""The UFR feature type an Arrow type stands for, for tables that arrive without a registry schema."""

from __future__ import annotations

import pyarrow as pa

from quasar.signals.errors import SchemaError
from quasar.signals.ufr.types import (
    Bool,
    FeatureType,
    Float32,
    Float64,
    IdList,
    Int64,
    String,
    Timestamp,
    Vector,
    WeightedIdList,
)


def infer_feature_type(arrow_type: pa.DataType, column: str = "") -> FeatureType:
    """``fixed_size_list<float32>[16]`` -> ``Vector(16)``, ``list<int64>`` -> ``IdList()``, and so on."""
    t = arrow_type
    if pa.types.is_boolean(t):
        return Bool()
    if pa.types.is_integer(t):
        return Int64()
    if pa.types.is_float32(t):
        return Float32()
    if pa.types.is_float64(t):
        return Float64()
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return String()
    if pa.types.is_timestamp(t):
        return Timestamp()
    if pa.types.is_fixed_size_list(t) and (pa.types.is_float32(t.value_type) or pa.types.is_float16(t.value_type)):
        return Vector(t.list_size, "float16" if pa.types.is_float16(t.value_type) else "float32")
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        v = t.value_type
        if pa.types.is_integer(v):
            return IdList()
        if pa.types.is_struct(v) and {v.field(i).name for i in range(v.num_fields)} == {"id", "weight"}:
            return WeightedIdList()
    raise SchemaError(f"column {column!r}: no UFR feature type for Arrow type {arrow_type}")
