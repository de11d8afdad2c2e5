"""Windowed aggregations of the local engine against a plain Python reference, compared exactly.

The reference follows the docstring of ``quasar.signals.aggregation`` line by line: step-aligned stamps in
``[start, end)``, windows ``[T - w, T)``, a row when the longest window is non-empty and one more at the
step where it empties, count and sum 0 and other functions null on empty windows, nulls ignored, ``last`` at the latest ts with ties to the larger value.
Floating sums add values in ``(ts, value)`` order, as the engine documents.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fixtures.offline import random_events
from quasar.signals import (
    Entity,
    Float32,
    Int64,
    Source,
    String,
    Timestamp,
    aggregate,
    count,
    last,
    max_,
    mean,
    min_,
    signal,
    sum_,
)
from quasar.signals.aggregation import Aggregation
from quasar.signals.errors import DefinitionError, SchemaError, StoreError
from quasar.signals.signal import Signal
from quasar.store.engines import Engine, load_engine
from quasar.store.engines.local import LocalEngine
from quasar.store.engines.local_agg import micros

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")


@pytest.fixture(scope="module", params=["local", pytest.param("spark", marks=pytest.mark.spark)])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """Both engines, each against the same Python reference: Spark SQL must give the local engine's bits."""
    if request.param == "spark":
        yield request.getfixturevalue("spark_engine")
        return
    eng = LocalEngine(threads=2)
    yield eng
    eng.close()


# --- the reference -------------------------------------------------------------------------------------------
def _cast(value: Any, agg: Aggregation) -> Any:
    if value is None:
        return None
    if isinstance(agg.dtype, Float32):
        return float(np.float32(value))
    if isinstance(agg.dtype, Int64):
        return int(value)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _aggregate(agg: Aggregation, rows: list[dict[str, Any]], ts: str) -> Any:
    if agg.column is None:
        return len(rows)
    pairs = sorted((r[ts], r[agg.column]) for r in rows if r[agg.column] is not None)
    values = [v for _, v in pairs]
    if agg.function == "count":
        return len(values)
    if agg.function == "sum" and not values:
        return 0                                 # an empty window sums to 0, like a count
    if not values:
        return None
    if agg.function in ("sum", "mean"):
        if all(isinstance(v, int) for v in values):
            total: Any = sum(values)
        else:
            total = 0.0
            for v in values:                     # plain left-to-right addition in (ts, value) order
                total += float(v)
        return total if agg.function == "sum" else float(total) / len(values)
    if agg.function == "min":
        return min(values)
    if agg.function == "max":
        return max(values)
    assert agg.function == "last"
    return max(pairs)[1]


