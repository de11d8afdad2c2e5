"""``quasar delete SIGNAL[@VERSION]``: what a deletion removes (shown before the confirmation), and removing it.

A version's footprint is its registry rows (``quasar.registry.deletion``: version, lineage, promotion, runs,
the state it owns: materialization watermark, runner state, catalog statistics and report), its Iceberg table and quarantine table with their files, and its online field on
every entity hash. ``plan_delete`` reads them all and refuses what the registry would refuse (another signal
reads it; a run of it is live) before anything is touched; ``delete`` then removes the online fields first,
the tables next and the registry rows last, so an interrupted deletion leaves the registry naming what is left
and can simply be run again (a missing table or field is nothing to remove).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from quasar.signals.errors import QuasarError, StoreError

if TYPE_CHECKING:
    from quasar.platform import Platform

_BATCH = 1000


@dataclass(frozen=True, kw_only=True)
class VersionFootprint:
    """What one signal version holds: its offline tables (rows; None when absent) and online records."""

    version: int
    table: str                                     # namespace.name of its Iceberg table
    rows: int | None                               # None: the table does not exist
    quarantine: str | None                         # its quarantine table, where one exists
    online: int | None                             # entities holding a record online; None: not online


@dataclass(frozen=True, kw_only=True)
class DeletePlan:
    signal: str
    versions: list[VersionFootprint]
    everything: bool                               # every version: the signal itself goes
    runs: int

    @property
    def label(self) -> str:
        return f"{self.signal} {', '.join(f'v{v.version}' for v in self.versions)}"

    def lines(self) -> list[str]:
        """What will go, for people, one line per store."""
        out = [f"delete {self.label}{' (every version: the signal goes)' if self.everything else ''}:",
               f"  registry: {len(self.versions)} version(s), {self.runs} run(s), lineage and state"]
        for v in self.versions:
            rows = "no table" if v.rows is None else f"{v.rows:,} row(s)"
            extra = f", and {v.quarantine}" if v.quarantine else ""
            out.append(f"  offline:  {v.table} ({rows}){extra}")
            if v.online is not None:
                out.append(f"  online:   {v.online:,} online record(s) of v{v.version}")
        return out


def plan_delete(platform: Platform, name: str, version: int | None) -> DeletePlan:
    """What deleting ``name`` (every version, or ``version``) removes; QuasarError when it would be refused."""
    from quasar.registry.deletion import refusal

    registry = platform.registry
    every = registry.versions(name)                # NotFoundError names the signals
    chosen = [registry.signal(name, version)] if version is not None else every
    latest = every[-1].version
    numbers = [sv.version for sv in chosen]
    reading = registry.readers(name) if latest in numbers else []
    if reading:
        raise QuasarError(refusal(name, latest, reading))
    bound = _bound_to(platform, name, numbers)
    if bound:
        raise QuasarError(f"cannot delete {name} v{', v'.join(map(str, numbers))}: read by {', '.join(bound)}; "
                          "register the service again once another version serves (a new service version with "
                          "new pins), or save the bundle again, then delete")
    runs = [r for r in registry.runs(name, limit=100_000) if r.version in numbers]
    live = [r.id for r in runs if r.status == "running"]
    if live:
        raise QuasarError(refusal(name, latest, [], live))
    footprints = [_footprint(platform, sv.signal, sv.version) for sv in chosen]
    return DeletePlan(signal=name, versions=footprints, everything=len(chosen) == len(every), runs=len(runs))


def _bound_to(platform: Platform, name: str, versions: list[int]) -> list[str]:
    """The latest feature-service versions and the model bundles that read these versions of ``name``: a
    deletion would take their inputs away."""
    from quasar.describe_features import usage

    found = usage(platform.registry, platform.config.path(platform.config.serving.models))
    users: list[str] = []
    for v in versions:
        users += [f"feature service {s}@{sv} (pinned to v{v})" for s, sv, latest in found.services.get((name, v), [])
                  if latest]
        users += [f"model bundle {b} (reads v{v})" for b in found.bundles.get((name, v), [])]
    return list(dict.fromkeys(users))


def delete(platform: Platform, plan: DeletePlan) -> None:
    """Remove what ``plan`` lists: online fields, then tables, then registry rows (and the state they own)."""
    for v in plan.versions:
        if v.online is not None:
            _delete_online(platform, plan.signal, v.version)
        for table in (v.table, v.quarantine):
            if table is not None:
                _drop_table(platform, table)
    platform.registry.delete_versions(plan.signal, [v.version for v in plan.versions],
                                      state_keys=owned_state_keys(platform, plan))


def owned_state_keys(platform: Platform, plan: DeletePlan) -> list[str]:
    """The registry state the deleted versions own: each version's materialization watermark, runner state
    (``quasar.runner_state``) and catalog statistics (``quasar.ui.stats``); with every version, the gc cutoff
    and the catalog's last consistency report (with one version, that report when it was of that version)."""
    from quasar.gc import state_key as gc_key
    from quasar.online.materialize import state_key
    from quasar.runner_state import SignalState
    from quasar.ui.catalog import report_key
    from quasar.ui.stats import state_key as stats_key

    numbers = [v.version for v in plan.versions]
    keys = [k for n in numbers for k in (state_key(plan.signal, n), SignalState.key(plan.signal, n),
                                         stats_key(plan.signal, n))]
    report = report_key("consistency", plan.signal)
    if plan.everything:
        keys += [gc_key(plan.signal), report]
    elif (platform.registry.get_state(report) or {}).get("version") in numbers:
        keys.append(report)
    return keys


def _footprint(platform: Platform, signal: Any, version: int) -> VersionFootprint:
    from quasar.store.quarantine import quarantine_identifier

    ident = platform.offline.identifier(signal.name, version)
    quarantine = quarantine_identifier(platform.offline, signal.name, version)
    online = None
    if signal.online:
        online = sum(len(batch) for batch in platform.online_store.scan(signal, version, count=_BATCH))
    return VersionFootprint(version=version, table=".".join(ident), rows=_rows(platform, ident),
                            quarantine=".".join(quarantine) if _exists(platform, quarantine) else None,
                            online=online)


def _exists(platform: Platform, ident: tuple[str, str]) -> bool:
    try:
        return bool(platform.catalog.table_exists(ident))
    except Exception as exc:
        raise StoreError(f"cannot look up the offline table {'.'.join(ident)}: {exc}") from exc


def _rows(platform: Platform, ident: tuple[str, str]) -> int | None:
    if not _exists(platform, ident):
        return None
    snapshot = platform.catalog.load_table(ident).current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return 0
    return int(snapshot.summary["total-records"] or 0)


def _delete_online(platform: Platform, name: str, version: int) -> None:
    """Delete the version's field from every entity hash holding it (``OnlineStore.mirror``'s absent keys)."""
    import pyarrow as pa

    signal = platform.registry.signal(name, version).signal
    store = platform.online_store
    for batch in list(store.scan(signal, version, count=_BATCH)):
        store.mirror(signal, version, pa.table({}), absent=batch)


def _drop_table(platform: Platform, table: str) -> None:
    """Drop the table and its files (pyiceberg's purge); on a local warehouse its folder too, so files no
    snapshot referenced (a killed commit's) go with it."""
    namespace, _, name = table.partition(".")
    ident = (namespace, name)
    if not _exists(platform, ident):
        return
    location = platform.catalog.load_table(ident).location()
    try:
        platform.catalog.purge_table(ident)
    except Exception as exc:
        raise StoreError(f"cannot drop the offline table {table}: {exc}") from exc
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        shutil.rmtree(Path(parsed.path), ignore_errors=True)
