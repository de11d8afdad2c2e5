"""Materialization on Spark: the local run's rules, with the reading and the Redis writes on executors.

``materialize_spark`` is ``quasar.online.materialize.materialize`` (same state, run log, snapshot checks,
future rows, time bounds and result) with a run whose work goes to Spark tasks, one per key bucket:

* the driver plans, as the local run does: the snapshot's files and partitions, what was added, removed or
  became due (``append_groups``, ``rebuild_groups``), and the key bucket of each removed file (its partition
  folder, ``quasar.store.buckets.path_bucket``; a table re-bucketed by compaction, with more than one partition
  spec, runs its corrections as one task);
* each task reads its bucket's files with pyarrow on the executor and runs the local run's own methods there
  (``_floors``, ``_write_winners``, ``_correct``, ``_replace_all``): the winner by ``quasar.signals.ordering``, and the
  writes through the same newer-wins script with the same floors (``quasar.online.redis_store.plan_write`` /
  ``plan_mirror``, pipelined round trips of ``KEYS_PER_CALL`` keys) from a Redis client of its own;
* tasks send back only counts, the files holding future rows and the first out-of-bounds row; a rebuild's tasks
  also send their entities' join keys, which the driver needs (as the local rebuild does) to delete the field
  of every online entity without an offline row.

Buckets hold disjoint entities, so a bucket's task sees every row of its entities, in plan order: the result,
in Redis and in the run log, is the local run's. A table whose files do not all name their bucket runs as one
task (the local run, on an executor). The executors must reach Redis at the store's URL.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from quasar.online.materialize import (
    DataFile,
    MaterializeResult,
    MaterializeState,
    _Run,
    append_groups,
    materialize,
    rebuild_groups,
)
from quasar.online.redis_store import RedisOnlineStore
from quasar.online.store import OnlineStore
from quasar.signals.bounds import DEFAULT_BOUNDS, TimeBounds
from quasar.signals.errors import QuasarError, StoreError
from quasar.signals.signal import Signal
from quasar.store.buckets import path_bucket
from quasar.store.tables import OfflineStore


@dataclass(frozen=True)
class RedisTarget:
    """How an executor connects: the store's URL, project, cluster mode and timeouts."""

    url: str
    project: str
    cluster: bool
    timeouts: tuple[float, float, float]

    @classmethod
    def of(cls, store: OnlineStore) -> RedisTarget:
        if not isinstance(store, RedisOnlineStore):
            raise QuasarError(f"materializing on Spark writes Redis from the executors; the online store "
                              f"{store!r} is not a RedisOnlineStore")
        t = store.timeouts
        return cls(store._target.url, store.project, store.cluster, (t.read, t.write, t.connect))

    def connect(self) -> RedisOnlineStore:
        read, write, connect = self.timeouts
        return RedisOnlineStore(self.url, project=self.project, cluster=self.cluster, socket_timeout=read,
                                write_timeout=write, connect_timeout=connect)


@dataclass(frozen=True)
class Task:
    """One Spark task: a rebuild's or an incremental run's share of one key bucket (or of everything)."""

    kind: str                                          # "rebuild" or "incremental"
    groups: list[list[DataFile]]                       # files read together, in plan order
    removed: list[str] = field(default_factory=list)   # removed files (incremental): their rows give the floors
    current: list[DataFile] = field(default_factory=list)   # the current files corrections read


@dataclass(frozen=True)
class TaskResult:
    written: int
    deleted: int
    rows_read: int
    files_read: int
    entities: int
    future: dict[str, int]
    out_of_bounds: int
    example: str | None
    keys: bytes                                        # a rebuild's join keys (Arrow IPC), else b""


class _TaskRun(_Run):
    """The local run inside a Spark task: no offline store (the driver planned), the table's bucket count given."""

    bucket_count: int | None = None

    def _bucket_count(self) -> int | None:
        return self.bucket_count


def _keys_blob(keys: list[pa.Array], key_type: pa.DataType) -> bytes:
    table = pa.table({"k": pa.chunked_array(keys, type=key_type)})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def run_task(task: Task, *, signal: Signal, version: int, target: RedisTarget, batch_rows: int, now_us: int,
             bounds: TimeBounds, bucket_count: int | None) -> TaskResult:
    """Do one task (on an executor): the local run's reads, winners and writes for the task's files."""
    with target.connect() as store:
        run = _TaskRun(signal, version, None, store, batch_rows, now_us, bounds)  # type: ignore[arg-type]
        run.bucket_count = bucket_count
        keys = b""
        if task.kind == "rebuild":
            keys = _keys_blob(run._replace_all(task.groups, None), signal.entity.arrow_key_type)
        else:
            floors = run._floors(task.removed)
            run.future = {}                             # a removed file's future rows are not tracked
            run._write_winners(task.groups, None)
            if floors is not None:
                run._correct(task.current, floors, None)
        return TaskResult(run.written, run.deleted, run.rows_read, run.files_read, run.entities(), run.future,
                          run.out_of_bounds, run.example, keys)


