"""Batches cut as views from tensors built once per row group (or shuffle-buffer half) are the batches built
from each batch's own rows: the same tensors (dtypes, shapes, bits, masks, bag starts) and labels, in the same
order, for batches inside a row group, straddling row groups and files, and spanning several of them."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from quasar.signals.ufr.tensors import FeatureBatch, InputSpec, build_feature_batch
from quasar.signals.ufr.types import Bool, Float32, IdList, Int64, String, Vector, WeightedIdList
from quasar.training_adapters import FeatureDataset, ParquetSource, make_loader

SPEC = InputSpec(features=(("flag", Bool()), ("count", Int64()), ("x", Float32()), ("country", String()),
                           ("emb", Vector(3)), ("recent", IdList()), ("scored", WeightedIdList())))
LABELS = ["row_id", "label", "maybe"]
FILES = [(0, 700, 300), (700, 41, 41), (741, 1262, 77)]     # (first row, rows, row-group size) of each file


def make_table(first: int, n: int) -> pa.Table:
    """Every feature kind with nulls (a null id list still backed by ids), ``count`` stored as int32 (cast on
    read), and a label ``maybe`` with nulls in some rows only (it reads as float where a batch holds one)."""
    rng = np.random.default_rng(first)
    lens = rng.integers(0, 5, n)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lens)]).astype(np.int32))
    ids = pa.array(rng.integers(0, 1000, lens.sum()), pa.int64())
    weights = pa.array(rng.random(lens.sum()).astype(np.float32))
    rows = np.arange(first, first + n, dtype=np.int64)
    return pa.table({
        "row_id": rows,
        "flag": pa.array(rng.random(n) < 0.5, mask=rng.random(n) < 0.1),
        "count": pa.array(rng.integers(-50, 50, n).astype(np.int32), mask=rng.random(n) < 0.1),
        "x": pa.array(rng.normal(size=n).astype(np.float32), mask=rng.random(n) < 0.2),
        "country": pa.array([str(c) for c in rng.choice(["de", "fr", "us"], n)], mask=rng.random(n) < 0.1),
        "emb": pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=n * 3).astype(np.float32)), 3,
                                                 mask=pa.array(rng.random(n) < 0.1)),
        "recent": pa.ListArray.from_arrays(offsets, ids, mask=pa.array(rng.random(n) < 0.1)),
        "scored": pa.ListArray.from_arrays(offsets, pa.StructArray.from_arrays([ids, weights], ["id", "weight"]),
                                           mask=pa.array(rng.random(n) < 0.1)),
        "label": rng.integers(0, 2, n),
        "maybe": pa.array(rng.integers(0, 9, n), mask=(rows % 500) == 3),
    })


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("views")
    paths = []
    for k, (first, n, group) in enumerate(FILES):
        paths.append(folder / f"part-{k}.parquet")
        pq.write_table(make_table(first, n), paths[-1], row_group_size=group)
    return paths


def assert_identical(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert (got.dtype, got.shape) == (want.dtype, want.shape), what
    if want.dtype.is_floating_point:                      # bit for bit, NaN included
        got, want = got.view(torch.int32 if want.element_size() == 4 else torch.int64), \
            want.view(torch.int32 if want.element_size() == 4 else torch.int64)
    assert torch.equal(got, want), what


def assert_same_batch(got: FeatureBatch, want: FeatureBatch) -> None:
    assert (got.size, got.dense_names) == (want.size, want.dense_names)
    assert_identical(got.dense, want.dense, "dense")
    assert_identical(got.dense_mask, want.dense_mask, "dense_mask")
    for group in ("scalars", "vectors", "masks"):
        assert list(getattr(got, group)) == list(getattr(want, group)), group
        for name, tensor in getattr(want, group).items():
            assert_identical(getattr(got, group)[name], tensor, f"{group}[{name}]")
    assert list(got.id_lists) == list(want.id_lists)
    for name, bags in want.id_lists.items():
        mine = got.id_lists[name]
        assert_identical(mine.values, bags.values, f"{name} values")
        assert_identical(mine.offsets, bags.offsets, f"{name} offsets")
        assert (mine.weights is None) == (bags.weights is None)
        if mine.weights is not None and bags.weights is not None:
            assert_identical(mine.weights, bags.weights, f"{name} weights")
    assert got.strings == want.strings


def expected_batches(rows: pa.Table, batch_size: int, drop_last: bool) -> list[tuple[FeatureBatch, dict]]:
    """Each batch built from its own rows: consecutive ``batch_size`` slices of the epoch's row stream."""
    out = []
    for start in range(0, rows.num_rows, batch_size):
        part = rows.slice(start, batch_size)
        if part.num_rows < batch_size and drop_last:
            break
        labels = {c: torch.from_numpy(np.asarray(part[c].to_numpy(zero_copy_only=False)).copy()) for c in LABELS}
        out.append((build_feature_batch(part, SPEC), labels))
    return out


