"""The UFR binary row codec of the online store: one record per row, batches decoded in numpy.

Record layout (little-endian); everything before the variable section has one size per schema::

    0        MAGIC (0x51, b"Q")
    1        FORMAT_VERSION
    2..9     schema fingerprint (``FeatureSchema.fingerprint``)
    10..17   event time, int64 microseconds since the epoch
    18..25   created time, int64 microseconds, ``quasar.signals.ordering.NULL_CREATED_US`` (int64 min) when null;
             with the event time, the rank the Redis newer-wins script compares (``quasar.signals.ordering``)
    26..     validity bitmap, ceil(n/8) bytes, bit i (LSB first) set = feature i present
    ...      fixed section, schema order: Bool 1 byte, Int64/Timestamp/Float64 8, Float32 4,
             Vector(dim) dim * itemsize, String/IdList/WeightedIdList a uint32 count
    ...      variable section, schema order: String utf-8 bytes, IdList int64 ids,
             WeightedIdList n int64 ids then n float32 weights

A null value writes zeros. Float bits are copied, never converted, so NaN payloads survive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quasar.signals.errors import SchemaError, SchemaMismatchError
from quasar.signals.ordering import NULL_CREATED_US, created_us
from quasar.signals.ufr.codec_arrow import coerce_feature, event_times_us, find_column
from quasar.signals.ufr.codec_layout import (
    COUNT_DTYPE,
    CREATED_TIME_OFFSET,
    EVENT_TIME_OFFSET,
    FINGERPRINT_OFFSET,
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    Layout,
    Slot,
    check_count,
    exclusive_cumsum,
    gather_items,
    layout_of,
    scatter_items,
)
from quasar.signals.ufr.schema import CREATED_TIMESTAMP, EVENT_TIMESTAMP, FeatureSchema
from quasar.signals.ufr.types import WEIGHTED_ID_STRUCT

__all__ = [
    "CREATED_TIME_OFFSET", "EVENT_TIME_OFFSET", "FORMAT_VERSION", "HEADER_SIZE", "MAGIC", "DecodedBatch", "decode",
    "encode", "record_created_time_us", "record_event_time_us", "record_fingerprint",
]

_INT32_MAX = int(np.iinfo(np.int32).max)
SMALL_BATCH = 16
_MAGIC_VERSION = bytes((MAGIC, FORMAT_VERSION))
# (item counts per row, item size in bytes, the items of all rows as one contiguous uint8 array)
_Payload = tuple[np.ndarray, int, np.ndarray]


@dataclass(frozen=True)
class DecodedBatch:
    """Decoded records: ``table`` has exactly the schema's Arrow schema (or the selected features' part of it,
    ``decode(features=...)``), one row per record."""

    table: pa.Table
    event_time_us: np.ndarray  # int64, 0 where the record was None
    found: np.ndarray  # bool, False where the record was None (absent in the online store)
    valid: np.ndarray  # bool [records, table columns]: the value is present (False for absent records)
    created_time_us: np.ndarray  # int64, NULL_CREATED_US where null or the record was None


# ---------------------------------------------------------------------------------------------- encode


def encode(schema: FeatureSchema, table: pa.Table | pa.RecordBatch, *,
           event_time_column: str = EVENT_TIMESTAMP, created_time_column: str = CREATED_TIMESTAMP) -> list[bytes]:
    """One UFR record per row of ``table`` (its feature columns by name; other columns are ignored).

    The created time comes from ``created_time_column`` when the table has it, else it is null (the oldest).
    """
    layout = layout_of(schema)
    arrays = [coerce_feature(s.name, find_column(table, s.name, "feature"), s.ftype) for s in layout.slots]
    times = event_times_us(table, event_time_column)
    n = table.num_rows
    made = created_us(find_column(table, created_time_column, "created time")
                      if created_time_column in table.schema.names else None, n)
    if n == 0:
        return []
    fixed = np.zeros((n, layout.fixed_size), dtype=np.uint8)
    fixed[:, 0] = MAGIC
    fixed[:, 1] = FORMAT_VERSION
    fixed[:, FINGERPRINT_OFFSET:EVENT_TIME_OFFSET] = np.frombuffer(layout.fingerprint, dtype=np.uint8)
    fixed[:, EVENT_TIME_OFFSET:CREATED_TIME_OFFSET] = times.astype("<i8").view(np.uint8).reshape(n, 8)
    fixed[:, CREATED_TIME_OFFSET:HEADER_SIZE] = made.astype("<i8").view(np.uint8).reshape(n, 8)
    valid = np.ones((n, layout.n_features), dtype=bool)
    payloads: list[_Payload] = []
    for slot, arr in zip(layout.slots, arrays, strict=True):
        if arr.null_count:
            valid[:, slot.index] = arr.is_valid().to_numpy(zero_copy_only=False)
        payloads.extend(_encode_slot(slot, arr, valid[:, slot.index], fixed))
    fixed[:, HEADER_SIZE:HEADER_SIZE + layout.bitmap_size] = np.packbits(valid, axis=1, bitorder="little")
    return _assemble(fixed, payloads)


def _data_bytes(arr: pa.Array, first: int, count: int, itemsize: int) -> np.ndarray:
    """The raw data bytes of items ``first .. first+count`` of a fixed-width array (offset-aware)."""
    buffer = arr.buffers()[1]
    return np.frombuffer(buffer, dtype=np.uint8, count=count * itemsize, offset=(arr.offset + first) * itemsize)


def _encode_slot(slot: Slot, arr: pa.Array, valid: np.ndarray, fixed: np.ndarray) -> list[_Payload]:
    """Write one feature's fixed part into ``fixed``; return its variable payloads."""
    n = len(arr)
    lo, hi = slot.offset, slot.offset + slot.width
    if slot.kind == "bool":
        fixed[:, lo] = pc.fill_null(arr, False).to_numpy(zero_copy_only=False)
        return []
    if slot.kind in ("scalar", "vector"):
        if slot.kind == "scalar":
            raw = _data_bytes(arr, 0, n, slot.width)
        else:  # a fixed-size list's values, ignoring the list's own offset
            dim = slot.width // slot.dtype.itemsize
            raw = _data_bytes(arr.values, arr.offset * dim, n * dim, slot.dtype.itemsize)
        fixed[:, lo:hi] = raw.reshape(n, slot.width)
        if arr.null_count:
            fixed[~valid, lo:hi] = 0
        return []
    if slot.kind == "string":
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4)
        counts = np.diff(offsets).astype(np.int64)
        counts[~valid] = 0
        data = arr.buffers()[2]
        chars = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, dtype=np.uint8)
        if int(counts.sum()) == int(offsets[-1] - offsets[0]):
            items = chars[offsets[0]:offsets[-1]]
        else:  # some null strings are backed by bytes: keep only the present ones
            items = gather_items(chars, offsets[:-1], counts, 1)
        payloads = [(counts, 1, items)]
    else:
        counts = pc.fill_null(pc.list_value_length(arr), 0).to_numpy().astype(np.int64)
        flat = pc.list_flatten(arr)
        if slot.kind == "ids":
            payloads = [(counts, 8, flat.to_numpy().view(np.uint8))]
        else:
            ids, weights = flat.flatten()
            payloads = [(counts, 8, ids.to_numpy().view(np.uint8)), (counts, 4, weights.to_numpy().view(np.uint8))]
    check_count(counts, f"feature column {slot.name!r}")
    fixed[:, lo:hi] = counts.astype(COUNT_DTYPE).view(np.uint8).reshape(n, COUNT_DTYPE.itemsize)
    return payloads


