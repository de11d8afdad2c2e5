"""Materialization: the latest row per entity of a signal version's Iceberg table, written to the online store.

Incremental: the state key ``materialize:<signal>@<version>`` remembers the snapshot last materialized and
the data files it covered. A new run plans the current snapshot and reads only the files not covered yet,
together with the older files of the same partitions, so that ties on the event time break exactly as a
full run would. Nothing new is a no-op.

Which row wins for an entity is the offline rule (``store.pit_local``): the latest ``event_timestamp``, ties
to the larger ``created_timestamp`` (null is oldest), then to the last row in plan order. Across runs and
partitions the online store's newer-wins write keeps the latest event time, so re-writing is harmless.

Safe to interrupt: the online store is written first and the state saved last, so a killed run followed
by a new run reads the same files again and ends in exactly the state one uninterrupted run gives.
Memory stays bounded: files are read in record batches of ``batch_rows`` and reduced one partition (one
day of one key bucket) at a time.

A snapshot whose data-quality verdict (``store.gates``) is ``failed`` is refused with ValidationFailedError;
one committed under the ``warn`` policy is materialized (a strict gate that fails never commits at all).

A limit of newer-wins: when a backfill replaces a window so that an entity's latest row disappears or gets
an older event time, the online store keeps the newer record it already has.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from online.keys import field_name
from online.store import OnlineStore
from signals.errors import QuasarError, RequestError, SchemaError, StoreError
from signals.signal import Signal
from signals.ufr.schema import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from store.arrow_types import restore_ufr_types, storage_schema
from store.gates import check_snapshot
from store.tables import PROP_FINGERPRINT, OfflineStore

_POSITION = "__quasar_position"


class MaterializeState(Protocol):
    """Where runs are recorded and the watermark is kept (``registry.Registry`` implements it)."""

    def get_state(self, key: str) -> dict[str, Any] | None: ...

    def set_state(self, key: str, value: dict[str, Any]) -> None: ...

    def start_run(self, *, signal: str, version: int, kind: str, params: dict[str, Any] | None = None) -> int: ...

    def finish_run(self, run_id: int, *, status: str, snapshot_id: int | None = None, rows: int | None = None,
                   details: dict[str, Any] | None = None) -> None: ...


@dataclass(frozen=True, kw_only=True)
class MaterializeResult:
    """What one materialization did. ``rows_written`` counts records not rejected as older than the stored
    ones; ``entities`` the distinct entities among the rows read; ``incremental`` whether an earlier run's
    state was there to start from."""

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


def state_key(signal: str, version: int) -> str:
    """The state key of a signal version's materialization watermark: ``materialize:<signal>@<version>``."""
    return f"materialize:{field_name(signal, version)}"


def materialize(*, signal: Signal, version: int, offline: OfflineStore, online: OnlineStore,
                state: MaterializeState, batch_rows: int = 100_000, progress: bool = False,
                full: bool = False) -> MaterializeResult:
    """Write the latest row per entity of ``signal`` v``version`` to ``online``, from where the last run stopped.

    ``full`` ignores the saved watermark and reads the whole current snapshot again (e.g. after the online
    store lost its data); newer-wins writes make that safe at any time.
    """
    if not signal.online:
        raise RequestError(f"signal {signal.name!r} is not an online signal: declare it with online=True to "
                           "materialize it")
    if not isinstance(batch_rows, int) or batch_rows <= 0:
        raise QuasarError(f"batch_rows must be a positive int, got {batch_rows!r}")
    started = time.monotonic()
    key = state_key(signal.name, version)
    saved = None if full else state.get_state(key)
    snapshot = offline.current_snapshot_id(signal.name, version)
    run_id = state.start_run(signal=signal.name, version=version, kind="materialize",
                             params={"batch_rows": batch_rows,
                                     "from_snapshot": saved.get("snapshot_id") if saved else None})
    try:
        result = _run(signal, version, offline, online, state, key, saved, snapshot, batch_rows, progress)
    except BaseException as exc:
        state.finish_run(run_id, status="failed", snapshot_id=snapshot,
                         details={"error": f"{type(exc).__name__}: {exc}"})
        if isinstance(exc, QuasarError) or not isinstance(exc, Exception):
            raise
        raise StoreError(f"materializing signal {signal.name} v{version} failed: {type(exc).__name__}: {exc}") \
            from exc
    rows_written, entities, rows_read, files_read = result
    state.finish_run(run_id, status="succeeded", snapshot_id=snapshot, rows=rows_written,
                     details={"entities": entities, "rows_read": rows_read, "files_read": files_read,
                              "incremental": saved is not None})
    return MaterializeResult(signal=signal.name, version=version, rows_written=rows_written, entities=entities,
                             snapshot_id=snapshot, incremental=saved is not None,
                             duration_s=time.monotonic() - started, rows_read=rows_read, files_read=files_read,
                             run_id=run_id)


