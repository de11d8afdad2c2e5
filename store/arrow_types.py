"""The mapping between a signal's UFR Arrow types and the types its Iceberg table stores.

Iceberg has neither fixed-size lists nor half floats, so a ``Vector(dim, dtype)`` is stored as
``list<float32>``; its dim and dtype live in the signal's schema and are restored on read, exactly
(float16 -> float32 -> float16 round-trips bit for bit). Every other feature type is stored as it is.
"""

from __future__ import annotations

import itertools
from typing import Any

import pyarrow as pa

from quasar.signals.errors import SchemaError
from quasar.signals.signal import Signal
from quasar.signals.ufr.schema import CREATED_TIMESTAMP, EVENT_TIMESTAMP, FeatureSchema
from quasar.signals.ufr.types import TIMESTAMP_ARROW, FeatureType, Vector

#: Arrow type of a stored vector: Iceberg ``list<float>`` with required elements.
STORED_VECTOR = pa.list_(pa.field("element", pa.float32(), nullable=False))
_STAMPS = (EVENT_TIMESTAMP, CREATED_TIMESTAMP)


def storage_type(ftype: FeatureType) -> pa.DataType:
    """The Arrow type a feature of type ``ftype`` has in the Iceberg table."""
    return STORED_VECTOR if isinstance(ftype, Vector) else ftype.arrow_type()


def storage_schema(signal: Signal) -> pa.Schema:
    """Arrow schema of a signal's Iceberg table: join key, event_timestamp, created_timestamp, features."""
    key = signal.entity
    return pa.schema([
        pa.field(key.join_key, key.arrow_key_type, nullable=False),
        pa.field(EVENT_TIMESTAMP, TIMESTAMP_ARROW, nullable=False),
        pa.field(CREATED_TIMESTAMP, TIMESTAMP_ARROW, nullable=True),
        *(pa.field(name, storage_type(ftype), nullable=True) for name, ftype in signal.schema),
    ])


def iceberg_schema(signal: Signal) -> Any:
    """The pyiceberg ``Schema`` of a signal's table; top-level fields get ids 1..n, nested fields after."""
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField, StringType, TimestamptzType

    key = signal.entity
    top = 3 + len(signal.schema)
    nested_ids = itertools.count(top + 1)

    def next_id() -> int:
        return next(nested_ids)

    key_type = LongType() if key.join_key_type == "int64" else StringType()
    fields = [
        NestedField(field_id=1, name=key.join_key, field_type=key_type, required=True),
        NestedField(field_id=2, name=EVENT_TIMESTAMP, field_type=TimestamptzType(), required=True),
        NestedField(field_id=3, name=CREATED_TIMESTAMP, field_type=TimestamptzType(), required=False),
    ]
    for i, (name, ftype) in enumerate(signal.schema, start=4):
        fields.append(NestedField(field_id=i, name=name, field_type=ftype.iceberg_type(next_id), required=False))
    return Schema(*fields, identifier_field_ids=[])


def to_storage(rows: pa.Table, signal: Signal) -> pa.Table:
    """Rows in UFR types -> the table's storage types and column order (a missing created_timestamp is null)."""
    schema = storage_schema(signal)
    columns = []
    for field in schema:
        if field.name in rows.column_names:
            column = rows.column(field.name)
            if column.type != field.type:
                try:
                    column = column.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise SchemaError(f"signal {signal.name}: column {field.name!r} of type {column.type} "
                                      f"cannot be stored as {field.type}: {exc}") from exc
        elif field.name == CREATED_TIMESTAMP:
            column = pa.chunked_array([pa.nulls(rows.num_rows, TIMESTAMP_ARROW)])
        else:
            raise SchemaError(f"signal {signal.name}: column {field.name!r} is missing from the rows to store")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def restore_ufr_types(table: pa.Table, schema: FeatureSchema) -> pa.Table:
    """Stored rows -> UFR types: vectors back to ``fixed_size_list<dtype>[dim]``, timestamps to UTC.

    Columns named in ``schema`` get their feature's Arrow type, ``event_timestamp`` and ``created_timestamp``
    get ``timestamp[us, UTC]``; other columns pass through unchanged. One vectorised cast per column.
    """
    types = schema.as_dict()
    fields = list(table.schema)
    columns = list(table.columns)
    changed = False
    for i, field in enumerate(fields):
        if field.name in types:
            target = types[field.name].arrow_type()
        elif field.name in _STAMPS:
            target = TIMESTAMP_ARROW
        else:
            continue
        if field.type == target and str(field.type) == str(target):   # == ignores list item names
            continue
        try:
            columns[i] = columns[i].cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaError(f"column {field.name!r}: stored type {field.type} does not restore to "
                              f"{target}: {exc}") from exc
        fields[i] = pa.field(field.name, target, nullable=field.nullable, metadata=field.metadata)
        changed = True
    if not changed:
        return table
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=table.schema.metadata))


def fix_pyiceberg_list_nulls() -> None:
    """Keep null ``list<struct>`` values null through pyiceberg's reads and writes.

    pyiceberg (0.12 and before) rebuilds list-of-struct arrays from their offsets alone, dropping the
    validity bitmap, so a null WeightedIdList would be written to Parquet as ``[]`` and be lost for every
    reader (apache/iceberg-python#3833, fix pending upstream). Wrap the projection step to carry the nulls
    over, as the upstream fix does; where nulls already survive this does nothing.
    """
    from pyiceberg.io import pyarrow as pyiceberg_arrow

    visitor = pyiceberg_arrow.ArrowProjectionVisitor
    original = visitor.list
    if getattr(original, "_quasar_keeps_nulls", False):
        return

    def list_keeping_nulls(self: Any, list_type: Any, list_array: Any, value_array: Any) -> Any:
        result = original(self, list_type, list_array, value_array)
        if (result is not None and list_array is not None and list_array.null_count
                and result.null_count != list_array.null_count
                and isinstance(result, (pa.ListArray, pa.LargeListArray))):
            result = type(result).from_arrays(result.offsets, result.values, type=result.type,
                                              mask=list_array.is_null())
        return result

    list_keeping_nulls._quasar_keeps_nulls = True  # type: ignore[attr-defined]
    setattr(visitor, "list", list_keeping_nulls)  # noqa: B010 - replacing a method on purpose
