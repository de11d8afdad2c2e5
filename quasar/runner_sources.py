"""What changed in a signal's source since the runner last looked: the days whose input rows may differ.

A source's fingerprint is a set of *pieces*, each with the days its rows lie in (first and last day, from the
timestamp column), kept in the runner's state (``quasar.runner_state``):

* **Parquet**: one piece per file, named by its path, size and modification time; a new, changed or removed file
  marks the days of its rows (both its old and its new rows for a changed one). Only new or changed files are
  read, and only their timestamp column.
* **Iceberg table** (``Source.iceberg``) and **upstream signal** (``Source.signal``, its latest version's table): one
  piece per data file (and per delete file of a data file), its days from the file's timestamp bounds in the
  manifests (no data read). Each snapshot since the one last seen is compared with the one before it, except
  rewrites that keep the rows (quasar's compactions, Iceberg ``replace`` snapshots), so a compaction marks
  nothing. When the last seen snapshot is gone (expired), the files then and now are compared. A new version of
  the upstream signal marks every day.

A piece whose days cannot be told (no bounds, an unreadable file) marks every day; the backfill then reads
the file and names what is wrong with it. The first look at a source marks nothing: days computed before the
runner knew the source are taken as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quasar.runner_state import Change, Days
from quasar.signals.errors import StoreError
from quasar.signals.signal import Signal
from quasar.signals.source import Source
from quasar.signals.ufr.schema import EVENT_TIMESTAMP

if TYPE_CHECKING:
    from quasar.platform import Platform

_DAY_MICROS = 86_400_000_000
UNKNOWN = "?"                         # a piece whose days cannot be told: it marks every day
EVERY_DAY = Days.span(-(10**6), 10**6)
Piece = list[int] | str | None        # [first day, last day], UNKNOWN, or None (no rows)


@dataclass
class Scan:
    """A source as it is now: its fingerprint (``state``, kept by the runner), the days its rows lie in and the
    changes since the fingerprint it was compared with."""

    state: dict[str, Any]
    days: Days = field(default_factory=Days)
    changes: list[Change] = field(default_factory=list)
    note: str = ""                   # why the source has nothing to read (no files yet)


def scan_source(p: Platform, signal: Signal, previous: dict[str, Any] | None) -> Scan:
    """Fingerprint ``signal``'s source and compare it with ``previous`` (the state of the last look)."""
    source = signal.source
    if source.kind == "parquet":
        return _parquet(p, source, previous)
    if source.kind == "iceberg":
        assert source.table is not None
        try:
            table = p.catalog.load_table(source.table)
        except Exception as exc:
            raise StoreError(f"source {source.name}: cannot load Iceberg table {source.table}: {exc}") from exc
        return _iceberg(table, source.timestamp, {"kind": "iceberg", "table": source.table}, previous,
                        f"source {source.name} (Iceberg table {source.table})")
    assert source.upstream is not None
    up = p.registry.signal(source.upstream)
    key = {"kind": "signal", "upstream": up.name, "version": up.version}
    label = f"upstream {up.name} v{up.version}"
    if p.offline.current_snapshot_id(up.name, up.version) is None:
        return Scan(state={**key, "snapshot_id": None, "pieces": {}}, note=f"{label} has no computed days yet")
    if previous is not None and previous.get("kind") == "signal" and previous.get("version") != up.version:
        was = previous.get("version")
        scan = _iceberg(p.offline.table(up.name, up.version), EVENT_TIMESTAMP, key, None, label)
        scan.changes = [Change(EVERY_DAY, f"upstream {up.name} is now v{up.version} (was v{was})")]
        return scan
    return _iceberg(p.offline.table(up.name, up.version), EVENT_TIMESTAMP, key, previous, label)


