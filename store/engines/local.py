"""The local engine: DuckDB in-process, one connection per engine.

Transform signals run their Python function over the groups of ``quasar.store.engines.groups`` (one call per entity
bucket by default, one over the window with ``scope="window"``: the Spark engine's groups); aggregation
signals run as DuckDB SQL (``quasar.store.engines.local_agg``); point-in-time joins are ``quasar.store.pit_local``'s.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

import duckdb
import pyarrow as pa

from quasar.signals.errors import DefinitionError, StoreError
from quasar.signals.signal import Signal
from quasar.store.engines.base import Engine, FeatureRequest
from quasar.store.engines.groups import call_per_group
from quasar.store.engines.local_agg import compute_aggregation


class LocalEngine(Engine):
    """DuckDB in this process. ``threads`` caps DuckDB's worker threads; ``memory_limit`` is e.g. ``"4GB"``: past
    it DuckDB spills joins, sorts and aggregates to ``temp_directory`` (DuckDB's default folder when None)."""

    name: ClassVar[str] = "local"

    def __init__(self, *, threads: int | None = None, memory_limit: str | None = None,
                 temp_directory: str | None = None, database: str = ":memory:") -> None:
        if threads is not None and (not isinstance(threads, int) or threads <= 0):
            raise StoreError(f"local engine: threads must be a positive int, got {threads!r}")
        self.threads = threads
        self.memory_limit = memory_limit
        self.temp_directory = temp_directory
        self.database = database
        self.lock = threading.RLock()          # a DuckDB connection serves one query at a time
        self._connection: duckdb.DuckDBPyConnection | None = None
        self.last_transform_groups: int | None = None   # calls the last transform took (its groups)

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The engine's DuckDB connection, opened on first use (session time zone UTC)."""
        with self.lock:
            if self._connection is None:
                config: dict[str, Any] = {}
                if self.threads:
                    config["threads"] = self.threads
                if self.memory_limit:
                    config["memory_limit"] = self.memory_limit
                if self.temp_directory:
                    config["temp_directory"] = self.temp_directory
                try:
                    con = duckdb.connect(self.database, config=config)
                    con.execute("SET TimeZone = 'UTC'")
                except duckdb.Error as exc:
                    raise StoreError(f"local engine: cannot open DuckDB ({self.database}): {exc}") from exc
                self._connection = con
            return self._connection

    def compute(self, signal: Signal, source_rows: pa.Table, start: datetime, end: datetime) -> pa.Table:
        """A transform's rows from its function, called per group; an aggregation's rows from DuckDB SQL."""
        if signal.kind == "aggregation":
            with self.lock:
                try:
                    return compute_aggregation(self.connection, signal, source_rows, start, end)
                except duckdb.Error as exc:
                    raise StoreError(f"signal {signal.name}: computing its aggregations in DuckDB failed: "
                                     f"{exc}") from exc
        if signal.transform is None:
            raise DefinitionError(f"signal {signal.name} has no Python transform to run: load it from its "
                                  f"module ({signal.module or 'unknown module'}) before computing")
        result, self.last_transform_groups = call_per_group(signal, signal.transform, source_rows)
        return result

    def point_in_time(self, spine: pa.Table, requests: Sequence[FeatureRequest]) -> pa.Table:
        from quasar.store.pit_local import point_in_time_duckdb

        with self.lock:
            result: pa.Table = point_in_time_duckdb(self.connection, spine, requests)
            return result

    def close(self) -> None:
        with self.lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
