"""UFR row codec round trips: Arrow -> records -> Arrow is exact, bit for bit, for every feature type."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quasar.signals.ufr.codec import (
    CREATED_TIME_OFFSET,
    EVENT_TIME_OFFSET,
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    decode,
    encode,
    record_created_time_us,
    record_event_time_us,
    record_fingerprint,
)
from quasar.signals.ufr.schema import FeatureSchema
from quasar.signals.ufr.types import (
    TIMESTAMP_ARROW,
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
)

ALL_TYPES: list[FeatureType] = [Bool(), Int64(), Float32(), Float64(), String(), Timestamp(), Vector(4),
                                Vector(3, "float16"), IdList(), WeightedIdList()]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------------------ comparisons


def _bits_type(t: pa.DataType) -> pa.DataType:
    """``t`` with every float replaced by the unsigned int of its width, to compare floats bit for bit."""
    if pa.types.is_floating(t):
        return {16: pa.uint16(), 32: pa.uint32(), 64: pa.uint64()}[t.bit_width]
    if pa.types.is_fixed_size_list(t):
        f = t.value_field
        return pa.list_(pa.field(f.name, _bits_type(f.type), f.nullable), t.list_size)
    if pa.types.is_list(t):
        f = t.value_field
        return pa.list_(pa.field(f.name, _bits_type(f.type), f.nullable))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _bits_type(f.type), f.nullable) for f in t])
    return t


def _float_leaves(arr: pa.Array) -> list[pa.Array]:
    if pa.types.is_floating(arr.type):
        return [arr]
    if pa.types.is_struct(arr.type):
        return [leaf for child in arr.flatten() for leaf in _float_leaves(child)]
    if pa.types.is_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        return _float_leaves(arr.flatten())
    return []


def _has_nan(table: pa.Table) -> bool:
    return any(pc.any(pc.is_nan(leaf)).as_py()
               for column in table.columns for leaf in _float_leaves(column.combine_chunks()))


def assert_identical(actual: pa.Table, expected: pa.Table) -> None:
    """Same schema, same nulls, same values; floats compared by their bits so NaN payloads count."""
    assert actual.schema == expected.schema
    assert actual.num_rows == expected.num_rows
    for name in expected.column_names:
        a, e = actual[name].combine_chunks(), expected[name].combine_chunks()
        bits = _bits_type(e.type)
        assert a.view(bits).equals(e.view(bits)), f"column {name!r} differs:\n{a}\n!=\n{e}"
    if not _has_nan(expected):
        assert actual.equals(expected)


# ------------------------------------------------------------------------------------------ strategies

int64s = st.one_of(st.integers(INT64_MIN, INT64_MAX), st.sampled_from([INT64_MIN, INT64_MAX, 0, -1, 1]))
_SPECIAL_F32 = [0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FA5A5A5, 0xFFFFFFFF, 0x7F800000, 0xFF800000,
                0x80000000, 0x00000001, 0x7F7FFFFF]
_SPECIAL_F64 = [0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001, 0x7FF4DEADBEEF0001,
                0x7FF0000000000000, 0xFFF0000000000000, 0x8000000000000000, 0x0000000000000001]
_SPECIAL_F16 = [0x7E00, 0xFE00, 0x7C01, 0x7D55, 0x7C00, 0xFC00, 0x8000, 0x0001, 0x7BFF]


def _float_bits(width: int) -> st.SearchStrategy[int]:
    """Float values as bit patterns: any bits (NaN payloads included), plain floats, special values."""
    special = {16: _SPECIAL_F16, 32: _SPECIAL_F32, 64: _SPECIAL_F64}[width]
    udtype, fdtype = {16: ("<u2", "<f2"), 32: ("<u4", "<f4"), 64: ("<u8", "<f8")}[width]
    plain = st.floats(width=width).map(lambda x: int(np.array([x], dtype=fdtype).view(udtype)[0]))
    return st.one_of(st.integers(0, 2**width - 1), st.sampled_from(special), plain)


def _floats_from_bits(bits: list[int], width: int) -> np.ndarray:
    udtype, fdtype = {16: ("<u2", "<f2"), 32: ("<u4", "<f4"), 64: ("<u8", "<f8")}[width]
    return np.array(bits, dtype=udtype).view(fdtype)


strings = st.one_of(st.text(max_size=12), st.sampled_from(["", "🎉", "👩🏽‍💻 naïve café", "\x00", "ｱｲｳ", "e\u0301"]))


def _long_ids(length: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(INT64_MIN, INT64_MAX, length, endpoint=True).tolist()


id_lists = st.one_of(
    st.lists(int64s, max_size=6), st.lists(int64s, max_size=6), st.lists(int64s, max_size=6),
    st.builds(_long_ids, st.integers(1000, 1300), st.integers(0, 2**32 - 1)),
)


def _list_array(ftype: FeatureType, lengths: list[int], values: pa.Array, mask: list[bool]) -> pa.Array:
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, values, type=ftype.arrow_type(), mask=pa.array(mask, pa.bool_()))


@st.composite
def columns(draw: Any, ftype: FeatureType, n: int) -> pa.Array:
    """``n`` values of ``ftype`` (nulls included), built from numpy so float bits stay exact.

    Null slots may hold arbitrary backing data (non-empty lists, vectors), as Arrow allows.
    """
    mask = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    np_mask = np.array(mask, dtype=bool)
    if isinstance(ftype, Bool):
        return pa.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), pa.bool_(), mask=np_mask)
    if isinstance(ftype, Int64 | Timestamp):
        ints = np.array(draw(st.lists(int64s, min_size=n, max_size=n)), dtype=np.int64)
        return pa.array(ints, pa.int64(), mask=np_mask).view(ftype.arrow_type())
    if isinstance(ftype, Float32 | Float64):
        width = 32 if isinstance(ftype, Float32) else 64
        bits = draw(st.lists(_float_bits(width), min_size=n, max_size=n))
        return pa.array(_floats_from_bits(bits, width), ftype.arrow_type(), mask=np_mask)
    if isinstance(ftype, String):
        texts = draw(st.lists(strings, min_size=n, max_size=n))
        if draw(st.booleans()):
            return pa.array([None if m else s for s, m in zip(texts, mask, strict=True)], pa.string())
        backed = pa.array(texts, pa.string())  # null slots keep their text behind the validity bitmap
        validity = pa.py_buffer(np.packbits(~np_mask, bitorder="little"))
        return pa.Array.from_buffers(pa.string(), n, [validity, *backed.buffers()[1:]])
    if isinstance(ftype, Vector):
        width = 16 if ftype.dtype == "float16" else 32
        bits = draw(st.lists(_float_bits(width), min_size=n * ftype.dim, max_size=n * ftype.dim))
        values = pa.array(_floats_from_bits(bits, width))
        return pa.FixedSizeListArray.from_arrays(values, type=ftype.arrow_type(), mask=pa.array(mask, pa.bool_()))
    rows = draw(st.lists(id_lists, min_size=n, max_size=n))
    lengths = [len(r) for r in rows]
    ids = pa.array(np.array([i for r in rows for i in r], dtype=np.int64))
    if isinstance(ftype, IdList):
        return _list_array(ftype, lengths, ids, mask)
    bits = []
    for length in lengths:  # long lists get random bit patterns: drawing 1000+ floats one by one is slow
        if length > 50:
            bits.extend(np.random.default_rng(length).integers(0, 2**32, length).tolist())
        else:
            bits.extend(draw(st.lists(_float_bits(32), min_size=length, max_size=length)))
    pairs = pa.StructArray.from_arrays([ids, pa.array(_floats_from_bits(bits, 32))], fields=list(WEIGHTED_ID_STRUCT))
    return _list_array(ftype, lengths, pairs, mask)


feature_types = st.one_of(st.sampled_from([t for t in ALL_TYPES if not isinstance(t, Vector)]),
                          st.builds(Vector, st.integers(1, 9), st.sampled_from(["float32", "float16"])))


@st.composite
def schemas(draw: Any) -> FeatureSchema:
    types = draw(st.lists(feature_types, min_size=1, max_size=10))
    return FeatureSchema.of({f"f{i}": t for i, t in enumerate(types)})


@st.composite
def tables(draw: Any, schema: FeatureSchema) -> tuple[pa.Table, pa.Table, np.ndarray]:
    """(input table, the features it should decode to, event times); input may be sliced and chunked."""
    n = draw(st.integers(0, 8))
    skip = draw(st.integers(0, 2))  # rows before the slice: inputs with a non-zero Arrow offset
    cols = {name: draw(columns(ftype, n + skip)) for name, ftype in schema}
    times = np.array(draw(st.lists(int64s, min_size=n + skip, max_size=n + skip)), dtype=np.int64)
    as_timestamp = draw(st.booleans())
    time_col = pa.array(times).view(TIMESTAMP_ARROW) if as_timestamp else pa.array(times)
    full = pa.table({"entity_id": pa.array(np.arange(n + skip)), **cols, "event_timestamp": time_col})
    table = full.slice(skip)
    if n > 1 and draw(st.booleans()):  # two chunks per column
        cut = draw(st.integers(1, n - 1))
        table = pa.concat_tables([table.slice(0, cut), table.slice(cut)])
    expected = pa.Table.from_arrays([table[name].combine_chunks() for name in schema.names],
                                    schema=schema.arrow_schema())
    return table, expected, times[skip:]


# ------------------------------------------------------------------------------------------ properties


def _check_round_trip(schema: FeatureSchema, table: pa.Table, expected: pa.Table, times: np.ndarray) -> None:
    records = encode(schema, table)
    assert len(records) == table.num_rows
    for record, t in zip(records, times.tolist(), strict=True):
        assert isinstance(record, bytes)
        assert record[0] == MAGIC and record[1] == FORMAT_VERSION
        assert record_fingerprint(record) == schema.fingerprint
        assert record_event_time_us(record) == t
        assert int.from_bytes(record[EVENT_TIME_OFFSET:EVENT_TIME_OFFSET + 8], "little", signed=True) == t
    decoded = decode(schema, records, signal="sig")
    decoded.table.validate(full=True)
    assert_identical(decoded.table, expected)
    assert decoded.event_time_us.dtype == np.int64 and decoded.event_time_us.tolist() == times.tolist()
    assert decoded.found.dtype == np.bool_ and decoded.found.all()


@pytest.mark.parametrize("ftype", ALL_TYPES, ids=str)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_is_exact_for_each_type_alone(ftype: FeatureType, data: st.DataObject) -> None:
    schema = FeatureSchema.of({"x": ftype})
    _check_round_trip(schema, *data.draw(tables(schema)))


@SETTINGS
@given(data=st.data())
def test_round_trip_is_exact_for_mixed_schemas(data: st.DataObject) -> None:
    schema = data.draw(schemas())
    _check_round_trip(schema, *data.draw(tables(schema)))


@SETTINGS
@given(data=st.data())
def test_absent_records_decode_to_all_null_rows(data: st.DataObject) -> None:
    schema = data.draw(schemas())
    table, expected, times = data.draw(tables(schema))
    records: list[bytes | None] = list(encode(schema, table))
    for at in sorted(data.draw(st.lists(st.integers(0, len(records)), max_size=4)), reverse=True):
        records.insert(at, None)
    decoded = decode(schema, records, signal="sig")
    found = np.array([r is not None for r in records], dtype=bool)
    assert decoded.found.tolist() == found.tolist()
    assert decoded.table.num_rows == len(records) and decoded.table.schema == schema.arrow_schema()
    assert_identical(decoded.table.filter(pa.array(found)), expected)
    missing = decoded.table.filter(pa.array(~found))
    assert all(column.null_count == missing.num_rows for column in missing.columns)
    assert decoded.event_time_us[found].tolist() == times.tolist()
    assert (decoded.event_time_us[~found] == 0).all()


@SETTINGS
@given(data=st.data())
def test_the_small_batch_path_and_the_numpy_path_agree_bit_for_bit(data: st.DataObject) -> None:
    """``decode`` takes a bytes-slicing path for a few records and a numpy path for more: forced onto each
    in turn, the same records give identical tables (floats by their bits), times, found and valid flags."""
    schema = data.draw(schemas())
    table, _, _ = data.draw(tables(schema))
    records: list[bytes | None] = list(encode(schema, table))
    for at in sorted(data.draw(st.lists(st.integers(0, len(records)), max_size=3)), reverse=True):
        records.insert(at, None)
    small = decode(schema, records, signal="sig", small_batch=len(records))
    numpy_path = decode(schema, records, signal="sig", small_batch=0)
    small.table.validate(full=True)
    assert_identical(small.table, numpy_path.table)
    assert small.event_time_us.tolist() == numpy_path.event_time_us.tolist()
    assert small.found.tolist() == numpy_path.found.tolist()
    assert small.valid.shape == numpy_path.valid.shape == (len(records), len(schema))
    assert small.valid.tolist() == numpy_path.valid.tolist()
    nulls = np.array([[not v for v in table.column(name).is_valid().to_pylist()] for name in schema.names])
    present = numpy_path.found
    if len(schema):
        assert (~numpy_path.valid[present]).T.tolist() == nulls.tolist()


# ------------------------------------------------------------------------------------------ examples

MIXED = FeatureSchema.of({
    "flag": Bool(), "count": Int64(), "ratio": Float32(), "score": Float64(), "name": String(),
    "seen": Timestamp(), "taste": Vector(4), "half": Vector(3, "float16"), "pins": IdList(),
    "weighted": WeightedIdList(),
})


def _table(schema: FeatureSchema, data: dict[str, list[Any]], times: list[int]) -> pa.Table:
    arrays = {name: pa.array(data[name], ftype.arrow_type()) for name, ftype in schema}
    return pa.table({**arrays, "event_timestamp": pa.array(times, pa.int64())})


def _round_trip(schema: FeatureSchema, table: pa.Table) -> pa.Table:
    decoded = decode(schema, encode(schema, table), signal="sig")
    assert decoded.found.all()
    return decoded.table


def test_special_floats_survive_bit_for_bit() -> None:
    schema = FeatureSchema.of({"f": Float32(), "d": Float64(), "v": Vector(len(_SPECIAL_F32)),
                               "h": Vector(len(_SPECIAL_F16), "float16"), "w": WeightedIdList()})
    f32 = _floats_from_bits(_SPECIAL_F32, 32)
    f64 = _floats_from_bits(_SPECIAL_F64, 64)
    n = len(_SPECIAL_F64)
    columns = {
        "f": pa.array(f32[:n]), "d": pa.array(f64),
        "v": pa.FixedSizeListArray.from_arrays(pa.array(np.tile(f32, n)), type=schema.type_of("v").arrow_type()),
        "h": pa.FixedSizeListArray.from_arrays(pa.array(np.tile(_floats_from_bits(_SPECIAL_F16, 16), n)),
                                               type=schema.type_of("h").arrow_type()),
        "w": _list_array(WeightedIdList(), [2] * n, pa.StructArray.from_arrays(
            [pa.array(np.arange(2 * n)), pa.array(np.tile(f32[:2], n))], fields=list(WEIGHTED_ID_STRUCT)),
            [False] * n),
    }
    table = pa.table({**columns, "event_timestamp": pa.array(np.zeros(n, dtype=np.int64))})
    out = _round_trip(schema, table)
    assert out["f"].combine_chunks().to_numpy().view("<u4").tolist() == _SPECIAL_F32[:n]
    assert out["d"].combine_chunks().to_numpy().view("<u8").tolist() == _SPECIAL_F64
    assert out["h"].combine_chunks().flatten().to_numpy().dtype == np.float16
    assert out["h"].combine_chunks().flatten().to_numpy().view("<u2").tolist() == _SPECIAL_F16 * n
    assert_identical(out, table.drop_columns(["event_timestamp"]))


def test_extreme_integers_and_timestamps() -> None:
    schema = FeatureSchema.of({"i": Int64(), "t": Timestamp(), "ids": IdList()})
    extremes = [INT64_MIN, INT64_MAX, -1, 0]
    table = pa.table({"i": pa.array(extremes), "t": pa.array(extremes).view(TIMESTAMP_ARROW),
                      "ids": pa.array([extremes] * 4, IdList().arrow_type()),
                      "event_timestamp": pa.array(extremes).view(TIMESTAMP_ARROW)})
    records = encode(schema, table)
    assert [record_event_time_us(r) for r in records] == extremes
    decoded = decode(schema, records)
    assert decoded.event_time_us.tolist() == extremes
    assert_identical(decoded.table, table.drop_columns(["event_timestamp"]))


def test_unicode_empty_and_null_strings() -> None:
    schema = FeatureSchema.of({"s": String()})
    values = ["", "🎉🚀", "naïve 日本語 👩🏽‍💻", None, "\x00 nul", "x" * 5000, ""]
    table = _table(schema, {"s": values}, list(range(len(values))))
    out = _round_trip(schema, table)
    assert out["s"].to_pylist() == values


def test_empty_lists_stay_empty_and_nulls_stay_null() -> None:
    schema = FeatureSchema.of({"ids": IdList(), "w": WeightedIdList(), "s": String()})
    table = _table(schema, {"ids": [[], None, [5]], "w": [None, [], [{"id": 1, "weight": 0.5}]],
                            "s": ["", None, "a"]}, [1, 2, 3])
    out = _round_trip(schema, table)
    assert out.to_pylist() == [{"ids": [], "w": None, "s": ""}, {"ids": None, "w": [], "s": None},
                               {"ids": [5], "w": [{"id": 1, "weight": 0.5}], "s": "a"}]


def test_long_id_lists() -> None:
    schema = FeatureSchema.of({"ids": IdList(), "w": WeightedIdList(), "tag": String()})
    rng = np.random.default_rng(7)
    long_ids = rng.integers(INT64_MIN, INT64_MAX, 1500, endpoint=True).tolist()
    weights = [{"id": i, "weight": float(w)} for i, w in zip(long_ids[:1200], rng.random(1200), strict=True)]
    table = _table(schema, {"ids": [long_ids, [], long_ids[:1000], None], "w": [weights, None, [], weights[:1001]],
                            "tag": ["a", "b", None, "d"]}, [1, 2, 3, 4])
    out = _round_trip(schema, table)
    assert_identical(out, table.drop_columns(["event_timestamp"]))
    assert len(out["ids"][0].as_py()) == 1500 and len(out["w"][3].as_py()) == 1001


def test_only_absent_records_and_empty_batches() -> None:
    decoded = decode(MIXED, [None, None, None])
    assert decoded.table.schema == MIXED.arrow_schema() and decoded.table.num_rows == 3
    assert all(c.null_count == 3 for c in decoded.table.columns)
    assert decoded.found.tolist() == [False] * 3 and decoded.event_time_us.tolist() == [0, 0, 0]
    empty = decode(MIXED, [])
    assert empty.table.schema == MIXED.arrow_schema() and empty.table.num_rows == 0
    assert empty.event_time_us.shape == (0,) and empty.found.shape == (0,)
    assert encode(MIXED, _table(MIXED, {name: [] for name in MIXED.names}, [])) == []


def test_wire_format_is_the_documented_layout() -> None:
    """Pin the bytes: header, bitmap, fixed section in schema order, then the payloads."""
    schema = FeatureSchema.of({"a": Int64(), "s": String(), "f": Float32(), "w": WeightedIdList(),
                               "l": IdList(), "v": Vector(2), "b": Bool(), "gone": Float64(), "t": Timestamp()})
    table = _table(schema, {"a": [7], "s": ["hé"], "f": [1.5], "w": [[{"id": 3, "weight": 0.25}]], "l": [[1, -2]],
                            "v": [[1.0, 2.0]], "b": [True], "gone": [None], "t": [-5]}, [1_700_000_000_000_001])
    (record,) = encode(schema, table)
    expected = (bytes([MAGIC, FORMAT_VERSION]) + schema.fingerprint + struct.pack("<q", 1_700_000_000_000_001)
                + struct.pack("<q", -(2**63))          # no created_timestamp column: null, the oldest
                + bytes([0b0111_1111, 0b0000_0001])  # 9 features: all present but "gone" (bit 7)
                + struct.pack("<qIfIIffBdq", 7, 3, 1.5, 1, 2, 1.0, 2.0, 1, 0.0, -5)
                + "hé".encode() + struct.pack("<qf", 3, 0.25) + struct.pack("<qq", 1, -2))
    assert record == expected
    assert (HEADER_SIZE, EVENT_TIME_OFFSET, CREATED_TIME_OFFSET, FORMAT_VERSION) == (26, 10, 18, 2)


@pytest.mark.parametrize("n", [3, 40], ids=["small batch path", "numpy path"])
def test_created_time_is_in_the_header_and_read_back_on_both_paths(n: int) -> None:
    """The header's created time (issue 13): a value, a null (int64 min), extremes; absent records read as null."""
    schema = FeatureSchema.of({"x": Int64()})
    made = [None, -(2**63) + 1, 2**63 - 1, 0, 1_767_225_600_000_001] * n
    table = pa.table({"x": list(range(len(made))), "event_timestamp": pa.array([5] * len(made), pa.int64()),
                      "created_timestamp": pa.array(made, pa.int64()).cast(TIMESTAMP_ARROW)})[:n]
    records = encode(schema, table)
    assert [record_created_time_us(r) for r in records] == made[:n]
    assert [struct.unpack_from("<q", r, CREATED_TIME_OFFSET)[0] for r in records] == [
        -(2**63) if m is None else m for m in made[:n]]
    decoded = decode(schema, [*records, None])
    assert decoded.created_time_us.tolist() == [-(2**63) if m is None else m for m in made[:n]] + [-(2**63)]
    assert decoded.table.column("x").to_pylist() == [*range(n), None]


