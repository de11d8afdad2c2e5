"""The per-chunk join kernel of a training dataset: one spine chunk with its requested features as of each row's time.

``join_chunk`` is the one place a dataset's spine rows meet an engine's point-in-time join: the local path of
``quasar.store.dataset.build_training_dataset`` calls it chunk by chunk on the driver, and the Spark path
(``quasar.store.engines.spark_dataset``) calls it in each executor task over that task's rows and its bucket's files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from quasar.signals.errors import StoreError
from quasar.signals.ufr.schema import FeatureSchema
from quasar.store.buckets import files_for_keys
from quasar.store.engines.base import Engine, FeatureRequest
from quasar.store.spine import JoinKeys, join_columns


def join_chunk(chunk: pa.Table, join_keys: JoinKeys, requests: Sequence[FeatureRequest],
               outputs: Sequence[tuple[str, Any]], engine: Engine) -> pa.Table:
    """``chunk`` (a normalized spine chunk: ``quasar.store.spine.normalize_spine``) with the ``outputs`` columns
    (name, feature type) appended in order, joined by ``engine.point_in_time`` from ``requests`` (each pruned to
    the bucket files the chunk's keys fall in). An empty chunk gets empty columns of the outputs' types; an
    engine that returns another row count, or misses a column, is a ``StoreError``."""
    if chunk.num_rows == 0:
        features = FeatureSchema(tuple(outputs)).arrow_schema().empty_table()
    else:
        features = engine.point_in_time(join_columns(chunk, join_keys), [prune_request(r, chunk) for r in requests])
    if features.num_rows != chunk.num_rows:
        raise StoreError(f"engine {engine.name!r} returned {features.num_rows} rows for {chunk.num_rows} "
                         "spine rows")
    for name, ftype in outputs:
        if name not in features.column_names:
            raise StoreError(f"engine {engine.name!r} returned no column {name!r}")
        chunk = chunk.append_column(pa.field(name, ftype.arrow_type()), features.column(name))
    return chunk


def prune_request(request: FeatureRequest, chunk: pa.Table) -> FeatureRequest:
    """``request`` with only the files of the bucket partitions the chunk's keys fall in (partition pruning by
    key, as the day partitions are pruned by the spine's times)."""
    (key,) = request.join_keys if len(request.join_keys) == 1 else (None,)
    if key is None or request.buckets is None or request.buckets <= 1 or key not in chunk.column_names:
        return request
    files = files_for_keys(request.files, key, chunk.column(key), request.buckets)
    return request if len(files) == len(request.files) else dataclasses.replace(request, files=tuple(files))
