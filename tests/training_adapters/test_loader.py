"""Training loaders: every row exactly once per epoch across workers and ranks, seeded reproducible
shuffles, and tensors equal to the Arrow values row for row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from quasar.signals.ufr.tensors import feature_batch_to_arrow
from quasar.training_adapters import FeatureDataset, ParquetSource, TableSource, make_loader, spec_from_schema

N = 2_003   # not a multiple of any batch size used, so partial batches are exercised
WORKERS = [0, 1, 2, 3]
# 3 workers on a 2-core machine: torch warns; the point here is correctness, not speed
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


def make_table(n: int = N, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    lens = rng.integers(0, 6, n)
    ids = rng.integers(0, 1000, lens.sum())
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    id_list = pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids, pa.int64()),
                                       mask=pa.array(rng.random(n) < 0.1))
    vec = pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=n * 4).astype(np.float32)), 4)
    dense = pa.array(rng.normal(size=n).astype(np.float32), mask=rng.random(n) < 0.2)
    return pa.table({"row_id": np.arange(n, dtype=np.int64), "x": dense, "count": rng.integers(0, 9, n),
                     "emb": vec, "recent": id_list, "label": rng.integers(0, 2, n)})


@pytest.fixture(scope="module")
def parquet_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("loader") / "rows.parquet"
    pq.write_table(make_table(), path, row_group_size=300)
    return path


def rows_seen(loader: torch.utils.data.DataLoader) -> list[int]:  # type: ignore[type-arg]
    return [int(v) for batch in loader for v in batch.labels["row_id"]]


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("world", [1, 2])
def test_every_row_exactly_once_across_workers_and_ranks(parquet_path: Path, workers: int, world: int) -> None:
    seen: list[int] = []
    for rank in range(world):
        loader = make_loader(parquet_path, features=["x", "emb", "recent"], labels=["row_id", "label"],
                             batch_size=128, shuffle=True, shuffle_buffer=500, seed=3, num_workers=workers,
                             rank=rank, world_size=world)
        seen += rows_seen(loader)
    assert sorted(seen) == list(range(N))


def test_in_process_sharding_exactly_once_with_more_shards_than_pieces() -> None:
    table = make_table(50)
    seen = []
    for rank in range(7):
        ds = FeatureDataset(TableSource(table, piece_rows=1000), spec_from_schema(table.schema, ["x"]),
                            labels=["row_id"], batch_size=4, rank=rank, world_size=7)
        seen += [int(v) for b in ds for v in b.labels["row_id"]]
    assert sorted(seen) == list(range(50))


def test_shuffle_is_reproducible_per_seed_and_changes_per_epoch(parquet_path: Path) -> None:
    def order(seed: int, epoch: int) -> list[int]:
        return rows_seen(make_loader(parquet_path, features=["x"], labels=["row_id"], batch_size=100,
                                     shuffle=True, shuffle_buffer=400, seed=seed, epoch=epoch, num_workers=0))

    first = order(1, 0)
    assert first == order(1, 0)
    assert first != order(1, 1) and sorted(order(1, 1)) == list(range(N))
    assert first != order(2, 0)
    assert first != list(range(N))


@pytest.mark.parametrize("workers", [0, 1])
def test_unshuffled_order_is_the_file_order(parquet_path: Path, workers: int) -> None:
    assert rows_seen(make_loader(parquet_path, features=["x"], labels=["row_id"], batch_size=64,
                                 num_workers=workers)) == list(range(N))


@pytest.mark.parametrize("workers", [2, 3])
def test_order_with_several_workers_is_reproducible(parquet_path: Path, workers: int) -> None:
    """Workers take turns batch by batch, so the order is not the file order, but it is the same every run."""
    def order() -> list[int]:
        return rows_seen(make_loader(parquet_path, features=["x"], labels=["row_id"], batch_size=64,
                                     num_workers=workers))

    first = order()
    assert first == order() and sorted(first) == list(range(N))


@pytest.mark.parametrize("workers", WORKERS)
def test_tensors_equal_arrow_values_row_for_row(parquet_path: Path, workers: int) -> None:
    table = pq.read_table(parquet_path)
    features = ["x", "count", "emb", "recent"]
    spec = spec_from_schema(table.schema, features)
    loader = make_loader(parquet_path, spec=spec, labels=["row_id", "label"], batch_size=97, shuffle=True,
                         shuffle_buffer=300, seed=5, num_workers=workers)
    checked = 0
    for batch in loader:
        ids = batch.labels["row_id"].numpy()
        expected = table.take(pa.array(ids)).select(features)
        got = feature_batch_to_arrow(batch.features, spec)
        assert got.equals(expected.cast(got.schema))
        assert batch.labels["label"].tolist() == table["label"].take(pa.array(ids)).to_pylist()
        assert batch.features.dense.shape == (len(ids), 2)
        checked += len(ids)
    assert checked == N


def test_drop_last_and_batch_sizes() -> None:
    table = make_table(103)
    spec = spec_from_schema(table.schema, ["x"])
    sizes = [b.features.size for b in FeatureDataset(TableSource(table, 10), spec, labels=["row_id"], batch_size=25)]
    assert sizes == [25, 25, 25, 25, 3]
    sizes = [b.features.size for b in FeatureDataset(TableSource(table, 10), spec, labels=["row_id"], batch_size=25,
                                                     drop_last=True)]
    assert sizes == [25, 25, 25, 25]


def test_parquet_source_reads_folders_and_names_missing_columns(tmp_path: Path) -> None:
    for i in range(3):
        pq.write_table(make_table(10, seed=i), tmp_path / f"part-{i}.parquet")
    assert ParquetSource(tmp_path).num_rows == 30
    with pytest.raises(Exception, match="nope"):
        make_loader(tmp_path, features=["nope"], num_workers=0)


def test_workers_default_to_none(parquet_path: Path) -> None:
    """Measured: on 2 cores workers were slower than building in-process (see make_loader's docstring)."""
    assert make_loader(parquet_path, features=["x"], labels=["row_id"]).num_workers == 0
