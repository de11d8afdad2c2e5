"""Point-in-time joins on Spark, bucket by bucket, with the local engine's semantics by construction.

A signal's Iceberg table is partitioned by ``bucket(N, key)``, so every row of one key lives in the files of
one bucket. The spine is routed to the same buckets (Iceberg's own Murmur3 transform, ``quasar.store.buckets``) and
grouped on Spark; each task joins its spine rows with the files of its bucket alone, running the exact
per-key kernel of ``quasar.store.pit_local`` (latest ``event_timestamp <= ts`` within the TTL, ties by
``created_timestamp`` then file order). Only the spine moves; the feature table is never shuffled, and each
task reads only its bucket's files (pruned to the spine's time range by pyiceberg's plan beforehand).

A file's bucket is the one its partition folder names, in both layouts the product writes (pyiceberg's and the
Spark writer's, ``quasar.store.buckets.path_bucket``); the engine counts the tasks a join ran as (``last_join_groups``).
Files that do not name their bucket (written by another tool, or plain Parquet) are joined in one group.
Results come back as Arrow IPC and are put back in spine order, so types and values are the local engine's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from quasar.signals.errors import DatasetError, StoreError
from quasar.signals.ufr.schema import EVENT_TIMESTAMP
from quasar.signals.ufr.types import TIMESTAMP_ARROW
from quasar.store.buckets import NULL_BUCKET, iceberg_buckets, path_bucket
from quasar.store.engines.base import FeatureRequest
from quasar.store.engines.groups import concat
from quasar.store.engines.spark_session import ROW, run_grouped, spark_error


def file_buckets(request: FeatureRequest) -> list[int] | None:
    """The bucket of each of the request's files, from its partition folder in either layout the product
    writes (``quasar.store.buckets.path_bucket``: pyiceberg's ``<key>_bucket=<b>``, the Spark writer's
    ``__quasar_bucket=<b>``); None when the table is not bucketed on a single key or any file does not say."""
    if request.buckets is None or len(request.join_keys) != 1:
        return None
    buckets = []
    for path in request.files:
        bucket = path_bucket(path, request.join_keys[0])
        if bucket is None or not 0 <= bucket < request.buckets:
            return None
        buckets.append(bucket)
    return buckets


def _routing(requests: Sequence[FeatureRequest]) -> int | None:
    """N when every request's files are bucketed with the same N (rows can be routed by bucket), else None."""
    counts = {r.buckets for r in requests if r.files}
    if len(counts) != 1 or None in counts or any(r.files and file_buckets(r) is None for r in requests):
        return None
    (count,) = counts
    return count


def routes(requests: Sequence[FeatureRequest], count: int | None,
           buckets: Iterable[int]) -> dict[int, list[FeatureRequest]]:
    """Each group's requests: with ``count`` (``routing``), one group per bucket of ``buckets`` with only that
    bucket's files, and ``NULL_BUCKET`` (null keys) with none; without, group 0 with every file."""
    by_group: dict[int, list[FeatureRequest]] = defaultdict(list)
    if count is None:
        by_group[0] = list(requests)
        return dict(by_group)
    for request in requests:
        files_of: dict[int, list[str]] = defaultdict(list)
        for path, bucket in zip(request.files, file_buckets(request) or [], strict=True):
            files_of[bucket].append(path)
        for bucket in set(buckets) - {NULL_BUCKET}:
            by_group[bucket].append(replace(request, files=tuple(files_of.get(bucket, ()))))
    by_group[NULL_BUCKET] = [replace(r, files=()) for r in requests]   # null keys match nothing
    return dict(by_group)


routing = _routing


def _local_join(spine: pa.Table, requests: Sequence[FeatureRequest], threads: int) -> pa.Table:
    """``quasar.store.pit_local``'s kernel on an in-memory DuckDB: the join every group runs."""
    import duckdb

    from quasar.store.pit_local import point_in_time_duckdb

    with duckdb.connect(config={"threads": threads}) as con:
        con.execute("SET TimeZone = 'UTC'")
        return point_in_time_duckdb(con, spine, requests)


def _kernel(by_group: dict[int, list[FeatureRequest]],
            threads: int) -> Callable[[int, pa.Table, pa.ChunkedArray], pa.Table]:
    """The task run on one group: the local kernel over the group's spine rows and the group's files."""

    def kernel(group: int, spine: pa.Table, positions: pa.ChunkedArray) -> pa.Table:
        return _local_join(spine, by_group.get(group, []), threads).append_column(ROW, positions)

    return kernel


def join_group(session: Any, spine: pa.Table, requests: Sequence[FeatureRequest], *,
               threads: int = 1) -> tuple[pa.Table, int]:
    """The feature columns of ``requests`` (all on the same join keys) for every spine row, in spine order, and
    the number of Spark tasks (groups) the join ran as."""
    keys = list(requests[0].join_keys)
    n = spine.num_rows
    if n == 0:
        return _local_join(spine, requests, threads), 0
    slim = pa.table({**{k: spine.column(k) for k in keys},
                     EVENT_TIMESTAMP: spine.column(EVENT_TIMESTAMP).cast(TIMESTAMP_ARROW)})
    count = _routing(requests)
    if count is None:
        groups = np.zeros(n, dtype=np.int64)
    else:
        groups = iceberg_buckets(slim.column(keys[0]), count).astype(np.int64)
    by_group = routes(requests, count, set(groups.tolist()))
    try:
        results = run_grouped(session, slim, groups, _kernel(by_group, threads))
    except Exception as exc:
        raise StoreError(f"point-in-time join on Spark of signal(s) "
                         f"{', '.join(sorted({r.signal for r in requests}))} failed: {spark_error(exc)}") from exc
    result = concat(results)
    if result.num_rows != n:
        raise StoreError(f"point-in-time join on Spark returned {result.num_rows} rows for {n} spine rows")
    order = np.empty(n, dtype=np.int64)
    order[result.column(ROW).to_numpy()] = np.arange(n, dtype=np.int64)
    return result.drop_columns([ROW]).take(pa.array(order)), len(results)


def point_in_time_spark(session: Any, spine: pa.Table, requests: Sequence[FeatureRequest], *,
                        threads: int = 1) -> tuple[pa.Table, int]:
    """The output feature columns of ``requests`` for every row of ``spine``, in spine order, UFR-typed, and
    the number of Spark tasks (groups) the joins ran as, over all join key sets."""
    from quasar.store.pit_local import check_spine

    check_spine(spine, requests)
    if not requests:
        return pa.table({}), 0
    by_keys: dict[tuple[str, ...], list[FeatureRequest]] = defaultdict(list)
    for request in requests:
        by_keys[request.join_keys].append(request)
    joined = {keys: join_group(session, spine, group, threads=threads) for keys, group in by_keys.items()}
    columns: dict[str, pa.ChunkedArray] = {}
    for request in requests:
        table = joined[request.join_keys][0]
        for _, name in request.features:
            if name in columns:
                raise DatasetError(f"output column {name!r} is requested twice")
            columns[name] = table.column(name)
    return pa.table(columns), sum(tasks for _, tasks in joined.values())
