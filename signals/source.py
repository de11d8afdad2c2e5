"""Sources: where a signal's input rows come from (Parquet files, an Iceberg table, another signal).

A Parquet or Iceberg source may declare the columns it reads and their types (``schema=``, see
``quasar.signals.source_schema``); without one, quasar infers the schema the first time it reads the source and the
registry records it, so a later file that lacks a column or changes a type is refused either way. A Parquet
folder's layout is part of the source too: only the files directly in it, unless it says ``recursive=True``
or ``partitioning="hive"``. Rows without an event time are refused unless ``null_timestamps="drop"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import pyarrow as pa

from quasar.signals.errors import DefinitionError
from quasar.signals.source_schema import SourceSchema
from quasar.signals.ufr.schema import check_name

SourceKind = Literal["parquet", "iceberg", "signal"]
Partitioning = Literal["hive"]
NullTimestamps = Literal["refuse", "drop"]
SchemaLike: TypeAlias = SourceSchema | Mapping[str, Any] | pa.Schema


@dataclass(frozen=True, kw_only=True)
class Source:
    """Input rows with a timestamp column. Build one with ``Source.parquet``, ``Source.iceberg`` or
    ``Source.signal``; a relative Parquet path is resolved against the project root."""

    name: str
    kind: SourceKind
    timestamp: str
    path: str | None = None          # parquet: a file or a folder of files
    table: str | None = None         # iceberg: "namespace.table"
    upstream: str | None = None      # signal: the upstream signal's name
    description: str = ""
    schema: SourceSchema | None = None               # the columns read and their types; None: inferred, recorded
    recursive: bool = False                          # parquet folder: read files in subfolders too
    partitioning: Partitioning | None = None         # parquet folder: "hive" (key=value subfolders are columns)
    null_timestamps: NullTimestamps = "refuse"       # rows with a null event time: refuse the read, or drop them

    def __post_init__(self) -> None:
        check_name(self.name, "source")
        if not isinstance(self.timestamp, str) or not self.timestamp:
            raise DefinitionError(f"source {self.name!r}: timestamp must name a column")
        wanted = {"parquet": "path", "iceberg": "table", "signal": "upstream"}
        if self.kind not in wanted:
            raise DefinitionError(f"source {self.name!r}: kind must be parquet, iceberg or signal, "
                                  f"got {self.kind!r}")
        if not getattr(self, wanted[self.kind]):
            raise DefinitionError(f"source {self.name!r}: a {self.kind} source needs {wanted[self.kind]}=")
        self._check_reading_options()

    def _check_reading_options(self) -> None:
        where = f"source {self.name!r}"
        if self.kind == "signal" and (self.schema is not None or self.null_timestamps != "refuse"):
            raise DefinitionError(f"{where}: a signal source reads another signal's table, whose schema is known; "
                                  "it takes no schema= or null_timestamps=")
        if self.kind != "parquet" and (self.recursive or self.partitioning is not None):
            raise DefinitionError(f"{where}: recursive= and partitioning= are for Parquet folders")
        if not isinstance(self.recursive, bool):
            raise DefinitionError(f"{where}: recursive must be True or False, got {self.recursive!r}")
        if self.partitioning not in (None, "hive"):
            raise DefinitionError(f"{where}: partitioning must be 'hive' or None, got {self.partitioning!r}")
        if self.null_timestamps not in ("refuse", "drop"):
            raise DefinitionError(f"{where}: null_timestamps must be 'refuse' or 'drop', got {self.null_timestamps!r}")
        if self.schema is None:
            return
        schema = SourceSchema.of(self.schema, where)
        declared_ts = schema.get(self.timestamp)
        if declared_ts not in (None, "timestamp"):
            raise DefinitionError(f"{where}: the timestamp column {self.timestamp!r} must be declared as "
                                  f"'timestamp', not {declared_ts!r}")
        object.__setattr__(self, "schema", schema.with_column(self.timestamp, "timestamp"))

    @classmethod
    def parquet(cls, *, name: str, path: str, timestamp: str, description: str = "", schema: SchemaLike | None = None,
                recursive: bool = False, partitioning: Partitioning | None = None,
                null_timestamps: NullTimestamps = "refuse") -> Source:
        """Parquet files: one file, or a folder of files directly in it (``recursive=True``: at any depth;
        ``partitioning="hive"``: in ``key=value`` folders, whose keys become columns). ``schema`` declares the
        columns read, e.g. ``{"user_id": "int64", "clicked": "int64", "ts": "timestamp"}``."""
        return cls(name=name, kind="parquet", path=path, timestamp=timestamp, description=description,
                   schema=None if schema is None else SourceSchema.of(schema, f"source {name!r}"),
                   recursive=recursive, partitioning=partitioning, null_timestamps=null_timestamps)

    @classmethod
    def iceberg(cls, *, name: str, table: str, timestamp: str, description: str = "", schema: SchemaLike | None = None,
                null_timestamps: NullTimestamps = "refuse") -> Source:
        return cls(name=name, kind="iceberg", table=table, timestamp=timestamp, description=description,
                   schema=None if schema is None else SourceSchema.of(schema, f"source {name!r}"),
                   null_timestamps=null_timestamps)

    @classmethod
    def signal(cls, upstream: Any, *, name: str | None = None, description: str = "") -> Source:
        """The output rows of another signal (a ``Signal`` or its name); its timestamp is event_timestamp."""
        up = upstream if isinstance(upstream, str) else getattr(upstream, "name", None)
        if not isinstance(up, str):
            raise DefinitionError(f"Source.signal needs a signal or a signal name, got {upstream!r}")
        return cls(name=name or f"{up}_output", kind="signal", upstream=up, timestamp="event_timestamp",
                   description=description)

    def _layout(self) -> dict[str, Any]:
        """What decides which rows are read beyond the location, only where not the default (so sources that
        predate these options keep their identity and their signals their versions)."""
        out: dict[str, Any] = {}
        if self.schema is not None:
            out["schema"] = self.schema.to_dict()
        if self.recursive:
            out["recursive"] = True
        if self.partitioning is not None:
            out["partitioning"] = self.partitioning
        return out

    def identity(self) -> dict[str, Any]:
        """The fields that say which rows this source reads (part of its signals' versions): a declared schema
        and the folder layout count; the description and ``null_timestamps`` (a policy for rows no window
        holds) do not."""
        return {"name": self.name, "kind": self.kind, "timestamp": self.timestamp, "path": self.path,
                "table": self.table, "upstream": self.upstream, **self._layout()}

    def to_dict(self) -> dict[str, Any]:
        policy = {"null_timestamps": self.null_timestamps} if self.null_timestamps != "refuse" else {}
        return {"name": self.name, "kind": self.kind, "timestamp": self.timestamp, "path": self.path,
                "table": self.table, "upstream": self.upstream, "description": self.description,
                **self._layout(), **policy}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Source:
        fields = dict(data)
        if fields.get("schema") is not None:
            fields["schema"] = SourceSchema.of(fields["schema"], f"source {fields.get('name')!r}")
        return cls(**fields)
