"""UFR row codec failures: bad input tables, records of another schema, corrupt records."""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quasar.signals.ufr.codec as codec
from quasar.signals.errors import SchemaError, SchemaMismatchError
from quasar.signals.ufr.codec import (
    HEADER_SIZE,
    MAGIC,
    decode,
    encode,
    record_event_time_us,
    record_fingerprint,
)
from quasar.signals.ufr.schema import FeatureSchema
from quasar.signals.ufr.types import Float32, Float64, IdList, Int64, String, Vector, WeightedIdList

SCHEMA = FeatureSchema.of({"clicks": Int64(), "name": String(), "pins": IdList(), "taste": Vector(2),
                           "weighted": WeightedIdList()})


def _table(**overrides: pa.Array) -> pa.Table:
    columns = {
        "clicks": pa.array([1, 2]), "name": pa.array(["a", None]),
        "pins": pa.array([[1, 2], []], IdList().arrow_type()),
        "taste": pa.array([[0.5, 1.5], None], Vector(2).arrow_type()),
        "weighted": pa.array([[{"id": 1, "weight": 0.5}], None], WeightedIdList().arrow_type()),
        "event_timestamp": pa.array([10, 20]),
    }
    columns.update(overrides)
    return pa.table(columns)


def _records() -> list[bytes]:
    return encode(SCHEMA, _table())


# ------------------------------------------------------------------------------------------ encode input


def test_missing_feature_column_is_named() -> None:
    with pytest.raises(SchemaError, match=r"feature column 'pins' is missing"):
        encode(SCHEMA, _table().drop_columns(["pins"]))


def test_missing_event_time_column_is_named() -> None:
    with pytest.raises(SchemaError, match=r"event time column 'ts' is missing"):
        encode(SCHEMA, _table(), event_time_column="ts")


def test_null_event_time_is_refused() -> None:
    with pytest.raises(SchemaError, match=r"event time column 'event_timestamp' has 1 null"):
        encode(SCHEMA, _table(event_timestamp=pa.array([10, None])))


def test_event_time_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(SchemaError, match=r"event time column 'event_timestamp' has Arrow type string"):
        encode(SCHEMA, _table(event_timestamp=pa.array(["a", "b"])))
    with pytest.raises(SchemaError, match=r"event time column 'event_timestamp'.*cannot be read"):
        encode(SCHEMA, _table(event_timestamp=pa.array([1, 1_500], pa.timestamp("ns"))))


@pytest.mark.parametrize(("column", "array"), [
    ("clicks", pa.array(["1", "2"])),
    ("name", pa.array([1, 2])),
    ("pins", pa.array([["1"], []], pa.list_(pa.string()))),
    ("taste", pa.array([1.0, 2.0])),
])
def test_wrong_arrow_type_names_the_column(column: str, array: pa.Array) -> None:
    with pytest.raises(SchemaError, match=rf"feature column '{column}' has Arrow type"):
        encode(SCHEMA, _table(**{column: array}))


@pytest.mark.parametrize(("column", "array"), [
    ("clicks", pa.array([1.5, 2.0])),
    ("taste", pa.array([[1.0, 2.0], [1.0]], pa.list_(pa.float64()))),
])
def test_unsafe_cast_names_the_column(column: str, array: pa.Array) -> None:
    with pytest.raises(SchemaError, match=rf"feature column '{column}' .*cannot be cast safely"):
        encode(SCHEMA, _table(**{column: array}))


def test_float64_overflowing_float32_is_refused() -> None:
    schema = FeatureSchema.of({"x": Float32()})
    table = pa.table({"x": pa.array([1.0, 1e300]), "event_timestamp": pa.array([1, 2])})
    with pytest.raises(SchemaError, match=r"feature column 'x': values of Arrow type double overflow float"):
        encode(schema, table)
    ok = pa.table({"x": pa.array([1.0, float("inf"), float("nan")]), "event_timestamp": pa.array([1, 2, 3])})
    assert len(encode(schema, ok)) == 3


@pytest.mark.parametrize(("column", "array"), [
    ("pins", pa.array([[1, None], []], pa.list_(pa.int64()))),
    ("taste", pa.array([[1.0, None], None], pa.list_(pa.float32(), 2))),
    ("weighted", pa.array([[{"id": 1, "weight": None}], None],
                          pa.list_(pa.struct([("id", pa.int64()), ("weight", pa.float32())])))),
])
def test_nulls_inside_lists_are_refused(column: str, array: pa.Array) -> None:
    with pytest.raises(SchemaError, match=rf"feature column '{column}'.*null"):
        encode(SCHEMA, _table(**{column: array}))


# ------------------------------------------------------------------------------------------ decode


@pytest.fixture(params=["small batch path", "numpy path"], autouse=True)
def decode_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every decode test runs on both of ``codec.decode``'s paths: same checks, same messages."""
    small = codec.SMALL_BATCH if request.param == "small batch path" else 0
    monkeypatch.setitem(globals(), "decode", functools.partial(codec.decode, small_batch=small))
    yield


