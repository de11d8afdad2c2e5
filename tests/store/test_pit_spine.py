"""Spine normalisation: times to timestamp[us, UTC], join keys checked against the entities, chunking."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pytest

from quasar.signals.errors import DatasetError
from quasar.signals.ufr.types import TIMESTAMP_ARROW
from quasar.store.spine import as_arrow, check_spine_schema, join_columns, normalize_spine, spine_chunks

KEYS = {"user_id": (pa.int64(), "user"), "pin_id": (pa.string(), "pin")}
T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def _times(table: pa.Table) -> list[datetime]:
    return normalize_spine(table, {}).column("event_timestamp").to_pylist()


def test_naive_pandas_times_are_utc_and_other_columns_are_unchanged() -> None:
    frame = pd.DataFrame({"user_id": [1, 2], "event_timestamp": pd.to_datetime(["2026-01-05 10:00:00.0",
                                                                                 "2026-01-05 11:00:00.5"]),
                          "label": [0.5, 1.5]})
    table = normalize_spine(as_arrow(frame), {"user_id": KEYS["user_id"]})
    assert table.schema.field("event_timestamp").type == TIMESTAMP_ARROW
    assert table.column("event_timestamp").to_pylist() == [T0, T0 + timedelta(hours=1, microseconds=500_000)]
    assert table.column_names == ["user_id", "event_timestamp", "label"]
    assert table.column("label").to_pylist() == [0.5, 1.5]


def test_aware_times_keep_their_instant_and_nanoseconds_are_floored() -> None:
    paris = timezone(timedelta(hours=1))
    frame = pd.DataFrame({"event_timestamp": [pd.Timestamp("2026-01-05 11:00", tz=paris),
                                              pd.Timestamp("2026-01-05 10:00:00.000001999", tz="UTC")]})
    assert _times(as_arrow(frame)) == [T0, T0 + timedelta(microseconds=1)]
    before_epoch = pa.table({"event_timestamp": pa.array([-1999], pa.timestamp("ns"))})
    assert _times(before_epoch) == [datetime(1970, 1, 1, tzinfo=UTC) - timedelta(microseconds=2)]
    seconds = pa.table({"event_timestamp": pa.array([int(T0.timestamp())], pa.timestamp("s", tz="Asia/Tokyo"))})
    assert _times(seconds) == [T0]


def test_dates_are_midnight_utc_and_iso_strings_are_parsed() -> None:
    assert _times(pa.table({"event_timestamp": [date(2026, 1, 5)]})) == [datetime(2026, 1, 5, tzinfo=UTC)]
    strings = pa.table({"event_timestamp": ["2026-01-05T10:00:00Z", "2026-01-05T12:00:00+02:00",
                                            "2026-01-05 10:00:00.000001", "2026-01-05T10:00:00Z"]})
    assert _times(strings) == [T0, T0, T0 + timedelta(microseconds=1), T0]
    with pytest.raises(DatasetError, match="'tomorrow' is not an ISO-8601 time"):
        _times(pa.table({"event_timestamp": ["2026-01-05", "tomorrow"]}))


@pytest.mark.parametrize("table, message", [
    (pa.table({"user_id": [1]}), "no 'event_timestamp' column"),
    (pa.table({"event_timestamp": [1_700_000_000]}), "must hold timestamps"),
    (pa.table({"event_timestamp": pa.array([T0, None], TIMESTAMP_ARROW)}), "1 null value"),
])
def test_bad_times_are_dataset_errors(table: pa.Table, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        normalize_spine(table, {})


def test_join_keys_missing_or_of_the_wrong_kind_are_named() -> None:
    good = pa.table({"user_id": pa.array([1], pa.int32()), "pin_id": pa.array(["a"]).dictionary_encode(),
                     "event_timestamp": pa.array([T0], TIMESTAMP_ARROW)})
    check_spine_schema(good.schema, KEYS)
    cols = join_columns(good, KEYS)
    assert cols.schema == pa.schema([("user_id", pa.int64()), ("pin_id", pa.string()),
                                     ("event_timestamp", TIMESTAMP_ARROW)])
    missing = good.drop_columns(["pin_id"])
    with pytest.raises(DatasetError, match="no join key column 'pin_id' \\(entity 'pin'\\)"):
        check_spine_schema(missing.schema, KEYS)
    swapped = good.set_column(0, "user_id", pa.array(["1"]))
    with pytest.raises(DatasetError, match="join key 'user_id' is string but entity 'user' has int64 keys"):
        check_spine_schema(swapped.schema, KEYS)
    numbers = good.set_column(1, "pin_id", pa.array([7]))
    with pytest.raises(DatasetError, match="join key 'pin_id' is int64 but entity 'pin' has string keys"):
        check_spine_schema(numbers.schema, KEYS)
    floats = as_arrow(pd.DataFrame({"user_id": [1, None], "event_timestamp": [T0, T0]}))
    with pytest.raises(DatasetError, match="'Int64' dtype"):
        check_spine_schema(floats.schema, KEYS)


def test_unsigned_keys_that_do_not_fit_int64_are_refused() -> None:
    table = pa.table({"user_id": pa.array([2**63], pa.uint64()), "event_timestamp": pa.array([T0], TIMESTAMP_ARROW)})
    with pytest.raises(DatasetError, match="does not fit entity 'user'"):
        join_columns(table, {"user_id": KEYS["user_id"]})


def test_named_pandas_index_becomes_a_column_and_other_types_are_refused() -> None:
    frame = pd.DataFrame({"user_id": [3], "event_timestamp": [T0]}).set_index("user_id")
    assert as_arrow(frame).column_names == ["user_id", "event_timestamp"]
    assert as_arrow(pd.DataFrame({"event_timestamp": [T0]}, index=[7])).column_names == ["event_timestamp"]
    with pytest.raises(DatasetError, match="got dict"):
        as_arrow({"user_id": [1]})


def test_chunks_cover_the_spine_in_order() -> None:
    table = pa.table({"i": list(range(10))})
    assert [c.column("i").to_pylist() for c in spine_chunks(table, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=3))
    assert [c.num_rows for c in spine_chunks(reader, 4)] == [4, 4, 2]
    assert [c.num_rows for c in spine_chunks(table.slice(0, 0), 4)] == [0]
    empty_reader = pa.RecordBatchReader.from_batches(table.schema, [])
    assert [c.num_rows for c in spine_chunks(empty_reader, 4)] == [0]
    with pytest.raises(DatasetError, match="chunk_rows"):
        list(spine_chunks(table, 0))
