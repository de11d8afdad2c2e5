"""The UFR torch batch builder: Arrow -> FeatureBatch -> Arrow is exact for every type, tensors equal the
Arrow values row for row, id lists feed nn.EmbeddingBag, and collate/split are inverses."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quasar.signals.errors import DefinitionError, SchemaError
from quasar.signals.ufr.schema import FeatureSchema
from quasar.signals.ufr.tensors import (
    FeatureBatch,
    InputSpec,
    build_feature_batch,
    collate_feature_batches,
    feature_batch_to_arrow,
    split_feature_batch,
)
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

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_WIDTH = {16: ("<u2", "<f2"), 32: ("<u4", "<f4"), 64: ("<u8", "<f8")}
_TORCH_BITS = {torch.float16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64}

# ------------------------------------------------------------------------------------------ comparisons


def _bits_type(t: pa.DataType) -> pa.DataType:
    """``t`` with floats replaced by unsigned ints of their width, so Arrow equality compares bits (nested
    fields made nullable: a null row may be backed by null elements; the schema check covers nullability)."""
    if pa.types.is_floating(t):
        return {16: pa.uint16(), 32: pa.uint32(), 64: pa.uint64()}[t.bit_width]
    if pa.types.is_fixed_size_list(t) or pa.types.is_list(t):
        f = t.value_field
        item = pa.field(f.name, _bits_type(f.type))
        return pa.list_(item, t.list_size) if pa.types.is_fixed_size_list(t) else pa.list_(item)
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _bits_type(f.type)) for f in t])
    return t


def assert_tables_identical(actual: pa.Table, expected: pa.Table) -> None:
    """Same schema (nested nullability included), same nulls, same values, floats bit for bit."""
    assert actual.schema == expected.schema
    assert actual.num_rows == expected.num_rows
    for name in expected.column_names:
        a, e = actual[name].combine_chunks(), expected[name].combine_chunks()
        bits = _bits_type(e.type)
        assert a.view(bits).equals(e.view(bits)), f"column {name!r} differs:\n{a}\n!=\n{e}"


def _tensor_bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(_TORCH_BITS[t.dtype]) if t.dtype in _TORCH_BITS else t


def assert_tensors_identical(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(_tensor_bits(a), _tensor_bits(b))


def assert_batches_identical(a: FeatureBatch, b: FeatureBatch) -> None:
    assert a.size == b.size and a.dense_names == b.dense_names
    assert_tensors_identical(a.dense, b.dense)
    assert_tensors_identical(a.dense_mask, b.dense_mask)
    for mine, theirs in ((a.scalars, b.scalars), (a.vectors, b.vectors), (a.masks, b.masks)):
        assert list(mine) == list(theirs)
        for k in mine:
            assert_tensors_identical(mine[k], theirs[k])
    assert list(a.id_lists) == list(b.id_lists)
    for k, bags in a.id_lists.items():
        other = b.id_lists[k]
        assert_tensors_identical(bags.values, other.values)
        assert_tensors_identical(bags.offsets, other.offsets)
        assert (bags.weights is None) == (other.weights is None)
        if bags.weights is not None and other.weights is not None:
            assert_tensors_identical(bags.weights, other.weights)
    assert a.strings == b.strings


# ------------------------------------------------------------------------------------------ strategies

def _float_bits(width: int) -> st.SearchStrategy[int]:
    """Any bit pattern (NaN payloads, infinities, subnormals) or a plain float of that width."""
    udtype, fdtype = _WIDTH[width]
    plain = st.floats(width=width).map(lambda x: int(np.array([x], dtype=fdtype).view(udtype)[0]))
    return st.one_of(st.integers(0, 2**width - 1), plain)


def _floats(bits: list[int], width: int) -> np.ndarray:
    udtype, fdtype = _WIDTH[width]
    return np.array(bits, dtype=udtype).view(fdtype)


def _validity(nulls: list[bool]) -> pa.Buffer | None:
    return pa.array([not x for x in nulls], pa.bool_()).buffers()[1] if any(nulls) else None


@dataclass
class Column:
    """A generated column: its Arrow array and the rows as plain Python (floats as bit patterns)."""

    array: pa.Array
    rows: list[Any]


ids_any = st.integers(INT64_MIN, INT64_MAX)
ANY_ID = (INT64_MIN, INT64_MAX)


@st.composite
def columns(draw: st.DrawFn, ftype: FeatureType, n: int, id_range: tuple[int, int] = ANY_ID) -> Column:
    """``n`` rows of ``ftype`` with nulls; null list/vector rows keep non-empty backing data on purpose.
    Long id lists take their ids from a seeded generator, to keep hypothesis's input small."""
    nulls = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    t = ftype.arrow_type()
    if isinstance(ftype, Bool):
        vals = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        arr = pa.array(vals, pa.bool_(), mask=np.array(nulls, np.bool_))
        return Column(arr, [None if m else v for v, m in zip(vals, nulls, strict=True)])
    if isinstance(ftype, Int64 | Timestamp | Float32 | Float64):
        if isinstance(ftype, Float32 | Float64):
            width = 32 if isinstance(ftype, Float32) else 64
            vals = draw(st.lists(_float_bits(width), min_size=n, max_size=n))
            data = _floats(vals, width)
        else:
            vals = draw(st.lists(ids_any, min_size=n, max_size=n))
            data = np.array(vals, np.int64)
        arr = pa.Array.from_buffers(t, n, [_validity(nulls), pa.py_buffer(data)])
        return Column(arr, [None if m else v for v, m in zip(vals, nulls, strict=True)])
    if isinstance(ftype, String):
        vals = draw(st.lists(st.text(max_size=8), min_size=n, max_size=n))
        rows = [None if m else v for v, m in zip(vals, nulls, strict=True)]
        return Column(pa.array(rows, pa.string()), rows)
    mask = pa.array(nulls, pa.bool_()) if any(nulls) else None
    if isinstance(ftype, Vector):
        width = 16 if ftype.dtype == "float16" else 32
        bits = draw(st.lists(_float_bits(width), min_size=n * ftype.dim, max_size=n * ftype.dim))
        child = pa.array(_floats(bits, width))
        arr = pa.FixedSizeListArray.from_arrays(child, type=t, mask=mask)
        rows = [None if m else bits[i * ftype.dim:(i + 1) * ftype.dim] for i, m in enumerate(nulls)]
        return Column(arr, rows)
    lengths = draw(st.lists(st.one_of(st.integers(0, 4), st.integers(0, 3).map(lambda k: 60 * k)),
                            min_size=n, max_size=n))
    weighted = isinstance(ftype, WeightedIdList)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    id_vals: list[int] = []
    w_bits: list[int] = []
    for length in lengths:
        if length <= 4:
            id_vals += draw(st.lists(st.integers(*id_range), min_size=length, max_size=length))
            w_bits += draw(st.lists(_float_bits(32), min_size=length, max_size=length)) if weighted else []
        else:
            id_vals += rng.integers(*id_range, length, endpoint=True).tolist()
            w_bits += rng.integers(0, 2**32, length).tolist() if weighted else []
    ends = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values: pa.Array = pa.array(id_vals, pa.int64())
    items: list[Any] = id_vals
    if weighted:
        values = pa.StructArray.from_arrays([values, pa.array(_floats(w_bits, 32))], fields=list(WEIGHTED_ID_STRUCT))
        items = list(zip(id_vals, w_bits, strict=True))
    arr = pa.ListArray.from_arrays(pa.array(ends), values, type=t, mask=mask)
    rows = [None if m else items[ends[i]:ends[i + 1]] for i, m in enumerate(nulls)]
    return Column(arr, rows)