def test_fingerprint_mismatch_names_signal_fingerprints_and_fix() -> None:
    old = FeatureSchema.of({"clicks": Int64(), "ratio": Float64()})
    records = encode(old, pa.table({"clicks": [1], "ratio": [0.5], "event_timestamp": pa.array([5])}))
    with pytest.raises(SchemaMismatchError) as info:
        decode(SCHEMA, [None, *records], signal="user_engagement")
    message = str(info.value)
    assert "'user_engagement'" in message and "re-materialize" in message
    assert SCHEMA.fingerprint.hex() in message and old.fingerprint.hex() in message
    assert "index 1" in message
    assert record_fingerprint(records[0]) == old.fingerprint


def test_mismatch_wins_over_length_checks() -> None:
    """A record of an older, shorter schema is a schema mismatch, not a corrupt record."""
    old = FeatureSchema.of({"clicks": Int64()})
    records = encode(old, pa.table({"clicks": [1], "event_timestamp": pa.array([5])}))
    assert len(records[0]) < len(_records()[0])
    with pytest.raises(SchemaMismatchError, match="re-materialize"):
        decode(SCHEMA, records, signal="s")


def _corrupt_cases() -> list[tuple[str, bytes, str]]:
    good = _records()[0]
    fixed_size = len(_records()[1])  # row 1 has no payloads: its size is the fixed part alone
    null_with_count = bytearray(_records()[1])
    # fixed section: clicks 8 bytes, then counts/values name 4, pins 4, taste 8, weighted 4
    null_with_count[fixed_size - 4:fixed_size] = struct.pack("<I", 1)  # "weighted" is null in row 1
    bad_utf8 = bytearray(good)
    bad_utf8[fixed_size] = 0xFF  # the first payload byte: row 0's name "a"
    return [
        ("empty", b"", "shorter than the 26-byte header"),
        ("short header", good[:HEADER_SIZE - 1], "shorter than the 26-byte header"),
        ("bad magic", b"X" + good[1:], "not the UFR magic"),
        ("bad version", good[:1] + bytes([9]) + good[2:], "format version 9"),
        ("short fixed part", good[:fixed_size - 1], "truncated"),
        ("short payload", good[:-1], "truncated"),
        ("extra byte", good + b"\x00", "too long"),
        ("count too large", good[:fixed_size - 16] + struct.pack("<I", 2**32 - 1) + good[fixed_size - 12:],
         "truncated"),
        ("null with a count", bytes(null_with_count), "is null but has a length of 1"),
        ("invalid utf-8", bytes(bad_utf8), "not valid UTF-8"),
    ]


@pytest.mark.parametrize(("case", "record", "problem"), _corrupt_cases(), ids=[c[0] for c in _corrupt_cases()])
def test_corrupt_records_raise_schema_error(case: str, record: bytes, problem: str) -> None:
    with pytest.raises(SchemaError, match=re.escape(problem)) as info:
        decode(SCHEMA, [*_records(), None, record], signal="pins")
    assert not isinstance(info.value, SchemaMismatchError)
    assert "corrupt record" in str(info.value) and "'pins'" in str(info.value)


def test_header_readers_refuse_garbage() -> None:
    for garbage in (b"", b"Q\x01short", b"Z" * 40):
        with pytest.raises(SchemaError, match="corrupt record"):
            record_event_time_us(garbage)
        with pytest.raises(SchemaError, match="corrupt record"):
            record_fingerprint(garbage)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_damage_never_decodes_silently_wrong(data: st.DataObject) -> None:
    """Cutting, extending or rewriting a record's header or counts raises SchemaError, never anything else."""
    records = _records()
    row = data.draw(st.integers(0, len(records) - 1))
    record = bytearray(records[row])
    action = data.draw(st.sampled_from(["cut", "extend", "header", "count"]))
    if action == "cut":
        record = record[:data.draw(st.integers(0, len(record) - 1))]
    elif action == "extend":
        record += bytes(data.draw(st.binary(min_size=1, max_size=20)))
    elif action == "header":
        at = data.draw(st.integers(0, 9))
        record[at] ^= data.draw(st.integers(1, 255))
    else:  # the count fields of name, pins and weighted sit at the end of the fixed section
        fixed_size = len(records[1])
        at = data.draw(st.sampled_from([fixed_size - 20, fixed_size - 16, fixed_size - 4]))
        old = struct.unpack_from("<I", record, at)[0]
        struct.pack_into("<I", record, at, old + data.draw(st.integers(1, 2**20)))
    records[row] = bytes(record)
    with pytest.raises(SchemaError):
        decode(SCHEMA, records, signal="s")


def test_a_good_batch_still_decodes_next_to_these_cases() -> None:
    decoded = decode(SCHEMA, [*_records(), None], signal="s")
    assert decoded.found.tolist() == [True, True, False]
    assert decoded.table.column("clicks").to_pylist() == [1, 2, None]
    assert decoded.event_time_us.tolist() == [10, 20, 0]
    assert isinstance(decoded.event_time_us, np.ndarray)
    assert ord("Q") == MAGIC