def reference(signal: Signal, source: pa.Table, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The signal's rows, ordered by (key, T), computed the plain way."""
    assert signal.step is not None and signal.max_window is not None
    key, ts = signal.entity.join_key, signal.source.timestamp
    step, longest = micros(signal.step), micros(signal.max_window)
    by_key: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in source.to_pylist():
        if row[key] is None or row[ts] is None:
            continue
        by_key[row[key]].append({**row, ts: micros(row[ts])})
    first = -(-micros(start) // step) * step
    out = []
    for k in sorted(by_key):
        for stamp in range(first, micros(end), step):
            # a row while the longest window holds an event, and one more at the step where it empties
            if not any(stamp - longest - step <= r[ts] < stamp for r in by_key[k]):
                continue
            row: dict[str, Any] = {key: k, "event_timestamp": datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
                microseconds=stamp)}
            for agg in signal.aggregations:
                in_window = [r for r in by_key[k] if stamp - micros(agg.window) <= r[ts] < stamp]
                row[agg.name] = _cast(_aggregate(agg, in_window, ts), agg)
            out.append(row)
    return out


def computed(engine: Engine, signal: Signal, source: pa.Table, start: datetime, end: datetime) -> list[dict]:
    table = engine.compute(signal, source, start, end)
    assert table.schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    for agg in signal.aggregations:
        assert agg.dtype is not None
        assert table.schema.field(agg.name).type == agg.dtype.arrow_type()
    return table.to_pylist()


def assert_same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g == w, (g, w)


# --- random data against the reference -------------------------------------------------------------------
HOURLY = aggregate(name="hourly", entity=user, source=events, step="1h", aggregations=[
    count("1h"), count("1d", column="dwell_s", name="dwell_count_1d"), sum_("dwell_s", "1d"),
    mean("dwell_s", "7d"), min_("dwell_s", "1h"), max_("clicked", "1d", dtype=Int64()), last("dwell_s", "1h"),
    last("clicked", "1d", name="clicked_last_1d", dtype=Int64()), sum_("clicked", "7d", dtype=Int64()),
    mean("clicked", "1d"), sum_("dwell_s", "1h", name="dwell_sum_f32", dtype=Float32()),
])
DAILY = aggregate(name="daily", entity=user, source=events, step="1d", aggregations=[
    count("1h"), count("7d"), sum_("dwell_s", "1d"), mean("dwell_s", "7d"), last("dwell_s", "1h"),
    max_("dwell_s", "7d"), min_("clicked", "1d", dtype=Int64()),
])
ODD = aggregate(name="odd", entity=user, source=events, step="1h", aggregations=[
    count("90m"), sum_("dwell_s", "150m"), last("item_id", "45m", dtype=Int64()),
])


@pytest.mark.parametrize("signal", [HOURLY, DAILY, ODD], ids=lambda s: s.name)
@pytest.mark.parametrize("seed", [0, 1])
def test_random_data_matches_the_reference(engine: Engine, signal: Signal, seed: int) -> None:
    # timestamps on whole quarter hours: ties for ``last`` and events exactly on step boundaries
    source = random_events(n=600, start=T0 - 7 * DAY, days=12, users=8, seed=seed, null_fraction=0.15,
                           step_us=900_000_000)
    start, end = T0, T0 + 5 * DAY
    want = reference(signal, source, start, end)
    assert len(want) >= 30
    assert_same(computed(engine, signal, source, start, end), want)


def test_fine_timestamps_and_float32_sums(engine: Engine) -> None:
    source = random_events(n=800, start=T0 - 2 * DAY, days=4, users=5, seed=7)
    start, end = T0, T0 + 2 * DAY
    assert_same(computed(engine, HOURLY, source, start, end), reference(HOURLY, source, start, end))


def test_results_do_not_depend_on_threads() -> None:
    source = random_events(n=3000, start=T0 - 7 * DAY, days=10, users=4, seed=3)
    results = []
    for threads in (1, 2):
        eng = LocalEngine(threads=threads)
        results.append(eng.compute(HOURLY, source, T0, T0 + 3 * DAY))
        eng.close()
    assert results[0].equals(results[1])


# --- the edges, by hand -------------------------------------------------------------------------------------
def _source(rows: list[tuple[Any, datetime | None, Any]], key_type: pa.DataType = pa.int64(),
            value_type: pa.DataType = pa.float64()) -> pa.Table:
    return pa.table({"user_id": pa.array([r[0] for r in rows], key_type),
                     "ts": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
                     "x": pa.array([r[2] for r in rows], value_type)})


EDGE = aggregate(name="edge", entity=user, source=events, step="1h", aggregations=[
    count("1h"), count("2h", column="x", name="x_count_2h"), sum_("x", "1h"), mean("x", "2h"), last("x", "1h"),
    last("x", "2h", name="x_last_2h"),
])


def test_boundaries_ties_nulls_and_empty_windows(engine: Engine) -> None:
    t = T0 + HOUR                      # a step time
    rows = [
        (1, t, 1.0),                   # exactly at T: not in row T, in row T + 1h
        (1, t - HOUR, 2.0),            # exactly at T - 1h: in row T's 1h window
        (1, t - HOUR, 5.0),            # a tie on ts: last takes the larger value
        (1, t - HOUR, None),           # nulls are ignored (but counted by count())
        (None, t - HOUR, 9.0),         # no key: ignored
        (2, t + 30 * timedelta(minutes=1), None),   # only a null value: counts, everything else null
    ]
    out = {(r["user_id"], r["event_timestamp"]): r for r in engine.compute(EDGE, _source(rows), T0, T0 + 4 * HOUR)
           .to_pylist()}
    assert set(out) == {(1, t), (1, t + HOUR), (1, t + 2 * HOUR), (2, t + HOUR), (2, t + 2 * HOUR)}
    assert out[(1, t)] == {"user_id": 1, "event_timestamp": t, "count_1h": 3, "x_count_2h": 2,
                                "x_sum_1h": 7.0, "x_mean_2h": 3.5, "x_last_1h": 5.0, "x_last_2h": 5.0}
    assert out[(1, t + HOUR)] == {"user_id": 1, "event_timestamp": t + HOUR, "count_1h": 1, "x_count_2h": 3,
                                  "x_sum_1h": 1.0, "x_mean_2h": 8.0 / 3, "x_last_1h": 1.0, "x_last_2h": 1.0}
    # only the 2h window still holds the T event: count and sum 0, nulls elsewhere in the 1h window
    assert out[(1, t + 2 * HOUR)] == {"user_id": 1, "event_timestamp": t + 2 * HOUR, "count_1h": 0,
                                      "x_count_2h": 1, "x_sum_1h": 0.0, "x_mean_2h": 1.0, "x_last_1h": None,
                                      "x_last_2h": 1.0}
    # only a null value: the sum of no values is 0, mean and last have none
    assert out[(2, t + HOUR)] == {"user_id": 2, "event_timestamp": t + HOUR, "count_1h": 1,
                                  "x_count_2h": 0, "x_sum_1h": 0.0, "x_mean_2h": None, "x_last_1h": None,
                                  "x_last_2h": None}
    assert out[(2, t + 2 * HOUR)]["count_1h"] == 0


def test_steps_are_epoch_aligned_and_may_be_absent(engine: Engine) -> None:
    weekly = aggregate(name="weekly", entity=user, source=events, step="7d", aggregations=[count("7d")])
    rows = [(1, T0 + DAY, 1.0), (1, T0 + 8 * DAY, 1.0)]
    # 2026-01-01 is day 20454 since the epoch, a multiple of 7: the steps are Jan 1, 8, 15
    assert engine.compute(weekly, _source(rows), T0 + DAY, T0 + 7 * DAY).num_rows == 0
    out = engine.compute(weekly, _source(rows), T0, T0 + 14 * DAY).to_pylist()
    assert [(r["event_timestamp"], r["count_7d"]) for r in out] == [(T0 + 7 * DAY, 1)]
    out = engine.compute(weekly, _source(rows), T0, T0 + 15 * DAY).to_pylist()
    assert [(r["event_timestamp"], r["count_7d"]) for r in out] == [(T0 + 7 * DAY, 1), (T0 + 14 * DAY, 1)]


def test_string_keys_timestamps_and_empty_sources(engine: Engine) -> None:
    pin = Entity(name="pin", join_key="pin_id", join_key_type="string")
    seen = aggregate(name="seen", entity=pin, source=Source.parquet(name="s", path="x", timestamp="when"),
                     step="1d", aggregations=[last("when", "1d", name="last_seen", dtype=Timestamp()),
                                              min_("v", "1d", name="v_min", dtype=Float32())])
    when = [T0 + timedelta(hours=h) for h in (1, 5, 5)]
    naive = pa.array([w.replace(tzinfo=None) for w in when], pa.timestamp("ms"))
    source = pa.table({"pin_id": pa.array(["b", "a", "a"]).dictionary_encode(), "when": naive,
                       "v": pa.array([1.5, 2.5, -0.5], pa.float32())})
    out = engine.compute(seen, source, T0, T0 + 2 * DAY).to_pylist()
    assert out == [{"pin_id": "a", "event_timestamp": T0 + DAY, "last_seen": when[1], "v_min": -0.5},
                   {"pin_id": "b", "event_timestamp": T0 + DAY, "last_seen": when[0], "v_min": 1.5}]
    assert engine.compute(seen, source.slice(0, 0), T0, T0 + 2 * DAY).num_rows == 0


def test_missing_source_column_is_named(engine: Engine) -> None:
    with pytest.raises(SchemaError, match="signal hourly: source events has no column 'dwell_s'"):
        engine.compute(HOURLY, pa.table({"user_id": [1], "ts": pa.array([T0], pa.timestamp("us", tz="UTC")),
                                         "clicked": [1], "item_id": [3]}), T0, T0 + DAY)


# --- the engine around the SQL ------------------------------------------------------------------------------
def test_transforms_run_their_function_and_engines_load_by_name() -> None:
    @signal(entity=user, source=events, features={"clicks": Int64()})
    def doubled(batch: pa.Table) -> pa.Table:
        return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"],
                         "clicks": pc.multiply(batch["clicked"], 2)})

    eng = load_engine("local", threads=1)
    assert isinstance(eng, LocalEngine) and eng.name == "local"
    source = random_events(n=20)
    out = eng.compute(doubled, source, T0, T0 + DAY)
    # rows come back grouped by entity bucket (the groups both engines call a transform over), so as a set
    got = zip(*(out.column(c).to_pylist() for c in ("user_id", "event_timestamp", "clicks")), strict=True)
    want = zip(*(source.column(c).to_pylist() for c in ("user_id", "ts")),
               [2 * c for c in source.column("clicked").to_pylist()], strict=True)
    assert sorted(got) == sorted(want)
    with pytest.raises(DefinitionError, match="signal doubled has no Python transform to run"):
        eng.compute(dataclasses.replace(doubled, transform=None), source, T0, T0 + DAY)
    assert eng.connection.execute("SELECT current_setting('threads')").fetchone() == (1,)
    eng.close()
    eng.close()
    with pytest.raises(StoreError, match="threads must be a positive int"):
        LocalEngine(threads=0)