def test_record_batches_and_compatible_types_are_accepted() -> None:
    schema = FeatureSchema.of({"i": Int64(), "f": Float32(), "s": String(), "ids": IdList(), "v": Vector(2),
                               "t": Timestamp()})
    batch = pa.record_batch({
        "i": pa.array([1, None], pa.int32()), "f": pa.array([0.5, 2.0], pa.float64()),
        "s": pa.array(["a", "b"], pa.large_string()), "ids": pa.array([[1], []], pa.list_(pa.int32())),
        "v": pa.array([[1.0, 2.0], None], pa.list_(pa.float64())),
        "t": pa.array([1_000, None], pa.timestamp("ns")),
        "event_timestamp": pa.array([3_000, 4_000], pa.timestamp("ns")),
        "ignored": pa.array(["x", "y"]),
    })
    decoded = decode(schema, encode(schema, batch))
    assert decoded.table.to_pylist()[0] == {"i": 1, "f": 0.5, "s": "a", "ids": [1], "v": [1.0, 2.0],
                                            "t": pa.scalar(1, TIMESTAMP_ARROW).as_py()}
    assert decoded.table.to_pylist()[1]["i"] is None and decoded.table.to_pylist()[1]["v"] is None
    assert decoded.event_time_us.tolist() == [3, 4]


