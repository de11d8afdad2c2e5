"""The Spark engine: the local engine's answers, computed on a Spark cluster (``local[*]`` by default).

* Transform signals run their Arrow function on Spark over the groups of ``quasar.store.engines.groups``, the local
  engine's groups (``groupBy(group).applyInArrow``, a task per group): by default one per Iceberg bucket of the
  entity key, so all rows of an entity meet in one call, in source order; ``scope="window"`` is one task.
* Windowed aggregations compile to Spark SQL (``quasar.store.engines.spark_agg``).
* Point-in-time joins go bucket by bucket over the tables' ``bucket(N, key)`` files (``quasar.store.engines.spark_pit``).
* Backfills are written by Spark as Parquet into the table's location and committed by pyiceberg in one
  snapshot (``quasar.store.engines.spark_write``); the data-quality gate runs on a Spark DataFrame.

The session is created once per engine and reused; ``close`` stops it only if this engine started it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

import pyarrow as pa

from quasar.signals.errors import DefinitionError, StoreError
from quasar.signals.signal import Signal
from quasar.store.engines.base import Engine, FeatureRequest
from quasar.store.engines.groups import call, concat, transform_groups
from quasar.store.engines.spark_session import build_session, run_grouped, spark_error, spark_safe
from quasar.store.tables import OfflineStore


class SparkEngine(Engine):
    """PySpark. ``master`` is ``local[*]``, ``spark://host:7077``, ``yarn`` or ``k8s://...``; ``conf`` is any
    Spark configuration (``[spark.conf]`` in quasar.toml); ``session`` reuses a session you already have."""

    name: ClassVar[str] = "spark"

    def __init__(self, *, master: str = "local[*]", conf: Mapping[str, str] | None = None,
                 session: Any = None, task_threads: int = 1) -> None:
        self.master = master
        self.conf = dict(conf or {})
        self.task_threads = task_threads
        self._session = session
        self._owned = False
        self._lock = threading.Lock()
        self.last_transform_groups: int | None = None   # Spark tasks (groups) the last transform ran as
        self.last_join_groups: int | None = None        # Spark tasks (groups) the last point-in-time join ran as

    @property
    def session(self) -> Any:
        """The engine's SparkSession, started on first use."""
        with self._lock:
            if self._session is None:
                self._session, self._owned = build_session(self.master, self.conf)
            return self._session

    @property
    def supports_distributed(self) -> bool:
        return True

    # --- compute ---------------------------------------------------------------------------------------
    def compute(self, signal: Signal, source_rows: pa.Table, start: datetime, end: datetime) -> pa.Table:
        if signal.kind == "aggregation":
            from quasar.store.engines.spark_agg import compute_aggregation_spark

            try:
                return compute_aggregation_spark(self.session, signal, source_rows, start, end)
            except StoreError:
                raise
            except Exception as exc:
                if type(exc).__module__.startswith("pyspark"):
                    raise StoreError(f"signal {signal.name}: computing its aggregations on Spark failed: "
                                     f"{spark_error(exc)}") from exc
                raise
        if signal.transform is None:
            raise DefinitionError(f"signal {signal.name} has no Python transform to run: load it from its "
                                  f"module ({signal.module or 'unknown module'}) before computing")
        return self._transform(signal, signal.transform, source_rows)

    def _transform(self, signal: Signal, fn: Callable[[pa.Table], pa.Table], source_rows: pa.Table) -> pa.Table:
        if source_rows.num_rows == 0:
            self.last_transform_groups = 1            # no group to run on: the function still defines the schema
            return call(signal, fn, source_rows)
        with _by_value(fn):
            try:
                results = run_grouped(self.session, source_rows, transform_groups(signal, source_rows),
                                      _transform_kernel(signal, fn))
            except Exception as exc:
                raise StoreError(f"signal {signal.name}: its transform failed on Spark: {spark_error(exc)}") from exc
        self.last_transform_groups = len(results)
        return concat(results)

    # --- point in time ---------------------------------------------------------------------------------
    def point_in_time(self, spine: pa.Table, requests: Sequence[FeatureRequest]) -> pa.Table:
        from quasar.store.engines.spark_pit import point_in_time_spark

        result, self.last_join_groups = point_in_time_spark(self.session, spine, requests, threads=self.task_threads)
        return result

    # --- gates and writes ------------------------------------------------------------------------------
    def validation_frame(self, rows: pa.Table) -> Any:
        """The batch as a Spark DataFrame: great-expectations validates it with its Spark datasource."""
        return self.session.createDataFrame(spark_safe(rows))

    def backfill_window(self, *, signal: Signal, version: int, start: datetime, end: datetime, store: OfflineStore,
                        sources: Any, bounds: Any, run_id: int | None, columns: list[str] | None,
                        step: Any) -> Any:
        """The backfill with its rows kept off the driver (``quasar.store.engines.spark_backfill``); None when
        the source has nothing to read or no step fits the window (computed on the driver: nothing to carry)."""
        if signal.kind != "aggregation" and signal.transform is None:
            raise DefinitionError(f"signal {signal.name} has no Python transform to run: load it from its "
                                  f"module ({signal.module or 'unknown module'}) before computing")
        import contextlib

        from quasar.store.engines.spark_backfill import backfill_window_spark

        with _by_value(signal.transform) if signal.transform is not None else contextlib.nullcontext():
            return backfill_window_spark(self.session, signal=signal, version=version, start=start, end=end,
                                         store=store, sources=sources, bounds=bounds, run_id=run_id,
                                         columns=columns, step=step)

    def write_window(self, store: OfflineStore, signal: Signal, version: int, rows: pa.Table, start: datetime,
                     end: datetime, *, properties: Mapping[str, str] | None = None) -> int | None:
        from quasar.store.engines.spark_write import write_window_spark

        return write_window_spark(self.session, store, signal, version, rows, start, end, properties=properties)

    def close(self) -> None:
        with self._lock:
            if self._session is not None and self._owned:
                self._session.stop()
            self._session, self._owned = None, False


def _transform_kernel(signal: Signal, fn: Callable[[pa.Table], pa.Table]
                      ) -> Callable[[int, pa.Table, pa.ChunkedArray], pa.Table]:
    """The task run on one group: its source rows, in source order and types, through the function."""

    def kernel(group: int, rows: pa.Table, positions: pa.ChunkedArray) -> pa.Table:
        return call(signal, fn, rows)

    return kernel


class _by_value:
    """Ship the transform's module by value: signal modules are loaded from files executors cannot import."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        import sys

        self.module = sys.modules.get(getattr(fn, "__module__", "") or "")
        self.registered = False

    def __enter__(self) -> None:
        from pyspark import cloudpickle

        if self.module is not None and self.module.__name__ not in ("__main__", "builtins"):
            try:
                cloudpickle.register_pickle_by_value(self.module)
                self.registered = True
            except ValueError:
                self.registered = False

    def __exit__(self, *exc: object) -> None:
        from pyspark import cloudpickle

        if self.registered and self.module is not None:
            cloudpickle.unregister_pickle_by_value(self.module)
