"""Materialization: the online store mirrors each entity's offline latest-as-of-now row of a signal version.

The row an entity serves is the winner by ``quasar.signals.ordering`` (event time, then created time, a null created
time the oldest, then the later row in plan order) among its rows with ``event_timestamp <= now``: exactly
what the point-in-time join gives a training spine stamped now. A row stamped in the future is not served
before its time; the state remembers the files holding such rows, and the first run after they are due
reads them again.

State: the key ``materialize:<signal>@<version>`` holds the snapshot last materialized, the data files it
covered, the TTL and the record format it wrote with, and the files holding future rows. A run compares the
current snapshot's files with the covered ones:

* **added** files (and due future ones): their partitions (one day of one key bucket) are read whole, the
  partitions of one bucket together in plan order, and the winners written newer-wins (each entity once), so an
  appended tie breaks exactly as a full run breaks it;
* **removed** files (a backfill replaced days, or deleted rows): they are still readable (Iceberg keeps them
  for the older snapshots), so the run reads them to find the entities they held and, per entity, the newest
  removed row (its *floor*). Each such entity's winner is computed again over the current files of its key
  bucket, and written as a correction: a stored record not above the floor is replaced by the new winner,
  or its field deleted when the entity has no row any more, so a value that changed, vanished or moved to
  an earlier event time reaches Redis.

A run that finds only compactions (``quasar.store.compaction``) since the snapshot it last covered saves the new
files as covered and writes nothing: a compaction moves the same rows, in the same plan order, to other files.

**Full** (``full=True``, ``quasar materialize --full``): an exact rebuild. Per key bucket, every entity's
winner replaces what is stored; then the online keys are scanned and the field of every entity without an
offline row is deleted. A changed TTL (re-registering a signal updates it in place, same version) or
online records of an older format also trigger a rebuild, which re-applies expiry to every key
(``quasar.online.lua``), earlier or later than before.

**Push** (``quasar.online.push``) writes online only, newer-wins. A pushed value newer than every offline row of
its entity stays through incremental runs, corrections included: a correction replaces a stored record only
when it is not above the floor, i.e. when offline once had a row at least as new. A full rebuild (and so a
TTL change) makes online exactly offline: pushed values that are not in the offline table are dropped. To
keep pushed rows through rebuilds, push them to the offline store too (``Platform.push(..., to=
"online_and_offline")``).

Safe to interrupt: the online store is written first and the state saved last, so a killed run followed by
a new run reads the same files again, and every write above is idempotent. Memory stays bounded: files are
read in record batches of ``batch_rows``; winners are held one key bucket at a time (the table's layout keeps
a bucket's share of a day under the target file size, ``quasar.store.layout``), plus the floors of the corrected entities and, during a rebuild's scan,
the join keys of the version's offline entities.

A snapshot whose data-quality verdict (``quasar.store.gates``) is ``failed`` is refused with ValidationFailedError;
one committed under the ``warn`` policy is materialized (a strict gate that fails never commits at all).

**Time bounds** (``quasar.signals.bounds``, ``[time]`` in quasar.toml): push and backfill refuse event times before
``earliest`` or more than ``max_future`` after now, but another writer may still have put such rows in the
table. A run skips them: a row before ``earliest`` is never served, and one after now is not served before its
time anyway (it is read again once due, when it is inside the bounds). The run counts those it read
(``MaterializeResult.rows_out_of_bounds``, the run log's ``rows_out_of_bounds``) and names the first
(``out_of_bounds_example``: file, row, value, bound); the CLI prints it. Skipping rather than refusing keeps
every other entity of the signal current: refusing would leave all of them stale until somebody removes the
row, and the row is not served either way. Created times are not checked here: a far-future created time
only decides ties at its own event time, the same way offline and online.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from quasar.online.keys import field_name
from quasar.online.store import OnlineStore
from quasar.signals.bounds import DEFAULT_BOUNDS, TimeBounds, describe, outside
from quasar.signals.errors import QuasarError, RequestError, SchemaError, StoreError
from quasar.signals.ordering import latest_per_entity as _latest
from quasar.signals.signal import Signal
from quasar.signals.times import micros
from quasar.signals.ufr.codec import FORMAT_VERSION
from quasar.signals.ufr.schema import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from quasar.store.arrow_types import restore_ufr_types, storage_schema
from quasar.store.buckets import iceberg_buckets
from quasar.store.gates import check_snapshot
from quasar.store.progress import Progress
from quasar.store.tables import PROP_FINGERPRINT, OfflineStore, local_path

_POSITION = "__quasar_position"
Keep = Callable[[pa.Table], pa.Array]
log = logging.getLogger("quasar.materialize")


class MaterializeState(Protocol):
    """Where runs are recorded and the watermark is kept (``registry.Registry`` implements it)."""

    def get_state(self, key: str) -> dict[str, Any] | None: ...

    def set_state(self, key: str, value: dict[str, Any]) -> None: ...

    def start_run(self, *, signal: str, version: int, kind: str, params: dict[str, Any] | None = None) -> int: ...

    def finish_run(self, run_id: int, *, status: str, snapshot_id: int | None = None, rows: int | None = None,
                   details: dict[str, Any] | None = None) -> None: ...


@dataclass(frozen=True, kw_only=True)
class MaterializeResult:
    """What one materialization did. ``rows_written`` counts records written (not rejected as older than the
    stored ones), ``rows_deleted`` fields deleted; ``entities`` the distinct entities written or corrected;
    ``incremental`` whether it started from an earlier run's state (False for a first run or a rebuild);
    ``rows_out_of_bounds`` the rows read that lie outside the time bounds and were skipped, the first named in
    ``out_of_bounds_example``."""

    signal: str
    version: int
    rows_written: int
    entities: int
    snapshot_id: int | None
    incremental: bool
    duration_s: float
    rows_read: int = 0
    files_read: int = 0
    run_id: int | None = None
    rows_deleted: int = 0
    rebuilt: bool = False
    rows_out_of_bounds: int = 0
    out_of_bounds_example: str | None = None


def state_key(signal: str, version: int) -> str:
    """The state key of a signal version's materialization watermark: ``materialize:<signal>@<version>``."""
    return f"materialize:{field_name(signal, version)}"


