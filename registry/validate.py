"""Checking a module's definitions against each other and against what the registry already holds.

Nothing here touches the database: the caller passes the registry's current state in, so the same checks
run inside the registration's transaction and a failure leaves the registry as it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from quasar.registry.loader import Definition, Found
from quasar.signals.entity import Entity
from quasar.signals.errors import DefinitionError, RegistrationError
from quasar.signals.refs import parse_feature_ref
from quasar.signals.request import RequestSignal
from quasar.signals.service import FeatureService
from quasar.signals.signal import Signal
from quasar.signals.source import Source
from quasar.signals.ufr.types import check_feature_type

#: Fields that identify an entity / a source; changing one of them under the same name is a conflict.
ENTITY_KEY = ("join_key", "join_key_type")
SOURCE_KEY = ("kind", "timestamp", "path", "table", "upstream")
#: A source's reading options: changing one updates the source in place (its signals get new versions where
#: the change is part of ``Source.identity``), but two definitions of one name must not disagree on them.
SOURCE_OPTIONS = ("schema", "recursive", "partitioning", "null_timestamps")


@dataclass
class RegistryState:
    """What the registry holds now: entities, sources, and the latest version of each signal."""

    entities: dict[str, Entity] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    signals: dict[str, Signal] = field(default_factory=dict)
    requests: dict[str, RequestSignal] = field(default_factory=dict)     # latest version of each
    services: dict[str, FeatureService] = field(default_factory=dict)


@dataclass
class Definitions:
    """A module's definitions after validation: one per name, inline sources of signals included."""

    entities: dict[str, Entity] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    signals: dict[str, Signal] = field(default_factory=dict)
    requests: dict[str, RequestSignal] = field(default_factory=dict)
    services: dict[str, FeatureService] = field(default_factory=dict)


def _kind(obj: Definition) -> str:
    if isinstance(obj, RequestSignal):
        return "request"
    if isinstance(obj, FeatureService):
        return "service"
    return "entity" if isinstance(obj, Entity) else "source" if isinstance(obj, Source) else "signal"


def _unique(found: Iterable[Found]) -> tuple[dict[str, dict[str, Found]], list[str]]:
    """One definition per (kind, name); two different definitions with one name are an error naming both."""
    by_kind: dict[str, dict[str, Found]] = {"entity": {}, "source": {}, "signal": {}, "request": {}, "service": {}}
    problems = []
    for item in found:
        kind, name = _kind(item.obj), item.obj.name
        seen = by_kind[kind].get(name)
        if seen is None:
            by_kind[kind][name] = item
        elif seen.obj is not item.obj and seen.obj.to_dict() != item.obj.to_dict():
            what = {"request": "request-time signal", "service": "feature service"}.get(kind, kind)
            problems.append(f"two different {what}s are named {name!r}: {seen.where} and {item.where}")
    return by_kind, problems


def _diff(old: dict[str, Any], new: dict[str, Any], keys: Iterable[str]) -> str:
    return ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def validate(found: list[Found], state: RegistryState, module: str) -> Definitions:
    """The module's definitions, checked; RegistrationError listing every problem otherwise."""
    by_kind, problems = _unique(found)
    defs = Definitions(
        entities={n: f.obj for n, f in by_kind["entity"].items()},  # type: ignore[misc]
        sources={n: f.obj for n, f in by_kind["source"].items()},   # type: ignore[misc]
        signals={n: f.obj for n, f in by_kind["signal"].items()},   # type: ignore[misc]
        requests={n: f.obj for n, f in by_kind["request"].items()},  # type: ignore[misc]
        services={n: f.obj for n, f in by_kind["service"].items()},  # type: ignore[misc]
    )
    where = {kind: {n: f.where for n, f in items.items()} for kind, items in by_kind.items()}
    problems += _add_inline_sources(defs, where)
    problems += _check_redefinitions(defs, state, where)
    for name, sig in defs.signals.items():
        problems += _check_signal(sig, defs, state, where["signal"][name], module)
    for name, src in defs.sources.items():
        if src.kind == "signal" and src.upstream not in defs.signals and src.upstream not in state.signals:
            problems.append(f"source {name!r} ({where['source'][name]}) reads signal {src.upstream!r}, which is "
                            f"neither defined in {module} nor registered")
    problems += _check_cycles(defs, state)
    problems += _check_requests(defs, state, where)
    if problems:
        raise RegistrationError(f"cannot register {module}: " + "; ".join(dict.fromkeys(problems)))
    return defs


