"""Quarantine: batches a strict data-quality gate refused, kept for inspection in one Iceberg table per signal version.

``<namespace>.<signal>__v<version>__quarantine`` has the signal table's columns (join key, event_timestamp,
created_timestamp, features, in storage types) plus ``quarantine__run_id`` (the refused run, to join with
``quasar runs``) and ``quarantine__at``. Appended to, never replaced: every refused batch stays until someone
drops the table. Names with ``__`` cannot be features, so the extra columns never clash.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from quasar.signals.errors import NotFoundError, StoreError
from quasar.signals.signal import Signal
from quasar.store.arrow_types import iceberg_schema, restore_ufr_types, to_storage
from quasar.store.tables import OfflineStore, table_name

RUN_ID = "quarantine__run_id"
QUARANTINED_AT = "quarantine__at"


def quarantine_identifier(store: OfflineStore, signal: str, version: int) -> tuple[str, str]:
    """``(namespace, "<signal>__v<version>__quarantine")``."""
    return (store.namespace, f"{table_name(signal, version)}__quarantine")


def _schema(signal: Signal) -> Any:
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField, TimestamptzType

    base = iceberg_schema(signal)
    top = base.highest_field_id
    return Schema(*base.fields,
                  NestedField(field_id=top + 1, name=RUN_ID, field_type=LongType(), required=False),
                  NestedField(field_id=top + 2, name=QUARANTINED_AT, field_type=TimestamptzType(), required=False),
                  identifier_field_ids=[])


def _table(store: OfflineStore, signal: Signal, version: int, *, create: bool) -> Any:
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError, TableAlreadyExistsError

    ident = quarantine_identifier(store, signal.name, version)
    try:
        return store.catalog.load_table(ident)
    except (NoSuchTableError, NoSuchNamespaceError) as exc:
        if not create:
            raise NotFoundError(f"signal {signal.name} v{version} has no quarantine table: no batch was refused") \
                from exc
    except Exception as exc:
        raise StoreError(f"cannot load the quarantine table {'.'.join(ident)}: {exc}") from exc
    try:
        store.catalog.create_namespace_if_not_exists(store.namespace)
        return store.catalog.create_table(ident, schema=_schema(signal),
                                          properties={"quasar.signal": signal.name, "quasar.version": str(version),
                                                      "quasar.quarantine": "true"})
    except TableAlreadyExistsError:
        return store.catalog.load_table(ident)
    except Exception as exc:
        raise StoreError(f"cannot create the quarantine table {'.'.join(ident)}: {exc}") from exc


def quarantine(store: OfflineStore, signal: Signal, version: int, rows: pa.Table, *, run_id: int | None) -> int:
    """Append a refused batch (UFR or storage types) with its run id; returns the rows written."""
    stored = to_storage(rows, signal)
    now = pa.array([datetime.now(UTC)] * stored.num_rows, pa.timestamp("us", tz="UTC"))
    stored = stored.append_column(pa.field(RUN_ID, pa.int64()), pa.array([run_id] * stored.num_rows, pa.int64()))
    stored = stored.append_column(pa.field(QUARANTINED_AT, now.type), now)
    table = _table(store, signal, version, create=True)
    try:
        table.append(stored, snapshot_properties={"quasar.run_id": str(run_id), "quasar.rows": str(stored.num_rows)})
    except Exception as exc:
        raise StoreError(f"signal {signal.name} v{version}: writing {stored.num_rows} rows to the quarantine table "
                         f"{'.'.join(quarantine_identifier(store, signal.name, version))} failed: "
                         f"{type(exc).__name__}: {exc}") from exc
    return stored.num_rows


def read_quarantine(store: OfflineStore, signal: Signal, version: int, *, run_id: int | None = None) -> pa.Table:
    """The quarantined rows of ``signal`` v``version`` (of one run when given), in UFR types."""
    table = _table(store, signal, version, create=False)
    if run_id is None:
        rows = table.scan().to_arrow()
    else:
        from pyiceberg.expressions import EqualTo
        rows = table.scan(row_filter=EqualTo(RUN_ID, int(run_id))).to_arrow()  # type: ignore[call-arg, arg-type]
    return restore_ufr_types(rows, signal.schema)