def latest_per_entity(rows: pa.Table, join_key: str) -> pa.Table:
    """One row per join key by ``quasar.signals.ordering``, plan order given by ``__quasar_position``."""
    return _latest(rows, join_key, position=_POSITION)


def ttl_ms(signal: Signal) -> int:
    """The TTL the online keys are written with, in ms (0: none)."""
    return int(signal.ttl.total_seconds() * 1000) if signal.ttl is not None else 0


def materialize(*, signal: Signal, version: int, offline: OfflineStore, online: OnlineStore,
                state: MaterializeState, batch_rows: int = 100_000, progress: bool = False,
                full: bool = False, now: datetime | None = None,
                bounds: TimeBounds = DEFAULT_BOUNDS, runner: Callable[..., _Run] | None = None) -> MaterializeResult:
    """Make ``online`` mirror the latest row per entity of ``signal`` v``version`` as of ``now`` (default: the
    clock), from where the last run stopped; ``full`` rebuilds the version's online state exactly. Rows outside
    ``bounds`` are skipped and counted. ``runner`` makes the run (``_Run``'s arguments): the Spark engine's runs
    its reads and writes on executors (``quasar.online.materialize_spark``)."""
    if not signal.online:
        raise RequestError(f"signal {signal.name!r} is not an online signal: declare it with online=True to "
                           "materialize it")
    if not isinstance(batch_rows, int) or batch_rows <= 0:
        raise QuasarError(f"batch_rows must be a positive int, got {batch_rows!r}")
    started = time.monotonic()
    now_us = time.time_ns() // 1000 if now is None else micros(now)
    key = state_key(signal.name, version)
    saved = state.get_state(key)
    snapshot = offline.current_snapshot_id(signal.name, version)
    rebuild = full or (saved is not None and (saved.get("ttl_ms", ttl_ms(signal)) != ttl_ms(signal)
                                              or saved.get("format") != FORMAT_VERSION))
    run_id = state.start_run(signal=signal.name, version=version, kind="materialize",
                             params={"batch_rows": batch_rows, "full": rebuild,
                                     "from_snapshot": saved.get("snapshot_id") if saved else None})
    run = (runner or _Run)(signal, version, offline, online, batch_rows, now_us, bounds)
    try:
        rebuild = run.go(saved, snapshot, rebuild, progress)
        if run.files is not None:
            state.set_state(key, {"snapshot_id": snapshot, "files": sorted(f.path for f in run.files),
                                  "ttl_ms": ttl_ms(signal), "format": FORMAT_VERSION,
                                  "future": dict(sorted(run.future.items()))})
    except BaseException as exc:
        state.finish_run(run_id, status="failed", snapshot_id=snapshot,
                         details={"error": f"{type(exc).__name__}: {exc}"})
        if isinstance(exc, QuasarError) or not isinstance(exc, Exception):
            raise
        raise StoreError(f"materializing signal {signal.name} v{version} failed: {type(exc).__name__}: {exc}") \
            from exc
    incremental = saved is not None and not rebuild
    skipped = {"rows_out_of_bounds": run.out_of_bounds, "out_of_bounds_example": run.example} \
        if run.out_of_bounds else {}
    if run.out_of_bounds:
        log.warning("materialize %s v%d: %d row(s) outside the time bounds skipped, e.g. %s", signal.name, version,
                    run.out_of_bounds, run.example)
    state.finish_run(run_id, status="succeeded", snapshot_id=snapshot, rows=run.written,
                     details={"entities": run.entities(), "rows_read": run.rows_read, "files_read": run.files_read,
                              "rows_deleted": run.deleted, "incremental": incremental, "rebuilt": rebuild,
                              **skipped})
    return MaterializeResult(signal=signal.name, version=version, rows_written=run.written, entities=run.entities(),
                             snapshot_id=snapshot, incremental=incremental, duration_s=time.monotonic() - started,
                             rows_read=run.rows_read, files_read=run.files_read, run_id=run_id,
                             rows_deleted=run.deleted, rebuilt=rebuild, rows_out_of_bounds=run.out_of_bounds,
                             out_of_bounds_example=run.example)


