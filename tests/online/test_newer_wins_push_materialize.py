"""Property: pushes and materializations interleaved at random (a pushing thread beside a thread that appends
rows offline and materializes) leave every key holding a row with the latest event time any of them wrote."""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.online import NOW, ol_no_ttl
from quasar.online.materialize import materialize
from quasar.online.push import push
from quasar.online.redis_store import RedisOnlineStore
from quasar.registry import Registry
from quasar.signals.ufr.schema import EVENT_TIMESTAMP
from quasar.signals.ufr.types import TIMESTAMP_ARROW
from quasar.store.catalog import open_catalog
from quasar.store.tables import OfflineStore

_examples = itertools.count()
ROWS = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 6)), min_size=1, max_size=5)   # (key, hour)
PUSHES = st.lists(ROWS, max_size=4)
OFFLINE = st.lists(st.one_of(st.tuples(st.just("append"), ROWS), st.tuples(st.just("materialize"), st.just([]))),
                   max_size=5)
Row = tuple[int, int, str]


def _table(rows: list[Row]) -> pa.Table:
    return pa.table({"user_id": pa.array([k for k, _, _ in rows], pa.int64()),
                     EVENT_TIMESTAMP: pa.array([NOW - timedelta(hours=6 - h) for _, h, _ in rows], TIMESTAMP_ARROW),
                     "tier": pa.array([v for _, _, v in rows], pa.string())})


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pushes=PUSHES, offline_ops=OFFLINE)
def test_pushes_and_materializations_in_any_order_keep_the_newest(
        redis_url: str, pushes: list[list[tuple[int, int]]], offline_ops: list[tuple[str, list[tuple[int, int]]]]) -> None:
    project = f"pm{next(_examples)}"
    serial = itertools.count()
    pushed = [[(k, h, f"push-{next(serial)}") for k, h in batch] for batch in pushes]
    ops = [(op, [(k, h, f"offline-{next(serial)}") for k, h in rows]) for op, rows in offline_ops]
    folder = Path(tempfile.mkdtemp(prefix="quasar-pm-"))
    registry = Registry.open(f"sqlite:///{folder / 'registry.db'}")
    registry.register_definitions([ol_no_ttl.entity], [ol_no_ttl.source], [ol_no_ttl], module="fixtures.online")
    offline = OfflineStore(open_catalog(uri=f"sqlite:///{folder / 'catalog.db'}", warehouse=str(folder / "wh")),
                           buckets=2)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def pusher() -> None:
        store = RedisOnlineStore(redis_url, project=project)
        try:
            barrier.wait()
            for batch in pushed:
                push(signal=ol_no_ttl, version=1, rows=_table(batch), online=store)
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    def materializer() -> None:
        store = RedisOnlineStore(redis_url, project=project)
        try:
            barrier.wait()
            for op, rows in ops:
                if op == "append":
                    offline.append(ol_no_ttl, 1, _table(rows))
                else:
                    materialize(signal=ol_no_ttl, version=1, offline=offline, online=store, state=registry)
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    try:
        threads = [threading.Thread(target=pusher), threading.Thread(target=materializer)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        store = RedisOnlineStore(redis_url, project=project)
        materialize(signal=ol_no_ttl, version=1, offline=offline, online=store, state=registry)   # the last run
        everything = [row for batch in pushed for row in batch] + [row for _, rows in ops for row in rows]
        keys = sorted({k for k, _, _ in everything})
        (got,) = store.read([(ol_no_ttl, 1)], keys)
        store.close()
        for i, key in enumerate(keys):
            newest = max(h for k, h, _ in everything if k == key)
            winners = {v for k, h, v in everything if k == key and h == newest}
            assert got.table.column("tier")[i].as_py() in winners, (key, newest, winners)
            assert got.event_time_us[i] == int((NOW - timedelta(hours=6 - newest)).timestamp() * 1_000_000)
    finally:
        registry.close()
        shutil.rmtree(folder, ignore_errors=True)
