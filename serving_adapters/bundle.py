"""Model bundles: a trained torch model plus the exact UFR input spec it was trained on.

A bundle is a folder ``<models>/<name>/`` holding ``bundle.json`` and ``model.pt`` (the state dict).
``bundle.json`` records the model class (``module:Class``) and its constructor kwargs, and for every
input column the feature reference it was read from (``signal@version:feature``), the entity it
describes (``request`` entity or ``candidate`` entity; ``computed`` for a request-time signal's feature,
computed per candidate row), and its UFR type. A bundle saved from a feature service also records the
service's name and version (``"service": {"name": "ranker", "version": 3, "full_names": true}``, pinned at
save): the scorer reads exactly that service version's features. The scorer refuses a bundle whose
references no longer match the registry.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch

from quasar.signals.errors import BundleError, ModelImportError, ModelNotFoundError
from quasar.signals.ufr.tensors import InputSpec

BUNDLE_FILE = "bundle.json"
WEIGHTS_FILE = "model.pt"
Role = Literal["request", "candidate", "computed"]


@dataclass(frozen=True, kw_only=True)
class InputColumn:
    """One model input column: where it comes from and which side of the request it describes."""

    column: str          # name in the InputSpec (and in the training dataset)
    ref: str             # signal@version:feature
    role: Role           # "request" (e.g. the user), "candidate" (e.g. each pin), "computed" (request-time)

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "ref": self.ref, "role": self.role}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputColumn:
        return cls(column=d["column"], ref=d["ref"], role=d["role"])


@dataclass(frozen=True, kw_only=True)
class ServiceRef:
    """The feature service version a bundle reads (pinned at save), and how its columns were named."""

    name: str
    version: int
    full_names: bool = True

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "full_names": self.full_names}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServiceRef:
        return cls(name=str(d["name"]), version=int(d["version"]), full_names=bool(d.get("full_names", True)))


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
    service: ServiceRef | None = None     # the feature service the inputs are, when saved from one

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "model_class": self.model_class, "model_kwargs": self.model_kwargs,
               "spec": self.spec.to_dict(), "inputs": [c.to_dict() for c in self.inputs],
               "request_key": self.request_key, "candidate_key": self.candidate_key,
               "created_at": self.created_at, "metrics": self.metrics}
        if self.service is not None:
            out["service"] = self.service.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BundleSpec:
        service = d.get("service")
        return cls(name=d["name"], model_class=d["model_class"], model_kwargs=d["model_kwargs"],
                   spec=InputSpec.from_dict(d["spec"]), inputs=tuple(InputColumn.from_dict(c) for c in d["inputs"]),
                   request_key=d["request_key"], candidate_key=d["candidate_key"], created_at=d["created_at"],
                   metrics=d.get("metrics", {}),
                   service=None if service is None else ServiceRef.from_dict(service))


@dataclass
class Bundle:
    spec: BundleSpec
    model: torch.nn.Module


def model_class(path: str) -> type[torch.nn.Module]:
    """Import a bundle's model class, ``module:Class``. ModelImportError when it cannot be imported here,
    naming the class, why, and where the scorer looks (the project root and installed packages)."""
    module_name, _, cls_name = path.partition(":")
    importlib.invalidate_caches()               # a module added since the last try is found
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:                    # ImportError, or anything the module raised while importing
        raise ModelImportError(
            f"model class {path!r} cannot be imported: {type(exc).__name__}: {exc}. score-serve imports model "
            f"classes from the project root (the folder of quasar.toml) and installed packages: put "
            f"{module_name.replace('.', '/')}.py in the project root, or install the package that defines it"
        ) from exc
    cls = getattr(module, cls_name, None)
    if cls is None:
        where = getattr(module, "__file__", None) or module_name
        raise ModelImportError(f"model class {path!r} cannot be imported: module {module_name!r} ({where}) has no "
                               f"{cls_name!r}; define the class there (its name is recorded in the bundle)")
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise BundleError(f"model class {path!r} is not a torch.nn.Module")
    return cls


def write_bundle(folder: str | Path, spec: BundleSpec, state: Mapping[str, torch.Tensor]) -> Path:
    """Write ``<folder>/<spec.name>/`` with the spec and a state dict; return that path. Each file is written
    aside and renamed into place, the weights first, so a reader never sees half a file."""
    path = Path(folder) / spec.name
    path.mkdir(parents=True, exist_ok=True)
    for file, write in ((WEIGHTS_FILE, lambda f: torch.save(dict(state), f)),
                        (BUNDLE_FILE, lambda f: f.write(json.dumps(spec.to_dict(), indent=2).encode()))):
        partial = path / f".{file}.partial"
        with partial.open("wb") as out:
            write(out)
        os.replace(partial, path / file)
    return path


def save_bundle(folder: str | Path, spec: BundleSpec, model: torch.nn.Module) -> Path:
    """Write ``<folder>/<spec.name>/`` with the spec and the model's state dict; return that path (the low-level
    writer: ``quasar.serving.save_bundle`` makes the spec from feature references and checks it)."""
    return write_bundle(folder, spec, model.state_dict())


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
    try:
        cls = model_class(spec.model_class)
    except ModelImportError as exc:
        raise ModelImportError(f"model {name!r}: {exc}") from exc.__cause__
    try:
        model = cls(**spec.model_kwargs)
    except Exception as exc:                    # the user's constructor: any error is the bundle's
        raise BundleError(f"model {name!r}: {spec.model_class}(**{spec.model_kwargs}) fails: "
                          f"{type(exc).__name__}: {exc}") from exc
    try:
        state = torch.load(path / WEIGHTS_FILE, map_location=map_location, weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:                    # unreadable, not a state dict, or not this model's

        raise BundleError(f"model {name!r}: cannot load {path / WEIGHTS_FILE}: {exc}") from exc
    model.eval()
    return Bundle(spec=spec, model=model)
