"""``quasar run``: keep every registered signal computed and fresh, in dependency order, one runner at a time.

A **pass** takes every signal's latest version, upstream first, and for each that is due (``quasar.runner_plan``)
backfills its missing and stale days, in as few contiguous backfills as possible (each runs the data-quality
gate and is a recorded run, as ``quasar backfill`` is), then materializes its online versions whose table changed
since their last materialization. A signal that fails is recorded and the pass goes on: only the signals
downstream of it are skipped (not for a failed materialization: its table, which they read, is complete). ``--once`` runs one pass (for cron, Airflow, a Kubernetes CronJob); without it the
runner loops, a pass every ``interval``, retrying a failed signal after a growing delay (30 s, 1 min, 2 min, ...
up to 30 min) while the others carry on.

**One runner acts at a time**: it holds the registry's ``runner`` lease (``quasar.registry.leases``), renewed from
a thread while it works and given up when it stops; a second runner exits saying who holds it (``--once``), or
waits for it (the loop, and ``--wait``). A runner that dies (killed, its machine gone) stops renewing it, and
another takes over once ``[registry] run_lease`` has passed. A runner that learns it lost the lease stops
before its next step.

**Nothing is half-done**: each step (one backfill, one materialization) commits atomically or not at all, and the
runner's state (``quasar.runner_state``) records a step only once it committed, and the changed days it saw
before it acts on them; so a killed runner leaves the tables as they were, and the next pass redoes exactly
what is left. SIGTERM or SIGINT stops the runner after the current step (a second one stops it at once: the
step fails and is recorded as failed, still committing nothing).
"""

from __future__ import annotations

import logging
import os
import signal as signals
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from quasar.runner_plan import MAX_DAYS, Materialize, Plan, plan_signal
from quasar.runner_state import Days, SignalState, day_number, day_start, day_text
from quasar.signals.errors import QuasarError

if TYPE_CHECKING:
    from quasar.platform import Platform
    from quasar.registry import SignalVersion
    from quasar.registry.leases import Keeper, Lease
    from quasar.runner_metrics import RunnerMetrics

LEASE = "runner"
LEASE_HELD_EXIT = 75                  # EX_TEMPFAIL: another runner holds the lease; try again later
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_MAX = timedelta(minutes=30)
Echo = Callable[[str], None]
log = logging.getLogger("quasar.runner")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Stopped(QuasarError):
    """The runner stopped between steps (a signal, or it lost the lease)."""


class OnlineFailed(QuasarError):
    """A materialization failed: the signal failed, but its offline table, which downstream signals read, is fine."""


