"""The online store plug-in point: write a signal's latest rows, read feature columns for entity keys.

One abstract base per plug-in point (sync ``OnlineStore``, async ``AsyncOnlineStore`` for the HTTP
services), a small dict from store type to lazy loader, and ``columns_from_records``, the backend-neutral
step that turns a signal's UFR records into typed columns with Feast's per-value statuses.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import IntEnum
from typing import Any

import numpy as np
import pyarrow as pa

from quasar.signals.errors import DependencyMissingError, QuasarError
from quasar.signals.signal import Signal
from quasar.signals.ufr.codec import decode


class FeatureStatus(IntEnum):
    """The status of one value, with Feast's names."""

    PRESENT = 0
    NOT_FOUND = 1
    NULL_VALUE = 2
    OUTSIDE_MAX_AGE = 3


@dataclass
class OnlineColumns:
    """One signal version's features for the requested keys, one row per key in request order.

    ``table`` has the signal's UFR Arrow schema; a value that is NOT_FOUND or OUTSIDE_MAX_AGE is null
    there (a stale value is never returned as present). ``event_time_us`` is the stored record's event
    time (0 where not found); ``status`` maps each feature to a uint8 array of ``FeatureStatus`` values.
    """

    signal: str
    version: int
    table: pa.Table
    event_time_us: np.ndarray
    status: dict[str, np.ndarray]


