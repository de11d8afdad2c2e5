"""``quasar compact``: rewrite a signal table's small files into the layout its data calls for, in one commit.

Two things make small files: a bucket count that is too large for the data (a table created with a fixed N, or
one whose data shrank), and writes that add files to a partition a little at a time (pushes kept offline, Spark
tasks). Compaction plans from the current snapshot's manifests (file sizes and partitions, no data read):

* **re-bucket** when the table's N is not the one ``quasar.store.layout`` chooses for its largest day's
  Parquet bytes (off by a factor of 4 or more, so that a table does not flap between two counts; any difference
  when ``[offline] buckets`` fixes N), or when the current files are of more than one partition spec: the
  partition spec evolves to the new ``bucket(N, key)`` and every file is rewritten, a day at a time;
* otherwise **merge** each partition (one day of one bucket) holding at least ``min_files`` files whose
  average is under half the target size into as few files as the target allows.

Rows keep their plan order (files in path order, rows in file order), the order the tie rule of
``quasar.signals.ordering`` reads: a rewritten day's files are read in that order and written in that order
(sequential chunks, names sorting in write order), so a tie on key, event time and created time has the same
winner before and after. Everything is one Iceberg overwrite snapshot that removes the old files and adds the
new ones: readers see the table before or after, never between. A compaction that fails or is killed commits
nothing; its files (named with its write id) are deleted at once on failure, or collected by ``quasar gc`` /
the next backfill when killed. Another writer committing first makes it plan and write again on that snapshot.

The snapshot carries ``quasar.compaction`` and the data-quality verdict and covered-until mark of the snapshot
it compacted, so gates and late-data windows read the same after it; a materialization finding only
compactions since its last run saves the new files and writes nothing (the rows are the same).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from quasar.signals.errors import StoreError
from quasar.signals.ufr.schema import EVENT_TIMESTAMP
from quasar.store.commits import WRITE_ID, Write, commit, landed
from quasar.store.gates import PROP_RUN_ID, PROP_VALIDATION
from quasar.store.layout import Layout, buckets_for
from quasar.store.tables import COVERED_UNTIL
from quasar.store.writer import FIRST_TASK, write_rows

COMPACTION = "quasar.compaction"             # snapshot summary key of a compaction: what it did
REBUCKET_FACTOR = 4                          # re-bucket when N is off by this factor (chosen layouts)
AUTO_MIN_FILES = 8                           # after a backfill: merge partitions with at least this many files
_CARRIED = (PROP_VALIDATION, PROP_RUN_ID, COVERED_UNTIL)   # what gates and late-data windows read


@dataclass(frozen=True)
class CompactionPlan:
    """What a compaction would do to one table."""

    table: str
    files: int                       # data files in the current snapshot
    bytes: int                       # their total size
    buckets: int | None              # the current spec's N
    target_buckets: int | None       # N after (== buckets unless re-bucketing)
    rebucket: bool
    groups: list[list[Any]] = field(default_factory=list, repr=False)   # FileScanTasks rewritten together
    reason: str = ""

    @property
    def rewritten_files(self) -> int:
        return sum(len(g) for g in self.groups)

    @property
    def needed(self) -> bool:
        return bool(self.groups)


@dataclass(frozen=True)
class CompactionResult:
    """What one compaction did (``dry_run``: what it would do)."""

    table: str
    files_before: int
    files_after: int
    buckets_before: int | None
    buckets_after: int | None
    rewritten_files: int
    written_files: int
    rows: int
    snapshot_id: int | None
    reason: str
    seconds: float
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _bucket_field(spec: Any) -> Any | None:
    from pyiceberg.transforms import BucketTransform

    found = [f for f in spec.fields if isinstance(f.transform, BucketTransform)]
    return found[0] if len(found) == 1 else None


def _day_index(table: Any, spec: Any) -> int | None:
    from pyiceberg.transforms import DayTransform

    source = table.schema().find_field(EVENT_TIMESTAMP).field_id
    for i, f in enumerate(spec.fields):
        if isinstance(f.transform, DayTransform) and f.source_id == source:
            return i
    return None


def _name(table: Any) -> str:
    name = table.name()
    return ".".join(name) if isinstance(name, tuple) else str(name)


def plan_compaction(table: Any, layout: Layout, *, min_files: int = 2) -> CompactionPlan:
    """Plan a compaction of ``table``'s current snapshot (metadata only)."""
    from quasar.store.tables import local_path

    tasks = sorted(table.scan().plan_files(), key=lambda t: local_path(t.file.file_path))
    for task in tasks:
        if task.delete_files:
            raise StoreError(f"{_name(table)}: data file {task.file.file_path} has delete files (merge-on-read, "
                             "written by another tool); quasar compacts copy-on-write tables only")
    specs = table.specs()
    current = table.spec()
    bucket = _bucket_field(current)
    n = None if bucket is None else int(bucket.transform.num_buckets)
    total = sum(int(t.file.file_size_in_bytes) for t in tasks)
    by_day: dict[Any, list[Any]] = {}
    by_partition: dict[tuple[Any, ...], list[Any]] = {}
    for task in tasks:
        spec = specs[task.file.spec_id]
        values = tuple(task.file.partition[i] for i in range(len(spec.fields)))
        day = _day_index(table, spec)
        by_day.setdefault(values[day] if day is not None else None, []).append(task)
        by_partition.setdefault((task.file.spec_id, *values), []).append(task)
    day_bytes = max((sum(int(t.file.file_size_in_bytes) for t in g) for g in by_day.values()), default=0)
    wanted = layout.buckets if layout.buckets is not None else buckets_for(day_bytes, layout.target_file_bytes)
    mixed = len({t.file.spec_id for t in tasks}) > 1 or any(t.file.spec_id != current.spec_id for t in tasks)
    off = n is not None and n != wanted and (layout.buckets is not None or
                                            max(n, wanted) >= REBUCKET_FACTOR * min(n, wanted))
    name = _name(table)
    if tasks and n is not None and (off or mixed):
        reason = (f"re-bucket {n} -> {wanted} key buckets (largest day {day_bytes:,} bytes, target "
                  f"{layout.target_file_bytes:,} per file)" if off else
                  f"rewrite files of {len({t.file.spec_id for t in tasks})} partition specs into the current one")
        return CompactionPlan(name, len(tasks), total, n, wanted if off else n, True,
                              [by_day[d] for d in sorted(by_day, key=lambda d: (d is None, d))], reason)
    small = [g for g in by_partition.values() if len(g) >= min_files
             and sum(int(t.file.file_size_in_bytes) for t in g) < len(g) * layout.target_file_bytes / 2]
    reason = (f"merge {sum(len(g) for g in small)} small files of {len(small)} partition(s)" if small
              else "nothing to do: every partition's files are as few as the target size allows")
    return CompactionPlan(name, len(tasks), total, n, n, False, small, reason)


