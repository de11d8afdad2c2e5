"""Garbage in the offline store: files no snapshot references, and snapshots past their retention.

A killed or failed commit can leave data files, manifests and metadata files under a table's folder that no
snapshot references. ``remove_orphans`` deletes them, but only files older than a cutoff: a writer that is still
running has written files it has not committed yet, and those must never be touched (the caller puts the cutoff
before the start of every live run it knows and an ``orphan_grace`` before now). ``expire_snapshots`` drops the
snapshots superseded before the retention, always keeping the current one and any the caller pins (a materialization watermark), so their files
can be collected next.

What a live snapshot needs is read from the table's metadata every time: the current and logged metadata
files, each snapshot's manifest list, its manifests, the live data and delete files they list, and statistics
files. Only files with Iceberg's own suffixes are candidates; nothing outside the table's folder is touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from quasar.signals.errors import StoreError
from quasar.signals.times import as_utc

#: The files pyiceberg writes under a table's folder; anything else there is left alone.
ICEBERG_SUFFIXES = (".parquet", ".avro", ".metadata.json", ".puffin", ".stats")


@dataclass(frozen=True, kw_only=True)
class GcResult:
    """What one collection did to one table: snapshots expired, orphan files removed (their paths) and kept."""

    table: str
    expired_snapshots: list[int] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)
    kept_snapshots: int = 0
    kept_young_orphans: int = 0                  # unreferenced, but younger than the cutoff: maybe in flight

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "expired_snapshots": self.expired_snapshots,
                "removed_files": len(self.removed_files), "kept_snapshots": self.kept_snapshots,
                "kept_young_orphans": self.kept_young_orphans}


def referenced_files(table: Any, *, without: Iterable[int] = ()) -> set[str]:
    """Every file (as its URI) a live snapshot or the table's metadata needs; ``without`` leaves out the
    snapshots about to be expired (a dry run's view)."""
    meta = table.metadata
    skip = {int(s) for s in without}
    refs: set[str] = {table.metadata_location, *(e.metadata_file for e in meta.metadata_log)}
    refs.update(s.statistics_path for s in meta.statistics if int(s.snapshot_id) not in skip)
    refs.update(s.statistics_path for s in meta.partition_statistics if int(s.snapshot_id) not in skip)
    manifests: set[str] = set()
    for snapshot in meta.snapshots:
        if int(snapshot.snapshot_id) in skip:
            continue
        refs.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            if manifest.manifest_path in manifests:
                continue
            manifests.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                refs.add(entry.data_file.file_path)
    return refs | manifests


def _filesystem(location: str) -> tuple[Any, str]:
    from pyarrow import fs

    try:
        filesystem, path = fs.FileSystem.from_uri(location)
    except Exception as exc:  # pyarrow raises ArrowInvalid for unknown schemes, OSError for unreachable ones
        raise StoreError(f"cannot open the table folder {location}: {type(exc).__name__}: {exc}") from exc
    return filesystem, path.rstrip("/")


def list_files(location: str) -> list[tuple[str, datetime]]:
    """Every Iceberg file under ``location`` (a table's folder URI), as ``(URI, modified time)``."""
    from pyarrow import fs

    filesystem, root = _filesystem(location)
    base = location.rstrip("/")
    try:
        infos = filesystem.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise StoreError(f"cannot list the table folder {location}: {exc}") from exc
    found = []
    for info in infos:
        if info.type != fs.FileType.File or not info.path.endswith(ICEBERG_SUFFIXES):
            continue
        uri = base + info.path[len(root):]
        mtime = info.mtime if info.mtime is not None else datetime.max
        found.append((uri, as_utc(mtime) if mtime is not datetime.max else mtime.replace(tzinfo=None)))
    return found


def delete_files(location: str, uris: Iterable[str]) -> list[str]:
    """Delete files of the table at ``location``; returns those deleted (gone already counts as deleted)."""
    filesystem, root = _filesystem(location)
    base = location.rstrip("/")
    deleted = []
    for uri in uris:
        if not uri.startswith(base + "/"):
            continue                                   # never outside the table's own folder
        try:
            filesystem.delete_file(root + uri[len(base):])
        except FileNotFoundError:
            pass
        except OSError:
            continue                                    # the next collection tries again
        deleted.append(uri)
    return deleted


def metadata_version(uri: str) -> int | None:
    """The version a metadata file's name starts with (``00003-<uuid>.metadata.json`` -> 3), or None."""
    name = uri.rsplit("/", 1)[-1]
    head = name.split("-", 1)[0]
    return int(head) if name.endswith(".metadata.json") and head.isdigit() else None


def stale_metadata(table: Any, listed: Iterable[str]) -> list[str]:
    """The metadata files among ``listed`` no commit can ever make current, whatever their age: unreferenced and
    numbered at or below the current version. A catalog commit writes version N+1 only on top of version N and
    swaps it in only while N is still current, so a file numbered N+1 or lower that lost that race (a commit or a
    table creation that failed after writing its file) stays garbage for good."""
    current = metadata_version(str(table.metadata_location))
    if current is None:
        return []
    refs = {table.metadata_location, *(e.metadata_file for e in table.metadata.metadata_log)}
    return [uri for uri in listed
            if uri not in refs and (v := metadata_version(uri)) is not None and v <= current]


def delete_stale_metadata(table: Any) -> list[str]:
    """Delete ``stale_metadata`` under the table's metadata folder; the files deleted."""
    location = str(table.location()).rstrip("/")
    listed = [uri for uri, _ in list_files(f"{location}/metadata")]
    return delete_files(location, stale_metadata(table, listed))


def remove_orphans(load: Callable[[], Any], *, older_than: datetime, keep: Iterable[str] = (),
                   without: Iterable[int] = (), dry_run: bool = False) -> tuple[list[str], int]:
    """Delete the files under the table's folder that no live snapshot references and that were last modified
    before ``older_than``; ``keep`` names files (URIs or local paths) to spare anyway. ``load()`` returns the
    table fresh. ``dry_run`` deletes nothing and reports what would go, as if ``without`` were expired.

    The folder is listed before the metadata is read, so a commit landing in between only adds references.
    Returns the files removed (or to remove) and the number of unreferenced files spared as too young.
    """
    table = load()
    location = str(table.location())
    listed = list_files(location)
    table = load()
    refs = referenced_files(table, without=without if dry_run else ()) | {_uri(k) for k in keep}
    cutoff = as_utc(older_than)
    orphans = [(uri, mtime) for uri, mtime in listed if uri not in refs]
    stale = set(stale_metadata(table, [uri for uri, _ in orphans]))
    old = [uri for uri, mtime in orphans if uri in stale or (mtime.tzinfo is not None and mtime < cutoff)]
    return (old if dry_run else delete_files(location, old)), len(orphans) - len(old)


def expirable(table: Any, *, older_than: datetime, keep: Iterable[int] = ()) -> list[int]:
    """The snapshots that stopped being current before ``older_than`` (their first child was committed then),
    except the current one, branch and tag heads, and ``keep``.

    Counting from when a snapshot was superseded, not from when it was committed, gives a reader that started
    on the current snapshot (a dataset, a materialization) the whole retention to finish, however old it is."""
    cutoff_ms = int(as_utc(older_than).timestamp() * 1000)
    current = table.current_snapshot()
    spared = {int(s) for s in keep} | {int(r.snapshot_id) for r in table.metadata.refs.values()}
    if current is not None:
        spared.add(int(current.snapshot_id))
    superseded: dict[int, int] = {}
    for s in table.metadata.snapshots:
        if s.parent_snapshot_id is not None:
            parent = int(s.parent_snapshot_id)
            superseded[parent] = min(superseded.get(parent, s.timestamp_ms), s.timestamp_ms)
    return [int(s.snapshot_id) for s in table.metadata.snapshots
            if superseded.get(int(s.snapshot_id), s.timestamp_ms) < cutoff_ms and int(s.snapshot_id) not in spared]


def expire_snapshots(load: Callable[[], Any], *, older_than: datetime, keep: Iterable[int] = (),
                     attempts: int = 5) -> list[int]:
    """Expire ``expirable`` snapshots (on a fresh read again when another writer commits first); their ids."""
    from quasar.store.commits import is_conflict

    keep = set(keep)
    for attempt in range(1, attempts + 1):
        table = load()
        ids = expirable(table, older_than=older_than, keep=keep)
        if not ids:
            return []
        try:
            table.maintenance.expire_snapshots().by_ids(ids).commit()
            return ids
        except Exception as exc:
            if not is_conflict(exc) or attempt == attempts:
                raise StoreError(f"expiring {len(ids)} snapshot(s) of {table.name()} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
    raise AssertionError("unreachable")


def collect(load: Callable[[], Any], *, expire_before: datetime | None, orphans_before: datetime,
            keep_snapshots: Iterable[int] = (), keep_files: Iterable[str] = (), dry_run: bool = False) -> GcResult:
    """Expire the table's snapshots older than ``expire_before`` (None: none), then remove the files no live
    snapshot needs that were last modified before ``orphans_before``; ``keep_*`` are pinned (e.g. by a
    materialization watermark)."""
    table = load()
    name = ".".join(table.name()) if isinstance(table.name(), tuple) else str(table.name())
    keep_snapshots = set(keep_snapshots)
    expired: list[int] = []
    if expire_before is not None:
        expired = (expirable(table, older_than=expire_before, keep=keep_snapshots) if dry_run
                   else expire_snapshots(load, older_than=expire_before, keep=keep_snapshots))
    removed, young = remove_orphans(load, older_than=orphans_before, keep=keep_files, without=expired,
                                    dry_run=dry_run)
    kept = len(load().metadata.snapshots) - (len(expired) if dry_run else 0)
    return GcResult(table=name, expired_snapshots=expired, removed_files=removed, kept_snapshots=kept,
                    kept_young_orphans=young)


def _uri(path: str) -> str:
    return path if "://" in path else f"file://{path}"