def _add_inline_sources(defs: Definitions, where: dict[str, dict[str, str]]) -> list[str]:
    """A signal's source need not be a top-level variable (``source=Source.signal("up")``): take it in."""
    problems = []
    for name, sig in defs.signals.items():
        src = sig.source
        declared = defs.sources.get(src.name)
        if declared is None:
            defs.sources[src.name] = src
            where["source"][src.name] = f"the source of signal {name!r}, {where['signal'][name]}"
        elif declared.to_dict() != src.to_dict():
            changed = _diff(declared.to_dict(), src.to_dict(), (*SOURCE_KEY, *SOURCE_OPTIONS, "description"))
            problems.append(f"signal {name!r} ({where['signal'][name]}) uses a source {src.name!r} that differs "
                            f"from {where['source'][src.name]}: {changed}")
    return problems


def _check_redefinitions(defs: Definitions, state: RegistryState, where: dict[str, dict[str, str]]) -> list[str]:
    problems = []
    for name, ent in defs.entities.items():
        old = state.entities.get(name)
        if old is not None:
            changed = _diff(old.to_dict(), ent.to_dict(), ENTITY_KEY)
            if changed:
                problems.append(f"entity {name!r} ({where['entity'][name]}) conflicts with the registered "
                                f"entity of that name: {changed}; an entity's join key cannot change, "
                                "give the new one another name")
    for name, src in defs.sources.items():
        old_src = state.sources.get(name)
        if old_src is not None:
            changed = _diff(old_src.to_dict(), src.to_dict(), SOURCE_KEY)
            if changed:
                problems.append(f"source {name!r} ({where['source'][name]}) conflicts with the registered "
                                f"source of that name: {changed}; give the new one another name")
    return problems


def _check_signal(sig: Signal, defs: Definitions, state: RegistryState, where: str, module: str) -> list[str]:
    problems = []
    for fname, ftype in sig.schema:
        try:
            check_feature_type(ftype, f"signal {sig.name!r} feature {fname!r}")
        except DefinitionError as exc:
            problems.append(str(exc))
    ent = sig.entity
    known = defs.entities.get(ent.name) or state.entities.get(ent.name)
    if known is None:
        problems.append(f"signal {sig.name!r} ({where}) uses entity {ent.name!r}, which is neither defined in "
                        f"{module} nor registered: define it at the top level of the module")
    elif known.to_dict() != ent.to_dict():
        changed = _diff(known.to_dict(), ent.to_dict(), ("join_key", "join_key_type", "description"))
        problems.append(f"signal {sig.name!r} ({where}) uses an entity {ent.name!r} that differs from the "
                        f"one defined or registered under that name: {changed}")
    return problems


def _check_cycles(defs: Definitions, state: RegistryState) -> list[str]:
    """Upstream graph over registered signals, overridden by the module's: no cycle may go through it."""
    graph = {n: s.upstream for n, s in state.signals.items()}
    graph.update({n: s.upstream for n, s in defs.signals.items()})
    problems: list[str] = []
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name):], name]
            problems.append(f"dependency cycle: {' -> '.join(cycle)}")
            return
        if name in done:
            return
        for up in graph.get(name, []):
            visit(up, [*path, name])
        done.add(name)

    for name in sorted(defs.signals):
        visit(name, [])
    return problems