def _assemble(fixed: np.ndarray, payloads: list[_Payload]) -> list[bytes]:
    """Interleave each row's fixed part and payloads into one buffer, then slice one bytes per row."""
    n, size = fixed.shape
    if not payloads:
        blob = fixed.tobytes()
        return [blob[i:i + size] for i in range(0, n * size, size)]
    sizes = np.full(n, size, dtype=np.int64)
    for counts, itemsize, _ in payloads:
        sizes += counts * itemsize
    starts = exclusive_cumsum(sizes)
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    scatter_items(out, starts, np.ones(n, dtype=np.int64), fixed.reshape(-1), size)
    cursor = starts + size
    for counts, itemsize, items in payloads:
        scatter_items(out, cursor, counts, items, itemsize)
        cursor += counts * itemsize
    blob = out.tobytes()
    return [blob[s:e] for s, e in zip(starts.tolist(), (starts + sizes).tolist(), strict=True)]


# ---------------------------------------------------------------------------------------------- decode


def decode(schema: FeatureSchema, records: Sequence[bytes | None], *, signal: str = "",
           small_batch: int = SMALL_BATCH, features: Sequence[str] | None = None) -> DecodedBatch:
    """Decode a batch of records of ``schema``; a ``None`` record (absent online) gives an all-null row.

    ``features`` (names of ``schema``) decodes only those: the table and ``valid`` hold them alone, in schema
    order, with the values the full decode gives them. Every record is checked as in the full decode (header,
    fingerprint, every count and the record's length, in the same order, with the same errors); the payloads
    of the features left out are never gathered, so only the selected strings are checked for UTF-8.

    Batches of at most ``small_batch`` records (a request's worth) take ``codec_small``'s path: the same
    checks and the same Arrow buffers, gathered by bytes slicing instead of numpy indexing, which costs a
    fraction of numpy's per-call overhead at that size.
    """
    layout = layout_of(schema)
    slots, arrow_schema = (layout.slots, layout.arrow_schema) if features is None else _selection(
        layout, schema, tuple(features), signal)
    n = len(records)
    if 0 < n <= small_batch:
        from quasar.signals.ufr.codec_small import decode_small
        table, times, found_small, valid_small, made = decode_small(layout, records, signal, slots, arrow_schema)
        return DecodedBatch(table, times, found_small, valid_small, made)
    if None in records:
        found = np.fromiter((r is not None for r in records), dtype=bool, count=n)
        present: Sequence[bytes] = [r for r in records if r is not None]
    else:
        found = np.ones(n, dtype=bool)
        present = records  # type: ignore[assignment]
    rows = np.flatnonzero(found)
    lengths = np.zeros(n, dtype=np.int64)
    lengths[rows] = np.fromiter(map(len, present), dtype=np.int64, count=len(present))
    buf = np.frombuffer(b"".join(present), dtype=np.uint8)
    starts = exclusive_cumsum(lengths)
    fixed = _read_fixed(layout, buf, starts, lengths, rows, signal)
    valid = np.unpackbits(fixed[:, HEADER_SIZE:HEADER_SIZE + layout.bitmap_size], axis=1,
                          count=layout.n_features, bitorder="little").astype(bool)
    counts = _read_counts(layout, fixed, valid, signal)
    _check_lengths(layout, counts, lengths, found, signal)
    columns = []
    cursor = starts + layout.fixed_size
    chosen = iter(slots)
    want = next(chosen, None)
    for slot in layout.slots:
        if slot is want:
            columns.append(_decode_slot(slot, fixed, valid[:, slot.index], counts.get(slot.index), buf, cursor,
                                        signal))
            want = next(chosen, None)
        if slot.segments:           # past this feature's payloads, read or not
            cursor = cursor + counts[slot.index] * sum(slot.segments)
    table = pa.Table.from_arrays(columns, schema=arrow_schema)
    stamps = np.ascontiguousarray(fixed[:, EVENT_TIME_OFFSET:HEADER_SIZE]).view("<i8").reshape(n, 2).astype(np.int64)
    times, made = np.ascontiguousarray(stamps[:, 0]), np.ascontiguousarray(stamps[:, 1])
    made[~found] = NULL_CREATED_US
    if slots is not layout.slots:
        valid = valid[:, [s.index for s in slots]]
    return DecodedBatch(table, times, found, valid, made)