ALL_TYPES: list[FeatureType] = [Bool(), Int64(), Float32(), Float64(), Timestamp(), String(), Vector(3),
                                Vector(2, "float16"), IdList(), WeightedIdList()]


@dataclass
class World:
    spec: InputSpec
    table: pa.Table                 # possibly sliced and in several chunks
    rows: dict[str, list[Any]]      # the table's rows per column, plain Python


@st.composite
def worlds(draw: st.DrawFn, types: list[FeatureType] | None = None, id_range: tuple[int, int] = ANY_ID,
           max_rows: int = 12) -> World:
    """A table of every type (or ``types``), sliced at a random non-zero offset and cut into chunks."""
    types = types or ALL_TYPES
    n = draw(st.integers(0, max_rows))
    pre, post = draw(st.integers(0, 3)), draw(st.integers(0, 2))
    spec = InputSpec(features=tuple((f"c{i}_{t.kind}", t) for i, t in enumerate(types)))
    cols = {name: draw(columns(t, pre + n + post, id_range)) for name, t in spec.features}
    table = pa.table({k: c.array for k, c in cols.items()}).slice(pre, n)
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=2)))
    bounds = [0, *cuts, n]
    table = pa.concat_tables([table.slice(a, b - a) for a, b in itertools.pairwise(bounds)])
    return World(spec, table, {k: c.rows[pre:pre + n] for k, c in cols.items()})


