"""The offline store: one Iceberg table per signal version, written a window of whole days at a time.

Tables are ``<namespace>.<signal>__v<version>``, partitioned by ``day(event_timestamp)`` and
``bucket(N, join key)``, N chosen from the first write's rows unless fixed (``quasar.store.layout``).
``replace_window`` deletes a window and appends its new rows in one atomic
commit, so re-running a backfill is idempotent and a failed one leaves the previous snapshot current.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from quasar.signals.errors import NotFoundError, StoreError
from quasar.signals.signal import Signal
from quasar.signals.times import as_utc as utc
from quasar.signals.ufr.schema import EVENT_TIMESTAMP
from quasar.store.arrow_types import fix_pyiceberg_list_nulls, iceberg_schema, restore_ufr_types, to_storage
from quasar.store.commits import WRITE_ID, Write, commit, landed
from quasar.store.data_files import WrittenFile
from quasar.store.gc import delete_stale_metadata
from quasar.store.layout import DEFAULT_TARGET_FILE_BYTES, Layout
from quasar.store.replace import append as append_files
from quasar.store.replace import replace
from quasar.store.writer import write_rows

if TYPE_CHECKING:
    from quasar.store.compaction import CompactionResult

fix_pyiceberg_list_nulls()

PROP_SIGNAL = "quasar.signal"
PROP_VERSION = "quasar.version"
PROP_FINGERPRINT = "quasar.schema_fingerprint"
PROP_JOIN_KEY = "quasar.join_key"
_DAY_MICROS = 86_400_000_000
_NAME_MAPPING = "schema.name-mapping.default"
COVERED_UNTIL = "quasar.covered-until"      # snapshot summary: the running maximum of window ends
_COVERED = COVERED_UNTIL
_CREATE_ATTEMPTS = 3


def table_name(signal: str, version: int) -> str:
    """The Iceberg table name of one signal version: ``<signal>__v<version>``."""
    return f"{signal}__v{int(version)}"


def as_utc(value: datetime, what: str = "time") -> datetime:
    """A timezone-aware UTC datetime by the one time rule (``quasar.signals.times``); naive values are UTC."""
    if not isinstance(value, datetime):
        raise StoreError(f"{what} must be a datetime, got {value!r}")
    return utc(value)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _day_position(table: Any) -> tuple[int, int] | None:
    """``(spec id, position)`` of the ``day(event_timestamp)`` field in the table's current partition spec, or
    None when it has none (every file is then kept)."""
    from pyiceberg.transforms import DayTransform

    spec = table.spec()
    source = table.schema().find_field(EVENT_TIMESTAMP).field_id
    for position, spec_field in enumerate(spec.fields):
        if isinstance(spec_field.transform, DayTransform) and spec_field.source_id == source:
            return spec.spec_id, position
    return None


def _day_overlaps(data_file: Any, days: tuple[int, int], lo: datetime | None, hi: datetime | None) -> bool:
    """Whether a data file's day partition ``[day, day + 1)`` meets ``[lo, hi)``; True when it cannot tell (a file
    of another spec, no day value)."""
    spec_id, position = days
    if getattr(data_file, "spec_id", spec_id) != spec_id:
        return True
    try:
        day = data_file.partition[position]
    except (IndexError, TypeError, KeyError):
        return True
    if not isinstance(day, int):
        return True
    first = EPOCH + timedelta(days=day)
    return (hi is None or first < hi) and (lo is None or first + timedelta(days=1) > lo)


def time_filter(column: str, start: datetime | None, end: datetime | None, *, naive: bool = False) -> Any:
    """The pyiceberg row filter ``start <= column < end`` (either bound may be open).

    ``naive`` writes the bounds without an offset, for Iceberg ``timestamp`` (not ``timestamptz``) columns.
    """
    from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, LessThan

    def literal(value: datetime, what: str) -> str:
        utc = as_utc(value, what)
        return utc.replace(tzinfo=None).isoformat() if naive else utc.isoformat()

    parts: list[Any] = []
    if start is not None:
        parts.append(GreaterThanOrEqual(column, literal(start, "start")))  # type: ignore[call-arg, arg-type]
    if end is not None:
        parts.append(LessThan(column, literal(end, "end")))  # type: ignore[call-arg, arg-type]
    if not parts:
        return AlwaysTrue()
    return parts[0] if len(parts) == 1 else And(parts[0], parts[1])


def local_path(location: str) -> str:
    """A data file location as an engine opens it: ``file:///x`` -> ``/x``; other URIs unchanged."""
    return location[len("file://"):] if location.startswith("file://") else location


