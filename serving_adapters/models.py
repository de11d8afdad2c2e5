"""Loading model bundles for scoring, checked against the registry.

A bundle records, for every input column, the exact feature it was trained on (``signal@version:feature``)
and its UFR type. At request time those features come from the online store, which holds the registry's
current version of each signal; so a bundle is served only while every reference still names that version,
an existing feature, the same UFR type, an online signal and the right entity. Anything else is refused at
load with a ``BundleError`` that names the model, the reference and the mismatch.

A bundle saved from a feature service is checked differently: the service version it records is expanded
(``quasar.registry.feature_lists.FeatureLists.expand``, the one place a service becomes pinned references)
and planned by ``quasar.signals.request_plan`` again, and the outputs must be the bundle's input columns,
references and types. Its stored signals are read at the service's pins (a newer serving version does not
change the model's inputs), and only what the plan needs is read: the service's stored features and the
stored inputs of its request-time signals, nothing more.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from quasar.serving_adapters.bundle import Bundle, BundleSpec, InputColumn, bundle_names, load_bundle
from quasar.signals.entity import Entity
from quasar.signals.errors import BundleError, ModelNotFoundError, NotFoundError, QuasarError
from quasar.signals.refs import PlanErrors
from quasar.signals.request_plan import FeaturePlan, plan_features
from quasar.signals.signal import Signal

if TYPE_CHECKING:
    from quasar.registry.definitions import ServiceVersion
    from quasar.registry.feature_lists import FeatureLists

log = logging.getLogger("quasar.scorer")

#: ``resolve(signal_name, version)`` -> the signal and its version; ``version=None`` asks for the current one.
Resolver = Callable[[str, int | None], tuple[Signal, int]]


@dataclass(frozen=True)
class FeatureRef:
    """A parsed ``signal@version:feature`` reference."""

    signal: str
    version: int
    feature: str

    def __str__(self) -> str:
        return f"{self.signal}@{self.version}:{self.feature}"


@dataclass(frozen=True)
class SignalRead:
    """The features one model reads from one signal version, with the input column each one fills."""

    signal: Signal
    version: int
    features: tuple[tuple[str, str], ...]  # (feature name in the signal, input column of the model)

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        """The feature names read, in ``features``' order (what the decode is given)."""
        return tuple(f for f, _ in self.features)


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A bundle that passed the registry checks, with its online reads grouped by role and signal.

    Compared and hashed by identity: a reloaded bundle is another model (the batcher never mixes them)."""

    name: str
    bundle: Bundle
    request_reads: tuple[SignalRead, ...]
    candidate_reads: tuple[SignalRead, ...]
    request_entity: Entity | None       # None when the model reads nothing about the request entity
    candidate_entity: Entity | None     # None when the model reads nothing about the candidates
    plan: FeaturePlan | None = None     # a service bundle's plan: its outputs, request-time steps and fields
    service: ServiceVersion | None = None

    @property
    def spec(self) -> BundleSpec:
        return self.bundle.spec

    @property
    def request_fields(self) -> list[str]:
        """The request fields a request must send in ``request_data`` (for request-time signals)."""
        return list(self.plan.request_fields) if self.plan is not None else []

    def describe(self) -> dict[str, object]:
        """A short JSON-able summary (for ``/healthz``)."""
        return {"name": self.name, "model_class": self.spec.model_class, "request_key": self.spec.request_key,
                "candidate_key": self.spec.candidate_key, "inputs": [c.ref for c in self.spec.inputs],
                "created_at": self.spec.created_at,
                "service": str(self.spec.service) if self.spec.service is not None else None,
                "request_fields": self.request_fields}


def parse_ref(ref: str, model: str) -> FeatureRef:
    """``signal@version:feature`` -> FeatureRef; a bundle must pin every version."""
    head, sep, feature = ref.partition(":")
    name, at, version = head.partition("@")
    if not (sep and at and name and feature and version.isdigit()):
        raise BundleError(f"model {model!r}: input reference {ref!r} is not 'signal@version:feature' "
                          "(a bundle must pin the exact version it was trained on)")
    return FeatureRef(name, int(version), feature)


def static_resolver(signals: Mapping[str, Mapping[int, Signal]]) -> Resolver:
    """A resolver over ``{name: {version: Signal}}`` (tests, benchmarks); the highest version is current."""

    def resolve(name: str, version: int | None) -> tuple[Signal, int]:
        versions = signals.get(name)
        if not versions:
            raise NotFoundError(f"signal {name!r} not found; known: {', '.join(sorted(signals)) or 'none'}")
        chosen = max(versions) if version is None else version
        if chosen not in versions:
            raise NotFoundError(f"signal {name!r} has no version {version}; versions: {sorted(versions)}")
        return versions[chosen], chosen

    return resolve


def registry_resolver(registry: object) -> Resolver:
    """A resolver over a ``registry.Registry`` (anything with ``resolve(name, version) -> SignalVersion``;
    an unpinned reference gets the serving version)."""

    def resolve(name: str, version: int | None) -> tuple[Signal, int]:
        found = registry.resolve(name, version)  # type: ignore[attr-defined]
        return found.signal, int(found.version)

    return resolve


def check_bundle(bundle: Bundle, resolve: Resolver, lists: FeatureLists | None = None) -> LoadedModel:
    """Check every input of ``bundle`` against the registry and group the online reads; BundleError if not."""
    spec = bundle.spec
    if spec.service is not None:
        return check_service_bundle(bundle, resolve, lists)
    model = spec.name
    spec_types = dict(spec.spec.features)
    columns = [c.column for c in spec.inputs]
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise BundleError(f"model {model!r}: input columns {dupes} are listed more than once")
    missing = [c for c in spec_types if c not in columns]
    if missing:
        raise BundleError(f"model {model!r}: input spec columns {missing} have no feature reference")
    reads: dict[str, dict[tuple[str, int], list[tuple[str, str]]]] = {"request": {}, "candidate": {}}
    signals: dict[tuple[str, int], Signal] = {}
    entities: dict[str, Entity] = {}
    for column in spec.inputs:
        if column.column not in spec_types:
            raise BundleError(f"model {model!r}: input {column.column!r} ({column.ref}) is not in the input spec")
        if column.role not in reads:
            raise BundleError(f"model {model!r}: input {column.column!r} has role {column.role!r}; "
                              "use 'request' or 'candidate'")
        ref = parse_ref(column.ref, model)
        signal = _current_signal(model, column, ref, resolve)
        key = spec.request_key if column.role == "request" else spec.candidate_key
        if signal.entity.join_key != key:
            raise BundleError(f"model {model!r}: input {column.column!r} ({ref}) is a {column.role} input, so it "
                              f"must describe the entity keyed by {key!r}, but signal {ref.signal!r} is keyed by "
                              f"{signal.entity.join_key!r}")
        _check_feature(model, column, ref, signal, spec_types[column.column])
        seen = entities.setdefault(column.role, signal.entity)
        if seen.join_key_type != signal.entity.join_key_type:
            raise BundleError(f"model {model!r}: {column.role} inputs disagree on the type of {key!r} "
                              f"({seen.join_key_type} vs {signal.entity.join_key_type} in {ref.signal!r})")
        signals[(ref.signal, ref.version)] = signal
        reads[column.role].setdefault((ref.signal, ref.version), []).append((ref.feature, column.column))

    def grouped(role: str) -> tuple[SignalRead, ...]:
        return tuple(SignalRead(signal=signals[k], version=k[1], features=tuple(v)) for k, v in reads[role].items())

    return LoadedModel(name=model, bundle=bundle, request_reads=grouped("request"),
                       candidate_reads=grouped("candidate"), request_entity=entities.get("request"),
                       candidate_entity=entities.get("candidate"))


def _service_plan(spec: BundleSpec, resolve: Resolver, lists: FeatureLists | None) -> tuple[FeaturePlan, ServiceVersion | None]:
    """The recorded service version expanded and planned again; BundleError naming the model otherwise."""
    assert spec.service is not None
    model, service = spec.name, spec.service
    if lists is None:
        raise BundleError(f"model {model!r} reads feature service {service}, but this scorer has no registry "
                          "to expand services with")
    errors = PlanErrors(syntax=BundleError, missing=BundleError, full_names_hint="save the bundle again")
    try:
        expanded = lists.expand(str(service), resolve, service=str(service))
        plan = plan_features(expanded.refs, expanded.resolve, expanded.lookup, full_names=service.full_names,
                             errors=errors)
    except BundleError as exc:
        raise BundleError(f"model {model!r} reads feature service {service}: {exc}") from exc
    except QuasarError as exc:
        raise BundleError(f"model {model!r} reads feature service {service}, which cannot be planned: "
                          f"{exc}") from exc
    return plan, expanded.service


def check_service_bundle(bundle: Bundle, resolve: Resolver, lists: FeatureLists | None) -> LoadedModel:
    """Check a bundle saved from a feature service: its service version planned again must give exactly its
    input columns (references and types); group the plan's stored reads (outputs and hidden inputs of
    request-time signals) by role, at the service's pins."""
    spec = bundle.spec
    model = spec.name
    plan, service = _service_plan(spec, resolve, lists)
    recorded = [(c.column, c.ref, spec_type.to_dict())
                for c, (_, spec_type) in zip(spec.inputs, spec.spec.features, strict=False)]
    planned = [(o.output, f"{o.signal}@{o.version}:{o.feature}", o.ftype.to_dict()) for o in plan.outputs]
    names = [c.column for c in spec.inputs]
    if names != [n for n, _ in spec.spec.features] or recorded != planned:
        for got, want in zip(recorded, planned, strict=False):
            if got != want:
                raise BundleError(f"model {model!r}: input {got[0]!r} ({got[1]}, {got[2]['type']}) but feature "
                                  f"service {spec.service} gives {want[0]!r} ({want[1]}, {want[2]['type']}) there; "
                                  "save the bundle again from the service")
        raise BundleError(f"model {model!r}: {len(recorded)} inputs, but feature service {spec.service} gives "
                          f"{len(planned)} features; save the bundle again from the service")
    roles = {c.column: c.role for c in spec.inputs}
    reads: dict[str, dict[tuple[str, int], list[tuple[str, str]]]] = {"request": {}, "candidate": {}}
    signals: dict[tuple[str, int], Signal] = {}
    entities: dict[str, Entity] = {}
    for pf in plan.stored:
        signal = pf.signal
        if not signal.online:
            raise BundleError(f"model {model!r}: feature service {spec.service} reads {pf.ref}, but signal "
                              f"{signal.name!r} is not online (declare it with online=True and materialize it)")
        key = signal.entity.join_key
        if key == spec.candidate_key:
            role = "candidate"
        elif key == spec.request_key:
            role = "request"
        else:
            raise BundleError(f"model {model!r}: feature service {spec.service} reads {pf.ref}, keyed by {key!r}, "
                              f"but the model's requests give only {spec.request_key!r} and {spec.candidate_key!r}")
        if pf.output in roles and roles[pf.output] != role:
            raise BundleError(f"model {model!r}: input {pf.output!r} is recorded as a {roles[pf.output]} input, "
                              f"but its signal {signal.name!r} is keyed by {key!r} (a {role} input)")
        entities.setdefault(role, signal.entity)
        signals[(signal.name, pf.version)] = signal
        reads[role].setdefault((signal.name, pf.version), []).append((pf.feature, pf.output))

    def grouped(role: str) -> tuple[SignalRead, ...]:
        return tuple(SignalRead(signal=signals[k], version=k[1], features=tuple(v)) for k, v in reads[role].items())

    return LoadedModel(name=model, bundle=bundle, request_reads=grouped("request"),
                       candidate_reads=grouped("candidate"), request_entity=entities.get("request"),
                       candidate_entity=entities.get("candidate"), plan=plan,
                       service=service)


