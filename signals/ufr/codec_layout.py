"""The UFR record layout of a schema, and the numpy gather/scatter steps both codec directions share.

A record is ``header | validity bitmap | fixed section | variable section``. Everything up to the end
of the fixed section has one size per schema, and every variable payload's length sits in the fixed
section, so a batch of records can be taken apart with offset arithmetic alone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from quasar.signals.errors import SchemaError
from quasar.signals.ufr.schema import FeatureSchema
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

FORMAT_VERSION = 2  # 2: the header holds the created time too
MAGIC = 0x51  # b"Q"
FINGERPRINT_OFFSET = 2
EVENT_TIME_OFFSET = 10
CREATED_TIME_OFFSET = 18
HEADER_SIZE = 26
COUNT_DTYPE = np.dtype("<u4")
_MAX_COUNT = int(np.iinfo(np.uint32).max)

_SCALAR_DTYPES: dict[type[FeatureType], np.dtype[Any]] = {
    Int64: np.dtype("<i8"), Float32: np.dtype("<f4"), Float64: np.dtype("<f8"), Timestamp: np.dtype("<i8"),
}


@dataclass(frozen=True)
class Slot:
    """Where one feature lives in a record.

    ``kind`` is one of ``bool``, ``scalar``, ``vector`` (fixed-width values in the fixed section) or
    ``string``, ``ids``, ``weighted`` (a uint32 count in the fixed section, payload in the variable one).
    ``segments`` lists the item sizes of the variable payloads, in record order (ids then weights).
    """

    name: str
    ftype: FeatureType
    index: int
    kind: str
    offset: int
    width: int
    dtype: np.dtype[Any]
    segments: tuple[int, ...] = ()


@dataclass(frozen=True)
class Layout:
    """The byte layout of one schema's records."""

    fingerprint: bytes
    n_features: int
    bitmap_size: int
    fixed_size: int  # header + bitmap + fixed section: the size of every record without payloads
    slots: tuple[Slot, ...]
    arrow_schema: pa.Schema


def _slot(name: str, ftype: FeatureType, index: int, offset: int) -> Slot:
    if isinstance(ftype, Bool):
        return Slot(name, ftype, index, "bool", offset, 1, np.dtype("u1"))
    if type(ftype) in _SCALAR_DTYPES:
        dtype = _SCALAR_DTYPES[type(ftype)]
        return Slot(name, ftype, index, "scalar", offset, dtype.itemsize, dtype)
    if isinstance(ftype, Vector):
        dtype = ftype.element_numpy_dtype
        return Slot(name, ftype, index, "vector", offset, ftype.dim * dtype.itemsize, dtype)
    if isinstance(ftype, String):
        return Slot(name, ftype, index, "string", offset, COUNT_DTYPE.itemsize, np.dtype("u1"), (1,))
    if isinstance(ftype, IdList):
        return Slot(name, ftype, index, "ids", offset, COUNT_DTYPE.itemsize, np.dtype("<i8"), (8,))
    if isinstance(ftype, WeightedIdList):
        return Slot(name, ftype, index, "weighted", offset, COUNT_DTYPE.itemsize, np.dtype("<i8"), (8, 4))
    raise TypeError(f"the UFR codec has no layout for feature type {ftype!r} of feature {name!r}")


@functools.lru_cache(maxsize=256)
def layout_of(schema: FeatureSchema) -> Layout:
    """The layout of ``schema``'s records (cached: schemas are frozen and hashable)."""
    n = len(schema)
    bitmap_size = (n + 7) // 8
    offset = HEADER_SIZE + bitmap_size
    slots = []
    for index, (name, ftype) in enumerate(schema.fields):
        slot = _slot(name, ftype, index, offset)
        slots.append(slot)
        offset += slot.width
    return Layout(schema.fingerprint, n, bitmap_size, offset, tuple(slots), schema.arrow_schema())


def check_count(counts: np.ndarray, what: str) -> None:
    """Refuse lengths that do not fit the record's uint32 count field."""
    if counts.size and int(counts.max()) > _MAX_COUNT:
        raise SchemaError(f"{what}: a value holds {int(counts.max())} items, more than a UFR record can "
                          f"hold ({_MAX_COUNT})")


def exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    """``[0, c0, c0+c1, ...]`` without the grand total, as int64."""
    out = np.zeros(len(counts), dtype=np.int64)
    if len(counts) > 1:
        np.cumsum(counts[:-1], out=out[1:])
    return out


def item_positions(starts: np.ndarray, counts: np.ndarray, itemsize: int) -> np.ndarray:
    """Byte positions of every item: row ``i`` holds ``counts[i]`` items of ``itemsize`` bytes from ``starts[i]``."""
    total = int(counts.sum())
    shift = starts.astype(np.int64) - itemsize * exclusive_cumsum(counts)
    positions = np.repeat(shift, counts)
    positions += itemsize * np.arange(total, dtype=np.int64)
    return positions


def gather_items(buf: np.ndarray, starts: np.ndarray, counts: np.ndarray, itemsize: int) -> np.ndarray:
    """Copy the items of every row out of ``buf`` into one contiguous uint8 array, rows in order."""
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, dtype=np.uint8)
    positions = item_positions(starts, counts, itemsize)
    if itemsize == 1:
        return buf[positions]
    # One index per item, not per byte: view buf as overlapping itemsize-byte windows.
    windows = np.lib.stride_tricks.sliding_window_view(buf, itemsize)
    return windows[positions].reshape(-1)


def scatter_items(out: np.ndarray, starts: np.ndarray, counts: np.ndarray, items: np.ndarray,
                  itemsize: int) -> None:
    """Write the contiguous ``items`` (uint8, rows in order) into ``out`` at each row's ``starts``."""
    total = int(counts.sum())
    if total == 0:
        return
    positions = item_positions(starts, counts, itemsize)
    if itemsize == 1:
        out[positions] = items
        return
    # Writable overlapping windows; the rows' target ranges are disjoint, so every byte is written once.
    windows = np.lib.stride_tricks.as_strided(out, shape=(len(out) - itemsize + 1, itemsize),
                                              strides=(out.strides[0], out.strides[0]), writeable=True)
    windows[positions] = items.reshape(total, itemsize)
