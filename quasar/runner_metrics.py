"""The runner's Prometheus metrics, written to a file (``--metrics-file``, node-exporter textfile style: written
whole to a temporary file and renamed after every pass) and/or served over HTTP (``--metrics-port``).

* ``quasar_signal_freshness_lag_seconds{signal}``: how far the signal's newest computed day lags behind now
  (``quasar.status``); absent for a signal never computed;
* ``quasar_signal_freshness_target_seconds{signal}``: its freshness target (absent without one);
* ``quasar_signal_stale{signal}``: 1 when it is stale or was never computed, else 0; the one to alert on;
* ``quasar_runner_runs_total{kind, outcome}``: backfills and materializations this runner ran, by outcome
  (``succeeded``, ``failed``); ``quasar_runner_rows_written_total{signal, kind}``: rows they wrote;
* ``quasar_runner_passes_total{outcome}`` (``ok``, ``failed``: a signal failed, ``stopped``, ``lease_held``),
  ``quasar_runner_last_pass_timestamp_seconds``, ``quasar_runner_last_pass_duration_seconds``,
  ``quasar_runner_lease_held`` (1 while this runner holds the lease).

Counters count this process's runs: a ``--once`` process writes its own pass's counts (Prometheus reads a
reset as a restart); the loop's keep growing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server, write_to_textfile

if TYPE_CHECKING:
    from quasar.platform import Platform
    from quasar.runner import Action, PassReport


class RunnerMetrics:
    """The metrics of one runner process (see the module doc)."""

    def __init__(self, file: str | Path | None = None, port: int | None = None, host: str = "0.0.0.0") -> None:
        self.file = Path(file) if file is not None else None
        self.registry = CollectorRegistry()
        r = self.registry
        self.lag = Gauge("quasar_signal_freshness_lag_seconds", "Age of the newest computed day.", ["signal"],
                         registry=r)
        self.target = Gauge("quasar_signal_freshness_target_seconds", "The signal's freshness target.", ["signal"],
                            registry=r)
        self.stale = Gauge("quasar_signal_stale", "1 when the signal is stale or never computed.", ["signal"],
                           registry=r)
        self.runs = Counter("quasar_runner_runs", "Runs by kind and outcome.", ["kind", "outcome"], registry=r)
        self.rows = Counter("quasar_runner_rows_written", "Rows written by the runner's runs.", ["signal", "kind"],
                            registry=r)
        self.passes = Counter("quasar_runner_passes", "Passes by outcome.", ["outcome"], registry=r)
        self.last_pass = Gauge("quasar_runner_last_pass_timestamp_seconds", "When the last pass started.",
                               registry=r)
        self.pass_duration = Gauge("quasar_runner_last_pass_duration_seconds", "How long the last pass took.",
                                   registry=r)
        self.lease_held = Gauge("quasar_runner_lease_held", "1 while this runner holds the lease.", registry=r)
        if port is not None:
            start_http_server(port, addr=host, registry=r)

    def observe_action(self, action: Action) -> None:
        self.runs.labels(action.kind, action.status).inc()
        if action.status == "succeeded" and action.rows:
            self.rows.labels(action.signal, action.kind).inc(action.rows)

    def observe_pass(self, report: PassReport) -> None:
        outcome = "lease_held" if report.held_by else "stopped" if report.stopped else \
            "failed" if report.failed else "ok"
        self.passes.labels(outcome).inc()
        if not report.held_by:
            self.last_pass.set(report.started_at.timestamp())
            self.pass_duration.set(report.duration_s)

    def lease(self, held: bool) -> None:
        self.lease_held.set(1 if held else 0)

    def freshness(self, p: Platform, now: datetime | None = None) -> None:
        """Set the freshness gauges of every signal as of ``now``."""
        from quasar.status import freshness

        now = now or datetime.now(UTC)
        for sv in p.registry.signals():
            f = freshness(p, sv, now)
            if f.lag is not None:
                self.lag.labels(sv.name).set(f.lag.total_seconds())
            if f.target is not None:
                self.target.labels(sv.name).set(f.target.total_seconds())
            self.stale.labels(sv.name).set(1 if f.state in ("stale", "never") else 0)

    def write(self, p: Platform, report: PassReport, now: datetime | None = None) -> None:
        """After a pass: count it if the runner did not (a held lease), refresh freshness, write the file."""
        if report.held_by:
            self.observe_pass(report)
        self.freshness(p, now)
        if self.file is not None:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(self.file), self.registry)
