"""Making a model bundle from any torch model and a feature service or a list of feature references
(``quasar.serving.save_bundle``).

The features are planned by the training dataset's own planner (``quasar.signals.request_plan``), so the
bundle's input columns have the names, versions and UFR types the training data had: a service's references
carry its pins (its version is recorded in the bundle, the latest at save when none is named), each unpinned
reference of a list is pinned to the version it resolves to (the serving version), the ``InputSpec`` comes
from the signals' schemas, and each input's role (the request entity, the candidates, or ``computed`` for a
request-time signal's feature) from its signal.

The model class is recorded by reference (``module:Class``) and the scorer rebuilds the model as
``Class(**model_kwargs)`` with the saved weights. So before anything is written the model is rebuilt here the
same way and must score a probe batch (a row with every feature missing, as for an unknown entity, and rows of
made-up values) exactly as the model itself does: a bundle that would not rebuild fails here, not at start-up.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from quasar.registry.feature_lists import Expanded, FeatureLists, service_name
from quasar.serving_adapters.bundle import BundleSpec, InputColumn, Role, ServiceRef
from quasar.signals.entity import Entity
from quasar.signals.errors import BundleError, NotFoundError
from quasar.signals.refs import PlanErrors, PlannedFeature, plan_refs
from quasar.signals.request_plan import FeaturePlan, Lookup, Output, no_request_signals, plan_features
from quasar.signals.signal import Signal
from quasar.signals.ufr.tensors import FeatureBatch, InputSpec, build_feature_batch
from quasar.signals.ufr.types import (
    Bool,
    FeatureType,
    Float32,
    Float64,
    IdList,
    Int64,
    String,
    Timestamp,
    Vector,
    WeightedIdList,
)

Resolve = Callable[[str, int | None], tuple[Signal, int]]
#: What ``features=`` takes: a feature service's name (``"ranker"``, or ``"ranker@3"`` for one version), or a
#: list of stored feature references (``signal``, ``signal:feature``, pinned or not). ``feature_refs`` is
#: where a service becomes its pinned references (``quasar.registry.feature_lists.FeatureLists.expand``).
Features = str | Sequence[str]

_ERRORS = PlanErrors(syntax=BundleError, missing=NotFoundError, full_names_hint="pass full_names=True")


@dataclass(frozen=True)
class PlannedInputs:
    """A bundle's inputs: the spec, each column's pinned reference and role, the two join keys, and the
    feature service they come from (None for a list of references)."""

    spec: InputSpec
    inputs: tuple[InputColumn, ...]
    request_key: str            # "" when the model reads nothing about a request entity
    candidate_key: str
    service: ServiceRef | None = None


@dataclass(frozen=True)
class BundleFeatures:
    """What a bundle's ``features`` plan to: the planner's ``FeaturePlan`` (outputs in column order, stored
    reads including the hidden inputs of request-time signals) and the service version, if one was named."""

    plan: FeaturePlan
    service: ServiceRef | None


def feature_refs(features: Features, resolve: Resolve, lists: FeatureLists | None, *,
                 full_names: bool = True) -> tuple[Expanded, ServiceRef | None]:
    """``features`` as references ready to plan: a service's name becomes its pinned references (and the
    version named, or its latest now); a list is taken as given. A clear error for anything else."""
    if isinstance(features, str):
        named = service_name(features)
        if named is None:
            raise BundleError(f"features={features!r}: give a feature service's name (e.g. 'ranker') or a list "
                              "of feature references")
        if lists is None:
            raise BundleError(f"features={features!r}: naming a feature service needs the project's registry")
        if lists.service(*named) is None:
            try:
                resolve(named[0], named[1])
            except NotFoundError:
                pass
            else:                                  # a signal's name where a list or a service was meant
                raise BundleError(f"features={features!r} names a signal, not a feature service: give a list of "
                                  f"feature references, e.g. [{features!r}], or a feature service's name")
        expanded = lists.expand(features, resolve, service=features)   # NotFoundError names the services
        assert expanded.service is not None
        return expanded, ServiceRef(name=expanded.service.name, version=expanded.service.version,
                                    full_names=full_names)
    refs = list(features)
    if not refs:
        raise BundleError("features: give at least one feature reference (or a feature service's name)")
    bad = [r for r in refs if not isinstance(r, str)]
    if bad:
        raise BundleError(f"features: every feature reference is a string like 'signal:feature', got {bad[0]!r}")
    lookup = lists.lookup if lists is not None else no_request_signals
    return Expanded(refs, resolve, _stored_only(lookup)), None


def _stored_only(lookup: Lookup) -> Lookup:
    """A lookup that refuses request-time signals in a plain list: their inputs would float with the serving
    versions, where a feature service pins them."""

    def refuse(name: str, version: int | None) -> None:
        if lookup(name, version) is not None:
            raise BundleError(f"{name!r} is a request-time signal: a bundle reads request-time signals through a "
                              "feature service, whose pins fix their inputs; define FeatureService(name=..., "
                              "features=[...]) in a module, register it and pass features='<its name>'")
        return None

    return refuse


def plan_bundle_features(features: Features, resolve: Resolve, lists: FeatureLists | None = None, *,
                         full_names: bool = True) -> BundleFeatures:
    """The references planned as a training dataset plans them (``quasar.signals.request_plan``): pinned to
    the versions they resolve to (a service's pins), each column named as the dataset names it
    (``<signal>__<feature>`` with ``full_names``)."""
    expanded, service = feature_refs(features, resolve, lists, full_names=full_names)
    plan = plan_features(expanded.refs, expanded.resolve, expanded.lookup, full_names=full_names, errors=_ERRORS)
    return BundleFeatures(plan, service)


def planned_features(features: Sequence[str], resolve: Resolve, *, full_names: bool = True) -> list[PlannedFeature]:
    """A list of stored references planned as a training dataset plans them (``plan_refs``)."""
    refs = list(features) if not isinstance(features, str) else [features]
    return plan_refs(refs, resolve, full_names=full_names, errors=_ERRORS)


def spec_of(outputs: Sequence[Output], dense: Sequence[str] | None = None) -> InputSpec:
    """The InputSpec of planned outputs: their columns, typed by the signals' schemas."""
    return InputSpec(features=tuple((o.output, o.ftype) for o in outputs),
                     dense=None if dense is None else tuple(dense))


def pinned(pf: PlannedFeature) -> str:
    return f"{pf.signal.name}@{pf.version}:{pf.feature}"


def pinned_output(o: Output) -> str:
    return f"{o.signal}@{o.version}:{o.feature}"


def _entity_label(entity: Entity) -> str:
    return f"{entity.name} ({entity.join_key})"


def _candidate_key(planned: Sequence[PlannedFeature], candidate: str | Entity | None) -> str:
    """The candidates' join key: the entity ``candidate`` names (by name or join key), or the only one."""
    entities: dict[str, Entity] = {}
    for pf in planned:
        entities.setdefault(pf.signal.entity.join_key, pf.signal.entity)
    shown = ", ".join(_entity_label(e) for e in entities.values())
    if not entities:
        raise BundleError("the features read no stored feature, so no entity says what the candidates are: "
                          "add a stored feature of the candidates' entity")
    if candidate is None:
        if len(entities) == 1:
            return next(iter(entities))
        raise BundleError(f"the features describe {len(entities)} entities, {shown}: say which one the "
                          f"candidates are, e.g. candidate={next(reversed(entities.values())).name!r} (the "
                          "others describe the request entity)")
    wanted = candidate.name if isinstance(candidate, Entity) else candidate
    for key, entity in entities.items():
        if wanted in (entity.name, entity.join_key):
            return key
    raise BundleError(f"candidate={wanted!r}: no feature describes that entity; the features describe {shown}")


def plan_inputs(features: Features, resolve: Resolve, *, lists: FeatureLists | None = None,
                candidate: str | Entity | None = None, full_names: bool = True,
                dense: Sequence[str] | None = None) -> PlannedInputs:
    """Plan a bundle's inputs: ``plan_bundle_features``, every stored signal online (the hidden inputs of
    request-time signals too), each stored column's role from its entity, request-time columns computed."""
    planned = plan_bundle_features(features, resolve, lists, full_names=full_names)
    plan = planned.plan
    offline = sorted({pf.signal.name for pf in plan.stored if not pf.signal.online})
    if offline:
        raise BundleError(f"signal(s) {', '.join(offline)} are not online: the scorer reads a model's features "
                          "from the online store, so declare them with online=True and materialize them")
    candidate_key = _candidate_key(plan.stored, candidate)
    request = {pf.signal.entity.join_key: pf.signal.entity for pf in plan.stored
               if pf.signal.entity.join_key != candidate_key}
    if len(request) > 1:
        raise BundleError(f"a scoring request has one request entity besides its candidates ({candidate_key}), "
                          f"but the features describe {', '.join(_entity_label(e) for e in request.values())}")
    entity_of = {(pf.signal.name, pf.version): pf.signal.entity.join_key for pf in plan.stored}
    inputs = []
    for o in plan.outputs:
        role: Role
        if o.computed:
            role = "computed"
        else:
            role = "candidate" if entity_of[(o.signal, o.version)] == candidate_key else "request"
        inputs.append(InputColumn(column=o.output, ref=pinned_output(o), role=role))
    return PlannedInputs(spec=spec_of(plan.outputs, dense), inputs=tuple(inputs),
                         request_key=next(iter(request), ""), candidate_key=candidate_key, service=planned.service)


# --- the model class, by reference ------------------------------------------------------------------------
def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The user's own module inside the wrappers training puts around it (``torch.compile``, DataParallel,
    DistributedDataParallel): their class is torch's, and their state-dict keys carry a prefix."""
    while True:
        inner = getattr(model, "_orig_mod", None)                  # torch.compile's OptimizedModule
        if inner is None and isinstance(model, torch.nn.DataParallel | torch.nn.parallel.DistributedDataParallel):
            inner = model.module
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def model_reference(cls: type, root: Path) -> str:
    """``module:Class`` for a model class, refused when score-serve (which imports from the project ``root``
    and installed packages) could not import it by that name."""
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise BundleError(f"the model must be a torch.nn.Module, got {cls!r}")
    module_name, qualname = cls.__module__, cls.__qualname__
    if module_name == "__main__":
        raise BundleError(f"model class {qualname!r} is defined in __main__ (a script or a notebook), which "
                          "score-serve cannot import: move it to a module of the project (e.g. "
                          f"{root / 'my_model.py'}) and import it from there")
    if "." in qualname or "<" in qualname:
        raise BundleError(f"model class {module_name}.{qualname} is not defined at the top level of its module, "
                          "so it cannot be imported by name: define it at the top level")
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    if getattr(module, qualname, None) is None:
        raise BundleError(f"model class {qualname!r} is not an attribute of module {module_name!r}")
    _check_import_root(module, module_name, qualname, root)
    return f"{module_name}:{qualname}"


