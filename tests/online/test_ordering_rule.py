"""Differential: the Redis newer-wins script keeps exactly the row ``quasar.signals.ordering`` says wins.

Random sequences of writes to a few keys on a real redis-server: event times drawn from a handful of values
(so ties are common) that include the extremes (int64 min and max, ±2^53 and its neighbours, where doubles
stop being exact), created times that are often null (the oldest) or equal. Each row carries a unique value,
so the row Redis kept can be named; it must be the Python rule's winner. Both a TTL signal and one without.
"""

from __future__ import annotations

import itertools
from typing import Any

import pyarrow as pa
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.online import ol_no_ttl, ol_short
from quasar.online.redis_store import RedisOnlineStore
from quasar.signals.signal import Signal
from quasar.signals.ufr.codec import decode, record_event_time_us
from quasar.signals.ufr.schema import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from quasar.signals.ufr.types import TIMESTAMP_ARROW

_examples = itertools.count()
B53 = 2**53
EVENTS = st.sampled_from([-(2**63), -(2**63) + 1, -B53 - 1, -B53, -1, 0, 1, 1_767_225_600_000_000,
                          1_767_225_600_000_001, B53 - 1, B53, B53 + 1, B53 + 2, 2**62, 2**63 - 2, 2**63 - 1])
CREATED = st.one_of(st.none(), st.sampled_from([-(2**63) + 1, -B53 - 1, -B53, 0, 5, B53, B53 + 1, 2**63 - 1]))
# one write: (key, event time, created time); written one per call or in batches of a call
WRITES = st.lists(st.tuples(st.integers(0, 3), EVENTS, CREATED), min_size=1, max_size=24)


def _rows(sig: Signal, batch: list[tuple[int, int, int | None, int]]) -> pa.Table:
    value = "count" if "count" in sig.schema.names else "tier"
    values = [v for *_, v in batch]
    return pa.table({
        "user_id": pa.array([k for k, *_ in batch], pa.int64()),
        EVENT_TIMESTAMP: pa.array([e for _, e, _, _ in batch], pa.int64()).cast(TIMESTAMP_ARROW),
        CREATED_TIMESTAMP: pa.array([c for _, _, c, _ in batch], pa.int64()).cast(TIMESTAMP_ARROW),
        value: pa.array(values, pa.int64()) if value == "count" else pa.array([str(v) for v in values])})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=WRITES, batch=st.integers(1, 5), ttl=st.booleans())
def test_redis_keeps_the_rules_winner(redis_url: str, writes: list[tuple[int, int, int | None]], batch: int,
                                      ttl: bool) -> None:
    from quasar.signals.ordering import rank, winner
    from quasar.signals.ufr.codec import record_created_time_us

    sig = ol_short if ttl else ol_no_ttl
    project = f"ord{next(_examples)}"
    rows = [(k, e, c, i) for i, (k, e, c) in enumerate(writes)]
    store = RedisOnlineStore(redis_url, project=project)
    try:
        for lo in range(0, len(rows), batch):
            store.write(sig, 1, _rows(sig, rows[lo:lo + batch]))
    finally:
        store.close()
    client = redis.Redis.from_url(redis_url)
    try:
        for key in sorted({k for k, *_ in rows}):
            mine = [r for r in rows if r[0] == key]
            best = winner([rank(e, c) for _, e, c, _ in mine])
            assert best is not None
            _, e, c, value = mine[best]
            record = client.hget(f"{project}:user:{key}", f"{sig.name}@1")
            assert record is not None
            assert (record_event_time_us(record), record_created_time_us(record)) == (e, c)
            got = decode(sig.schema, [record]).table.column(sig.schema.names[0])[0].as_py()
            assert str(got) == str(value), (key, mine, got)
            if ttl:
                assert client.pexpiretime(f"{project}:user:{key}") > 0       # an expiry, however far the time
    finally:
        client.close()