_SELECTIONS: dict[tuple[int, tuple[str, ...]], tuple[Layout, tuple[Slot, ...], pa.Schema]] = {}


def _selection(layout: Layout, schema: FeatureSchema, features: tuple[str, ...],
               signal: str) -> tuple[tuple[Slot, ...], pa.Schema]:
    """The slots of ``features`` in schema order and their Arrow schema (remembered per layout object: hashing a
    schema walks every type)."""
    hit = _SELECTIONS.get((id(layout), features))
    if hit is not None and hit[0] is layout:
        return hit[1], hit[2]
    names = set(features)
    for name in features:
        if name not in schema.names:
            what = f"signal {signal!r}" if signal else "the schema"
            raise SchemaError(f"{what} has no feature {name!r} to decode; its features: {', '.join(schema.names)}")
    slots = tuple(s for s in layout.slots if s.name in names)
    arrow_schema = pa.schema([layout.arrow_schema.field(s.index) for s in slots])
    if len(_SELECTIONS) >= 1024:
        _SELECTIONS.clear()
    _SELECTIONS[id(layout), features] = (layout, slots, arrow_schema)
    return slots, arrow_schema


def corrupt(signal: str, index: int, problem: str) -> SchemaError:
    """The error for a damaged record: its index, the signal, and what is wrong."""
    where = f" of signal {signal!r}" if signal else ""
    return SchemaError(f"corrupt record at index {index}{where}: {problem}")