@dataclass
class Action:
    """One step a pass took: a backfill or a materialization, and how it went (its run is in the run log)."""

    signal: str
    version: int
    kind: str
    status: str
    why: str = ""
    start: str | None = None
    end: str | None = None
    rows: int | None = None
    run_id: int | None = None
    snapshot_id: int | None = None
    duration_s: float = 0.0
    error: str = ""

    def line(self) -> str:
        head = f"{self.signal} v{self.version}"
        if self.status == "failed":
            return f"  {self.kind} of {head} failed: {self.error}"
        window = f" [{self.start}, {self.end})" if self.start else ""
        verb = "backfilled" if self.kind == "backfill" else "materialized"
        unit = "rows" if self.kind == "backfill" else "records written"
        return (f"  {verb} {head}{window}: {self.rows or 0:,} {unit}, snapshot {self.snapshot_id}, run {self.run_id}, "
                f"{self.duration_s:.2f}s")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PassReport:
    """What one pass planned and did. ``held_by``: the lease holder when this runner could not take it (nothing
    done); ``stopped``: why it stopped before the end."""

    started_at: datetime
    dry_run: bool
    owner: str
    plans: list[Plan] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    stopped: str = ""
    held_by: str = ""
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.held_by

    def summary(self) -> str:
        if self.held_by:
            return f"another runner holds the lease: {self.held_by}; nothing done"
        kinds = [a.kind for a in self.actions if a.status == "succeeded"]
        text = (f"{'plan' if self.dry_run else 'pass'} done: {kinds.count('backfill')} backfill(s), "
                f"{kinds.count('materialize')} materialization(s), {len(self.failed)} failed, "
                f"{len(self.skipped)} skipped, {self.duration_s:.2f}s")
        if self.dry_run:
            planned = sum(len(p.backfills) for p in self.plans), sum(len(p.materialize) for p in self.plans)
            text = (f"plan: {planned[0]} backfill(s), {planned[1]} materialization(s), {len(self.skipped)} skipped; "
                    "nothing done (--dry-run)")
        return text + (f"; stopped: {self.stopped}" if self.stopped else "")

    def lines(self) -> list[str]:
        """The report's closing lines: a dry run's whole plan (a pass printed its steps as it took them, so only
        the signals it left alone), the skipped signals and the summary."""
        if self.held_by:
            return [self.summary()]
        out = [f"plan as of {self.started_at:%Y-%m-%dT%H:%M:%SZ}:"] if self.dry_run else []
        for plan in self.plans:
            if self.dry_run or plan.idle:
                out += [f"  {line}" for line in plan.lines()]
        out += [f"  {name}: skipped: {why}" for name, why in self.skipped.items()]
        return [*out, self.summary()]

    def to_dict(self) -> dict[str, Any]:
        return {"started_at": self.started_at.isoformat(), "dry_run": self.dry_run, "owner": self.owner,
                "ok": self.ok, "plans": [p.to_dict() for p in self.plans],
                "actions": [a.to_dict() for a in self.actions], "failed": self.failed, "skipped": self.skipped,
                "stopped": self.stopped, "held_by": self.held_by, "duration_s": round(self.duration_s, 3)}


