"""Opening the registry database: URL normalisation, SQLite transaction control, table creation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from quasar.registry.models import metadata
from quasar.signals.errors import ConfigError, QuasarError

#: Execution option that makes a SQLite transaction take the write lock at BEGIN (``BEGIN IMMEDIATE``),
#: so a registration reads and writes one consistent state and two writers queue instead of deadlocking.
WRITE = "quasar_write"


def utc_now() -> datetime:
    return datetime.now(UTC)


def normalize_url(url: str) -> URL:
    """A SQLAlchemy URL; plain ``postgresql://`` uses psycopg 3 (the driver quasar ships with)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"registry url {url!r} is not a database URL: use e.g. "
                          "'sqlite:///.quasar/registry.db' or 'postgresql://user@host/db'") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _is_sqlite_file(url: URL) -> bool:
    db = url.database
    return url.get_backend_name() == "sqlite" and bool(db) and db != ":memory:" and not str(db).startswith("file:")


def open_engine(url: str) -> Engine:
    """An engine for ``url`` with the tables created; a relative SQLite file's folder is created too."""
    parsed = normalize_url(url)
    options: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        options["connect_args"] = {"timeout": 60}          # wait for another writer rather than fail
        if _is_sqlite_file(parsed):
            Path(str(parsed.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
        else:
            options["poolclass"] = StaticPool                # one in-memory database for every thread
            options["connect_args"]["check_same_thread"] = False
    else:
        options["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **options)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"registry url {parsed.render_as_string(hide_password=True)!r}: {exc} "
                          "(quasar's registry runs on SQLite and PostgreSQL)") from exc
    if parsed.get_backend_name() == "sqlite":
        _take_over_sqlite_transactions(engine)
    try:
        _create_tables(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise ConfigError(f"cannot open the registry at {parsed.render_as_string(hide_password=True)}: "
                          f"{_first_line(exc)}") from exc
    return engine


def _create_tables(engine: Engine) -> None:
    try:
        metadata.create_all(engine)
    except SQLAlchemyError:
        metadata.create_all(engine)   # another process created them between our check and our CREATE


def _take_over_sqlite_transactions(engine: Engine) -> None:
    """pysqlite's own BEGIN handling is lazy; emit BEGIN ourselves (IMMEDIATE for writers)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")


@contextmanager
def transaction(engine: Engine, *, write: bool = False) -> Iterator[Connection]:
    """One transaction: committed when the block ends, rolled back when it raises. Database failures other
    than constraint violations (which registration retries) become a QuasarError naming the database."""
    try:
        with engine.connect() as conn:
            if write:
                conn.execution_options(**{WRITE: True})
            with conn.begin():
                yield conn
    except IntegrityError:
        raise
    except DBAPIError as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise QuasarError(f"the registry database at {where} failed: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