# ------------------------------------------------------------------------------------------ round trips

@SETTINGS
@given(worlds())
def test_arrow_tensors_arrow_is_exact_for_every_type(world: World) -> None:
    batch = build_feature_batch(world.table, world.spec)
    assert_tables_identical(feature_batch_to_arrow(batch, world.spec), world.table.combine_chunks())


@SETTINGS
@given(worlds())
def test_record_batch_input_gives_the_same_batch(world: World) -> None:
    table = world.table.combine_chunks()
    record_batch = table.to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], table.schema)
    assert_batches_identical(build_feature_batch(record_batch, world.spec), build_feature_batch(table, world.spec))


@SETTINGS
@given(worlds())
def test_tensor_values_equal_the_arrow_values_row_for_row(world: World) -> None:
    batch = build_feature_batch(world.table, world.spec)
    assert batch.size == world.table.num_rows
    for name, ftype in world.spec.features:
        rows = world.rows[name]
        assert batch.masks[name].dtype == torch.bool
        assert batch.masks[name].tolist() == [r is not None for r in rows]
        if ftype.is_scalar:
            t = batch.scalars[name]
            assert t.dtype == {"bool": torch.bool, "int64": torch.int64, "timestamp": torch.int64,
                               "float32": torch.float32, "float64": torch.float64}[ftype.kind]
            assert _tensor_bits(t).tolist() == [_signed(r, t.dtype) if r is not None else 0 for r in rows]
        elif isinstance(ftype, Vector):
            t = batch.vectors[name]
            assert t.dtype == (torch.float16 if ftype.dtype == "float16" else torch.float32)
            assert t.shape == (len(rows), ftype.dim)
            assert _tensor_bits(t).tolist() == [[_signed(v, t.dtype) for v in r] if r is not None
                                                else [0] * ftype.dim for r in rows]
        elif isinstance(ftype, IdList | WeightedIdList):
            bags = batch.id_lists[name]
            assert bags.values.dtype == torch.int64 and bags.offsets.dtype == torch.int64
            assert bags.offsets.shape == (len(rows),)
            bounds = [*bags.offsets.tolist(), bags.values.shape[0]]
            for i, r in enumerate(rows):
                got = bags.values[bounds[i]:bounds[i + 1]].tolist()
                if isinstance(ftype, IdList):
                    assert got == (r or [])
                    assert bags.weights is None
                else:
                    assert bags.weights is not None and bags.weights.dtype == torch.float32
                    weights = _tensor_bits(bags.weights[bounds[i]:bounds[i + 1]]).tolist()
                    assert list(zip(got, weights, strict=True)) == [(k, _signed(w, torch.float32))
                                                                    for k, w in (r or [])]
        else:
            assert batch.strings[name] == rows


def _signed(bits: int | bool, dtype: torch.dtype) -> int:
    """An unsigned bit pattern as the signed int torch's ``view`` gives (ints and bools unchanged)."""
    width = {torch.float16: 16, torch.float32: 32, torch.float64: 64}.get(dtype)
    if width is None or isinstance(bits, bool):
        return int(bits)
    return bits - (1 << width) if bits >= 1 << (width - 1) else bits


