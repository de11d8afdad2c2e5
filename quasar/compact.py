"""``quasar compact`` and the compaction after each backfill (``quasar.store.compaction`` does the rewriting).

``compact_signals`` compacts every offline table (every version) of the named signals, each in one atomic commit,
and records each compaction in the run log (kind ``compact``), so a killed one is seen by the next backfill's
garbage collection (``quasar.gc.collect_after``), which removes the files it wrote.

After a backfill, ``compact_after`` runs the same planner on the version just written, with a higher bar: it
merges only partitions holding at least ``AUTO_MIN_FILES`` files, and re-buckets only a table small enough to
rewrite quickly (``AUTO_MAX_REWRITE_TARGETS`` target files' worth); a larger table that needs it is left to an
explicit ``quasar compact`` (the plan is logged). A failure there is logged, never the backfill's failure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from quasar.signals.errors import NotFoundError

if TYPE_CHECKING:
    from quasar.platform import Platform
    from quasar.store.compaction import CompactionResult

AUTO_MAX_REWRITE_TARGETS = 4           # after a backfill, re-bucket only tables of at most 4 target files' size
_log = logging.getLogger("quasar")


def compact_signals(platform: Platform, signals: Sequence[str] | None = None, *, dry_run: bool = False,
                    versions: Sequence[int] | None = None) -> list[CompactionResult]:
    """Compact the offline tables of ``signals`` (all registered signals by default), every version that has a
    table (or only ``versions``)."""
    names = list(signals) if signals else [sv.name for sv in platform.registry.signals()]
    results = []
    for name in names:
        for sv in platform.registry.versions(name):
            if versions is not None and sv.version not in versions:
                continue
            try:
                platform.offline.table(name, sv.version)
            except NotFoundError:
                continue                                  # never backfilled: nothing to compact
            results.append(_one(platform, name, sv.version, dry_run=dry_run))
    return results


def _one(platform: Platform, name: str, version: int, *, dry_run: bool, min_files: int = 2) -> CompactionResult:
    if dry_run:
        return platform.offline.compact(name, version, dry_run=True, min_files=min_files)
    run = platform.registry.start_run(signal=name, version=version, kind="compact", params={})
    try:
        result = platform.offline.compact(name, version, min_files=min_files)
    except BaseException as exc:
        platform.registry.finish_run(run, status="failed", details={"error": f"{type(exc).__name__}: {exc}"})
        raise
    platform.registry.finish_run(run, status="succeeded", snapshot_id=result.snapshot_id, rows=result.rows,
                                 details={"compaction": result.to_dict()})
    return result


def compact_after(platform: Platform, name: str, version: int) -> CompactionResult | None:
    """After a backfill of ``name`` v``version``: compact its table when it has many small files (see above)."""
    from quasar.store.compaction import AUTO_MIN_FILES, plan_compaction

    try:
        plan = plan_compaction(platform.offline.table(name, version), platform.offline.layout,
                               min_files=AUTO_MIN_FILES)
        if not plan.needed:
            return None
        if plan.rebucket and plan.bytes > AUTO_MAX_REWRITE_TARGETS * platform.offline.layout.target_file_bytes:
            _log.info("signal %s v%s: %s; the table is too large to rewrite after a backfill: run quasar compact %s",
                      name, version, plan.reason, name)
            return None
        return _one(platform, name, version, dry_run=False, min_files=AUTO_MIN_FILES)
    except Exception as exc:  # the backfill is committed; the table stays readable as it is
        _log.warning("compacting %s v%s after the backfill failed: %s", name, version, exc)
        return None


def table_layouts(platform: Platform, name: str) -> list[dict[str, object]]:
    """Each offline table of ``name`` (every version that has one): files, bytes, key buckets, and what
    ``quasar compact`` would do to it (None: nothing), from its manifests alone, for ``quasar describe``."""
    from quasar.store.compaction import plan_compaction

    out: list[dict[str, object]] = []
    for sv in platform.registry.versions(name):
        try:
            table = platform.offline.table(name, sv.version)
        except NotFoundError:
            continue
        plan = plan_compaction(table, platform.offline.layout)
        out.append({"version": sv.version, "files": plan.files, "bytes": plan.bytes, "buckets": plan.buckets,
                    "compaction": plan.reason if plan.needed else None})
    return out