class Stop:
    """A request to stop between steps, and the wait that it cuts short."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.why = ""

    def request(self, why: str) -> None:
        self.why = self.why or why
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(max(0.0, seconds))


@contextmanager
def stop_on_signals(stop: Stop, echo: Echo) -> Iterator[None]:
    """SIGTERM and SIGINT request a stop after the current step; a second one raises KeyboardInterrupt at once.
    Only the main thread can take signals: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        name = signals.Signals(signum).name
        if stop.requested:
            raise KeyboardInterrupt(f"{name} again: stopping now")
        stop.request(f"{name} received")
        echo(f"{name}: stopping after the current step (send it again to stop at once)")

    previous = {s: signals.signal(s, handler) for s in (signals.SIGTERM, signals.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signals.signal(s, h)


class Runner:
    """Passes over a project's signals under the runner lease (see the module doc)."""

    def __init__(self, platform: Platform, *, max_days: int = MAX_DAYS, echo: Echo | None = None,
                 metrics: RunnerMetrics | None = None, owner: str | None = None) -> None:
        if max_days < 1:
            raise QuasarError(f"max_days must be at least 1, got {max_days}")
        self.p = platform
        self.max_days = max_days
        self.echo: Echo = echo or log.info
        self.metrics = metrics
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stop = Stop()
        self.keeper: Keeper | None = None
        self.backoff: dict[str, tuple[int, datetime]] = {}      # signal -> (failures in a row, retry at)

    # --- the lease ----------------------------------------------------------------------------------------
    @property
    def lease_s(self) -> float:
        return self.p.registry.run_lease_s

    def take_lease(self) -> Lease | None:
        """Take the runner lease and keep renewing it; None when taken, else the other holder's lease."""
        if self.keeper is not None and not self.keeper.lost.is_set():
            return None
        lease = self.p.registry.take_lease(LEASE, self.owner, self.lease_s, details={"pid": os.getpid()})
        if not lease.held_by(self.owner):
            return lease
        if self.keeper is not None:
            self.keeper.stop()                            # it lost the lease before: its thread has ended
        self.keeper = self.p.registry.keep_lease(LEASE, self.owner, self.lease_s)
        if self.metrics is not None:
            self.metrics.lease(True)
        return None

    def wait_for_lease(self, poll: float | None = None) -> bool:
        """Take the lease, waiting while another runner holds it; False when stopped first."""
        told = ""
        while not self.stop.requested:
            holder = self.take_lease()
            if holder is None:
                return True
            if holder.owner != told:
                self.echo(f"waiting for the runner lease, held by {holder.describe()}")
                told = holder.owner
            self.stop.wait(poll if poll is not None else max(0.5, min(self.lease_s / 2, 10.0)))
        return False

    def release_lease(self) -> None:
        if self.keeper is not None:
            self.keeper.stop()
            self.keeper = None
            self.p.registry.release_lease(LEASE, self.owner)
        if self.metrics is not None:
            self.metrics.lease(False)

    def _check(self) -> None:
        """Before each step: stop if asked to, or if the lease was lost."""
        if self.stop.requested:
            raise Stopped(self.stop.why)
        if self.keeper is not None and self.keeper.lost.is_set():
            holder = self.p.registry.lease(LEASE)
            raise Stopped(f"lost the runner lease{f' to {holder.owner}' if holder else ''}")

    # --- one pass -----------------------------------------------------------------------------------------
    def pass_once(self, now: datetime | None = None, *, dry_run: bool = False) -> PassReport:
        """Plan (and unless ``dry_run``, do) one pass over every signal, upstream first, as of ``now``."""
        began = time.monotonic()
        now = now or utc_now()
        report = PassReport(started_at=now, dry_run=dry_run, owner=self.owner)
        versions = {sv.name: sv for sv in self.p.registry.signals()}
        blocked: dict[str, str] = {}                   # signal -> why the signals downstream of it wait
        predicted: dict[str, Days] = {}                # a dry run: the days an upstream will recompute first
        until: dict[str, int | None] = {}             # a dry run: how far an upstream will be computed
        for name in dependency_order(versions):
            sv = versions[name]
            if self.stop.requested:
                report.stopped = self.stop.why
                break
            waiting = [u for u in sv.signal.upstream if u in blocked]
            if waiting:
                report.skipped[name] = f"upstream {waiting[0]} {blocked[waiting[0]]}"
                blocked[name] = "was skipped"
                continue
            retry = self.backoff.get(name)
            if retry is not None and retry[1] > now and not dry_run:
                report.skipped[name] = f"failed {retry[0]} time(s) in a row; retrying at {retry[1]:%H:%M:%SZ}"
                blocked[name] = "is waiting to be retried"
                continue
            try:
                plan = plan_signal(self.p, sv, now, max_days=self.max_days,
                                   upstream_until={u: until[u] if u in until else self._computed_until(u, versions)
                                                   for u in sv.signal.upstream},
                                   predicted={u: predicted[u] for u in sv.signal.upstream if u in predicted})
                plan.materialize = self._materialize_plan(sv, plan, now)
                report.plans.append(plan)
                if dry_run:
                    if plan.backfills:
                        predicted[name] = Days.of((b.start, b.reaches) for b in plan.backfills)
                        until[name] = max(plan.until or 0, self._computed_until(name, versions) or 0)
                    continue
                self._carry_out(sv, plan, report)
                self.backoff.pop(name, None)
            except Stopped as stopped:
                report.stopped = str(stopped)
                break
            except Exception as exc:
                error = str(exc) if isinstance(exc, QuasarError) else f"{type(exc).__name__}: {exc}"
                report.failed[name] = error
                if not isinstance(exc, OnlineFailed):
                    blocked[name] = "failed"
                count = self.backoff.get(name, (0, now))[0] + 1
                self.backoff[name] = (count, now + min(BACKOFF_BASE * 2 ** (count - 1), BACKOFF_MAX))
                self.echo(f"{name} v{sv.version}: failed: {error}")
        report.duration_s = time.monotonic() - began
        if self.metrics is not None and not dry_run:
            self.metrics.observe_pass(report)
        return report

    def _computed_until(self, name: str, versions: dict[str, SignalVersion]) -> int | None:
        """The end of the days ``name``'s latest version has computed (its table's covered-until), or None."""
        sv = versions.get(name)
        covered = self.p.offline.backfilled_until(name, sv.version) if sv is not None else None
        return None if covered is None else day_number(covered - timedelta(microseconds=1)) + 1

    def _carry_out(self, sv: SignalVersion, plan: Plan, report: PassReport) -> None:
        key = SignalState.key(sv.name, sv.version)
        state = plan.state
        if plan.due:
            self.p.registry.set_state(key, state.to_json())    # the changed days, before acting on them
        for b in plan.backfills:
            self._check()
            self.echo(f"{sv.name} v{sv.version}: {b.text()}")
            began = time.monotonic()
            try:
                (result,) = self.p.backfill(sv.name, day_start(b.start), day_start(b.end))
            except Exception as exc:
                self._record(report, Action(sv.name, sv.version, "backfill", "failed", "; ".join(b.why),
                                            day_text(b.start), day_text(b.end), duration_s=time.monotonic() - began,
                                            error=str(exc)))
                raise
            if result.version == sv.version:
                state.done(day_number(result.start), day_number(result.end - timedelta(microseconds=1)) + 1)
                self.p.registry.set_state(key, state.to_json())
            self._record(report, Action(sv.name, result.version, "backfill", "succeeded", "; ".join(b.why),
                                        f"{result.start:%Y-%m-%d}", f"{result.end:%Y-%m-%d}", result.rows,
                                        result.run_id, result.snapshot_id, result.duration_s))
        if plan.completes and plan.boundary is not None:
            state.checked = plan.boundary
            self.p.registry.set_state(key, state.to_json())
        for target in self._online_versions(sv):
            why = materialize_reason(self.p, target, utc_now())
            if why is None:
                continue
            self._check()
            self.echo(f"{sv.name} v{target.version}: materialize: {why}")
            try:
                self._materialize(report, target, why)
            except Exception as exc:
                raise OnlineFailed(f"materializing {target.name} v{target.version} failed: {exc}") from exc

    def _materialize(self, report: PassReport, target: SignalVersion, why: str) -> None:
        from quasar.online.materialize import materialize
        began = time.monotonic()
        try:
            result = materialize(signal=target.signal, version=target.version, offline=self.p.offline,
                                 online=self.p.online_store, state=self.p.registry, bounds=self.p.config.time_bounds)
        except Exception as exc:
            self._record(report, Action(target.name, target.version, "materialize", "failed", why,
                                        duration_s=time.monotonic() - began, error=str(exc)))
            raise
        finally:
            self.p.feature_lists.clear()                  # a completed version may serve now
        self._record(report, Action(target.name, target.version, "materialize", "succeeded", why,
                                    rows=result.rows_written, run_id=result.run_id, snapshot_id=result.snapshot_id,
                                    duration_s=result.duration_s))

    def _record(self, report: PassReport, action: Action) -> None:
        report.actions.append(action)
        self.echo(action.line())
        if self.metrics is not None:
            self.metrics.observe_action(action)

    def _online_versions(self, sv: SignalVersion) -> list[SignalVersion]:
        """The versions of ``sv``'s signal a materialization keeps fresh: the latest, and the serving one while it
        is another (as a plain ``quasar materialize`` does)."""
        chosen = [sv] if sv.signal.online else []
        serving = self.p.registry.serving(sv.name).version
        if serving != sv.version:
            old = self.p.registry.signal(sv.name, serving)
            if old.signal.online:
                chosen.append(old)
        return chosen

    def _materialize_plan(self, sv: SignalVersion, plan: Plan, now: datetime) -> list[Materialize]:
        out = []
        for target in self._online_versions(sv):
            if target.version == sv.version and plan.backfills:
                out.append(Materialize(target.version, "after its backfill"))
            elif (why := materialize_reason(self.p, target, now)) is not None:
                out.append(Materialize(target.version, why))
        return out

    # --- the loop -----------------------------------------------------------------------------------------
    def loop(self, interval: timedelta, on_pass: Callable[[PassReport], None] | None = None) -> PassReport | None:
        """Passes every ``interval`` (sooner when a failed signal is due for a retry) until stopped, holding the
        lease (waiting for it while another runner holds it); the last pass's report."""
        last = None
        try:
            while not self.stop.requested:
                if not self.wait_for_lease():
                    break
                last = self.pass_once()
                if on_pass is not None:
                    on_pass(last)
                wake = utc_now() + interval
                retries = [at for _, at in self.backoff.values()]
                self.stop.wait((min([wake, *retries]) - utc_now()).total_seconds())
        finally:
            self.release_lease()
        return last


def dependency_order(versions: dict[str, SignalVersion]) -> list[str]:
    """Every signal after the signals it is computed from (names in order otherwise)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in versions:
            return
        seen.add(name)
        for up in sorted(versions[name].signal.upstream):
            visit(up)
        order.append(name)

    for name in sorted(versions):
        visit(name)
    return order


def materialize_reason(p: Platform, sv: SignalVersion, now: datetime) -> str | None:
    """Why the online state of ``sv`` lags its table (None: it does not, or there is no table yet): never
    materialized, a newer snapshot, a changed TTL or record format, rows stamped in the future now due."""
    from quasar.online.materialize import state_key, ttl_ms
    from quasar.signals.ufr.codec import FORMAT_VERSION

    snapshot = p.offline.current_snapshot_id(sv.name, sv.version)
    if snapshot is None:
        return None
    saved = p.registry.get_state(state_key(sv.name, sv.version))
    if saved is None:
        return "never materialized"
    if saved.get("snapshot_id") != snapshot:
        return f"snapshot {snapshot} is newer than the materialized {saved.get('snapshot_id')}"
    if saved.get("ttl_ms", ttl_ms(sv.signal)) != ttl_ms(sv.signal):
        return "its TTL changed"
    if saved.get("format") != FORMAT_VERSION:
        return "the online record format changed"
    now_us = int(now.timestamp() * 1_000_000)
    due = [t for t in dict(saved.get("future", {})).values() if int(t) <= now_us]
    return f"{len(due)} file(s) with rows stamped after the last run are due" if due else None


def run(p: Platform, *, once: bool = True, dry_run: bool = False, interval: timedelta = timedelta(minutes=1),
        wait: bool = False, max_days: int = MAX_DAYS, metrics: RunnerMetrics | None = None,
        now: datetime | None = None, echo: Echo | None = None) -> PassReport | None:
    """``Platform.run``: one pass (``once``; ``dry_run``: planned only, no lease), or passes every ``interval``
    until SIGTERM/SIGINT; the last pass's report (``held_by`` set when ``once`` found the lease held)."""
    runner = Runner(p, max_days=max_days, echo=echo, metrics=metrics)
    if dry_run:
        report = runner.pass_once(now, dry_run=True)
        for line in report.lines():
            runner.echo(line)
        return report

    def after(report: PassReport) -> None:
        for line in report.lines():
            runner.echo(line)
        if metrics is not None:
            metrics.write(p, report, None if not once else now)

    with stop_on_signals(runner.stop, runner.echo):
        if not once:
            return runner.loop(interval, on_pass=after)
        holder = None
        if wait:
            taken = runner.wait_for_lease()
        else:
            holder = runner.take_lease()
            taken = holder is None
        if not taken:
            report = PassReport(started_at=now or utc_now(), dry_run=False, owner=runner.owner,
                                held_by=holder.describe() if holder is not None else "", stopped=runner.stop.why)
        else:
            try:
                report = runner.pass_once(now)
            finally:
                runner.release_lease()
        after(report)
        return report
