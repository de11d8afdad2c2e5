"""Entities: what features describe (a user, a pin), identified by a join key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from quasar.signals.errors import DefinitionError
from quasar.signals.ufr.schema import RESERVED_COLUMNS, check_name

JOIN_KEY_TYPES = {"int64": pa.int64(), "string": pa.string()}


@dataclass(frozen=True, kw_only=True)
class Entity:
    """``Entity(name="user", join_key="user_id")``; ``join_key_type`` is ``"int64"`` (default) or ``"string"``."""

    name: str
    join_key: str
    join_key_type: str = "int64"
    description: str = ""

    def __post_init__(self) -> None:
        check_name(self.name, "entity")
        check_name(self.join_key, f"entity {self.name!r} join key")
        if self.join_key in RESERVED_COLUMNS:
            raise DefinitionError(f"entity {self.name!r}: join key {self.join_key!r} is a reserved column")
        jt = self.join_key_type
        if isinstance(jt, str):
            jt = jt.lower()
            object.__setattr__(self, "join_key_type", jt)
        if jt not in JOIN_KEY_TYPES:
            raise DefinitionError(f"entity {self.name!r}: join_key_type must be 'int64' or 'string', "
                                  f"got {self.join_key_type!r}")

    @property
    def arrow_key_type(self) -> pa.DataType:
        return JOIN_KEY_TYPES[self.join_key_type]

    def identity(self) -> dict[str, Any]:
        """The fields that say which entity this is (part of its signals' versions); the description is not."""
        return {"name": self.name, "join_key": self.join_key, "join_key_type": self.join_key_type}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "join_key": self.join_key, "join_key_type": self.join_key_type,
                "description": self.description}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entity:
        return cls(**data)
