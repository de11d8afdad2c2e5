"""A synthetic engagement world for the demo, tests and benchmarks: users see pins, some click.

Clicks depend on how well a user's taste matches a pin's embedding, so a model trained on the
features can learn something real. Everything is generated from a seed; nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DIM = 16
CATEGORIES = ["food", "travel", "diy", "fashion", "art", "tech", "garden", "sports"]
COUNTRIES = ["US", "FR", "DE", "BR", "JP", "IN", "ZA", "MX"]
US_PER_DAY = 86_400_000_000


@dataclass(frozen=True, kw_only=True)
class World:
    """Sizes of the generated world."""

    users: int = 500
    pins: int = 1000
    days: int = 30
    events_per_day: int = 5000
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    seed: int = 7

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)


def _us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


def _ts(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype("int64"), pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def _vectors(rows: np.ndarray) -> pa.Array:
    flat = pa.array(rows.astype(np.float32).ravel(), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, DIM)


def generate(root: str | Path, world: World = World()) -> dict[str, int]:
    """Write ``data/users``, ``data/pins`` and ``data/events`` Parquet folders under ``root``; return row counts."""
    rng = np.random.default_rng(world.seed)
    data = Path(root) / "data"
    for sub in ("users", "pins", "events"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    t0, span = _us(world.start), world.days * US_PER_DAY

    taste = rng.normal(size=(world.users, DIM)).astype(np.float32)
    embed = rng.normal(size=(world.pins, DIM)).astype(np.float32)

    # users: a first snapshot before the month, and a second for a third of them mid-month (taste drifts).
    uid = np.arange(1, world.users + 1, dtype=np.int64)
    again = uid[rng.random(world.users) < 0.33]
    u_ids = np.concatenate([uid, again])
    u_time = np.concatenate([np.full(world.users, t0 - US_PER_DAY), t0 + rng.integers(0, span, again.size)])
    u_taste = np.concatenate([taste, taste[again - 1] + 0.3 * rng.normal(size=(again.size, DIM))])
    country = rng.choice(np.array([*COUNTRIES, None], dtype=object), size=u_ids.size)
    pq.write_table(pa.table({"user_id": u_ids, "updated_at": _ts(u_time), "taste": _vectors(u_taste),
                             "country": pa.array(country, pa.string())}), data / "users" / "users.parquet")

    # pins: created before or during the month; one metadata snapshot at creation.
    pid = np.arange(1, world.pins + 1, dtype=np.int64)
    created = t0 - US_PER_DAY * 60 + rng.integers(0, span + US_PER_DAY * 60, world.pins)
    cat = rng.choice(np.array([*CATEGORIES, None], dtype=object), size=world.pins)
    n_topics = rng.integers(0, 6, world.pins)
    topics = np.split(rng.integers(1, 200, n_topics.sum()), np.cumsum(n_topics)[:-1])
    pq.write_table(pa.table({
        "pin_id": pid, "updated_at": _ts(created), "created_at": _ts(created), "embedding": _vectors(embed),
        "category": pa.array(cat, pa.string()), "topics": pa.array([t.tolist() for t in topics], pa.list_(pa.int64())),
    }), data / "pins" / "pins.parquet")

    # events: one file per day; popular users and pins see more traffic (Zipf-like).
    user_p = 1.0 / np.arange(1, world.users + 1) ** 0.8
    pin_p = 1.0 / np.arange(1, world.pins + 1) ** 0.9
    total = 0
    for day in range(world.days):
        n = world.events_per_day
        users = rng.choice(uid, size=n, p=user_p / user_p.sum())
        pins = rng.choice(pid, size=n, p=pin_p / pin_p.sum())
        ts = np.sort(t0 + day * US_PER_DAY + rng.integers(0, US_PER_DAY, n))
        affinity = np.einsum("ij,ij->i", taste[users - 1], embed[pins - 1]) / np.sqrt(DIM)
        clicked = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * affinity - 1.0)))).astype(np.int64)
        dwell = np.where(clicked == 1, rng.gamma(2.0, 8.0, n), rng.gamma(1.0, 1.5, n)).astype(np.float32)
        dwell_arr = pa.array(dwell, pa.float32(), mask=rng.random(n) < 0.02)    # a few missing dwell times
        day_name = (world.start + timedelta(days=day)).strftime("%Y-%m-%d")
        pq.write_table(pa.table({"ts": _ts(ts), "user_id": users, "pin_id": pins, "clicked": clicked,
                                 "dwell_s": dwell_arr}), data / "events" / f"events-{day_name}.parquet")
        total += n
    return {"users": int(u_ids.size), "pins": int(world.pins), "events": total}


def make_spine(root: str | Path, start: datetime, end: datetime, rows: int, seed: int = 11) -> pa.Table:
    """A labeled spine: impressions sampled from the events in ``[start, end)`` (user, pin, time, clicked)."""
    events = pq.read_table(Path(root) / "data" / "events")
    ts = events["ts"].cast(pa.int64()).to_numpy()
    keep = np.flatnonzero((ts >= _us(start)) & (ts < _us(end)))
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(keep, size=min(rows, keep.size), replace=False))
    sample = events.take(pa.array(pick))
    return pa.table({"user_id": sample["user_id"], "pin_id": sample["pin_id"], "event_timestamp": sample["ts"],
                     "label": sample["clicked"]})