def fingerprint_mismatch(signal: str, index: int, got: bytes, layout: Layout) -> SchemaMismatchError:
    """The error for a record written under another schema, with the fix."""
    what = f"signal {signal!r}" if signal else "the signal"
    return SchemaMismatchError(
        f"online record at index {index} of {what} was written under schema fingerprint {got.hex()}, but the "
        f"expected schema has fingerprint {layout.fingerprint.hex()}: the schema changed since it was "
        f"materialized; re-materialize {what} to rewrite its online records")


def _read_fixed(layout: Layout, buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray, rows: np.ndarray,
                signal: str) -> np.ndarray:
    """Check every present record's header and return the ``[n, fixed_size]`` matrix (zeros where absent).

    When every present record holds a whole fixed part, the matrix is one gather of ``fixed_size``-byte windows
    of ``buf`` (or ``buf`` itself when no record has a payload); otherwise some record is short, and the headers
    are read first to say which check it fails.
    """
    n, size = len(starts), layout.fixed_size
    if rows.size == 0:
        return np.zeros((n, size), dtype=np.uint8)
    sizes = lengths[rows]
    if int(sizes.min()) < size:
        _refuse_short(layout, buf, starts, lengths, rows, signal)
    if int(sizes.max()) == size:
        head = buf.reshape(rows.size, size)
    else:
        step = buf.strides[0]
        windows = np.lib.stride_tricks.as_strided(buf, shape=(len(buf) - size + 1, size), strides=(step, step),
                                                  writeable=False)
        head = windows[starts if rows.size == n else starts[rows]]
    prefix = head[:, :EVENT_TIME_OFFSET]           # magic, format version and fingerprint
    if (prefix != np.frombuffer(_MAGIC_VERSION + layout.fingerprint, dtype=np.uint8)).any():
        _check_headers(layout, prefix, rows, signal)
    if rows.size == n:
        return head
    fixed = np.zeros((n, size), dtype=np.uint8)
    fixed[rows] = head
    return fixed


def _refuse_short(layout: Layout, buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray, rows: np.ndarray,
                  signal: str) -> None:
    """Some present record is shorter than the fixed part: raise the error of the first check it fails."""
    size = layout.fixed_size
    sizes = lengths[rows]
    for i in rows[sizes < HEADER_SIZE][:1]:
        raise corrupt(signal, int(i), f"{lengths[i]} bytes is shorter than the {HEADER_SIZE}-byte header")
    ones = np.ones(rows.size, dtype=np.int64)
    _check_headers(layout, gather_items(buf, starts[rows], ones, HEADER_SIZE).reshape(rows.size, HEADER_SIZE),
                   rows, signal)
    for i in rows[sizes < size][:1]:
        raise corrupt(signal, int(i), f"truncated: {lengths[i]} bytes is shorter than the {size}-byte "
                                       "fixed part of this schema's records")


