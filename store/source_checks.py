"""What a source's files must be before any row is read: in the source's layout, with its columns and types,
and without rows that have no event time.

* Layout: a folder source reads the files directly in it; files in subfolders only with ``recursive=True``,
  or in ``key=value`` subfolders with ``partitioning="hive"``. Names starting with ``.`` or ``_`` are skipped
  (``_SUCCESS``, ``.crc``, staging folders), as pyarrow does.
* Columns: every file must hold every column of the source's schema with the same logical type
  (``quasar.signals.source_schema``): the declared schema, else the one the registry recorded at the first read,
  else the one the files agree on now (which the first read then records). Extra columns are not read.
* Event times: a row with a null event time belongs to no window; it is refused (with its file and count)
  unless the source says ``null_timestamps="drop"``, and then counted in the run.

Every refusal is one line that names the source, the file (or table), the column and both types, and what
to do about it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from quasar.signals.errors import StoreError
from quasar.signals.source import Source
from quasar.signals.source_schema import RecordedSchema, SourceSchema, logical_type

_HIDDEN = (".", "_")


@dataclass(frozen=True)
class Layout:
    """The files of a Parquet source, sorted, and the hive partition keys their folders give (in order)."""

    files: tuple[Path, ...]
    partition_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reference:
    """What a source's files are checked against: its declared schema, or the one recorded at its first read
    (``recorded``); without either, the files must agree with each other."""

    schema: SourceSchema
    recorded: RecordedSchema | None = None

    @classmethod
    def declared(cls, source: Source) -> Reference | None:
        return cls(source.schema) if source.schema is not None else None


def list_files(source: Source, path: Path, show: Callable[[Path], str]) -> Layout:
    """The files of ``source`` at ``path`` (a file or a folder), refusing any that lie outside its layout."""
    if path.is_file():
        return Layout((path,))
    hive = source.partitioning == "hive"
    deep = hive or source.recursive
    files: list[Path] = []
    keys: tuple[str, ...] | None = None
    keys_from: Path | None = None
    for folder, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith(_HIDDEN))
        here = Path(folder)
        visible = sorted(n for n in names if not n.startswith(_HIDDEN))
        if not visible:
            continue
        parts = here.relative_to(path).parts
        if parts and not deep:
            raise StoreError(f"source {source.name}: {show(here / visible[0])} is in a subfolder of {show(path)}, "
                             "and a source reads only the files directly in its folder: move or delete it, or "
                             "say Source.parquet(..., recursive=True) or partitioning='hive' to read subfolders")
        if hive:
            found = _hive_keys(source, here / visible[0], parts, show)
            if keys is None:
                keys, keys_from = found, here / visible[0]
            elif found != keys:
                assert keys_from is not None
                raise StoreError(f"source {source.name}: {show(here / visible[0])} is partitioned by "
                                 f"{', '.join(found) or 'nothing'} but {show(keys_from)} by {', '.join(keys)}; "
                                 "hive partitioning needs the same key=value folders for every file")
        files += [here / n for n in visible]
    if not files:
        raise StoreError(f"source {source.name}: the folder {show(path)} holds no Parquet files; write the "
                         "source's files there, or point the source's path= at the folder that holds them")
    return Layout(tuple(files), keys or ())


def _hive_keys(source: Source, file: Path, parts: Sequence[str], show: Callable[[Path], str]) -> tuple[str, ...]:
    keys = []
    for part in parts:
        key, sep, _ = part.partition("=")
        if not sep or not key:
            raise StoreError(f"source {source.name}: {show(file)} is in a folder {part!r} that is not key=value, "
                             "and the source says partitioning='hive': move or delete it")
        keys.append(key)
    if not keys:
        raise StoreError(f"source {source.name}: {show(file)} is not inside a key=value folder, and the source "
                         "says partitioning='hive': move it into its partition folder or delete it")
    return tuple(keys)


# --- columns --------------------------------------------------------------------------------------------
def check_columns(source: Source, schemas: Sequence[tuple[str, pa.Schema]], ref: Reference | None) -> SourceSchema:
    """The schema to read ``source`` with, once every file (``(name, arrow schema)``) matches it; a StoreError
    naming the first mismatch (file, column, both types) and how many more there are otherwise."""
    problems = [p for where, schema in schemas for p in _timestamp_problems(source, where, schema)]
    if problems:
        raise _refusal(source, problems)
    against: str | None = None
    if ref is not None:
        expected = ref.schema
    else:
        expected, against = _agreed(schemas)
    for where, schema in schemas:
        if where == against:
            continue
        problems += _column_problems(source, where, schema, expected, ref, against)
    if problems:
        raise _refusal(source, problems)
    return expected


def _agreed(schemas: Sequence[tuple[str, pa.Schema]]) -> tuple[SourceSchema, str]:
    """The schema most files have (the first such file in order wins ties), and that file: the odd files out
    are the ones a refusal names."""
    logical = [(where, SourceSchema.of(schema)) for where, schema in schemas]
    counts = Counter(s for _, s in logical)
    best = max(counts.values())
    return next((s, where) for where, s in logical if counts[s] == best)


def _timestamp_problems(source: Source, where: str, schema: pa.Schema) -> list[str]:
    ts = source.timestamp
    if ts not in schema.names:
        return [f"{where} has no timestamp column {ts!r} (its columns: {', '.join(schema.names) or 'none'}); "
                "every file of the source needs it"]
    typ = schema.field(ts).type
    if not pa.types.is_timestamp(typ):
        return [f"{where} stores the timestamp column {ts!r} as {logical_type(typ)}, but it must be a timestamp; "
                f"rewrite the file with {ts!r} as a timestamp column"]
    return []


def _column_problems(source: Source, where: str, schema: pa.Schema, expected: SourceSchema,
                     ref: Reference | None, against: str | None) -> list[str]:
    have = {f.name: logical_type(f.type) for f in schema}
    problems = []
    for name, want in expected:
        got = have.get(name)
        if got == want:
            continue
        if ref is not None and ref.recorded is None:
            origin = "the source's schema= declares"
            fix = ("add it to the file or remove it from schema=" if got is None else
                   f"rewrite the file with {want} values, or declare {name!r} as {got} in schema=")
        elif ref is not None and ref.recorded is not None:
            origin = f"quasar recorded at the source's first read (from {ref.recorded.origin})"
            fix = ("restore the column in the file, or declare the source's columns with schema=" if got is None else
                   f"rewrite the file with {want} values, or declare the new type with schema={{{name!r}: {got!r}, ...}}")
        else:
            origin = f"{against} has"
            fix = "make the files agree, or declare the source's columns and types with schema="
        if got is None:
            problems.append(f"{where} lacks column {name!r} ({want}, which {origin}); {fix}")
        else:
            problems.append(f"{where} stores column {name!r} as {got}, but {origin} {want}; {fix}")
    if ref is None:                               # files must agree both ways: a column only some files have
        for name, got in have.items():
            if expected.get(name) is None:
                problems.append(f"{where} has column {name!r} ({got}), which {against} lacks; make the files "
                                "agree, or declare the source's columns and types with schema=")
    return problems


def _refusal(source: Source, problems: list[str]) -> StoreError:
    more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
    return StoreError(f"source {source.name}: {problems[0]}{more}")


# --- event times ------------------------------------------------------------------------------------------
def null_timestamps(fragment: ds.ParquetFileFragment, column: str) -> int:
    """Rows of one Parquet file whose ``column`` is null: from the footer's statistics, else by reading it."""
    metadata = fragment.metadata
    total = 0
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        chunk = next((group.column(j) for j in range(group.num_columns)
                      if group.column(j).path_in_schema == column), None)
        stats = chunk.statistics if chunk is not None else None
        if stats is None or not stats.has_null_count:
            return int(fragment.count_rows(filter=ds.field(column).is_null()))
        total += stats.null_count
    return total


def check_null_timestamps(source: Source, counts: Sequence[tuple[str, int]]) -> int:
    """The rows without an event time over ``(file or table, count)``; a StoreError naming them unless the source
    drops them (``null_timestamps="drop"``)."""
    found = [(where, n) for where, n in counts if n]
    total = sum(n for _, n in found)
    if total and source.null_timestamps != "drop":
        where, n = found[0]
        others = total - n
        more = f" (and {others} in {len(found) - 1} other file{'s' if len(found) > 2 else ''})" if others else ""
        raise StoreError(f"source {source.name}: {where} has {n} row{'s' if n != 1 else ''} with a null event time "
                         f"in {source.timestamp!r}{more}; such rows belong to no window: fix the file, or say "
                         "null_timestamps='drop' on the source to drop them (the run records how many)")
    return total
