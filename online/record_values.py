"""UFR records straight to the response's Python values, without Arrow: the online read's fast path.

``quasar.online.store.columns_from_records`` decodes records into Arrow columns and ``quasar.online.response``
turns those into Python lists; for a request's few records the Arrow step costs more than the values. Here
one precompiled ``struct.Struct`` per schema (``reader_of``, cached) unpacks every record's fixed part in one
call (all records of a signal in one ``iter_unpack``), and the variable payloads are sliced per record.

The values, statuses and event times are exactly ``columns_from_records`` + ``response.column_values`` +
``response.status_names``: float32 values widened exactly to Python floats, float16 vectors too, timestamps
as ISO-8601 UTC strings (numpy's formatting, ``response.iso_strings``), weighted ids as ``{"id", "weight"}``
dicts, None where NOT_FOUND, NULL_VALUE or OUTSIDE_MAX_AGE. Every check of ``codec.decode`` is made here
too, but a record that fails one is not reported here: ``decode_values`` answers None and the caller takes
the Arrow path, which raises the codec's own error (the same message, naming the same record). A big-endian
machine always takes the Arrow path.
"""

from __future__ import annotations

import functools
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import repeat
from typing import Any

from quasar.signals.ufr.codec_layout import FINGERPRINT_OFFSET, FORMAT_VERSION, MAGIC, layout_of
from quasar.signals.ufr.schema import FeatureSchema
from quasar.signals.ufr.types import Timestamp

#: Whether this machine's byte order is the records' (little-endian); the fast path needs it for id lists.
NATIVE_LITTLE = sys.byteorder == "little"
PRESENT, NOT_FOUND, NULL_VALUE, OUTSIDE_MAX_AGE = "PRESENT", "NOT_FOUND", "NULL_VALUE", "OUTSIDE_MAX_AGE"
_SCALAR_CODES = {"<i8": "q", "<f4": "f", "<f8": "d"}
_VECTOR_CODES = {"<f4": "f", "<f2": "e"}
_VARIABLE = ("string", "ids", "weighted")


@dataclass(frozen=True)
class FieldSpec:
    """Where one feature's value sits in a record's unpacked tuple, and how to make it a Python value."""

    name: str
    index: int          # the feature's index in the schema (its validity bit)
    kind: str           # scalar, bool, timestamp, vector, string, ids, weighted
    pos: int            # first position in the tuple (for variable kinds: the count)
    width: int          # tuple positions (a vector's dim; 1 otherwise)


@dataclass(frozen=True)
class RecordReader:
    """One schema's records, precompiled: the 10 header bytes every record starts with, the struct of the
    fixed part (tuple: event time, bitmap, then every feature's fixed values), the all-present bitmap."""

    head: bytes
    fixed_size: int
    fixed: struct.Struct
    full_bitmap: bytes
    fields: tuple[FieldSpec, ...]
    variable: tuple[FieldSpec, ...]
    by_name: dict[str, FieldSpec]
    extractors: dict[tuple[str, ...], Any] = field(default_factory=dict)     # by features (``_extractors``)


@functools.lru_cache(maxsize=256)
def reader_of(schema: FeatureSchema) -> RecordReader:
    """The precompiled reader of ``schema``'s records (cached: schemas are frozen and hashable)."""
    layout = layout_of(schema)
    codes = [f"<{FINGERPRINT_OFFSET + 8}x", "q", "8x", f"{layout.bitmap_size}s"]
    pos = 2                                           # tuple positions 0 and 1: event time, bitmap
    fields = []
    for slot in layout.slots:
        dtype = slot.dtype.str if slot.dtype.byteorder != "|" else slot.dtype.char
        if slot.kind == "bool":
            kind, code, width = "bool", "?", 1
        elif slot.kind == "scalar":
            kind = "timestamp" if isinstance(slot.ftype, Timestamp) else "scalar"
            code, width = _SCALAR_CODES[dtype], 1
        elif slot.kind == "vector":
            width = slot.width // slot.dtype.itemsize
            kind, code = "vector", f"{width}{_VECTOR_CODES[dtype]}"
        else:
            kind, code, width = slot.kind, "I", 1
        codes.append(code)
        fields.append(FieldSpec(slot.name, slot.index, kind, pos, width))
        pos += width
    fixed = struct.Struct("".join(codes))
    assert fixed.size == layout.fixed_size, (fixed.size, layout.fixed_size)
    full = ((1 << layout.n_features) - 1).to_bytes(layout.bitmap_size, "little")
    head = bytes([MAGIC, FORMAT_VERSION]) + layout.fingerprint
    return RecordReader(head, layout.fixed_size, fixed, full, tuple(fields),
                        tuple(f for f in fields if f.kind in _VARIABLE), {f.name: f for f in fields})


