"""Planning and running requests that mix stored and request-time features, written once.

``plan_features`` turns the references of one request (training dataset or online read) into a
``FeaturePlan``: the stored columns to read (``stored``: what the caller asked for, then the hidden inputs of
request-time signals), the request-time signal versions to run in dependency order (``steps``), the request
fields the caller must send, and the output columns in request order. ``FeaturePlan.compute`` runs the
steps over the stored columns and request fields; offline (``quasar.store.dataset``) and online
(``quasar.online.response``) both call it, so a request-time value is computed by the same code on the same
typed inputs in training and serving.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from quasar.signals.errors import QuasarError
from quasar.signals.refs import OutputNames, PlanErrors, PlannedFeature, Resolve, parse_feature_ref, plan_refs
from quasar.signals.request import RequestSignal
from quasar.signals.signal import Signal
from quasar.signals.ufr.types import FeatureType

#: ``lookup(name, version)``: the request-time signal version a name means, or None for a stored signal.
Lookup = Callable[[str, int | None], tuple[RequestSignal, int] | None]
HIDDEN_PREFIX = "__quasar_in__"


def no_request_signals(name: str, version: int | None) -> None:
    return None


@dataclass(frozen=True)
class Step:
    """One request-time signal version to run: ``bindings`` maps each input name the function reads to the
    column holding it (a stored column, a request field or an earlier step's output); its features land in
    the columns ``outputs`` names."""

    signal: RequestSignal
    version: int
    bindings: tuple[tuple[str, str], ...]
    outputs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Output:
    """One requested column: its name, the reference it came from, where its value is, and its type."""

    ref: str
    output: str
    column: str
    signal: str
    version: int
    feature: str
    ftype: FeatureType
    computed: bool


@dataclass
class FeaturePlan:
    """A planned request (see the module doc)."""

    stored: list[PlannedFeature]
    steps: list[Step]
    outputs: list[Output]
    request_fields: dict[str, tuple[FeatureType, str]] = field(default_factory=dict)   # field -> (type, signal)

    @property
    def hidden(self) -> list[PlannedFeature]:
        """Stored columns read only as inputs of request-time signals (not in the answer)."""
        shown = {o.column for o in self.outputs}
        return [p for p in self.stored if p.output not in shown]

    @property
    def has_requests(self) -> bool:
        return bool(self.steps)

    def compute(self, stored: Mapping[str, Any], request: Mapping[str, Any], rows: int,
                mode: str = "auto") -> dict[str, pa.Array]:
        """The request-time columns (by column name): run every step over ``stored`` (column -> Arrow array
        of the stored values, null where missing) and ``request`` (field -> Arrow array, declared types)."""
        columns: dict[str, Any] = dict(stored)
        computed: dict[str, pa.Array] = {}
        for step in self.steps:
            inputs = {}
            for name, column in step.bindings:
                if column.startswith("request:"):
                    inputs[name] = request[column[8:]]          # typed by request_arrays
                else:
                    inputs[name] = columns[column]
            result = step.signal.compute_columns(inputs, rows, mode)   # a signal has >= 1 input
            for feature, column in step.outputs:
                columns[column] = computed[column] = result[feature]
        return computed


class PlanCache:
    """Plans of recent requests, by their references and whatever scopes their callbacks (a service's pins),
    kept ``ttl_s`` seconds: the callbacks' answers (serving versions, request-time versions) are cached that
    long anyway, so a hot caller plans a feature list once per ``ttl_s`` instead of once per request. Only
    plans that succeeded are kept; ``clear`` forgets them all."""

    def __init__(self, ttl_s: float = 5.0, max_entries: int = 1024) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._plans: dict[tuple[Any, ...], tuple[float, FeaturePlan]] = {}

    def plan(self, key: tuple[Any, ...], make: Callable[[], FeaturePlan]) -> FeaturePlan:
        now = time.monotonic()
        hit = self._plans.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        plan = make()
        if len(self._plans) >= self.max_entries:
            self._plans.clear()
        self._plans[key] = (now + self.ttl_s, plan)
        return plan

    def clear(self) -> None:
        self._plans.clear()


def computed_column(signal: str, version: int, feature: str) -> str:
    return f"{signal}@{version}:{feature}"


def hidden_column(signal: str, version: int, feature: str) -> str:
    return f"{HIDDEN_PREFIX}{signal}__v{version}__{feature}"


def with_pins(resolve: Resolve, lookup: Lookup, pins: Mapping[str, int]) -> tuple[Resolve, Lookup]:
    """``resolve`` and ``lookup`` that read an unpinned reference to a pinned signal at its pin (a feature
    service's pins reach the inputs of its request-time signals too)."""
    if not pins:
        return resolve, lookup

    def pinned_resolve(name: str, version: int | None) -> tuple[Signal, int]:
        return resolve(name, pins.get(name) if version is None else version)

    def pinned_lookup(name: str, version: int | None) -> tuple[RequestSignal, int] | None:
        return lookup(name, pins.get(name) if version is None else version)

    return pinned_resolve, pinned_lookup


def plan_features(refs: Sequence[str], resolve: Resolve, lookup: Lookup, *, full_names: bool,
                  errors: PlanErrors) -> FeaturePlan:
    """Plan ``refs``: stored ones through ``quasar.signals.refs.plan_refs``, request-time ones (``lookup``
    knows them) with their inputs, transitively; output names follow the same rules and must not clash."""
    resolve = _memo(resolve)                              # one registry answer per signal version per plan
    parsed = [(raw, parse_feature_ref(raw, errors.syntax)) for raw in refs]
    kinds: list[tuple[str, Any]] = []                     # ("stored", raw) | ("request", (raw, rs, v, ref))
    known: dict[tuple[str, int | None], tuple[RequestSignal, int] | None] = {}

    def find(name: str, version: int | None) -> tuple[RequestSignal, int] | None:
        if (name, version) not in known:
            known[(name, version)] = lookup(name, version)
        return known[(name, version)]

    for raw, ref in parsed:
        found = find(ref.signal, ref.version)
        kinds.append(("stored", raw) if found is None else ("request", (raw, found, ref)))
    stored = plan_refs([raw for k, raw in kinds if k == "stored"], resolve, full_names=full_names, errors=errors)
    by_ref: dict[str, list[PlannedFeature]] = {}
    for p in stored:
        by_ref.setdefault(p.ref, []).append(p)
    builder = _Builder(resolve, find, stored, errors)
    outputs: list[Output] = []
    names = OutputNames(full_names=full_names, errors=errors)      # one naming rule, in request order
    for kind, item in kinds:
        if kind == "stored":
            for p in by_ref.pop(item, []):
                names.claim(p.output, p.ref)
                outputs.append(Output(p.ref, p.output, p.output, p.signal.name, p.version, p.feature,
                                      p.signal.schema.type_of(p.feature), False))
            continue
        raw, (rs, version), ref = item
        builder.step(rs, version, ())
        features = rs.schema.names if ref.feature is None else [ref.feature]
        if ref.feature is not None and ref.feature not in rs.schema.names:
            raise errors.missing(f"request-time signal {rs.name!r} v{version} has no feature {ref.feature!r}; "
                                 f"its features: {', '.join(rs.schema.names)}")
        for feature in features:
            column = computed_column(rs.name, version, feature)
            if any(o.column == column for o in outputs):
                continue
            output = names.claim(names.name(rs.name, feature), raw)
            outputs.append(Output(raw, output, column, rs.name, version, feature, rs.schema.type_of(feature),
                                  True))
    return FeaturePlan(stored=builder.stored, steps=builder.steps, outputs=outputs,
                       request_fields=builder.fields)


def _memo(resolve: Resolve) -> Resolve:
    answers: dict[tuple[str, int | None], tuple[Signal, int]] = {}

    def memo(name: str, version: int | None) -> tuple[Signal, int]:
        key = (name, version)
        if key not in answers:
            answers[key] = resolve(name, version)
        return answers[key]

    return memo


class _Builder:
    """Adds request-time steps (inputs first) and their hidden stored inputs to a plan."""

    def __init__(self, resolve: Resolve, find: Lookup, stored: list[PlannedFeature], errors: PlanErrors) -> None:
        self.resolve, self.find, self.errors = resolve, find, errors
        self.stored = list(stored)
        self.columns = {(p.signal.name, p.version, p.feature): p.output for p in stored}
        self.steps: list[Step] = []
        self.done: set[tuple[str, int]] = set()
        self.fields: dict[str, tuple[FeatureType, str]] = {}

    def step(self, rs: RequestSignal, version: int, path: tuple[str, ...]) -> None:
        if (rs.name, version) in self.done:
            return
        if rs.name in path:
            cycle = " -> ".join([*path[path.index(rs.name):], rs.name])
            raise self.errors.syntax(f"request-time signals read each other in a cycle: {cycle}")
        bindings = []
        for name, raw in rs.inputs:
            ref = parse_feature_ref(raw, self.errors.syntax)
            assert ref.feature is not None
            found = self.find(ref.signal, ref.version)
            if found is not None:
                upstream, up_version = found
                if ref.feature not in upstream.schema.names:
                    raise self.errors.missing(f"request-time signal {rs.name!r} reads {raw!r}, but "
                                              f"{upstream.name!r} v{up_version} has no feature {ref.feature!r}")
                self.step(upstream, up_version, (*path, rs.name))
                bindings.append((name, computed_column(upstream.name, up_version, ref.feature)))
                continue
            sig, sig_version = self.resolve(ref.signal, ref.version)
            if ref.feature not in sig.schema.names:
                raise self.errors.missing(f"request-time signal {rs.name!r} reads {raw!r}, but signal "
                                          f"{sig.name!r} v{sig_version} has no feature {ref.feature!r}")
            key = (sig.name, sig_version, ref.feature)
            if key not in self.columns:
                column = hidden_column(*key)
                self.columns[key] = column
                self.stored.append(PlannedFeature(raw, sig, sig_version, ref.feature, column))
            bindings.append((name, self.columns[key]))
        for name, ftype in rs.request:
            other = self.fields.get(name)
            if other is not None and other[0].to_dict() != ftype.to_dict():
                raise self.errors.syntax(f"request field {name!r} is {other[0]} for request-time signal "
                                         f"{other[1]!r} but {ftype} for {rs.name!r}; rename one")
            self.fields.setdefault(name, (ftype, rs.name))
            bindings.append((name, f"request:{name}"))
        self.done.add((rs.name, version))
        self.steps.append(Step(rs, version, tuple(bindings),
                               tuple((f, computed_column(rs.name, version, f)) for f in rs.schema.names)))


def _check_exact(values: list[Any], target: pa.DataType) -> None:
    """Python values that Arrow would convert with loss: a bool for a number, a fractional float for an integer
    (``pa.array([1.5], pa.int64())`` truncates to 1). A TypeError naming the value; exact floats (2.0) pass."""
    numeric, integer = pa.types.is_integer(target) or pa.types.is_floating(target), pa.types.is_integer(target)
    if not numeric:
        return
    for value in values:
        if isinstance(value, bool) or (integer and isinstance(value, float) and not value.is_integer()):
            raise TypeError(f"{value!r} is not a {target} value without loss")


def _exact_array(values: list[Any], target: pa.DataType) -> pa.Array:
    """``values`` as an array of ``target`` without loss. Scalars are inferred by Arrow in C and cast
    safely (``1.5`` for an integer is refused, ``2.0`` taken), a bool for a number refused; other types are
    converted value by value after ``_check_exact``."""
    if pa.types.is_integer(target) or pa.types.is_floating(target):
        try:
            inferred = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            inferred = None
        if inferred is not None and (pa.types.is_integer(inferred.type) or pa.types.is_floating(inferred.type)
                                     or pa.types.is_null(inferred.type)):
            return inferred if inferred.type == target else inferred.cast(target, safe=True)
    _check_exact(values, target)
    return pa.array(values, type=target)


def request_arrays(plan: FeaturePlan, values: Mapping[str, Any], rows: int,
                   error: type[QuasarError]) -> dict[str, pa.Array]:
    """The request fields the plan needs, from ``values`` (field -> list or Arrow array), as Arrow arrays of
    their declared types and ``rows`` long; a missing, short or mistyped field is ``error`` naming it."""
    out: dict[str, pa.Array] = {}
    for name, (ftype, signal) in plan.request_fields.items():
        if name not in values:
            raise error(f"request field {name!r} ({ftype}) is missing: request-time signal {signal!r} needs it")
        given = values[name]
        target = ftype.arrow_type()
        try:
            if isinstance(given, pa.ChunkedArray):
                given = given.combine_chunks()
            if isinstance(given, pa.Array):
                array = given.cast(target, safe=True)
            else:
                array = _exact_array(list(given), target)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError,
                OverflowError) as exc:
            raise error(f"request field {name!r} must hold {ftype} values for request-time signal {signal!r}: "
                        f"{str(exc).splitlines()[0]}") from exc
        if len(array) != rows:
            raise error(f"request field {name!r} has {len(array)} values for {rows} entity rows")
        out[name] = array
    return out
