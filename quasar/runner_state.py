"""What ``quasar run`` remembers per signal version, in the registry's state (``runner:<signal>@<version>``).

* ``computed``: the days known computed, as half-open ``[start, end)`` date ranges: what the runner backfilled,
  united with the windows of the table's snapshots (so a manual ``quasar backfill`` counts too, and the record
  outlives snapshot expiry);
* ``dirty``: days whose source changed since they were computed and that are not recomputed yet, each with why
  (recorded before the backfills that redo them, so a killed or failed pass leaves them for the next one);
* ``source``: the source's fingerprint at the last check (``quasar.runner_sources``);
* ``checked``: the schedule boundary (``quasar.signals.schedule.boundary``) the last complete check covered.

Days are counted as whole UTC days since the Unix epoch (``Days`` holds them as sorted, disjoint ``[lo, hi)``
integer ranges).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from quasar.signals.schedule import EPOCH

_DAY = timedelta(days=1)


def day_number(moment: datetime | date) -> int:
    """The UTC day holding ``moment`` (a date: that day), as days since 1970-01-01."""
    if isinstance(moment, datetime):
        return (moment.astimezone(UTC) - EPOCH) // _DAY
    return (moment - EPOCH.date()).days


def day_start(day: int) -> datetime:
    """The UTC midnight that starts ``day``."""
    return EPOCH + day * _DAY


def day_text(day: int) -> str:
    return day_start(day).date().isoformat()


def span_text(start: int, end: int) -> str:
    """``[2026-01-01, 2026-01-05)`` and the count of days."""
    days = end - start
    return f"[{day_text(start)}, {day_text(end)}) ({days} day{'s' * (days != 1)})"


@dataclass(frozen=True)
class Days:
    """A set of days as sorted, disjoint, non-adjacent ``(lo, hi)`` half-open ranges."""

    spans: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, spans: Iterable[tuple[int, int]]) -> Days:
        merged: list[list[int]] = []
        for lo, hi in sorted((int(a), int(b)) for a, b in spans if b > a):
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        return cls(tuple((a, b) for a, b in merged))

    @classmethod
    def span(cls, lo: int, hi: int) -> Days:
        return cls.of([(lo, hi)])

    def __bool__(self) -> bool:
        return bool(self.spans)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.spans)

    def __or__(self, other: Days) -> Days:
        return Days.of([*self.spans, *other.spans])

    def __and__(self, other: Days) -> Days:
        out = []
        for a, b in self.spans:
            for c, d in other.spans:
                lo, hi = max(a, c), min(b, d)
                if hi > lo:
                    out.append((lo, hi))
        return Days.of(out)

    def __sub__(self, other: Days) -> Days:
        out = []
        for a, b in self.spans:
            pieces = [(a, b)]
            for c, d in other.spans:
                pieces = [p for lo, hi in pieces for p in ((lo, min(hi, c)), (max(lo, d), hi)) if p[1] > p[0]]
            out += pieces
        return Days.of(out)

    @property
    def first(self) -> int | None:
        return self.spans[0][0] if self.spans else None

    @property
    def end(self) -> int | None:
        return self.spans[-1][1] if self.spans else None

    def count(self) -> int:
        return sum(b - a for a, b in self.spans)

    def to_json(self) -> list[list[str]]:
        return [[day_text(a), day_text(b)] for a, b in self.spans]

    @classmethod
    def from_json(cls, data: Iterable[Iterable[str]] | None) -> Days:
        return cls.of((day_number(date.fromisoformat(a)), day_number(date.fromisoformat(b))) for a, b in data or ())

    def text(self) -> str:
        return ", ".join(span_text(a, b) for a, b in self.spans) or "no days"


@dataclass(frozen=True)
class Change:
    """Days whose input changed, and why (``source events: part-007.parquet added``)."""

    days: Days
    why: str


@dataclass
class SignalState:
    """The runner's record of one signal version (see the module doc)."""

    computed: Days = field(default_factory=Days)
    dirty: list[Change] = field(default_factory=list)
    source: dict[str, Any] | None = None
    checked: datetime | None = None

    @staticmethod
    def key(signal: str, version: int) -> str:
        return f"runner:{signal}@{int(version)}"

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> SignalState:
        if not data:
            return cls()
        return cls(computed=Days.from_json(data.get("computed")),
                   dirty=[Change(Days.from_json(d["days"]), str(d["why"])) for d in data.get("dirty", [])],
                   source=data.get("source"),
                   checked=datetime.fromisoformat(data["checked"]) if data.get("checked") else None)

    def to_json(self) -> dict[str, Any]:
        return {"computed": self.computed.to_json(),
                "dirty": [{"days": c.days.to_json(), "why": c.why} for c in self.dirty if c.days],
                "source": self.source, "checked": self.checked.isoformat() if self.checked else None}

    @property
    def dirty_days(self) -> Days:
        days = Days()
        for change in self.dirty:
            days = days | change.days
        return days

    def add_dirty(self, changes: Iterable[Change]) -> None:
        """Record changed days that were computed (the others are computed afresh anyway)."""
        for change in changes:
            days = change.days & self.computed
            if days:
                self.dirty.append(Change(days, change.why))

    def done(self, lo: int, hi: int) -> None:
        """Days ``[lo, hi)`` were (re)computed: computed now, and no longer dirty."""
        window = Days.span(lo, hi)
        self.computed = self.computed | window
        self.dirty = [Change(c.days - window, c.why) for c in self.dirty if c.days - window]
