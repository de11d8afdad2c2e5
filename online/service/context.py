"""What the routers share: the online store, the signal resolver (with a short cache), limits, metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio.to_thread
import pyarrow as pa

from quasar.online.response import Resolve
from quasar.online.service.metrics import ServiceMetrics
from quasar.online.store import AsyncOnlineStore
from quasar.signals.bounds import DEFAULT_BOUNDS, TimeBounds
from quasar.signals.signal import Signal

OfflinePush = Callable[[Signal, int, pa.Table], None]


@dataclass
class ResolveCache:
    """Signal versions resolved in the last ``ttl_s`` seconds, so a hot path does not query the registry on
    every request; a new latest version or a changed TTL is seen within ``ttl_s``. Misses are resolved in a
    worker thread (the registry is synchronous SQL); unknown names are not cached."""

    resolve: Resolve
    ttl_s: float = 5.0
    _entries: dict[tuple[str, int | None], tuple[float, tuple[Signal, int]]] = field(default_factory=dict)

    def get(self, name: str, version: int | None) -> tuple[Signal, int]:
        """The cached answer (after ``prefetch``), else resolve now."""
        hit = self._entries.get((name, version))
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        answer = self.resolve(name, version)
        self._entries[(name, version)] = (time.monotonic() + self.ttl_s, answer)
        return answer

    def missing(self, refs: Sequence[tuple[str, int | None]]) -> list[tuple[str, int | None]]:
        now = time.monotonic()
        return [r for r in dict.fromkeys(refs) if (hit := self._entries.get(r)) is None or hit[0] <= now]

    async def prefetch(self, refs: Sequence[tuple[str, int | None]]) -> None:
        """Resolve the references not cached, in one worker thread; errors surface from ``get`` later."""
        todo = self.missing(refs)
        if todo:
            await anyio.to_thread.run_sync(self._fill, todo)

    def _fill(self, todo: list[tuple[str, int | None]]) -> None:
        for name, version in todo:
            try:
                self.get(name, version)
            except Exception:                    # the request's own get raises it again, in context
                return


@dataclass
class ServiceContext:
    store: AsyncOnlineStore
    resolver: ResolveCache
    metrics: ServiceMetrics
    max_entities: int
    max_push_rows: int
    offline_push: OfflinePush | None = None
    time_bounds: TimeBounds = DEFAULT_BOUNDS              # the times a push accepts (``quasar.signals.bounds``)
