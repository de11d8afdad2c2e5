"""Shared benchmark helpers: timing, a ratio table in Markdown, the machine line, RESULTS.md sections, and
seeded feature data written to Parquet the way the offline store lays it out (one file per day)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

RESULTS = Path(__file__).parent / "RESULTS.md"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TS_TYPE = pa.timestamp("us", tz="UTC")


# --- timing ------------------------------------------------------------------------------------------------------

@dataclass
class Timing:
    """Wall-clock seconds of each run (best first is what tables show) and the last run's result."""

    seconds: list[float]
    result: Any

    @property
    def best(self) -> float:
        return min(self.seconds)


def timed(fn: Callable[[], Any], repeat: int = 1, warmup: int = 0) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeat`` times timed."""
    for _ in range(warmup):
        fn()
    seconds, result = [], None
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return Timing(seconds, result)


# --- reporting ---------------------------------------------------------------------------------------------------

def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; cells are printed with ``str``."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(value: float | None, base: float | None, digits: int = 2) -> str:
    """``value / base`` as ``1.23x``; ``-`` when either is missing."""
    if value is None or base is None or base <= 0:
        return "-"
    return f"{value / base:.{digits}f}x"


def machine_line() -> str:
    """What the numbers were measured on: cores, memory, Python, and the key libraries."""
    import duckdb
    memory = ""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages * size / 2**30:.0f} GiB memory"
    except (ValueError, OSError, AttributeError):
        pass
    return (f"{os.cpu_count()} CPU cores{memory}, {platform.system()} {platform.machine()}, "
            f"{platform.python_implementation()} {platform.python_version()}, pyarrow {pa.__version__}, "
            f"duckdb {duckdb.__version__}")


def write_results(section: str, text: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section headed ``section`` ("## ...") of RESULTS.md, leaving the others alone."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    start = old.find(section)
    body = text.rstrip("\n") + "\n"
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + body
    else:
        end = old.find("\n## ", start + len(section))
        new = old[:start] + body + (old[end:] if end >= 0 else "")
    path.write_text(new)


# --- data --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FeatureData:
    """Seeded feature rows in Parquet: ``entities`` int64 keys, one file per day from ``start``."""

    files: list[str]
    rows: int
    entities: int
    features: list[str]
    start: datetime
    days: int


def write_feature_parquet(folder: Path, *, rows: int, entities: int, features: int = 8, days: int = 30,
                          seed: int = 0, null_fraction: float = 0.01, row_group_rows: int = 128 * 1024,
                          start: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> FeatureData:
    """Rows of ``user_id``, ``event_timestamp``, ``created_timestamp`` and ``f0..`` float32 features, spread
    evenly over ``days`` (one file per day, sorted by time as a day partition is), with no two rows of one
    key at the same event time, so every exact point-in-time answer is unique. Generated day by day."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(features)]
    day_us = 86_400 * 10**6
    base = (start - EPOCH) // timedelta(microseconds=1)
    files, total = [], 0
    per_day = np.full(days, rows // days)
    per_day[: rows % days] += 1
    for day, n in enumerate(per_day):
        keys = rng.integers(0, entities, n, dtype=np.int64)
        times = base + day * day_us + rng.integers(0, day_us, n, dtype=np.int64)
        _, first = np.unique(keys * day_us + (times - base - day * day_us), return_index=True)
        first.sort()                                   # drop the rare (key, time) repeats
        keys, times = keys[first], times[first]
        order = np.argsort(times, kind="stable")
        keys, times = keys[order], times[order]
        m = len(keys)
        cols: dict[str, Any] = {
            "user_id": pa.array(keys),
            "event_timestamp": pa.array(times, TS_TYPE),
            "created_timestamp": pa.array(times + rng.integers(0, 3_600 * 10**6, m, dtype=np.int64), TS_TYPE),
        }
        for name in names:
            values = rng.random(m, dtype=np.float32)
            mask = rng.random(m) < null_fraction if null_fraction else None
            cols[name] = pa.array(values, pa.float32(), mask=mask)
        path = folder / f"day={day:03d}.parquet"
        pq.write_table(pa.table(cols), path, row_group_size=row_group_rows)
        files.append(str(path))
        total += m
    return FeatureData(files=files, rows=total, entities=entities, features=names, start=start, days=days)
