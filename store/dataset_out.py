"""Writing a training dataset to Parquet chunk by chunk, so the result never has to fit in memory.

``build_training_dataset(..., out=PATH)`` hands each joined spine chunk to a ``ParquetSink`` and keeps none.
``PATH`` ending in ``.parquet`` is one file (a row group or more per chunk); any other path is a folder of
``part-00000.parquet``, ``part-00001.parquet``, ... (one file per chunk, in spine order), which
``quasar.training_adapters.make_loader`` and ``pyarrow.dataset`` read as one dataset. Every file carries the
dataset's ``quasar.sources`` and ``quasar.features`` metadata.

Nothing half-written is ever at ``PATH``: the files go to a hidden sibling first and are moved into place once
the last chunk is written; a failure removes them and leaves whatever was at ``PATH`` before.

``out="iceberg:NAMESPACE.TABLE"`` (or an ``IcebergOut``) names an Iceberg table of the platform's catalog
instead (``parse_out`` is the one rule that reads an ``out`` value); ``DatasetResult.write_iceberg`` writes an
in-memory dataset through the same sink, so both make the same table. ``IcebergSink`` writes each chunk's rows
with the offline store's writer (``quasar.store.writer.write_rows``: Parquet with Iceberg field ids, the table's
writer settings), on Spark from the executors, and the driver commits every file in one pyiceberg transaction:

* the table is partitioned by ``day(event_timestamp)``; each file holds one day's rows in dataset order, the
  files in write order, so a spine in time order reads back in spine order (otherwise each chunk's rows come a
  day at a time);
* the dataset's exact Arrow schema is kept in the ``quasar.arrow-schema`` property (``arrow_schema``) with the
  ``quasar.sources``/``quasar.features`` properties, and ``make_loader`` restores those types when it reads the
  table (Iceberg stores a ``Vector`` as ``list<float>``, no unsigned ints, and timestamps in microseconds: a
  nanosecond spine column loses its sub-microsecond part, the one value that does not come back as it was);
* a new table is created by the commit itself (``create_table_transaction``): a failure leaves **no table**;
* an existing table that is an earlier dataset output (it has the ``quasar.features`` property) is replaced,
  as a folder output is, in one transaction that drops its rows, sets the new schema, partitioning and
  properties and adds the new files: a failure leaves **the previous table**, as it was (its old rows stay in
  the table's history until its snapshots are expired). Any other table is refused. A failure deletes the data
  files this write made.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from quasar.signals.errors import DatasetError, StoreError

PART = "part-{:05d}.parquet"
ICEBERG = "iceberg:"                        # out="iceberg:namespace.table"
ARROW_SCHEMA_KEY = "quasar.arrow-schema"    # the dataset's Arrow schema (base64 IPC), a table property
FEATURES_PROPERTY = "quasar.features"       # quasar.store.dataset.FEATURES_KEY: marks a dataset's table
_NAME_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class IcebergOut:
    """A dataset output that is the Iceberg table ``name`` ("namespace.table") of ``catalog``."""

    name: str
    catalog: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        parts = self.name.split(".")
        if len(parts) < 2 or not all(_NAME_PART.fullmatch(p) for p in parts):
            raise DatasetError(f"dataset output {ICEBERG}{self.name}: name an Iceberg table as "
                               f"'{ICEBERG}namespace.table' (letters, digits and _, not starting with a digit)")

    @property
    def namespace(self) -> str:
        return self.name.rpartition(".")[0]

    def __str__(self) -> str:
        return f"{ICEBERG}{self.name}"


def parse_out(out: str | Path | IcebergOut | None, catalog: Any = None) -> Path | IcebergOut | None:
    """What an ``out=`` value names: a Parquet path, or (a string ``iceberg:namespace.table``, or an
    ``IcebergOut``) an Iceberg table of ``catalog`` (the out's own catalog wins). The one rule for ``out``."""
    if out is None:
        return None
    if isinstance(out, str) and out.startswith(ICEBERG):
        out = IcebergOut(out[len(ICEBERG):])
    if isinstance(out, IcebergOut):
        if out.catalog is None:
            if catalog is None:
                raise DatasetError(f"dataset output {out} names an Iceberg table but no catalog was given: use "
                                   "Platform.training_dataset (its offline catalog) or IcebergOut(name, catalog)")
            out = IcebergOut(out.name, catalog)
        return out
    if isinstance(out, str | os.PathLike):
        return Path(out)
    raise DatasetError(f"dataset output {out!r}: give a path, '{ICEBERG}namespace.table' or an IcebergOut")


def open_sink(out: Path | IcebergOut, metadata: dict[bytes, bytes]) -> ParquetSink | IcebergSink:
    """The sink of a parsed ``out`` (``parse_out``)."""
    return IcebergSink(out, metadata) if isinstance(out, IcebergOut) else ParquetSink(out, metadata)


def arrow_schema(properties: dict[str, str] | None) -> pa.Schema | None:
    """The dataset's Arrow schema recorded in an Iceberg dataset table's ``properties``; None without it."""
    raw = (properties or {}).get(ARROW_SCHEMA_KEY)
    if raw is None:
        return None
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(raw)))


