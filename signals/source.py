"""Sources: where a signal's input rows come from (Parquet files, an Iceberg table, another signal)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from signals.errors import DefinitionError
from signals.ufr.schema import check_name

SourceKind = Literal["parquet", "iceberg", "signal"]


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

    @classmethod
    def parquet(cls, *, name: str, path: str, timestamp: str, description: str = "") -> Source:
        return cls(name=name, kind="parquet", path=path, timestamp=timestamp, description=description)

    @classmethod
    def iceberg(cls, *, name: str, table: str, timestamp: str, description: str = "") -> Source:
        return cls(name=name, kind="iceberg", table=table, timestamp=timestamp, description=description)

    @classmethod
    def signal(cls, upstream: Any, *, name: str | None = None, description: str = "") -> Source:
        """The output rows of another signal (a ``Signal`` or its name); its timestamp is event_timestamp."""
        up = upstream if isinstance(upstream, str) else getattr(upstream, "name", None)
        if not isinstance(up, str):
            raise DefinitionError(f"Source.signal needs a signal or a signal name, got {upstream!r}")
        return cls(name=name or f"{up}_output", kind="signal", upstream=up, timestamp="event_timestamp",
                   description=description)

    def identity(self) -> dict[str, Any]:
        """The fields that say which rows this source reads (part of its signals' versions); the description
        is not."""
        return {"name": self.name, "kind": self.kind, "timestamp": self.timestamp, "path": self.path,
                "table": self.table, "upstream": self.upstream}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "timestamp": self.timestamp, "path": self.path,
                "table": self.table, "upstream": self.upstream, "description": self.description}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Source:
        return cls(**data)
