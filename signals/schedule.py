"""How often a signal is computed and how fresh it must be: metadata that ``quasar run`` and ``quasar status`` read.

quasar computes whole UTC days (a backfill replaces whole days), so:

* ``schedule`` is how often ``quasar run`` looks at a signal: at every multiple of the schedule since the Unix
  epoch (as aggregation steps are aligned) it checks the signal's source for new or changed data and computes
  the days that are missing or stale, up to the last complete day at that boundary. A schedule under a day must
  divide a day (``"15m"``, ``"1h"``, ``"6h"``: late data and corrections are picked up that often, while a new
  day is computed once it has ended); a schedule of a day or more is whole days (``"1d"``, ``"7d"``: a weekly
  signal gets its new days once a week). ``"manual"``: ``quasar run`` never computes it (``quasar backfill`` does).
  Default: an aggregation's ``step``, a transform's ``"1d"``.
* ``freshness`` is the most its newest computed day may lag behind now before ``quasar status`` (and the
  ``quasar_signal_stale`` metric) call it stale. Its newest day ends at the last boundary, so the lag grows to a
  day (or the schedule, if longer) before the next one is computed; the freshness target may not be shorter.
  Default: that much plus 2 hours for the pass itself (``"26h"`` for a daily signal); a manual signal has none
  unless it declares one.

Neither is part of a signal's version (``Signal.definition_fingerprint``): changing them updates the registered
version in place.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from quasar.signals.durations import format_duration, parse_duration
from quasar.signals.errors import DefinitionError

MANUAL = "manual"
DAY = timedelta(days=1)
TRANSFORM_SCHEDULE = DAY                   # what a transform that declares no schedule gets
PASS_SLACK = timedelta(hours=2)            # what a default freshness allows a pass on top of the schedule
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Schedule = timedelta | Literal["manual"]


def check_schedule(value: object, what: str) -> Schedule | None:
    """A declared schedule (a duration, ``"manual"`` or None for the default), refused unless it lines up with
    whole days (see the module doc)."""
    if value is None or value == MANUAL:
        return value  # type: ignore[return-value]
    if not isinstance(value, str | timedelta):
        raise DefinitionError(f"{what} schedule must be a duration like '1d' or '1h', or 'manual'; got {value!r}")
    schedule = parse_duration(value, f"{what} schedule")
    assert schedule is not None
    if not _lines_up(schedule) and schedule < DAY:
        raise DefinitionError(f"{what} schedule {format_duration(schedule)} does not divide a day: quasar computes "
                              "whole UTC days, so a schedule under a day must divide it (e.g. '15m', '1h', '6h')")
    if not _lines_up(schedule):
        raise DefinitionError(f"{what} schedule {format_duration(schedule)} is not a whole number of days: quasar "
                              "computes whole UTC days (use e.g. '1d' or '7d', or a schedule that divides a day)")
    return schedule


def effective_schedule(declared: Schedule | None, step: timedelta | None) -> timedelta | None:
    """The schedule ``quasar run`` keeps: the declared one, else the aggregation's step, else a day; None: manual."""
    if declared == MANUAL:
        return None
    if isinstance(declared, timedelta):
        return declared
    if step is not None:
        return step if _lines_up(step) else DAY            # an odd step (e.g. 7h): checked daily
    return TRANSFORM_SCHEDULE


def _lines_up(schedule: timedelta) -> bool:
    """Whether ``schedule`` divides a day, or is whole days."""
    return not (DAY % schedule if schedule < DAY else schedule % DAY)


def shortest_freshness(schedule: timedelta | None) -> timedelta:
    """How far a signal's newest day lags just before its next boundary: a day, or the schedule when longer."""
    return max(schedule or DAY, DAY)


def default_freshness(schedule: timedelta | None) -> timedelta | None:
    """The freshness target of a signal that declares none (None for a manual one)."""
    return None if schedule is None else shortest_freshness(schedule) + PASS_SLACK


def check_freshness(value: object, schedule: timedelta | None, what: str) -> timedelta | None:
    """A declared freshness target, refused when shorter than the lag the schedule makes by itself."""
    if value is None:
        return None
    if not isinstance(value, str | timedelta):
        raise DefinitionError(f"{what} freshness must be a duration like '26h', got {value!r}")
    freshness = parse_duration(value, f"{what} freshness")
    assert freshness is not None
    floor = shortest_freshness(schedule)
    if freshness < floor:
        every = "computes whole UTC days" if floor == DAY else f"computes its days every {format_duration(floor)}"
        raise DefinitionError(f"{what} freshness {format_duration(freshness)} is shorter than "
                              f"{format_duration(floor)}: quasar {every}, so its newest day is "
                              f"{format_duration(floor)} old just before the next one is computed; use at least "
                              f"that plus the time a pass takes (e.g. '{format_duration(floor + PASS_SLACK)}')")
    return freshness


def format_schedule(value: Schedule | None) -> str | None:
    """A declared schedule as written in the registry: ``"1d"``, ``"manual"`` or None."""
    if value is None or value == MANUAL:
        return value  # type: ignore[return-value]
    assert isinstance(value, timedelta)
    return format_duration(value)


def boundary(now: datetime, schedule: timedelta) -> datetime:
    """The latest multiple of ``schedule`` since the Unix epoch at or before ``now`` (UTC)."""
    elapsed = now.astimezone(UTC) - EPOCH
    return EPOCH + (elapsed // schedule) * schedule


def day_of(moment: datetime) -> datetime:
    """The UTC midnight at or before ``moment``."""
    return boundary(moment, DAY)
