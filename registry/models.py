"""The registry's tables (SQLAlchemy Core), portable across SQLite and PostgreSQL.

Table names carry a ``quasar_`` prefix so a team can keep the registry in the same PostgreSQL
database as other tools (pyiceberg's SQL catalog, for one) without collisions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

NAME = String(200)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps naive UTC; PostgreSQL timestamptz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


metadata = MetaData()

entities = Table(
    "quasar_entities", metadata,
    Column("name", NAME, primary_key=True),
    Column("join_key", NAME, nullable=False),
    Column("join_key_type", String(20), nullable=False),
    Column("description", Text, nullable=False),
    Column("definition", JSON, nullable=False),          # Entity.to_dict()
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

sources = Table(
    "quasar_sources", metadata,
    Column("name", NAME, primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("definition", JSON, nullable=False),          # Source.to_dict()
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

source_schemas = Table(
    "quasar_source_schemas", metadata,                    # a source's schema inferred at its first read
    Column("source_name", NAME, primary_key=True),
    Column("source_identity", String(64), nullable=False),   # quasar.signals.source_schema.RecordedSchema.identity
    Column("columns", JSON, nullable=False),                 # [[name, logical type], ...] in file order
    Column("origin", Text, nullable=False),                  # the file or table it was inferred from
    Column("recorded_at", UTCDateTime, nullable=False),
)

signals = Table(
    "quasar_signals", metadata,
    Column("name", NAME, primary_key=True),
    Column("latest_version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

signal_versions = Table(
    "quasar_signal_versions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("signal_name", NAME, ForeignKey("quasar_signals.name"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("entity_name", NAME, nullable=False),
    Column("source_name", NAME, nullable=False),
    Column("definition", JSON, nullable=False),          # Signal.to_dict()
    Column("schema", JSON, nullable=False),              # FeatureSchema.to_dict()
    Column("schema_fingerprint", String(32), nullable=False),
    Column("code_fingerprint", String(32), nullable=False),
    Column("definition_fingerprint", String(32), nullable=False),
    Column("owner", Text, nullable=False),
    Column("ttl_seconds", BigInteger, nullable=True),
    Column("online", Boolean, nullable=False),
    Column("upstream", JSON, nullable=False),            # names of upstream signals
    Column("module", Text, nullable=False),              # file path or module name it was registered from
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("signal_name", "version", name="uq_quasar_signal_version"),
)

lineage = Table(
    "quasar_lineage", metadata,
    Column("signal_name", NAME, nullable=False),
    Column("version", Integer, nullable=False),
    Column("upstream_name", NAME, nullable=False),
    PrimaryKeyConstraint("signal_name", "version", "upstream_name"),
    Index("ix_quasar_lineage_upstream", "upstream_name"),
)

runs = Table(
    "quasar_runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("signal_name", NAME, nullable=False),
    Column("version", Integer, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("status", String(20), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("snapshot_id", BigInteger, nullable=True),
    Column("rows", BigInteger, nullable=True),
    Column("duration_s", Float, nullable=True),
    Column("params", JSON, nullable=False),
    Column("details", JSON, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=True),     # the lease: renewed while the run is alive
    Column("lease_s", Float, nullable=True),                # (quasar.registry.runs); NULL: holds no lease
    Index("ix_quasar_runs_signal", "signal_name", "id"),
)

promotions = Table(
    "quasar_promotions", metadata,                        # versions promoted to serve explicitly
    Column("signal_name", NAME, ForeignKey("quasar_signals.name"), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("promoted_at", UTCDateTime, nullable=False),
)

state = Table(
    "quasar_state", metadata,
    Column("key", String(500), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

leases = Table(
    "quasar_leases", metadata,                            # named leases, one holder at a time (quasar.registry.leases)
    Column("name", NAME, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("renewed_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("details", JSON, nullable=False),
)

definitions = Table(
    "quasar_definitions", metadata,                       # versioned request-time signals and feature services
    Column("kind", String(20), nullable=False),           # "request" | "service"
    Column("name", NAME, nullable=False),
    Column("version", Integer, nullable=False),
    Column("definition", JSON, nullable=False),           # RequestSignal.to_dict() / FeatureService.to_dict()
    Column("definition_fingerprint", String(32), nullable=False),
    Column("source", Text, nullable=True),                # a request-time version's module text, to run it later
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("kind", "name", "version"),
)
