"""The engine plug-in point: compute a signal over a window, and join features point-in-time.

Engines are looked up by name in ``ENGINES`` and imported lazily, so the ``spark`` engine costs nothing
(and needs no PySpark) until asked for.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from quasar.signals.errors import DependencyMissingError, QuasarError
from quasar.signals.signal import Signal
from quasar.signals.ufr.schema import FeatureSchema

if TYPE_CHECKING:
    from quasar.store.tables import OfflineStore


@dataclass(frozen=True)
class FeatureRequest:
    """What a point-in-time join needs to know about one signal version's table."""

    signal: str
    version: int
    join_keys: tuple[str, ...]
    features: tuple[tuple[str, str], ...]      # (column in the signal's table, output column name)
    schema: FeatureSchema                       # the signal version's schema, to restore UFR types
    ttl: timedelta | None
    files: tuple[str, ...]                      # Parquet data files of the table snapshot (may be empty)
    snapshot_id: int | None = None
    buckets: int | None = None                  # the table's bucket(N, key) count, when its files are bucketed


class Engine(ABC):
    """A compute engine. Optional abilities are ``supports_*`` properties, not methods that raise."""

    name: ClassVar[str] = ""

    @abstractmethod
    def compute(self, signal: Signal, source_rows: pa.Table, start: datetime, end: datetime) -> pa.Table:
        """Rows of ``signal`` stamped in ``[start, end)`` from its source rows (already read for the window,
        including any look-back an aggregation needs)."""

    @abstractmethod
    def point_in_time(self, spine: pa.Table, requests: Sequence[FeatureRequest]) -> pa.Table:
        """For every spine row (in order), each requested feature as of the row's ``event_timestamp``.

        ``spine`` holds the join key columns and ``event_timestamp`` (timestamp[us, UTC]); the result holds
        the output feature columns only, one row per spine row, in spine order, with UFR Arrow types.
        """

    @property
    def supports_distributed(self) -> bool:
        return False

    def validation_frame(self, rows: pa.Table) -> Any:
        """A computed batch as the DataFrame the data-quality gate validates with great-expectations
        (``quasar.store.gates``): pandas by default; an engine whose data lives elsewhere returns its own (Spark)."""
        return rows.to_pandas()

    def backfill_window(self, *, signal: Signal, version: int, start: datetime, end: datetime, store: OfflineStore,
                        sources: Any, bounds: Any, run_id: int | None, columns: list[str] | None,
                        step: Any) -> Any:
        """Run a whole window's backfill on the engine's own workers (read, compute, check, validate, write, calling
        ``step(name)`` as each begins) and return its ``WindowResult``; None (the default): the backfill reads,
        computes and checks in this process, calling the methods above."""
        return None

    def write_window(self, store: OfflineStore, signal: Signal, version: int, rows: pa.Table, start: datetime,
                     end: datetime, *, properties: Mapping[str, str] | None = None) -> int | None:
        """Replace the days ``[start, end)`` of the signal version's table with ``rows`` in one commit; returns the
        new snapshot id. pyiceberg writes by default; an engine whose workers write the files overrides it."""
        return store.replace_window(signal, version, rows, start, end, properties=properties)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release engine resources (sessions, connections); nothing to release by default."""
        return None


ENGINES: dict[str, str] = {
    "local": "quasar.store.engines.local:LocalEngine",
    "spark": "quasar.store.engines.spark:SparkEngine",
}
_EXTRAS = {"spark": ("pyspark", "spark")}


def load_engine(name: str, **options: Any) -> Engine:
    """Instantiate the engine called ``name`` (``local`` or ``spark``)."""
    if name not in ENGINES:
        raise QuasarError(f"unknown engine {name!r}; known engines: {', '.join(sorted(ENGINES))}")
    module_name, _, cls_name = ENGINES[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if name in _EXTRAS and exc.name and exc.name.split(".")[0] == _EXTRAS[name][0]:
            raise DependencyMissingError(_EXTRAS[name][0], _EXTRAS[name][1], f"the {name} engine") from exc
        raise
    engine: Engine = getattr(module, cls_name)(**options)
    return engine
