"""What a caller gives as "features" (a list of references, or a feature service's name) made ready to plan.

``FeatureLists.expand`` is the one place a feature service becomes its pinned references: datasets, loaders,
the HTTP services, the scorer's bundles and ``quasar skew`` all go through it, so a service reads the same
signal versions everywhere. It also answers ``lookup`` (is this name a request-time signal, and which
version), caching the loaded functions of a version for good and what an unpinned name means for
``ttl_s`` seconds, so a hot path does not import modules or query the registry on every call; ``resolve``
caches stored signals' serving versions the same way (the HTTP service's ``ResolveCache`` rule).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quasar.signals.errors import NotFoundError, QuasarError
from quasar.signals.refs import Resolve, parse_feature_ref
from quasar.signals.request import RequestSignal
from quasar.signals.request_plan import Lookup, PlanCache, with_pins
from quasar.signals.signal import Signal

if TYPE_CHECKING:
    from quasar.registry.definitions import ServiceVersion
    from quasar.registry.registry import Registry


@dataclass(frozen=True)
class Expanded:
    """References ready to plan, with the callbacks that honour a service's pins; ``service`` when the
    features named one."""

    refs: list[str]
    resolve: Resolve
    lookup: Lookup
    service: ServiceVersion | None = None

    @property
    def scope(self) -> tuple[str, int] | None:
        """What the callbacks depend on beyond the references (a service's pins, by its version): a plan
        cache key part."""
        return None if self.service is None else (self.service.name, self.service.version)


def service_name(features: Any) -> tuple[str, int | None] | None:
    """``(name, version)`` when ``features`` is one string that can name a service (``ranker`` or
    ``ranker@2``), else None."""
    if not isinstance(features, str):
        return None
    try:
        ref = parse_feature_ref(features)
    except QuasarError:
        return None
    return None if ref.feature is not None else (ref.signal, ref.version)


class FeatureLists:
    """Expands feature lists and feature services against one registry (thread-safe caches)."""

    def __init__(self, registry: Registry, *, ttl_s: float = 5.0) -> None:
        self.registry = registry
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._loaded: dict[tuple[str, int], RequestSignal] = {}
        self._latest: dict[str, tuple[float, int | None]] = {}
        self._services: dict[tuple[str, int | None], tuple[float, ServiceVersion | None]] = {}
        self._resolved: dict[tuple[str, int | None], tuple[float, tuple[Signal, int]]] = {}
        self.plans = PlanCache(ttl_s)           # plans made from these answers live as long as they do

    def clear(self) -> None:
        """Forget everything cached (after this process registers, backfills, materializes or promotes)."""
        with self._lock:
            self._loaded.clear()
            self._latest.clear()
            self._services.clear()
            self._resolved.clear()
            self.plans.clear()

    # --- stored signals -------------------------------------------------------------------------------
    def resolve(self, name: str, version: int | None) -> tuple[Signal, int]:
        """What ``Registry.resolve`` answers (the serving version when unpinned), cached for ``ttl_s``: a new
        serving version or a changed TTL made by another process is seen within that time; unknown names
        are not cached (NotFoundError names what exists)."""
        now = time.monotonic()
        hit = self._resolved.get((name, version))
        if hit is not None and hit[0] > now:
            return hit[1]
        sv = self.registry.resolve(name, version)
        answer = (sv.signal, sv.version)
        with self._lock:
            self._resolved[(name, version)] = (now + self.ttl_s, answer)
        return answer

    # --- request-time signals -------------------------------------------------------------------------
    def lookup(self, name: str, version: int | None) -> tuple[RequestSignal, int] | None:
        """The request-time signal version ``name@version`` means (functions attached), or None when ``name``
        is not a request-time signal."""
        if version is None:
            now = time.monotonic()
            hit = self._latest.get(name)
            if hit is None or hit[0] <= now:
                try:
                    latest: int | None = self.registry.request_signal(name).version
                except NotFoundError:
                    latest = None
                hit = (now + self.ttl_s, latest)
                with self._lock:
                    self._latest[name] = hit
            if hit[1] is None:
                return None
            version = hit[1]
        loaded = self._loaded.get((name, version))
        if loaded is None:
            try:
                loaded = self.registry.load_request(name, version).signal
            except NotFoundError:
                if version is not None and not self._is_request(name):
                    return None                  # a pinned stored signal: not ours to answer
                raise
            with self._lock:
                self._loaded[(name, version)] = loaded
        return loaded, version

    def _is_request(self, name: str) -> bool:
        try:
            self.registry.request_signal(name)
        except NotFoundError:
            return False
        return True

    # --- feature services -----------------------------------------------------------------------------
    def service(self, name: str, version: int | None = None) -> ServiceVersion | None:
        """Feature service ``name`` (at ``version``), or None when there is none of that name."""
        now = time.monotonic()
        hit = self._services.get((name, version))
        if hit is None or hit[0] <= now:
            try:
                found: ServiceVersion | None = self.registry.service(name, version)
            except NotFoundError:
                if version is not None and any(s.name == name for s in self.registry.services()):
                    raise
                found = None
            hit = (now + self.ttl_s, found)
            with self._lock:
                self._services[(name, version)] = hit
        return hit[1]

    def expand(self, features: str | Sequence[str], resolve: Resolve, *, service: str | None = None) -> Expanded:
        """``features`` ready to plan: a list of references as given; a service's name (or ``service=``) its
        pinned references, with ``resolve``/``lookup`` that read its request-time signals' inputs at the
        pins. NotFoundError names the registered services when ``service=`` names none."""
        named = (service, None) if service is not None else service_name(features)
        if named is not None:
            name, version = named
            if service is not None:
                parsed = service_name(service)
                if parsed is None:
                    raise NotFoundError(f"{service!r} is not a feature service name")
                name, version = parsed
            found = self.service(name, version)
            if found is None and service is not None:
                self.registry.service(name, version)              # raises NotFoundError naming the services
            if found is not None:
                pinned_resolve, pinned_lookup = with_pins(resolve, self.lookup, found.service.pins)
                return Expanded(found.service.refs(), pinned_resolve, pinned_lookup, found)
        refs = [features] if isinstance(features, str) else list(features)
        return Expanded(refs, resolve, self.lookup)
