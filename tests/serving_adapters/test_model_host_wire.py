"""What crosses to a model host: a FeatureBatch as numpy arrays (``to_wire``), the same batch again on the other side."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import torch

from quasar.serving_adapters.model_host import from_wire, to_wire
from quasar.signals import Bool, Float64, IdList, Int64, String, Timestamp, Vector, WeightedIdList
from quasar.signals.ufr.tensors import FeatureBatch, InputSpec, build_feature_batch


def _batch() -> FeatureBatch:
    n = 7
    weighted = WeightedIdList().arrow_type()
    table = pa.table({
        "clicks": pa.array([1, None, 3, 4, 5, 6, 7], pa.int64()),
        "ctr": pa.array([0.5, 0.25, None, 1.0, 2.0, 3.0, 4.0], pa.float64()),
        "flag": pa.array([True, False, None, True, True, False, True]),
        "made": pa.array(np.arange(n) * 1_000_000, pa.int64()).cast(Timestamp().arrow_type()),
        "emb": pa.FixedSizeListArray.from_arrays(pa.array(np.arange(n * 4, dtype=np.float16)), 4,
                                                 mask=pa.array([False, True, False, False, False, False, False])),
        "ids": pa.array([[1, 2], None, [], [3], [4, 5, 6], [7], [8]], IdList().arrow_type()),
        "dwell": pa.array([[{"id": 1, "weight": 0.5}], None, [], [{"id": 2, "weight": 1.5}], [], [], []], weighted),
        "country": pa.array(["fr", None, "ü", "de", "", "x", "y"]),
    })
    spec = InputSpec(features=(("clicks", Int64()), ("ctr", Float64()), ("flag", Bool()), ("made", Timestamp()),
                               ("emb", Vector(4, "float16")), ("ids", IdList()), ("dwell", WeightedIdList()),
                               ("country", String())))
    return build_feature_batch(table, spec)


def _same(a: FeatureBatch, b: FeatureBatch) -> None:
    assert a.size == b.size and a.dense_names == b.dense_names and a.strings == b.strings
    torch.testing.assert_close(a.dense, b.dense, rtol=0, atol=0)
    assert torch.equal(a.dense_mask, b.dense_mask)
    for mine, theirs in ((a.scalars, b.scalars), (a.vectors, b.vectors), (a.masks, b.masks)):
        assert mine.keys() == theirs.keys()
        for k in mine:
            assert mine[k].dtype == theirs[k].dtype and torch.equal(mine[k], theirs[k]), k
    assert a.id_lists.keys() == b.id_lists.keys()
    for k, bag in a.id_lists.items():
        other = b.id_lists[k]
        assert torch.equal(bag.values, other.values) and torch.equal(bag.offsets, other.offsets)
        assert (bag.weights is None) == (other.weights is None)
        if bag.weights is not None:
            assert torch.equal(bag.weights, other.weights)


def test_a_feature_batch_crosses_to_the_model_host_unchanged() -> None:
    batch = _batch()
    got = from_wire(pickle.loads(pickle.dumps(to_wire(batch), protocol=5)))
    _same(got, batch)
    got.dense[0, 0] = 42.0                    # the host's tensors are its own, writable memory
    assert batch.dense[0, 0] != 42.0