def test_custom_event_time_column_and_naive_timestamps() -> None:
    schema = FeatureSchema.of({"x": Int64()})
    table = pa.table({"x": [1, 2], "ts": pa.array([10, 20], pa.timestamp("us"))})
    assert [record_event_time_us(r) for r in encode(schema, table, event_time_column="ts")] == [10, 20]


def test_decodes_100k_records_of_a_mixed_schema() -> None:
    n = 100_000
    rng = np.random.default_rng(42)
    lengths = rng.integers(0, 20, n)
    total = int(lengths.sum())
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    nulls = pa.array(rng.random(n) < 0.1)
    table = pa.table({
        "flag": pa.array(rng.random(n) < 0.5),
        "count": pa.array(rng.integers(INT64_MIN, INT64_MAX, n, endpoint=True), mask=rng.random(n) < 0.1),
        "ratio": pa.array(rng.standard_normal(n).astype(np.float32)),
        "score": pa.array(rng.standard_normal(n)),
        "name": pa.array([f"user-{i}-é" if i % 7 else None for i in range(n)], pa.string()),
        "seen": pa.array(rng.integers(0, 2**50, n)).view(TIMESTAMP_ARROW),
        "taste": pa.FixedSizeListArray.from_arrays(pa.array(rng.standard_normal(4 * n).astype(np.float32)),
                                                   type=Vector(4).arrow_type(), mask=nulls),
        "half": pa.FixedSizeListArray.from_arrays(pa.array(rng.standard_normal(3 * n).astype(np.float16)),
                                                  type=Vector(3, "float16").arrow_type()),
        "pins": pa.ListArray.from_arrays(offsets, pa.array(rng.integers(0, 10**12, total)),
                                         type=IdList().arrow_type(), mask=nulls),
        "weighted": pa.ListArray.from_arrays(offsets, pa.StructArray.from_arrays(
            [pa.array(rng.integers(0, 10**12, total)), pa.array(rng.random(total).astype(np.float32))],
            fields=list(WEIGHTED_ID_STRUCT)), type=WeightedIdList().arrow_type()),
        "event_timestamp": pa.array(rng.integers(0, 2**52, n)),
    })
    records: list[bytes | None] = list(encode(MIXED, table))
    records[::10] = [None] * len(records[::10])
    decoded = decode(MIXED, records, signal="big")
    found = np.ones(n, dtype=bool)
    found[::10] = False
    assert decoded.table.num_rows == n and decoded.found.tolist() == found.tolist()
    expected = pa.Table.from_arrays([table[c] for c in MIXED.names], schema=MIXED.arrow_schema())
    assert_identical(decoded.table.filter(pa.array(found)), expected.filter(pa.array(found)))
    assert decoded.event_time_us[found].tolist() == table["event_timestamp"].to_numpy()[found].tolist()
    assert decoded.table.filter(pa.array(~found))["weighted"].null_count == n // 10