def _rewrite(tx: Any, table: Any, group: Sequence[Any], write: Write, counter: Iterator[int],
             target_bytes: int) -> tuple[list[Any], int]:
    """Read ``group``'s files in plan order and write their rows as data files of the transaction's spec."""
    from pyiceberg.io.pyarrow import ArrowScan

    meta = tx.table_metadata
    rows = ArrowScan(meta, table.io, meta.schema(), row_filter=_always()).to_table(list(group))
    return write_rows(meta, table.io, rows, write.uuid, target_bytes, counter), rows.num_rows


def _always() -> Any:
    from pyiceberg.expressions import AlwaysTrue

    return AlwaysTrue()


def _rebucket(tx: Any, table: Any, buckets: int) -> None:
    """Evolve the transaction's spec to ``bucket(buckets, key)``, keeping the field's name (folder names)."""
    from pyiceberg.transforms import BucketTransform

    old = _bucket_field(tx.table_metadata.spec())
    if old is None:
        raise StoreError(f"{_name(table)} has no bucket partition field to re-bucket")
    if int(old.transform.num_buckets) == buckets:
        return
    key = table.schema().find_column_name(old.source_id)
    with tx.update_spec() as update:
        update.remove_field(old.name)
    with tx.update_spec() as update:
        update.add_field(key, BucketTransform(buckets), old.name)


def compact_table(load: Callable[[], Any], layout: Layout, *, min_files: int = 2, dry_run: bool = False,
                  properties: dict[str, str] | None = None) -> CompactionResult:
    """Compact the table ``load()`` returns (fresh each call) as ``plan_compaction`` plans, in one commit."""
    started = time.monotonic()
    first = plan_compaction(load(), layout, min_files=min_files)
    if dry_run or not first.needed:
        after = first.files if not first.needed else first.files - first.rewritten_files + len(first.groups)
        return CompactionResult(first.table, first.files, after, first.buckets, first.target_buckets,
                                first.rewritten_files, 0, 0, None, first.reason, time.monotonic() - started, dry_run)
    write = Write()
    done: dict[str, Any] = {}

    def build(table: Any, tx: Any) -> None:
        plan = plan_compaction(table, layout, min_files=min_files)
        done.clear()
        if not plan.needed:                   # another writer's commit left nothing to compact: commit nothing
            return
        if plan.rebucket and plan.target_buckets is not None:
            _rebucket(tx, table, plan.target_buckets)
        counter = itertools.count(FIRST_TASK)
        summary = table.current_snapshot().summary if table.current_snapshot() is not None else None
        carried = {k: str(summary.get(k)) for k in _CARRIED if summary is not None and summary.get(k)}
        props = {**(properties or {}), **carried, WRITE_ID: write.id, "quasar.attempt": str(write.attempts),
                 COMPACTION: plan.reason}
        written, rows = [], 0
        for group in plan.groups:
            files, count = _rewrite(tx, table, group, write, counter, layout.target_file_bytes)
            written += files
            rows += count
        with tx.update_snapshot(snapshot_properties=props).overwrite() as overwrite:
            for group in plan.groups:
                for task in group:
                    overwrite.delete_data_file(task.file)
            for data_file in written:
                overwrite.append_data_file(data_file)
        done.update(plan=plan, written=len(written), rows=rows)

    def fail(exc: BaseException, conflict: bool) -> StoreError:
        return StoreError(f"compacting {first.table} failed{' (other writers kept committing)' if conflict else ''}"
                          f": {type(exc).__name__}: {exc}; the table is as it was")

    table = commit(load, build, write, fail=fail)
    if not done:
        again = plan_compaction(table, layout, min_files=min_files)
        return CompactionResult(again.table, again.files, again.files, again.buckets, again.buckets, 0, 0, 0, None,
                                again.reason, time.monotonic() - started)
    plan = done["plan"]
    files_after = len(list(table.scan().plan_files()))
    return CompactionResult(plan.table, plan.files, files_after, plan.buckets, plan.target_buckets,
                            plan.rewritten_files, done["written"], done["rows"], landed(table, write.id), plan.reason,
                            time.monotonic() - started)