def _check_headers(layout: Layout, header: np.ndarray, rows: np.ndarray, signal: str) -> None:
    """Magic, format version and fingerprint of every present record (``header``: its first bytes, one row
    each), checked in that order; raises the first failure."""
    for j in np.flatnonzero(header[:, 0] != MAGIC)[:1]:
        raise corrupt(signal, int(rows[j]), f"first byte is 0x{header[j, 0]:02x}, not the UFR magic 0x{MAGIC:02x}")
    for j in np.flatnonzero(header[:, 1] != FORMAT_VERSION)[:1]:
        raise corrupt(signal, int(rows[j]), f"format version {header[j, 1]} is not the supported version "
                                             f"{FORMAT_VERSION}")
    expected = np.frombuffer(layout.fingerprint, dtype=np.uint8)
    prints = header[:, FINGERPRINT_OFFSET:EVENT_TIME_OFFSET]
    for j in np.flatnonzero((prints != expected).any(axis=1))[:1]:
        raise fingerprint_mismatch(signal, int(rows[j]), prints[j].tobytes(), layout)


def _read_counts(layout: Layout, fixed: np.ndarray, valid: np.ndarray, signal: str) -> dict[int, np.ndarray]:
    """Item counts of every variable-length feature, by feature index; a null must have count 0."""
    counts = {}
    for slot in layout.slots:
        if not slot.segments:
            continue
        raw = np.ascontiguousarray(fixed[:, slot.offset:slot.offset + COUNT_DTYPE.itemsize])
        count = raw.view(COUNT_DTYPE).reshape(len(fixed)).astype(np.int64)
        bad = ~valid[:, slot.index] & (count != 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise corrupt(signal, i, f"feature {slot.name!r} is null but has a length of {count[i]}")
        counts[slot.index] = count
    return counts


def _check_lengths(layout: Layout, counts: dict[int, np.ndarray], lengths: np.ndarray, found: np.ndarray,
                   signal: str) -> None:
    """Every present record must be exactly as long as its fixed part and counts say."""
    expected = np.full(len(lengths), layout.fixed_size, dtype=np.int64)
    for slot in layout.slots:
        for itemsize in slot.segments:
            expected += counts[slot.index] * itemsize
    wrong = found & (expected != lengths)
    if not wrong.any():
        return
    for i in np.flatnonzero(wrong)[:1]:
        state = "truncated" if lengths[i] < expected[i] else "too long"
        raise corrupt(signal, int(i), f"{state}: {lengths[i]} bytes, but its lengths say {expected[i]}")


def validity_buffer(valid: np.ndarray) -> tuple[pa.Buffer | None, int]:
    nulls = len(valid) - int(np.count_nonzero(valid))
    if nulls == 0:
        return None, 0
    return pa.py_buffer(np.packbits(valid, bitorder="little")), nulls


def offsets_buffer(counts: np.ndarray, name: str) -> pa.Buffer:
    total = int(counts.sum())
    if total > _INT32_MAX:
        raise SchemaError(f"feature {name!r}: {total} items in one batch overflow Arrow's 32-bit list offsets; "
                          "decode fewer records at a time")
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:], dtype=np.int32)
    return pa.py_buffer(offsets)


def _primitive(arrow_type: pa.DataType, data: np.ndarray) -> pa.Array:
    length = data.nbytes * 8 // arrow_type.bit_width
    return pa.Array.from_buffers(arrow_type, length, [None, pa.py_buffer(data)], null_count=0)