def test_zero_row_table_gives_empty_tensors_of_the_right_shapes() -> None:
    spec = InputSpec(features=tuple((f"c{i}", t) for i, t in enumerate(ALL_TYPES)))
    table = spec_table(spec, 0)
    batch = build_feature_batch(table, spec)
    assert batch.size == 0 and batch.dense.shape == (0, 4) and batch.dense_mask.shape == (0, 4)
    assert batch.vectors["c6"].shape == (0, 3) and batch.vectors["c7"].dtype == torch.float16
    assert batch.id_lists["c8"].values.shape == (0,) and batch.id_lists["c8"].offsets.shape == (0,)
    assert batch.id_lists["c9"].weights is not None and batch.id_lists["c9"].weights.shape == (0,)
    assert batch.strings["c5"] == []
    assert_tables_identical(feature_batch_to_arrow(batch, spec), table)


def spec_table(spec: InputSpec, n: int) -> pa.Table:
    return pa.table({name: pa.nulls(n, t.arrow_type()) for name, t in spec.features},
                    schema=pa.schema([pa.field(name, t.arrow_type()) for name, t in spec.features]))


def test_all_null_rows_are_zeros_and_empty_bags() -> None:
    spec = InputSpec(features=tuple((f"c{i}", t) for i, t in enumerate(ALL_TYPES)))
    batch = build_feature_batch(spec_table(spec, 3), spec)
    assert not any(m.any() for m in batch.masks.values())
    assert batch.dense.eq(0).all() and not batch.dense_mask.any()
    assert all(t.eq(0).all() for t in (*batch.scalars.values(), *batch.vectors.values()))
    assert batch.id_lists["c8"].offsets.tolist() == [0, 0, 0] and batch.id_lists["c8"].values.numel() == 0
    assert batch.strings["c5"] == [None, None, None]


def test_long_id_lists_and_slices_inside_list_children() -> None:
    """A list array whose child is itself sliced, sliced again, with a null row backed by 10,000 ids."""
    child = pa.array(np.arange(-5, 20_000, dtype=np.int64)).slice(5)
    ends = pa.array([0, 10_000, 10_003, 20_000, 20_000], pa.int32())
    arr = pa.ListArray.from_arrays(ends, child, type=IdList().arrow_type(),
                                   mask=pa.array([False, True, False, False])).slice(1)
    spec = InputSpec(features=(("ids", IdList()),))
    bags = build_feature_batch(pa.table({"ids": arr}), spec).id_lists["ids"]
    assert bags.offsets.tolist() == [0, 0, 9_997]
    assert bags.values.tolist() == list(range(10_003, 20_000))


# ------------------------------------------------------------------------------------------ EmbeddingBag

@SETTINGS
@given(worlds(types=[IdList(), WeightedIdList()], id_range=(0, 29)))
def test_embedding_bag_sum_equals_a_per_row_python_sum(world: World) -> None:
    torch.manual_seed(0)
    bag = torch.nn.EmbeddingBag(30, 5, mode="sum")
    batch = build_feature_batch(world.table, world.spec)
    table = bag.weight.detach().double()
    for name, ftype in world.spec.features:
        ids = batch.id_lists[name]
        weighted = isinstance(ftype, WeightedIdList)
        weights = None
        if weighted:   # the generated weights are any bit pattern; use tame ones of the same shape
            assert ids.weights is not None
            weights = torch.linspace(-2, 2, ids.values.numel(), dtype=torch.float32)
        with torch.no_grad():
            out = bag(ids.values, ids.offsets, per_sample_weights=weights)
        assert out.shape == (len(world.rows[name]), 5)
        expected = torch.zeros(len(world.rows[name]), 5, dtype=torch.float64)
        k = 0
        for i, row in enumerate(world.rows[name]):
            for item in row or []:
                rid = item[0] if weighted else item
                w = float(weights[k]) if weights is not None else 1.0
                expected[i] += w * table[rid]
                k += 1
        assert k == ids.values.numel()
        torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_embedding_bag_uses_the_stored_weights() -> None:
    values = pa.array([[{"id": 1, "weight": 0.5}, {"id": 2, "weight": 2.0}], None, [], [{"id": 0, "weight": -1.0}]],
                      WeightedIdList().arrow_type())
    spec = InputSpec(features=(("w", WeightedIdList()),))
    ids = build_feature_batch(pa.table({"w": values}), spec).id_lists["w"]
    weight = torch.arange(9, dtype=torch.float32).reshape(3, 3)
    bag = torch.nn.EmbeddingBag.from_pretrained(weight, mode="sum")
    out = bag(ids.values, ids.offsets, per_sample_weights=ids.weights)
    expected = torch.stack([0.5 * weight[1] + 2.0 * weight[2], torch.zeros(3), torch.zeros(3), -weight[0]])
    assert torch.equal(out, expected)