@dataclass
class DecodedValues:
    """One signal's records as Python values: per requested feature its values and status names, and every
    row's event time in µs (0 where not found). Features whose statuses are all the same share one list of
    them (read-only, as the response's join key columns share theirs)."""

    values: dict[str, list[Any]]
    statuses: dict[str, list[str]]
    event_time_us: list[int]


def decode_values(reader: RecordReader, records: Sequence[bytes | None], features: Sequence[str], *,
                  ttl: timedelta | None, now_us: int) -> DecodedValues | None:
    """The values of ``features`` in ``records`` (None: not stored) as of ``now_us``; None when a record
    fails a check of the codec (the caller then decodes through the codec, which raises its error)."""
    if not records or None in records or not NATIVE_LITTLE:
        return _decode_any(reader, records, features, ttl=ttl, now_us=now_us)
    size = reader.fixed_size
    present: Sequence[bytes] = records            # type: ignore[assignment]
    full = reader.full_bitmap
    if len(present) == 1:                         # one entity: the same checks, without the maps
        record = present[0]
        if not record.startswith(reader.head) or len(record) < size or (not reader.variable and len(record) != size):
            return None
        row = reader.fixed.unpack_from(record)
        if row[1] != full or (ttl is not None and row[0] < now_us - ttl // timedelta(microseconds=1)):
            return _decode_any(reader, records, features, ttl=ttl, now_us=now_us)     # stale or nulls
        one, _ = _extractors(reader, features)
        if not reader.variable:
            return DecodedValues(one(row, {}), dict.fromkeys(features, [PRESENT]), [row[0]])  # noqa: RUF024
        payloads: dict[int, list[Any]] = {}
        if not (_single_payloads(reader, present, [row], payloads) or _payloads(reader, present, [row], True,
                                                                                   payloads)):
            return None
        return DecodedValues(one(row, payloads), dict.fromkeys(features, [PRESENT]), [row[0]])  # noqa: RUF024
    if not all(map(bytes.startswith, present, repeat(reader.head))) or min(map(len, present)) < size:
        return None
    if not reader.variable and max(map(len, present)) != size:
        return None
    rows = list(map(reader.fixed.unpack_from, present))
    columns = list(zip(*rows, strict=True))              # by tuple position: events, bitmaps, values...
    n = len(rows)
    if (ttl is not None and min(columns[0]) < now_us - ttl // timedelta(microseconds=1)) or columns[1].count(
            full) != n:
        return _decode_any(reader, records, features, ttl=ttl, now_us=now_us)     # stale rows or nulls
    payloads = {}
    if reader.variable and not (_single_payloads(reader, present, rows, payloads)
                                or _payloads(reader, present, rows, True, payloads)):
        return None
    _, many = _extractors(reader, features)
    return DecodedValues(many(columns, payloads), dict.fromkeys(features, [PRESENT] * n), list(columns[0]))


Extractor = Callable[[Any, dict[int, list[Any]]], dict[str, list[Any]]]


def _extractors(reader: RecordReader, features: Sequence[str]) -> tuple[Extractor, Extractor]:
    """Two functions made for ``features`` of ``reader``'s records (cached on the reader): ``one(t, payloads)``
    of one unpacked fixed part and ``many(columns, payloads)`` of several, transposed (``columns[p]``: tuple
    position p of every record), each ``{feature: values}`` with the variable payloads. Generated code, one
    expression per feature, as ``dataclasses`` makes methods."""
    key = features if isinstance(features, tuple) else tuple(features)
    made = reader.extractors.get(key)
    if made is not None:
        return made
    one, many = [], []
    for name in features:
        spec = reader.by_name[name]
        pos, end = spec.pos, spec.pos + spec.width
        if spec.kind in _VARIABLE:
            one.append(f"payloads[{spec.index}]")
            many.append(f"payloads[{spec.index}]")
        elif spec.kind == "vector":
            one.append(f"[list(t[{pos}:{end}])]")
            many.append(f"list(map(list, zip(*columns[{pos}:{end}])))")
        elif spec.kind == "timestamp":
            one.append(f"timestamps([t[{pos}]])")
            many.append(f"timestamps(list(columns[{pos}]))")
        else:
            one.append(f"[t[{pos}]]")
            many.append(f"list(columns[{pos}])")
    keys = [repr(name) for name in features]
    source = (f"def one(t, payloads):\n    return {{{', '.join(f'{k}: {v}' for k, v in zip(keys, one, strict=True))}}}\n"
              f"def many(columns, payloads):\n    return {{{', '.join(f'{k}: {v}' for k, v in zip(keys, many, strict=True))}}}\n")
    namespace: dict[str, Any] = {"timestamps": _timestamps}
    exec(compile(source, f"<record_values {'/'.join(features)[:60]}>", "exec"), namespace)
    made = (namespace["one"], namespace["many"])
    if len(reader.extractors) >= 64:
        reader.extractors.clear()
    reader.extractors[key] = made
    return made


def _single_payloads(reader: RecordReader, present: Sequence[bytes], rows: list[tuple[Any, ...]],
                     out: dict[int, list[Any]]) -> bool:
    """``_payloads`` for the common case, one variable string or id list and no nulls: one slice per record.
    False when it does not apply or a length is wrong (then ``_payloads`` decides)."""
    if len(reader.variable) != 1:
        return False
    spec = reader.variable[0]
    start, pos = reader.fixed_size, spec.pos
    if spec.kind == "string":
        if list(map(len, present)) != [start + t[pos] for t in rows]:
            return False
        try:
            out[spec.index] = [r[start:].decode() for r in present]
        except UnicodeDecodeError:
            return False
        return True
    if spec.kind == "ids":
        if list(map(len, present)) != [start + 8 * t[pos] for t in rows]:
            return False
        out[spec.index] = [memoryview(r)[start:].cast("q").tolist() for r in present]
        return True
    return False


def _decode_any(reader: RecordReader, records: Sequence[bytes | None], features: Sequence[str], *,
                ttl: timedelta | None, now_us: int) -> DecodedValues | None:
    """``decode_values`` for any records: some not stored, stale or holding nulls."""
    n = len(records)
    found_all = None not in records
    present: Sequence[bytes] = (records if found_all                        # type: ignore[assignment]
                                else [r for r in records if r is not None])
    size = reader.fixed_size
    if present:
        if not all(map(bytes.startswith, present, repeat(reader.head))) or min(map(len, present)) < size:
            return None
        if reader.variable:
            blob = b"".join([r[:size] for r in present])
        else:
            if max(map(len, present)) != size:
                return None
            blob = b"".join(present)
        rows = list(reader.fixed.iter_unpack(blob)) if len(present) > 1 else [reader.fixed.unpack(blob)]
    else:
        rows = []
    full = reader.full_bitmap
    all_valid = [t[1] for t in rows].count(full) == len(rows)
    payloads: dict[int, list[Any]] = {}
    if reader.variable and not _payloads(reader, present, rows, all_valid, payloads):
        return None
    # the status of every row: found or not, stale or fresh
    if found_all:
        events = [t[0] for t in rows]
        missing: list[int] = []
    else:
        events = [0] * n
        missing = [i for i, r in enumerate(records) if r is None]
        where = [i for i, r in enumerate(records) if r is not None]
        for i, t in zip(where, rows, strict=True):
            events[i] = t[0]
    stale: list[int] = []
    if ttl is not None and rows:
        oldest = now_us - ttl // timedelta(microseconds=1)
        stale = [i for i, e in enumerate(events) if e < oldest and (found_all or records[i] is not None)]
    nulls: dict[int, list[int]] = {}                  # feature index -> rows (of ``records``) holding a null
    if not all_valid:
        positions = range(n) if found_all else where
        for i, t in zip(positions, rows, strict=True):
            if t[1] != full:
                bits = int.from_bytes(t[1], "little")
                for spec in reader.fields:
                    if not bits >> spec.index & 1:
                        nulls.setdefault(spec.index, []).append(i)
    values: dict[str, list[Any]] = {}
    statuses: dict[str, list[str]] = {}
    clean = not missing and not stale
    plain = [PRESENT] * n if clean else _row_statuses(n, missing, stale)
    blank = set(missing) | set(stale)
    for name in features:
        spec = reader.by_name[name]
        column = _column(spec, rows, payloads)
        null_rows = nulls.get(spec.index, ())
        if not clean:
            column = _spread(column, n, missing) if missing else column
            for i in stale:
                column[i] = None
        if null_rows:
            marks = list(plain)
            for i in null_rows:
                if i not in blank:
                    marks[i] = NULL_VALUE
                column[i] = None
            statuses[name] = marks
        else:
            statuses[name] = plain
        if spec.kind == "timestamp":
            column = _timestamps(column)
        values[name] = column
    return DecodedValues(values, statuses, events)


def _row_statuses(n: int, missing: list[int], stale: list[int]) -> list[str]:
    out = [PRESENT] * n
    for i in missing:
        out[i] = NOT_FOUND
    for i in stale:
        out[i] = OUTSIDE_MAX_AGE
    return out


def _spread(column: list[Any], n: int, missing: list[int]) -> list[Any]:
    """The present rows' values placed among ``n`` rows, None at the ``missing`` ones."""
    out: list[Any] = [None] * n
    gone = set(missing)
    it = iter(column)
    for i in range(n):
        if i not in gone:
            out[i] = next(it)
    return out


def _column(spec: FieldSpec, rows: list[tuple[Any, ...]], payloads: dict[int, list[Any]]) -> list[Any]:
    """One feature's values over the present rows (nulls not yet applied)."""
    if spec.kind in _VARIABLE:
        return list(payloads[spec.index])
    pos = spec.pos
    if spec.kind == "vector":
        end = pos + spec.width
        return [list(t[pos:end]) for t in rows]
    return [t[pos] for t in rows]


def _payloads(reader: RecordReader, present: Sequence[bytes], rows: list[tuple[Any, ...]], all_valid: bool,
              out: dict[int, list[Any]]) -> bool:
    """Every variable feature's values of every present record into ``out`` (by feature index); False when a
    record's lengths are wrong, a null has a length, or a string is not UTF-8 (``codec.decode`` refuses
    those). Every variable feature is read, requested or not, so a bad record is refused either way."""
    specs = reader.variable
    columns: list[list[Any]] = [[] for _ in specs]
    start = reader.fixed_size
    full = reader.full_bitmap
    try:
        for r, t in zip(present, rows, strict=True):
            at = start
            bits = -1 if all_valid or t[1] == full else int.from_bytes(t[1], "little")
            for spec, column in zip(specs, columns, strict=True):
                count = t[spec.pos]
                if not bits >> spec.index & 1:
                    if count:
                        return False
                    column.append(None)
                    continue
                if spec.kind == "string":
                    end = at + count
                    column.append(r[at:end].decode())
                elif spec.kind == "ids":
                    end = at + 8 * count
                    column.append(memoryview(r)[at:end].cast("q").tolist())
                else:
                    middle = at + 8 * count
                    end = middle + 4 * count
                    ids = memoryview(r)[at:middle].cast("q").tolist()
                    weights = memoryview(r)[middle:end].cast("f").tolist()
                    column.append([{"id": i, "weight": w} for i, w in zip(ids, weights, strict=True)])
                at = end
            if at != len(r):
                return False
    except (UnicodeDecodeError, TypeError, ValueError):
        return False
    for spec, column in zip(specs, columns, strict=True):
        out[spec.index] = column
    return True


def _timestamps(column: list[Any]) -> list[Any]:
    """Timestamp feature values (µs) as ISO strings, None staying None."""
    import numpy as np

    from quasar.online.response import iso_strings
    strings: list[Any] = iso_strings(np.array([0 if v is None else v for v in column], dtype=np.int64))
    for i, v in enumerate(column):
        if v is None:
            strings[i] = None
    return strings
