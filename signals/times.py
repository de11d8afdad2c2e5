"""The one rule for times, written once: every time quasar takes is an instant in UTC.

* An aware ``datetime`` is converted to UTC; a naive one is taken as UTC (never as the machine's local time).
* A string is ISO-8601 (``2026-11-23T10:00:00Z``, ``2026-11-23 12:00:00+02:00``, ``2026-11-23``), then the rule
  above: ``Z`` and offsets are honoured, no offset means UTC.
* Arrow columns end as ``timestamp[us, UTC]`` (``TIMESTAMP_ARROW``).

Rooms that take times from users (push rows, request bodies, spines, CLI arguments) call these functions rather
than writing their own parsing, so a time cannot mean one instant in one place and another elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa

from quasar.signals.errors import QuasarError, SchemaError
from quasar.signals.ufr.types import TIMESTAMP_ARROW

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(value: datetime | timedelta) -> int:
    """Integer microseconds: since the Unix epoch for a datetime (naive is UTC), or of a duration."""
    delta = as_utc(value) - _EPOCH if isinstance(value, datetime) else value
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime; a naive value is taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_time(value: str | datetime | date, what: str = "time",
               error: type[QuasarError] = SchemaError) -> datetime:
    """An ISO-8601 string, a datetime or a date as an aware UTC datetime (naive is UTC); anything else, or a
    string that is not ISO-8601, raises ``error`` naming ``what``."""
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, str):
        raise error(f"{what}: {value!r} is not a time; give an ISO-8601 string such as '2026-01-01T12:00:00Z' "
                    "or a datetime")
    try:
        return as_utc(datetime.fromisoformat(value.strip()))
    except ValueError as exc:
        raise error(f"{what}: {value!r} is not an ISO-8601 time such as '2026-01-01T12:00:00Z'") from exc


def parse_times(values: Sequence[Any], what: str = "time", error: type[QuasarError] = SchemaError) -> list[Any]:
    """``parse_time`` of every string, datetime and date in ``values`` (None stays None; other values, e.g.
    numpy datetimes, are left for Arrow to convert); ``what`` is suffixed with the failing row."""
    return [v if v is None or not isinstance(v, (str, date)) else parse_time(v, f"{what} row {i}", error)
            for i, v in enumerate(values)]


def utc_column(column: pa.Array | pa.ChunkedArray, what: str = "time",
               error: type[QuasarError] = SchemaError) -> pa.Array:
    """A column of ISO-8601 strings or timestamps (naive is UTC) as ``timestamp[us, UTC]``; nulls stay null."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return pa.array(parse_times(array.to_pylist(), what, error), TIMESTAMP_ARROW)
    if pa.types.is_timestamp(array.type):
        # a zone only labels the values (stored as UTC instants); a naive value is UTC by the same storage
        return array if array.type == TIMESTAMP_ARROW else array.cast(TIMESTAMP_ARROW)
    raise error(f"{what} has Arrow type {array.type}; give timestamps (aware, or naive UTC) or ISO-8601 strings")