def test_nulls_write_zeros_whatever_backs_them() -> None:
    """Arrow may keep any data behind a null slot; the record must not depend on it."""
    schema = FeatureSchema.of({"b": Bool(), "i": Int64(), "f": Float32(), "s": String(), "v": Vector(2),
                               "ids": IdList(), "w": WeightedIdList()})
    validity = pa.py_buffer(np.packbits([True, False, True], bitorder="little"))

    def masked(arr: pa.Array) -> pa.Array:
        own = arr.buffers()[1:arr.type.num_buffers]
        return pa.Array.from_buffers(arr.type, len(arr), [validity, *own], children=(
            [arr.values] if pa.types.is_fixed_size_list(arr.type) or pa.types.is_list(arr.type) else None))

    backed = {
        "b": pa.array([True, True, False]), "i": pa.array([1, 99, 3]), "f": pa.array([1.0, 9.5, 3.0], pa.float32()),
        "s": pa.array(["a", "garbage", "c"]), "v": pa.array([[1.0, 2.0], [7.0, 8.0], [3.0, 4.0]],
                                                            Vector(2).arrow_type()),
        "ids": pa.array([[1], [9, 9], [3]], IdList().arrow_type()),
        "w": pa.array([[], [{"id": 9, "weight": 9.0}], []], WeightedIdList().arrow_type()),
    }
    clean = {name: pa.array([arr[0].as_py(), None, arr[2].as_py()], arr.type) for name, arr in backed.items()}
    times = pa.array([1, 2, 3])
    dirty_records = encode(schema, pa.table({**{k: masked(a) for k, a in backed.items()}, "event_timestamp": times}))
    clean_records = encode(schema, pa.table({**clean, "event_timestamp": times}))
    assert dirty_records == clean_records
    assert decode(schema, dirty_records).table.to_pylist()[1] == dict.fromkeys(schema.names)
