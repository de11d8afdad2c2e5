"""``quasar gc`` and the clean-up after each backfill: expire old snapshots, remove files nothing references.

What is kept, always:

* every snapshot that was still current within ``[offline] snapshot_retention`` (default 7 days), so a dataset
  built within it can be built again from the snapshots it recorded, a reader that started on the current
  snapshot has the whole retention to finish, and time travel within it works;
* the table's current snapshot (and any branch or tag head), however old;
* the snapshot a materialization watermark was saved at, and every file that watermark lists: the next
  incremental materialize reads the files a backfill replaced to correct the online store;
* every file younger than ``[offline] orphan_grace`` (default 1 hour) or than the start of a live run of the
  signal (one still holding its lease): a writer that has written files but not committed them yet is never
  hurt.

Everything else under a table's folder that no kept snapshot references (the data files, manifests and
metadata files of killed or failed commits, and those of expired snapshots) is removed. After a backfill
commits, the same collection runs (without expiring anything) on the signal's tables when the run log says a run
of the signal may have left files since the last collection: one that failed, was abandoned or is still running
(``collect_after``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from quasar.signals.durations import parse_duration
from quasar.signals.errors import ConfigError, NotFoundError
from quasar.signals.times import as_utc

if TYPE_CHECKING:
    from quasar.platform import Platform
    from quasar.store.gc import GcResult


def duration(value: str, what: str) -> timedelta:
    """A duration setting (``"7d"``, ``"1h"``), or a ConfigError naming it."""
    try:
        parsed = parse_duration(value, what)
    except Exception as exc:
        raise ConfigError(str(exc)) from exc
    assert parsed is not None
    return parsed


def pins(platform: Platform, name: str, version: int) -> tuple[set[int], set[str]]:
    """The snapshot ids and files a saved materialization watermark of ``name`` v``version`` needs."""
    from quasar.online.materialize import state_key

    saved = platform.registry.get_state(state_key(name, version)) or {}
    snapshots = {int(saved["snapshot_id"])} if saved.get("snapshot_id") is not None else set()
    files = {str(f) for f in saved.get("files", [])} | {str(f) for f in saved.get("future", {})}
    return snapshots, files


def live_since(platform: Platform, name: str, *, exclude: int | None = None) -> datetime | None:
    """The start of the oldest run of ``name`` still holding its lease (other than ``exclude``), or None."""
    starts = [r.started_at for r in platform.registry.runs(name, limit=200)
              if r.status == "running" and r.id != exclude]
    return min(starts, default=None)


def state_key(name: str) -> str:
    """Where the last collection of ``name``'s tables remembers its cutoff: every orphan older was removed."""
    return f"gc:{name}"


def needs_collection(platform: Platform, name: str, *, exclude: int | None = None) -> bool:
    """Whether a run of ``name`` that did not succeed may have left files the last collection did not see: its
    last sign of life (end, heartbeat or start) plus a lease is after that collection's cutoff."""
    saved = platform.registry.get_state(state_key(name)) or {}
    clean_before = datetime.fromisoformat(saved["clean_before"]) if saved.get("clean_before") else None
    lease = timedelta(seconds=platform.registry.run_lease_s)
    for run in platform.registry.runs(name, limit=50):
        if run.id == exclude or run.status == "succeeded":
            continue
        last = run.finished_at or run.heartbeat_at or run.started_at
        if clean_before is None or last + lease >= clean_before:
            return True
    return False


def collect_after(platform: Platform, name: str, run_id: int | None) -> list[GcResult]:
    """After a backfill of ``name``: collect its tables' orphans (no expiry) if a failed, abandoned or other
    running run of it may have left some (``needs_collection``)."""
    if not needs_collection(platform, name, exclude=run_id):
        return []
    return collect_garbage(platform, [name], expire=False, exclude_run=run_id)


def collect_garbage(platform: Platform, signals: Sequence[str] | None = None, *, retention: timedelta | None = None,
                    grace: timedelta | None = None, expire: bool = True, dry_run: bool = False,
                    exclude_run: int | None = None, now: datetime | None = None) -> list[GcResult]:
    """Collect every offline table of ``signals`` (all registered signals by default), every version."""
    from quasar.store.gc import collect

    off = platform.config.offline
    retention = retention if retention is not None else duration(off.snapshot_retention,
                                                                   "[offline] snapshot_retention")
    grace = grace if grace is not None else duration(off.orphan_grace, "[offline] orphan_grace")
    now = as_utc(now or datetime.now().astimezone())
    names = list(signals) if signals else [sv.name for sv in platform.registry.signals()]
    results = []
    for name in names:
        versions = platform.registry.versions(name)
        live = live_since(platform, name, exclude=exclude_run)
        cutoff = min(now - grace, live) if live is not None else now - grace
        for sv in versions:
            try:
                platform.offline.table(name, sv.version)
            except NotFoundError:
                continue                                  # never backfilled: no table, no garbage
            keep_snapshots, keep_files = pins(platform, name, sv.version)

            def load(n: str = name, v: int = sv.version) -> Any:
                return platform.offline.table(n, v)

            results.append(collect(load, expire_before=now - retention if expire else None, orphans_before=cutoff,
                                   keep_snapshots=keep_snapshots, keep_files=keep_files, dry_run=dry_run))
        if not dry_run:
            platform.registry.set_state(state_key(name), {"clean_before": cutoff.isoformat()})
    return results
