"""Iceberg ``DataFile`` entries for Parquet files written outside pyiceberg (by Spark executors).

Statistics come from each file's footer with pyiceberg's own helpers, so scans prune them exactly as they
prune files pyiceberg wrote; the partition is the ``(day, bucket)`` the writer put the file's rows in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from quasar.signals.errors import StoreError


@dataclass(frozen=True)
class WrittenFile:
    """One Parquet file holding the rows of one partition: ``day`` (days since the epoch) and key ``bucket``."""

    path: str
    day: int
    bucket: int


def data_files(table: Any, files: Sequence[WrittenFile]) -> list[Any]:
    """pyiceberg ``DataFile`` objects for ``files`` under ``table``'s current schema and partition spec."""
    import pyarrow.parquet as pq
    from pyiceberg.io.pyarrow import (
        compute_statistics_plan,
        data_file_statistics_from_parquet_metadata,
        parquet_path_to_id_mapping,
    )
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
    from pyiceberg.typedef import Record

    metadata = table.metadata
    schema = metadata.schema()
    spec = metadata.spec()
    if len(spec.fields) != 2:
        raise StoreError(f"table {table.name()} is not partitioned by (day, bucket): spec {spec}")
    plan = compute_statistics_plan(schema, metadata.properties)
    mapping = parquet_path_to_id_mapping(schema)
    built = []
    for written in files:
        input_file = table.io.new_input(written.path)
        try:
            with input_file.open() as stream:
                footer = pq.read_metadata(stream)
            unknown = [footer.schema.column(i).path for i in range(footer.num_columns)
                       if footer.schema.column(i).path not in mapping]
            if unknown:
                raise StoreError(f"columns {unknown} are not in the table's schema")
            stats = data_file_statistics_from_parquet_metadata(parquet_metadata=footer, stats_columns=plan,
                                                               parquet_column_mapping=mapping)
            size = len(input_file)
        except StoreError as exc:
            raise StoreError(f"written file {written.path}: {exc}") from exc
        except Exception as exc:
            raise StoreError(f"cannot read the footer of written file {written.path}: "
                             f"{type(exc).__name__}: {exc}") from exc
        built.append(DataFile.from_args(
            content=DataFileContent.DATA, file_path=written.path, file_format=FileFormat.PARQUET,
            partition=Record(written.day, written.bucket), file_size_in_bytes=size, sort_order_id=None,
            spec_id=metadata.default_spec_id, equality_ids=None, key_metadata=None, **stats.to_serialized_dict()))
    return built