# ------------------------------------------------------------------------------------------ dense block

def test_dense_block_order_values_and_masks() -> None:
    table = pa.table({
        "f": pa.array([1.5, None, float("nan")], pa.float32()), "i": pa.array([None, 7, -3], pa.int64()),
        "b": pa.array([True, False, None]), "d": pa.array([0.25, 1e300, None], pa.float64()),
        "ts": pa.array([1, 2, 3], TIMESTAMP_ARROW), "v": pa.array([[1.0], [2.0], None], Vector(1).arrow_type()),
    })
    features = (("f", Float32()), ("i", Int64()), ("b", Bool()), ("d", Float64()), ("ts", Timestamp()),
                ("v", Vector(1)))
    default = build_feature_batch(table, InputSpec(features=features))
    assert default.dense_names == ["f", "i", "b", "d"]            # scalar numerics only, in spec order
    assert default.dense.dtype == torch.float32 and default.dense_mask.dtype == torch.bool
    expected = np.array([[1.5, 0, 1, 0.25], [0, 7, 0, np.inf], [np.nan, -3, 0, 0]], np.float32)
    np.testing.assert_array_equal(default.dense.numpy(), expected)
    assert default.dense_mask.tolist() == [[True, False, True, True], [False, True, True, True],
                                           [True, True, False, False]]
    chosen = build_feature_batch(table, InputSpec(features=features, dense=("d", "b")))
    assert chosen.dense_names == ["d", "b"]
    np.testing.assert_array_equal(chosen.dense.numpy(), expected[:, [3, 2]])
    assert chosen.dense_mask.tolist() == [[True, True], [True, True], [False, False]]
    assert set(chosen.scalars) == {"f", "i", "b", "d", "ts"} and chosen.scalars["d"].dtype == torch.float64
    empty = build_feature_batch(table, InputSpec(features=features, dense=()))
    assert empty.dense.shape == (3, 0) and empty.dense_names == []


def test_dense_spec_errors_name_the_column() -> None:
    features = (("x", Float32()), ("t", Timestamp()), ("s", String()))
    with pytest.raises(DefinitionError, match="'t'"):
        InputSpec(features=features, dense=("t",))
    with pytest.raises(DefinitionError, match="'nope'"):
        InputSpec(features=features, dense=("nope",))
    with pytest.raises(DefinitionError, match="twice"):
        InputSpec(features=features, dense=("x", "x"))
    with pytest.raises(DefinitionError, match="twice"):
        InputSpec(features=(("x", Float32()), ("x", Int64())))
    with pytest.raises(DefinitionError, match="'y'"):
        InputSpec(features=(("y", Float32),))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ collate, split