class OnlineStore(ABC):
    """A synchronous online store. Optional abilities are ``supports_*`` properties."""

    @abstractmethod
    def write(self, signal: Signal, version: int, rows: pa.Table) -> int:
        """Write rows (join key, event_timestamp, optional created_timestamp, features in UFR types); per key
        the winning row by ``quasar.signals.ordering`` stays. Returns how many rows were written, i.e. not rejected
        as older than what is stored."""

    @abstractmethod
    def mirror(self, signal: Signal, version: int, rows: pa.Table, *, absent: Sequence[Any] = (),
               floors: pa.Table | None = None, reset_expiry: bool = False) -> tuple[int, int]:
        """Make entities' records mirror the offline truth: ``rows`` are their winning rows, ``absent`` the
        join keys that have none any more. Returns (records written, fields deleted).

        ``floors`` None (an exact rebuild): each row replaces what is stored and each absent key's field is
        deleted. Otherwise ``floors`` (join key, event_timestamp, created_timestamp) gives each key the rank
        of the newest offline row that is gone: a stored record not above it is replaced (or deleted), one
        above it was written online only and stays unless the new row wins by ``quasar.signals.ordering``.
        ``reset_expiry`` re-applies the signal's TTL to every given key (``quasar.online.lua``)."""

    @abstractmethod
    def scan(self, signal: Signal, version: int, *, count: int = 1000) -> Iterator[list[Any]]:
        """The join key values of every entity holding a record of ``signal`` v``version``, in batches."""

    @abstractmethod
    def read(self, signal_versions: Sequence[tuple[Signal, int]], keys: Sequence[Any]) -> list[OnlineColumns]:
        """The features of every requested signal version (all of ONE entity) for ``keys``, in one round trip."""

    @abstractmethod
    def ping(self) -> None:
        """Return when the store answers; OnlineUnavailableError when it does not."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    @property
    def supports_cluster(self) -> bool:
        return False


class AsyncOnlineStore(ABC):
    """The asyncio twin of ``OnlineStore``, for the HTTP feature and scoring services."""

    @abstractmethod
    async def write(self, signal: Signal, version: int, rows: pa.Table) -> int: ...

    @abstractmethod
    async def read(self, signal_versions: Sequence[tuple[Signal, int]],
                   keys: Sequence[Any]) -> list[OnlineColumns]: ...

    @abstractmethod
    async def ping(self) -> None: ...

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""

    @property
    def supports_cluster(self) -> bool:
        return False


ONLINE_STORES: dict[str, str] = {"redis": "quasar.online.redis_store:RedisOnlineStore"}
ASYNC_ONLINE_STORES: dict[str, str] = {"redis": "quasar.online.redis_store:AsyncRedisOnlineStore"}
_EXTRAS = {"redis": ("redis", "redis")}


def _load(table: dict[str, str], kind: str) -> Any:
    if kind not in table:
        raise QuasarError(f"unknown online store {kind!r}; known online stores: {', '.join(sorted(table))}")
    module_name, _, cls_name = table[kind].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if kind in _EXTRAS and exc.name and exc.name.split(".")[0] == _EXTRAS[kind][0]:
            raise DependencyMissingError(_EXTRAS[kind][0], _EXTRAS[kind][1], f"the {kind} online store") from exc
        raise
    return getattr(module, cls_name)


def load_online_store(kind: str, **options: Any) -> OnlineStore:
    """Instantiate the online store of type ``kind`` (``redis``)."""
    store: OnlineStore = _load(ONLINE_STORES, kind)(**options)
    return store


def load_async_online_store(kind: str, **options: Any) -> AsyncOnlineStore:
    """Instantiate the async online store of type ``kind`` (``redis``)."""
    store: AsyncOnlineStore = _load(ASYNC_ONLINE_STORES, kind)(**options)
    return store


_PRESENT, _NOT_FOUND, _NULL_VALUE, _OUTSIDE_MAX_AGE = (np.uint8(s) for s in (
    FeatureStatus.PRESENT, FeatureStatus.NOT_FOUND, FeatureStatus.NULL_VALUE, FeatureStatus.OUTSIDE_MAX_AGE))


def now_us() -> int:
    """The current time in microseconds since the epoch."""
    return time.time_ns() // 1000


def oldest_fresh_us(ttl: timedelta | None, now: int) -> int | None:
    """The TTL rule: the oldest event time (µs) still fresh as of ``now`` (µs); a record whose event time is
    before it (``now - event_time > ttl``) is OUTSIDE_MAX_AGE. None without a TTL (nothing goes stale)."""
    return None if ttl is None else now - ttl // timedelta(microseconds=1)


def columns_from_records(signal: Signal, version: int, records: Sequence[bytes | None], *,
                         now: int | None = None, features: Sequence[str] | None = None) -> OnlineColumns:
    """Decode one signal version's records (None: not stored) into columns with statuses as of ``now`` (µs).

    A record older than the signal's TTL (``now - event_time > ttl``) is OUTSIDE_MAX_AGE and its values
    are nulled; a null value of a fresh record is NULL_VALUE. ``features`` decodes only those (the table and
    ``status`` hold them alone, in schema order: ``quasar.signals.ufr.codec.decode``), as a model that reads
    a few of a signal's features wants; every record is still checked.
    """
    batch = decode(signal.schema, records, signal=signal.name, features=features)
    stale, matrix = value_statuses(batch.found, batch.event_time_us, batch.valid, signal.ttl,
                                   now_us() if now is None else now)
    table = batch.table
    if stale.any():                  # null stale rows: take with a null index gives a null of any type
        table = table.take(pa.array(np.arange(len(stale), dtype=np.int64), mask=stale))
    names = signal.schema.names if features is None else table.column_names
    status = dict(zip(names, matrix, strict=True))
    return OnlineColumns(signal=signal.name, version=version, table=table, event_time_us=batch.event_time_us,
                         status=status)


def value_statuses(found: np.ndarray, event_time_us: np.ndarray, valid: np.ndarray, ttl: timedelta | None,
                   now: int) -> tuple[np.ndarray, np.ndarray]:
    """The status rule, for ``columns_from_records`` and the online read's fast path
    (``quasar.online.record_values``): per record NOT_FOUND (not ``found``), OUTSIDE_MAX_AGE (found, older
    than the TTL: ``oldest_fresh_us``) or PRESENT, and NULL_VALUE where a fresh record's value is null
    (``valid[row, feature]`` False). Returns the stale records (a bool per record) and the statuses: a uint8
    matrix of ``FeatureStatus`` codes, one row per feature (column of ``valid``), one column per record."""
    codes = np.where(found, _PRESENT, _NOT_FOUND)
    oldest = oldest_fresh_us(ttl, now)
    stale = found & (event_time_us < oldest) if oldest is not None else np.zeros_like(found)
    fresh = found
    if stale.any():
        codes[stale] = _OUTSIDE_MAX_AGE
        fresh = found & ~stale
    matrix = np.repeat(codes[None, :], valid.shape[1], axis=0)
    nulls = ~valid
    nulls &= fresh[:, None]
    if nulls.any():
        matrix[nulls.T] = _NULL_VALUE
    return stale, matrix