@dataclass(frozen=True)
class DataFile:
    """A data file of the snapshot: its path, its Iceberg partition and its key bucket (None: unknown)."""

    path: str
    partition: tuple[Any, ...]
    bucket: int | None


def plan(offline: OfflineStore, signal: Signal, version: int, snapshot: int) -> list[DataFile]:
    """The snapshot's data files in plan order, with their partitions (from the Iceberg manifests)."""
    from pyiceberg.transforms import BucketTransform

    paths = offline.plan_files(signal.name, version, snapshot_id=snapshot)
    table = offline.table(signal.name, version)
    specs = table.specs()
    info: dict[str, tuple[tuple[Any, ...], int | None]] = {}
    for task in table.scan(snapshot_id=snapshot).plan_files():
        spec = specs[task.file.spec_id]
        values = tuple(task.file.partition[i] for i in range(len(spec.fields)))
        buckets = [values[i] for i, f in enumerate(spec.fields) if isinstance(f.transform, BucketTransform)]
        info[local_path(task.file.file_path)] = ((task.file.spec_id, *values),
                                                 int(buckets[0]) if len(buckets) == 1 else None)
    return [DataFile(p, *info.get(p, ((p,), None))) for p in paths]


def only_compacted(offline: OfflineStore, signal: Signal, version: int, since: int | None, snapshot: int) -> bool:
    """Whether every snapshot after ``since`` up to ``snapshot`` is a compaction (``quasar.store.compaction``):
    the same rows in other files. False when ``since`` is not an ancestor (expired, or another history)."""
    from pyiceberg.table.snapshots import ancestors_of

    from quasar.store.compaction import COMPACTION

    if since is None or since == snapshot:
        return False
    table = offline.table(signal.name, version)
    for s in ancestors_of(table.snapshot_by_id(snapshot), table.metadata):
        if s.snapshot_id == since:
            return True
        if s.summary is None or COMPACTION not in s.summary.additional_properties:
            return False
    return False


def files_to_read(files: list[DataFile], changed: set[str]) -> list[list[DataFile]]:
    """The partitions (in plan order) holding a file in ``changed``, each whole, so that the winner of a tie
    on the event time is the one a full run picks."""
    by_partition: dict[tuple[Any, ...], list[DataFile]] = {}
    for f in files:
        by_partition.setdefault(f.partition, []).append(f)
    return [group for group in by_partition.values() if any(f.path in changed for f in group)]


def append_groups(files: list[DataFile], changed: set[str]) -> list[list[DataFile]]:
    """The files an incremental run reads, by key bucket: every partition holding a changed file, whole, the
    partitions of one bucket together in plan order (each entity is written once however many days it has)."""
    by_bucket: dict[int | None, list[DataFile]] = {}
    for group in files_to_read(files, changed):
        by_bucket.setdefault(group[0].bucket if group else None, []).extend(group)
    return list(by_bucket.values())