def _check_import_root(module: Any, module_name: str, qualname: str, root: Path) -> None:
    """A module file inside the project that was imported through a folder below the root (say, from a script
    in ``models/``) has another name from the root: refuse it, naming the one score-serve would use."""
    file = getattr(module, "__file__", None)
    if not file:
        return
    path = Path(file).resolve()
    entry = path.parent
    for _ in range(module_name.count(".") + (path.name == "__init__.py")):
        entry = entry.parent
    root = root.resolve()
    if entry == root or root not in entry.parents:
        return                               # found from the root itself, or from outside it (installed)
    parts = path.relative_to(root).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    if any(p in ("site-packages", "dist-packages") or not p.isidentifier() for p in parts):
        return                               # a virtual environment inside the project
    expected = ".".join(parts)
    raise BundleError(f"model class {qualname!r} comes from {path}, imported as module {module_name!r}; "
                      f"score-serve imports from the project root ({root}), where that file is module "
                      f"{expected!r}: import it as `from {expected} import {qualname}`")


def model_kwargs_for(cls: type, model_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The constructor arguments the scorer rebuilds the model with: as given (JSON-safe), or none when the
    class needs none."""
    if model_kwargs is None:
        try:
            required = [n for n, p in inspect.signature(cls).parameters.items()
                        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        except (TypeError, ValueError):
            required = []
        if required:
            raise BundleError(f"{cls.__name__} takes arguments ({', '.join(required)}): pass model_kwargs="
                              f"{{{', '.join(f'{n!r}: ...' for n in required)}}}, which the scorer rebuilds it "
                              f"with as {cls.__name__}(**model_kwargs) before loading the weights")
        return {}
    kwargs = dict(model_kwargs)
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"model_kwargs must be JSON values (they are written to bundle.json): {exc}") from exc
    return kwargs


# --- the rebuild check -------------------------------------------------------------------------------------
_PROBE_ROWS = 3


def _probe_column(ftype: FeatureType) -> pa.Array:
    """Row 0 missing, rows 1-2 made-up values of the type."""
    t = ftype.arrow_type()
    values: list[Any]
    if isinstance(ftype, Bool):
        values = [None, True, False]
    elif isinstance(ftype, Int64):
        values = [None, 3, 17]
    elif isinstance(ftype, Float32 | Float64):
        values = [None, 0.5, 2.25]
    elif isinstance(ftype, Timestamp):
        values = [None, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)]
    elif isinstance(ftype, String):
        values = [None, "a", "b"]
    elif isinstance(ftype, Vector):
        rows = [None, [0.25 * (i + 1) for i in range(ftype.dim)], [-0.5 + 0.125 * i for i in range(ftype.dim)]]
        return pa.array(rows, pa.list_(pa.float32(), ftype.dim)).cast(t)
    elif isinstance(ftype, IdList):
        values = [None, [101, 7, 4242], []]
    elif isinstance(ftype, WeightedIdList):
        values = [None, [{"id": 101, "weight": 0.5}, {"id": 4242, "weight": 2.0}], []]
    else:                                       # pragma: no cover - every UFR type is handled above
        values = [None] * _PROBE_ROWS
    return pa.array(values, t)


def probe_batch(spec: InputSpec) -> FeatureBatch:
    """A small FeatureBatch of ``spec``: a row with every feature missing and rows of made-up values."""
    table = pa.table({name: _probe_column(ftype) for name, ftype in spec.features})
    return build_feature_batch(table, spec)


def _device_of(module: torch.nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _score(module: torch.nn.Module, batch: FeatureBatch, what: str) -> torch.Tensor:
    try:
        with torch.inference_mode():
            out = module(batch.to(_device_of(module)))
    except Exception as exc:
        raise BundleError(f"{what} failed on a probe batch of {batch.size} rows (one with every feature missing, "
                          f"as the scorer sends for an unknown entity): {type(exc).__name__}: {exc}") from exc
    if not isinstance(out, torch.Tensor) or out.numel() != batch.size or out.dim() not in (1, 2):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BundleError(f"{what} returned {shape} for {batch.size} rows; a scorer model must return one "
                          "score per row ([B] or [B, 1])")
    return out.detach().reshape(-1).to(device="cpu", dtype=torch.float32)


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as CPU tensors (the model itself is not moved)."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def check_rebuild(spec: BundleSpec, model: torch.nn.Module, model_class: type) -> None:
    """Rebuild the model as the scorer will (``Class(**model_kwargs)``, the saved weights) and check that it
    scores the probe batch as ``model`` does; BundleError naming what differs."""
    name = f"{model_class.__name__}(**{spec.model_kwargs})"
    try:
        rebuilt = model_class(**spec.model_kwargs)
    except Exception as exc:
        raise BundleError(f"the scorer rebuilds the model as {name}, which fails: {type(exc).__name__}: "
                          f"{exc}") from exc
    try:
        rebuilt.load_state_dict(cpu_state(model))
    except RuntimeError as exc:
        raise BundleError(f"the weights do not fit {name}, as the scorer rebuilds the model (pass the "
                          f"model_kwargs it was built with): {exc}") from exc
    batch = probe_batch(spec.spec)
    was_training = model.training
    model.eval()
    rebuilt.eval()
    try:
        want = _score(model, batch, "the model")
    finally:
        model.train(was_training)
    got = _score(rebuilt, batch, f"the model rebuilt as {name}")
    if not torch.allclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True):
        raise BundleError(f"the model rebuilt as {name} with its weights scores a probe batch {got.tolist()}, "
                          f"the model itself {want.tolist()}: state outside its parameters and buffers (set after "
                          "construction) is not saved; make it a constructor argument or a buffer")
