"""Decoding a request's worth of records (a few) by bytes slicing instead of numpy indexing.

``codec.decode`` sends batches of up to ``codec.SMALL_BATCH`` records here. The checks, their order and
their messages are ``codec.decode``'s, and the Arrow columns are built from the same buffers (float bits
copied, never converted), so both paths give identical tables; only the gathering differs, since numpy's
fixed cost per call dominates at this size.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import accumulate

import numpy as np
import pyarrow as pa

from quasar.signals.ordering import NULL_CREATED_US
from quasar.signals.ufr.codec import corrupt, fingerprint_mismatch, offsets_buffer, string_column
from quasar.signals.ufr.codec_layout import (
    CREATED_TIME_OFFSET,
    EVENT_TIME_OFFSET,
    FINGERPRINT_OFFSET,
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    Layout,
    Slot,
)
from quasar.signals.ufr.types import WEIGHTED_ID_STRUCT

_U32 = struct.Struct("<I")
_INT32_MAX = 2**31 - 1


def _bits(flags: Sequence[bool]) -> bytes:
    """LSB-first packed bits, as Arrow's validity and boolean buffers want them."""
    value = 0
    for i, flag in enumerate(flags):
        if flag:
            value |= 1 << i
    return value.to_bytes((len(flags) + 7) // 8, "little")


def _check(layout: Layout, records: Sequence[bytes | None], signal: str) -> list[int]:
    """``codec._read_fixed``'s checks in its order; returns the indexes of the present records."""
    present = [(i, r) for i, r in enumerate(records) if r is not None]
    rows = [i for i, _ in present]
    for i, r in present:
        if len(r) < HEADER_SIZE:
            raise corrupt(signal, i, f"{len(r)} bytes is shorter than the {HEADER_SIZE}-byte header")
    for i, r in present:
        if r[0] != MAGIC:
            raise corrupt(signal, i, f"first byte is 0x{r[0]:02x}, not the UFR magic 0x{MAGIC:02x}")
    for i, r in present:
        if r[1] != FORMAT_VERSION:
            raise corrupt(signal, i, f"format version {r[1]} is not the supported version {FORMAT_VERSION}")
    for i, r in present:
        if r[FINGERPRINT_OFFSET:EVENT_TIME_OFFSET] != layout.fingerprint:
            raise fingerprint_mismatch(signal, i, bytes(r[FINGERPRINT_OFFSET:EVENT_TIME_OFFSET]), layout)
    for i, r in present:
        if len(r) < layout.fixed_size:
            raise corrupt(signal, i, f"truncated: {len(r)} bytes is shorter than the {layout.fixed_size}-byte "
                                     "fixed part of this schema's records")
    return rows


def decode_small(layout: Layout, records: Sequence[bytes | None], signal: str, slots: Sequence[Slot],
                 arrow_schema: pa.Schema) -> tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(table of the features of ``slots`` (schema order; ``arrow_schema`` theirs), event times in µs (0 where
    absent), found, valid of those features, created times in µs (``NULL_CREATED_US`` where null or absent)) of
    a few records; see ``codec.decode``."""
    n = len(records)
    _check(layout, records, signal)
    zeros = bytes(layout.fixed_size)
    fixed = [zeros if r is None else r[:layout.fixed_size] for r in records]
    bitmaps = [int.from_bytes(f[HEADER_SIZE:HEADER_SIZE + layout.bitmap_size], "little") for f in fixed]
    valid = {s.index: [bool(b >> s.index & 1) for b in bitmaps] for s in layout.slots}
    counts: dict[int, list[int]] = {}
    for slot in layout.slots:
        if not slot.segments:
            continue
        count = [_U32.unpack_from(f, slot.offset)[0] for f in fixed]
        for i in range(n):
            if count[i] and not valid[slot.index][i]:
                raise corrupt(signal, i, f"feature {slot.name!r} is null but has a length of {count[i]}")
        counts[slot.index] = count
    for i, r in enumerate(records):
        if r is None:
            continue
        expected = layout.fixed_size + sum(counts[s.index][i] * size for s in layout.slots for size in s.segments)
        if expected != len(r):
            state = "truncated" if len(r) < expected else "too long"
            raise corrupt(signal, i, f"{state}: {len(r)} bytes, but its lengths say {expected}")
    cursor = [layout.fixed_size] * n
    arrow_types = layout.arrow_schema.types
    columns = []
    chosen = iter(slots)
    want = next(chosen, None)
    for slot in layout.slots:
        if slot is want:
            columns.append(_column(slot, arrow_types, fixed, valid[slot.index], counts.get(slot.index), records,
                                   cursor, signal))
            want = next(chosen, None)
        elif slot.segments:         # a feature left out: past its payloads
            width = sum(slot.segments)
            cursor = [c + k * width for c, k in zip(cursor, counts[slot.index], strict=True)]
    table = pa.Table.from_arrays(columns, schema=arrow_schema)
    times = np.array([int.from_bytes(f[EVENT_TIME_OFFSET:CREATED_TIME_OFFSET], "little", signed=True)
                      for f in fixed], dtype=np.int64)
    made = np.array([NULL_CREATED_US if r is None else int.from_bytes(f[CREATED_TIME_OFFSET:HEADER_SIZE], "little",
                                                                      signed=True)
                     for r, f in zip(records, fixed, strict=True)], dtype=np.int64)
    found = np.array([r is not None for r in records], dtype=bool)
    matrix = np.array([valid[s.index] for s in slots], dtype=bool).T.reshape(n, len(slots))
    return table, times, found, matrix, made


def _payload(records: Sequence[bytes | None], cursor: list[int], counts: list[int], itemsize: int) -> bytes:
    """Every row's ``counts[i] * itemsize`` bytes from its cursor, joined; moves the cursors past them."""
    parts = []
    for i, r in enumerate(records):
        width = counts[i] * itemsize
        if width and r is not None:
            parts.append(r[cursor[i]:cursor[i] + width])
            cursor[i] += width
    return b"".join(parts)


def _column(slot: Slot, arrow_types: list[pa.DataType], fixed: list[bytes], valid: list[bool],
            counts: list[int] | None, records: Sequence[bytes | None], cursor: list[int], signal: str) -> pa.Array:
    n = len(fixed)
    arrow_type = arrow_types[slot.index]
    nulls = n - sum(valid)
    validity = pa.py_buffer(_bits(valid)) if nulls else None
    lo, hi = slot.offset, slot.offset + slot.width
    if slot.kind == "bool":
        data = pa.py_buffer(_bits([f[lo] != 0 for f in fixed]))
        return pa.Array.from_buffers(arrow_type, n, [validity, data], null_count=nulls)
    if slot.kind == "scalar":
        return pa.Array.from_buffers(arrow_type, n, [validity, pa.py_buffer(b"".join(f[lo:hi] for f in fixed))],
                                     null_count=nulls)
    if slot.kind == "vector":
        values = b"".join(f[lo:hi] for f in fixed)
        value_type = arrow_type.value_type
        child = pa.Array.from_buffers(value_type, len(values) * 8 // value_type.bit_width,
                                      [None, pa.py_buffer(values)], null_count=0)
        return pa.Array.from_buffers(arrow_type, n, [validity], null_count=nulls, children=[child])
    assert counts is not None
    total = sum(counts)
    if total > _INT32_MAX:
        offsets = offsets_buffer(np.array(counts, dtype=np.int64), slot.name)     # raises, naming the feature
    offsets = pa.py_buffer(struct.pack(f"<{n + 1}i", *accumulate(counts, initial=0)))
    if slot.kind == "string":
        chars = _payload(records, cursor, counts, 1)
        return string_column(arrow_type, n, validity, offsets, chars, nulls, signal, slot.name)
    ids_bytes = _payload(records, cursor, counts, 8)
    ids = pa.Array.from_buffers(pa.int64(), len(ids_bytes) // 8, [None, pa.py_buffer(ids_bytes)], null_count=0)
    if slot.kind == "ids":
        child = ids
    else:
        weights_bytes = _payload(records, cursor, counts, 4)
        weights = pa.Array.from_buffers(pa.float32(), len(weights_bytes) // 4, [None, pa.py_buffer(weights_bytes)],
                                        null_count=0)
        child = pa.Array.from_buffers(WEIGHTED_ID_STRUCT, len(ids), [None], null_count=0, children=[ids, weights])
    return pa.Array.from_buffers(arrow_type, n, [validity, offsets], null_count=nulls, children=[child])
