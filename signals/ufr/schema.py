"""A signal's feature schema: ordered (name, type) pairs, its Arrow schema and its fingerprint."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from quasar.signals.errors import DefinitionError
from quasar.signals.ufr.types import TIMESTAMP_ARROW, FeatureType, check_feature_type, feature_type_from_dict

EVENT_TIMESTAMP = "event_timestamp"
CREATED_TIMESTAMP = "created_timestamp"
RESERVED_COLUMNS = frozenset({EVENT_TIMESTAMP, CREATED_TIMESTAMP})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_name(name: object, what: str) -> str:
    """A valid identifier for signals, entities, sources and features (letters, digits, underscore)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise DefinitionError(f"{what} name {name!r} is invalid: use letters, digits and underscores, "
                              "not starting with a digit")
    if "__" in name:
        raise DefinitionError(f"{what} name {name!r} is invalid: '__' is reserved as a separator")
    return name


@dataclass(frozen=True)
class FeatureSchema:
    """The ordered features of one signal; the unit of the UFR fingerprint."""

    fields: tuple[tuple[str, FeatureType], ...]

    @classmethod
    def of(cls, features: Mapping[str, Any], where: str = "features") -> FeatureSchema:
        if not isinstance(features, Mapping) or not features:
            raise DefinitionError(f"{where}: give a non-empty dict of feature name -> type")
        fields = []
        for name, ftype in features.items():
            check_name(name, "feature")
            if name in RESERVED_COLUMNS:
                raise DefinitionError(f"{where}: feature name {name!r} is reserved")
            fields.append((name, check_feature_type(ftype, f"{where}[{name!r}]")))
        return cls(tuple(fields))

    def __iter__(self) -> Iterator[tuple[str, FeatureType]]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.fields]

    def type_of(self, name: str) -> FeatureType:
        for n, t in self.fields:
            if n == name:
                return t
        raise KeyError(name)

    def as_dict(self) -> dict[str, FeatureType]:
        return dict(self.fields)

    def arrow_schema(self) -> pa.Schema:
        """Arrow schema of the features alone (every feature nullable)."""
        return pa.schema([pa.field(n, t.arrow_type(), nullable=True) for n, t in self.fields])

    def table_schema(self, join_keys: Mapping[str, pa.DataType]) -> pa.Schema:
        """Arrow schema of a signal's rows: join keys, event_timestamp, created_timestamp, features."""
        keys = [pa.field(k, t, nullable=False) for k, t in join_keys.items()]
        stamps = [pa.field(EVENT_TIMESTAMP, TIMESTAMP_ARROW, nullable=False),
                  pa.field(CREATED_TIMESTAMP, TIMESTAMP_ARROW, nullable=True)]
        return pa.schema(keys + stamps + list(self.arrow_schema()))

    def to_dict(self) -> list[dict[str, Any]]:
        return [{"name": n, **t.to_dict()} for n, t in self.fields]

    @classmethod
    def from_dict(cls, data: list[dict[str, Any]]) -> FeatureSchema:
        return cls(tuple((d["name"], feature_type_from_dict({k: v for k, v in d.items() if k != "name"}))
                         for d in data))

    @property
    def fingerprint(self) -> bytes:
        """8 bytes identifying names, order and types; stamped into every online record."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()[:8]

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()
