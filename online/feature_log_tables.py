"""The feature-log tables: ``<namespace>.<service>__log`` in Iceberg, their columns, and the layouts each service
version logged (kept in the table's properties, ``quasar.log.v<N>``), so a reader (``quasar.online.skew``,
``Platform.feature_log``) knows which columns are keys, request fields and features. ``quasar.online.feature_log``
builds the rows and writes them through ``LogTables``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pyarrow as pa

from quasar.signals.errors import NotFoundError, StoreError
from quasar.signals.service import log_table_name
from quasar.signals.ufr.schema import EVENT_TIMESTAMP
from quasar.signals.ufr.types import TIMESTAMP_ARROW, FeatureType, feature_type_from_dict

log = logging.getLogger("quasar.feature_log")

REQUEST_ID = "__request_id"
SERVICE_VERSION = "__service_version"
SOURCE = "__source"
MODEL = "__model"
SCORE = "__score"
VERSIONS = "__versions"
STATUS_SUFFIX = "__status"
#: The log's own columns, in table order (join keys, request fields and features follow).
LOG_COLUMNS = (REQUEST_ID, EVENT_TIMESTAMP, SERVICE_VERSION, SOURCE, MODEL, SCORE, VERSIONS)
LAYOUT_PREFIX = "quasar.log.v"
META_TYPES = {REQUEST_ID: pa.string(), EVENT_TIMESTAMP: TIMESTAMP_ARROW, SERVICE_VERSION: pa.int64(),
               SOURCE: pa.string(), MODEL: pa.string(), SCORE: pa.float64(), VERSIONS: pa.string()}


class LogTables:
    """The feature-log tables of one namespace: create, add a version's columns, append, read."""

    def __init__(self, catalog: Any, namespace: str) -> None:
        self.catalog = catalog
        self.namespace = namespace

    def identifier(self, service: str) -> tuple[str, str]:
        return (self.namespace, log_table_name(service))

    def table(self, service: str) -> Any:
        """The service's log table; NotFoundError when nothing was logged for it yet."""
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        try:
            return self.catalog.load_table(self.identifier(service))
        except (NoSuchTableError, NoSuchNamespaceError) as exc:
            raise NotFoundError(f"feature service {service!r} has no feature log yet: declare "
                                "logging=FeatureLogging(...) on it and serve it") from exc

    def ensure(self, service: str, schema: pa.Schema) -> Any:
        """The log table, created with ``schema`` (partitioned by day of ``event_timestamp``) when missing."""
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        ident = self.identifier(service)
        for attempt in range(3):
            try:
                return self.catalog.load_table(ident)
            except (NoSuchTableError, NoSuchNamespaceError):
                pass
            try:
                self.catalog.create_namespace_if_not_exists(self.namespace)
                table = self.catalog.create_table(ident, schema=schema,
                                                  properties={"quasar.feature_log": service})
            except Exception:
                if attempt == 2:                   # not a concurrent creator winning the race: give up
                    raise
                continue
            try:
                from pyiceberg.transforms import DayTransform
                with table.update_spec() as spec:
                    spec.add_field(EVENT_TIMESTAMP, DayTransform(), f"{EVENT_TIMESTAMP}_day")
            except Exception as exc:               # unpartitioned still works; reads just prune less
                log.warning("feature log %s: partitioning by day failed: %s", ".".join(ident), exc)
            return self.catalog.load_table(ident)
        raise AssertionError("unreachable")

    def append(self, service: str, rows: pa.Table, layouts: Mapping[int, dict[str, Any]]) -> None:
        """Append ``rows`` (storage types), adding missing columns by name and recording new versions' layouts;
        retried on a fresh table when another writer commits first (``quasar.store.commits``)."""
        from quasar.store.commits import WRITE_ID, Write, commit

        table = self.ensure(service, rows.schema)
        have = {f.name for f in table.schema().fields}
        if any(name not in have for name in rows.column_names):
            with table.update_schema() as update:
                update.union_by_name(rows.schema)
            table = self.catalog.load_table(self.identifier(service))
        new = {f"{LAYOUT_PREFIX}{v}": json.dumps(layout, separators=(",", ":")) for v, layout in layouts.items()
               if f"{LAYOUT_PREFIX}{v}" not in table.properties}
        write = Write()

        def build(fresh: Any, tx: Any) -> None:
            target = fresh.schema().as_arrow()
            columns = []
            for f in target:
                column = rows.column(f.name) if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type)
                columns.append(column.cast(f.type))
            if new:
                tx.set_properties(**new)
            tx.append(pa.Table.from_arrays(columns, schema=target), snapshot_properties={WRITE_ID: write.id})

        def fail(exc: BaseException, conflict: bool) -> StoreError:
            return StoreError(f"appending {rows.num_rows} row(s) to the feature log {'.'.join(self.identifier(service))} "
                              f"failed: {type(exc).__name__}: {exc}")

        commit(lambda: self.catalog.load_table(self.identifier(service)), build, write, fail=fail)

    def read(self, service: str, start: datetime | None = None, end: datetime | None = None) -> pa.Table:
        """The log rows with ``start <= event_timestamp < end``, feature and key columns in their UFR types."""
        from quasar.store.tables import time_filter

        table = self.table(service)
        try:
            rows = table.scan(row_filter=time_filter(EVENT_TIMESTAMP, start, end)).to_arrow()
        except Exception as exc:
            raise StoreError(f"reading the feature log of {service!r} failed: {type(exc).__name__}: {exc}") from exc
        return restore_types(rows, layouts(table))

    def layouts(self, service: str) -> dict[int, dict[str, Any]]:
        """What each logged service version's rows hold (``layout_of``), by version."""
        return layouts(self.table(service))


def layouts(table: Any) -> dict[int, dict[str, Any]]:
    """The layouts (``layout_of``) the table's properties record, by service version."""
    out = {}
    for key, value in table.properties.items():
        if key.startswith(LAYOUT_PREFIX) and key[len(LAYOUT_PREFIX):].isdigit():
            out[int(key[len(LAYOUT_PREFIX):])] = json.loads(value)
    return dict(sorted(out.items()))


def restore_types(rows: pa.Table, known: Mapping[int, dict[str, Any]]) -> pa.Table:
    """Log rows with every typed column in its UFR Arrow type (vectors back to fixed-size lists)."""
    types: dict[str, FeatureType] = {}
    for layout in known.values():
        for name, data in layout.get("types", {}).items():
            types[name] = feature_type_from_dict(data)
    columns, fields = [], []
    for f, column in zip(rows.schema, rows.columns, strict=True):
        target = types[f.name].arrow_type() if f.name in types else META_TYPES.get(f.name, f.type)
        if str(column.type) != str(target):
            column = column.cast(target)
        columns.append(column)
        fields.append(pa.field(f.name, target))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))
