"""Push: rows checked against the signal's schema, then written online with newer-wins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest

from fixtures.online import NOW, ol_accounts, ol_all_types, ol_offline_only, ol_short, random_rows
from quasar.online.push import push, validate_push_rows
from quasar.online.redis_store import RedisOnlineStore
from quasar.signals.errors import RequestError, SchemaError
from quasar.signals.ufr.schema import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from quasar.signals.ufr.types import TIMESTAMP_ARROW


def test_pushed_table_is_read_back_exactly(online_store: RedisOnlineStore) -> None:
    rows = random_rows(ol_all_types, [1, 2, 3], seed=11)
    assert push(signal=ol_all_types, version=1, rows=rows, online=online_store) == 3
    (got,) = online_store.read([(ol_all_types, 1)], [1, 2, 3])
    assert got.table.select(["clicks", "name", "recent", "weighted"]).equals(
        rows.select(["clicks", "name", "recent", "weighted"]))
    # an older push loses to what is stored; a newer one wins
    older = random_rows(ol_all_types, [1], times=[NOW - timedelta(days=2)], seed=12)
    assert push(signal=ol_all_types, version=1, rows=older, online=online_store) == 0
    newer = random_rows(ol_all_types, [1], times=[NOW + timedelta(seconds=1)], seed=13)
    assert push(signal=ol_all_types, version=1, rows=newer, online=online_store) == 1
    (got,) = online_store.read([(ol_all_types, 1)], [1])
    assert got.table.column("clicks").to_pylist() == newer.column("clicks").to_pylist()


def test_list_of_dicts_with_naive_and_offset_timestamps(online_store: RedisOnlineStore) -> None:
    naive = datetime(2026, 3, 1, 12, 0, 0)
    plus_two = datetime(2026, 3, 1, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    rows = [{"user_id": 1, "event_timestamp": naive, "count": 3},
            {"user_id": 2, "event_timestamp": plus_two, "count": None}]
    table = validate_push_rows(ol_short, rows)
    assert table.schema == pa.schema([("user_id", pa.int64()), (EVENT_TIMESTAMP, TIMESTAMP_ARROW),
                                      (CREATED_TIMESTAMP, TIMESTAMP_ARROW), ("count", pa.int64())])
    utc_noon = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert table.column(EVENT_TIMESTAMP).to_pylist() == [utc_noon, utc_noon]
    assert push(signal=ol_short, version=1, rows=rows, online=online_store) == 2
    (got,) = online_store.read([(ol_short, 1)], [1, 2], now_us=int(utc_noon.timestamp() * 1_000_000))
    assert got.table.column("count").to_pylist() == [3, None]
    # compatible types are cast exactly (an int balance to float64, lists to vectors); None and [] take the type
    acct = validate_push_rows(ol_accounts, [{"account_id": "a", "event_timestamp": NOW, "balance": 1,
                                            "tags": [1, 2], "created_timestamp": NOW}])
    assert acct.column_names == ["account_id", EVENT_TIMESTAMP, CREATED_TIMESTAMP, "balance", "tags"]
    assert acct.column("balance").type == pa.float64() and acct.column("balance").to_pylist() == [1.0]
    vectors = validate_push_rows(ol_all_types, [{**{n: None for n in ol_all_types.schema.names},
                                                 "user_id": 5, "event_timestamp": NOW, "half": [0.5, 1.0, 2.0],
                                                 "recent": []}])
    assert vectors.column("half").type == pa.list_(pa.field("item", pa.float16(), nullable=False), 3)
    assert vectors.column("half").to_pylist() == [[0.5, 1.0, 2.0]]
    assert vectors.column("recent").to_pylist() == [[]] and vectors.column("taste").to_pylist() == [None]
    assert validate_push_rows(ol_short, []).num_rows == 0


def _row(**changes: Any) -> dict[str, Any]:
    return {"user_id": 1, "event_timestamp": NOW, "count": 1, **changes}


@pytest.mark.parametrize(("rows", "message"), [
    ([{"user_id": 1, "event_timestamp": NOW}], r"feature column 'count' is missing from row 0"),
    ([_row(extra=1)], r"unknown column 'extra' in row 0"),
    ([{"event_timestamp": NOW, "count": 1}], r"column 'user_id' is missing"),
    ([_row(), {"user_id": 2, "event_timestamp": NOW}], r"feature column 'count' is missing from row 1"),
    ([_row(count="three")], r"feature column 'count' has Arrow type string"),
    ([_row(count=1.5)], r"feature column 'count' of Arrow type double cannot be cast safely"),
    ([_row(user_id="u1")], r"column 'user_id' has Arrow type string, but user keys are int64"),
    ([_row(event_timestamp="yesterday")], r"column 'event_timestamp' row 0: 'yesterday' is not an ISO-8601 time"),
    ([_row(event_timestamp=None)], r"column 'event_timestamp' has 1 null value"),
    ([_row(user_id=None)], r"column 'user_id' has 1 null value"),
    ([_row(), "not a row"], r"row 1 is a str"),
    ("rows", r"push rows as a pyarrow Table or a list of dicts"),
])
def test_bad_rows_name_the_column(rows: Any, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        validate_push_rows(ol_short, rows)


def test_bad_tables_name_the_column(online_store: RedisOnlineStore) -> None:
    rows = random_rows(ol_all_types, [1, 2], seed=14)
    with pytest.raises(SchemaError, match=r"feature column 'taste' is missing from the rows"):
        validate_push_rows(ol_all_types, rows.drop_columns(["taste"]))
    with pytest.raises(SchemaError, match=r"unknown column 'label' in the rows"):
        validate_push_rows(ol_all_types, rows.append_column("label", pa.array([1, 2])))
    with pytest.raises(SchemaError, match=r"feature column 'taste' has Arrow type string"):
        validate_push_rows(ol_all_types, rows.set_column(rows.schema.get_field_index("taste"), "taste",
                                                          pa.array(["a", "b"])))
    with pytest.raises(SchemaError, match=r"feature column 'recent': an id list holds a null id"):
        validate_push_rows(ol_all_types, rows.set_column(rows.schema.get_field_index("recent"), "recent",
                                                          pa.array([[1, None], []], pa.list_(pa.int64()))))
    nanos = pa.array([datetime(2026, 1, 1, tzinfo=UTC)] * 2, pa.timestamp("ns", tz="UTC"))
    assert validate_push_rows(ol_all_types, rows.set_column(1, EVENT_TIMESTAMP, nanos)).column(
        EVENT_TIMESTAMP).type == TIMESTAMP_ARROW
    odd = pa.array([1_767_225_600_000_000_001] * 2, pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
    with pytest.raises(SchemaError, match=r"column 'event_timestamp' of Arrow type timestamp\[ns, tz=UTC\] cannot "
                                          r"be read as timestamp\[us, tz=UTC\]"):
        validate_push_rows(ol_all_types, rows.set_column(1, EVENT_TIMESTAMP, odd))
    with pytest.raises(RequestError, match="signal 'ol_offline_only' is not an online signal"):
        push(signal=ol_offline_only, version=1, rows=[], online=online_store)


def test_a_pandas_frame_is_accepted(online_store: RedisOnlineStore) -> None:
    import pandas as pd

    frame = pd.DataFrame({"user_id": [7, 8], "event_timestamp": pd.to_datetime(["2026-01-01", "2026-01-02"]),
                          "count": [1, 2]})
    assert push(signal=ol_short, version=1, rows=frame, online=online_store) == 2
    (got,) = online_store.read([(ol_short, 1)], [8])
    assert got.event_time_us.tolist() == [int(datetime(2026, 1, 2, tzinfo=UTC).timestamp() * 1_000_000)]
