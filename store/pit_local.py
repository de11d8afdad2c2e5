"""Point-in-time joins on DuckDB: each spine row gets each signal's latest row at or before its time.

The exact semantics (the Spark engine and the tests' Python reference follow them too):

* For a spine row ``(key, ts)`` and one requested signal, the candidate rows are that signal's rows with the
  same join key(s) and ``event_timestamp <= ts``. The winner has the latest ``event_timestamp``; ties go to
  the larger ``created_timestamp`` (a null ``created_timestamp`` is older than any other), then to the row
  that comes last in the request's ``files`` order (later file, then later row in the file): the last write.
* No candidate, or a winner with ``ts - event_timestamp > ttl``, gives nulls (a row exactly ``ttl`` old is
  kept). A winner whose feature value is null gives null: it never falls back to an older row.
* Every spine row comes back exactly once, in spine order, duplicates included; a null key or time matches
  nothing.

How: one ``ASOF LEFT JOIN`` per request over ``read_parquet`` of the snapshot's data files, projecting only the
keys, timestamps and requested columns, with the spine's time range (``min ts - ttl .. max ts``) pushed into
the scan so row groups outside it are skipped. The tie-breaking order rides inside the ASOF inequality as a
struct ``(event us, created us, file position)``, which costs far less than deduplicating the table first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from signals.errors import DatasetError, StoreError
from signals.ufr.schema import CREATED_TIMESTAMP, EVENT_TIMESTAMP, FeatureSchema
from signals.ufr.types import TIMESTAMP_ARROW
from store.arrow_types import restore_ufr_types

if TYPE_CHECKING:
    import duckdb

    from store.engines.base import FeatureRequest

_ROW = "__quasar_row"
_SPINE_VIEW = "__quasar_spine"
_MAX = 9223372036854775807          # int64 max: the spine side of the ordering struct sorts after any row
_MIN = -9223372036854775807         # a null created_timestamp sorts before any real one


def point_in_time_duckdb(con: duckdb.DuckDBPyConnection, spine: pa.Table,
                         requests: Sequence[FeatureRequest]) -> pa.Table:
    """The output feature columns of ``requests`` for every row of ``spine``, in spine order, UFR-typed.

    ``spine`` holds the requests' join key columns and ``event_timestamp`` (any other column is ignored).
    """
    _check_spine(spine, requests)
    columns: dict[str, pa.ChunkedArray] = {}
    keys = sorted({k for r in requests for k in r.join_keys})
    times = spine.column(EVENT_TIMESTAMP).cast(TIMESTAMP_ARROW)
    slim = pa.table({**{k: spine.column(k) for k in keys}, EVENT_TIMESTAMP: times,
                     _ROW: pa.array(range(spine.num_rows), pa.int64())})
    bounds = pc.min_max(times)
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    cur = con.cursor()
    try:
        cur.execute("SET TimeZone = 'UTC'")
        cur.register(_SPINE_VIEW, slim)
        for request in requests:
            table = _one_request(cur, request, spine.num_rows, lo, hi)
            for name in table.column_names:
                if name in columns:
                    raise DatasetError(f"output column {name!r} is requested twice")
                columns[name] = table.column(name)
    finally:
        cur.close()
    return pa.table(columns) if columns else pa.table({})


def _check_spine(spine: pa.Table, requests: Sequence[FeatureRequest]) -> None:
    if EVENT_TIMESTAMP not in spine.column_names:
        raise DatasetError(f"the spine has no {EVENT_TIMESTAMP!r} column (columns: {spine.column_names})")
    if not pa.types.is_timestamp(spine.schema.field(EVENT_TIMESTAMP).type):
        raise DatasetError(f"spine column {EVENT_TIMESTAMP!r} must be a timestamp, "
                           f"got {spine.schema.field(EVENT_TIMESTAMP).type}")
    for request in requests:
        for key in request.join_keys:
            if key not in spine.column_names:
                raise DatasetError(f"the spine has no join key column {key!r}, needed by signal "
                                   f"{request.signal!r} (spine columns: {spine.column_names})")


def _one_request(cur: duckdb.DuckDBPyConnection, request: FeatureRequest, n_rows: int,
                 lo: datetime | None, hi: datetime | None) -> pa.Table:
    """The output columns of one request, restored to UFR types."""
    out_schema = FeatureSchema(tuple((out, request.schema.type_of(col)) for col, out in request.features))
    if not request.files or n_rows == 0 or lo is None or hi is None:
        return pa.table({n: pa.nulls(n_rows, t.arrow_type()) for n, t in out_schema})
    sql = _request_sql(request, lo, hi)
    try:
        raw = cur.sql(sql).to_arrow_table()
    except Exception as exc:  # duckdb raises its own error tree; translate at the boundary
        raise StoreError(f"point-in-time join of signal {request.signal!r} v{request.version} failed: "
                         f"{exc}") from exc
    if raw.num_rows != n_rows:  # the ASOF LEFT JOIN keeps every spine row once; guard the invariant anyway
        raise StoreError(f"point-in-time join of signal {request.signal!r} returned {raw.num_rows} rows "
                         f"for {n_rows} spine rows")
    raw = raw.rename_columns([out for _, out in request.features])
    return restore_ufr_types(raw, out_schema)


def _request_sql(request: FeatureRequest, lo: datetime, hi: datetime) -> str:
    keys = [_ident(k) for k in request.join_keys]
    files = "[" + ", ".join(_literal(f) for f in request.files) + "]"
    ttl_us = None if request.ttl is None else request.ttl // timedelta(microseconds=1)
    try:
        start = lo - request.ttl if request.ttl is not None else None
    except OverflowError:  # a TTL reaching before year 1: no lower bound
        start = None
    where = [f"{_ident(EVENT_TIMESTAMP)} <= {_ts_literal(hi)}"]
    if start is not None:
        where.append(f"{_ident(EVENT_TIMESTAMP)} >= {_ts_literal(start)}")
    feats = ", ".join(f"{_ident(col)} AS __f{i}" for i, (col, _) in enumerate(request.features))
    order_f = (f"{{'e': epoch_us({_ident(EVENT_TIMESTAMP)}), "
               f"'c': coalesce(epoch_us({_ident(CREATED_TIMESTAMP)}), {_MIN}), "
               "'p': (file_index::BIGINT << 40) + file_row_number}")
    order_s = (f"CASE WHEN {_ident(EVENT_TIMESTAMP)} IS NULL THEN NULL "
               f"ELSE {{'e': epoch_us({_ident(EVENT_TIMESTAMP)}), 'c': {_MAX}, 'p': {_MAX}}} END")
    if ttl_us is None:
        outs = ", ".join(f"f.__f{i}" for i in range(len(request.features)))
    else:
        fresh = f"s.__o.e - f.__o.e <= {ttl_us}"
        outs = ", ".join(f"CASE WHEN {fresh} THEN f.__f{i} END AS __f{i}" for i in range(len(request.features)))
    on = " AND ".join([*(f"s.{k} = f.{k}" for k in keys), "s.__o >= f.__o"])
    return (
        f"WITH f AS (SELECT {', '.join(keys)}, {order_f} AS __o, {feats} "
        f"FROM read_parquet({files}, file_row_number = true, union_by_name = true) "
        f"WHERE {' AND '.join(where)}), "
        f"s AS (SELECT {_ROW}, {', '.join(keys)}, {order_s} AS __o FROM {_SPINE_VIEW}) "
        f"SELECT {outs} FROM s ASOF LEFT JOIN f ON {on} ORDER BY s.{_ROW}"
    )


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ts_literal(value: datetime) -> str:
    return f"'{value.isoformat()}'::TIMESTAMPTZ"
