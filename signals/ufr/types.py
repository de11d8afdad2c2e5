"""UFR feature types: one type drives the Arrow type, the Iceberg type, the online codec and tensors.

Every value of every type may be missing; missing is an Arrow null, never a silent 0.
Inside list types elements are never null (an id list holds ids; a vector holds floats, NaN allowed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from quasar.signals.errors import DefinitionError

#: Arrow timestamp type used for every event/created timestamp and Timestamp feature.
TIMESTAMP_ARROW = pa.timestamp("us", tz="UTC")
#: Arrow type of one WeightedIdList element.
WEIGHTED_ID_STRUCT = pa.struct([pa.field("id", pa.int64(), nullable=False),
                                pa.field("weight", pa.float32(), nullable=False)])

IdAllocator = Callable[[], int]


@dataclass(frozen=True, kw_only=True)
class FeatureType:
    """Base of the UFR feature types."""

    kind: ClassVar[str] = ""
    #: numpy dtype of one scalar value (fixed-width scalars) or of one element (lists, vectors).
    numpy_dtype: ClassVar[np.dtype[Any] | None] = None

    def arrow_type(self) -> pa.DataType:
        raise NotImplementedError

    def iceberg_type(self, next_id: IdAllocator) -> Any:
        """The pyiceberg type; ``next_id`` allocates ids for nested fields."""
        raise NotImplementedError

    @property
    def is_scalar(self) -> bool:
        """True for one fixed-width number per row (Bool, Int64, Float32, Float64, Timestamp)."""
        return False

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> FeatureType:
        return feature_type_from_dict(data)

    def __str__(self) -> str:
        return self.kind


@dataclass(frozen=True, kw_only=True)
class _Scalar(FeatureType):
    @property
    def is_scalar(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class Bool(_Scalar):
    kind: ClassVar[str] = "bool"
    numpy_dtype: ClassVar[np.dtype[Any] | None] = np.dtype("bool")

    def arrow_type(self) -> pa.DataType:
        return pa.bool_()

    def iceberg_type(self, next_id: IdAllocator) -> Any:
        from pyiceberg.types import BooleanType
        return BooleanType()


@dataclass(frozen=True, kw_only=True)
class Int64(_Scalar):
    kind: ClassVar[str] = "int64"
    numpy_dtype: ClassVar[np.dtype[Any] | None] = np.dtype("<i8")

    def arrow_type(self) -> pa.DataType:
        return pa.int64()

    def iceberg_type(self, next_id: IdAllocator) -> Any:
        from pyiceberg.types import LongType
        return LongType()


@dataclass(frozen=True, kw_only=True)
class Float32(_Scalar):
    kind: ClassVar[str] = "float32"
    numpy_dtype: ClassVar[np.dtype[Any] | None] = np.dtype("<f4")

    def arrow_type(self) -> pa.DataType:
        return pa.float32()

    def iceberg_type(self, next_id: IdAllocator) -> Any:
        from pyiceberg.types import FloatType
        return FloatType()


@dataclass(frozen=True, kw_only=True)
class Float64(_Scalar):
    kind: ClassVar[str] = "float64"
    numpy_dtype: ClassVar[np.dtype[Any] | None] = np.dtype("<f8")

    def arrow_type(self) -> pa.DataType:
        return pa.float64()

    def iceberg_type(self, next_id: IdAllocator) -> Any:
        from pyiceberg.types import DoubleType
        return DoubleType()


@dataclass(frozen=True, kw_only=True)
class Timestamp(_Scalar):
    """A point in time, microseconds since the epoch, UTC."""

    kind: ClassVar[str] = "timestamp"
    numpy_dtype: ClassVar[np.dtype[Any] | None] = np.dtype("<i8")

    def arrow_type(self) -> pa.DataType:
        return TIMESTAMP_ARROW

    def iceberg_type(self, next_id: IdAllocator) -> Any:
        from pyiceberg.types import TimestamptzType
        return TimestamptzType()


@dataclass(frozen=True, kw_only=True)
class String(FeatureType):
    """UTF-8 text."""

    kind: ClassVar[str] = "string"

    def arrow_type(self) -> pa.DataType:
        return pa.string()

    def iceberg_type(self, next_id: IdAllocator) -> Any:
        from pyiceberg.types import StringType
        return StringType()


_VECTOR_DTYPES: dict[str, tuple[pa.DataType, np.dtype[Any]]] = {"float32": (pa.float32(), np.dtype("<f4")), "float16": (pa.float16(), np.dtype("<f2"))}


@dataclass(frozen=True)
class Vector(FeatureType):
    """A dense embedding of ``dim`` float32 (or float16) values: ``Vector(16)``, ``Vector(64, "float16")``.

    Arrow: ``fixed_size_list<dtype>[dim]``. Iceberg has neither fixed sizes nor float16, so the
    offline table holds ``list<float>``; the dim and dtype live in the registry and are restored on read
    (float16 -> float32 -> float16 is exact).
    """

    dim: int
    dtype: str = "float32"
    kind: ClassVar[str] = "vector"

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or isinstance(self.dim, bool) or self.dim <= 0:
            raise DefinitionError(f"Vector dim must be a positive int, got {self.dim!r}")
        if self.dtype not in _VECTOR_DTYPES:
            raise DefinitionError(f"Vector dtype must be one of {sorted(_VECTOR_DTYPES)}, got {self.dtype!r}")

    @property
    def element_numpy_dtype(self) -> np.dtype[Any]:
        return _VECTOR_DTYPES[self.dtype][1]

    def arrow_type(self) -> pa.DataType:
        return pa.list_(pa.field("item", _VECTOR_DTYPES[self.dtype][0], nullable=False), self.dim)

    def iceberg_type(self, next_id: IdAllocator) -> Any:
        from pyiceberg.types import FloatType, ListType
        return ListType(element_id=next_id(), element_type=FloatType(), element_required=True)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "dim": self.dim, "dtype": self.dtype}

    def __str__(self) -> str:
        return f"vector({self.dim}, {self.dtype})"


@dataclass(frozen=True, kw_only=True)
class IdList(FeatureType):
    """A variable-length list of int64 ids (e.g. recent pins), ready for ``nn.EmbeddingBag``."""

    kind: ClassVar[str] = "id_list"
    numpy_dtype: ClassVar[np.dtype[Any] | None] = np.dtype("<i8")

    def arrow_type(self) -> pa.DataType:
        return pa.list_(pa.field("item", pa.int64(), nullable=False))

    def iceberg_type(self, next_id: IdAllocator) -> Any:
        from pyiceberg.types import ListType, LongType
        return ListType(element_id=next_id(), element_type=LongType(), element_required=True)


@dataclass(frozen=True, kw_only=True)
class WeightedIdList(FeatureType):
    """A variable-length list of (int64 id, float32 weight) pairs."""

    kind: ClassVar[str] = "weighted_id_list"

    def arrow_type(self) -> pa.DataType:
        return pa.list_(pa.field("item", WEIGHTED_ID_STRUCT, nullable=False))

    def iceberg_type(self, next_id: IdAllocator) -> Any:
        from pyiceberg.types import FloatType, ListType, LongType, NestedField, StructType
        element_id = next_id()
        struct = StructType(
            NestedField(field_id=next_id(), name="id", field_type=LongType(), required=True),
            NestedField(field_id=next_id(), name="weight", field_type=FloatType(), required=True),
        )
        return ListType(element_id=element_id, element_type=struct, element_required=True)


_SIMPLE_TYPES: dict[str, type[FeatureType]] = {
    t.kind: t for t in (Bool, Int64, Float32, Float64, String, Timestamp, IdList, WeightedIdList)
}
FEATURE_KINDS = (*_SIMPLE_TYPES, Vector.kind)


def feature_type_from_dict(data: dict[str, Any]) -> FeatureType:
    """Rebuild a feature type from ``to_dict`` output."""
    if not isinstance(data, dict) or "type" not in data:
        raise DefinitionError(f"not a feature type: {data!r}")
    kind = data["type"]
    if kind == Vector.kind:
        return Vector(int(data["dim"]), str(data.get("dtype", "float32")))
    if kind not in _SIMPLE_TYPES:
        raise DefinitionError(f"unknown feature type {kind!r}; known: {', '.join(FEATURE_KINDS)}")
    return _SIMPLE_TYPES[kind]()


def check_feature_type(value: object, where: str) -> FeatureType:
    """Return ``value`` if it is a feature type instance; else a DefinitionError naming ``where``."""
    if isinstance(value, FeatureType) and type(value) is not FeatureType and type(value) is not _Scalar:
        return value
    if isinstance(value, type) and issubclass(value, FeatureType):
        raise DefinitionError(f"{where}: feature type must be an instance, e.g. {value.__name__}(), "
                              f"not the class {value.__name__}")
    raise DefinitionError(f"{where}: {value!r} is not a feature type; "
                          f"use one of Bool, Int64, Float32, Float64, String, Vector(dim), IdList, "
                          f"WeightedIdList, Timestamp")
