"""The output check: exact conversions pass, anything that could change a value is an error naming the column."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from quasar.signals import (
    Entity,
    Float32,
    Float64,
    IdList,
    Int64,
    Source,
    Timestamp,
    Vector,
    WeightedIdList,
    signal,
)
from quasar.signals.errors import BackfillError
from quasar.store.output_check import check_output, exact_cast_ok

T0 = datetime(2026, 1, 1, tzinfo=UTC)
END = T0 + timedelta(days=1)
RUN = datetime(2026, 2, 1, 12, tzinfo=UTC)

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")


@signal(entity=user, source=events, features={"n": Int64(), "f": Float32(), "d": Float64(), "at": Timestamp(),
                                               "v": Vector(2), "h": Vector(2, "float16"), "ids": IdList(),
                                               "w": WeightedIdList()})
def wide(batch: pa.Table) -> pa.Table:
    """Every kind of feature."""
    return batch


def base(n: int = 3) -> dict[str, pa.Array]:
    ts = pa.array([T0 + timedelta(hours=i) for i in range(n)], pa.timestamp("us", tz="UTC"))
    return {
        "user_id": pa.array(range(1, n + 1), pa.int64()),
        "event_timestamp": ts,
        "n": pa.array(range(n), pa.int64()),
        "f": pa.array([0.5] * n, pa.float32()),
        "d": pa.array([0.25] * n, pa.float64()),
        "at": ts,
        "v": pa.array([[1.0, 2.0]] * n, pa.list_(pa.float32())),
        "h": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(2 * n, np.float16)), 2),
        "ids": pa.array([[1, 2]] * n, pa.list_(pa.int64())),
        "w": pa.array([[{"id": 1, "weight": 0.5}]] * n,
                      pa.list_(pa.struct([("id", pa.int64()), ("weight", pa.float32())]))),
    }


def check(columns: dict[str, pa.Array]) -> pa.Table:
    return check_output(pa.table(columns), wide, T0, END, created=RUN)


def test_exact_conversions_pass_and_extra_columns_go() -> None:
    cols = base()
    cols["user_id"] = pa.array([1, 2, 3], pa.int32())
    cols["event_timestamp"] = pa.array([(T0 + timedelta(hours=i)).replace(tzinfo=None) for i in range(3)],
                                       pa.timestamp("ns"))
    cols["n"] = pa.array([1, 2, 3], pa.uint8())
    cols["f"] = pa.array([1, 2, 3], pa.int16())
    cols["d"] = pa.array([0.5, 1.5, 2.5], pa.float32())
    cols["v"] = pa.array([[1, 2], [3, 4], None], pa.large_list(pa.float16()))
    cols["ids"] = pa.array([[1], [], None], pa.list_(pa.int32()))
    cols["extra"] = pa.array(["x", "y", "z"])
    out = check(cols)
    assert out.schema.equals(wide.schema.table_schema({"user_id": pa.int64()}))
    assert out.column("user_id").to_pylist() == [1, 2, 3]
    assert out.column("event_timestamp").to_pylist() == [T0 + timedelta(hours=i) for i in range(3)]
    assert out.column("created_timestamp").to_pylist() == [RUN] * 3
    assert out.column("v").to_pylist() == [[1.0, 2.0], [3.0, 4.0], None]
    assert out.column("ids").to_pylist() == [[1], [], None]


def test_pandas_output_and_partial_created_timestamps() -> None:
    frame = pa.table(base()).to_pandas()
    frame["created_timestamp"] = [pd.Timestamp(T0), None, pd.Timestamp(T0)]
    frame["w"] = None              # pandas widens float32 weights to float64, which is refused; all-null is fine
    out = check_output(frame, wide, T0, END, created=RUN)
    assert out.column("w").to_pylist() == [None] * 3
    assert out.column("created_timestamp").to_pylist() == [T0, None, T0]     # a given null stays: the oldest
    assert check_output(pa.table(base()).to_batches()[0], wide, T0, END).num_rows == 3


@pytest.mark.parametrize(("column", "value", "message"), [
    ("f", pa.array([0.1, 0.2, 0.3], pa.float64()), "'f' has type double, which does not convert exactly"),
    ("n", pa.array([1.0, 2.0, 3.0]), "'n' has type double, which does not convert exactly"),
    ("n", pa.array([1, 2, 2**64 - 1], pa.uint64()), "'n' does not convert exactly"),
    ("d", pa.array([1, 2, 3], pa.int64()), "'d' has type int64"),
    ("v", pa.array([[1.0, 2.0]] * 3, pa.list_(pa.float64())), "'v' has type list<item: double>"),
    ("v", pa.array([[1.0, 2.0], [1.0], [1.0, 2.0]], pa.list_(pa.float32())),
     "'v' must hold vectors of 2 values; row 1 has 1"),
    ("v", pa.array([[1.0, None]] * 3, pa.list_(pa.float32())), "'v' holds null elements"),
    ("h", pa.array([[1.0, 2.0]] * 3, pa.list_(pa.float32())), "'h' has type list<item: float>"),
    ("ids", pa.array([[1, None], [], []], pa.list_(pa.int64())), "'ids' holds null elements"),
    ("w", pa.array([[{"id": 1, "weight": None}]] * 3,
                   pa.list_(pa.struct([("id", pa.int64()), ("weight", pa.float32())]))), "'w' holds null elements"),
    ("w", pa.array([[{"weight": 1.0, "id": 1}]] * 3,
                   pa.list_(pa.struct([("weight", pa.float32()), ("id", pa.int64())]))), "'w' has type"),
    ("at", pa.array(["2026-01-01"] * 3), "'at' has type string, which does not convert exactly"),
    ("event_timestamp", pa.array([T0, None, T0], pa.timestamp("us", tz="UTC")),
     "'event_timestamp' has 1 null value"),
    ("event_timestamp", pa.array([T0, END, T0 - timedelta(microseconds=1)], pa.timestamp("us", tz="UTC")),
     r"'event_timestamp' has 2 row\(s\) outside the backfill window .* e.g. row 1 at 2026-01-02T00:00:00\+00:00"),
    ("event_timestamp", pa.array([1, 2, 3], pa.timestamp("ns", tz="UTC")), "'event_timestamp' does not convert"),
    ("user_id", pa.array(["a", "b", "c"]), "'user_id' has type string, which does not convert exactly to the join"),
    ("user_id", pa.array([1, None, 3], pa.int64()), r"'user_id' has 1 null join key\(s\)"),
])
def test_bad_outputs_name_signal_and_column(column: str, value: pa.Array, message: str) -> None:
    cols = base()
    cols[column] = value
    with pytest.raises(BackfillError, match=r"^signal wide: output column " + message):
        check(cols)


def test_missing_and_duplicate_columns() -> None:
    cols = base()
    del cols["ids"]
    with pytest.raises(BackfillError, match=r"signal wide: output column 'ids' is missing \(the transform returned "):
        check(cols)
    table = pa.table(base())
    doubled = pa.Table.from_arrays([*table.columns, table.column("n")], names=[*table.column_names, "n"])
    with pytest.raises(BackfillError, match=r"duplicate column\(s\) \['n'\]"):
        check_output(doubled, wide, T0, END)
    with pytest.raises(BackfillError, match="its transform returned dict, not a pyarrow Table"):
        check_output({"user_id": [1]}, wide, T0, END)


def test_exact_cast_rules() -> None:
    assert exact_cast_ok(pa.int32(), pa.int64()) and exact_cast_ok(pa.null(), pa.float32())
    assert exact_cast_ok(pa.int32(), pa.float64()) and not exact_cast_ok(pa.int64(), pa.float64())
    assert exact_cast_ok(pa.float16(), pa.float32()) and not exact_cast_ok(pa.float64(), pa.float32())
    assert exact_cast_ok(pa.large_string(), pa.string()) and not exact_cast_ok(pa.binary(), pa.string())
    assert exact_cast_ok(pa.timestamp("s"), pa.timestamp("us", tz="UTC"))
    assert not exact_cast_ok(pa.bool_(), pa.int64()) and not exact_cast_ok(pa.int8(), pa.bool_())
    assert exact_cast_ok(pa.list_(pa.float16(), 4), Vector(4).arrow_type())
    assert not exact_cast_ok(pa.list_(pa.float32(), 4), Vector(4, "float16").arrow_type())
