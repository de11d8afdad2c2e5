"""Spark writes a backfill's rows as Parquet files into the table's location; pyiceberg commits them.

Rows get their Iceberg partition, ``day(event_timestamp)`` and ``bucket(N, key)`` (Iceberg's Murmur3, the
transform pyiceberg applies), and Spark writes them ``partitionBy`` those two values, one folder per
partition under ``<table>/data/spark-<uuid>/`` (a partition may hold a file per Spark task). The files are then committed in one snapshot that replaces the
window's days (``OfflineStore.replace_window_files``), so no Iceberg jar is needed. If anything fails before
the commit lands, the written folder is deleted and the table stays at its previous snapshot.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from quasar.signals.errors import StoreError
from quasar.signals.signal import Signal
from quasar.signals.ufr.schema import EVENT_TIMESTAMP
from quasar.store.arrow_types import to_storage
from quasar.store.buckets import SPARK_BUCKET_FOLDER, iceberg_buckets
from quasar.store.data_files import WrittenFile
from quasar.store.engines.spark_session import spark_error, spark_safe
from quasar.store.tables import OfflineStore

DAY = "__quasar_day"
BUCKET = SPARK_BUCKET_FOLDER               # the folder name the Spark PIT join routes by (quasar.store.buckets)
_DAY_MICROS = 86_400_000_000
_PARTITION = re.compile(rf"{DAY}=(-?\d+)/{BUCKET}=(\d+)/[^/]+\.parquet$")


def _filesystem(uri: str) -> tuple[Any, str]:
    from pyarrow import fs

    return fs.FileSystem.from_uri(uri)  # type: ignore[no-any-return]


def _listed(target: str) -> list[WrittenFile]:
    """The Parquet files Spark wrote under ``target`` with the partition their folder names."""
    from pyarrow import fs

    filesystem, root = _filesystem(target)
    files = []
    prefix = target[: len(target) - len(root)] if target.endswith(root) else ""
    for info in filesystem.get_file_info(fs.FileSelector(root, recursive=True)):
        name = info.path.rsplit("/", 1)[-1]
        if info.type != fs.FileType.File:
            continue
        if name.startswith((".", "_")):                 # checksums and markers of Hadoop's file committer
            filesystem.delete_file(info.path)
            continue
        found = _PARTITION.search(info.path)
        if found is None:
            raise StoreError(f"Spark wrote an unexpected file {info.path}")
        files.append(WrittenFile(path=prefix + info.path if prefix else info.path, day=int(found.group(1)),
                                 bucket=int(found.group(2))))
    return sorted(files, key=lambda f: f.path)


def _remove(target: str) -> None:
    try:
        filesystem, root = _filesystem(target)
        filesystem.delete_dir(root)
    except Exception:  # nothing was committed; a leftover folder is garbage, not data
        return


def write_window_spark(session: Any, store: OfflineStore, signal: Signal, version: int, rows: pa.Table,
                       start: datetime, end: datetime, *, properties: Mapping[str, str] | None = None) -> int | None:
    """Replace ``[start, end)`` of the signal version's table with ``rows``, Spark writing the files."""
    stored = to_storage(rows, signal)
    store.check_window_rows(signal, stored, start, end)
    location = store.location(signal, version, stored).rstrip("/")
    buckets = store.bucket_count(signal.name, version)
    if buckets is None:
        raise StoreError(f"signal {signal.name} v{version}: its table has no bucket partition to write into")
    days = stored.column(EVENT_TIMESTAMP).cast(pa.int64()).to_numpy() // _DAY_MICROS
    keyed = stored.append_column(DAY, pa.array(days.astype(np.int64))) \
        .append_column(BUCKET, pa.array(iceberg_buckets(stored.column(signal.entity.join_key), buckets)))
    target = f"{location}/data/spark-{uuid.uuid4().hex}"
    try:
        if keyed.num_rows:
            # clustered by partition here, so each Spark task writes few files and no shuffle is needed
            clustered = keyed.sort_by([(DAY, "ascending"), (BUCKET, "ascending")])
            session.createDataFrame(spark_safe(clustered)).write.partitionBy(DAY, BUCKET).parquet(target)
        files = _listed(target) if keyed.num_rows else []
        return store.replace_window_files(signal, version, files, start, end, properties=properties)
    except StoreError:
        _remove(target)
        raise
    except BaseException as exc:
        _remove(target)
        if isinstance(exc, Exception):
            raise StoreError(f"signal {signal.name} v{version}: Spark failed writing the window's files: "
                             f"{spark_error(exc)}") from exc
        raise
