"""Feature services: a named, registered set of feature references that a model is bound to.

A module defines ``FeatureService(name="ranker_v3", features=[...])``; registering it pins every signal the
service reads (its stored signals at their serving version, its request-time signals at their newest, and
the inputs of those request-time signals too) so a new signal version never silently changes a model's
inputs. Changing the references or the pins is a new service version; the owner, the description and the
logging sample rate are metadata. Datasets, loaders, the HTTP services and model bundles take a service
wherever they take a feature list, and read exactly ``refs()``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from quasar.signals.errors import DefinitionError
from quasar.signals.refs import FeatureRef, parse_feature_ref
from quasar.signals.ufr.schema import check_name

#: The suffix of a service's feature-log table, ``<namespace>.<service>__log``.
LOG_SUFFIX = "__log"


@dataclass(frozen=True, kw_only=True)
class FeatureLogging:
    """Log what a service serves: each served vector with probability ``sample_rate`` (0 < rate <= 1)."""

    sample_rate: float = 1.0

    def __post_init__(self) -> None:
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 < float(rate) <= 1.0:
            raise DefinitionError(f"logging sample_rate must be a number in (0, 1], got {rate!r}")
        object.__setattr__(self, "sample_rate", float(rate))

    def to_dict(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate}


@dataclass(frozen=True, kw_only=True, eq=False)
class FeatureService:
    """A named set of feature references (stored and request-time). ``pins`` (signal -> version) is filled
    at registration; a reference that names a version keeps it."""

    name: str
    features: tuple[str, ...]
    logging: FeatureLogging | None = None
    owner: str = ""
    description: str = ""
    pins: Mapping[str, int] = field(default_factory=dict)
    module: str = ""

    def __post_init__(self) -> None:
        check_name(self.name, "feature service")
        if self.name.endswith(LOG_SUFFIX):
            raise DefinitionError(f"feature service {self.name!r}: names ending in {LOG_SUFFIX!r} are kept for logs")
        features = self.features
        if isinstance(features, str) or not isinstance(features, Sequence) or not features:
            raise DefinitionError(f"feature service {self.name!r}: features must be a non-empty list of "
                                  "'signal' or 'signal:feature' references")
        object.__setattr__(self, "features", tuple(str(f) for f in features))
        for ref in self.features:
            parse_feature_ref(ref, DefinitionError)
        if self.logging is not None and not isinstance(self.logging, FeatureLogging):
            raise DefinitionError(f"feature service {self.name!r}: logging must be FeatureLogging(sample_rate=...)")
        object.__setattr__(self, "pins", {str(k): int(v) for k, v in dict(self.pins).items()})

    @property
    def kind(self) -> str:
        return "service"

    @property
    def parsed(self) -> list[FeatureRef]:
        return [parse_feature_ref(ref, DefinitionError) for ref in self.features]

    @property
    def signals(self) -> list[str]:
        """The signals the service's references name directly, in order."""
        return list(dict.fromkeys(r.signal for r in self.parsed))

    def refs(self) -> list[str]:
        """The references with every signal pinned: what datasets and services read for this service."""
        out = []
        for ref in self.parsed:
            version = ref.version if ref.version is not None else self.pins.get(ref.signal)
            out.append(str(FeatureRef(signal=ref.signal, version=version, feature=ref.feature)))
        return out

    def pinned(self, pins: Mapping[str, int]) -> FeatureService:
        return FeatureService(name=self.name, features=self.features, logging=self.logging, owner=self.owner,
                              description=self.description, pins=dict(sorted(pins.items())), module=self.module)

    @property
    def definition_fingerprint(self) -> str:
        """What makes a new version: the references and the pins."""
        text = json.dumps(["service", list(self.features), sorted(self.pins.items())], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "service", "features": list(self.features),
                "logging": self.logging.to_dict() if self.logging else None, "owner": self.owner,
                "description": self.description, "pins": dict(sorted(self.pins.items())), "module": self.module}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureService:
        log = data.get("logging")
        return cls(name=data["name"], features=tuple(data["features"]),
                   logging=FeatureLogging(**log) if log else None, owner=data.get("owner", ""),
                   description=data.get("description", ""), pins=data.get("pins", {}),
                   module=data.get("module", ""))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureService) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.name, self.definition_fingerprint))


def log_table_name(service: str) -> str:
    """The feature-log table's name within the offline namespace."""
    return f"{service}{LOG_SUFFIX}"
