"""Sane times: the one range of event and created times that every write path accepts.

Why: newer-wins (``quasar.signals.ordering``) keeps the row with the latest event time, so a single row stamped
9999-12-31 would make every real update of its entity lose for ever; a created time far ahead wins every tie
at its event time. So every write path checks the times it is given against one ``TimeBounds``:

* ``event_timestamp``: not before ``earliest`` (default 1970-01-01T00:00:00Z) and not after
  ``now + max_future`` (default one day: room for clock skew and rows stamped a little ahead);
* ``created_timestamp``, where given: not after ``now + max_future``. No lower bound: an old created time only
  loses ties, and a null one is the oldest of all.

Push (``quasar.online.push``: HTTP and ``Platform.push``) and backfill output (``quasar.store.output_check``) refuse a batch
holding any time outside the bounds, writing nothing; the error names the column, the first such row (its
index in the batch), its value, the bound and how many rows are outside. Materialization reads what others
wrote and skips such rows, counting them (``quasar.online.materialize`` says why). A project sets the bounds in
``quasar.toml``'s ``[time]`` section (``earliest``, ``max_future``).

Times compare as exact int64 microseconds since the epoch, like ``quasar.signals.ordering``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quasar.signals.durations import format_duration, parse_duration
from quasar.signals.errors import QuasarError, SchemaError
from quasar.signals.times import as_utc, micros, parse_time

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class TimeBounds:
    """The accepted range: event times in ``[earliest, now + max_future]``, created times up to
    ``now + max_future``."""

    earliest: datetime = EPOCH
    max_future: timedelta = timedelta(days=1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "earliest", as_utc(self.earliest))
        if self.max_future < timedelta(0):
            raise QuasarError(f"max_future must not be negative, got {self.max_future}")

    @classmethod
    def parse(cls, earliest: str, max_future: str, *, what: str = "[time]",
              error: type[QuasarError] = QuasarError) -> TimeBounds:
        """Bounds from their spellings in ``quasar.toml``: an ISO-8601 time and a duration such as ``"1d"``."""
        start = parse_time(earliest, f"{what} earliest", error)
        try:
            ahead = parse_duration(max_future, f"{what} max_future")
        except QuasarError as exc:
            raise error(str(exc)) from exc
        assert ahead is not None
        return cls(earliest=start, max_future=ahead)

    def latest_us(self, now_us: int) -> int:
        """The latest accepted time, in µs, when the clock reads ``now_us``."""
        return now_us + micros(self.max_future)


DEFAULT_BOUNDS = TimeBounds()


def clock_us() -> int:
    """The clock, in µs since the epoch: the ``now`` of a write."""
    return time.time_ns() // 1000


_NULL = np.iinfo(np.int64).min


def _us(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A timestamp column as int64 µs; nulls as int64 min (outside no bound: the check skips them)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_null(column.type):
        return np.full(len(column), _NULL, dtype=np.int64)
    if pa.types.is_timestamp(column.type) and column.type.unit != "us":
        column = column.cast(pa.timestamp("us", tz=column.type.tz), safe=True)
    values = pc.fill_null(column.cast(pa.int64()), _NULL)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.int64)


def outside(column: pa.Array | pa.ChunkedArray, *, now_us: int, bounds: TimeBounds = DEFAULT_BOUNDS,
            created: bool = False) -> np.ndarray:
    """A boolean mask of the rows of a timestamp column outside ``bounds`` (``created``: only the upper bound
    applies); null values are never outside."""
    return _outside(_us(column), now_us, bounds, created)


def _outside(values: np.ndarray, now_us: int, bounds: TimeBounds, created: bool) -> np.ndarray:
    present = values != _NULL
    late = values > bounds.latest_us(now_us)
    if created:
        return present & late
    return present & (late | (values < micros(bounds.earliest)))


def show(us: int) -> str:
    """A time in µs as ISO-8601 UTC with ``Z``; a value past datetime's range as its microseconds."""
    try:
        value = EPOCH + timedelta(microseconds=int(us))
    except OverflowError:
        return f"{int(us)} µs since 1970-01-01"
    return value.isoformat(timespec="microseconds" if value.microsecond else "seconds").replace("+00:00", "Z")


def describe(us: int, *, now_us: int, bounds: TimeBounds = DEFAULT_BOUNDS) -> str:
    """Why one time is outside the bounds: its value and the bound it breaks, named as ``quasar.toml`` names it."""
    latest = bounds.latest_us(now_us)
    if us > latest:
        return (f"{show(us)} is after the latest accepted time {show(latest)} "
                f"(now + {format_duration(bounds.max_future)}, [time] max_future)")
    return f"{show(us)} is before the earliest accepted time {show(micros(bounds.earliest))} ([time] earliest)"


def first_outside(column: pa.Array | pa.ChunkedArray, *, now_us: int, bounds: TimeBounds = DEFAULT_BOUNDS,
                  created: bool = False) -> tuple[int, int, str] | None:
    """(rows outside, index of the first, why it is outside) for a timestamp column, or None when all are in."""
    values = _us(column)
    rows = np.flatnonzero(_outside(values, now_us, bounds, created))
    if not len(rows):
        return None
    first = int(rows[0])
    return len(rows), first, describe(int(values[first]), now_us=now_us, bounds=bounds)


def check_times(column: pa.Array | pa.ChunkedArray, *, now_us: int, what: str,
                bounds: TimeBounds = DEFAULT_BOUNDS, created: bool = False,
                error: type[QuasarError] = SchemaError) -> None:
    """Raise ``error`` when any row of ``column`` is outside ``bounds``: ``<what> row <i>: <value> is after the
    latest accepted time ... (now + 1d, [time] max_future); <n> row(s) ...``, naming the first such row."""
    found = first_outside(column, now_us=now_us, bounds=bounds, created=created)
    if found is not None:
        count, first, why = found
        raise error(f"{what} row {first}: {why}; {count} row(s) outside the time bounds: fix their times, or "
                    "widen [time] earliest or max_future in quasar.toml")