def _covered_until(table: Any) -> datetime | None:
    """The latest window end the table's current snapshot and its ancestors record, or None.

    Each commit records the running maximum (``quasar.covered-until``), so expired ancestors lose nothing."""
    from pyiceberg.table.snapshots import ancestors_of

    ends = []
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        summary = snapshot.summary
        if summary is None:
            continue
        covered = summary.get(_COVERED)
        if covered:
            ends.append(datetime.fromisoformat(str(covered)))
            break                                        # a running maximum: older ancestors add nothing
        window = summary.get("quasar.window")
        if window:
            ends.append(datetime.fromisoformat(window.strip("[)").split(", ")[1]))
    return max(ends, default=None)


def _summary(table: Any, write: Write, end: datetime | None) -> dict[str, str]:
    """The snapshot summary entries every commit carries: its write id, which attempt committed it (a retry after
    another writer's commit counts one more) and the covered-until maximum."""
    covered = _covered_until(table)
    if end is not None:
        covered = end if covered is None else max(covered, end)
    return {WRITE_ID: write.id, "quasar.attempt": str(write.attempts),
            **({_COVERED: covered.isoformat()} if covered is not None else {})}


class _DataFiles:
    """The data files of one write, written on its first attempt and reused by every retry (written again only
    when another writer changed the table's partition spec or schema in between, e.g. a compaction)."""

    def __init__(self, stored: pa.Table, write: Write, target_bytes: int) -> None:
        self.stored = stored
        self.write = write
        self.target_bytes = target_bytes
        self.files: list[Any] | None = None
        self.spec: tuple[int, int] | None = None

    def of(self, tx: Any, table: Any) -> list[Any]:
        """The write's data files for the transaction's table spec and schema."""
        spec = (table.metadata.default_spec_id, table.metadata.current_schema_id)
        if self.files is None or self.spec != spec:
            self.files = write_rows(tx.table_metadata, table.io, self.stored, self.write.uuid, self.target_bytes)
            self.spec = spec
        return self.files

    def append(self, tx: Any, table: Any, props: dict[str, str]) -> None:
        append_files(tx, self.of(tx, table), props)


def _window(signal: Signal, start: datetime, end: datetime) -> tuple[datetime, datetime, str]:
    """``start`` and ``end`` in UTC, refused unless end > start, and the window as text for messages."""
    start, end = as_utc(start, "start"), as_utc(end, "end")
    if end <= start:
        raise StoreError(f"signal {signal.name}: window end {end.isoformat()} is not after start "
                         f"{start.isoformat()}")
    return start, end, f"[{start.isoformat()}, {end.isoformat()})"


