"""The local engine's roll-up plan (``quasar.store.engines.local_rollup``) gives the per-event plan's rows bit for bit.

Aggregations whose windows are whole multiples of the step are computed from per-``(key, step)`` roll-ups, and
float sums by ``sequential_sums``; the per-event plan of ``local_agg`` stays the reference (and the plan of every
other signal). Both run here on the same random events (ties on ``ts``, values tied and null, events exactly on
step boundaries, string keys, times in and out of order) and must give equal tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fixtures.offline import random_events
from quasar.signals import Entity, Float32, Int64, Source, aggregate, count, last, max_, mean, min_, sum_
from quasar.signals.signal import Signal
from quasar.store.engines import local_rollup
from quasar.store.engines.local import LocalEngine

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")

DAILY = aggregate(name="daily", entity=user, source=events, step="1d", aggregations=[
    count("1d"), count("7d", column="dwell_s", name="dwell_n_7d"), sum_("dwell_s", "1d"), sum_("dwell_s", "3d"),
    mean("dwell_s", "7d"), sum_("dwell_s", "1d", name="dwell_sum_f32", dtype=Float32()),
    sum_("clicked", "7d", dtype=Int64()), mean("clicked", "3d"), min_("dwell_s", "3d"),
    max_("clicked", "1d", dtype=Int64()), last("dwell_s", "1d"), last("clicked", "7d", name="clicked_last_7d",
                                                                     dtype=Int64()),
])
HOURLY = aggregate(name="hourly", entity=user, source=events, step="1h", aggregations=[
    count("2h"), sum_("dwell_s", "1h"), mean("dwell_s", "1d"), last("item_id", "3h", dtype=Int64()),
])


@pytest.fixture(scope="module")
def engine() -> Iterator[LocalEngine]:
    eng = LocalEngine(threads=2)
    yield eng
    eng.close()


def both_plans(engine: LocalEngine, signal: Signal, source: pa.Table, start: datetime, end: datetime,
               monkeypatch: pytest.MonkeyPatch) -> tuple[pa.Table, pa.Table]:
    assert local_rollup.applies(signal)
    rollup = engine.compute(signal, source, start, end)
    with monkeypatch.context() as m:
        m.setattr(local_rollup, "applies", lambda s: False)
        per_event = engine.compute(signal, source, start, end)
    return rollup, per_event


@pytest.mark.parametrize("signal", [DAILY, HOURLY], ids=lambda s: s.name)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shuffled", [False, True], ids=["in time order", "shuffled"])
def test_the_rollup_plan_gives_the_per_event_plans_bits(engine: LocalEngine, signal: Signal, seed: int,
                                                        shuffled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # whole quarter hours: ties on ts and events on step boundaries; few users: long windows for the float sums
    source = random_events(n=4000, start=T0 - 9 * DAY, days=16, users=6, seed=seed, null_fraction=0.2,
                           step_us=900_000_000)
    rng = np.random.default_rng(seed)
    wide = rng.choice([1e-9, 1.0, 1e9], source.num_rows) * rng.random(source.num_rows)  # order-sensitive sums
    missing = pa.scalar(None, pa.float64())
    source = source.set_column(3, "dwell_s", pc.if_else(source["dwell_s"].is_null(), missing, pa.array(wide)))
    source = source.sort_by("ts")
    if shuffled:
        source = source.take(pa.array(rng.permutation(source.num_rows)))
    rollup, per_event = both_plans(engine, signal, source, T0, T0 + 5 * DAY, monkeypatch)
    assert rollup.num_rows >= 30
    assert rollup.equals(per_event)


def test_string_keys_nulls_and_empty_windows(engine: LocalEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    source = random_events(n=1500, start=T0 - 8 * DAY, days=12, users=9, seed=5, step_us=3_600_000_000)
    keys = pc.binary_join_element_wise("u", pc.cast(source["user_id"], pa.string()), "")
    keys = pc.if_else(pc.equal(source["item_id"], 150), pa.scalar(None, pa.string()), keys)               # some rows without a key
    source = source.set_column(0, "user_id", keys)
    pin = Entity(name="user", join_key="user_id", join_key_type="string")
    signal = aggregate(name="s", entity=pin, source=events, step="1d",
                       aggregations=[count("1d"), sum_("dwell_s", "2d"), mean("dwell_s", "1d")])
    rollup, per_event = both_plans(engine, signal, source, T0, T0 + 6 * DAY, monkeypatch)
    assert rollup.equals(per_event)
    assert rollup.num_rows > 0
    assert engine.compute(signal, source.slice(0, 0), T0, T0 + 6 * DAY).num_rows == 0


def test_windows_that_are_not_whole_steps_keep_the_per_event_plan() -> None:
    odd = aggregate(name="odd", entity=user, source=events, step="1h", aggregations=[count("90m")])
    assert not local_rollup.applies(odd)
    assert local_rollup.applies(DAILY)


def plain_sum(values: np.ndarray, lo: int, hi: int) -> float:
    total = 0.0
    for v in values[lo:hi + 1].tolist():
        total += v
    return total


def test_sequential_sums_add_left_to_right() -> None:
    rng = np.random.default_rng(0)
    values = rng.choice([1e-12, 1.0, 1e12, -1e12], 20_000) * rng.random(20_000)
    values[::97] = 0.0
    values[5] = -0.0
    # overlapping runs of every length: single values, short ones, and more long ones than TAIL
    lo = rng.integers(0, 19_000, 3000)
    hi = np.minimum(lo + rng.choice([0, 1, 5, 40, 700], 3000), 19_999)
    lo[:3], hi[:3] = [5, 0, 100], [5, 19_999, 100]
    got = local_rollup.sequential_sums(values, lo, hi)
    want = np.array([plain_sum(values, a, b) for a, b in zip(lo.tolist(), hi.tolist(), strict=True)])
    assert np.array_equal(got.view(np.int64), want.view(np.int64))      # the same bits, signed zeros included
