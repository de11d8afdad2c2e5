"""An in-process, bounded LRU + TTL cache of candidate-entity records, for the scorer's feature fetch.

Off by default (``CacheConfig(enabled=False)``): a scorer then reads every candidate's hash from Redis on every
request. On, it keeps, per candidate hash and field list, the raw ``HMGET`` reply (the UFR records as
stored, or None where a signal has nothing for that key) for ``ttl_s`` seconds after it was read, at most
``max_entries`` of them, least recently used evicted first.

Freshness: an answer served from the cache equals a fresh read made when the entry was filled, so a value
written to Redis (a push, a materialization) reaches the scores at most ``ttl_s`` later (default 2 s).
Records are decoded when served, never before: a record whose signal TTL passes while it is cached is
OUTSIDE_MAX_AGE exactly as a fresh read of it would be, and missing values stay NOT_FOUND / NULL_VALUE.
Only candidates are cached (the request entity, one key per request, is always read), and only on the
Redis store's fast path (``quasar.serving_adapters.redis_batch``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from quasar.signals.errors import ServingError

#: What ``get_many`` answers for a key that is not cached (or expired).
MISS: Any = object()


@dataclass(frozen=True)
class CacheConfig:
    """The candidate cache of one scorer: off by default; on, 100,000 entries for 2 seconds each."""

    enabled: bool = False
    max_entries: int = 100_000
    ttl_s: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.max_entries, bool) or not isinstance(self.max_entries, int) or self.max_entries < 1:
            raise ServingError(f"cache max_entries must be a positive integer, got {self.max_entries!r}")
        if isinstance(self.ttl_s, bool) or not isinstance(self.ttl_s, (int, float)) or not self.ttl_s > 0:
            raise ServingError(f"cache ttl_s must be positive seconds, got {self.ttl_s!r}")


class RecordCache:
    """LRU + TTL over ``key -> value``; ``hits``, ``misses`` and ``evictions`` count since it was made."""

    def __init__(self, config: CacheConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, keys: Sequence[Hashable]) -> list[Any]:
        """The cached value of each key, or ``MISS``; a hit becomes the most recently used."""
        now = self.clock()
        entries = self._entries
        out: list[Any] = []
        hits = 0
        for key in keys:
            entry = entries.get(key)
            if entry is None:
                out.append(MISS)
            elif entry[0] <= now:         # expired: gone, a miss
                del entries[key]
                out.append(MISS)
            else:
                entries.move_to_end(key)
                out.append(entry[1])
                hits += 1
        self.hits += hits
        self.misses += len(keys) - hits
        return out

    def put_many(self, keys: Sequence[Hashable], values: Sequence[Any]) -> None:
        """Cache each value for ``ttl_s`` from now; the least recently used go past ``max_entries``."""
        expires = self.clock() + self.config.ttl_s
        entries = self._entries
        for key, value in zip(keys, values, strict=True):
            entries[key] = (expires, value)
            entries.move_to_end(key)
        over = len(entries) - self.config.max_entries
        for _ in range(max(over, 0)):
            entries.popitem(last=False)
        self.evictions += max(over, 0)

    def clear(self) -> None:
        self._entries.clear()