class OfflineStore:
    """Signal tables in an Iceberg catalog: create, replace a window atomically, read, plan files."""

    def __init__(self, catalog: Any, namespace: str = "signals", buckets: int | None = None,
                 target_file_bytes: int = DEFAULT_TARGET_FILE_BYTES) -> None:
        self.catalog = catalog
        self.namespace = namespace
        self.layout = Layout(buckets=buckets, target_file_bytes=target_file_bytes)

    def identifier(self, signal_name: str, version: int) -> tuple[str, str]:
        return (self.namespace, table_name(signal_name, version))

    # --- tables ---------------------------------------------------------------------------------------
    def ensure_table(self, signal: Signal, version: int, rows: pa.Table | None = None) -> Any:
        """The table of ``signal`` v``version``, created (with its namespace) when missing; a new table's bucket
        count comes from ``rows``, its first write (``quasar.store.layout``)."""
        from pyiceberg.exceptions import NoSuchTableError

        ident = self.identifier(signal.name, version)
        lost_race = False
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            try:
                table = self.catalog.load_table(ident)
                break
            except NoSuchTableError:
                pass
            except Exception as exc:
                raise StoreError(f"cannot load the offline table {'.'.join(ident)}: {exc}") from exc
            try:
                self.catalog.create_namespace_if_not_exists(self.namespace)
                table = self.catalog.create_table(ident, schema=iceberg_schema(signal),
                                                  partition_spec=self._partition_spec(signal, rows),
                                                  properties=self._properties(signal, version))
                break
            except Exception as exc:
                # a concurrent writer creating the namespace or the table at the same moment: load its table
                if attempt == _CREATE_ATTEMPTS:
                    raise StoreError(f"cannot create the offline table {'.'.join(ident)}: {exc}") from exc
                lost_race = True
        if lost_race:
            with contextlib.suppress(Exception):         # the metadata file our creation wrote is garbage now
                delete_stale_metadata(table)
        self._check_fingerprint(table, signal, version)
        return table

    def table(self, signal_name: str, version: int) -> Any:
        """The existing table of ``signal_name`` v``version``; NotFoundError if it was never backfilled."""
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        ident = self.identifier(signal_name, version)
        try:
            return self.catalog.load_table(ident)
        except (NoSuchTableError, NoSuchNamespaceError) as exc:
            raise NotFoundError(f"signal {signal_name} v{version} has no offline table yet: "
                                f"run quasar backfill {signal_name}") from exc
        except Exception as exc:
            raise StoreError(f"cannot load the offline table {'.'.join(ident)}: {exc}") from exc

    def current_snapshot_id(self, signal_name: str, version: int) -> int | None:
        """The table's current snapshot id; None when the table or its first snapshot does not exist yet."""
        try:
            table = self.table(signal_name, version)
        except NotFoundError:
            return None
        snapshot = table.current_snapshot()
        return None if snapshot is None else int(snapshot.snapshot_id)

    def backfilled_until(self, signal_name: str, version: int) -> datetime | None:
        """The latest end of a window backfilled into the table (from its snapshots' summaries), or None.

        A backfill uses it to recompute the later days an aggregation's windows reach, as far as they exist."""
        try:
            table = self.table(signal_name, version)
        except NotFoundError:
            return None
        return _covered_until(table)

    # --- writing --------------------------------------------------------------------------------------
    def replace_window(self, signal: Signal, version: int, rows: pa.Table, start: datetime, end: datetime, *,
                       properties: Mapping[str, str] | None = None) -> int | None:
        """Delete every row with ``start <= event_timestamp < end`` and append ``rows``, in one commit.

        ``rows`` (UFR or storage types) must all lie in the window. ``properties`` go into the snapshot's
        summary (e.g. the data-quality verdict). Returns the new snapshot id. Another writer committing first
        (a concurrent backfill, a push) makes it commit again on that writer's snapshot (``quasar.store.commits``).
        """
        start, end, window = _window(signal, start, end)
        if EVENT_TIMESTAMP not in rows.column_names:
            raise StoreError(f"signal {signal.name}: rows to store have no {EVENT_TIMESTAMP} column")
        stored = to_storage(rows, signal)
        self._check_rows(signal, stored, start, end)
        write = Write()
        files = _DataFiles(stored, write, self.layout.target_file_bytes)

        def build(table: Any, tx: Any) -> None:
            props = {**(properties or {}), "quasar.window": window, "quasar.rows": str(stored.num_rows),
                     **_summary(table, write, end)}
            replace(tx, table.io, time_filter(EVENT_TIMESTAMP, start, end), files.of(tx, table), props)

        return self._commit(signal, version, build, write, f"writing the window {window} to", rows=stored)

    def append(self, signal: Signal, version: int, rows: pa.Table) -> int | None:
        """Append ``rows`` (UFR or storage types) in one commit, deleting nothing; returns the new snapshot id.

        Used for pushed rows kept offline, so streaming signals stay point-in-time correct offline.
        """
        if EVENT_TIMESTAMP not in rows.column_names:
            raise StoreError(f"signal {signal.name}: rows to store have no {EVENT_TIMESTAMP} column")
        if rows.num_rows == 0:
            return self.current_snapshot_id(signal.name, version)
        stored = to_storage(rows, signal)
        write = Write()
        files = _DataFiles(stored, write, self.layout.target_file_bytes)

        def build(table: Any, tx: Any) -> None:
            props = {"quasar.append": "push", "quasar.rows": str(stored.num_rows), **_summary(table, write, None)}
            files.append(tx, table, props)

        return self._commit(signal, version, build, write, f"appending {stored.num_rows} rows to", rows=stored)

    def replace_window_files(self, signal: Signal, version: int, files: Sequence[WrittenFile], start: datetime,
                             end: datetime, *, properties: Mapping[str, str] | None = None,
                             table: Any | None = None) -> int | None:
        """``replace_window`` for Parquet files another writer (the Spark engine) put under the table's location.

        Each file holds rows of one ``(day, bucket)`` partition, all in ``[start, end)``, with the table's column
        names (field ids are optional: the table gets a name mapping). One commit deletes the window and adds
        the files with statistics read from their footers; if it fails the files are not part of any snapshot
        and the previous snapshot stays current. Returns the new snapshot id. ``table``: the table as the writer
        loaded it (``ensure_table``) before writing, for the first attempt (no second load; a commit another
        writer made in between is met by the retry on a fresh load).
        """
        from quasar.store.data_files import data_files

        start, end, window = _window(signal, start, end)
        write = Write()

        def build(table: Any, tx: Any) -> None:
            built = data_files(table, files)
            rows = sum(int(f.record_count) for f in built)
            props = {**(properties or {}), "quasar.window": window, "quasar.rows": str(rows),
                     **_summary(table, write, end)}
            if table.metadata.name_mapping() is None:
                tx.set_properties(**{_NAME_MAPPING: table.schema().name_mapping.model_dump_json()})
            replace(tx, table.io, time_filter(EVENT_TIMESTAMP, start, end), built, props)

        return self._commit(signal, version, build, write,
                            f"committing {len(files)} written file(s) for the window {window} to", table=table)

    def location(self, signal: Signal, version: int, rows: pa.Table | None = None) -> str:
        """The table's base location (a URI, e.g. ``file:///warehouse/signals.db/x__v1``), creating the table
        (laid out for ``rows``, the first write) when missing."""
        return str(self.ensure_table(signal, version, rows).location())

    def _commit(self, signal: Signal, version: int, build: Callable[[Any, Any], None], write: Write,
                what: str, rows: pa.Table | None = None, table: Any | None = None) -> int | None:
        """Stage ``build(table, tx)`` on the signal version's table (created if missing) and commit it; when
        another writer commits first, build and commit again on that writer's snapshot. Returns the new snapshot
        id. On failure the write's files are removed and a StoreError names the table."""
        loaded = [table if table is not None else self.ensure_table(signal, version, rows)]   # no second load
        name = ".".join(self.identifier(signal.name, version))

        def fail(exc: BaseException, conflict: bool) -> StoreError:
            if conflict:
                return StoreError(f"signal {signal.name} v{version}: {what} {name} failed: other writers kept "
                                  f"committing to the table at the same time ({write.attempts} attempts); run it "
                                  f"again ({type(exc).__name__}: {exc})")
            return StoreError(f"signal {signal.name} v{version}: {what} {name} failed: {type(exc).__name__}: {exc}")

        committed = commit(lambda: loaded.pop() if loaded else self.table(signal.name, version), build, write,
                           fail=fail)
        return landed(committed, write.id)

    # --- reading --------------------------------------------------------------------------------------
    def read(self, signal: Signal, version: int, *, start: datetime | None = None, end: datetime | None = None,
             columns: Sequence[str] | None = None, snapshot_id: int | None = None) -> pa.Table:
        """Rows of ``signal`` v``version`` with ``start <= event_timestamp < end``, in UFR types.

        The time range is a row filter, so pyiceberg prunes day partitions and files by their statistics.
        """
        table = self.table(signal.name, version)
        self._check_fingerprint(table, signal, version)
        names = [f.name for f in table.schema().fields]
        selected: tuple[str, ...] = ("*",)
        if columns is not None:
            missing = [c for c in columns if c not in names]
            if missing:
                raise StoreError(f"signal {signal.name} v{version} has no column(s) {missing}; "
                                 f"its columns: {', '.join(names)}")
            selected = tuple(dict.fromkeys(columns))
        scan = self._scan(table, signal.name, version, start, end, snapshot_id, selected)
        try:
            result = scan.to_arrow()
        except Exception as exc:
            raise StoreError(f"reading signal {signal.name} v{version} failed: {type(exc).__name__}: {exc}") from exc
        if columns is not None:
            result = result.select(list(selected))
        key = signal.entity.join_key
        if key in result.column_names and result.schema.field(key).type != signal.entity.arrow_key_type:
            result = result.set_column(result.schema.get_field_index(key), key,
                                       result.column(key).cast(signal.entity.arrow_key_type))
        return restore_ufr_types(result, signal.schema)

    def plan_files(self, signal_name: str, version: int, *, start: datetime | None = None,
                   end: datetime | None = None, snapshot_id: int | None = None) -> list[str]:
        """Paths of the Parquet data files a scan of the window reads (local files without ``file://``).

        The store writes copy-on-write only, so the files alone hold the table's rows; a table with delete
        files (written by another tool) is refused rather than read wrongly.
        """
        table = self.table(signal_name, version)
        # No row filter: pyiceberg evaluates a filter's residual file by file in Python (0.44 s for a table
        # of 480 files, 12x the whole scan planning); the window is pruned by each file's day partition
        # instead, which keeps every file that may hold a row of the window.
        scan = self._scan(table, signal_name, version, None, None, snapshot_id, ("*",))
        lo = None if start is None else as_utc(start, "start")
        hi = None if end is None else as_utc(end, "end")
        days = _day_position(table) if lo is not None or hi is not None else None
        paths = []
        for task in scan.plan_files():
            if task.delete_files:
                raise StoreError(f"signal {signal_name} v{version}: data file {task.file.file_path} has delete "
                                 "files (merge-on-read); compact the table before reading its files directly")
            if days is not None and not _day_overlaps(task.file, days, lo, hi):
                continue
            paths.append(local_path(task.file.file_path))
        return sorted(paths)

    def compact(self, signal_name: str, version: int, *, dry_run: bool = False, min_files: int = 2,
                properties: Mapping[str, str] | None = None) -> CompactionResult:
        """Rewrite the table's small files into the layout its data calls for, in one commit
        (``quasar.store.compaction``); ``dry_run`` only plans."""
        from quasar.store.compaction import compact_table

        self.table(signal_name, version)                  # NotFoundError before anything else
        return compact_table(lambda: self.table(signal_name, version), self.layout, min_files=min_files,
                             dry_run=dry_run, properties=dict(properties or {}))

    def bucket_count(self, signal_name: str, version: int) -> int | None:
        """N of the table's ``bucket(N, join key)`` partition field (None if it has none)."""
        from pyiceberg.transforms import BucketTransform

        table = self.table(signal_name, version)
        for spec_field in table.spec().fields:
            if isinstance(spec_field.transform, BucketTransform):
                return int(spec_field.transform.num_buckets)
        return None

    # --- helpers --------------------------------------------------------------------------------------
    def _scan(self, table: Any, name: str, version: int, start: datetime | None, end: datetime | None,
              snapshot_id: int | None, selected: tuple[str, ...]) -> Any:
        if snapshot_id is not None and table.snapshot_by_id(snapshot_id) is None:
            raise NotFoundError(f"signal {name} v{version} has no snapshot {snapshot_id}")
        return table.scan(row_filter=time_filter(EVENT_TIMESTAMP, start, end), selected_fields=selected,
                          snapshot_id=snapshot_id)

    def _partition_spec(self, signal: Signal, rows: pa.Table | None) -> Any:
        from pyiceberg.partitioning import PartitionField, PartitionSpec
        from pyiceberg.transforms import BucketTransform, DayTransform

        key = signal.entity.join_key
        return PartitionSpec(
            PartitionField(source_id=2, field_id=1000, transform=DayTransform(), name=f"{EVENT_TIMESTAMP}_day"),
            PartitionField(source_id=1, field_id=1001, transform=BucketTransform(self.layout.buckets_for_rows(rows)),
                           name=f"{key}_bucket"),
        )

    def _properties(self, signal: Signal, version: int) -> dict[str, str]:
        return {PROP_SIGNAL: signal.name, PROP_VERSION: str(int(version)),
                PROP_FINGERPRINT: signal.schema.fingerprint_hex, PROP_JOIN_KEY: signal.entity.join_key}

    def _check_fingerprint(self, table: Any, signal: Signal, version: int) -> None:
        stored = table.properties.get(PROP_FINGERPRINT)
        if stored is not None and stored != signal.schema.fingerprint_hex:
            raise StoreError(f"signal {signal.name} v{version}: its offline table was created for schema "
                             f"{stored}, but the signal's schema is {signal.schema.fingerprint_hex}")

    def check_window_rows(self, signal: Signal, stored: pa.Table, start: datetime, end: datetime) -> None:
        """Refuse storage-typed rows with a null key or time, or a time outside ``[start, end)``."""
        self._check_rows(signal, stored, as_utc(start, "start"), as_utc(end, "end"))

    @staticmethod
    def _check_rows(signal: Signal, stored: pa.Table, start: datetime, end: datetime) -> None:
        key = signal.entity.join_key
        for name in (key, EVENT_TIMESTAMP):
            nulls = stored.column(name).null_count
            if nulls:
                raise StoreError(f"signal {signal.name}: {nulls} row(s) have a null {name}")
        if stored.num_rows == 0:
            return
        bounds = pc.min_max(stored.column(EVENT_TIMESTAMP))
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low < start or high >= end:
            raise StoreError(f"signal {signal.name}: rows to store have {EVENT_TIMESTAMP} from {low.isoformat()} "
                             f"to {high.isoformat()}, outside the window [{start.isoformat()}, {end.isoformat()})")
