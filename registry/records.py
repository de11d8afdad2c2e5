"""What the registry hands back: signal versions, run records and registration reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from quasar.signals.signal import Signal


@dataclass(frozen=True, kw_only=True)
class SignalVersion:
    """One registered version of a signal; ``signal`` carries no transform unless from ``load_signal``."""

    name: str
    version: int
    signal: Signal
    created_at: datetime
    is_latest: bool


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """One backfill or materialization run of a signal version, from the run log."""

    id: int
    signal: str
    version: int
    kind: str
    status: str                       # "running" | "succeeded" | "failed" | "abandoned" (its lease ran out)
    started_at: datetime
    finished_at: datetime | None
    snapshot_id: int | None
    rows: int | None
    duration_s: float | None
    params: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    heartbeat_at: datetime | None = None      # the last sign of life of a running (or abandoned) run


@dataclass(frozen=True, kw_only=True)
class SignalChange:
    """What one registration did to one signal, and what a new version needs before it serves.

    ``status``: ``"new"`` (its first version), ``"new version"`` (what it computes changed), ``"metadata
    updated"`` (descriptions, owner, TTL, ... changed in place: ``changed`` names them) or ``"unchanged"``.
    ``needs``: the runs a new version needs before unpinned references resolve to it (``"backfill"``, and
    ``"materialize"`` for an online signal). ``serving``: for a new version, the version that keeps serving
    meanwhile. ``kind``: ``"signal"``, ``"request"`` (a request-time signal) or ``"service"`` (a feature service;
    its ``note`` names the pins); the summary names the kind of the latter two.
    """

    name: str
    status: str
    version: int
    needs: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    serving: int | None = None
    note: str = ""
    kind: str = "signal"

    @property
    def summary(self) -> str:
        """One line for people, e.g. ``user_clicks v2: new version; needs backfill, materialize ...``."""
        what = {"request": "request-time signal ", "service": "feature service "}.get(self.kind, "")
        text = f"{what}{self.name} v{self.version}: {self.status}"
        if self.changed:
            text += f" ({', '.join(self.changed)})"
        if self.note:
            text += f"; {self.note}"
        if self.needs:
            text += f"; needs {', '.join(self.needs)}"
            if self.serving is not None and self.serving != self.version:
                text += (f" before it serves (serving stays v{self.serving} until then, or "
                         f"`quasar promote {self.name}@{self.version}`)")
        return text


@dataclass(frozen=True, kw_only=True)
class Serving:
    """The version unpinned references to a signal resolve to, and why (see ``Registry.serving``)."""

    name: str
    version: int
    reason: str
    promoted: bool = False
    latest: int = 0


@dataclass(frozen=True, kw_only=True)
class RegistrationReport:
    """What registering a module did: lines like ``"entity user"`` or ``"signal user_engagement v2"`` per
    outcome, and one ``SignalChange`` per signal (``signals``) with what a new version needs."""

    module: str
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    signals: list[SignalChange] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)