def restore_types(rows: pa.Table, schema: pa.Schema | None) -> pa.Table:
    """Rows read from an Iceberg dataset table in the dataset's own types (``schema``, from ``arrow_schema``)."""
    if schema is None:
        return rows
    fields = [schema.field(name) if name in schema.names else rows.schema.field(name) for name in rows.column_names]
    target = pa.schema(fields, metadata=rows.schema.metadata)
    if rows.schema.equals(target):
        return rows
    try:
        return rows.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise StoreError(f"the dataset table's rows do not restore to the dataset's types: {exc}") from exc


class ParquetSink:
    """Where the chunks of one dataset go; ``close()`` publishes them, ``abort()`` throws them away."""

    def __init__(self, out: str | Path, metadata: dict[bytes, bytes]) -> None:
        self.path = Path(out).expanduser().absolute()
        self.published: Any = None
        self.single_file = self.path.suffix == ".parquet"
        self.metadata = metadata
        self.rows = 0
        self.parts = 0
        self.schema: pa.Schema | None = None
        self._check_target()
        self._staging = self.path.parent / f".{self.path.name}.tmp-{uuid.uuid4().hex[:12]}"
        self._writer: pq.ParquetWriter | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.single_file:
                self._staging.mkdir()
        except OSError as exc:
            raise StoreError(f"cannot write the dataset to {self.path}: {exc}") from exc

    @property
    def staging(self) -> Path:
        """Where the files go until ``close()`` (a hidden sibling of the path): Spark executors write parts here."""
        return self._staging

    def _check_target(self) -> None:
        """Refuse to replace anything that is not an earlier dataset output of the same kind."""
        if not self.path.exists():
            return
        if self.single_file and self.path.is_dir():
            raise DatasetError(f"dataset output {self.path} is a folder; a path ending in .parquet names one file")
        if not self.single_file:
            if not self.path.is_dir():
                raise DatasetError(f"dataset output {self.path} is a file; give a folder (or a path ending in "
                                   ".parquet for one file)")
            foreign = [p.name for p in self.path.iterdir() if not (p.name.startswith("part-")
                                                                   and p.name.endswith(".parquet"))]
            if foreign:
                raise DatasetError(f"dataset output folder {self.path} holds files that are not a dataset's parts "
                                   f"({', '.join(sorted(foreign)[:3])}): give an empty or new folder")

    def write(self, chunk: pa.Table) -> None:
        """Write one finished chunk (its rows follow the previous chunk's)."""
        if self.schema is None:
            metadata = {k: v for k, v in (chunk.schema.metadata or {}).items() if k != b"pandas"}
            self.schema = chunk.schema.with_metadata({**metadata, **self.metadata})
        elif chunk.num_rows == 0 and self.rows:
            return
        try:
            if not chunk.schema.equals(self.schema):
                chunk = chunk.cast(self.schema)
            chunk = chunk.replace_schema_metadata(self.schema.metadata)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
            raise StoreError(f"dataset chunk {self.parts} does not have the first chunk's schema: {exc}") from exc
        try:
            if self.single_file:
                if self._writer is None:
                    self._writer = pq.ParquetWriter(self._staging, self.schema)
                self._writer.write_table(chunk)
            else:
                pq.write_table(chunk, self._staging / PART.format(self.parts))
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"cannot write the dataset to {self.path}: {exc}") from exc
        self.parts += 1
        self.rows += chunk.num_rows

    def close(self) -> Path:
        """Move the written files into place (replacing an earlier output there) and return the path."""
        try:
            if self.single_file:
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None
                os.replace(self._staging, self.path)
            else:
                old = None
                if self.path.exists():
                    old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:12]}"
                    os.replace(self.path, old)
                os.replace(self._staging, self.path)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            self.abort()
            raise StoreError(f"cannot move the dataset into {self.path}: {exc}") from exc
        self.published = self.path
        return self.path

    def where(self) -> dict[str, Any]:
        """The ``DatasetResult`` fields that say where the rows went (after ``close``)."""
        return {"path": self.published}

    def abort(self) -> None:
        """Remove what was written; whatever was at the path before stays."""
        if self._writer is not None:
            with contextlib.suppress(OSError, pa.ArrowException):
                self._writer.close()
            self._writer = None
        if self._staging.is_dir():
            shutil.rmtree(self._staging, ignore_errors=True)
        elif self._staging.exists():
            self._staging.unlink(missing_ok=True)


