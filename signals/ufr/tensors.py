"""The UFR torch batch builder: Arrow rows -> ``FeatureBatch`` of tensors, the same for training and serving.

Conversion is columnar: Arrow buffers are viewed as numpy arrays (zero-copy where the buffer allows it)
and handed to ``torch.from_numpy``; only strings become Python objects. Missing is explicit: every
feature has a presence mask, and a missing slot holds zeros (an empty bag for id lists), never garbage.
Tensors may share memory with the input Arrow buffers, like ``torch.from_numpy``: do not write to them in
place. This is the only module of ``signals`` that imports torch; import it only where torch is wanted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from quasar.signals.errors import DefinitionError, SchemaError
from quasar.signals.ufr.schema import FeatureSchema
from quasar.signals.ufr.types import (
    WEIGHTED_ID_STRUCT,
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
    check_feature_type,
    feature_type_from_dict,
)

__all__ = ["FeatureBatch", "IdListTensor", "InputSpec", "build_feature_batch", "collate_feature_batches",
           "feature_batch_to_arrow", "split_feature_batch"]

_DENSE_TYPES = (Bool, Int64, Float32, Float64)
_SCALAR_NUMPY: dict[type[FeatureType], np.dtype[Any]] = {
    Bool: np.dtype(np.bool_), Int64: np.dtype(np.int64), Float32: np.dtype(np.float32),
    Float64: np.dtype(np.float64), Timestamp: np.dtype(np.int64),
}


# ----------------------------------------------------------------------------------------------- spec
@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """The exact UFR input a model was trained on: ordered (column, FeatureType) pairs and which scalar
    columns form the dense block. Round-trips through to_dict/from_dict (JSON-safe), so a model bundle can
    record it."""

    features: tuple[tuple[str, FeatureType], ...]
    dense: tuple[str, ...] | None = None   # None -> every scalar numeric feature (Bool, Int64, Float32, Float64)

    def __post_init__(self) -> None:
        pairs: list[tuple[str, FeatureType]] = []
        for item in self.features:
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise DefinitionError(f"InputSpec features: expected (column, FeatureType) pairs, got {item!r}")
            name, ftype = item
            if not isinstance(name, str) or not name:
                raise DefinitionError(f"InputSpec features: column name must be a non-empty string, got {name!r}")
            if any(name == n for n, _ in pairs):
                raise DefinitionError(f"InputSpec features: column {name!r} appears twice")
            pairs.append((name, check_feature_type(ftype, f"InputSpec feature {name!r}")))
        object.__setattr__(self, "features", tuple(pairs))
        if self.dense is None:
            return
        if isinstance(self.dense, str):
            raise DefinitionError(f"InputSpec dense: give a sequence of column names, not the string {self.dense!r}")
        types = dict(pairs)
        dense = tuple(self.dense)
        for name in dense:
            if name not in types:
                raise DefinitionError(f"InputSpec dense column {name!r} is not one of the spec's features")
            if not isinstance(types[name], _DENSE_TYPES):
                raise DefinitionError(f"InputSpec dense column {name!r} is {types[name]}; the dense block takes "
                                      "only bool, int64, float32 and float64 features")
            if dense.count(name) > 1:
                raise DefinitionError(f"InputSpec dense column {name!r} appears twice")
        object.__setattr__(self, "dense", dense)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.features]

    @property
    def dense_columns(self) -> tuple[str, ...]:
        """The dense block's columns, in order (the explicit list, or every scalar numeric feature)."""
        if self.dense is not None:
            return self.dense
        return tuple(n for n, t in self.features if isinstance(t, _DENSE_TYPES))

    def type_of(self, name: str) -> FeatureType:
        for n, t in self.features:
            if n == name:
                return t
        raise KeyError(name)

    @classmethod
    def from_schema(cls, schema: FeatureSchema, dense: Sequence[str] | None = None) -> InputSpec:
        return cls(features=tuple(schema.fields), dense=None if dense is None else tuple(dense))

    def to_dict(self) -> dict[str, Any]:
        return {"features": [{"name": n, **t.to_dict()} for n, t in self.features],
                "dense": None if self.dense is None else list(self.dense)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        if not isinstance(d, dict) or not isinstance(d.get("features"), list):
            raise DefinitionError(f"not an InputSpec dict: {d!r}")
        features = tuple((f["name"], feature_type_from_dict({k: v for k, v in f.items() if k != "name"}))
                         for f in d["features"])
        dense = d.get("dense")
        return cls(features=features, dense=None if dense is None else tuple(dense))


# ---------------------------------------------------------------------------------------------- batch
@dataclass
class IdListTensor:
    """A batch of id bags as ``nn.EmbeddingBag`` wants them: flat ids and the start of each bag."""

    values: torch.Tensor                    # int64 [N]
    offsets: torch.Tensor                   # int64 [B]
    weights: torch.Tensor | None = None     # float32 [N], WeightedIdList only

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> IdListTensor:
        return IdListTensor(values=fn(self.values), offsets=fn(self.offsets),
                            weights=None if self.weights is None else fn(self.weights))

    def bounds(self) -> list[int]:
        """Bag boundaries as B+1 Python ints (the last one is the number of ids)."""
        return [*self.offsets.tolist(), int(self.values.shape[0])]


@dataclass
class FeatureBatch:
    """One batch of rows as tensors: the dense block, per-feature tensors and presence masks."""

    size: int
    dense: torch.Tensor                      # float32 [B, D]; a missing value is 0 and its mask False
    dense_names: list[str]
    dense_mask: torch.Tensor                 # bool [B, D]
    scalars: dict[str, torch.Tensor] = field(default_factory=dict)      # [B] at the exact dtype
    vectors: dict[str, torch.Tensor] = field(default_factory=dict)      # [B, dim] float32 / float16
    id_lists: dict[str, IdListTensor] = field(default_factory=dict)     # missing -> empty bag
    strings: dict[str, list[str | None]] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)        # bool [B] for every feature

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> FeatureBatch:
        return FeatureBatch(size=self.size, dense=fn(self.dense), dense_names=list(self.dense_names),
                            dense_mask=fn(self.dense_mask),
                            scalars={k: fn(v) for k, v in self.scalars.items()},
                            vectors={k: fn(v) for k, v in self.vectors.items()},
                            id_lists={k: v._map(fn) for k, v in self.id_lists.items()},
                            strings={k: list(v) for k, v in self.strings.items()},
                            masks={k: fn(v) for k, v in self.masks.items()})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> FeatureBatch:
        """A copy on ``device`` (strings stay Python lists)."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> FeatureBatch:
        """A copy in page-locked memory for fast ``non_blocking`` copies; unchanged where no accelerator
        exists (pinning needs one)."""
        if not _accelerator_available():
            return self
        return self._map(lambda t: t.pin_memory())


def _accelerator_available() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return bool(accelerator.is_available())
    return bool(torch.cuda.is_available())


# ------------------------------------------------------------------------------ Arrow type conformance
def _is_list_like(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_exact_float(src: pa.DataType, dtype: str) -> bool:
    """True when every ``src`` float is exactly representable in ``dtype``."""
    if dtype == "float16":
        return pa.types.is_float16(src)
    if dtype == "float32":
        return pa.types.is_float16(src) or pa.types.is_float32(src)
    return pa.types.is_floating(src)


def _castable(src: pa.DataType, ftype: FeatureType) -> bool:
    """Whether a column of Arrow type ``src`` can be read exactly as ``ftype`` (value checks happen on cast)."""
    if pa.types.is_null(src):
        return True                                      # an all-null column is missing everywhere
    if pa.types.is_dictionary(src):
        return _castable(src.value_type, ftype)
    if isinstance(ftype, Bool):
        return pa.types.is_boolean(src)
    if isinstance(ftype, Int64):
        return pa.types.is_integer(src)                  # uint64 overflow is caught by the safe cast
    if isinstance(ftype, Float32 | Float64):
        return _is_exact_float(src, "float32" if isinstance(ftype, Float32) else "float64")
    if isinstance(ftype, Timestamp):
        return pa.types.is_timestamp(src)                # naive is UTC; lost sub-microseconds are caught
    if isinstance(ftype, String):
        return pa.types.is_string(src) or pa.types.is_large_string(src) or pa.types.is_string_view(src)
    if not _is_list_like(src):
        return False
    item = src.value_type
    if isinstance(ftype, Vector):
        if pa.types.is_fixed_size_list(src) and src.list_size != ftype.dim:
            return False
        return _is_exact_float(item, ftype.dtype)
    if isinstance(ftype, IdList):
        return pa.types.is_integer(item)
    if isinstance(ftype, WeightedIdList) and pa.types.is_struct(item):
        kids = {item.field(i).name: item.field(i).type for i in range(item.num_fields)}
        return (set(kids) == {"id", "weight"} and pa.types.is_integer(kids["id"])
                and _is_exact_float(kids["weight"], "float32"))
    return False


def _has_nulls(arr: pa.Array) -> bool:
    if arr.null_count:
        return True
    return pa.types.is_struct(arr.type) and any(f.null_count for f in arr.flatten())


def _check_elements(name: str, arr: pa.Array, ftype: FeatureType) -> None:
    """Elements of present lists and vectors are never null (the UFR contract)."""
    if not _is_list_like(arr.type) or not _has_nulls(arr.values):
        return                                   # fast path: no null anywhere in the child
    if _has_nulls(arr.flatten()):                # only the elements of present rows count
        raise SchemaError(f"column {name!r} ({ftype}): a present row holds a null element; "
                          "ids, weights and vector values cannot be null (make the whole row null instead)")


def _conform(name: str, arr: pa.Array, ftype: FeatureType) -> pa.Array:
    """``arr`` as exactly ``ftype.arrow_type()``, through exact-preserving casts only."""
    target = ftype.arrow_type()
    _check_elements(name, arr, ftype)
    if arr.type != target:
        if not _castable(arr.type, ftype):
            raise SchemaError(f"column {name!r} has Arrow type {arr.type}, which cannot be read exactly as "
                              f"{ftype} (Arrow type {target})")
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        try:
            arr = pc.cast(arr, target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise SchemaError(f"column {name!r}: its {arr.type} values cannot be read exactly as {ftype}: "
                              f"{exc}") from exc
    return arr


# ----------------------------------------------------------------------------------- Arrow -> numpy
def _primitive(arr: pa.Array, dtype: np.dtype[Any], own: bool = False) -> np.ndarray:
    """The values of a fixed-width (non-bool) array, offset respected; null slots hold 0.

    Zero-copy when there are no nulls, the buffer is writable (so torch can share it without a warning)
    and ``own`` (the caller will write to the result) is not asked; otherwise one copy."""
    n = len(arr)
    if n == 0:
        return np.empty(0, dtype)
    view = np.frombuffer(arr.buffers()[1], dtype=dtype, count=n, offset=arr.offset * dtype.itemsize)
    if arr.null_count == 0 and view.flags.writeable and not own:
        return view
    out = view.copy()                            # never write into Arrow's memory
    if arr.null_count:
        out[~_valid(arr)] = 0
    return out


def _valid(arr: pa.Array) -> np.ndarray:
    """Presence of each row as a writable numpy bool array."""
    if arr.null_count == 0:
        return np.ones(len(arr), np.bool_)
    return np.array(pc.is_valid(arr).to_numpy(zero_copy_only=False), dtype=np.bool_, copy=True)


def _bools(arr: pa.Array) -> np.ndarray:
    filled = pc.fill_null(arr, False) if arr.null_count else arr
    return np.array(filled.to_numpy(zero_copy_only=False), dtype=np.bool_, copy=True)


def _scalar(arr: pa.Array, ftype: FeatureType) -> np.ndarray:
    if isinstance(ftype, Bool):
        return _bools(arr)
    return _primitive(arr, _SCALAR_NUMPY[type(ftype)])


def _vector(arr: pa.Array, ftype: Vector, valid: np.ndarray) -> np.ndarray:
    """[B, dim] values from the fixed_size_list child (the parent's offset respected); null rows are zeros."""
    dim, n = ftype.dim, len(arr)
    present = bool(valid.all())
    flat = _primitive(arr.values.slice(arr.offset * dim, n * dim), ftype.element_numpy_dtype, own=not present)
    out = flat.reshape(n, dim)
    if not present:
        out[~valid] = 0                          # a copy of ours, never Arrow's memory
    return out


def _id_bags(arr: pa.Array, ftype: FeatureType, valid: np.ndarray,
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(flat ids of present rows, start of each bag, weights or None); null rows are empty bags."""
    weighted = isinstance(ftype, WeightedIdList)
    n = len(arr)
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32) if weighted else None
    ends = _primitive(arr.offsets, np.dtype(np.int32)).astype(np.int64)       # B+1, slice-aware
    first, last = int(ends[0]), int(ends[-1])
    lengths = np.diff(ends)
    if not valid.all():
        lengths[~valid] = 0                                # a null row may still be backed by ids
    starts = np.zeros(n, np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    child = arr.values.slice(first, last - first)
    if weighted:
        id_arr, weight_arr = child.flatten()
        ids, weights = _primitive(id_arr, np.dtype(np.int64)), _primitive(weight_arr, np.dtype(np.float32))
    else:
        ids, weights = _primitive(child, np.dtype(np.int64)), None
    total = int(lengths.sum())
    if total != last - first:                              # drop the ids backing null rows
        take = np.repeat(ends[:-1] - first - starts, lengths) + np.arange(total, dtype=np.int64)
        ids = ids[take]
        weights = None if weights is None else weights[take]
    return ids, starts, weights


def _tensor(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(values if values.flags.writeable else values.copy())


def _column(data: pa.Table | pa.RecordBatch, name: str, ftype: FeatureType) -> pa.Array:
    names = data.schema.names
    if name not in names:
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise SchemaError(f"column {name!r} ({ftype}) is missing from the data; it has: {shown or 'no columns'}")
    if names.count(name) > 1:
        raise SchemaError(f"column {name!r} appears {names.count(name)} times in the data")
    col = data.column(name)
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            col = col.chunk(0)                   # zero-copy
        elif col.num_chunks == 0:
            col = pa.array([], col.type)
        else:
            col = col.combine_chunks()
    return _conform(name, col, ftype)


def build_feature_batch(data: pa.Table | pa.RecordBatch, spec: InputSpec) -> FeatureBatch:
    """The spec's columns of ``data`` as a FeatureBatch (columns by name; exact-preserving casts only)."""
    if not isinstance(data, pa.Table | pa.RecordBatch):
        raise SchemaError(f"build_feature_batch needs a pyarrow Table or RecordBatch, got {type(data).__name__}")
    n = data.num_rows
    batch = FeatureBatch(size=n, dense=torch.empty(0), dense_names=list(spec.dense_columns),
                         dense_mask=torch.empty(0))
    numeric: dict[str, np.ndarray] = {}
    valids: dict[str, np.ndarray] = {}
    for name, ftype in spec.features:
        arr = _column(data, name, ftype)
        valid = valids[name] = _valid(arr)
        if ftype.is_scalar:
            numeric[name] = _scalar(arr, ftype)
            batch.scalars[name] = _tensor(numeric[name])
        elif isinstance(ftype, Vector):
            batch.vectors[name] = _tensor(_vector(arr, ftype, valid))
        elif isinstance(ftype, IdList | WeightedIdList):
            ids, starts, weights = _id_bags(arr, ftype, valid)
            batch.id_lists[name] = IdListTensor(values=_tensor(ids), offsets=_tensor(starts),
                                                weights=None if weights is None else _tensor(weights))
        elif isinstance(ftype, String):
            batch.strings[name] = arr.to_pylist()
        else:                                    # pragma: no cover - every UFR type is handled above
            raise SchemaError(f"column {name!r}: no tensor form for {ftype}")
        batch.masks[name] = _tensor(valid)
    dense = np.zeros((n, len(batch.dense_names)), np.float32)
    dense_mask = np.zeros((n, len(batch.dense_names)), np.bool_)
    with np.errstate(over="ignore"):             # float64 beyond float32's range becomes +-inf, as in torch
        for j, name in enumerate(batch.dense_names):
            dense[:, j] = numeric[name]          # nulls are already 0
            dense_mask[:, j] = valids[name]
    batch.dense, batch.dense_mask = torch.from_numpy(dense), torch.from_numpy(dense_mask)
    return batch


# ----------------------------------------------------------------------------------- tensors -> Arrow
def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _validity(mask: np.ndarray) -> pa.Buffer | None:
    return None if mask.all() else pa.array(mask, pa.bool_()).buffers()[1]


def _fixed(arrow_type: pa.DataType, values: np.ndarray, mask: np.ndarray) -> pa.Array:
    data = pa.py_buffer(np.ascontiguousarray(values))
    return pa.Array.from_buffers(arrow_type, len(mask), [_validity(mask), data])


def _arrow_column(batch: FeatureBatch, name: str, ftype: FeatureType) -> pa.Array:
    if name not in batch.masks:
        raise SchemaError(f"the FeatureBatch has no feature {name!r}")
    mask = _numpy(batch.masks[name]).astype(np.bool_)
    null_mask = None if mask.all() else pa.array(~mask, pa.bool_())
    if isinstance(ftype, Bool):
        return pa.array(_numpy(batch.scalars[name]), pa.bool_(), mask=~mask)
    if ftype.is_scalar:
        return _fixed(ftype.arrow_type(), _numpy(batch.scalars[name]).astype(_SCALAR_NUMPY[type(ftype)]), mask)
    if isinstance(ftype, String):
        return pa.array(batch.strings[name], pa.string())
    if isinstance(ftype, Vector):
        flat = _numpy(batch.vectors[name]).reshape(-1)
        item = ftype.arrow_type().value_type
        return pa.FixedSizeListArray.from_arrays(_fixed(item, flat, np.ones(len(flat), np.bool_)),
                                                 type=ftype.arrow_type(), mask=null_mask)
    bags = batch.id_lists[name]
    ids = _numpy(bags.values).astype(np.int64)
    values = _fixed(pa.int64(), ids, np.ones(len(ids), np.bool_))
    if isinstance(ftype, WeightedIdList):
        if bags.weights is None:
            raise SchemaError(f"weighted id list {name!r} has no weights in the FeatureBatch")
        weights = _fixed(pa.float32(), _numpy(bags.weights).astype(np.float32), np.ones(len(ids), np.bool_))
        values = pa.StructArray.from_arrays([values, weights], fields=list(WEIGHTED_ID_STRUCT))
    ends = np.append(_numpy(bags.offsets).astype(np.int64), len(ids)).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(ends, pa.int32()), values, type=ftype.arrow_type(), mask=null_mask)


def feature_batch_to_arrow(batch: FeatureBatch, spec: InputSpec) -> pa.Table:
    """The inverse of ``build_feature_batch``: the spec's columns at their UFR Arrow types (tests, debugging)."""
    schema = pa.schema([pa.field(n, t.arrow_type(), nullable=True) for n, t in spec.features])
    return pa.Table.from_arrays([_arrow_column(batch, n, t) for n, t in spec.features], schema=schema)


# ------------------------------------------------------------------------------------ collate / split
def _layout(batch: FeatureBatch) -> tuple[Any, ...]:
    return (tuple(batch.dense_names), tuple(batch.scalars), tuple(batch.vectors), tuple(batch.strings),
            tuple(batch.masks), tuple((k, v.weights is None) for k, v in batch.id_lists.items()))


def collate_feature_batches(batches: Sequence[FeatureBatch]) -> FeatureBatch:
    """One batch of every row of ``batches``, in order (the scorer's dynamic batching)."""
    if not batches:
        raise SchemaError("collate_feature_batches needs at least one batch")
    first = batches[0]
    for i, b in enumerate(batches[1:], start=1):
        if _layout(b) != _layout(first):
            raise SchemaError(f"cannot collate: batch {i} has other features than batch 0 "
                              f"({_layout(b)} != {_layout(first)})")
    id_lists = {}
    for name, bags in first.id_lists.items():
        parts = [b.id_lists[name] for b in batches]
        shifts = np.cumsum([0] + [int(p.values.shape[0]) for p in parts[:-1]])
        id_lists[name] = IdListTensor(
            values=torch.cat([p.values for p in parts]),
            offsets=torch.cat([p.offsets + int(s) for p, s in zip(parts, shifts, strict=True)]),
            weights=None if bags.weights is None else torch.cat([p.weights for p in parts if p.weights is not None]))
    return FeatureBatch(
        size=sum(b.size for b in batches), dense=torch.cat([b.dense for b in batches]),
        dense_names=list(first.dense_names), dense_mask=torch.cat([b.dense_mask for b in batches]),
        scalars={k: torch.cat([b.scalars[k] for b in batches]) for k in first.scalars},
        vectors={k: torch.cat([b.vectors[k] for b in batches]) for k in first.vectors},
        id_lists=id_lists,
        strings={k: [s for b in batches for s in b.strings[k]] for k in first.strings},
        masks={k: torch.cat([b.masks[k] for b in batches]) for k in first.masks},
    )


def split_feature_batch(batch: FeatureBatch, sizes: Sequence[int]) -> list[FeatureBatch]:
    """Consecutive row ranges of ``batch`` of the given sizes (the inverse of collate; views, not copies)."""
    sizes = [int(s) for s in sizes]
    if any(s < 0 for s in sizes) or sum(sizes) != batch.size:
        raise SchemaError(f"split sizes {sizes} must be non-negative and sum to the batch's {batch.size} rows")
    bounds = {k: v.bounds() for k, v in batch.id_lists.items()}
    out, start = [], 0
    for n in sizes:
        stop = start + n

        def rows(t: torch.Tensor, a: int = start, b: int = stop) -> torch.Tensor:
            return t[a:b]

        id_lists = {}
        for k, bags in batch.id_lists.items():
            lo, hi = bounds[k][start], bounds[k][stop]
            id_lists[k] = IdListTensor(values=bags.values[lo:hi], offsets=bags.offsets[start:stop] - lo,
                                       weights=None if bags.weights is None else bags.weights[lo:hi])
        out.append(FeatureBatch(size=n, dense=rows(batch.dense), dense_names=list(batch.dense_names),
                                dense_mask=rows(batch.dense_mask),
                                scalars={k: rows(v) for k, v in batch.scalars.items()},
                                vectors={k: rows(v) for k, v in batch.vectors.items()}, id_lists=id_lists,
                                strings={k: v[start:stop] for k, v in batch.strings.items()},
                                masks={k: rows(v) for k, v in batch.masks.items()}))
        start = stop
    return out