def _check_requests(defs: Definitions, state: RegistryState, where: dict[str, dict[str, str]]) -> list[str]:
    """Request-time signals and services share the reference namespace with stored signals: no name is two
    things; a request-time signal's inputs and a service's references name existing features; request-time
    signals read no cycle."""
    stored = {**state.signals, **defs.signals}
    requests = {**state.requests, **defs.requests}
    problems = _check_names(defs, state, where, stored, requests)
    for name, rs in defs.requests.items():
        for _, raw in rs.inputs:
            problems += _check_ref(raw, f"request-time signal {name!r} ({where['request'][name]})", stored,
                                   requests)
    for name, fs in defs.services.items():
        for raw in fs.features:
            problems += _check_ref(raw, f"feature service {name!r} ({where['service'][name]})", stored, requests)
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            problems.append("request-time signals read each other in a cycle: "
                            + " -> ".join([*path[path.index(name):], name]))
            return
        if name in done or name not in requests:
            return
        for up in requests[name].upstream:
            visit(up, [*path, name])
        done.add(name)

    for name in sorted(defs.requests):
        visit(name, [])
    for name, fs in defs.services.items():
        problems += _check_request_fields(fs, requests, where["service"][name])
    return problems


def _check_names(defs: Definitions, state: RegistryState, where: dict[str, dict[str, str]],
                 stored: dict[str, Signal], requests: dict[str, RequestSignal]) -> list[str]:
    """No name is a stored signal, a request-time signal and a feature service at once (module or registry)."""
    problems = []
    for name in defs.requests:
        if name in stored:
            problems.append(f"request-time signal {name!r} ({where['request'][name]}) has the name of a signal; "
                            "references could not tell them apart: rename one")
    for name in defs.signals:
        if name in state.requests:
            problems.append(f"signal {name!r} ({where['signal'][name]}) has the name of a registered request-time "
                            "signal: rename one")
    for kind, what in (("signal", "signal"), ("request", "request-time signal")):
        for name in getattr(defs, "signals" if kind == "signal" else "requests"):
            if name in state.services:
                problems.append(f"{what} {name!r} ({where[kind][name]}) has the name of a registered feature "
                                "service: a feature list naming it could mean either; rename one")
    for name in defs.services:
        if name in stored or name in requests:
            what = "signal" if name in stored else "request-time signal"
            problems.append(f"feature service {name!r} ({where['service'][name]}) has the name of a {what}: a "
                            "feature list naming it could mean either; rename one")
    return problems


def _check_ref(raw: str, who: str, stored: dict[str, Signal], requests: dict[str, RequestSignal]) -> list[str]:
    """``raw`` names a registered or module-defined signal (and, unpinned, one of its features)."""
    ref = parse_feature_ref(raw, RegistrationError)
    target: Signal | RequestSignal | None = stored.get(ref.signal) or requests.get(ref.signal)
    if target is None:
        return [f"{who} reads {raw!r}, but no signal or request-time signal named {ref.signal!r} is registered "
                "or defined in the module"]
    if ref.version is None and ref.feature is not None and ref.feature not in target.schema.names:
        return [f"{who} reads {raw!r}, but {ref.signal!r} has no feature {ref.feature!r}; its features: "
                f"{', '.join(target.schema.names)}"]
    return []


def _check_request_fields(fs: FeatureService, requests: dict[str, RequestSignal], where: str) -> list[str]:
    """The request-time signals a service reads (transitively, latest definitions) agree on the type of each
    request field: a caller sends one value per field."""
    fields: dict[str, tuple[str, str]] = {}
    problems = []
    seen: set[str] = set()
    todo = [parse_feature_ref(raw, RegistrationError).signal for raw in fs.features]
    while todo:
        name = todo.pop()
        if name in seen or name not in requests:
            continue
        seen.add(name)
        rs = requests[name]
        for fname, ftype in rs.request:
            other = fields.setdefault(fname, (str(ftype), name))
            if other[0] != str(ftype):
                problems.append(f"feature service {fs.name!r} ({where}) reads request-time signals {other[1]!r} "
                                f"and {name!r}, which declare request field {fname!r} as {other[0]} and {ftype}: "
                                "a caller sends one value; rename one")
        todo += rs.upstream
    return problems