class IcebergSink:
    """The chunks of one dataset as the data files of one Iceberg table, committed at once by ``close()``.

    ``start(schema)`` opens the transaction (a new table's, or the replacement of an earlier dataset table);
    ``write(chunk)`` writes a chunk's files here, or executors write theirs with ``writer_args()`` and the driver
    hands the ``DataFile`` entries to ``add``; ``close()`` commits, ``abort()`` deletes this write's files.
    """

    def __init__(self, out: IcebergOut, metadata: dict[bytes, bytes], target_bytes: int | None = None) -> None:
        from pyiceberg.exceptions import NoSuchTableError

        from quasar.store.arrow_types import fix_pyiceberg_list_nulls
        from quasar.store.layout import DEFAULT_TARGET_FILE_BYTES

        fix_pyiceberg_list_nulls()
        if out.catalog is None:
            raise DatasetError(f"dataset output {out}: no catalog")
        self.out, self.catalog = out, out.catalog
        self.properties = {k.decode(): v.decode() for k, v in metadata.items()}
        self.target_bytes = target_bytes or DEFAULT_TARGET_FILE_BYTES
        self.write_uuid = uuid.uuid4()
        self.rows = 0
        self.schema: pa.Schema | None = None
        self.files: list[Any] = []
        self.published: Any = None
        self._tx: Any = None
        self._counter = itertools.count(_first_task())
        try:
            self.existing = self.catalog.load_table(out.name)
        except NoSuchTableError:
            self.existing = None
        except Exception as exc:
            raise StoreError(f"dataset output {out}: cannot read the catalog: {exc}") from exc
        if self.existing is not None and FEATURES_PROPERTY not in self.existing.properties:
            raise DatasetError(f"dataset output {out} is an Iceberg table that is not a dataset's (it has no "
                               f"{FEATURES_PROPERTY} property): name a new table or an earlier dataset output")

    @property
    def path(self) -> str:
        return str(self.out)

    def start(self, schema: pa.Schema) -> None:
        """Open the transaction for a dataset of ``schema`` (its Arrow types, as the in-memory dataset has them)."""
        from quasar.store.dataset import iceberg_ready

        if self._tx is not None:
            return
        own = {k: v for k, v in (schema.metadata or {}).items() if k != b"pandas"}
        self.schema = schema.with_metadata({**own, **{k.encode(): v.encode() for k, v in self.properties.items()}})
        stored = iceberg_ready(schema.remove_metadata().empty_table()).schema
        properties = {**self.properties,
                      ARROW_SCHEMA_KEY: base64.b64encode(schema.remove_metadata().serialize().to_pybytes()).decode()}
        try:
            if self.existing is None:
                self.catalog.create_namespace_if_not_exists(self.out.namespace)
                fresh = _iceberg_schema(stored, itertools.count(1))
                self._tx = self.catalog.create_table_transaction(self.out.name, schema=fresh,
                                                                 partition_spec=_day_spec(fresh, 0, 1000),
                                                                 properties=properties)
            else:
                self._tx = self._replacing(self.existing, stored, properties)
        except DatasetError:
            raise
        except Exception as exc:
            raise StoreError(f"dataset output {self.out}: cannot start its transaction: {exc}") from exc

    @staticmethod
    def _replacing(table: Any, stored: pa.Schema, properties: dict[str, str]) -> Any:
        """A transaction on an earlier dataset table that drops its rows and sets the new schema, spec, properties."""
        from pyiceberg.expressions import AlwaysTrue
        from pyiceberg.table.update import (
            AddPartitionSpecUpdate,
            AddSchemaUpdate,
            SetCurrentSchemaUpdate,
            SetDefaultSpecUpdate,
            SetPropertiesUpdate,
        )

        tx = table.transaction()
        if table.metadata.current_snapshot_id is not None:
            tx.delete(AlwaysTrue())
        meta = tx.table_metadata
        schema = _iceberg_schema(stored, itertools.count(meta.last_column_id + 1),
                                 schema_id=max(s.schema_id for s in meta.schemas) + 1)
        spec = _day_spec(schema, max(meta.specs()) + 1, max(meta.last_partition_id or 999, 999) + 1)
        # a replace, as Iceberg's own: the new schema (new field ids) and spec become current (-1: the last added);
        # pyiceberg's CreateTableTransaction builds its updates the same way (pydantic fields named by alias)
        updates = (AddSchemaUpdate(schema_=schema),  # type: ignore[call-arg]
                   SetCurrentSchemaUpdate(schema_id=-1),  # type: ignore[call-arg]
                   AddPartitionSpecUpdate(spec=spec),
                   SetDefaultSpecUpdate(spec_id=-1),  # type: ignore[call-arg]
                   SetPropertiesUpdate(updates=properties))
        tx._apply(updates, ())
        return tx

    def writer_args(self) -> tuple[Any, Any, uuid.UUID, int]:
        """What a writer of this table's files needs (picklable, for executors): metadata, io, write id, target."""
        assert self._tx is not None, "start() first"
        return self._tx.table_metadata, self._tx._table.io, self.write_uuid, self.target_bytes

    def write(self, chunk: pa.Table) -> None:
        """Write one finished chunk's rows as data files of the table (committed by ``close``)."""
        if self._tx is None:
            self.start(chunk.schema)
        assert self.schema is not None
        metadata, io, write_uuid, target = self.writer_args()
        self.add(write_chunk(chunk, self.schema, metadata, io, write_uuid, target, self._counter),
                 chunk.num_rows)

    def add(self, files: Iterable[Any], rows: int | None = None) -> None:
        """Data files (pyiceberg ``DataFile``) written for this table, in dataset order."""
        added = list(files)
        self.files.extend(added)
        self.rows += sum(int(f.record_count) for f in added) if rows is None else rows

    def close(self) -> Any:
        """Commit the files in the one transaction; the committed pyiceberg table."""
        assert self._tx is not None, "start() or write() first"
        try:
            if self.files:
                from quasar.store.commits import WRITE_ID

                with self._tx.update_snapshot(snapshot_properties={WRITE_ID: str(self.write_uuid)}) \
                        .fast_append() as append:
                    for data_file in self.files:
                        append.append_data_file(data_file)
            self._tx.commit_transaction()
            self.published = self.catalog.load_table(self.out.name)
        except Exception as exc:
            self.abort()
            raise StoreError(f"committing the dataset to the Iceberg table {self.out.name!r} failed "
                             f"(nothing was changed): {exc}") from exc
        return self.published

    def abort(self) -> None:
        """Delete the data files this write made (committed nothing: no table, or the previous one, stays)."""
        if self._tx is None:
            return
        from quasar.store.gc import delete_files, list_files

        location = str(self._tx.table_metadata.location).rstrip("/")
        with contextlib.suppress(Exception):               # best effort: quasar gc collects what is left
            mine = [uri for uri, _ in list_files(f"{location}/data")
                    if str(self.write_uuid) in uri.rsplit("/", 1)[-1]]
            delete_files(location, mine)
        self._tx = None

    def where(self) -> dict[str, Any]:
        """The ``DatasetResult`` fields that say where the rows went (after ``close``)."""
        return {"iceberg": self.published}