# --- types: exact or refused, strings kept (issue 13, bug 5) ------------------------------------------------
def test_a_fractional_result_in_an_integer_dtype_is_refused_on_every_engine(engine: Engine) -> None:
    """DuckDB used to round 0.6 to 1 and Spark to truncate it to 0; both now refuse, naming the value."""
    lossy = aggregate(name="lossy", entity=user, source=events, step="1d",
                      aggregations=[sum_("x", "1d", name="x_sum", dtype=Int64()),
                                    max_("x", "1d", name="x_max", dtype=Int64())])
    with pytest.raises(SchemaError, match=r"aggregation 'x_sum' gives double values .* int64 .*e\.g\. 0\.6"):
        engine.compute(lossy, _source([(1, T0 + HOUR, 0.6), (2, T0 + HOUR, 2.0)]), T0, T0 + 2 * DAY)
    whole = engine.compute(lossy, _source([(1, T0 + HOUR, 3.0), (1, T0 + 2 * HOUR, 2.0)]), T0, T0 + 3 * DAY)
    assert whole.column("x_sum").to_pylist() == [5, 0] and whole.column("x_max").to_pylist() == [3, None]


def test_last_min_and_max_keep_string_columns(engine: Engine) -> None:
    words = aggregate(name="words", entity=user, source=events, step="1d", aggregations=[
        last("x", "1d", name="x_last", dtype=String()), min_("x", "1d", name="x_min", dtype=String()),
        max_("x", "2d", name="x_max", dtype=String())])
    source = _source([(1, T0 + HOUR, "b"), (1, T0 + 2 * HOUR, "a"), (1, T0 + 2 * HOUR, "c"),
                      (2, T0 + HOUR, None)], value_type=pa.string())
    out = engine.compute(words, source, T0, T0 + 4 * DAY)
    assert out.schema.field("x_last").type == pa.string()
    assert out.to_pylist() == [
        {"user_id": 1, "event_timestamp": T0 + DAY, "x_last": "c", "x_min": "a", "x_max": "c"},
        {"user_id": 1, "event_timestamp": T0 + 2 * DAY, "x_last": None, "x_min": None, "x_max": "c"},
        {"user_id": 1, "event_timestamp": T0 + 3 * DAY, "x_last": None, "x_min": None, "x_max": None},
        {"user_id": 2, "event_timestamp": T0 + DAY, "x_last": None, "x_min": None, "x_max": None},
        {"user_id": 2, "event_timestamp": T0 + 2 * DAY, "x_last": None, "x_min": None, "x_max": None},
        {"user_id": 2, "event_timestamp": T0 + 3 * DAY, "x_last": None, "x_min": None, "x_max": None},
    ]


