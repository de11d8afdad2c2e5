"""The feature logger: served requests land in the service's Iceberg log table with the served values, the queue
bound holds while the writer is stuck (rows dropped and counted, submit never waits), close flushes, a new
service version adds its columns, a failing catalog is counted and never raised."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from fixtures.request_world import build_world
from quasar.online.feature_log import (
    FeatureLogger,
    ServedVectors,
    served_vectors_from,
    to_storage_array,
    vectors_for,
)
from quasar.online.feature_log_tables import STATUS_SUFFIX, LogTables
from quasar.online.response import plan_request, read_online_features
from quasar.signals.ufr.types import Float32, Float64, Int64, Vector
from quasar.store.catalog import open_catalog


def _catalog(root: Path) -> Any:
    return open_catalog(uri=f"sqlite:///{root}/catalog.db", warehouse=str(root / "warehouse"))


def _vectors(i: int, rows: int = 5, *, version: int = 1, extra: bool = False, rate: float = 1.0) -> ServedVectors:
    """A synthetic served request of service ``svc``: ``rows`` users, one float feature (and a vector in v2)."""
    names = ["user_id", "ctr", *(["taste"] if extra else [])]
    results = [{"values": [i * 100 + r for r in range(rows)], "statuses": ["PRESENT"] * rows,
                "event_timestamps": ["1970-01-01T00:00:00.000000Z"] * rows},
               {"values": [float(r) / 8 if r % 3 else None for r in range(rows)],
                "statuses": ["PRESENT" if r % 3 else "NOT_FOUND" for r in range(rows)],
                "event_timestamps": ["2026-01-01T00:00:00.000000Z"] * rows}]
    types: dict[str, Any] = {"ctr": Float64()}
    if extra:
        results.append({"values": [[0.5, float(r)] for r in range(rows)], "statuses": ["PRESENT"] * rows,
                        "event_timestamps": ["2026-01-01T00:00:00.000000Z"] * rows})
        types["taste"] = Vector(2, "float16")
    return vectors_for(service="svc", service_version=version, sample_rate=rate,
                       response={"metadata": {"feature_names": names}, "results": results}, join_keys=["user_id"],
                       request_fields={"position": list(range(rows))}, types=types, versions={"stats": version},
                       request_id=f"r{i}", served_at_us=1_767_225_600_000_000 + i)


def _rows(root: Path, service: str = "svc") -> pa.Table:
    return _catalog(root).load_table(("signals", f"{service}__log")).scan().to_arrow()


def test_logged_rows_land_in_iceberg_with_the_served_values(tmp_path: Path, project_env: str) -> None:
    world = build_world(tmp_path)
    p = world.platform
    expanded = p.feature_lists.expand("ranker", lambda n, v: (lambda sv: (sv.signal, sv.version))(
        p.registry.resolve(n, v)))
    service = expanded.service
    assert service is not None and service.service.logging is not None
    served = []
    with FeatureLogger(lambda: p.catalog, p.config.offline.namespace, batch_rows=7) as logger:
        for i in range(6):
            request = world.request(1 if i % 2 else 9)          # row mode and batch mode
            keys = {k: request[k] for k in ("user_id", "pin_id")}
            fields = {k: request[k] for k in ("position", "query")}
            plan = plan_request(keys, expanded.refs, expanded.resolve, lookup=expanded.lookup, request_data=fields)
            response = read_online_features(p.online_store, plan)
            vectors = served_vectors_from(plan, response, service=service.name, service_version=service.version,
                                          sample_rate=service.service.logging.sample_rate, request_id=f"req-{i}")
            assert logger.submit(vectors)
            served.append((request, response, vectors))
    total = sum(len(r["user_id"]) for r, _, _ in served)
    assert logger.stats.logged_rows == total and logger.stats.dropped_rows == logger.stats.failed_rows == 0

    table = p.catalog.load_table((p.config.offline.namespace, "ranker__log"))   # pyiceberg, not our reader
    rows = table.scan().to_arrow().sort_by([("__request_id", "ascending")])
    assert rows.num_rows == total
    at = 0
    for request, response, vectors in served:
        n = len(request["user_id"])
        got = rows.slice(at, n)
        at += n
        assert set(got.column("__request_id").to_pylist()) == {vectors.request_id}
        stamp = got.column("event_timestamp").to_pylist()[0]
        assert stamp == datetime.fromtimestamp(vectors.served_at_us / 1e6, UTC)
        assert json.loads(got.column("__versions")[0].as_py()) == vectors.versions
        assert set(json.loads(got.column("__versions")[0].as_py())) == {"user_stats", "pin_stats", "ctr_boost",
                                                                        "pin_score"}
        for name in ("user_id", "pin_id", "position", "query"):
            assert got.column(name).to_pylist() == request[name], name
        names = response["metadata"]["feature_names"]
        assert names == ["user_id", "pin_id", "clicks", "boost", "long_query", "score"]
        for name, result in zip(names[2:], response["results"][2:], strict=True):
            assert got.column(name).to_pylist() == result["values"], name
            assert got.column(name + STATUS_SUFFIX).to_pylist() == result["statuses"], name
        assert got.column("__score").null_count == n and got.column("__source").to_pylist() == ["serve"] * n
    # the product's reader gives the same rows, typed
    read = LogTables(p.catalog, p.config.offline.namespace).read("ranker")
    assert read.num_rows == total and read.schema.field("clicks").type == pa.int64()


def test_the_queue_bound_holds_while_the_writer_is_stuck(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()

    def stuck_catalog() -> Any:                     # the writer's first write waits here
        started.set()
        release.wait()
        return _catalog(tmp_path)

    logger = FeatureLogger(stuck_catalog, "signals", max_queue=200, batch_rows=50, flush_interval_s=0.05)
    assert logger.submit(_vectors(0))
    assert started.wait(30)                         # the first request is out of the queue, being written
    accepted: list[bool] = []
    lock = threading.Lock()

    def flood(worker: int) -> None:
        mine = [logger.submit(_vectors(1 + worker * 1000 + j)) for j in range(500)]
        with lock:
            accepted.extend(mine)

    threads = [threading.Thread(target=flood, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 2,000 requests of 5 rows came while the writer was stuck: exactly 200 rows fit, the rest were dropped
    assert sum(accepted) == 40 and len(accepted) == 2000
    assert logger.queued_rows == 200 and logger.stats.peak_queued_rows == 200
    assert logger.stats.dropped_rows == (2000 - 40) * 5
    release.set()
    logger.close()
    assert logger.stats.logged_rows == 41 * 5 and logger.stats.failed_rows == 0
    assert _rows(tmp_path).num_rows == 41 * 5
    assert not logger.submit(_vectors(9999))        # closed: dropped, counted
    assert logger.stats.dropped_rows == (2000 - 40) * 5 + 5


def test_close_flushes_and_flush_waits_for_the_write(tmp_path: Path) -> None:
    logger = FeatureLogger(lambda: _catalog(tmp_path), "signals", batch_rows=10_000, flush_interval_s=3600)
    for i in range(3):
        assert logger.submit(_vectors(i))
    logger.flush()
    assert logger.stats.logged_rows == 15 and _rows(tmp_path).num_rows == 15
    for i in range(3, 7):
        assert logger.submit(_vectors(i))
    logger.close()
    rows = _rows(tmp_path)
    assert rows.num_rows == 35 and logger.stats.logged_rows == 35
    assert sorted(set(rows.column("__request_id").to_pylist())) == sorted(f"r{i}" for i in range(7))


def test_a_new_service_version_adds_its_columns(tmp_path: Path) -> None:
    with FeatureLogger(lambda: _catalog(tmp_path), "signals", flush_interval_s=3600) as logger:
        logger.submit(_vectors(0, 4))
        logger.flush()
        logger.submit(_vectors(1, 3, version=2, extra=True))
        logger.submit(_vectors(2, 2))
    read = LogTables(_catalog(tmp_path), "signals").read("svc").sort_by("__request_id")
    assert read.num_rows == 9
    assert read.schema.field("taste").type == Vector(2, "float16").arrow_type()
    assert read.column("taste").to_pylist() == [None] * 4 + [[0.5, 0.0], [0.5, 1.0], [0.5, 2.0]] + [None] * 2
    assert read.column("__service_version").to_pylist() == [1] * 4 + [2] * 3 + [1] * 2
    assert read.column("ctr").to_pylist()[:4] == [None, 0.125, 0.25, None]


def test_a_failing_catalog_is_counted_never_raised(tmp_path: Path) -> None:
    calls = []

    def broken() -> Any:
        calls.append(1)
        raise OSError("catalog unreachable")

    with FeatureLogger(broken, "signals", flush_interval_s=3600) as logger:
        assert logger.submit(_vectors(0))
        logger.flush()
        assert logger.submit(_vectors(1))
    assert logger.stats.failed_rows == 10 and logger.stats.logged_rows == 0 and len(calls) == 2


def test_sampling_keeps_about_the_rate_and_counts_the_rest(tmp_path: Path) -> None:
    events: dict[str, int] = {}

    def observe(event: str, rows: int) -> None:
        events[event] = events.get(event, 0) + rows

    with FeatureLogger(lambda: _catalog(tmp_path), "signals", seed=3, observe=observe) as logger:
        kept = sum(logger.submit(_vectors(i, 1, rate=0.25)) for i in range(400))
    assert 60 < kept < 140
    assert logger.stats.sampled_out == 400 - kept and logger.stats.logged_rows == kept
    assert events == {"sampled_out": 400 - kept, "logged": kept}


@pytest.mark.parametrize(("ftype", "values", "expected"), [
    (Float32(), [0.1 + 0.0, None], [pa.scalar(0.1, pa.float32()).as_py(), None]),
    (Int64(), [1, None], [1, None]),
])
def test_served_values_are_stored_in_the_offline_types(ftype: Any, values: list[Any], expected: list[Any]) -> None:
    assert to_storage_array(values, ftype).to_pylist() == expected
