"""Issue 15: a ``make_loader`` loader reshuffles on each new iteration (each epoch), reproducibly, and
``set_epoch`` still picks an epoch; the default features are the dataset's own (its ``quasar.features``
metadata), so a feature whose name ends in ``_id`` is kept and a join key is not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import quasar
from fixtures.project import init_project
from quasar.signals.errors import SchemaError
from quasar.training_adapters import make_loader

N = 1_000
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


def _table() -> pa.Table:
    rng = np.random.default_rng(1)
    return pa.table({"row_id": np.arange(N, dtype=np.int64), "x": rng.normal(size=N).astype(np.float32)})


def _order(loader: torch.utils.data.DataLoader) -> list[int]:  # type: ignore[type-arg]
    return [int(v) for batch in loader for v in batch.labels["row_id"]]


@pytest.mark.parametrize("workers", [0, 2])
def test_each_iteration_is_a_new_shuffle_reproducible_by_seed(tmp_path: Path, workers: int) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(_table(), path, row_group_size=50)

    def loader() -> torch.utils.data.DataLoader:  # type: ignore[type-arg]
        return make_loader(path, features=["x"], labels=["row_id"], batch_size=64, shuffle=True,
                           shuffle_buffer=200, seed=4, num_workers=workers)

    first = loader()
    epochs = [_order(first) for _ in range(3)]
    assert all(sorted(e) == list(range(N)) for e in epochs)            # every row once per epoch
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]            # and a new order each time
    again = loader()
    assert [_order(again) for _ in range(3)] == epochs                 # the same seed: the same epochs
    again.dataset.set_epoch(1)                                         # set_epoch picks one, as before
    assert _order(again) == epochs[1]
    assert _order(again) == epochs[2]                                  # and iterating on moves on from it
    assert _order(make_loader(path, features=["x"], labels=["row_id"], batch_size=64, shuffle=True,
                              shuffle_buffer=200, seed=4, epoch=2, num_workers=workers)) == epochs[2]


def test_without_shuffle_every_iteration_is_in_order(tmp_path: Path) -> None:
    loader = make_loader(_table(), features=["x"], labels=["row_id"], batch_size=64)
    assert _order(loader) == _order(loader) == list(range(N))


MODULE = """
import pyarrow as pa
from quasar.signals import Entity, Source, Int64, signal

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")

@signal(entity=user, source=events, ttl="30d", features={"author_id": Int64(), "clicks": Int64()})
def user_last(batch: pa.Table) -> pa.Table:
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"],
                     "author_id": batch["author_id"], "clicks": batch["clicks"]})
"""


def test_default_features_are_the_datasets_not_a_name_rule(tmp_path: Path, project_env: str) -> None:
    """A feature called ``author_id`` (an id the model embeds) is a feature; ``user_id``, the join key, is not."""
    root = init_project(tmp_path / "p", "ids")
    (root / "signals.py").write_text(MODULE)
    (root / "data" / "events").mkdir(parents=True)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    pq.write_table(pa.table({"user_id": [1, 2, 3], "author_id": [70, 80, 90], "clicks": [1, 0, 5],
                             "ts": pa.array([t0 + timedelta(hours=h) for h in (1, 2, 3)], pa.timestamp("us", "UTC"))}),
                   root / "data" / "events" / "e.parquet")
    spine = pa.table({"user_id": [3, 1], "event_timestamp": pa.array([t0 + timedelta(days=1)] * 2,
                                                                     pa.timestamp("us", "UTC")),
                      "label": [1, 0]})
    with quasar.Platform.open(root) as p:
        p.register("signals.py")
        p.backfill("user_last", "2026-01-01", "2026-01-02")
        result = p.dataset(spine, ["user_last"])
        result.write_parquet(root / "train.parquet")
        iceberg = result.write_iceberg(p.catalog, "datasets.train")
        for data in (root / "train.parquet", iceberg):                  # a file, and an Iceberg table
            (batch,) = list(make_loader(data, labels=["label"], batch_size=10))
            assert batch.features.dense_names == ["author_id", "clicks"]
            assert batch.features.dense[:, 0].tolist() == [90.0, 70.0]
            assert batch.labels["label"].tolist() == [1, 0]


def test_a_table_without_dataset_metadata_needs_its_features_named() -> None:
    table = pa.table({"user_id": [1], "x": [0.5], "label": [1]})
    with pytest.raises(SchemaError, match=r"features=\[\.\.\.\].*user_id, x"):
        make_loader(table)
    (batch,) = list(make_loader(table, features=["x"]))
    assert batch.features.dense_names == ["x"]
