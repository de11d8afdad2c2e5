"""Materialization from real Iceberg tables into a real Redis: the latest row per entity against a plain Python
reference, incremental runs, no-op re-runs, interrupted runs that converge, and the run log."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fixtures.online import dump_redis, ol_all_types, ol_offline_only, ol_short, random_rows
from quasar.online.materialize import files_to_read, materialize, plan, state_key
from quasar.online.redis_store import RedisOnlineStore
from quasar.online.store import FeatureStatus, OnlineColumns, OnlineStore
from quasar.registry import Registry
from quasar.signals.errors import RequestError, StoreError
from quasar.signals.signal import Signal
from quasar.signals.ufr.codec import encode
from quasar.signals.ufr.schema import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from quasar.store.arrow_types import to_storage
from quasar.store.tables import OfflineStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}")
    reg.register_definitions([ol_all_types.entity], [ol_all_types.source],
                             [ol_all_types, ol_short, ol_offline_only], module="fixtures.online")
    yield reg
    reg.close()


def day_rows(sig: Signal, first_day: int, days: int, *, n: int = 160, keys: int = 30, seed: int = 0) -> pa.Table:
    """``n`` random rows over ``days`` days from ``T0 + first_day``; event times on the hour, so one key often
    has several rows at one time, told apart by created_timestamp (null, the oldest, at most once per tie)."""
    rng = np.random.default_rng(seed)
    key_values = [int(k) for k in rng.integers(1, keys + 1, n)]
    hours = rng.integers(0, 24 * days, n)
    times = [T0 + first_day * DAY + timedelta(hours=int(h)) for h in hours]
    created: list[datetime | None] = [T0 + timedelta(seconds=int(s)) for s in rng.permutation(n)]
    seen = set()
    for i in range(n):
        if rng.random() < 0.3 and (key_values[i], times[i]) not in seen:
            created[i] = None
            seen.add((key_values[i], times[i]))
    return random_rows(sig, key_values, times=times, created=created, seed=seed)


def reference(tables: list[pa.Table], sig: Signal) -> pa.Table:
    """The latest row per key, by a plain loop: latest event time, then larger created time (null oldest)."""
    rows = pa.concat_tables(tables)
    best: dict[Any, tuple[Any, int]] = {}
    keys = rows.column(sig.entity.join_key).to_pylist()
    times = rows.column(EVENT_TIMESTAMP).cast(pa.int64()).to_pylist()
    created = rows.column(CREATED_TIMESTAMP).cast(pa.int64()).to_pylist()
    for i, key in enumerate(keys):
        rank = (times[i], -(2**63) if created[i] is None else created[i])
        if key not in best or rank > best[key][0]:
            best[key] = (rank, i)
    return rows.take(pa.array(sorted(i for _, i in best.values()), pa.int64()))


def expected_dump(project: str, sig: Signal, latest: pa.Table, version: int = 1) -> dict[bytes, dict[bytes, bytes]]:
    records = encode(sig.schema, latest)
    keys = latest.column(sig.entity.join_key).to_pylist()
    field = f"{sig.name}@{version}".encode()
    return {f"{project}:{sig.entity.name}:{k}".encode(): {field: r} for k, r in zip(keys, records, strict=True)}


def redis_state(url: str, project: str) -> dict[bytes, dict[bytes, bytes]]:
    prefix = f"{project}:".encode()
    return {k: v for k, v in dump_redis(url).items() if k.startswith(prefix)}


def write_days(offline: OfflineStore, sig: Signal, rows: pa.Table, first_day: int, days: int) -> None:
    offline.replace_window(sig, 1, rows, T0 + first_day * DAY, T0 + (first_day + days) * DAY)


def test_latest_row_per_entity_incremental_runs_and_no_ops(offline_store: OfflineStore, registry: Registry,
                                                           redis_url: str) -> None:
    online = RedisOnlineStore(redis_url, project="mat")
    first = day_rows(ol_all_types, 0, 3, seed=1)
    write_days(offline_store, ol_all_types, first, 0, 3)
    files = offline_store.plan_files("ol_all_types", 1)
    result = materialize(signal=ol_all_types, version=1, offline=offline_store, online=online, state=registry,
                         batch_rows=40)
    latest = reference([first], ol_all_types)
    assert redis_state(redis_url, "mat") == expected_dump("mat", ol_all_types, latest)
    assert (result.rows_read, result.files_read, result.incremental) == (160, len(files), False)
    assert result.entities == latest.num_rows <= result.rows_written    # small batches: a key may be written twice
    assert result.snapshot_id == offline_store.current_snapshot_id("ol_all_types", 1)
    assert registry.get_state(state_key("ol_all_types", 1)) == {"snapshot_id": result.snapshot_id,
                                                                "files": sorted(files), "ttl_ms": 7 * 86_400_000,
                                                                "format": 2, "future": {}}

    # nothing new: a no-op that reads nothing
    again = materialize(signal=ol_all_types, version=1, offline=offline_store, online=online, state=registry)
    assert (again.rows_read, again.files_read, again.rows_written, again.entities) == (0, 0, 0, 0)
    assert again.incremental and again.snapshot_id == result.snapshot_id

    # two new days: only their files are read
    second = day_rows(ol_all_types, 3, 2, seed=2)
    write_days(offline_store, ol_all_types, second, 3, 2)
    new_files = sorted(set(offline_store.plan_files("ol_all_types", 1)) - set(files))
    step = materialize(signal=ol_all_types, version=1, offline=offline_store, online=online, state=registry,
                       batch_rows=1000)
    assert (step.rows_read, step.files_read, step.incremental) == (160, len(new_files), True)
    assert step.rows_written <= step.entities                        # one batch: each key once, if newer
    assert redis_state(redis_url, "mat") == expected_dump("mat", ol_all_types, reference([first, second],
                                                                                          ol_all_types))
    # reading online with "now" just after the data gives the same rows, every one present or a null value
    latest = reference([first, second], ol_all_types)
    keys = latest.column("user_id").to_pylist()
    (got,) = online.read([(ol_all_types, 1)], keys, now_us=int((T0 + 5 * DAY).timestamp() * 1e6))
    assert got.table.select(["clicks", "name", "recent"]).equals(latest.select(["clicks", "name", "recent"]))
    assert set(got.status["clicks"].tolist()) <= {FeatureStatus.PRESENT, FeatureStatus.NULL_VALUE}

    # re-backfilling one old day: a correction; Redis then holds exactly the new offline latest rows
    redo = day_rows(ol_all_types, 1, 1, seed=3)
    write_days(offline_store, ol_all_types, redo, 1, 1)
    step = materialize(signal=ol_all_types, version=1, offline=offline_store, online=online, state=registry)
    day_one = pc.equal(pc.floor_temporal(first.column(EVENT_TIMESTAMP), unit="day"), pa.scalar(T0 + DAY))
    kept = first.filter(pc.invert(day_one))
    assert step.rows_read >= redo.num_rows and step.incremental
    assert redis_state(redis_url, "mat") == expected_dump("mat", ol_all_types, reference([kept, second, redo],
                                                                                          ol_all_types))
    runs = registry.runs("ol_all_types", kind="materialize")
    assert [r.status for r in runs] == ["succeeded"] * 4
    assert runs[0].snapshot_id == step.snapshot_id and runs[0].details["rows_read"] == step.rows_read
    online.close()


def test_an_appended_tie_rereads_its_partition(offline_store: OfflineStore, registry: Registry,
                                               redis_url: str) -> None:
    """A file appended next to a materialized one, holding a row at the same event time but created earlier:
    the incremental run reads the whole partition and keeps the row a full run keeps."""
    online = RedisOnlineStore(redis_url, project="tie")
    t = T0 + timedelta(hours=5)
    rows = random_rows(ol_short, [1, 2], times=[t, t], created=[T0 + DAY, None], seed=4)
    write_days(offline_store, ol_short, rows, 0, 1)
    materialize(signal=ol_short, version=1, offline=offline_store, online=online, state=registry)
    extra = random_rows(ol_short, [1, 2], times=[t, t], created=[T0, T0], seed=5)
    offline_store.table("ol_short", 1).append(to_storage(extra, ol_short))
    files = plan(offline_store, ol_short, 1, offline_store.current_snapshot_id("ol_short", 1))
    covered = set(registry.get_state(state_key("ol_short", 1))["files"])
    groups = files_to_read(files, {f.path for f in files} - covered)
    step = materialize(signal=ol_short, version=1, offline=offline_store, online=online, state=registry)
    assert step.files_read == sum(len(g) for g in groups) >= 2 and step.rows_read == 4
    # key 1: its first row was created later and stays; key 2: the null created_timestamp is the oldest
    latest = pa.concat_tables([rows.slice(0, 1), extra.slice(1, 1)])
    assert redis_state(redis_url, "tie") == expected_dump("tie", ol_short, latest)
    assert latest.equals(reference([rows, extra], ol_short))
    online.close()


class Interrupted(Exception):
    pass


class FailingStore(OnlineStore):
    """A real store whose ``write`` is cut off after ``calls`` successful calls (a run killed midway)."""

    def __init__(self, inner: RedisOnlineStore, calls: int) -> None:
        self.inner, self.calls = inner, calls

    def write(self, signal: Signal, version: int, rows: pa.Table) -> int:
        if self.calls == 0:
            raise Interrupted("killed")
        self.calls -= 1
        return self.inner.write(signal, version, rows)

    def mirror(self, signal: Signal, version: int, rows: pa.Table, **options: Any) -> tuple[int, int]:
        if self.calls == 0:
            raise Interrupted("killed")
        self.calls -= 1
        return self.inner.mirror(signal, version, rows, **options)

    def scan(self, signal: Signal, version: int, *, count: int = 1000) -> Any:
        return self.inner.scan(signal, version, count=count)

    def read(self, signal_versions: Any, keys: Any) -> list[OnlineColumns]:
        return self.inner.read(signal_versions, keys)

    def ping(self) -> None:
        self.inner.ping()

    def close(self) -> None:
        self.inner.close()


def test_an_interrupted_run_then_a_rerun_equals_one_clean_run(offline_store: OfflineStore, registry: Registry,
                                                              redis_url: str) -> None:
    first, second = day_rows(ol_all_types, 0, 3, seed=6, n=300), day_rows(ol_all_types, 3, 2, seed=7, n=300)
    clean = RedisOnlineStore(redis_url, project="clean")
    broken = RedisOnlineStore(redis_url, project="broken")
    write_days(offline_store, ol_all_types, first, 0, 3)

    class CleanState:                      # the clean run keeps its watermark apart from the broken one's
        def __init__(self) -> None:
            self.state: dict[str, Any] = {}

        def get_state(self, key: str) -> dict[str, Any] | None:
            return self.state.get(key)

        def set_state(self, key: str, value: dict[str, Any]) -> None:
            self.state[key] = value

        def start_run(self, **_: Any) -> int:
            return 0

        def finish_run(self, run_id: int, **_: Any) -> None:
            pass

    clean_state = CleanState()
    for stage in (first, second):
        if stage is second:
            write_days(offline_store, ol_all_types, second, 3, 2)
        materialize(signal=ol_all_types, version=1, offline=offline_store, online=clean, state=clean_state,
                    batch_rows=30)
        before = registry.get_state(state_key("ol_all_types", 1))
        with pytest.raises(StoreError, match=r"materializing signal ol_all_types v1 failed: Interrupted: killed"):
            materialize(signal=ol_all_types, version=1, offline=offline_store, online=FailingStore(broken, 1),
                        state=registry, batch_rows=30)
        assert registry.get_state(state_key("ol_all_types", 1)) == before        # the watermark did not move
        partial = redis_state(redis_url, "broken")
        rerun = materialize(signal=ol_all_types, version=1, offline=offline_store, online=broken, state=registry,
                            batch_rows=30)
        assert rerun.rows_read == stage.num_rows
        final = redis_state(redis_url, "broken")
        assert partial != final                          # the interrupted run had written only part of it
        assert {k.replace(b"broken:", b"clean:", 1): v for k, v in final.items()} == redis_state(redis_url, "clean")
    runs = registry.runs("ol_all_types", kind="materialize")
    assert [r.status for r in runs] == ["succeeded", "failed", "succeeded", "failed"]
    assert "Interrupted: killed" in runs[1].details["error"]
    clean.close()
    broken.close()


def test_offline_only_and_never_backfilled_signals(offline_store: OfflineStore, registry: Registry,
                                                   online_store: RedisOnlineStore) -> None:
    with pytest.raises(RequestError, match="signal 'ol_offline_only' is not an online signal"):
        materialize(signal=ol_offline_only, version=1, offline=offline_store, online=online_store, state=registry)
    result = materialize(signal=ol_short, version=1, offline=offline_store, online=online_store, state=registry)
    assert (result.snapshot_id, result.rows_written, result.files_read) == (None, 0, 0)
    assert registry.get_state(state_key("ol_short", 1)) is None
    with pytest.raises(Exception, match="batch_rows must be a positive int"):
        materialize(signal=ol_short, version=1, offline=offline_store, online=online_store, state=registry,
                    batch_rows=0)


KILLED_CHILD = """
import os, signal, sys
from fixtures.online import ol_all_types
from quasar.online.materialize import materialize
from quasar.online.redis_store import RedisOnlineStore
from quasar.registry import Registry
from quasar.store.catalog import open_catalog
from quasar.store.tables import OfflineStore

