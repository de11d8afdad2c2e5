"""How a signal's Iceberg table is laid out in files: how many key buckets, how large a file.

A table is partitioned by ``day(event_timestamp)`` and ``bucket(N, join key)`` (DESIGN.md section 3). A fixed N
gives a small table ``days x N`` tiny files (a 14,000-row table in 16 buckets was 464 files of 4 KB), and every
point-in-time join and materialization pays to open each one. So N is chosen from the data: the smallest power
of two that keeps one day's rows of one bucket under the target file size (``[offline] target_file_mb``,
128 MiB), at least 1. ``[offline] buckets`` set to a positive number fixes N instead (0, the default: chosen).

The first write of a table fixes its N. When the data outgrows or undershoots it later, ``quasar compact``
(``quasar.store.compaction``) rewrites the table into the N its data calls for.

A table's size estimate is the rows' in-memory Arrow size, an upper bound of their Parquet size for the UFR
types, so N errs towards more, smaller files; compaction measures the Parquet files themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from quasar.signals.errors import ConfigError, StoreError
from quasar.signals.ufr.schema import EVENT_TIMESTAMP

DEFAULT_TARGET_FILE_BYTES = 128 * 1024 * 1024
MAX_BUCKETS = 1024
_DAY_MICROS = 86_400_000_000


def buckets_for(day_bytes: float, target_file_bytes: int) -> int:
    """The bucket count for a table whose largest day holds ``day_bytes``: the smallest power of two keeping a
    day's bucket under ``target_file_bytes``, from 1 to ``MAX_BUCKETS``."""
    if day_bytes <= target_file_bytes:
        return 1
    wanted = math.ceil(day_bytes / target_file_bytes)
    return min(MAX_BUCKETS, 1 << (wanted - 1).bit_length())


def largest_day_bytes(stored: pa.Table) -> float:
    """The estimated size of the rows of ``stored``'s fullest day (its share of the table's Arrow size)."""
    if stored.num_rows == 0:
        return 0.0
    days = stored.column(EVENT_TIMESTAMP).cast(pa.int64()).to_numpy(zero_copy_only=False) // _DAY_MICROS
    _, counts = np.unique(days, return_counts=True)
    return float(stored.nbytes) * int(counts.max()) / stored.num_rows


@dataclass(frozen=True)
class Layout:
    """The layout rule of one offline store: a fixed bucket count, or None to choose it from the data."""

    buckets: int | None = None
    target_file_bytes: int = DEFAULT_TARGET_FILE_BYTES

    def __post_init__(self) -> None:
        if self.buckets is not None and (not isinstance(self.buckets, int) or isinstance(self.buckets, bool)
                                         or not 0 < self.buckets <= MAX_BUCKETS):
            raise StoreError(f"the number of buckets must be an int from 1 to {MAX_BUCKETS} (or 0 in quasar.toml: "
                             f"chosen from the data), got {self.buckets!r}")
        if not isinstance(self.target_file_bytes, int) or self.target_file_bytes <= 0:
            raise StoreError(f"the target file size must be a positive number of bytes, got "
                             f"{self.target_file_bytes!r}")

    @classmethod
    def from_settings(cls, buckets: int, target_file_mb: int) -> Layout:
        """The layout ``[offline] buckets`` (0: chosen) and ``target_file_mb`` describe; ConfigError naming the
        setting when one is out of range."""
        if not isinstance(target_file_mb, int) or isinstance(target_file_mb, bool) or target_file_mb <= 0:
            raise ConfigError(f"[offline] target_file_mb must be a positive int, got {target_file_mb!r}")
        if not isinstance(buckets, int) or isinstance(buckets, bool) or not 0 <= buckets <= MAX_BUCKETS:
            raise ConfigError(f"[offline] buckets must be 0 (chosen from the data) or an int from 1 to {MAX_BUCKETS}, "
                              f"got {buckets!r}")
        return cls(buckets=None if buckets == 0 else buckets, target_file_bytes=target_file_mb * 1024 * 1024)

    def buckets_for_rows(self, stored: pa.Table | None) -> int:
        """N for a new table whose first write is ``stored`` (None: unknown, one bucket unless fixed)."""
        if self.buckets is not None:
            return self.buckets
        return buckets_for(0.0 if stored is None else largest_day_bytes(stored), self.target_file_bytes)
