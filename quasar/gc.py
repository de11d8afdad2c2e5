"""``quasar gc`` and the clean-up after each backfill: expire old snapshots, remove files nothing references.

What is kept, always:

* every snapshot younger than ``[offline] snapshot_retention`` (default 7 days), so a dataset built within it can
  be built again from the snapshots it recorded, and time travel within it works;
* the table's current snapshot (and any branch or tag head), however old;
* the snapshot a materialization watermark was saved at, and every file that watermark lists: the next
  incremental materialize reads the files a backfill replaced to correct the online store;
* every file younger than ``[offline] orphan_grace`` (default 1 hour) or than the start of a live run of the
  signal (one still holding its lease): a writer that has written files but not committed them yet is never
  hurt.

Everything else under a table's folder that no kept snapshot references (the data files, manifests and
metadata files of killed or failed commits, and those of expired snapshots) is removed. A backfill runs the
same collection, without expiring anything, on its own table after it commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from signals.durations import parse_duration
from signals.errors import ConfigError, NotFoundError
from signals.times import as_utc

if TYPE_CHECKING:
    from quasar.platform import Platform
    from store.gc import GcResult


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
    from online.materialize import state_key

    saved = platform.registry.get_state(state_key(name, version)) or {}
    snapshots = {int(saved["snapshot_id"])} if saved.get("snapshot_id") is not None else set()
    files = {str(f) for f in saved.get("files", [])} | {str(f) for f in saved.get("future", {})}
    return snapshots, files


def live_since(platform: Platform, name: str, *, exclude: int | None = None) -> datetime | None:
    """The start of the oldest run of ``name`` still holding its lease (other than ``exclude``), or None."""
    starts = [r.started_at for r in platform.registry.runs(name, limit=200)
              if r.status == "running" and r.id != exclude]
    return min(starts, default=None)


def collect_garbage(platform: Platform, signals: Sequence[str] | None = None, *, retention: timedelta | None = None,
                    grace: timedelta | None = None, expire: bool = True, dry_run: bool = False,
                    exclude_run: int | None = None, now: datetime | None = None) -> list[GcResult]:
    """Collect every offline table of ``signals`` (all registered signals by default), every version."""
    from store.gc import collect

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
    return results
