"""The worker transfer: a batch packed into one buffer and rebuilt in the main process equals the batch built
in-process, field for field (names, order, dtypes, shapes, values, masks), for every UFR feature type."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
import torch

from quasar.signals.ufr.tensors import FeatureBatch, InputSpec, build_feature_batch
from quasar.signals.ufr.types import (
    WEIGHTED_ID_STRUCT,
    Bool,
    Float32,
    Float64,
    IdList,
    Int64,
    String,
    Timestamp,
    Vector,
    WeightedIdList,
)
from quasar.training_adapters import FeatureDataset, TableSource, make_loader
from quasar.training_adapters.packing import PackedBatch, pack_batch, unpack_batch

N = 517

SPEC = InputSpec(features=(
    ("flag", Bool()), ("count", Int64()), ("x", Float32()), ("y", Float64()), ("seen_at", Timestamp()),
    ("country", String()), ("emb", Vector(4)), ("emb16", Vector(3, "float16")), ("recent", IdList()),
    ("scored", WeightedIdList()), ("clean", Float32()),
))


def _nulls(rng: np.random.Generator, n: int, p: float = 0.15) -> np.ndarray:
    return rng.random(n) < p


def make_table(n: int = N, seed: int = 0) -> pa.Table:
    """Every UFR type, with nulls in all but ``clean`` (so some masks are all true and some are not)."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(0, 5, n)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lens)]).astype(np.int32))
    ids = pa.array(rng.integers(0, 1000, lens.sum()), pa.int64())
    weights = pa.array(rng.random(lens.sum()).astype(np.float32))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return pa.table({
        "row_id": np.arange(n, dtype=np.int64),
        "flag": pa.array(rng.random(n) < 0.5, mask=_nulls(rng, n)),
        "count": pa.array(rng.integers(-50, 50, n), pa.int64(), mask=_nulls(rng, n)),
        "x": pa.array(rng.normal(size=n).astype(np.float32), mask=_nulls(rng, n)),
        "y": pa.array(rng.normal(size=n), mask=_nulls(rng, n)),
        "seen_at": pa.array([start + timedelta(seconds=int(s)) for s in rng.integers(0, 10**6, n)],
                            pa.timestamp("us", tz="UTC"), mask=_nulls(rng, n)),
        "country": pa.array([str(c) for c in rng.choice(["de", "fr", "us"], n)], mask=_nulls(rng, n)),
        "emb": pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=n * 4).astype(np.float32)), 4,
                                                 mask=pa.array(_nulls(rng, n))),
        "emb16": pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=n * 3).astype(np.float16)), 3,
                                                   mask=pa.array(_nulls(rng, n))),
        "recent": pa.ListArray.from_arrays(offsets, ids, mask=pa.array(_nulls(rng, n))),
        "scored": pa.ListArray.from_arrays(
            offsets, pa.StructArray.from_arrays([ids, weights], fields=list(WEIGHTED_ID_STRUCT)),
            mask=pa.array(_nulls(rng, n))),
        "clean": pa.array(rng.normal(size=n).astype(np.float32)),
        "label": rng.integers(0, 2, n),
    })