def check_epoch(dataset: FeatureDataset, rows: pa.Table, batch_size: int, drop_last: bool) -> None:
    got = list(dataset)
    want = expected_batches(rows, batch_size, drop_last)
    assert len(got) == len(want)
    for batch, (features, labels) in zip(got, want, strict=True):
        assert_same_batch(batch.features, features)
        assert list(batch.labels) == list(labels)
        for name, tensor in labels.items():
            assert_identical(batch.labels[name], tensor, f"label {name}")


@pytest.mark.parametrize("batch_size", [1, 7, 64, 77, 300, 301, 1000, 5000])
@pytest.mark.parametrize("drop_last", [False, True])
def test_unshuffled_batches_equal_batches_built_from_their_own_rows(files: list[Path], batch_size: int,
                                                                    drop_last: bool) -> None:
    rows = pa.concat_tables(pq.read_table(f) for f in files)
    dataset = FeatureDataset(ParquetSource(files), SPEC, labels=LABELS, batch_size=batch_size, drop_last=drop_last)
    check_epoch(dataset, rows, batch_size, drop_last)


@pytest.mark.parametrize("batch_size", [7, 64, 301])
def test_shuffled_batches_equal_batches_built_from_their_own_rows(files: list[Path], batch_size: int) -> None:
    def dataset() -> FeatureDataset:
        return FeatureDataset(ParquetSource(files), SPEC, labels=LABELS, batch_size=batch_size, shuffle=True,
                              shuffle_buffer=400, seed=9)

    rows = pa.concat_tables(dataset()._tables())          # the epoch's shuffled row stream
    assert rows["row_id"].to_pylist() != list(range(rows.num_rows))
    check_epoch(dataset(), rows, batch_size, drop_last=False)


def test_a_label_with_nulls_is_float_only_in_the_batches_that_hold_one(files: list[Path]) -> None:
    batches = list(make_loader(files, spec=SPEC, labels=LABELS, batch_size=100))
    dtypes = {b.labels["maybe"].dtype for b in batches}
    assert dtypes == {torch.int64, torch.float64}
    for b in batches:
        holds_null = bool(((b.labels["row_id"] % 500) == 3).any())
        assert (b.labels["maybe"].dtype == torch.float64) == holds_null


def test_batches_do_not_share_label_memory_with_each_other(files: list[Path]) -> None:
    """Label tensors are views of one copy per row group: writing one batch's leaves the next batch alone."""
    first, second = list(make_loader(files, spec=SPEC, labels=LABELS, batch_size=50))[:2]
    before = second.labels["label"].clone()
    first.labels["label"].fill_(7)
    assert torch.equal(second.labels["label"], before)


def test_read_ahead_thread_ends_with_the_epoch_or_when_it_is_abandoned(files: list[Path]) -> None:
    """The next row group is read on a thread while this one's batches are cut; stopping early ends it."""
    def readers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("quasar-read")]

    dataset = FeatureDataset(ParquetSource(files), SPEC, labels=LABELS, batch_size=10)
    batches = iter(dataset)
    next(batches)
    assert readers()
    batches.close()                                   # abandoned after one batch
    assert not readers()
    assert sum(b.features.size for b in dataset) == sum(n for _, n, _ in FILES)
    assert not readers()
