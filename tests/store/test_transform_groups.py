"""The transform's groups: the Iceberg bucket of every key, however the keys are laid out."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from quasar.store.buckets import iceberg_buckets
from quasar.store.engines.groups import TRANSFORM_GROUPS, key_buckets


@pytest.mark.parametrize("case", ["dense ids", "sparse ids", "negative ids", "chunked", "one key", "nulls",
                                  "strings", "int32"])
def test_key_buckets_are_icebergs_buckets(case: str) -> None:
    rng = np.random.default_rng(7)
    keys: pa.Array | pa.ChunkedArray = {
        "dense ids": pa.array(rng.integers(1, 500, 5000)),
        "sparse ids": pa.array(rng.integers(-2 ** 62, 2 ** 62, 5000)),
        "negative ids": pa.array(rng.integers(-300, 300, 5000)),
        "chunked": pa.chunked_array([rng.integers(10, 90, 700), rng.integers(10, 90, 300)]),
        "one key": pa.array([2 ** 40] * 50),
        "nulls": pa.array([1, None, 3, 3, None]),
        "strings": pa.array([f"k{i % 37}" for i in range(400)]),
        "int32": pa.array(rng.integers(0, 50, 400).astype(np.int32)),
    }[case]
    for buckets in (1, 4, TRANSFORM_GROUPS):
        assert np.array_equal(key_buckets(keys, buckets), iceberg_buckets(keys, buckets))
