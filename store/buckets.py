"""Iceberg's ``bucket(N, key)`` partition transform over a whole Arrow column at once.

The Spark engine routes spine rows and computed rows to the bucket their Iceberg partition holds, so it must
compute exactly the transform pyiceberg applies when it writes (Murmur3 x86 32-bit of the key's Iceberg
binary form, ``& 0x7FFFFFFF``, modulo N). pyiceberg-core's vectorised kernel does it; pyiceberg's per-value
transform is the fallback.

``path_bucket`` reads a data file's bucket from its partition folder, in both layouts the product writes:
pyiceberg's ``<key>_bucket=<b>`` and the Spark writer's ``__quasar_bucket=<b>`` (``quasar.store.engines.spark_write``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from quasar.signals.errors import StoreError

NULL_BUCKET = -1                    # where a null key goes: it matches nothing
SPARK_BUCKET_FOLDER = "__quasar_bucket"   # the Spark writer's bucket partition folder: __quasar_bucket=<b>


def iceberg_buckets(keys: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """The Iceberg bucket (0..buckets-1) of every key as int32; ``NULL_BUCKET`` for a null key.

    Keys are int64 or string (the join key types of DESIGN.md section 2).
    """
    if not isinstance(buckets, int) or buckets <= 0:
        raise StoreError(f"the number of buckets must be a positive int, got {buckets!r}")
    array = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    if pa.types.is_integer(array.type):
        array = array.cast(pa.int64())
    elif pa.types.is_large_string(array.type):
        array = array.cast(pa.string())
    elif not pa.types.is_string(array.type):
        raise StoreError(f"cannot bucket join keys of type {array.type}: keys are int64 or string")
    try:
        from pyiceberg_core import transform

        result = transform.bucket(array, buckets)
        values = result.to_numpy(zero_copy_only=False)
        out = np.where(np.isnan(values), NULL_BUCKET, values).astype(np.int32) if result.null_count else \
            values.astype(np.int32)
        return out
    except ImportError:
        return _per_value(array, buckets)


def _per_value(array: pa.Array, buckets: int) -> np.ndarray:
    from pyiceberg.transforms import BucketTransform
    from pyiceberg.types import LongType, StringType

    fn = BucketTransform(buckets).transform(LongType() if pa.types.is_int64(array.type) else StringType())
    return np.array([NULL_BUCKET if v is None else fn(v) for v in array.to_pylist()], dtype=np.int32)


def path_bucket(path: str, key: str) -> int | None:
    """The bucket a data file's partition folder names (``.../<key>_bucket=<b>/...`` as pyiceberg writes it,
    ``.../__quasar_bucket=<b>/...`` as the Spark engine does), or None when its path names no bucket."""
    found = re.search(rf"/(?:{re.escape(key)}_bucket|{SPARK_BUCKET_FOLDER})=(\d+)/", path)
    return int(found.group(1)) if found is not None else None


def files_for_keys(files: Sequence[str], key: str, keys: pa.Array | pa.ChunkedArray, buckets: int) -> list[str]:
    """The files of ``files`` (in their order) that may hold a row of ``keys``: those whose bucket partition is one
    of the keys' buckets, and every file whose path names no bucket. A join of a spine with few keys then opens a
    few buckets' files instead of every one."""
    if buckets <= 1 or not files:
        return list(files)
    wanted = set(np.unique(iceberg_buckets(keys, buckets)).tolist())
    kept = []
    for path in files:
        bucket = path_bucket(path, key)
        if bucket is None or bucket in wanted:
            kept.append(path)
    return kept