@SETTINGS
@given(worlds(max_rows=20), st.data())
def test_collate_and_split_are_inverses(world: World, data: st.DataObject) -> None:
    table = world.table.combine_chunks()
    n = table.num_rows
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=4)))
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
    starts = np.cumsum([0, *sizes[:-1]]).tolist()
    pieces = [build_feature_batch(table.slice(a, s), world.spec) for a, s in zip(starts, sizes, strict=True)]
    whole = collate_feature_batches(pieces)
    assert_batches_identical(whole, build_feature_batch(table, world.spec))
    for piece, back in zip(pieces, split_feature_batch(whole, sizes), strict=True):
        assert_batches_identical(back, piece)
        assert_tables_identical(feature_batch_to_arrow(back, world.spec), feature_batch_to_arrow(piece, world.spec))


def test_collate_and_split_errors() -> None:
    a = build_feature_batch(pa.table({"x": pa.array([1.0], pa.float32())}), InputSpec(features=(("x", Float32()),)))
    b = build_feature_batch(pa.table({"y": pa.array([1.0], pa.float32())}), InputSpec(features=(("y", Float32()),)))
    with pytest.raises(SchemaError, match="at least one"):
        collate_feature_batches([])
    with pytest.raises(SchemaError, match="batch 1"):
        collate_feature_batches([a, b])
    with pytest.raises(SchemaError, match="sum to"):
        split_feature_batch(a, [2])


def test_to_and_pin_memory_keep_every_value() -> None:
    world_spec = InputSpec(features=(("v", Vector(2, "float16")), ("w", WeightedIdList()), ("s", String())))
    table = pa.table({"v": pa.array([[1.0, 2.0], None], world_spec.type_of("v").arrow_type()),
                      "w": pa.array([[{"id": 3, "weight": 1.0}], None], WeightedIdList().arrow_type()),
                      "s": ["a", None]})
    batch = build_feature_batch(table, world_spec)
    for moved in (batch.to("cpu"), batch.to(torch.device("cpu"), non_blocking=True), batch.pin_memory()):
        assert_batches_identical(moved, batch)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_round_trip_through_pinned_memory() -> None:
    spec = InputSpec(features=tuple((f"c{i}", t) for i, t in enumerate(ALL_TYPES)))
    table = pa.table(dict(zip(spec.names, _fixed_columns(spec), strict=True)))
    batch = build_feature_batch(table, spec)
    pinned = batch.pin_memory()
    assert pinned.dense.is_pinned() and pinned.id_lists["c9"].values.is_pinned()
    on_gpu = pinned.to("cuda", non_blocking=True)
    assert on_gpu.dense.is_cuda and on_gpu.id_lists["c8"].offsets.is_cuda and on_gpu.masks["c0"].is_cuda
    both = collate_feature_batches([on_gpu, on_gpu])
    back = [b.to("cpu") for b in split_feature_batch(both, [1, 2 * batch.size - 1])]
    assert_batches_identical(collate_feature_batches(back), collate_feature_batches([batch, batch]))
    assert_tables_identical(feature_batch_to_arrow(on_gpu, spec), table)


def _fixed_columns(spec: InputSpec) -> list[pa.Array]:
    rng = np.random.default_rng(1)
    return [_one_column(t, rng) for _, t in spec.features]


def _one_column(t: FeatureType, rng: np.random.Generator) -> pa.Array:
    n = 5
    mask = pa.array([False, True, False, False, True])
    if isinstance(t, Vector):
        return pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=n * t.dim).astype(t.element_numpy_dtype)),
                                                 type=t.arrow_type(), mask=mask)
    if isinstance(t, IdList | WeightedIdList):
        return pa.array([[{"id": 1, "weight": 0.5}], None, [], [{"id": 2, "weight": 1.5}] * 3, None]
                        if isinstance(t, WeightedIdList) else [[1, 2], None, [], [3], None], t.arrow_type())
    if isinstance(t, String):
        return pa.array(["a", None, "", "d", None])
    if isinstance(t, Bool):
        return pa.array([True, None, False, True, None])
    data = rng.integers(-100, 100, n).astype(t.numpy_dtype)
    return pa.Array.from_buffers(t.arrow_type(), n, [_validity([False, True, False, False, True]),
                                                     pa.py_buffer(data)])


# ------------------------------------------------------------------------------------------ memory