def assert_same_tensor(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.dtype == want.dtype, what
    assert got.shape == want.shape, what
    assert torch.equal(got, want), what


def assert_same_batch(got: FeatureBatch, want: FeatureBatch) -> None:
    """Every field of two FeatureBatches equal: sizes, names, key order, dtypes, shapes, values, masks."""
    assert got.size == want.size
    assert got.dense_names == want.dense_names
    assert_same_tensor(got.dense, want.dense, "dense")
    assert_same_tensor(got.dense_mask, want.dense_mask, "dense_mask")
    for group in ("scalars", "vectors", "masks"):
        got_group, want_group = getattr(got, group), getattr(want, group)
        assert list(got_group) == list(want_group), group
        for name in want_group:
            assert_same_tensor(got_group[name], want_group[name], f"{group}[{name}]")
    assert list(got.id_lists) == list(want.id_lists)
    for name, bags in want.id_lists.items():
        assert_same_tensor(got.id_lists[name].values, bags.values, f"id_lists[{name}].values")
        assert_same_tensor(got.id_lists[name].offsets, bags.offsets, f"id_lists[{name}].offsets")
        if bags.weights is None:
            assert got.id_lists[name].weights is None
        else:
            weights = got.id_lists[name].weights
            assert weights is not None
            assert_same_tensor(weights, bags.weights, f"id_lists[{name}].weights")
    assert got.strings == want.strings


def assert_same_labels(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for name in want:
        assert_same_tensor(got[name], want[name], f"labels[{name}]")


@pytest.mark.parametrize("rows", [N, 1, 0])
def test_pack_pickle_unpack_equals_the_in_process_batch(rows: int) -> None:
    table = make_table().slice(0, rows)
    want = build_feature_batch(table, SPEC)
    labels = {"label": torch.from_numpy(table["label"].to_numpy().copy()),
              "row_id": torch.from_numpy(table["row_id"].to_numpy().copy())}
    packed = pickle.loads(pickle.dumps(pack_batch(want, labels)))   # as it crosses a worker's pipe
    assert isinstance(packed.buffer, np.ndarray) and packed.buffer.dtype == np.uint8
    got, got_labels = unpack_batch(packed)
    assert_same_batch(got, want)
    assert_same_labels(got_labels, labels)
    if rows == N:
        assert got.masks["clean"].all() and not got.masks["x"].all()
    assert packed.buffer.flags.writeable        # so the tensors are writable views, as from_numpy wants


def test_unpack_takes_the_pinned_form_of_the_buffer() -> None:
    """``PackedBatch.pin_memory`` swaps the numpy buffer for a (pinned) torch tensor; unpacking reads either."""
    table = make_table(40)
    want = build_feature_batch(table, SPEC)
    packed = pack_batch(want, {})
    as_tensor = PackedBatch(packed.size, packed.dense_names, packed.entries, torch.from_numpy(packed.buffer),
                            packed.strings, packed.id_lists_weighted)
    got, labels = unpack_batch(as_tensor)
    assert_same_batch(got, want)
    assert labels == {}
    assert packed.pin_memory() is packed or torch.cuda.is_available()   # no accelerator: unchanged


def test_packed_fields_are_aligned() -> None:
    packed = pack_batch(build_feature_batch(make_table(33), SPEC), {})
    assert all(start % 64 == 0 for _, _, _, start, _ in packed.entries)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("workers", [0, 1, 2, 3])
def test_worker_batches_equal_in_process_batches_of_the_same_rows(workers: int) -> None:
    """Through make_loader's workers (packed, rebuilt in this process) every batch equals the batch the
    builder makes in-process from the same rows."""
    table = make_table(N)
    loader = make_loader(TableSource(table, piece_rows=100), spec=SPEC, labels=["row_id", "label"], batch_size=64,
                         shuffle=True, shuffle_buffer=150, seed=7, num_workers=workers)
    seen = []
    for batch in loader:
        ids = batch.labels["row_id"]
        rows = table.take(pa.array(ids.numpy()))
        assert_same_batch(batch.features, build_feature_batch(rows, SPEC))
        assert_same_tensor(batch.labels["label"], torch.from_numpy(rows["label"].to_numpy().copy()), "label")
        seen += ids.tolist()
    assert sorted(seen) == list(range(N))


def test_the_loaders_dataset_packs_only_inside_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    import quasar.training_adapters.loader as loader_module
    table = make_table(100)
    dataset = make_loader(TableSource(table), spec=SPEC, labels=["row_id"], batch_size=30, num_workers=0).dataset
    assert isinstance(dataset, FeatureDataset)                      # loader.dataset.set_epoch still works
    assert all(not isinstance(b, PackedBatch) for b in dataset)
    monkeypatch.setattr(loader_module, "get_worker_info", lambda: object())
    packed = list(dataset)
    assert len(packed) == 4 and all(isinstance(b, PackedBatch) for b in packed)
    for p, want in zip(packed, FeatureDataset(TableSource(table), SPEC, labels=["row_id"], batch_size=30),
                       strict=True):
        got, labels = unpack_batch(p)
        assert_same_batch(got, want.features)
        assert_same_labels(labels, want.labels)


def test_in_process_loader_yields_unpacked_batches() -> None:
    table = make_table(100)
    ds = FeatureDataset(TableSource(table), SPEC, labels=["row_id"], batch_size=30)
    direct = list(ds)
    via_loader = list(make_loader(TableSource(table), spec=SPEC, labels=["row_id"], batch_size=30, num_workers=0))
    assert len(direct) == len(via_loader) == 4
    for a, b in zip(direct, via_loader, strict=True):
        assert_same_batch(b.features, a.features)
        assert_same_labels(b.labels, a.labels)
