"""Decoding some features (``codec.decode(features=...)``, ``columns_from_records(features=...)``) against the full
decode: for every UFR type, alone and together, on both of the codec's paths (a few records, many), the same
columns, validity, event and created times, statuses (present, null, not found, past the TTL); a damaged record
fails with exactly the full decode's error whichever features are asked for."""

from __future__ import annotations

import struct
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from fixtures.online import NOW, ol_all_types, random_rows
from quasar.online.store import FeatureStatus, columns_from_records
from quasar.signals.errors import SchemaError, SchemaMismatchError
from quasar.signals.ufr.codec import HEADER_SIZE, decode, encode
from quasar.signals.ufr.codec_layout import layout_of
from quasar.signals.ufr.schema import FeatureSchema
from quasar.signals.ufr.types import Int64

SIG = ol_all_types
NAMES = SIG.schema.names
NOW_US = int(NOW.timestamp() * 1_000_000)
SUBSETS = [[n] for n in NAMES] + [["flag", "name"], ["taste", "recent", "weighted"], ["weighted", "clicks"],
                                  ["half", "seen_at", "score", "ctr"], NAMES]
SMALL_AND_NUMPY = [10_000, 0]       # small_batch: every batch on the bytes-slicing path, then on the numpy path


def _exact(value: Any) -> Any:
    """Values made comparable bit for bit: floats by their bytes (NaN, -0.0), at any depth."""
    if isinstance(value, float):
        return struct.pack("<d", value)
    if isinstance(value, list):
        return [_exact(v) for v in value]
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    return value


def _same(a: pa.Table, b: pa.Table) -> bool:
    return a.schema == b.schema and _exact(a.to_pylist()) == _exact(b.to_pylist())


def _records(n: int = 40, seed: int = 1) -> list[bytes | None]:
    """``n`` records with nulls of every type, every 5th absent, every 7th older than the 7-day TTL."""
    times = [NOW - timedelta(days=9 if i % 7 == 3 else 0, minutes=i) for i in range(n)]
    records: list[bytes | None] = list(encode(SIG.schema, random_rows(SIG, list(range(n)), seed=seed, times=times,
                                                                      null_fraction=0.3)))
    return [None if i % 5 == 2 else r for i, r in enumerate(records)]


@pytest.mark.parametrize("small_batch", SMALL_AND_NUMPY, ids=["small", "numpy"])
@pytest.mark.parametrize("features", SUBSETS, ids=lambda f: "+".join(f))
def test_the_subset_decode_equals_the_full_decode_of_those_features(features: list[str], small_batch: int) -> None:
    for records in (_records(), _records(3, seed=2), [None, None], []):
        full = decode(SIG.schema, records, signal=SIG.name, small_batch=small_batch)
        got = decode(SIG.schema, records, signal=SIG.name, small_batch=small_batch, features=features)
        kept = [n for n in NAMES if n in features]
        assert got.table.column_names == kept
        assert got.table.schema == full.table.select(kept).schema
        assert _same(got.table, full.table.select(kept))
        got.table.validate(full=True)
        assert got.valid.shape == (len(records), len(kept))
        np.testing.assert_array_equal(got.valid, full.valid[:, [NAMES.index(n) for n in kept]])
        np.testing.assert_array_equal(got.found, full.found)
        np.testing.assert_array_equal(got.event_time_us, full.event_time_us)
        np.testing.assert_array_equal(got.created_time_us, full.created_time_us)


@pytest.mark.parametrize("features", SUBSETS, ids=lambda f: "+".join(f))
def test_columns_from_records_of_some_features_equal_the_full_columns(features: list[str]) -> None:
    """Values, event times and statuses, a stale record nulled and OUTSIDE_MAX_AGE, on both paths."""
    records = _records()
    for batch in (records, records[:12]):           # 40 records: numpy path; 12: the small path
        full = columns_from_records(SIG, 1, batch, now=NOW_US)
        got = columns_from_records(SIG, 1, batch, now=NOW_US, features=features)
        kept = [n for n in NAMES if n in features]
        assert _same(got.table, full.table.select(kept))
        assert list(got.status) == kept
        for name in kept:
            assert got.status[name].dtype == full.status[name].dtype
            np.testing.assert_array_equal(got.status[name], full.status[name])
        np.testing.assert_array_equal(got.event_time_us, full.event_time_us)
    statuses = columns_from_records(SIG, 1, records, now=NOW_US, features=["clicks"]).status["clicks"]
    assert set(statuses.tolist()) == {int(s) for s in FeatureStatus}   # present, not found, null, stale all met


