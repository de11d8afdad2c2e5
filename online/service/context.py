"""What the routers share: the online store, the signal resolver (with a short cache), the request planner
(feature lists and services expanded, request-time signals looked up, in a worker thread and then cached),
limits, metrics and the served-feature logger."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import pyarrow as pa

from quasar.online.response import OnlinePlan, Resolve, plan_request
from quasar.online.service.metrics import ServiceMetrics
from quasar.online.store import AsyncOnlineStore
from quasar.signals.bounds import DEFAULT_BOUNDS, TimeBounds
from quasar.signals.errors import NotFoundError, QuasarError, RequestError
from quasar.signals.refs import PlanErrors
from quasar.signals.request import RequestSignal
from quasar.signals.request_plan import Lookup, PlanCache, no_request_signals, plan_features
from quasar.signals.signal import Signal

if TYPE_CHECKING:
    from quasar.registry.definitions import ServiceVersion
    from quasar.registry.feature_lists import FeatureLists

_WARM_ERRORS = PlanErrors(syntax=RequestError, missing=RequestError, full_names_hint="")

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


@dataclass(frozen=True)
class Prepared:
    """A feature list (or service) ready to plan on the event loop: its references and ``resolve``/``lookup``
    that answer from what a worker thread recorded (falling back to the real call for anything not seen)."""

    refs: list[str]
    resolve: Resolve
    lookup: Lookup
    service: ServiceVersion | None = None
    plans: PlanCache = field(default_factory=lambda: PlanCache(ttl_s=float("inf"), max_entries=8))  # lives as long



def _recorded(real: Callable[[str, int | None], Any], seen: Mapping[tuple[str, int | None], Any]) -> Any:
    def answer(name: str, version: int | None) -> Any:
        key = (name, version)
        return seen[key] if key in seen else real(name, version)
    return answer


@dataclass
class RequestPlanner:
    """Feature lists and services made ready to plan without touching the registry on the event loop.

    ``prepare`` expands ``features`` (or a ``feature_service``) through ``FeatureLists.expand`` and plans it
    once in a worker thread, recording every ``resolve`` and ``lookup`` answer the plan needed (stored
    signals, request-time signals and their inputs, a service's pins); later requests for the same list plan
    from those answers for ``ttl_s`` seconds. Without ``feature_lists`` (a service built from a bare resolver)
    there are no request-time signals or services. A list whose planning fails is not cached (its request
    answers the error; the registry calls of an error are not on the hot path)."""

    resolver: ResolveCache
    feature_lists: FeatureLists | None = None
    ttl_s: float = 5.0
    max_entries: int = 1024
    _entries: dict[tuple[tuple[str, ...], str | None], tuple[float, Prepared]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def prepare(self, features: Sequence[str], service: str | None = None) -> Prepared:
        key = (tuple(features), service)
        hit = self._entries.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return await anyio.to_thread.run_sync(self._prepare, key)

    async def plan(self, entities: Mapping[str, Sequence[Any]], features: Sequence[str], service: str | None, *,
                   full_feature_names: bool, max_entities: int | None,
                   request_data: Mapping[str, Sequence[Any]] | None) -> tuple[Prepared, OnlinePlan]:
        """``prepare`` then ``quasar.online.response.plan_request`` on the event loop, from cached answers."""
        prepared = await self.prepare(features, service)
        plan = plan_request(entities, prepared.refs, prepared.resolve, full_feature_names=full_feature_names,
                            max_entities=max_entities, lookup=prepared.lookup, request_data=request_data,
                            plans=prepared.plans)
        return prepared, plan

    def _prepare(self, key: tuple[tuple[str, ...], str | None]) -> Prepared:
        features, service = key
        resolve: Resolve
        lookup: Lookup
        found: ServiceVersion | None
        if self.feature_lists is None:
            if service is not None:
                raise NotFoundError(f"feature service {service!r}: this service has no registry of feature "
                                    "services; ask for the features by reference instead")
            refs, resolve, lookup, found = list(features), self.resolver.get, no_request_signals, None
        else:
            expanded = self.feature_lists.expand(list(features) if service is None else service,
                                                 self.resolver.get, service=service)
            refs, resolve, lookup, found = expanded.refs, expanded.resolve, expanded.lookup, expanded.service
        resolved: dict[tuple[str, int | None], tuple[Signal, int]] = {}
        looked: dict[tuple[str, int | None], tuple[RequestSignal, int] | None] = {}

        def record_resolve(name: str, version: int | None) -> tuple[Signal, int]:
            resolved[(name, version)] = answer = resolve(name, version)
            return answer

        def record_lookup(name: str, version: int | None) -> tuple[RequestSignal, int] | None:
            looked[(name, version)] = answer = lookup(name, version)
            return answer

        try:                     # names never change what is resolved; full names clash least
            plan_features(refs, record_resolve, record_lookup, full_names=True, errors=_WARM_ERRORS)
        except QuasarError:
            return Prepared(refs, resolve, lookup, found)
        prepared = Prepared(refs, _recorded(resolve, resolved), _recorded(lookup, looked), found)
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self.ttl_s, prepared)
        return prepared


@dataclass
class ServiceContext:
    store: AsyncOnlineStore
    resolver: ResolveCache
    metrics: ServiceMetrics
    max_entities: int
    max_push_rows: int
    offline_push: OfflinePush | None = None
    request_planner: RequestPlanner | None = None         # built from ``resolver`` when not given
    served_log: Any = None                                # a ``served_log.ServedLog`` when a service logs
    time_bounds: TimeBounds = DEFAULT_BOUNDS              # the times a push accepts (``quasar.signals.bounds``)

    def __post_init__(self) -> None:
        if self.request_planner is None:
            self.request_planner = RequestPlanner(self.resolver, ttl_s=self.resolver.ttl_s)

    @property
    def planner(self) -> RequestPlanner:
        assert self.request_planner is not None
        return self.request_planner
