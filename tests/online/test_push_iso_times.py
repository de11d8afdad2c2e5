"""Push takes ISO-8601 strings for its times (the README's example), through the one time rule of
``quasar.signals.times``: an offset is honoured, a naive time is UTC, ``Z`` is UTC; a bad string names its column."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pytest

from fixtures.online import NOW, ol_all_types, ol_short
from quasar.online.push import push, validate_push_rows
from quasar.online.redis_store import RedisOnlineStore
from quasar.signals.errors import SchemaError
from quasar.signals.times import as_utc, parse_time
from quasar.signals.ufr.schema import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from quasar.signals.ufr.types import TIMESTAMP_ARROW

NOON = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def test_the_time_rule_naive_is_utc_offsets_are_honoured() -> None:
    assert as_utc(datetime(2026, 11, 23, 10)) == NOON and as_utc(datetime(2026, 11, 23, 10)).tzinfo is UTC
    assert as_utc(datetime(2026, 11, 23, 12, tzinfo=timezone(timedelta(hours=2)))).isoformat() == NOON.isoformat()
    for text in ("2026-11-23T10:00:00Z", "2026-11-23T10:00:00", "2026-11-23 12:00:00+02:00",
                 "2026-11-23T10:00:00.000000+00:00", "2026-11-23T05:00:00-05:00"):
        assert parse_time(text) == NOON and parse_time(text).tzinfo is UTC, text
    assert parse_time("2026-11-23") == datetime(2026, 11, 23, tzinfo=UTC)
    with pytest.raises(SchemaError, match=r"event_timestamp: 'yesterday' is not an ISO-8601 time"):
        parse_time("yesterday", "event_timestamp")


def test_iso_strings_are_pushed_as_utc_times(online_store: RedisOnlineStore) -> None:
    rows = [{"user_id": 1, "event_timestamp": "2026-11-23T10:00:00Z", "count": 3},
            {"user_id": 2, "event_timestamp": "2026-11-23T12:00:00+02:00", "count": 4},
            {"user_id": 3, "event_timestamp": "2026-11-23T10:00:00", "count": None}]
    table = validate_push_rows(ol_short, rows)         # no created time given: the arrival time (quasar.signals.ordering)
    assert table.schema == pa.schema([("user_id", pa.int64()), (EVENT_TIMESTAMP, TIMESTAMP_ARROW),
                                      (CREATED_TIMESTAMP, TIMESTAMP_ARROW), ("count", pa.int64())])
    assert table.column(EVENT_TIMESTAMP).to_pylist() == [NOON] * 3
    assert push(signal=ol_short, version=1, rows=rows, online=online_store) == 3
    (got,) = online_store.read([(ol_short, 1)], [1, 2, 3], now_us=int(NOON.timestamp() * 1_000_000))
    assert got.table.column("count").to_pylist() == [3, 4, None]
    assert got.event_time_us.tolist() == [int(NOON.timestamp() * 1_000_000)] * 3


def test_strings_and_datetimes_mix_and_created_and_timestamp_features_take_strings_too() -> None:
    base = {n: None for n in ol_all_types.schema.names}
    rows = [{**base, "user_id": 1, "event_timestamp": NOW, "created_timestamp": "2026-11-23T10:00:00Z",
             "seen_at": "2026-11-23T11:00:00+01:00"},
            {**base, "user_id": 2, "event_timestamp": "2026-11-23T10:00:00Z", "created_timestamp": None,
             "seen_at": datetime(2026, 11, 23, 10)}]
    table = validate_push_rows(ol_all_types, rows)
    assert table.column(EVENT_TIMESTAMP).to_pylist() == [as_utc(NOW), NOON]
    assert table.column(CREATED_TIMESTAMP).to_pylist() == [NOON, None]
    assert table.column("seen_at").to_pylist() == [NOON, NOON]
    # an Arrow table with ISO strings in a time column reads the same way
    arrow = pa.table({"user_id": [1], "event_timestamp": ["2026-11-23T10:00:00Z"], "count": [1]})
    assert validate_push_rows(ol_short, arrow).column(EVENT_TIMESTAMP).to_pylist() == [NOON]


def test_a_bad_time_string_names_its_column_and_row() -> None:
    rows = [{"user_id": 1, "event_timestamp": "2026-11-23T10:00:00Z", "count": 1},
            {"user_id": 2, "event_timestamp": "23/11/2026", "count": 1}]
    with pytest.raises(SchemaError, match=r"column 'event_timestamp' row 1: '23/11/2026' is not an ISO-8601 time"):
        validate_push_rows(ol_short, rows)
    with pytest.raises(SchemaError, match=r"column 'event_timestamp'.*null"):
        validate_push_rows(ol_short, [{"user_id": 1, "event_timestamp": None, "count": 1}])