def test_string_columns_need_a_string_dtype(engine: Engine) -> None:
    default = aggregate(name="texts", entity=user, source=events, step="1d", aggregations=[last("x", "1d")])
    source = _source([(1, T0 + HOUR, "b")], value_type=pa.string())
    with pytest.raises(SchemaError, match=r"aggregation 'x_last_1d' over source column 'x' \(string\) cannot be "
                                          r"stored as float64: declare dtype=String\(\)"):
        engine.compute(default, source, T0, T0 + DAY)
    summed = aggregate(name="texts", entity=user, source=events, step="1d", aggregations=[sum_("x", "1d")])
    with pytest.raises(SchemaError, match="a sum needs a numeric or boolean column"):
        engine.compute(summed, source, T0, T0 + DAY)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Aggregation(function="mean", column="x", window="1d", dtype=Int64()),
     r"a mean is stored as Float64\(\) or Float32\(\), not int64"),
    (lambda: Aggregation(function="count", window="1d", dtype=Float32()), r"a count is stored as Int64\(\)"),
    (lambda: sum_("x", "1d", dtype=String()), r"a sum is stored as Int64\(\) or Float64\(\) or Float32\(\)"),
])
def test_dtypes_that_cannot_hold_a_function_are_refused_at_definition(make: Any, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        make()
