"""``quasar status``: each signal's freshness against its target, its last run, and what the next pass would do.

Freshness is the age of a signal's newest computed day: ``lag = now - computed_until``, where ``computed_until`` is
the end of the latest window backfilled into its latest version's table (its snapshots' covered-until mark, so a
manual ``quasar backfill`` counts as much as ``quasar run``). Its state is ``ok`` while the lag is within the
signal's freshness target (``quasar.signals.schedule``), ``stale`` beyond it, ``never`` before anything was
computed, ``no target`` for a manual signal that declares none. "Next" is the plan a pass would carry out now
(``quasar run --dry-run``): the days it would backfill and why, the materializations, or why it would do nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from quasar.signals.durations import format_duration

if TYPE_CHECKING:
    from quasar.platform import Platform
    from quasar.registry import SignalVersion


@dataclass(frozen=True, kw_only=True)
class Freshness:
    """How fresh one signal version is as of ``now``."""

    signal: str
    version: int
    schedule: timedelta | None
    target: timedelta | None
    computed_until: datetime | None
    lag: timedelta | None
    state: str                                   # ok | stale | never | no target

    def to_dict(self) -> dict[str, Any]:
        return {"schedule": format_duration(self.schedule) if self.schedule else "manual",
                "freshness_target": format_duration(self.target) if self.target else None,
                "computed_until": self.computed_until.isoformat() if self.computed_until else None,
                "lag": format_lag(self.lag), "lag_s": round(self.lag.total_seconds(), 3) if self.lag is not None
                else None, "state": self.state}

    def text(self) -> str:
        """``ok: computed until 2026-12-02T00:00Z, lag 7h51m`` (or ``never computed``)."""
        if self.computed_until is None:
            return "never computed"
        return f"{self.state}: computed until {self.computed_until:%Y-%m-%dT%H:%MZ}, lag {format_lag(self.lag)}"


def freshness(p: Platform, sv: SignalVersion, now: datetime) -> Freshness:
    """The freshness of ``sv`` as of ``now`` (see the module doc)."""
    target = sv.signal.freshness_target
    until = p.offline.backfilled_until(sv.name, sv.version)
    lag = None if until is None else max(timedelta(0), now - until)
    if until is None:
        state = "never"
    elif target is None:
        state = "no target"
    else:
        state = "ok" if lag is not None and lag <= target else "stale"
    return Freshness(signal=sv.name, version=sv.version, schedule=sv.signal.run_schedule, target=target,
                     computed_until=until, lag=lag, state=state)


@dataclass(frozen=True, kw_only=True)
class SignalStatus:
    """One row of ``quasar status``."""

    fresh: Freshness
    online: bool
    last_run: dict[str, Any] | None
    last_success: datetime | None
    next: list[str] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        f = self.fresh
        return {"signal": f.signal, "version": f.version, "online": self.online,
                "schedule": format_duration(f.schedule) if f.schedule else "manual",
                "freshness_target": format_duration(f.target) if f.target else None,
                "computed_until": f.computed_until.isoformat() if f.computed_until else None,
                "lag_s": round(f.lag.total_seconds(), 3) if f.lag is not None else None, "state": f.state,
                "last_run": self.last_run,
                "last_success": self.last_success.isoformat() if self.last_success else None,
                "next": self.next, "plan": self.plan}


def status(p: Platform, now: datetime | None = None) -> list[SignalStatus]:
    """Every signal's status as of ``now`` (default: the clock), in dependency order."""
    from quasar.runner import Runner

    now = now or datetime.now(UTC)
    report = Runner(p).pass_once(now, dry_run=True)
    plans = {plan.signal: plan for plan in report.plans}
    versions = {sv.name: sv for sv in p.registry.signals()}
    rows = []
    for name in [*plans, *(n for n in versions if n not in plans)]:
        sv = versions[name]
        runs = p.registry.runs(name, limit=50)
        last = runs[0] if runs else None
        success = next((r for r in runs if r.status == "succeeded" and r.kind == "backfill"), None)
        plan = plans.get(name)
        upcoming = plan.lines() if plan is not None else [f"{name} v{sv.version}: skipped ({report.skipped.get(name, '')})"]
        rows.append(SignalStatus(
            fresh=freshness(p, sv, now), online=sv.signal.online,
            last_run=None if last is None else {
                "id": last.id, "kind": last.kind, "status": last.status, "version": last.version,
                "at": (last.finished_at or last.started_at).isoformat()},
            last_success=success.finished_at if success is not None else None,
            next=[line.split(": ", 1)[1] for line in upcoming], plan=plan.to_dict() if plan is not None else {}))
    return rows


def format_lag(lag: timedelta | None, sep: str = "") -> str:
    """A freshness lag as ``2d3h`` or ``5h07m`` (``sep`` between the parts, e.g. " " for a page); "-" for none."""
    if lag is None:
        return "-"
    seconds = int(lag.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d{sep}{hours}h" if days else f"{hours}h{sep}{rest // 60:02d}m"


def format_status(rows: list[SignalStatus]) -> list[str]:
    """``quasar status`` as aligned columns, then each signal's next-pass lines."""
    header = {"signal": "SIGNAL", "version": "VERSION", "schedule": "SCHEDULE", "target": "FRESHNESS",
              "until": "COMPUTED UNTIL", "lag": "LAG", "state": "STATE", "last": "LAST RUN"}
    table = [header]
    for r in rows:
        f, last = r.fresh, r.last_run
        table.append({"signal": f.signal, "version": f"v{f.version}",
                      "schedule": format_duration(f.schedule) if f.schedule else "manual",
                      "target": format_duration(f.target) if f.target else "-",
                      "until": f"{f.computed_until:%Y-%m-%dT%H:%MZ}" if f.computed_until else "-",
                      "lag": format_lag(f.lag), "state": f.state,
                      "last": f"{last['kind']} {last['status']} {last['at'][:16]}Z" if last else "-"})
    widths = {k: max(len(str(row[k])) for row in table) for k in header}
    lines = ["  ".join(f"{row[k]!s:<{widths[k]}}" for k in header).rstrip() for row in table]
    lines.append("next pass:")
    for r in rows:
        lines += [f"  {r.fresh.signal}: {n}" for n in r.next]
    return lines
