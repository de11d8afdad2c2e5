"""The columns a source reads and their types: declared on the source, or inferred from its files and recorded.

A source column has a *logical* type: what its values are, whatever encoding a writer chose. ``string`` is
Arrow's string, large_string, string_view or a dictionary of strings; ``timestamp`` is a timestamp of any unit
and time zone (the reader turns it into UTC microseconds); ``list<int64>`` is a list or large list of int64;
every other type is exact (``int32`` is not ``int64``, ``float32`` is not ``float64``: a type change in a file
is drift, refused rather than cast). The names::

    bool  int8 int16 int32 int64  uint8 uint16 uint32 uint64  float16 float32 float64
    string  binary  date  time  timestamp  duration  decimal(p,s)  list<T>  struct<a: T, ...>  map<K, V>

A declared type may also be an Arrow alias (``"double"``, ``"large_string"``, ``"timestamp[ms]"``) or a
``pyarrow.DataType``; both are stored as the logical name, so a schema round-trips through JSON.

This module is the one rule for "does this file's column match": the offline reader (``quasar.store.sources``)
checks every file with ``logical_type`` and ``describe`` here, and the registry stores a ``SourceSchema``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from quasar.signals.errors import DefinitionError

_EXACT = {
    "bool": pa.bool_(), "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
    "uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(), "uint64": pa.uint64(),
    "float16": pa.float16(), "float32": pa.float32(), "float64": pa.float64(),
}
#: The Arrow type a logical scalar name stands for when one is needed (e.g. a hive partition key's type).
ARROW_OF = {**_EXACT, "string": pa.string(), "binary": pa.binary(), "date": pa.date32(),
            "timestamp": pa.timestamp("us", tz="UTC")}
_LIST = re.compile(r"^list<(.+)>$")
_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")


def logical_type(arrow_type: pa.DataType) -> str:
    """The logical name of an Arrow type (see the module doc): encodings of one kind of value share a name."""
    t = arrow_type
    if pa.types.is_dictionary(t):
        return logical_type(t.value_type)
    for name, exact in _EXACT.items():
        if t == exact:
            return name
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)
            or pa.types.is_fixed_size_binary(t)):
        return "binary"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_time(t):
        return "time"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_duration(t):
        return "duration"
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) \
            or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return f"list<{logical_type(t.value_type)}>"
    if pa.types.is_map(t):
        return f"map<{logical_type(t.key_type)}, {logical_type(t.item_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ", ".join(f"{t.field(i).name}: {logical_type(t.field(i).type)}"
                                     for i in range(t.num_fields)) + ">"
    return str(t)


def parse_type(value: Any, what: str) -> str:
    """A declared column type (a logical name, an Arrow alias or a ``pyarrow.DataType``) as its logical name."""
    if isinstance(value, pa.DataType):
        return logical_type(value)
    if not isinstance(value, str) or not value.strip():
        raise DefinitionError(f"{what}: a column type must be a type name such as 'int64', 'string' or "
                              f"'timestamp', or a pyarrow type; got {value!r}")
    text = value.strip()
    if text in ARROW_OF or text in ("time", "duration"):
        return text
    if (m := _LIST.match(text)) is not None:
        return f"list<{parse_type(m.group(1), what)}>"
    if (d := _DECIMAL.match(text)) is not None:
        return f"decimal({int(d.group(1))},{int(d.group(2))})"
    if text.startswith("timestamp"):
        return "timestamp"
    try:
        return logical_type(pa.type_for_alias(text))
    except (ValueError, KeyError):
        raise DefinitionError(f"{what}: unknown column type {value!r}; use one of {', '.join(ARROW_OF)}, "
                              "list<T>, decimal(p,s), or a pyarrow type") from None


@dataclass(frozen=True)
class SourceSchema:
    """Column names and logical types, in order. Build one with ``SourceSchema.of({"user_id": "int64", ...})``."""

    columns: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, value: SourceSchema | Mapping[str, Any] | pa.Schema, what: str = "source schema") -> SourceSchema:
        """A schema from a mapping of column to type, a ``pyarrow.Schema`` or a SourceSchema."""
        if isinstance(value, SourceSchema):
            return value
        if isinstance(value, pa.Schema):
            return cls(tuple((f.name, logical_type(f.type)) for f in value))
        if not isinstance(value, Mapping) or not value:
            raise DefinitionError(f"{what}: schema must map column names to types, e.g. "
                                  f"{{'user_id': 'int64', 'ts': 'timestamp'}}; got {value!r}")
        cols = []
        for name, typ in value.items():
            if not isinstance(name, str) or not name:
                raise DefinitionError(f"{what}: column names must be non-empty strings, got {name!r}")
            cols.append((name, parse_type(typ, f"{what} column {name!r}")))
        return cls(tuple(cols))

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.columns]

    def get(self, name: str) -> str | None:
        return dict(self.columns).get(name)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    def with_column(self, name: str, typ: str) -> SourceSchema:
        return self if self.get(name) is not None else SourceSchema((*self.columns, (name, typ)))

    def to_dict(self) -> dict[str, str]:
        return dict(self.columns)

    def describe(self) -> str:
        return ", ".join(f"{n}: {t}" for n, t in self.columns)


@dataclass(frozen=True, kw_only=True)
class RecordedSchema:
    """A source schema the registry recorded when quasar first read the source (it declared none): later
    files must match it. ``origin`` names what it was inferred from; ``identity`` is the source identity it
    belongs to (``source_identity_key``), so redefining the source starts afresh."""

    source: str
    schema: SourceSchema
    origin: str
    identity: str
    recorded_at: datetime
