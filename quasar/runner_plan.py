"""What a pass of ``quasar run`` does for one signal version: the days to backfill, and why.

A signal is **due** once a boundary of its schedule (``quasar.signals.schedule``) has passed since its last
complete check. Then, up to the last complete day at that boundary (and no further than its upstream signal
is computed), its days are:

* **missing**: never computed, from the first day of the source's rows (not before ``[time] earliest``);
* **stale**: computed, but their source changed since (``quasar.runner_sources``: new or changed files, new
  snapshots of an Iceberg table or of the upstream signal), recorded as dirty until recomputed.

The days are cut into contiguous ranges of at most ``max_days`` (a backfill holds its window in memory), as few
as possible: an aggregation's ranges closer than its reach are joined, since the first one's backfill recomputes
the days its windows reach anyway (``quasar.store.backfill.affected_end``; ``Backfill.reaches`` says how far).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from quasar.runner_sources import scan_source
from quasar.runner_state import Change, Days, SignalState, day_number, day_text, span_text
from quasar.signals.aggregation import reach
from quasar.signals.schedule import boundary, day_of

if TYPE_CHECKING:
    from quasar.platform import Platform
    from quasar.registry import SignalVersion

MAX_DAYS = 31
_REASONS = 4                          # reasons shown per backfill, then "and N more"


@dataclass(frozen=True)
class Backfill:
    """Backfill days ``[start, end)``; it replaces ``[start, reaches)`` (an aggregation's windows reach further)."""

    start: int
    end: int
    reaches: int
    why: tuple[str, ...]

    def text(self) -> str:
        more = f", replacing up to {day_text(self.reaches)} (the days its windows reach)" \
            if self.reaches > self.end else ""
        return f"backfill {span_text(self.start, self.end)}{more}: {'; '.join(self.why)}"

    def to_dict(self) -> dict[str, Any]:
        return {"action": "backfill", "start": day_text(self.start), "end": day_text(self.end),
                "replaces_until": day_text(self.reaches), "why": list(self.why)}


@dataclass(frozen=True)
class Materialize:
    """Materialize version ``version`` (the latest, or the serving one), and why."""

    version: int
    why: str

    def text(self) -> str:
        return f"materialize v{self.version}: {self.why}"

    def to_dict(self) -> dict[str, Any]:
        return {"action": "materialize", "version": self.version, "why": self.why}


@dataclass
class Plan:
    """One signal's part of a pass. ``state`` is its runner state with this look's source fingerprint and changes
    recorded (saved before the backfills act on it); ``completes`` whether carrying the plan out completes the
    check of ``boundary`` (not while waiting for an upstream signal)."""

    signal: str
    version: int
    online: bool
    schedule: timedelta | None
    boundary: datetime | None = None
    due: bool = False
    until: int | None = None
    source_until: int | None = None
    backfills: list[Backfill] = field(default_factory=list)
    materialize: list[Materialize] = field(default_factory=list)
    note: str = ""
    state: SignalState = field(default_factory=SignalState)
    completes: bool = False

    @property
    def idle(self) -> bool:
        return not self.backfills and not self.materialize

    def lines(self) -> list[str]:
        """What the pass does for the signal, one line per action (or why it does nothing)."""
        head = f"{self.signal} v{self.version}"
        actions = [a.text() for a in self.backfills] + [m.text() for m in self.materialize]
        if not actions:
            return [f"{head}: nothing to do ({self.note or 'up to date'})"]
        return [f"{head}: {a}" for a in actions]

    def to_dict(self) -> dict[str, Any]:
        return {"signal": self.signal, "version": self.version, "due": self.due,
                "until": day_text(self.until) if self.until is not None else None,
                "actions": [a.to_dict() for a in self.backfills] + [m.to_dict() for m in self.materialize],
                "note": self.note}


def plan_signal(p: Platform, sv: SignalVersion, now: datetime, *, upstream_until: Mapping[str, int | None],
                predicted: Mapping[str, Days], max_days: int = MAX_DAYS) -> Plan:
    """The backfills of ``sv`` this pass (see the module doc). ``upstream_until``: the end of each upstream's
    computed days; ``predicted``: the days upstream signals will recompute first (a dry run, which cannot see
    their new snapshots)."""
    sig = sv.signal
    schedule = sig.run_schedule
    plan = Plan(signal=sv.name, version=sv.version, online=sig.online, schedule=schedule)
    stored = SignalState.from_json(p.registry.get_state(SignalState.key(sv.name, sv.version)))
    plan.state = stored
    if schedule is None:
        plan.note = "schedule manual: `quasar backfill` computes it, `quasar run` does not"
        return plan
    at = boundary(now, schedule)
    plan.boundary = at
    if stored.checked is not None and stored.checked >= at:
        plan.note = f"checked for {at:%Y-%m-%dT%H:%MZ}; next check at {at + schedule:%Y-%m-%dT%H:%MZ}"
        return plan
    plan.due, plan.completes = True, True
    until = day_number(day_of(at))
    for up in sig.upstream:
        up_until = upstream_until.get(up)
        if up_until is None:
            plan.note, plan.completes = f"waiting for upstream {up}: it has no computed days yet", False
            return plan
        until = min(until, up_until)
    plan.until = until
    state = _with_table(p, sv, stored)
    scan = scan_source(p, sig, state.source)
    state.source = scan.state
    state.add_dirty(scan.changes)
    source_days = scan.days
    for up, days in predicted.items():
        state.add_dirty([Change(days, f"upstream {up}: recomputed first in this pass")])
        source_days = source_days | days                  # what the upstream will hold by then
    plan.state = state
    plan.source_until = source_days.end if source_days and source_days.end is not None \
        and source_days.end < 10**6 else None
    missing = Days()
    if source_days:
        first = max(source_days.first or 0, _first_allowed(p))
        missing = Days.span(first, until) - state.computed
    work = missing | state.dirty_days & state.computed
    if not work:
        plan.note = scan.note or f"computed up to {day_text(until)}, no source changes"
        return plan
    plan.backfills = _chunks(sig, work, missing, state, max_days)
    return plan


def _first_allowed(p: Platform) -> int:
    """The first whole day inside ``[time] earliest``."""
    earliest = p.config.time_bounds.earliest
    first = day_number(earliest)
    return first if day_of(earliest) == earliest else first + 1


def _with_table(p: Platform, sv: SignalVersion, stored: SignalState) -> SignalState:
    """``stored`` with the windows of the table's snapshots added to its computed days; a fresh state when the
    table does not exist (never written, or deleted since)."""
    from pyiceberg.table.snapshots import ancestors_of

    if p.offline.current_snapshot_id(sv.name, sv.version) is None:
        return SignalState()
    table = p.offline.table(sv.name, sv.version)
    windows = []
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        window = snapshot.summary.additional_properties.get("quasar.window") if snapshot.summary else None
        if window:
            start, end = (datetime.fromisoformat(w) for w in window.strip("[)").split(", "))
            windows.append((day_number(start), day_number(end - timedelta(microseconds=1)) + 1))
    return SignalState(computed=stored.computed | Days.of(windows), dirty=list(stored.dirty), source=stored.source,
                       checked=stored.checked)


def _chunks(sig: Any, work: Days, missing: Days, state: SignalState, max_days: int) -> list[Backfill]:
    reach_days = 0
    if sig.kind == "aggregation" and sig.step is not None and sig.max_window is not None:
        reach_days = math.ceil(reach(sig.step, sig.max_window) / timedelta(days=1))
    joined: list[list[int]] = []
    for lo, hi in work:
        if joined and lo <= joined[-1][1] + reach_days:
            joined[-1][1] = hi                          # the first one's backfill recomputes the gap anyway
        else:
            joined.append([lo, hi])
    covered = state.computed.end
    out = []
    for lo, hi in joined:
        for start in range(lo, hi, max_days):
            end = min(hi, start + max_days)
            reaches = max(end, min(end + reach_days, covered)) if reach_days and covered else end
            window = Days.span(start, end)
            why = ["never computed"] if missing & window else []
            for change in state.dirty:
                if change.days & state.computed & Days.span(start, reaches) and change.why not in why:
                    why.append(change.why)
            if len(why) > _REASONS:
                why = [*why[:_REASONS], f"and {len(why) - _REASONS} more changes"]
            out.append(Backfill(start, end, reaches, tuple(why) or ("recomputing",)))
    return out
