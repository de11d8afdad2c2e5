"""Durations as authors write them: ``"15m"``, ``"1h"``, ``"7d"``, ``"2w"`` or a ``timedelta``."""

from __future__ import annotations

import re
from datetime import timedelta

from quasar.signals.errors import DefinitionError

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PATTERN = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


def parse_duration(value: str | timedelta | None, what: str = "duration") -> timedelta | None:
    """``"7d"`` -> ``timedelta(days=7)``; a timedelta passes through; None stays None."""
    if value is None or isinstance(value, timedelta):
        if isinstance(value, timedelta) and value <= timedelta(0):
            raise DefinitionError(f"{what} must be positive, got {value}")
        return value
    if isinstance(value, str):
        m = _PATTERN.match(value)
        if m and int(m.group(1)) > 0:
            return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    raise DefinitionError(f"{what} {value!r} is invalid: use a timedelta or a string like '30m', '1h', '7d'")


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling: ``timedelta(days=7)`` -> ``"7d"``."""
    seconds = int(value.total_seconds())
    if seconds != value.total_seconds():
        raise DefinitionError(f"duration {value} is not a whole number of seconds")
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
