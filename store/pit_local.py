"""Point-in-time joins on DuckDB: each spine row gets each signal's latest row at or before its time.

The exact semantics (the Spark engine and the tests' Python reference follow them too):

* For a spine row ``(key, ts)`` and one requested signal, the candidate rows are that signal's rows with the
  same join key(s) and ``event_timestamp <= ts``. The winner is ``quasar.signals.ordering``'s: the latest
  ``event_timestamp``; ties go to the larger ``created_timestamp`` (a null one is ``NULL_CREATED_US``, older
  than any other), then to the row that comes last in the request's ``files`` order (later file, then later
  row in the file): the last write. Materialization and the Redis script apply the same rule.
* No candidate, or a winner with ``ts - event_timestamp > ttl``, gives nulls (a row exactly ``ttl`` old is
  kept). A winner whose feature value is null gives null: it never falls back to an older row.
* Every spine row comes back exactly once, in spine order, duplicates included; a null key or time matches
  nothing.

How: one ``ASOF LEFT JOIN`` per request over ``read_parquet`` of the snapshot's data files, projecting only the
keys, timestamps and requested columns, with the spine's time range (``min ts - ttl .. max ts``) pushed into
the scan so row groups outside it are skipped. The join orders by the event time alone (as fast as a raw ASOF
join); a semi-join then finds the spine rows whose winning (key, event time) is shared by several rows, and
only those rows are joined again with the full tie-breaking order ``(event us, created us, file position)``
inside the ASOF inequality, over the rows of their keys alone. Sorting every row on that wider key would
cost about half again as much, and ties are rare.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quasar.signals.errors import DatasetError, StoreError
from quasar.signals.ordering import NULL_CREATED_US
from quasar.signals.ufr.schema import CREATED_TIMESTAMP, EVENT_TIMESTAMP, FeatureSchema
from quasar.signals.ufr.types import TIMESTAMP_ARROW
from quasar.store.arrow_types import restore_ufr_types

if TYPE_CHECKING:
    from quasar.store.engines.base import FeatureRequest

_ROW = "__quasar_row"
_SPINE_VIEW = "__quasar_spine"
_MATCHED_VIEW = "__quasar_matched"
_TIED_VIEW = "__quasar_tied"
_MAX = 9223372036854775807          # int64 max: the spine side of the ordering struct sorts after any row
_MIN = NULL_CREATED_US              # a null created_timestamp sorts before any real one (quasar.signals.ordering)


def point_in_time_duckdb(con: duckdb.DuckDBPyConnection, spine: pa.Table,
                         requests: Sequence[FeatureRequest]) -> pa.Table:
    """The output feature columns of ``requests`` for every row of ``spine``, in spine order, UFR-typed.

    ``spine`` holds the requests' join key columns and ``event_timestamp`` (any other column is ignored).
    """
    check_spine(spine, requests)
    columns: dict[str, pa.ChunkedArray] = {}
    keys = sorted({k for r in requests for k in r.join_keys})
    try:
        times = spine.column(EVENT_TIMESTAMP).cast(TIMESTAMP_ARROW)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DatasetError(f"spine column {EVENT_TIMESTAMP!r} does not fit timestamp[us, UTC] (normalise the spine "
                           f"with quasar.store.spine.normalize_spine): {exc}") from exc
    slim = pa.table({**{k: spine.column(k) for k in keys}, EVENT_TIMESTAMP: times,
                     _ROW: pa.array(range(spine.num_rows), pa.int64())})
    bounds = pc.min_max(times)
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    cur = con.cursor()
    try:
        cur.execute("SET TimeZone = 'UTC'")
        cur.register(_SPINE_VIEW, slim)
        for request in requests:
            table = _one_request(cur, request, slim, lo, hi)
            for name in table.column_names:
                if name in columns:
                    raise DatasetError(f"output column {name!r} is requested twice")
                columns[name] = table.column(name)
    finally:
        cur.close()
    return pa.table(columns) if columns else pa.table({})


def check_spine(spine: pa.Table, requests: Sequence[FeatureRequest]) -> None:
    """Refuse a spine without a timestamp ``event_timestamp`` or without a requested join key column."""
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


def _one_request(cur: duckdb.DuckDBPyConnection, request: FeatureRequest, slim: pa.Table,
                 lo: datetime | None, hi: datetime | None) -> pa.Table:
    """The output columns of one request, restored to UFR types."""
    n_rows = slim.num_rows
    out_schema = FeatureSchema(tuple((out, request.schema.type_of(col)) for col, out in request.features))
    if not request.files or n_rows == 0 or lo is None or hi is None:
        return pa.table({n: pa.nulls(n_rows, t.arrow_type()) for n, t in out_schema})
    sql = _Sql(request, lo, hi)
    try:
        fast = cur.sql(sql.fast()).to_arrow_table()
        if fast.num_rows != n_rows:  # an ASOF LEFT JOIN keeps every spine row once; guard it anyway
            raise StoreError(f"point-in-time join of signal {request.signal!r} returned {fast.num_rows} rows "
                             f"for {n_rows} spine rows")
        matched = pa.table({**{k: slim.column(k) for k in request.join_keys}, "__m": fast.column("__m"),
                            _ROW: slim.column(_ROW)})
        cur.register(_MATCHED_VIEW, matched)
        tied = cur.sql(sql.tied_rows()).to_arrow_table().column(0).combine_chunks()
        features = fast.drop_columns(["__m"])
        if len(tied):
            cur.register(_TIED_VIEW, pa.table({_ROW: tied}))
            exact = cur.sql(sql.exact()).to_arrow_table().cast(features.schema)
            cur.unregister(_TIED_VIEW)
            index = np.arange(n_rows, dtype=np.int64)
            index[tied.to_numpy()] = n_rows + np.arange(len(tied), dtype=np.int64)
            features = pa.concat_tables([features, exact]).take(pa.array(index))
        cur.unregister(_MATCHED_VIEW)
    except duckdb.Error as exc:  # translate at the boundary
        raise StoreError(f"point-in-time join of signal {request.signal!r} v{request.version} failed: "
                         f"{exc}") from exc
    features = features.rename_columns([out for _, out in request.features])
    return restore_ufr_types(features, out_schema)


class _Sql:
    """The three statements of one request: the fast join, the tied rows, the exact join of those rows."""

    def __init__(self, request: FeatureRequest, lo: datetime, hi: datetime) -> None:
        self.keys = [_ident(k) for k in request.join_keys]
        self.n = len(request.features)
        self.ttl_us = None if request.ttl is None else request.ttl // timedelta(microseconds=1)
        try:
            start = lo - request.ttl if request.ttl is not None else None
        except OverflowError:  # a TTL reaching before year 1: no lower bound
            start = None
        ets = _ident(EVENT_TIMESTAMP)
        where = [f"{ets} <= {_ts_literal(hi)}"] + ([f"{ets} >= {_ts_literal(start)}"] if start else [])
        self.where = " AND ".join(where)
        files = "[" + ", ".join(_literal(f) for f in request.files) + "]"
        self.scan = f"read_parquet({files}, file_row_number = true, union_by_name = true)"
        self.feats = ", ".join(f"{_ident(col)} AS __f{i}" for i, (col, _) in enumerate(request.features))

    def _outputs(self, e_spine: str, e_row: str) -> str:
        if self.ttl_us is None:
            return ", ".join(f"f.__f{i}" for i in range(self.n))
        fresh = f"{e_spine} - {e_row} <= {self.ttl_us}"
        return ", ".join(f"CASE WHEN {fresh} THEN f.__f{i} END AS __f{i}" for i in range(self.n))

    def _on(self, order: str) -> str:
        return " AND ".join([*(f"s.{k} = f.{k}" for k in self.keys), order])

    def fast(self) -> str:
        """ASOF on the event time alone; ``__m`` is the winner's event time where it is within the TTL."""
        ets, keys = _ident(EVENT_TIMESTAMP), ", ".join(self.keys)
        fresh = "" if self.ttl_us is None else f"s.__e - f.__e <= {self.ttl_us}"
        matched = f"CASE WHEN {fresh} THEN f.__e END" if fresh else "f.__e"
        return (f"WITH f AS (SELECT {keys}, epoch_us({ets}) AS __e, {self.feats} FROM {self.scan} "
                f"WHERE {self.where}), "
                f"s AS (SELECT {_ROW}, {keys}, epoch_us({ets}) AS __e FROM {_SPINE_VIEW}) "
                f"SELECT {matched} AS __m, {self._outputs('s.__e', 'f.__e')} "
                f"FROM s ASOF LEFT JOIN f ON {self._on('s.__e >= f.__e')} ORDER BY s.{_ROW}")

    def tied_rows(self) -> str:
        """Spine rows whose winning (key, event time) belongs to more than one row: they need the full order."""
        ets, keys = _ident(EVENT_TIMESTAMP), ", ".join(self.keys)
        on = " AND ".join([*(f"r.{k} = m.{k}" for k in self.keys), f"epoch_us(r.{ets}) = m.__m"])
        return (f"WITH m AS (SELECT DISTINCT {keys}, __m FROM {_MATCHED_VIEW} WHERE __m IS NOT NULL), "
                f"c AS (SELECT {', '.join(f'r.{k}' for k in self.keys)}, epoch_us(r.{ets}) AS __m "
                f"FROM {self.scan} r SEMI JOIN m ON {on} WHERE {self.where} GROUP BY ALL HAVING count(*) > 1) "
                f"SELECT {_ROW} FROM {_MATCHED_VIEW} JOIN c USING ({keys}, __m) ORDER BY {_ROW}")

    def exact(self) -> str:
        """The tied rows again, ordered by (event us, created us, file position), over their keys' rows only."""
        ets, keys = _ident(EVENT_TIMESTAMP), ", ".join(self.keys)
        order_f = (f"{{'e': epoch_us({ets}), 'c': coalesce(epoch_us({_ident(CREATED_TIMESTAMP)}), ({_MIN})::BIGINT), "
                   "'p': (file_index::BIGINT << 40) + file_row_number}")
        order_s = f"{{'e': epoch_us({ets}), 'c': {_MAX}, 'p': {_MAX}}}"
        on_keys = " AND ".join(f"r.{k} = k.{k}" for k in self.keys)
        return (f"WITH s AS (SELECT {_ROW}, {keys}, {order_s} AS __o FROM {_SPINE_VIEW} "
                f"SEMI JOIN {_TIED_VIEW} USING ({_ROW})), "
                f"f AS (SELECT {', '.join(f'r.{k}' for k in self.keys)}, {order_f} AS __o, {self.feats} "
                f"FROM {self.scan} r SEMI JOIN (SELECT DISTINCT {keys} FROM s) k ON {on_keys} "
                f"WHERE {self.where}) "
                f"SELECT {self._outputs('s.__o.e', 'f.__o.e')} FROM s ASOF LEFT JOIN f "
                f"ON {self._on('s.__o >= f.__o')} ORDER BY s.{_ROW}")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ts_literal(value: datetime) -> str:
    return f"'{value.isoformat()}'::TIMESTAMPTZ"
