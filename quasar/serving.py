"""Serve your own model: save a bundle from any torch model and the features it was trained on.

    import quasar.serving
    quasar.serving.save_bundle(model, features="ranker", name="my_ranker", project=".", candidate="pin",
                               model_kwargs={"hidden": 32})

``features`` names a registered feature service (``"ranker"``: its latest version now, recorded in the bundle;
``"ranker@3"``: that version), whose stored and request-time features the model reads, or is a list of stored
feature references (``["user_engagement:ctr_7d", "pin_stats"]``).

writes ``<project>/models/my_ranker/`` (``[serving] models``), which ``quasar score-serve`` loads at start-up.
The model's class is recorded by reference (``module:Class``): define it in a module of the project (or an
installed package); score-serve puts the project root on the import path. Every unpinned reference is pinned to
its signal's serving version, so the bundle records exactly what the training data held; the input spec comes
from the signals' schemas. ``pin_features`` and ``input_spec`` give the same pins and spec to train with.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quasar.platform import Platform

if TYPE_CHECKING:
    import torch

    from quasar.serving_adapters.authoring import Features
    from quasar.signals.entity import Entity
    from quasar.signals.ufr.tensors import InputSpec

__all__ = ["input_spec", "pin_features", "save_bundle"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@contextmanager
def _opened(project: Platform | str | Path) -> Iterator[Platform]:
    """The given Platform, or the project at a path (opened here and closed afterwards)."""
    if isinstance(project, Platform):
        yield project
        return
    with Platform.open(project) as p:
        yield p


def pin_features(features: Features, *, project: Platform | str | Path = ".") -> list[str]:
    """``features`` with every version pinned as it resolves now (unpinned: the serving version; a service:
    its pins), one ``signal@version:feature`` per feature: train and save with these and both read the same
    versions."""
    from quasar.serving_adapters.authoring import pinned_output, plan_bundle_features
    with _opened(project) as p:
        return [pinned_output(o) for o in plan_bundle_features(features, p._resolve, p.feature_lists).plan.outputs]


def input_spec(features: Features, *, project: Platform | str | Path = ".", full_names: bool = True,
               dense: Sequence[str] | None = None) -> InputSpec:
    """The UFR input spec a bundle of ``features`` records (columns ``<signal>__<feature>``, or ``<feature>``
    without ``full_names``, typed by the signals' schemas), e.g. for ``make_loader(..., spec=...)``."""
    from quasar.serving_adapters.authoring import plan_bundle_features, spec_of
    with _opened(project) as p:
        planned = plan_bundle_features(features, p._resolve, p.feature_lists, full_names=full_names)
        return spec_of(planned.plan.outputs, dense)


def save_bundle(model: torch.nn.Module, *, features: Features, name: str, project: Platform | str | Path = ".",
                candidate: str | Entity | None = None, model_kwargs: Mapping[str, Any] | None = None,
                dense: Sequence[str] | None = None, full_names: bool = True, models: str | Path | None = None,
                metrics: Mapping[str, float] | None = None) -> Path:
    """Save ``model`` as bundle ``name`` for ``quasar score-serve``; returns the bundle's folder.

    - ``features``: a feature service's name (``"ranker"``, its latest version now; ``"ranker@3"``), or the
      stored references the model reads (``signal``, ``signal:feature``, pinned or not), in the order of its
      input columns; unpinned ones are pinned to the signal's serving version. The bundle records the service
      version, and ``quasar score-serve`` reads exactly its features at its pins, request-time ones included
      (computed from the request fields sent in ``request_data``).
    - ``candidate``: the entity (name or join key) the scored candidates are; the features of any other entity
      describe the request entity (at most one). Needed only when the features describe two entities.
    - ``model_kwargs``: the arguments to rebuild the model with, ``Class(**model_kwargs)`` (JSON values);
      not needed when the constructor takes none. The rebuilt model must score a probe batch as ``model`` does.
    - ``dense``, ``full_names``: the input spec's dense block (default: every scalar numeric column) and column
      names, as in training (``Platform.loader`` uses full names).
    - ``models``: the models folder (default: the project's ``[serving] models``).

    ``model`` may be wrapped by ``torch.compile`` or (Distributed)DataParallel: its own module is saved. A
    BundleError names what is wrong (a class score-serve cannot import, an offline signal, arguments that do not
    rebuild the model) before anything is written; an unknown signal or feature is a NotFoundError.
    """
    from quasar.serving_adapters.authoring import (
        check_rebuild,
        cpu_state,
        model_kwargs_for,
        model_reference,
        plan_inputs,
        unwrap,
    )
    from quasar.serving_adapters.bundle import BundleSpec, model_class, write_bundle
    from quasar.signals.errors import BundleError
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise BundleError(f"bundle name {name!r}: use letters, digits, '_', '-' and '.', at most 128 (it names "
                          "a folder and the model in requests)")
    model = unwrap(model)
    cls = type(model)
    with _opened(project) as p:
        reference = model_reference(cls, p.root)
        planned = plan_inputs(features, p._resolve, lists=p.feature_lists, candidate=candidate,
                              full_names=full_names, dense=dense)
        folder = Path(models) if models is not None else p.config.path(p.config.serving.models)
    spec = BundleSpec(name=name, model_class=reference, model_kwargs=model_kwargs_for(cls, model_kwargs),
                      spec=planned.spec, inputs=planned.inputs, request_key=planned.request_key,
                      candidate_key=planned.candidate_key, metrics=dict(metrics or {}), service=planned.service)
    check_rebuild(spec, model, model_class(reference))
    return write_bundle(folder, spec, cpu_state(model))
