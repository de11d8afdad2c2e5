"""The online key layout (DESIGN.md, storage layout): one hash per entity, one field per signal version.

* hash key ``<project>:<entity>:<key>``: string keys verbatim, int64 keys in decimal;
* field ``<signal>@<version>``, holding the signal's UFR record for that entity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from quasar.signals.entity import Entity
from quasar.signals.errors import ConfigError, RequestError, SchemaError

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def check_project(project: str) -> str:
    """A project name usable as the key prefix (non-empty, no ``:``)."""
    if not isinstance(project, str) or not project or ":" in project:
        raise ConfigError(f"project name {project!r} cannot prefix online keys: give a non-empty name without ':'")
    return project


def field_name(signal: str, version: int) -> str:
    """The hash field of one signal version: ``<signal>@<version>``."""
    return f"{signal}@{int(version)}"


def key_prefix(project: str, entity: Entity) -> str:
    """What every hash key of ``entity`` starts with: ``<project>:<entity>:``."""
    return f"{project}:{entity.name}:"


def _check_key(value: Any, entity: Entity, index: int) -> str:
    if entity.join_key_type == "string":
        if isinstance(value, str):
            return value
        raise RequestError(f"{entity.join_key}[{index}]: key {value!r} must be a string "
                           f"({entity.name} keys are strings)")
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        number = int(value)
        if _INT64_MIN <= number <= _INT64_MAX:
            return str(number)
        raise RequestError(f"{entity.join_key}[{index}]: key {number} does not fit in an int64")
    raise RequestError(f"{entity.join_key}[{index}]: key {value!r} must be an int64 ({entity.name} keys are integers)")


def entity_keys(project: str, entity: Entity, keys: Sequence[Any]) -> list[str]:
    """Hash keys for join key values given by a caller; RequestError names a key of the wrong type."""
    prefix = key_prefix(project, entity)
    if entity.join_key_type == "string":
        if all(type(k) is str for k in keys):
            return [prefix + k for k in keys]
    elif all(type(k) is int for k in keys) and all(_INT64_MIN <= k <= _INT64_MAX for k in keys):
        return [prefix + str(k) for k in keys]
    return [prefix + _check_key(k, entity, i) for i, k in enumerate(keys)]


def column_keys(project: str, entity: Entity, column: pa.Array | pa.ChunkedArray) -> list[str]:
    """Hash keys for a join key column of rows to write (int64 or string, no nulls)."""
    if column.null_count:
        raise SchemaError(f"join key column {entity.join_key!r} has {column.null_count} null value(s)")
    target = entity.arrow_key_type
    if column.type != target:
        same_kind = (pa.types.is_integer(column.type) if entity.join_key_type == "int64"
                     else pa.types.is_string(column.type) or pa.types.is_large_string(column.type))
        if not same_kind:
            raise SchemaError(f"join key column {entity.join_key!r} has Arrow type {column.type}, but entity "
                              f"{entity.name!r} keys are {entity.join_key_type}")
        try:
            column = column.cast(target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise SchemaError(f"join key column {entity.join_key!r} has Arrow type {column.type}, but entity "
                              f"{entity.name!r} keys are {entity.join_key_type}") from exc
    prefix = key_prefix(project, entity)
    return [prefix + str(k) for k in column.to_pylist()]
