"""Where training rows come from: Parquet files, an Iceberg table, or an in-memory Arrow table.

A source is a list of *pieces* (a row range of one Parquet row group, or of the in-memory table), so
rows can be dealt out to workers and ranks exactly once, and shuffled by piece before a row buffer.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from quasar.signals.errors import SchemaError, StoreError
from quasar.store.dataset import FEATURES_KEY
from quasar.store.dataset_out import arrow_schema, restore_types


@dataclass(frozen=True)
class Piece:
    """``length`` rows from ``offset`` of part ``part`` (a row group, or a slice of a table)."""

    part: int
    offset: int
    length: int


class RowSource(ABC):
    """A finite, re-readable collection of rows, cut into pieces."""

    @property
    @abstractmethod
    def schema(self) -> pa.Schema: ...

    @abstractmethod
    def pieces(self) -> list[Piece]: ...

    @abstractmethod
    def read(self, piece: Piece, columns: Sequence[str]) -> pa.Table: ...

    def dataset_features(self) -> list[str] | None:
        """The feature columns the rows say they hold: the ``quasar.features`` metadata that ``quasar dataset``
        and ``Platform.dataset`` write (``quasar.store.dataset``), in column order; None without it."""
        raw = (self.schema.metadata or {}).get(FEATURES_KEY.encode())
        if raw is None:
            return None
        listed = set(json.loads(raw))
        return [name for name in self.schema.names if name in listed]

    @property
    def num_rows(self) -> int:
        return sum(p.length for p in self.pieces())


class TableSource(RowSource):
    """An in-memory Arrow table, cut into pieces of ``piece_rows`` rows."""

    def __init__(self, table: pa.Table, piece_rows: int = 65_536) -> None:
        self.table = table
        self.piece_rows = max(1, piece_rows)

    @property
    def schema(self) -> pa.Schema:
        return self.table.schema

    def pieces(self) -> list[Piece]:
        n = self.table.num_rows
        return [Piece(0, off, min(self.piece_rows, n - off)) for off in range(0, n, self.piece_rows)]

    def read(self, piece: Piece, columns: Sequence[str]) -> pa.Table:
        return self.table.select(list(columns)).slice(piece.offset, piece.length)


class ParquetSource(RowSource):
    """Parquet files (a file, a folder of ``*.parquet`` files, or a list of paths), read by row group."""

    def __init__(self, paths: str | Path | Sequence[str | Path], *, metadata: dict[bytes, bytes] | None = None,
                 types: pa.Schema | None = None) -> None:
        if isinstance(paths, (str, Path)):
            p = Path(paths)
            files = sorted(p.rglob("*.parquet")) if p.is_dir() else [p]
        else:
            files = [Path(x) for x in paths]
        if not files:
            raise StoreError(f"no Parquet files found at {paths}")
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise StoreError(f"Parquet file(s) not found: {', '.join(missing[:3])}")
        self.files = [str(f) for f in files]
        self._parts: list[tuple[int, int, int]] = []    # (file index, row group, rows)
        schema = None
        for i, f in enumerate(self.files):
            meta = pq.ParquetFile(f).metadata
            schema = schema or pq.read_schema(f)
            self._parts += [(i, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
        assert schema is not None
        self.types = types                               # the rows' own types, when the files store others
        if types is not None:
            schema = restore_types(schema.empty_table(), types).schema
        self._schema = schema.with_metadata({**(schema.metadata or {}), **metadata}) if metadata else schema
        self._open: dict[int, pq.ParquetFile] = {}

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    def pieces(self) -> list[Piece]:
        return [Piece(k, 0, rows) for k, (_, _, rows) in enumerate(self._parts) if rows]

    def read(self, piece: Piece, columns: Sequence[str]) -> pa.Table:
        file_index, group, _ = self._parts[piece.part]
        handle = self._open.get(file_index)
        if handle is None:
            handle = self._open[file_index] = pq.ParquetFile(self.files[file_index])
        table = handle.read_row_group(group, columns=list(columns))
        return restore_types(table.slice(piece.offset, piece.length), self.types)

    def __getstate__(self) -> dict[str, object]:     # DataLoader workers pickle the source: drop open handles
        state = dict(self.__dict__)
        state["_open"] = {}
        return state


def iceberg_source(table: object) -> ParquetSource:
    """The Parquet data files of a pyiceberg table's current snapshot (quasar writes copy-on-write, so the
    files hold exactly the table's rows), in plan order, in the dataset's own types when the table records them
    (``training_dataset(..., out="iceberg:...")``'s tables: ``quasar.store.dataset_out.arrow_schema``)."""
    scan = table.scan()  # type: ignore[attr-defined]
    tasks = list(scan.plan_files())
    if any(t.delete_files for t in tasks):
        raise StoreError("the Iceberg table has delete files; read it with Platform.training_dataset instead")
    properties = getattr(table, "properties", None) or {}
    metadata = {FEATURES_KEY.encode(): properties[FEATURES_KEY].encode()} if FEATURES_KEY in properties else None
    if not tasks:
        raise StoreError("the Iceberg table holds no rows")
    return ParquetSource([t.file.file_path.removeprefix("file://") for t in tasks], metadata=metadata,
                         types=arrow_schema(properties))


def check_columns(schema: pa.Schema, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise SchemaError(f"column(s) {', '.join(missing)} not in the dataset; it has {', '.join(schema.names)}")
