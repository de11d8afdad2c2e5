"""point_in_time_duckdb against a plain Python reference, on random worlds and on hand-made edge cases."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fixtures.pit_data import BASE, SIGNALS, US, reference_pit, storage_type
from quasar.signals.errors import DatasetError
from quasar.signals.ufr.schema import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from quasar.signals.ufr.types import TIMESTAMP_ARROW
from quasar.store.engines.base import FeatureRequest
from quasar.store.pit_local import point_in_time_duckdb

S = timedelta(seconds=1)


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    yield connection
    connection.close()


def _assert_matches(result: pa.Table, spine: pa.Table, world: Any, requests: list[FeatureRequest]) -> None:
    assert result.num_rows == spine.num_rows
    assert result.column_names == [o for r in requests for _, o in r.features]
    for request in requests:
        expected = reference_pit(spine, world.data[request.signal], request.features)
        for out, values in expected.items():
            got = result.column(out).to_pylist()
            bad = [i for i, (g, e) in enumerate(zip(got, values, strict=True)) if g != e]
            assert not bad, (f"{out}: first mismatch at spine row {bad[0]} {spine.slice(bad[0], 1).to_pylist()}: "
                             f"got {got[bad[0]]!r}, expected {values[bad[0]]!r} ({len(bad)} mismatches)")


@pytest.mark.parametrize("seed", range(12))
def test_matches_reference_on_random_worlds(seed: int, pit_world: Any, con: duckdb.DuckDBPyConnection) -> None:
    world = pit_world(seed)
    spine = world.spine(random.Random(seed), 80)
    requests = [world.data[name].request(prefix=f"{name}__") for name in ("user_stats", "pin_stats", "user_extra")]
    result = point_in_time_duckdb(con, spine, requests)
    _assert_matches(result, spine, world, requests)
    for request in requests:   # UFR types come back, vectors as fixed-size lists (float16 included)
        for col, out in request.features:
            assert result.schema.field(out).type == request.schema.type_of(col).arrow_type()


@pytest.mark.parametrize("seed", range(3))
def test_matches_reference_without_any_event_time_ties(seed: int, pit_world: Any,
                                                       con: duckdb.DuckDBPyConnection) -> None:
    world = pit_world(seed, event_ties=False)      # every answer comes from the fast join alone
    spine = world.spine(random.Random(seed), 80)
    requests = [world.data[name].request(prefix=f"{name}__") for name in ("user_stats", "pin_stats", "user_extra")]
    _assert_matches(point_in_time_duckdb(con, spine, requests), spine, world, requests)


@pytest.mark.parametrize("seed", range(3))
def test_subset_of_features_renamed_and_one_file(seed: int, pit_world: Any, con: duckdb.DuckDBPyConnection) -> None:
    world = pit_world(seed, n_rows=60, n_files=1)
    spine = world.spine(random.Random(seed + 100), 50)
    request = world.data["user_stats"].request(["half", "clicks"], prefix="x_")
    result = point_in_time_duckdb(con, spine, [request])
    assert result.column_names == ["x_half", "x_clicks"]
    _assert_matches(result, spine, world, [request])


# --- hand-made worlds --------------------------------------------------------------------------------------------

def _write(path: Path, rows: list[dict[str, Any]]) -> str:
    schema = pa.schema([pa.field("user_id", pa.int64(), nullable=False),
                        pa.field(EVENT_TIMESTAMP, TIMESTAMP_ARROW, nullable=False),
                        pa.field(CREATED_TIMESTAMP, TIMESTAMP_ARROW),
                        pa.field("clicks", pa.int64()), pa.field("score", pa.float32())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return str(path)


def _row(user: int, ets: timedelta, clicks: int | None, created: timedelta | None = None) -> dict[str, Any]:
    return {"user_id": user, EVENT_TIMESTAMP: BASE + ets, CREATED_TIMESTAMP: None if created is None else BASE + created,
            "clicks": clicks, "score": None if clicks is None else clicks / 2}


def _spine(points: list[tuple[int | None, timedelta | None]]) -> pa.Table:
    return pa.table({"user_id": pa.array([u for u, _ in points], pa.int64()),
                     EVENT_TIMESTAMP: pa.array([None if t is None else BASE + t for _, t in points], TIMESTAMP_ARROW)})


def _request(files: list[str], ttl: timedelta | None = timedelta(seconds=20)) -> FeatureRequest:
    sig = SIGNALS["user_extra"]
    return FeatureRequest(signal=sig.name, version=1, join_keys=("user_id",), features=(("clicks", "clicks"),),
                          schema=sig.schema, ttl=ttl, files=tuple(files))


def test_ties_go_to_the_larger_created_then_the_last_written(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    first = _write(tmp_path / "a.parquet", [_row(1, 10 * S, 1, created=2 * S), _row(1, 10 * S, 2, created=5 * S),
                                             _row(1, 10 * S, 3, created=None), _row(1, 10 * S, 4, created=5 * S),
                                             _row(1, 9 * S, 9, created=50 * S)])
    second = _write(tmp_path / "b.parquet", [_row(1, 10 * S, 5, created=5 * S), _row(1, 10 * S, 6, created=4 * S)])
    spine = _spine([(1, 10 * S), (1, 10 * S - US), (1, 15 * S)])
    assert point_in_time_duckdb(con, spine, [_request([first, second])]).column("clicks").to_pylist() == [5, 9, 5]
    assert point_in_time_duckdb(con, spine, [_request([second, first])]).column("clicks").to_pylist() == [4, 9, 4]
    alone = point_in_time_duckdb(con, spine, [_request([first])]).column("clicks").to_pylist()
    assert alone == [4, 9, 4]


def test_ttl_bound_is_kept_and_one_microsecond_past_is_not(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    files = [_write(tmp_path / "a.parquet", [_row(1, 0 * S, 7), _row(2, 0 * S, 8)])]
    spine = _spine([(1, 20 * S), (1, 20 * S + US), (1, 0 * S), (1, -US), (2, 20 * S), (2, 21 * S)])
    result = point_in_time_duckdb(con, spine, [_request(files)])
    assert result.column("clicks").to_pylist() == [7, None, 7, None, 8, None]
    no_ttl = point_in_time_duckdb(con, spine, [_request(files, ttl=None)])
    assert no_ttl.column("clicks").to_pylist() == [7, 7, 7, None, 8, 8]


def test_a_null_value_stays_null_and_never_falls_back(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    files = [_write(tmp_path / "a.parquet", [_row(1, 0 * S, 1), _row(1, 5 * S, None), _row(1, 9 * S, 3)])]
    spine = _spine([(1, 4 * S), (1, 6 * S), (1, 9 * S)])
    assert point_in_time_duckdb(con, spine, [_request(files)]).column("clicks").to_pylist() == [1, None, 3]


def test_spine_order_duplicates_unknown_and_null_keys(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    files = [_write(tmp_path / "a.parquet", [_row(1, 0 * S, 1), _row(1, 5 * S, 2), _row(2, 3 * S, 3)])]
    spine = _spine([(2, 9 * S), (1, 6 * S), (1, 1 * S), (1, 6 * S), (99, 6 * S), (None, 6 * S), (2, 9 * S),
                    (1, None), (2, 2 * S)])
    got = point_in_time_duckdb(con, spine, [_request(files)]).column("clicks").to_pylist()
    assert got == [3, 2, 1, 2, None, None, 3, None, None]


def test_rows_outside_the_spine_range_are_skipped_not_joined(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    # far past (beyond the TTL), in range, and in the future: only the in-range row can be the answer
    rows = [_row(1, -10_000 * S, 1), _row(1, 100 * S, 2), _row(1, 10_000 * S, 3)]
    files = [_write(tmp_path / "a.parquet", rows)]
    spine = _spine([(1, 110 * S), (1, 130 * S), (1, 50 * S)])
    assert point_in_time_duckdb(con, spine, [_request(files)]).column("clicks").to_pylist() == [2, None, None]
    assert point_in_time_duckdb(con, spine, [_request(files, ttl=None)]).column("clicks").to_pylist() == [2, 2, 1]


def test_no_files_or_empty_spine_give_typed_nulls(con: duckdb.DuckDBPyConnection) -> None:
    sig = SIGNALS["user_stats"]
    request = FeatureRequest(signal=sig.name, version=1, join_keys=("user_id",),
                             features=tuple((n, n) for n in sig.schema.names), schema=sig.schema, ttl=sig.ttl,
                             files=())
    result = point_in_time_duckdb(con, _spine([(1, S), (2, S)]), [request])
    assert result.schema == sig.schema.arrow_schema()
    assert result.num_rows == 2 and all(c.null_count == 2 for c in result.columns)
    empty = point_in_time_duckdb(con, _spine([]), [request])
    assert empty.num_rows == 0 and empty.schema == sig.schema.arrow_schema()


def test_storage_typed_files_restore_to_ufr_types(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    sig = SIGNALS["pin_stats"]
    schema = pa.schema([pa.field("pin_id", pa.string()), pa.field(EVENT_TIMESTAMP, TIMESTAMP_ARROW),
                        pa.field(CREATED_TIMESTAMP, TIMESTAMP_ARROW)]
                       + [pa.field(n, storage_type(t)) for n, t in sig.schema])
    rows = [{"pin_id": "a", EVENT_TIMESTAMP: BASE, CREATED_TIMESTAMP: None, "saves": 3, "title": "hé",
             "emb": [0.5, -1.0]}]
    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    request = FeatureRequest(signal=sig.name, version=1, join_keys=("pin_id",),
                             features=(("emb", "emb"), ("title", "t")), schema=sig.schema, ttl=None,
                             files=(str(path),))
    spine = pa.table({"pin_id": ["a", "b"], EVENT_TIMESTAMP: pa.array([BASE, BASE], TIMESTAMP_ARROW)})
    result = point_in_time_duckdb(con, spine, [request])
    assert result.schema.field("emb").type == pa.list_(pa.field("item", pa.float32(), nullable=False), 2)
    assert result.to_pylist() == [{"emb": [0.5, -1.0], "t": "hé"}, {"emb": None, "t": None}]


def test_a_missing_join_key_column_is_a_dataset_error(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    files = [_write(tmp_path / "a.parquet", [_row(1, 0 * S, 1)])]
    spine = pa.table({"uid": [1], EVENT_TIMESTAMP: pa.array([BASE], TIMESTAMP_ARROW)})
    with pytest.raises(DatasetError, match="'user_id'"):
        point_in_time_duckdb(con, spine, [_request(files)])
    with pytest.raises(DatasetError, match="event_timestamp"):
        point_in_time_duckdb(con, pa.table({"user_id": [1]}), [_request(files)])