catalog_uri, warehouse, registry_url, redis_url = sys.argv[1:5]
offline = OfflineStore(open_catalog(uri=catalog_uri, warehouse=warehouse), namespace="signals", buckets=4)
store = RedisOnlineStore(redis_url, project="killed")
write = store.write
calls = []

def write_then_die(sig, version, rows):
    if calls:
        os.kill(os.getpid(), signal.SIGKILL)       # no exception handler, no run record, no state: a hard kill
    calls.append(1)
    return write(sig, version, rows)

store.write = write_then_die
materialize(signal=ol_all_types, version=1, offline=offline, online=store, state=Registry.open(registry_url),
            batch_rows=20)
"""


def test_a_killed_process_then_a_rerun_equals_one_clean_run(tmp_path: Path, offline_store: OfflineStore,
                                                            registry: Registry, redis_url: str) -> None:
    rows = day_rows(ol_all_types, 0, 2, seed=8, n=200)
    write_days(offline_store, ol_all_types, rows, 0, 2)
    root = Path(__file__).resolve().parents[2]
    child = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD, f"sqlite:///{tmp_path / 'catalog' / 'catalog.db'}",
         str(tmp_path / "warehouse"), registry.url, redis_url],
        env={**os.environ, "PYTHONPATH": f"{root}:{root / 'tests'}"}, capture_output=True,
        timeout=120)
    assert child.returncode == -9, child.stderr.decode()[-2000:]
    partial = redis_state(redis_url, "killed")
    expected = expected_dump("killed", ol_all_types, reference([rows], ol_all_types))
    assert partial and partial != expected and registry.get_state(state_key("ol_all_types", 1)) is None
    assert registry.runs("ol_all_types", kind="materialize")[0].status == "running"
    online = RedisOnlineStore(redis_url, project="killed")
    rerun = materialize(signal=ol_all_types, version=1, offline=offline_store, online=online, state=registry,
                        progress=True)
    assert rerun.rows_read == 200 and not rerun.incremental
    assert redis_state(redis_url, "killed") == expected
    online.close()


def test_an_interrupted_correction_then_a_rerun_equals_the_offline_truth(offline_store: OfflineStore,
                                                                         registry: Registry, redis_url: str) -> None:
    """A re-backfill that deletes and moves rows; the correcting run is cut off after one write, then re-run."""
    first = pa.concat_tables([day_rows(ol_all_types, 0, 2, seed=11, n=120, keys=20),
                              day_rows(ol_all_types, 2, 1, seed=13, n=80, keys=40)])   # keys 21..40: day 2 only
    write_days(offline_store, ol_all_types, first, 0, 3)
    online = RedisOnlineStore(redis_url, project="redo")
    materialize(signal=ol_all_types, version=1, offline=offline_store, online=online, state=registry, batch_rows=25)
    redo = day_rows(ol_all_types, 2, 1, seed=12, n=20, keys=10)        # day 2 again: fewer keys, other rows
    write_days(offline_store, ol_all_types, redo, 2, 1)
    before = registry.get_state(state_key("ol_all_types", 1))
    with pytest.raises(StoreError, match="Interrupted: killed"):
        materialize(signal=ol_all_types, version=1, offline=offline_store, online=FailingStore(online, 1),
                    state=registry, batch_rows=25)
    assert registry.get_state(state_key("ol_all_types", 1)) == before
    rerun = materialize(signal=ol_all_types, version=1, offline=offline_store, online=online, state=registry,
                        batch_rows=25)
    assert rerun.incremental
    day_two = pc.equal(pc.floor_temporal(first.column(EVENT_TIMESTAMP), unit="day"), pa.scalar(T0 + 2 * DAY))
    expected = expected_dump("redo", ol_all_types, reference([first.filter(pc.invert(day_two)), redo], ol_all_types))
    assert redis_state(redis_url, "redo") == expected
    assert len(expected) < len(set(first.column("user_id").to_pylist()))     # some entities were deleted
    online.close()
