"""Writing a training dataset to Parquet chunk by chunk, so the result never has to fit in memory.

``build_training_dataset(..., out=PATH)`` hands each joined spine chunk to a ``ParquetSink`` and keeps none.
``PATH`` ending in ``.parquet`` is one file (a row group or more per chunk); any other path is a folder of
``part-00000.parquet``, ``part-00001.parquet``, ... (one file per chunk, in spine order), which
``quasar.training_adapters.make_loader`` and ``pyarrow.dataset`` read as one dataset. Every file carries the
dataset's ``quasar.sources`` and ``quasar.features`` metadata.

Nothing half-written is ever at ``PATH``: the files go to a hidden sibling first and are moved into place once
the last chunk is written; a failure removes them and leaves whatever was at ``PATH`` before.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from quasar.signals.errors import DatasetError, StoreError

PART = "part-{:05d}.parquet"


class ParquetSink:
    """Where the chunks of one dataset go; ``close()`` publishes them, ``abort()`` throws them away."""

    def __init__(self, out: str | Path, metadata: dict[bytes, bytes]) -> None:
        self.path = Path(out).expanduser().absolute()
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
        return self.path

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
