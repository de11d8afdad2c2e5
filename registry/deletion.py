"""Deleting signal versions from the registry: their version rows, lineage, promotion, runs and state, in one
transaction (``quasar delete``; the offline tables and online fields are the caller's, ``quasar.delete``).

What is refused, naming the reason, before anything is written: deleting a version another signal may read
(a version of another signal lists this one upstream, and the deletion takes this signal's latest version,
which upstream reads use) and deleting a version a run is still computing (its lease is live). Deleting the
latest version makes the newest remaining one the latest; deleting every version removes the signal, so a
later registration starts again at v1 (its table, runs and state are gone too, so nothing old is mistaken for
the new v1). Entities and sources stay: other signals may use them.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete, func, select, update

from quasar.registry import models as m
from quasar.signals.errors import QuasarError


def readers(conn: Connection, name: str) -> list[str]:
    """Other signals with a version that reads ``name`` (lists it upstream), by name."""
    lin = m.lineage
    query = (select(lin.c.signal_name).distinct().where(lin.c.upstream_name == name, lin.c.signal_name != name)
             .order_by(lin.c.signal_name))
    return list(conn.execute(query).scalars())


def refusal(name: str, latest: int, reading: Sequence[str], live_runs: Sequence[int] = ()) -> str:
    """Why a deletion is refused: the signals reading it, or its live runs."""
    if reading:
        return (f"signal {name} v{latest} is read by {', '.join(reading)} (upstream reads take the latest "
                f"version); delete {'it' if len(reading) == 1 else 'them'} first")
    return (f"signal {name}: run(s) {', '.join(f'#{r}' for r in live_runs)} of the version(s) to delete are still "
            "running; wait for them (or for their lease to run out) and try again")


def delete_versions(conn: Connection, name: str, versions: Sequence[int], *, latest: int,
                    live_runs: Sequence[int], state_keys: Sequence[str]) -> None:
    """Remove ``versions`` of signal ``name`` (whose latest version is ``latest``) and their runs and state.

    ``live_runs``: ids of runs of those versions still holding a lease (refused). ``state_keys``: the registry
    state the versions own (materialization watermarks, gc cutoffs)."""
    if live_runs:
        raise QuasarError(refusal(name, latest, [], live_runs))
    reading = readers(conn, name) if latest in versions else []
    if reading:
        raise QuasarError(refusal(name, latest, reading))
    sv, versions = m.signal_versions, list(versions)
    conn.execute(delete(m.lineage).where(m.lineage.c.signal_name == name, m.lineage.c.version.in_(versions)))
    conn.execute(delete(m.runs).where(m.runs.c.signal_name == name, m.runs.c.version.in_(versions)))
    conn.execute(delete(m.promotions).where(m.promotions.c.signal_name == name,
                                            m.promotions.c.version.in_(versions)))
    if state_keys:
        conn.execute(delete(m.state).where(m.state.c.key.in_(list(state_keys))))
    conn.execute(delete(sv).where(sv.c.signal_name == name, sv.c.version.in_(versions)))
    remaining = conn.execute(select(func.max(sv.c.version)).where(sv.c.signal_name == name)).scalar()
    if remaining is None:
        conn.execute(delete(m.runs).where(m.runs.c.signal_name == name))
        conn.execute(delete(m.signals).where(m.signals.c.name == name))
    elif latest in versions:
        conn.execute(update(m.signals).where(m.signals.c.name == name).values(latest_version=remaining))