def test_equal_event_times_break_by_created_time_in_any_write_order(redis_url: str) -> None:
    """Issue 13 bug 6: an out-of-order retry of an older-created row at the same event time must not win."""
    t = 1_767_225_600_000_000
    newer, older, null = (t, t + 10, 1), (t, t + 5, 2), (t, None, 3)
    for order in itertools.permutations([newer, older, null]):
        store = RedisOnlineStore(redis_url, project="tie")
        for e, c, v in order:
            store.write(ol_short, 1, _rows(ol_short, [(7, e, c, v)]))
        (got,) = store.read([(ol_short, 1)], [7], now_us=t)
        store.close()
        assert got.table.column("count")[0].as_py() == 1, order
        redis.Redis.from_url(redis_url).flushall()


def test_beyond_two_to_the_53_microseconds_the_newer_row_wins(redis_url: str) -> None:
    """Issue 14 item 2: times compared as doubles let an older row replace a newer one beyond ±2^53 µs."""
    store = RedisOnlineStore(redis_url, project="far")
    for newer, older in ((B53 + 1, B53), (-B53, -B53 - 1), (2**63 - 1, 2**63 - 2)):
        store.write(ol_no_ttl, 1, _rows(ol_no_ttl, [(1, newer, None, 1)]))
        assert store.write(ol_no_ttl, 1, _rows(ol_no_ttl, [(1, older, None, 2)])) == 0, (newer, older)
        (got,) = store.read([(ol_no_ttl, 1)], [1])
        assert got.table.column("tier")[0].as_py() == "1" and got.event_time_us[0] == newer
        redis.Redis.from_url(redis_url).flushall()
    store.close()


# one mirror step: (key, record rank or None for "no offline row", floor: "newer" | "exact" | a rank)
RANKS = st.tuples(EVENTS, CREATED)
FLOORS = st.one_of(st.just("newer"), st.just("exact"), st.just("stored"), RANKS)    # "stored": the stored rank
STEPS = st.lists(st.tuples(st.integers(0, 2), st.one_of(st.none(), RANKS), FLOORS), min_size=1, max_size=16)


def _model(stored: tuple[tuple[int, int], int] | None, new: tuple[int, int] | None, value: int,
           floor: Any) -> tuple[tuple[int, int], int] | None:
    """What ``quasar.online.lua`` promises for one key: (rank, value) kept, or None."""
    from quasar.signals.ordering import rank, wins

    # a stored record not above the floor (rank <= floor) was derived from rows that are gone
    replaceable = stored is None or floor == "exact" or (isinstance(floor, tuple) and stored[0] <= rank(*floor))
    if new is not None:
        r = rank(*new)
        return (r, value) if replaceable or wins(r, stored[0] if stored else None) else stored
    if replaceable and floor != "newer":
        return None
    return stored


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_corrections_and_rebuilds_keep_what_the_model_says(redis_url: str,
                                                           steps: list[tuple[int, Any, Any]]) -> None:
    project = f"mir{next(_examples)}"
    store = RedisOnlineStore(redis_url, project=project)
    model: dict[int, tuple[tuple[int, int], int] | None] = {}
    try:
        for i, (key, new, floor) in enumerate(steps):
            if floor == "stored":                   # the edge: a floor equal to the stored record's rank
                held = model.get(key)
                floor = "newer" if held is None else (held[0][0], None if held[0][1] == -(2**63) else held[0][1])
            rows = _rows(ol_no_ttl, [] if new is None else [(key, new[0], new[1], i)])
            floors = None if floor == "exact" else _rows(ol_no_ttl, [] if floor == "newer" else
                                                          [(key, floor[0], floor[1], -1)])
            store.mirror(ol_no_ttl, 1, rows, absent=[key] if new is None else [], floors=floors)
            model[key] = _model(model.get(key), new, i, floor)
        (got,) = store.read([(ol_no_ttl, 1)], sorted(model))
    finally:
        store.close()
    for j, key in enumerate(sorted(model)):
        want = model[key]
        if want is None:
            assert got.event_time_us[j] == 0 and got.table.column("tier")[j].as_py() is None, (key, steps)
        else:
            assert got.table.column("tier")[j].as_py() == str(want[1]), (key, steps)
            assert got.event_time_us[j] == want[0][0]
