"""Serving versions: the version of a signal that unpinned references (``signal``, ``signal:feature``) resolve
to, offline and online alike.

The rule, once: a version promoted explicitly (``quasar promote signal@N``) serves until the next promotion;
otherwise the newest version whose backfill succeeded and, for an online signal, whose materialization
succeeded too (from the run log); when no version has, the newest with a backfill (an online signal that was
backfilled but not yet materialized), else the newest (so a signal that was never computed fails as it
always did). Registering a new version therefore never takes features away from a running service: it
serves once it has data offline and online.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, select

from quasar.registry import models as m
from quasar.registry.records import Serving

#: Run kinds that complete a version, and for which signals.
COMPLETING = ("backfill", "materialize")


def needs(online: bool) -> list[str]:
    """The runs a version needs before it can serve."""
    return ["backfill", "materialize"] if online else ["backfill"]


def completed_runs(conn: Connection, names: Iterable[str] | None = None) -> dict[str, set[tuple[int, str]]]:
    """``name -> {(version, kind)}`` of succeeded backfills and materializations."""
    r = m.runs
    query = (select(r.c.signal_name, r.c.version, r.c.kind).distinct()
             .where(r.c.status == "succeeded", r.c.kind.in_(COMPLETING)))
    if names is not None:
        query = query.where(r.c.signal_name.in_(list(names)))
    done: dict[str, set[tuple[int, str]]] = {}
    for row in conn.execute(query):
        done.setdefault(row.signal_name, set()).add((row.version, row.kind))
    return done


def promoted_versions(conn: Connection, names: Iterable[str] | None = None) -> dict[str, int]:
    p = m.promotions
    query = select(p.c.signal_name, p.c.version)
    if names is not None:
        query = query.where(p.c.signal_name.in_(list(names)))
    return {row.signal_name: row.version for row in conn.execute(query)}


def choose(name: str, versions: Sequence[tuple[int, bool]], completed: set[tuple[int, str]],
           promoted: int | None) -> Serving:
    """The serving version of ``name`` from its ``(version, online)`` list (oldest first), the runs that
    completed and its promotion, if any."""
    latest = versions[-1][0]
    known = {v for v, _ in versions}
    if promoted is not None and promoted in known:
        return Serving(name=name, version=promoted, reason="promoted", promoted=True, latest=latest)
    for version, online in reversed(versions):
        if all((version, kind) in completed for kind in needs(online)):
            return Serving(name=name, version=version, latest=latest,
                           reason=f"newest version with {' and '.join(needs(online))} completed")
    for version, _ in reversed(versions):      # none complete: one with offline data still beats none
        if (version, "backfill") in completed:
            return Serving(name=name, version=version, latest=latest,
                           reason="newest version with a backfill completed (materialize pending)")
    online = versions[-1][1]
    what = "backfill and materialize" if online else "a backfill"
    return Serving(name=name, version=latest, reason=f"newest version (none has completed {what})", latest=latest)


def serving_versions(conn: Connection, names: Sequence[str] | None = None) -> dict[str, Serving]:
    """The serving version of every signal (or of ``names``), read in one transaction."""
    sv = m.signal_versions
    query = select(sv.c.signal_name, sv.c.version, sv.c.online).order_by(sv.c.signal_name, sv.c.version)
    if names is not None:
        query = query.where(sv.c.signal_name.in_(list(names)))
    versions: dict[str, list[tuple[int, bool]]] = {}
    for row in conn.execute(query):
        versions.setdefault(row.signal_name, []).append((row.version, bool(row.online)))
    done = completed_runs(conn, names)
    promoted = promoted_versions(conn, names)
    return {n: choose(n, vs, done.get(n, set()), promoted.get(n)) for n, vs in versions.items()}
