"""UFR records straight to the response's Python values, without Arrow: the online read's fast path.

``quasar.online.store.columns_from_records`` decodes records into Arrow columns and ``quasar.online.response``
turns those into Python lists; for a request's few records the Arrow step costs more than the values. Here
one precompiled ``struct.Struct`` per schema (``reader_of``, cached) unpacks every record's fixed part in one
call, and the variable payloads are sliced per record.

Only the common case is decoded here: every record stored, well formed, fresh (the store's TTL rule,
``store.oldest_fresh_us``) and without nulls, so every value is PRESENT. Its values are exactly
``columns_from_records`` + ``response.column_values``: float32 values widened exactly to Python floats,
float16 vectors too, timestamps as ISO-8601 UTC strings (numpy's formatting, ``response.iso_strings``),
weighted ids as ``{"id", "weight"}`` dicts. Anything else (a record not stored, stale, holding a null, or
failing a check of ``codec.decode``) makes ``decode_values`` answer None and the caller decodes through
``columns_from_records``, the one place that gives NOT_FOUND, OUTSIDE_MAX_AGE and NULL_VALUE and raises the
codec's error (the same message, naming the same record). A big-endian machine always takes that path.
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

import numpy as np

from quasar.online.store import FeatureStatus, oldest_fresh_us, value_statuses
from quasar.signals.ufr.codec_layout import FINGERPRINT_OFFSET, FORMAT_VERSION, MAGIC, layout_of
from quasar.signals.ufr.schema import FeatureSchema
from quasar.signals.ufr.types import Timestamp

#: Whether this machine's byte order is the records' (little-endian); the fast path needs it for id lists.
NATIVE_LITTLE = sys.byteorder == "little"
PRESENT = "PRESENT"
_STATUS_NAMES = np.array([s.name for s in sorted(FeatureStatus)], dtype=object)     # by ``FeatureStatus`` code
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
    """The values of ``features`` in ``records`` as of ``now_us`` when every record is stored, well formed,
    fresh and without nulls (every value PRESENT); otherwise None, and the caller decodes through
    ``quasar.online.store.columns_from_records``, which gives the statuses (NOT_FOUND, OUTSIDE_MAX_AGE,
    NULL_VALUE) and raises the codec's error for a damaged record. The TTL rule is the store's
    (``oldest_fresh_us``); nothing here decides a status but PRESENT."""
    if not NATIVE_LITTLE:
        return None
    if not records or None in records:
        return _decode_any(reader, records, features, ttl=ttl, now_us=now_us)
    size = reader.fixed_size
    present: Sequence[bytes] = records            # type: ignore[assignment]
    full = reader.full_bitmap
    oldest = oldest_fresh_us(ttl, now_us)
    if len(present) == 1:                         # one entity: the same checks, without the maps
        record = present[0]
        if not record.startswith(reader.head) or len(record) < size or (not reader.variable and len(record) != size):
            return None
        row = reader.fixed.unpack_from(record)
        if row[1] != full or (oldest is not None and row[0] < oldest):
            return _decode_any(reader, records, features, ttl=ttl, now_us=now_us)     # nulls or stale
        one, _ = _extractors(reader, features)
        if not reader.variable:
            return DecodedValues(one(row, {}), dict.fromkeys(features, [PRESENT]), [row[0]])  # noqa: RUF024
        payloads: dict[int, list[Any]] = {}
        if not (_single_payloads(reader, present, [row], payloads) or _payloads(reader, present, [row], True, payloads)):
            return None
        return DecodedValues(one(row, payloads), dict.fromkeys(features, [PRESENT]), [row[0]])  # noqa: RUF024
    if not all(map(bytes.startswith, present, repeat(reader.head))) or min(map(len, present)) < size:
        return None
    if not reader.variable and max(map(len, present)) != size:
        return None
    rows = list(map(reader.fixed.unpack_from, present))
    columns = list(zip(*rows, strict=True))              # by tuple position: events, bitmaps, values...
    n = len(rows)
    if (oldest is not None and min(columns[0]) < oldest) or columns[1].count(full) != n:
        return _decode_any(reader, records, features, ttl=ttl, now_us=now_us)         # stale rows or nulls
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


def _payloads(reader: RecordReader, present: Sequence[bytes], rows: list[tuple[Any, ...]], all_valid: bool,
              out: dict[int, list[Any]]) -> bool:
    """Every variable feature's values of every present record into ``out`` (by feature index, None for a
    null); False when a record's lengths are wrong, a null has a length, or a string is not UTF-8
    (``codec.decode`` refuses those). Every variable feature is read, requested or not, so a bad record is
    refused either way."""
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


def _decode_any(reader: RecordReader, records: Sequence[bytes | None], features: Sequence[str], *,
                ttl: timedelta | None, now_us: int) -> DecodedValues | None:
    """``decode_values`` for records some of which are not stored, stale or hold nulls: the values unpacked
    here, the statuses by the store's rule (``store.value_statuses``), every value None where its status is
    not PRESENT. None where a record fails a check."""
    n = len(records)
    present: list[bytes] = [r for r in records if r is not None]
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
        rows = list(reader.fixed.iter_unpack(blob))
    else:
        rows = []
    full = reader.full_bitmap
    all_valid = [t[1] for t in rows].count(full) == len(rows)
    payloads: dict[int, list[Any]] = {}
    if reader.variable and not _payloads(reader, present, rows, all_valid, payloads):
        return None
    found_rows = [r is not None for r in records]
    found = np.array(found_rows, dtype=bool)
    stamps = iter(rows)
    event_us = [next(stamps)[0] if here else 0 for here in found_rows]
    events = np.array(event_us, dtype=np.int64)
    width = len(reader.fields)
    if all_valid:
        valid = np.ones((n, width), dtype=bool)
    else:
        bitmaps = np.frombuffer(b"".join([t[1] for t in rows]), dtype=np.uint8).reshape(len(rows), -1)
        bits = np.unpackbits(bitmaps, axis=1, count=width, bitorder="little").view(bool)
        if len(rows) == n:
            valid = bits
        else:
            valid = np.zeros((n, width), dtype=bool)
            valid[found] = bits
    _, matrix = value_statuses(found, events, valid, ttl, now_us)
    specs = [reader.by_name[name] for name in features]
    names: list[list[str]] = _STATUS_NAMES[matrix[[spec.index for spec in specs]]].tolist()
    values: dict[str, list[Any]] = {}
    statuses: dict[str, list[str]] = {}
    for name, spec, marks in zip(features, specs, names, strict=True):
        it = iter(_column(spec, rows, payloads))      # the present rows' values, in order
        column = [next(it) if here else None for here in found_rows]
        if marks.count(PRESENT) != n:                 # None wherever the status is not PRESENT
            column = [v if m == PRESENT else None for v, m in zip(column, marks, strict=True)]
        statuses[name] = marks
        values[name] = _timestamps(column) if spec.kind == "timestamp" else column
    return DecodedValues(values, statuses, event_us)


def _column(spec: FieldSpec, rows: list[tuple[Any, ...]], payloads: dict[int, list[Any]]) -> list[Any]:
    """One feature's values over the present rows (nulls not yet applied)."""
    if spec.kind in _VARIABLE:
        return payloads[spec.index]
    pos = spec.pos
    if spec.kind == "vector":
        end = pos + spec.width
        return [list(t[pos:end]) for t in rows]
    return [t[pos] for t in rows]


def _timestamps(column: list[Any]) -> list[Any]:
    """Timestamp feature values (µs) as ISO strings, None staying None."""
    from quasar.online.response import iso_strings
    strings: list[Any] = iso_strings(np.array([0 if v is None else v for v in column], dtype=np.int64))
    for i, v in enumerate(column):
        if v is None:
            strings[i] = None
    return strings
