"""Property: however concurrent writers interleave, each key ends holding the record with the latest event time."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta

import pyarrow as pa
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.online import NOW, ol_short
from quasar.online.redis_store import RedisOnlineStore
from quasar.signals.ufr.codec import record_event_time_us
from quasar.signals.ufr.schema import EVENT_TIMESTAMP
from quasar.signals.ufr.types import TIMESTAMP_ARROW

_examples = itertools.count()
# one write: (key, event time offset in seconds: few values, so ties happen)
WRITE = st.tuples(st.integers(0, 5), st.integers(0, 6))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writers=st.lists(st.lists(st.lists(WRITE, min_size=1, max_size=6), min_size=1, max_size=4),
                        min_size=2, max_size=4))
def test_latest_event_time_wins_under_concurrent_writers(redis_url: str,
                                                         writers: list[list[list[tuple[int, int]]]]) -> None:
    """``writers[w]`` is writer w's sequence of write calls, each a batch of (key, time) rows; every row carries
    a unique value, so the row that ended up stored can be identified."""
    project = f"nw{next(_examples)}"
    serial = itertools.count()
    calls = [[[(key, t, next(serial)) for key, t in batch] for batch in batches] for batches in writers]
    barrier = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def run(batches: list[list[tuple[int, int, int]]]) -> None:
        store = RedisOnlineStore(redis_url, project=project)     # one connection per writer
        try:
            barrier.wait()
            for batch in batches:
                store.write(ol_short, 1, pa.table({
                    "user_id": pa.array([k for k, _, _ in batch], pa.int64()),
                    EVENT_TIMESTAMP: pa.array([NOW + timedelta(seconds=t) for _, t, _ in batch], TIMESTAMP_ARROW),
                    "count": pa.array([v for _, _, v in batch], pa.int64())}))
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=run, args=(batches,)) for batches in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors

    rows = [row for batches in calls for batch in batches for row in batch]
    store = RedisOnlineStore(redis_url, project=project)
    keys = sorted({k for k, _, _ in rows})
    (got,) = store.read([(ol_short, 1)], keys)
    store.close()
    client = redis.Redis.from_url(redis_url)
    for i, key in enumerate(keys):
        latest = max(t for k, t, _ in rows if k == key)
        winners = {v for k, t, v in rows if k == key and t == latest}
        record = client.hget(f"{project}:user:{key}", "ol_short@1")
        assert record is not None
        assert record_event_time_us(record) == got.event_time_us[i]
        assert got.event_time_us[i] == (NOW + timedelta(seconds=latest)).timestamp() * 1_000_000
        assert got.table.column("count")[i].as_py() in winners