def _current_signal(model: str, column: InputColumn, ref: FeatureRef, resolve: Resolver) -> Signal:
    try:
        signal, current = resolve(ref.signal, None)
    except NotFoundError as exc:
        raise BundleError(f"model {model!r}: input {column.column!r} reads {ref}, but the registry has no "
                          f"signal {ref.signal!r}") from exc
    if current != ref.version:
        raise BundleError(f"model {model!r}: input {column.column!r} reads {ref}, but the registry's current "
                          f"version of {ref.signal!r} is {current}; the online store serves only that one, so "
                          "retrain the model on it")
    if not signal.online:
        raise BundleError(f"model {model!r}: input {column.column!r} reads {ref}, but signal {ref.signal!r} "
                          "is not online (declare it with online=True and materialize it)")
    return signal


def _check_feature(model: str, column: InputColumn, ref: FeatureRef, signal: Signal, recorded: object) -> None:
    features = signal.schema.as_dict()
    if ref.feature not in features:
        raise BundleError(f"model {model!r}: input {column.column!r} reads {ref}, but signal "
                          f"{ref.signal!r}@{ref.version} has no feature {ref.feature!r}; its features: "
                          f"{', '.join(features)}")
    if features[ref.feature] != recorded:
        raise BundleError(f"model {model!r}: input {column.column!r} reads {ref} as {recorded}, but the "
                          f"registry's schema says {features[ref.feature]}")