def _run(signal: Signal, version: int, offline: OfflineStore, online: OnlineStore, state: MaterializeState,
         key: str, saved: dict[str, Any] | None, snapshot: int | None, batch_rows: int,
         progress: bool) -> tuple[int, int, int, int]:
    """(rows written, entities, rows read, files read) of one run; saves the state after writing."""
    if snapshot is None or (saved is not None and saved.get("snapshot_id") == snapshot):
        return 0, 0, 0, 0                                   # never backfilled, or nothing new
    _check_fingerprint(offline, signal, version)
    check_snapshot(offline, signal.name, version, snapshot)       # a snapshot marked as failing its gate: refused
    files = offline.plan_files(signal.name, version, snapshot_id=snapshot)
    covered = set(saved.get("files", [])) if saved else set()
    groups = files_to_read(files, covered)
    writer = _Writer(online, signal, version, batch_rows)
    with _bar(sum(len(g) for g in groups), f"materialize {signal.name}", progress) as bar:
        for group in groups:
            winners = None
            for path in group:
                for rows in _read_file(path, signal, batch_rows, writer):
                    winners = latest_per_entity(rows if winners is None else pa.concat_tables([winners, rows]),
                                                signal.entity.join_key)
                bar.update(1)
            if winners is not None:
                writer.add(winners)
        writer.flush()
    state.set_state(key, {"snapshot_id": snapshot, "files": sorted(files)})
    return writer.written, writer.entities(), writer.rows_read, sum(len(g) for g in groups)


def files_to_read(files: list[str], covered: set[str]) -> list[list[str]]:
    """The data files a run must read, grouped by partition (a file's folder), in plan order.

    A partition is read when it has a file not in ``covered``, and then whole, so the winner of a tie on
    the event time is the one a full run picks.
    """
    by_partition: dict[str, list[str]] = {}
    for path in files:
        by_partition.setdefault(os.path.dirname(path), []).append(path)
    return [group for group in by_partition.values() if any(p not in covered for p in group)]


def latest_per_entity(rows: pa.Table, join_key: str) -> pa.Table:
    """One row per join key: the latest event time, then the larger created time (null oldest), then the
    larger ``__quasar_position`` (the later row in plan order)."""
    if rows.num_rows <= 1:
        return rows
    # nulls sort last (Arrow's default, whatever the order): a null created_timestamp loses every tie
    order = pc.sort_indices(rows, sort_keys=[(join_key, "ascending"), (EVENT_TIMESTAMP, "descending"),
                                             (CREATED_TIMESTAMP, "descending"), (_POSITION, "descending")])
    keys = rows.column(join_key).take(order).combine_chunks()
    first = np.ones(len(keys), dtype=bool)
    first[1:] = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1)).to_numpy(zero_copy_only=False)
    return rows.take(order.filter(pa.array(first)))


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


def _read_file(path: str, signal: Signal, batch_rows: int, writer: _Writer) -> Iterator[pa.Table]:
    """Record batches of one data file in UFR types, each reduced to its latest row per entity."""
    stored = storage_schema(signal)
    target = pa.schema([*(pa.field(f.name, f.type) for f in stored), pa.field(_POSITION, pa.int64())])
    target = restore_ufr_types(target.empty_table(), signal.schema).schema
    parquet = _open(path)
    missing = [name for name in stored.names if name not in parquet.schema_arrow.names]
    if missing:
        raise StoreError(f"signal {signal.name}: data file {path} has no column(s) {missing}")
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=stored.names):
        table = restore_ufr_types(pa.Table.from_batches([batch]), signal.schema)
        n = table.num_rows
        position = pa.array(np.arange(writer.rows_read, writer.rows_read + n, dtype=np.int64))
        writer.rows_read += n
        columns = [_as_type(table.column(f.name), f.type, path) for f in target if f.name != _POSITION]
        columns.append(position)
        yield latest_per_entity(pa.Table.from_arrays(columns, schema=target), signal.entity.join_key)


def _as_type(column: pa.ChunkedArray, arrow_type: pa.DataType, path: str) -> pa.ChunkedArray:
    if column.type == arrow_type:
        return column
    try:
        return column.cast(arrow_type, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise StoreError(f"data file {path}: a column of type {column.type} does not read as {arrow_type}: "
                         f"{exc}") from exc


class _Writer:
    """Collects partitions' winners and writes them ``batch_rows`` at a time."""

    def __init__(self, online: OnlineStore, signal: Signal, version: int, batch_rows: int) -> None:
        self.online, self.signal, self.version, self.batch_rows = online, signal, version, batch_rows
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.written = 0
        self.rows_read = 0
        self.keys: list[pa.ChunkedArray] = []

    def add(self, winners: pa.Table) -> None:
        self.pending.append(winners)
        self.pending_rows += winners.num_rows
        if self.pending_rows >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        join_key = self.signal.entity.join_key
        rows = latest_per_entity(pa.concat_tables(self.pending), join_key)
        self.pending, self.pending_rows = [], 0
        self.keys.append(rows.column(join_key))
        self.written += self.online.write(self.signal, self.version, rows.drop_columns([_POSITION]))

    def entities(self) -> int:
        if not self.keys:
            return 0
        chunks = [c for column in self.keys for c in column.chunks]
        return int(pc.count_distinct(pa.chunked_array(chunks, type=self.keys[0].type)).as_py())


class _bar:
    """A tqdm bar over files, shown only when asked and stderr is a terminal."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=desc, unit="file", disable=not (enabled and sys.stderr.isatty()),
                         leave=False)

    def __enter__(self) -> Any:
        return self._bar

    def __exit__(self, *exc: object) -> None:
        self._bar.close()

