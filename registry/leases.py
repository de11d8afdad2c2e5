"""Named leases in the registry: at most one holder at a time (``quasar run`` holds the ``runner`` lease).

A lease is a row of ``quasar_leases``: its name, its owner, when it was taken and renewed, and when it runs out.
``take`` succeeds when the row is absent (an INSERT: a primary-key conflict means another taker came first), or
has run out, or is already the taker's (an UPDATE whose WHERE says so, so the database re-checks it under the
row's lock): on SQLite (writers serialised by ``BEGIN IMMEDIATE``) and on PostgreSQL (the second UPDATE waits
for the first and re-evaluates its WHERE on the row the first wrote) two takers never both succeed. ``renew``
extends it only while the owner still holds it, so a holder that was frozen past its expiry and lost the lease
to another learns so; ``release`` deletes it only if the owner holds it. ``Keeper`` renews a held lease from a
daemon thread and says when it was lost.

Times are the taker's clock (UTC), as run leases' are (``quasar.registry.runs``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from quasar.registry import models as m
from quasar.registry.db import transaction, utc_now
from quasar.registry.writer import plain

_MAX_BEAT_S = 5.0


@dataclass(frozen=True, kw_only=True)
class Lease:
    """Who holds lease ``name``, since when and until when (``expires_at``, unless renewed)."""

    name: str
    owner: str
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime
    details: dict[str, Any]

    def held_by(self, owner: str, now: datetime | None = None) -> bool:
        return self.owner == owner and self.expires_at > (now or utc_now())

    def describe(self) -> str:
        """One line for people: ``host:1234:ab12cd (since ..., until ...)``."""
        return (f"{self.owner} (since {self.acquired_at.isoformat(timespec='seconds')}, renewed "
                f"{self.renewed_at.isoformat(timespec='seconds')}, expires {self.expires_at.isoformat(timespec='seconds')}"
                " unless renewed)")


def holder(engine: Engine, name: str) -> Lease | None:
    """The lease row of ``name`` as it stands (possibly run out), or None."""
    with transaction(engine) as conn:
        row = conn.execute(select(m.leases).where(m.leases.c.name == name)).first()
    return _lease(row) if row is not None else None


def take(engine: Engine, name: str, owner: str, seconds: float, *, details: dict[str, Any] | None = None) -> Lease:
    """Take (or keep) lease ``name`` for ``seconds`` if it is free, run out or ``owner``'s; returns the lease as it
    stands after the attempt: ``held_by(owner)`` says whether this taker holds it."""
    t = m.leases
    for _ in range(3):
        now = utc_now()
        until = now + timedelta(seconds=seconds)
        try:
            with transaction(engine, write=True) as conn:
                taken = conn.execute(update(t).where(t.c.name == name, or_(t.c.expires_at <= now, t.c.owner == owner))
                                     .values(owner=owner, acquired_at=now, renewed_at=now, expires_at=until,
                                             details=plain(details or {}))).rowcount
                if not taken and conn.execute(select(t.c.name).where(t.c.name == name)).first() is None:
                    conn.execute(insert(t).values(name=name, owner=owner, acquired_at=now, renewed_at=now,
                                                  expires_at=until, details=plain(details or {})))
        except IntegrityError:
            continue                                   # another taker inserted the row first: read it again
        found = holder(engine, name)
        if found is not None:
            return found
    found = holder(engine, name)
    assert found is not None, f"lease {name!r} vanished while being taken"
    return found


def renew(engine: Engine, name: str, owner: str, seconds: float) -> bool:
    """Extend ``owner``'s lease by ``seconds`` from now; False when it no longer holds it (released, or run out
    and taken by another)."""
    t = m.leases
    now = utc_now()
    with transaction(engine, write=True) as conn:
        done = conn.execute(update(t).where(t.c.name == name, t.c.owner == owner, t.c.expires_at > now)
                            .values(renewed_at=now, expires_at=now + timedelta(seconds=seconds))).rowcount
    return bool(done)


def release(engine: Engine, name: str, owner: str) -> None:
    """Give lease ``name`` up, if ``owner`` holds it (a lease another took meanwhile is left alone)."""
    with transaction(engine, write=True) as conn:
        conn.execute(delete(m.leases).where(m.leases.c.name == name, m.leases.c.owner == owner))


def _lease(row: Any) -> Lease:
    return Lease(name=row.name, owner=row.owner, acquired_at=row.acquired_at, renewed_at=row.renewed_at,
                 expires_at=row.expires_at, details=dict(row.details or {}))


class Keeper:
    """Renews a held lease from a daemon thread (every quarter lease, at most every 5 s) until stopped; ``lost``
    is set when a renewal finds the lease gone or another's (an unreachable registry just retries: the lease
    runs out by itself if that lasts)."""

    def __init__(self, engine: Engine, name: str, owner: str, seconds: float) -> None:
        self.engine, self.name, self.owner, self.seconds = engine, name, owner, seconds
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"quasar-lease-{name}", daemon=True)

    def start(self) -> Keeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _beat(self) -> None:
        while not self._stop.wait(min(_MAX_BEAT_S, self.seconds / 4)):
            try:
                if not renew(self.engine, self.name, self.owner, self.seconds):
                    self.lost.set()
                    return
            except Exception:  # the registry is unreachable: try again; the lease runs out if this lasts
                continue