def write_chunk(chunk: pa.Table, schema: pa.Schema, metadata: Any, io: Any, write_uuid: uuid.UUID,
                target_bytes: int, counter: Iterable[int]) -> list[Any]:
    """One chunk of a dataset (``schema``'s types) as data files of the table ``metadata`` describes (the offline
    store's writer); their ``DataFile`` entries. Runs on the driver or in an executor."""
    from quasar.store.arrow_types import fix_pyiceberg_list_nulls
    from quasar.store.dataset import iceberg_ready
    from quasar.store.writer import write_rows

    fix_pyiceberg_list_nulls()
    try:
        if not chunk.schema.remove_metadata().equals(schema.remove_metadata()):
            chunk = chunk.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise StoreError(f"dataset chunk does not have the dataset's schema: {exc}") from exc
    rows = iceberg_ready(chunk.replace_schema_metadata(None))
    try:
        return write_rows(metadata, io, rows, write_uuid, target_bytes, iter(counter))
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"cannot write the dataset's files to {metadata.location}: {exc}") from exc


def _first_task() -> int:
    from quasar.store.writer import FIRST_TASK

    return FIRST_TASK


def _iceberg_schema(stored: pa.Schema, ids: Iterable[int], schema_id: int = 0) -> Any:
    """The Iceberg schema of Arrow ``stored`` (Iceberg-ready types), its field ids drawn from ``ids``."""
    from pyiceberg.catalog import Catalog
    from pyiceberg.schema import Schema, assign_fresh_schema_ids

    numbers = iter(ids)
    converted = assign_fresh_schema_ids(Catalog._convert_schema_if_needed(stored), lambda: next(numbers))
    return Schema(*converted.fields, schema_id=schema_id)


def _day_spec(schema: Any, spec_id: int, field_id: int) -> Any:
    """``day(event_timestamp)``: a dataset table's partitioning."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import DayTransform

    from quasar.signals.ufr.schema import EVENT_TIMESTAMP

    source = schema.find_field(EVENT_TIMESTAMP).field_id
    return PartitionSpec(PartitionField(source_id=source, field_id=field_id, transform=DayTransform(),
                                        name=f"{EVENT_TIMESTAMP}_day"), spec_id=spec_id)