def _with(record: bytes, at: int, value: bytes) -> bytes:
    return record[:at] + value + record[at + len(value):]


def _damage_cases() -> list[tuple[str, int, Any]]:
    """(case, row, damaged record): each a failure the codec names."""
    layout = layout_of(SIG.schema)
    records = _records()
    slot = {s.name: s for s in layout.slots}
    present = [i for i, r in enumerate(records) if r is not None]
    row = present[3]
    good = records[row]
    assert good is not None
    null_weighted = next(i for i in present if not decode(SIG.schema, [records[i]]).valid[0, NAMES.index("weighted")])
    empty_name = next(i for i in present if decode(SIG.schema, [records[i]]).table["name"][0].as_py() == "")
    older = encode(FeatureSchema.of({"clicks": Int64()}), random_rows(SIG, [0]).select(["clicks", "event_timestamp"]))
    return [
        ("empty", row, b""),
        ("short header", row, good[:HEADER_SIZE - 1]),
        ("bad magic", row, b"X" + good[1:]),
        ("bad version", row, good[:1] + bytes([9]) + good[2:]),
        ("another schema", row, older[0]),
        ("zeroed fingerprint", row, _with(good, 2, bytes(8))),
        ("short fixed part", row, good[:layout.fixed_size - 1]),
        ("short payload", row, good[:-1]),
        ("extra byte", row, good + b"\x00"),
        ("count too large", row, _with(good, slot["recent"].offset, struct.pack("<I", 2**32 - 1))),
        ("null with a count", null_weighted, _with(records[null_weighted], slot["weighted"].offset,  # type: ignore[arg-type]
                                                   struct.pack("<I", 1))),
        ("name one byte longer", empty_name, _with(records[empty_name], slot["name"].offset,  # type: ignore[arg-type]
                                                   struct.pack("<I", 1))),
    ]


@pytest.mark.parametrize("small_batch", SMALL_AND_NUMPY, ids=["small", "numpy"])
@pytest.mark.parametrize("case, row, damaged", _damage_cases(), ids=[c[0] for c in _damage_cases()])
def test_a_damaged_record_fails_with_the_full_decodes_error_whatever_is_read(case: str, row: int, damaged: bytes,
                                                                            small_batch: int) -> None:
    records = _records()
    records[row] = damaged
    with pytest.raises(SchemaError) as expected:
        decode(SIG.schema, records, signal=SIG.name, small_batch=small_batch)
    assert f"index {row}" in str(expected.value)
    for features in SUBSETS:
        with pytest.raises(SchemaError) as got:
            decode(SIG.schema, records, signal=SIG.name, small_batch=small_batch, features=features)
        assert type(got.value) is type(expected.value)
        assert str(got.value) == str(expected.value), features
        with pytest.raises(SchemaError) as through_columns:
            columns_from_records(SIG, 1, records, now=NOW_US, features=features)
        assert str(through_columns.value) == str(expected.value)
    if case in ("another schema", "zeroed fingerprint"):
        assert isinstance(expected.value, SchemaMismatchError)


@pytest.mark.parametrize("small_batch", SMALL_AND_NUMPY, ids=["small", "numpy"])
def test_bad_utf8_fails_when_its_string_is_read_and_only_then(small_batch: int) -> None:
    """Framing is checked whatever is read; a string's UTF-8 only when that string is decoded (its payload is
    never gathered otherwise): documented on ``decode``."""
    layout = layout_of(SIG.schema)
    records = _records()
    row = next(i for i, r in enumerate(records) if r is not None and decode(SIG.schema, [r]).table["name"][0].as_py())
    record = records[row]
    assert record is not None
    records[row] = _with(record, layout.fixed_size, b"\xff")       # the first payload byte: the name's
    with pytest.raises(SchemaError, match="not valid UTF-8") as expected:
        decode(SIG.schema, records, signal=SIG.name, small_batch=small_batch)
    with pytest.raises(SchemaError) as got:
        decode(SIG.schema, records, signal=SIG.name, small_batch=small_batch, features=["name", "clicks"])
    assert str(got.value) == str(expected.value)
    other = decode(SIG.schema, records, signal=SIG.name, small_batch=small_batch, features=["clicks", "recent"])
    assert _same(other.table, decode(SIG.schema, _records(), small_batch=small_batch).table.select(["clicks", "recent"]))


def test_an_unknown_feature_is_named() -> None:
    with pytest.raises(SchemaError, match=r"signal 'ol_all_types' has no feature 'nope' to decode; its features: "
                                          r"flag, clicks"):
        columns_from_records(SIG, 1, _records(), now=NOW_US, features=["clicks", "nope"])