def rebuild_groups(files: list[DataFile]) -> list[list[DataFile]]:
    """The files a rebuild reads, by key bucket in plan order; files of unknown bucket put all in one group."""
    by_bucket: dict[int | None, list[DataFile]] = {}
    for f in files:
        by_bucket.setdefault(f.bucket, []).append(f)
    if None in by_bucket and len(by_bucket) > 1:
        return [files]
    return list(by_bucket.values())


class _Run:
    """One materialization: what it read and wrote, and the state it leaves."""

    def __init__(self, signal: Signal, version: int, offline: OfflineStore, online: OnlineStore, batch_rows: int,
                 now_us: int, bounds: TimeBounds) -> None:
        self.signal, self.version, self.offline, self.online = signal, version, offline, online
        self.batch_rows, self.now_us, self.bounds = batch_rows, now_us, bounds
        self.earliest_us = micros(bounds.earliest)
        self.out_of_bounds = 0                              # rows outside the bounds read by _append, _rebuild
        self.example: str | None = None
        self.join_key = signal.entity.join_key
        self.written = self.deleted = self.rows_read = self.files_read = 0
        self.keys: list[pa.Array] = []
        self.files: list[DataFile] | None = None          # None: nothing to save
        self.future: dict[str, int] = {}                   # file -> its earliest row after now (µs)
        self.target = restore_ufr_types(pa.schema([*(pa.field(f.name, f.type) for f in storage_schema(signal)),
                                                   pa.field(_POSITION, pa.int64())]).empty_table(),
                                        signal.schema).schema

    def entities(self) -> int:
        if not self.keys:
            return 0
        return int(pc.count_distinct(pa.chunked_array(self.keys, type=self.keys[0].type)).as_py())

    # --- the three parts of a run -----------------------------------------------------------------------------
    def go(self, saved: dict[str, Any] | None, snapshot: int | None, rebuild: bool, progress: bool) -> bool:
        """Run; returns whether it rebuilt (a correction whose removed files are gone falls back to a rebuild)."""
        if snapshot is None:
            return rebuild                                  # never backfilled
        future = {p: int(t) for p, t in (saved or {}).get("future", {}).items()}
        due = {p for p, t in future.items() if t <= self.now_us}
        if not rebuild and saved is not None and saved.get("snapshot_id") == snapshot and not due:
            return rebuild                                  # nothing new
        _check_fingerprint(self.offline, self.signal, self.version)
        check_snapshot(self.offline, self.signal.name, self.version, snapshot)
        files = plan(self.offline, self.signal, self.version, snapshot)
        current = {f.path for f in files}
        if not rebuild and saved is not None and not future and only_compacted(self.offline, self.signal, self.version,
                                                                                 saved.get("snapshot_id"), snapshot):
            self.files = files                              # the same rows in other files: nothing to write
            return rebuild
        with Progress(f"materialize {self.signal.name} v{self.version}", total=len(files), unit="file",
                      enabled=progress) as bar:
            if rebuild:
                self._rebuild(files, bar)
            else:
                covered = set(saved.get("files", [])) if saved else set()
                removed = sorted(covered - current)
                self.future = {p: t for p, t in future.items() if p in current and t > self.now_us}
                if self._incremental(files, removed, (current - covered) | (due & current), bar):
                    rebuild = True
        self.files = files
        return rebuild

    def _incremental(self, files: list[DataFile], removed: list[str], changed: set[str], bar: Any) -> bool:
        """Floors of the removed files, appends of the changed ones, then corrections; True when it had to
        rebuild instead (the removed files are gone)."""
        future = self.future
        try:
            floors = self._floors(removed)
        except FileNotFoundError:                           # an expired snapshot's files: rebuild instead
            self._rebuild(files, bar)
            return True
        self.future = future                                # a removed file's future rows are not tracked
        self._append(files, changed, bar)
        if floors is not None:
            self._correct(files, floors, bar)
        return False

    def _append(self, files: list[DataFile], changed: set[str], bar: Any) -> None:
        """Newer-wins writes of the winners of every partition holding a changed file: the partitions of one key
        bucket are read together (in plan order), so each entity is written once however many days it has."""
        self._write_winners(append_groups(files, changed), bar)

    def _write_winners(self, groups: Iterable[list[DataFile]], bar: Any) -> None:
        for group in groups:
            winners = self._winners(group, self._due, bar, count=True)
            if winners is not None and winners.num_rows:
                for lo in range(0, winners.num_rows, self.batch_rows):
                    self._write(winners.slice(lo, self.batch_rows))

    def _write(self, rows: pa.Table) -> None:
        self.keys.append(rows.column(self.join_key).combine_chunks())
        self.written += self.online.write(self.signal, self.version, rows.drop_columns([_POSITION]))

    def _floors(self, removed: list[str]) -> pa.Table | None:
        """Per entity of the removed files, its newest removed row as of now (join key and both times)."""
        if not removed:
            return None
        winners = self._winners([DataFile(p, (p,), None) for p in removed], self._due, None)
        if winners is None or winners.num_rows == 0:
            return None
        return winners.select([self.join_key, EVENT_TIMESTAMP, CREATED_TIMESTAMP])

    def _correct(self, files: list[DataFile], floors: pa.Table, bar: Any) -> None:
        """Each floored entity's winner over the current files of its bucket, written as a correction."""
        for bucket, keys in self._by_bucket(floors.column(self.join_key), files):
            group = [f for f in files if bucket is None or f.bucket is None or f.bucket == bucket]
            wanted = pa.chunked_array([keys]).combine_chunks()

            def keep(rows: pa.Table, wanted: pa.Array = wanted) -> pa.Array:
                return pc.and_(self._due(rows), pc.is_in(rows.column(self.join_key), value_set=wanted))

            winners = self._winners(group, keep, bar) or self.target.empty_table()
            found = winners.column(self.join_key).combine_chunks()
            absent = pc.filter(wanted, pc.invert(pc.is_in(wanted, value_set=found))).to_pylist()
            mine = floors.filter(pc.is_in(floors.column(self.join_key), value_set=wanted))
            self._mirror(winners, absent, mine, reset=False)
            self.keys.append(wanted)

    def _rebuild(self, files: list[DataFile], bar: Any) -> None:
        """Every entity's winner replaces what is stored, bucket by bucket; entities without one are deleted."""
        self.future = {}
        self._drop_strays(self._replace_all(rebuild_groups(files), bar))

    def _replace_all(self, groups: Iterable[list[DataFile]], bar: Any) -> list[pa.Array]:
        """Each group's winners replace what is stored; returns their join keys."""
        offline_keys: list[pa.Array] = []
        for group in groups:
            winners = self._winners(group, self._due, bar, count=True)
            if winners is None or winners.num_rows == 0:
                continue
            keys = winners.column(self.join_key).combine_chunks()
            offline_keys.append(keys)
            self._mirror(winners, [], None, reset=True)
            self.keys.append(keys)
        return offline_keys

    def _drop_strays(self, offline_keys: list[pa.Array]) -> None:
        """Delete the field of every online entity that is not among ``offline_keys``."""
        known = pa.chunked_array(offline_keys, type=self.signal.entity.arrow_key_type).combine_chunks()
        for batch in self.online.scan(self.signal, self.version):
            values = pa.array(batch, self.signal.entity.arrow_key_type)
            extra = pc.filter(values, pc.invert(pc.is_in(values, value_set=known))).to_pylist()
            if extra:
                self._mirror(self.target.empty_table(), extra, None, reset=False)

    def _mirror(self, winners: pa.Table, absent: list[Any], floors: pa.Table | None, *, reset: bool) -> None:
        for lo in range(0, max(winners.num_rows, 1), self.batch_rows):
            rows = winners.slice(lo, self.batch_rows).drop_columns([_POSITION])
            w, d = self.online.mirror(self.signal, self.version, rows, absent=absent if lo == 0 else (),
                                      floors=floors, reset_expiry=reset)
            self.written, self.deleted = self.written + w, self.deleted + d

    def _by_bucket(self, keys: pa.ChunkedArray | pa.Array, files: list[DataFile]) -> Iterator[tuple[int | None,
                                                                                                   pa.Array]]:
        keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
        count = self._bucket_count()
        if count is None or any(f.bucket is None for f in files):
            yield None, keys
            return
        buckets = iceberg_buckets(keys, count)
        for bucket in np.unique(buckets).tolist():
            yield int(bucket), keys.filter(pa.array(buckets == bucket))

    def _bucket_count(self) -> int | None:
        return self.offline.bucket_count(self.signal.name, self.version)

    # --- reading ----------------------------------------------------------------------------------------------
    def _due(self, rows: pa.Table) -> pa.Array:
        """Rows to serve now: event time not after now and not before the bounds' earliest."""
        times = rows.column(EVENT_TIMESTAMP).cast(pa.int64())
        return pc.and_(pc.less_equal(times, self.now_us), pc.greater_equal(times, self.earliest_us))

    def _count_outside(self, path: str, rows: pa.Table, offset: int) -> None:
        mask = outside(rows.column(EVENT_TIMESTAMP), now_us=self.now_us, bounds=self.bounds)
        if not mask.any():
            return
        self.out_of_bounds += int(mask.sum())
        if self.example is None:
            row = int(np.flatnonzero(mask)[0])
            value = int(rows.column(EVENT_TIMESTAMP).cast(pa.int64())[row].as_py())
            self.example = (f"data file {path}: column {EVENT_TIMESTAMP!r} row {offset + row}: "
                            f"{describe(value, now_us=self.now_us, bounds=self.bounds)}")

    def _winners(self, files: Iterable[DataFile], keep: Keep, bar: Any, *, count: bool = False) -> pa.Table | None:
        """The winners among the kept rows of ``files`` (read in record batches); notes their future rows, and
        with ``count`` their rows outside the time bounds."""
        # Each batch's own winners wait in ``pending`` (read order kept: a later batch wins a tie) and are
        # merged into ``winners`` once they outnumber them: a few sorts of the whole, not one per batch.
        winners: pa.Table | None = None
        pending: list[pa.Table] = []
        waiting = 0

        def merged() -> pa.Table:
            tables = ([] if winners is None else [winners]) + pending
            return tables[0] if len(tables) == 1 else latest_per_entity(pa.concat_tables(tables), self.join_key)

        for f in files:
            offset = 0
            for rows in self._read(f.path):
                if count:
                    self._count_outside(f.path, rows, offset)
                offset += rows.num_rows
                times = rows.column(EVENT_TIMESTAMP).cast(pa.int64())
                later = pc.filter(times, pc.greater(times, self.now_us))
                if len(later):
                    first = int(pc.min(later).as_py())
                    self.future[f.path] = min(first, self.future.get(f.path, first))
                rows = latest_per_entity(rows.filter(keep(rows)), self.join_key)
                pending.append(rows)
                waiting += rows.num_rows
                if waiting >= max(self.batch_rows, 0 if winners is None else winners.num_rows):
                    winners, pending, waiting = merged(), [], 0
            self.files_read += 1
            if bar is not None:
                bar.update(1)
        return merged() if pending else winners

    def _read(self, path: str) -> Iterator[pa.Table]:
        """Record batches of one data file in UFR types, with their plan positions."""
        stored = storage_schema(self.signal)
        parquet = _open(path)
        missing = [name for name in stored.names if name not in parquet.schema_arrow.names]
        if missing:
            raise StoreError(f"signal {self.signal.name}: data file {path} has no column(s) {missing}")
        for batch in parquet.iter_batches(batch_size=self.batch_rows, columns=stored.names):
            table = restore_ufr_types(pa.Table.from_batches([batch]), self.signal.schema)
            n = table.num_rows
            position = pa.array(np.arange(self.rows_read, self.rows_read + n, dtype=np.int64))
            self.rows_read += n
            columns = [_as_type(table.column(f.name), f.type, path) for f in self.target if f.name != _POSITION]
            yield pa.Table.from_arrays([*columns, position], schema=self.target)


def _check_fingerprint(offline: OfflineStore, signal: Signal, version: int) -> None:
    stored = offline.table(signal.name, version).properties.get(PROP_FINGERPRINT)
    if stored is not None and stored != signal.schema.fingerprint_hex:
        raise SchemaError(f"signal {signal.name} v{version}: its offline table was written under schema {stored}, "
                          f"but the signal's schema is {signal.schema.fingerprint_hex}")


def _open(path: str) -> pq.ParquetFile:
    if "://" in path:
        from pyarrow import fs

        filesystem, inner = fs.FileSystem.from_uri(path)
        return pq.ParquetFile(filesystem.open_input_file(inner))
    return pq.ParquetFile(path)


def _as_type(column: pa.ChunkedArray, arrow_type: pa.DataType, path: str) -> pa.ChunkedArray:
    if column.type == arrow_type:
        return column
    try:
        return column.cast(arrow_type, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise StoreError(f"data file {path}: a column of type {column.type} does not read as {arrow_type}: "
                         f"{exc}") from exc