@dataclass(frozen=True)
class ModelState:
    """What the service knows of one bundle of its folder: ``loaded``, ``failed`` (with the error), or
    ``unloaded`` (added since start-up, or evicted: it loads on its first request)."""

    name: str
    state: Literal["loaded", "failed", "unloaded"]
    model: LoadedModel | None = None
    error: QuasarError | None = None

    def describe(self) -> dict[str, object]:
        """A JSON-able summary (for ``/healthz``, to an authorized caller: it names feature references)."""
        if self.model is not None:
            return {"state": self.state, **self.model.describe()}
        body: dict[str, object] = {"name": self.name, "state": self.state}
        if self.error is not None:
            body["error"] = {"type": type(self.error).__name__, "message": str(self.error)}
        return body


class ModelRegistry:
    """Bundles of a models folder, checked against the registry, then cached: all of them at start-up
    (``load_all``), and any other on first use. A bundle that fails is remembered with its error (``states``)
    and tried again on its next request, so a fixed one loads without a restart."""

    def __init__(self, models_folder: str | Path, resolve: Resolver, lists: FeatureLists | None = None) -> None:
        self.folder = Path(models_folder)
        self.resolve = resolve
        self.lists = lists            # expands the feature services that bundles name
        self._loaded: dict[str, LoadedModel] = {}
        self._failed: dict[str, QuasarError] = {}
        self._lock = threading.Lock()

    def cached(self, name: str) -> LoadedModel | None:
        """The model if it is already loaded (no disk or registry access)."""
        return self._loaded.get(name)

    def get(self, name: str) -> LoadedModel:
        """Load (once) and return model ``name``; ModelNotFoundError if there is no such bundle, BundleError if
        it does not match the registry, ModelImportError if its class cannot be imported. A refused bundle is
        not cached, so a fixed one loads next time."""
        found = self._loaded.get(name)
        if found is not None:
            return found
        with self._lock:                # load_bundle checks the name against the bundles before any path use
            found = self._loaded.get(name)
            if found is None:
                try:
                    found = check_bundle(load_bundle(self.folder, name), self.resolve, self.lists)
                except ModelNotFoundError:   # no such bundle (any more): nothing to remember
                    self._failed.pop(name, None)
                    raise
                except QuasarError as exc:
                    self._failed[name] = exc
                    raise
                self._failed.pop(name, None)
                self._loaded[name] = found
            return found

    def load_all(self) -> list[ModelState]:
        """Load every bundle of the folder now (the service's start-up), logging each one that fails; the
        states of all of them."""
        for name in bundle_names(self.folder):
            try:
                self.get(name)
            except QuasarError as exc:
                log.warning("model %r failed to load: %s", name, exc)
        return self.states()

    def states(self) -> list[ModelState]:
        """Every bundle of the folder (and every loaded model), by name, with its state."""
        names = sorted(set(bundle_names(self.folder)) | set(self._loaded))
        out = []
        for name in names:
            loaded, failed = self._loaded.get(name), self._failed.get(name)
            if loaded is not None:
                out.append(ModelState(name, "loaded", model=loaded))
            elif failed is not None:
                out.append(ModelState(name, "failed", error=failed))
            else:
                out.append(ModelState(name, "unloaded"))
        return out

    def evict(self, name: str) -> None:
        """Forget a loaded model, so the next request reloads and rechecks it (e.g. after retraining)."""
        with self._lock:
            self._loaded.pop(name, None)
            self._failed.pop(name, None)

    def loaded(self) -> list[LoadedModel]:
        return [self._loaded[n] for n in sorted(self._loaded)]