def test_no_copy_for_null_free_columns_and_arrow_memory_is_never_written() -> None:
    flat = np.arange(12, dtype=np.float32)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(flat), type=Vector(3).arrow_type(),
                                                mask=pa.array([False, True, False, False]))
    ints = pa.array(np.arange(10, dtype=np.int64)).slice(2)
    spec = InputSpec(features=(("v", Vector(3)), ("i", Int64())))
    batch = build_feature_batch(pa.table({"v": vectors.slice(1), "i": ints.slice(0, 3)}), spec)
    assert batch.scalars["i"].data_ptr() == ints.buffers()[1].address + 2 * 8     # shared, offset respected
    assert batch.vectors["v"].tolist() == [[0, 0, 0], [6, 7, 8], [9, 10, 11]]
    np.testing.assert_array_equal(np.frombuffer(vectors.values.buffers()[1], np.float32), flat)  # untouched


def test_building_raises_no_warnings() -> None:
    spec = InputSpec(features=tuple((f"c{i}", t) for i, t in enumerate(ALL_TYPES)))
    table = pa.table(dict(zip(spec.names, _fixed_columns(spec), strict=True)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = build_feature_batch(table, spec)
    assert batch.size == 5


def test_importing_signals_does_not_import_torch() -> None:
    code = ("import sys, quasar.signals, quasar.signals.ufr.codec, quasar.signals.ufr.schema, quasar.signals.ufr.infer; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------ spec

def test_input_spec_round_trips_through_json() -> None:
    spec = InputSpec(features=tuple((f"col_{i}", t) for i, t in enumerate(ALL_TYPES)), dense=("col_3", "col_0"))
    again = InputSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.dense == ("col_3", "col_0")
    default = InputSpec(features=spec.features)
    assert InputSpec.from_dict(json.loads(json.dumps(default.to_dict()))) == default
    assert default.dense_columns == ("col_0", "col_1", "col_2", "col_3")


def test_input_spec_from_schema_keeps_order_and_types() -> None:
    schema = FeatureSchema.of({"clicks": Int64(), "taste": Vector(4, "float16"), "pins": IdList(), "ctr": Float32()})
    spec = InputSpec.from_schema(schema, dense=["ctr"])
    assert spec.features == schema.fields and spec.dense == ("ctr",)
    assert InputSpec.from_schema(schema).dense_columns == ("clicks", "ctr")
    with pytest.raises(DefinitionError):
        InputSpec.from_dict({"nope": 1})


# ------------------------------------------------------------------------------------------ columns, types

def test_missing_column_is_named() -> None:
    spec = InputSpec(features=(("x", Float32()), ("recent_pins", IdList())))
    with pytest.raises(SchemaError, match=r"'recent_pins'.*missing"):
        build_feature_batch(pa.table({"x": pa.array([1.0], pa.float32())}), spec)


@pytest.mark.parametrize(("ftype", "array", "needle"), [
    (Vector(2, "float16"), pa.array([[1.0, 2.0]], pa.list_(pa.float32(), 2)), "float16"),
    (Vector(2, "float16"), pa.array([[1.0, 2.0]], pa.list_(pa.float32())), "float16"),
    (Vector(2), pa.array([[1.0, 2.0]], pa.list_(pa.float64(), 2)), "vector"),
    (Vector(3), pa.array([[1.0, 2.0]], pa.list_(pa.float32(), 2)), "vector"),
    (Vector(2), pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float32())), "cannot be read exactly"),
    (Float32(), pa.array([0.1], pa.float64()), "float32"),
    (Int64(), pa.array([1.0], pa.float64()), "int64"),
    (Int64(), pa.array([2**63], pa.uint64()), "cannot be read exactly"),
    (Int64(), pa.array(["1"]), "int64"),
    (Bool(), pa.array([1], pa.int8()), "bool"),
    (String(), pa.array([b"x"], pa.binary()), "string"),
    (Timestamp(), pa.array([1_001], pa.timestamp("ns", tz="UTC")), "cannot be read exactly"),
    (Timestamp(), pa.array([1], pa.int64()), "timestamp"),
    (IdList(), pa.array([[1.0]], pa.list_(pa.float64())), "id_list"),
    (IdList(), pa.array([[1, None]], pa.list_(pa.int64())), "null element"),
    (Vector(2), pa.array([[1.0, None]], pa.list_(pa.float32(), 2)), "null element"),
    (WeightedIdList(), pa.array([[{"id": 1, "w": 1.0}]]), "weighted_id_list"),
    (WeightedIdList(), pa.array([[{"id": 1, "weight": None}]],
                                pa.list_(pa.struct([("id", pa.int64()), ("weight", pa.float32())]))), "null element"),
])
def test_incompatible_columns_are_refused_by_name(ftype: FeatureType, array: pa.Array, needle: str) -> None:
    spec = InputSpec(features=(("feat_x", ftype),))
    with pytest.raises(SchemaError, match=f"'feat_x'.*{needle}"):
        build_feature_batch(pa.table({"feat_x": array}), spec)


def test_null_elements_under_null_rows_are_fine() -> None:
    arr = pa.ListArray.from_arrays(pa.array([0, 2, 3], pa.int32()), pa.array([None, None, 5], pa.int64()),
                                   mask=pa.array([True, False]))
    bags = build_feature_batch(pa.table({"x": arr}), InputSpec(features=(("x", IdList()),))).id_lists["x"]
    assert bags.values.tolist() == [5] and bags.offsets.tolist() == [0, 0]


@pytest.mark.parametrize(("ftype", "array", "expected"), [
    (Int64(), pa.array([1, None, -3], pa.int32()), pa.array([1, None, -3], pa.int64())),
    (Int64(), pa.array([2**63 - 1], pa.uint64()), pa.array([2**63 - 1], pa.int64())),
    (Float64(), pa.array([0.1, None], pa.float32()), pa.array([np.float32(0.1), None], pa.float64())),
    (String(), pa.array(["a", None], pa.large_string()), pa.array(["a", None])),
    (String(), pa.array(["a", "b", "a"]).dictionary_encode(), pa.array(["a", "b", "a"])),
    (Float32(), pa.nulls(2), pa.nulls(2, pa.float32())),
    (Timestamp(), pa.array([5], pa.timestamp("ms")), pa.array([5_000], TIMESTAMP_ARROW)),
    (Timestamp(), pa.array([7_000], pa.timestamp("ns", tz="America/New_York")), pa.array([7], TIMESTAMP_ARROW)),
    (Vector(2), pa.array([[1.0, 2.0], None, [3.0, 4.0]], pa.list_(pa.float32())), None),
    (Vector(2), pa.array([[1.0, 2.0], None], pa.large_list(pa.float16())), None),
    (Vector(2, "float16"), pa.array([[1.0, 2.0]], pa.list_(pa.field("element", pa.float16()), 2)), None),
    (IdList(), pa.array([[1, 2], None, []], pa.list_(pa.field("element", pa.int32()))), None),
    (IdList(), pa.array([[1, 2], None], pa.large_list(pa.uint8())), None),
    (WeightedIdList(), pa.array([[{"weight": 0.5, "id": 9}], None],
                                pa.list_(pa.struct([("weight", pa.float16()), ("id", pa.int32())]))), None),
])
def test_compatible_columns_are_cast_exactly(ftype: FeatureType, array: pa.Array, expected: pa.Array | None) -> None:
    spec = InputSpec(features=(("x", ftype),))
    out = feature_batch_to_arrow(build_feature_batch(pa.table({"x": array}), spec), spec)
    want = expected if expected is not None else pa.array(array.to_pylist(), ftype.arrow_type())
    assert_tables_identical(out, pa.table({"x": want}, schema=pa.schema([pa.field("x", ftype.arrow_type())])))


def test_not_a_table_is_refused() -> None:
    with pytest.raises(SchemaError, match="Table or RecordBatch"):
        build_feature_batch({"x": [1]}, InputSpec(features=(("x", Int64()),)))  # type: ignore[arg-type]
