"""Model bundles: a trained torch model plus the exact UFR input spec it was trained on.

A bundle is a folder ``<models>/<name>/`` holding ``bundle.json`` and ``model.pt`` (the state dict).
``bundle.json`` records the model class (``module:Class``) and its constructor kwargs, and for every
input column the feature reference it was read from (``signal@version:feature``), the entity it
describes (``request`` entity or ``candidate`` entity), and its UFR type. The scorer refuses a bundle
whose references no longer match the registry.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch

from quasar.signals.errors import BundleError, ModelNotFoundError
from quasar.signals.ufr.tensors import InputSpec

BUNDLE_FILE = "bundle.json"
WEIGHTS_FILE = "model.pt"
Role = Literal["request", "candidate"]


@dataclass(frozen=True, kw_only=True)
class InputColumn:
    """One model input column: where it comes from and which side of the request it describes."""

    column: str          # name in the InputSpec (and in the training dataset)
    ref: str             # signal@version:feature
    role: Role           # "request" (e.g. the user) or "candidate" (e.g. each pin)

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "ref": self.ref, "role": self.role}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputColumn:
        return cls(column=d["column"], ref=d["ref"], role=d["role"])


@dataclass(frozen=True, kw_only=True)
class BundleSpec:
    """Everything but the weights."""

    name: str
    model_class: str                      # "package.module:Class"
    model_kwargs: dict[str, Any]
    spec: InputSpec
    inputs: tuple[InputColumn, ...]
    request_key: str                      # join key of the request entity, e.g. "user_id"
    candidate_key: str                    # join key of the candidates, e.g. "pin_id"
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model_class": self.model_class, "model_kwargs": self.model_kwargs,
                "spec": self.spec.to_dict(), "inputs": [c.to_dict() for c in self.inputs],
                "request_key": self.request_key, "candidate_key": self.candidate_key,
                "created_at": self.created_at, "metrics": self.metrics}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BundleSpec:
        return cls(name=d["name"], model_class=d["model_class"], model_kwargs=d["model_kwargs"],
                   spec=InputSpec.from_dict(d["spec"]), inputs=tuple(InputColumn.from_dict(c) for c in d["inputs"]),
                   request_key=d["request_key"], candidate_key=d["candidate_key"], created_at=d["created_at"],
                   metrics=d.get("metrics", {}))


@dataclass
class Bundle:
    spec: BundleSpec
    model: torch.nn.Module


def _model_class(path: str) -> type[torch.nn.Module]:
    module_name, _, cls_name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise BundleError(f"model class {path!r} cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise BundleError(f"model class {path!r} is not a torch.nn.Module")
    return cls


def save_bundle(folder: str | Path, spec: BundleSpec, model: torch.nn.Module) -> Path:
    """Write ``<folder>/<spec.name>/`` with the spec and the model's state dict; return that path."""
    path = Path(folder) / spec.name
    path.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path / WEIGHTS_FILE)
    (path / BUNDLE_FILE).write_text(json.dumps(spec.to_dict(), indent=2))
    return path


def bundle_names(folder: str | Path) -> list[str]:
    """The names of the bundles in a models folder (sub-folders holding a ``bundle.json``), sorted."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if e.is_dir() and os.path.isfile(os.path.join(e.path, BUNDLE_FILE)))
    except (FileNotFoundError, NotADirectoryError):
        return []


def shown_name(name: object, limit: int = 64) -> str:
    """A model name for a message: its repr, shortened when long (a request may send 256 characters)."""
    text = repr(name)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(name))} characters)"


def load_bundle(folder: str | Path, name: str, map_location: str | torch.device = "cpu") -> Bundle:
    """Load bundle ``name`` from the models folder; ModelNotFoundError lists the bundles that exist.

    The name is checked against the folder's bundles before any path is made of it, so no name (too long,
    with ``/`` or ``..``, a NUL) ever reaches the file system."""
    root = Path(folder)
    known = bundle_names(root)
    if not isinstance(name, str) or name not in known:
        raise ModelNotFoundError(f"model {shown_name(name)} not found in {root}; known models: "
                                 f"{', '.join(known) or 'none'}")
    path = root / name
    try:
        spec = BundleSpec.from_dict(json.loads((path / BUNDLE_FILE).read_text()))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"model {name!r}: {path / BUNDLE_FILE} is invalid: {exc}") from exc
    model = _model_class(spec.model_class)(**spec.model_kwargs)
    try:
        state = torch.load(path / WEIGHTS_FILE, map_location=map_location, weights_only=True)
        model.load_state_dict(state)
    except (OSError, RuntimeError) as exc:
        raise BundleError(f"model {name!r}: cannot load {path / WEIGHTS_FILE}: {exc}") from exc
    model.eval()
    return Bundle(spec=spec, model=model)