def _same(previous: dict[str, Any] | None, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """``previous`` when it fingerprinted the same thing (else the look counts as the first)."""
    if previous is None or any(previous.get(k) != v for k, v in key.items()):
        return None
    return previous


def _days(pieces: Mapping[str, Piece]) -> Days:
    if any(v == UNKNOWN for v in pieces.values()):
        return EVERY_DAY
    return Days.of((v[0], v[1] + 1) for v in pieces.values() if isinstance(v, list))


def _piece_days(piece: Piece) -> Days:
    if piece == UNKNOWN:
        return EVERY_DAY
    return Days.span(piece[0], piece[1] + 1) if isinstance(piece, list) else Days()


# --- parquet ------------------------------------------------------------------------------------------------
def _parquet(p: Platform, source: Source, previous: dict[str, Any] | None) -> Scan:
    from quasar.store.source_checks import list_files

    assert source.path is not None
    path = Path(source.path).expanduser()
    if not path.is_absolute():
        path = p.root / path
    key = {"kind": "parquet", "path": str(path)}
    if not path.exists() or (path.is_dir() and not any(f.is_file() for f in path.rglob("*"))):
        return Scan(state={**key, "pieces": {}}, note=f"source {source.name}: no files at {source.path} yet")

    def show(f: Path) -> str:
        try:
            return str(f.relative_to(path))
        except ValueError:
            return str(f)

    old: dict[str, Piece] = dict((_same(previous, key) or {}).get("pieces", {}))
    pieces: dict[str, Piece] = {}
    for file in list_files(source, path, show).files:
        stat = file.stat()
        name = f"{show(file) if file != path else file.name}|{stat.st_size}|{stat.st_mtime_ns}"
        pieces[name] = old[name] if name in old else _file_days(file, source.timestamp)
    scan = Scan(state={**key, "pieces": pieces}, days=_days(pieces))
    if _same(previous, key) is None:
        return scan
    added = {n.rsplit("|", 2)[0]: n for n in pieces if n not in old}
    removed = {n.rsplit("|", 2)[0]: n for n in old if n not in pieces}
    for shown in sorted(added.keys() | removed.keys()):
        days = (_piece_days(pieces[added[shown]]) if shown in added else Days()) | \
               (_piece_days(old[removed[shown]]) if shown in removed else Days())
        what = "changed" if shown in added and shown in removed else "added" if shown in added else "removed"
        if days:
            scan.changes.append(Change(days, f"source {source.name}: {shown} {what}"))
    return scan


def _file_days(file: Path, timestamp: str) -> Piece:
    """The first and last day of a Parquet file's rows (its timestamp column alone is read)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from quasar.store.sources import normalize_timestamps

    try:
        table = normalize_timestamps(pq.read_table(file, columns=[timestamp]), timestamp)
    except Exception:  # not Parquet, no such column, not a timestamp: the backfill says what is wrong
        return UNKNOWN
    bounds = pc.min_max(table.column(timestamp).cast("int64"))
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    return None if lo is None else [lo // _DAY_MICROS, hi // _DAY_MICROS]


# --- iceberg ------------------------------------------------------------------------------------------------
def _iceberg(table: Any, timestamp: str, key: dict[str, Any], previous: dict[str, Any] | None,
             label: str) -> Scan:
    current = table.current_snapshot()
    now_id = None if current is None else int(current.snapshot_id)
    pieces = _table_pieces(table, now_id, timestamp)
    scan = Scan(state={**key, "snapshot_id": now_id, "pieces": pieces}, days=_days(pieces))
    previous = _same(previous, key)
    if previous is None or previous.get("snapshot_id") == now_id:
        return scan
    before_id = previous.get("snapshot_id")
    before: dict[str, Piece] = dict(previous.get("pieces", {}))
    chain = _since(table, current, before_id)
    if chain is None:                                      # the snapshot last seen is gone: compare files
        _diff(scan, before, pieces, f"{label}: files changed since snapshot {before_id}, which is gone")
        return scan
    for snapshot in chain:
        sid = int(snapshot.snapshot_id)
        after = pieces if sid == now_id else _table_pieces(table, sid, timestamp)
        if not _rewrite(snapshot):
            _diff(scan, before, after, f"{label}: snapshot {sid}{_what(snapshot)}")
        before = after
    return scan


def _since(table: Any, current: Any, before_id: int | None) -> list[Any] | None:
    """The snapshots after ``before_id`` up to ``current``, oldest first; None when ``before_id`` is not an
    ancestor (expired, or another history)."""
    from pyiceberg.table.snapshots import ancestors_of

    chain: list[Any] = []
    for snapshot in ancestors_of(current, table.metadata):
        if before_id is not None and snapshot.snapshot_id == before_id:
            return chain[::-1]
        chain.append(snapshot)
    return chain[::-1] if before_id is None else None


def _rewrite(snapshot: Any) -> bool:
    """Whether ``snapshot`` only moved rows to other files: a quasar compaction, or an Iceberg ``replace``."""
    from pyiceberg.table.snapshots import Operation

    from quasar.store.compaction import COMPACTION

    summary = snapshot.summary
    return summary is not None and (COMPACTION in summary.additional_properties
                                    or summary.operation == Operation.REPLACE)


def _what(snapshot: Any) -> str:
    summary = snapshot.summary
    window = summary.additional_properties.get("quasar.window") if summary is not None else None
    if window:
        start, end = (w[:10] for w in window.strip("[)").split(", "))
        return f" replaced [{start}, {end})"
    return f" ({summary.operation.value})" if summary is not None else ""


def _diff(scan: Scan, before: Mapping[str, Piece], after: Mapping[str, Piece], why: str) -> None:
    days = Days()
    for name in before.keys() ^ after.keys():
        days = days | _piece_days(before[name] if name in before else after[name])
    if days:
        scan.changes.append(Change(days, why))


def _table_pieces(table: Any, snapshot_id: int | None, timestamp: str) -> dict[str, Piece]:
    """Every data file (and delete file) of the snapshot with the days of its rows, from the manifests."""
    from pyiceberg.conversions import from_bytes

    if snapshot_id is None:
        return {}
    schema = table.schema()
    try:
        ts = schema.find_field(timestamp)
    except ValueError:
        ts = None
    pieces: dict[str, Piece] = {}
    for task in table.scan(snapshot_id=snapshot_id).plan_files():
        data = task.file
        piece: Piece = UNKNOWN
        if ts is not None and data.lower_bounds and data.upper_bounds:
            lo, hi = data.lower_bounds.get(ts.field_id), data.upper_bounds.get(ts.field_id)
            if lo is not None and hi is not None:
                first, last = from_bytes(ts.field_type, lo), from_bytes(ts.field_type, hi)
                if isinstance(first, int) and isinstance(last, int):     # timestamps: microseconds
                    piece = [first // _DAY_MICROS, last // _DAY_MICROS]
        if data.record_count == 0:
            piece = None
        pieces[str(data.file_path)] = piece
        for deletes in task.delete_files:
            pieces[f"{deletes.file_path} -> {data.file_path}"] = piece
    return pieces