class SparkRun(_Run):
    """A materialization whose reads and writes run in Spark tasks, one per key bucket."""

    session: Any = None
    tasks_run = 0

    def __init__(self, *args: Any, session: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session = session
        self.redis = RedisTarget.of(self.online)
        self._entities = 0

    def entities(self) -> int:
        return self._entities + super().entities()

    def _rebuild(self, files: list[DataFile], bar: Any) -> None:
        self.future = {}
        results = self._run([Task("rebuild", [g]) for g in rebuild_groups(files)], bar)
        known = [pa.ipc.open_stream(r.keys).read_all().column("k").combine_chunks() for r in results]
        self._drop_strays(known)

    def _incremental(self, files: list[DataFile], removed: list[str], changed: set[str], bar: Any) -> bool:
        if any(not _exists(p) for p in removed):         # an expired snapshot's files: rebuild instead
            self._rebuild(files, bar)
            return True
        groups = append_groups(files, changed)
        count = self._bucket_count()
        removed_at = {p: path_bucket(p, self.join_key) for p in removed}
        one_spec = len(self.offline.table(self.signal.name, self.version).specs()) == 1   # never re-bucketed
        bucketed = count is not None and one_spec and all(f.bucket is not None for f in files) and all(
            b is not None and 0 <= b < count for b in removed_at.values())
        if not bucketed:
            tasks = [Task("incremental", groups, removed, files)] if groups or removed else []
        else:
            order = list(dict.fromkeys([g[0].bucket for g in groups if g] + list(removed_at.values())))
            tasks = [Task("incremental", [g for g in groups if g and g[0].bucket == b],
                          [p for p in removed if removed_at[p] == b], [f for f in files if f.bucket == b])
                     for b in order]
        self._run(tasks, bar)
        return False

    def _run(self, tasks: list[Task], bar: Any) -> list[TaskResult]:
        """Run ``tasks`` on Spark, one per partition, and add up what they did (in task order)."""
        if not tasks:
            return []
        signal = dataclasses.replace(self.signal, transform=None)     # executors need no user code
        options: dict[str, Any] = {"signal": signal, "version": self.version, "target": self.redis, "batch_rows": self.batch_rows,
                   "now_us": self.now_us, "bounds": self.bounds, "bucket_count": self._bucket_count()}

        def work(part: Iterator[tuple[int, Task]]) -> Iterator[tuple[int, TaskResult]]:
            for i, task in part:
                yield i, run_task(task, **options)

        sc = self.session.sparkContext
        try:
            done = sc.parallelize(list(enumerate(tasks)), len(tasks)).mapPartitions(work).collect()
        except Exception as exc:
            from quasar.store.engines.spark_session import spark_error

            raise StoreError(f"materializing signal {self.signal.name} v{self.version} on Spark failed: "
                             f"{spark_error(exc)}") from exc
        results = [r for _, r in sorted(done, key=lambda d: d[0])]
        self.tasks_run += len(results)
        for r in results:
            self.written += r.written
            self.deleted += r.deleted
            self.rows_read += r.rows_read
            self.files_read += r.files_read
            self._entities += r.entities
            self.out_of_bounds += r.out_of_bounds
            if self.example is None:
                self.example = r.example
            for path, at in r.future.items():
                self.future[path] = min(at, self.future.get(path, at))
            if bar is not None:
                bar.update(r.files_read)
        return results


def _exists(path: str) -> bool:
    from pyarrow import fs

    if "://" in path:
        filesystem, inner = fs.FileSystem.from_uri(path)
    else:
        filesystem, inner = fs.LocalFileSystem(), path
    return bool(filesystem.get_file_info(inner).type != fs.FileType.NotFound)


def materialize_spark(*, session: Any, signal: Signal, version: int, offline: OfflineStore, online: OnlineStore,
                      state: MaterializeState, batch_rows: int = 100_000, progress: bool = False, full: bool = False,
                      now: datetime | None = None, bounds: TimeBounds = DEFAULT_BOUNDS) -> MaterializeResult:
    """``quasar.online.materialize.materialize`` with the reads and Redis writes on ``session``'s executors."""

    def runner(*args: Any) -> SparkRun:
        return SparkRun(*args, session=session)

    return materialize(signal=signal, version=version, offline=offline, online=online, state=state,
                       batch_rows=batch_rows, progress=progress, full=full, now=now, bounds=bounds, runner=runner)
