"""Gates on Spark: great-expectations' Spark datasource on a Spark DataFrame gives the verdicts, counts and
observed values its pandas datasource gives on the same batch; and a Spark-engine backfill (computed on Spark,
validated on a Spark DataFrame, written by Spark) refuses, quarantines, warns and commits exactly as the local
one does (tests/store/test_gates.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fixtures.offline import random_events, write_events
from quasar.registry import Registry
from quasar.signals import Entity, Float32, Int64, Source, signal
from quasar.signals.errors import ValidationFailedError
from quasar.signals.signal import Signal
from quasar.store.backfill import backfill
from quasar.store.engines.spark import SparkEngine
from quasar.store.gates import PROP_VALIDATION, validate_frame
from quasar.store.quarantine import RUN_ID, read_quarantine
from quasar.store.sources import SourceReader
from quasar.store.tables import OfflineStore

pytestmark = pytest.mark.spark

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")
PASSING = [{"type": "expect_column_values_to_be_between", "kwargs": {"column": "clicks", "min_value": 0, "max_value": 2}},
           {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}]
FAILING = [{"type": "expect_column_values_to_be_between", "kwargs": {"column": "clicks", "min_value": 0, "max_value": 1}},
           {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "user_id"}},
           {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1, "max_value": 10}}]


def clicks_signal(expectations: list[dict[str, Any]], policy: str = "strict") -> Signal:
    @signal(entity=user, source=events, features={"clicks": Int64(), "dwell": Float32()}, online=True,
            name="user_clicks", expectations=expectations, policy=policy)
    def user_clicks(batch: pa.Table) -> pa.Table:
        return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"], "clicks": batch["clicked"],
                         "dwell": pc.cast(batch["dwell_s"], pa.float32())})

    return user_clicks

EXPECTATIONS = [
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "clicks", "min_value": 0, "max_value": 1}},
    {"type": "expect_column_values_to_be_between",
     "kwargs": {"column": "dwell", "min_value": 0.5, "max_value": 60, "mostly": 0.8}},
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "dwell"}},
    {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "clicks", "value_set": [0, 1, 2]}},
    {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": ["user_id", "event_timestamp"]}},
    {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "user_id"}},
    {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1, "max_value": 50}},
    {"type": "expect_column_max_to_be_between", "kwargs": {"column": "clicks", "min_value": 0, "max_value": 2}},
]


def _batch(seed: int, n: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "user_id": pa.array(rng.integers(1, 30, n), pa.int64()),
        "event_timestamp": pa.array([datetime(2026, 1, 1, tzinfo=UTC)] * n, pa.timestamp("us", "UTC")),
        "clicks": pa.array(rng.integers(0, 3, n), pa.int64(), mask=rng.random(n) < 0.1),
        "dwell": pa.array(rng.exponential(20, n), pa.float64(), mask=rng.random(n) < 0.15),
    })


def test_spark_and_pandas_datasources_agree(spark: Any) -> None:
    for seed, n in [(1, 40), (2, 25), (3, 8)]:
        rows = _batch(seed, n)
        on_pandas = validate_frame(rows.to_pandas(), EXPECTATIONS, name="pandas", index_columns=["user_id"])
        on_spark = validate_frame(spark.createDataFrame(rows.to_pandas()), EXPECTATIONS, name="spark",
                                  index_columns=["user_id"])
        for p, s in zip(on_pandas, on_spark, strict=True):
            assert (p.expectation, p.success, p.unexpected_count, p.element_count) == (
                s.expectation, s.success, s.unexpected_count, s.element_count), (seed, p, s)
            assert p.observed_value == s.observed_value, (seed, p.expectation)
        assert {o.success for o in on_spark} == {True, False}


def test_backfill_gate_on_spark_refuses_quarantines_and_commits(spark_engine: SparkEngine, tmp_path: Path,
                                                                 offline_store: OfflineStore) -> None:
    write_events(random_events(n=300, days=4, seed=9, users=15), tmp_path / "data" / "events")
    engine = spark_engine
    reader = SourceReader(root=tmp_path, store=offline_store, catalog=offline_store.catalog)
    with Registry.open(f"sqlite:///{tmp_path / 'registry.db'}") as registry:
        registry.register_definitions([user], [events], [clicks_signal(PASSING)], module="tests.gates_spark")

        def run(sig: Any) -> Any:
            return backfill(signal=sig, version=1, start="2026-01-01", end="2026-01-05", store=offline_store,
                            engine=engine, sources=reader, runs=registry)

        good = run(clicks_signal(PASSING))
        assert good.validation is not None
        assert (good.validation["engine"], good.validation["verdict"]) == ("spark", "passed")
        with pytest.raises(ValidationFailedError, match="failed 2 of 3 expectations") as info:
            run(clicks_signal(FAILING))
        assert offline_store.current_snapshot_id("user_clicks", 1) == good.snapshot_id
        failed = registry.runs("user_clicks")[0]
        assert failed.status == "failed" and failed.details["validation"]["engine"] == "spark"
        assert failed.details["validation"] == info.value.details["validation"]
        quarantined = read_quarantine(offline_store, clicks_signal(FAILING), 1)
        assert quarantined.num_rows == 300 and set(quarantined.column(RUN_ID).to_pylist()) == {failed.id}
        warned = run(clicks_signal(FAILING, policy="warn"))
        assert warned.validation is not None and warned.validation["verdict"] == "warned"
        snapshot = offline_store.table("user_clicks", 1).current_snapshot()
        assert snapshot.snapshot_id == warned.snapshot_id and snapshot.summary[PROP_VALIDATION] == "warned"


def test_a_gate_without_examples_gives_the_outcomes_with_examples_when_no_row_is_unexpected(spark: Any) -> None:
    """The Spark backfill's gate runs GX first without unexpected examples (fewer Spark jobs) and again with
    them only when a row was unexpected: where none is, the outcomes are the same either way. The data
    source is made once per Spark session."""
    from quasar.store import gates

    rows = _batch(4, 30)
    passing = [e for e in EXPECTATIONS if e["type"] not in ("expect_column_values_to_be_unique",
                                                           "expect_compound_columns_to_be_unique")]
    frame = spark.createDataFrame(rows.to_pandas())
    full = validate_frame(frame, passing, name="spark", index_columns=["user_id", "event_timestamp"])
    bare = validate_frame(frame, passing, name="spark", examples=0)
    assert [o.to_dict() for o in bare if not o.unexpected_count] == \
        [o.to_dict() for o in full if not o.unexpected_count]
    assert any(o.unexpected_count for o in full)                # the check covers both kinds
    assert [o.success for o in bare] == [o.success for o in full]
    assert gates._spark_batches(frame) is gates._spark_batches(spark.createDataFrame(rows.to_pandas()))
