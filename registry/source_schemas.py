"""The schemas quasar inferred for sources that declare none, recorded at their first read.

A source without ``schema=`` gets one the first time a backfill (or a validation) reads it: the columns and
logical types its files agreed on then. Later reads check every file against it, so a file that lacks a
column or stores it as another type is refused instead of read as nulls or cast. The record belongs to the
source's identity (``source_identity_key``): redefining the source (another path, a layout) records afresh.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from quasar.registry import models as m
from quasar.registry.db import transaction, utc_now
from quasar.signals.source import Source
from quasar.signals.source_schema import RecordedSchema, SourceSchema


def source_identity_key(source: Source) -> str:
    """A short, stable hash of what identifies ``source``'s rows (``Source.identity``)."""
    text = json.dumps(source.identity(), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def recorded_schema(engine: Engine, source: Source) -> RecordedSchema | None:
    """The schema recorded for ``source`` as it is defined now, or None."""
    t = m.source_schemas
    with transaction(engine) as conn:
        row = conn.execute(select(t).where(t.c.source_name == source.name)).first()
    if row is None or row.source_identity != source_identity_key(source):
        return None
    return _record(row)


def record_schema(engine: Engine, source: Source, schema: SourceSchema, *, origin: str) -> RecordedSchema:
    """Record ``schema`` for ``source`` unless a schema is already recorded for its identity; returns the record
    that holds (a concurrent first read may have recorded its own first: the caller checks against that)."""
    t = m.source_schemas
    key = source_identity_key(source)
    values = {"source_identity": key, "columns": [list(c) for c in schema.columns], "origin": origin,
              "recorded_at": utc_now()}
    for _ in range(3):
        try:
            with transaction(engine, write=True) as conn:
                row = conn.execute(select(t).where(t.c.source_name == source.name)).first()
                if row is None:
                    conn.execute(insert(t).values(source_name=source.name, **values))
                elif row.source_identity != key:
                    conn.execute(update(t).where(t.c.source_name == source.name).values(**values))
                else:
                    return _record(row)
                row = conn.execute(select(t).where(t.c.source_name == source.name)).one()
                return _record(row)
        except IntegrityError:            # another process inserted it between our read and our insert
            continue
    found = recorded_schema(engine, source)
    assert found is not None
    return found


def _record(row: Any) -> RecordedSchema:
    return RecordedSchema(source=row.source_name, schema=SourceSchema(tuple((str(n), str(t)) for n, t in row.columns)),
                          origin=row.origin, identity=row.source_identity, recorded_at=row.recorded_at)
