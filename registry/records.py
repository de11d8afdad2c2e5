"""What the registry hands back: signal versions, run records and registration reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from signals.signal import Signal


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
    status: str                       # "running" | "succeeded" | "failed"
    started_at: datetime
    finished_at: datetime | None
    snapshot_id: int | None
    rows: int | None
    duration_s: float | None
    params: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RegistrationReport:
    """What registering a module did, as lines like ``"entity user"`` or ``"signal user_engagement v2"``."""

    module: str
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)