def _valid_utf8(column: pa.Array) -> bool:
    try:
        column.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def string_column(arrow_type: pa.DataType, n: int, validity: pa.Buffer | None, offsets: pa.Buffer,
                  chars: bytes | np.ndarray, nulls: int, signal: str, name: str) -> pa.Array:
    """A decoded string column, refused (naming the first bad record) unless every value is valid UTF-8."""
    column = pa.Array.from_buffers(arrow_type, n, [validity, offsets, pa.py_buffer(chars)], null_count=nulls)
    try:
        column.validate(full=True)
    except pa.ArrowInvalid as exc:
        bad = next(i for i in range(n) if not _valid_utf8(column.slice(i, 1)))
        raise corrupt(signal, bad, f"string feature {name!r} is not valid UTF-8") from exc
    return column


def _decode_slot(slot: Slot, fixed: np.ndarray, valid: np.ndarray, counts: np.ndarray | None, buf: np.ndarray,
                cursor: np.ndarray, signal: str) -> pa.Array:
    """One feature's Arrow column; ``cursor`` holds each record's byte position of this feature's payloads."""
    n = len(fixed)
    arrow_type = slot.ftype.arrow_type()
    validity, nulls = validity_buffer(valid)
    lo, hi = slot.offset, slot.offset + slot.width
    if slot.kind == "bool":
        bits = pa.py_buffer(np.packbits(fixed[:, lo] != 0, bitorder="little"))
        return pa.Array.from_buffers(arrow_type, n, [validity, bits], null_count=nulls)
    if slot.kind == "scalar":
        data = pa.py_buffer(np.ascontiguousarray(fixed[:, lo:hi]))
        return pa.Array.from_buffers(arrow_type, n, [validity, data], null_count=nulls)
    if slot.kind == "vector":
        child = _primitive(arrow_type.value_type, np.ascontiguousarray(fixed[:, lo:hi]).reshape(-1))
        return pa.Array.from_buffers(arrow_type, n, [validity], null_count=nulls, children=[child])
    assert counts is not None
    offsets = offsets_buffer(counts, slot.name)
    if slot.kind == "string":
        chars = gather_items(buf, cursor, counts, 1)
        return string_column(arrow_type, n, validity, offsets, chars, nulls, signal, slot.name)
    ids = _primitive(pa.int64(), gather_items(buf, cursor, counts, 8))
    if slot.kind == "ids":
        child = ids
    else:
        weights = _primitive(pa.float32(), gather_items(buf, cursor + 8 * counts, counts, 4))
        child = pa.Array.from_buffers(WEIGHTED_ID_STRUCT, len(ids), [None], null_count=0, children=[ids, weights])
    return pa.Array.from_buffers(arrow_type, n, [validity, offsets], null_count=nulls, children=[child])


# ---------------------------------------------------------------------------------------------- headers


def _check_header(record: bytes) -> None:
    if len(record) < HEADER_SIZE:
        raise SchemaError(f"corrupt record: {len(record)} bytes is shorter than the {HEADER_SIZE}-byte header")
    if record[0] != MAGIC:
        raise SchemaError(f"corrupt record: first byte is 0x{record[0]:02x}, not the UFR magic 0x{MAGIC:02x}")
    if record[1] != FORMAT_VERSION:
        raise SchemaError(f"corrupt record: format version {record[1]} is not the supported version "
                          f"{FORMAT_VERSION}")


def record_event_time_us(record: bytes) -> int:
    """The event time stamped into a record, in microseconds since the epoch."""
    _check_header(record)
    return int.from_bytes(record[EVENT_TIME_OFFSET:CREATED_TIME_OFFSET], "little", signed=True)


def record_created_time_us(record: bytes) -> int | None:
    """The created time stamped into a record, in microseconds since the epoch; None when it is null."""
    _check_header(record)
    made = int.from_bytes(record[CREATED_TIME_OFFSET:HEADER_SIZE], "little", signed=True)
    return None if made == NULL_CREATED_US else made


def record_fingerprint(record: bytes) -> bytes:
    """The 8-byte schema fingerprint a record was written under."""
    _check_header(record)
    return bytes(record[FINGERPRINT_OFFSET:EVENT_TIME_OFFSET])
