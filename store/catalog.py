"""Open the Iceberg catalog that holds the offline store: a SQL catalog by default, anything pyiceberg loads else.

``sqlite:///...`` and ``postgresql...://`` URIs give a pyiceberg ``SqlCatalog`` (the embedded default and the
team setup); REST, Glue, Hive and the rest go through ``pyiceberg.catalog.load_catalog`` with their own
properties. A local warehouse folder is created and handed to pyiceberg as a ``file://`` URI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from quasar.signals.errors import StoreError

_SQL_PREFIXES = ("sqlite:", "postgresql:", "postgresql+", "postgres:")


def warehouse_location(warehouse: str) -> str:
    """A warehouse as pyiceberg wants it: URIs (``s3://``, ``file://``) as they are, a local path as ``file://``."""
    if not warehouse:
        raise StoreError("the offline warehouse location is empty: set [offline] warehouse in quasar.toml")
    scheme = urlparse(warehouse).scheme
    if scheme and len(scheme) > 1:                 # "C:" on Windows is a drive, not a scheme
        if scheme == "file":
            Path(urlparse(warehouse).path).mkdir(parents=True, exist_ok=True)
        return warehouse
    path = Path(warehouse).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the offline warehouse folder {path}: {exc}") from exc
    return path.as_uri()


def _sql_uri(uri: str) -> str:
    """SQLAlchemy URL for the SQL catalog: create a SQLite file's folder; use psycopg 3 for PostgreSQL."""
    if uri.startswith("sqlite:"):
        db_path = uri.split(":///", 1)[1] if ":///" in uri else ""
        if db_path and db_path != ":memory:":
            try:
                Path(db_path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder of the catalog database {db_path}: {exc}") from exc
        return uri
    for plain in ("postgresql://", "postgres://"):
        if uri.startswith(plain):
            return "postgresql+psycopg://" + uri[len(plain):]
    return uri


def open_catalog(*, uri: str, warehouse: str, name: str = "quasar",
                 properties: dict[str, str] | None = None) -> Any:
    """The pyiceberg catalog at ``uri`` whose tables live under ``warehouse``.

    A SQL URI (SQLite or PostgreSQL) without a ``type`` property opens a ``SqlCatalog``; anything else is
    handed to ``load_catalog`` with ``uri``, ``warehouse`` and ``properties``.
    """
    props = {str(k): str(v) for k, v in (properties or {}).items()}
    location = warehouse_location(warehouse)
    try:
        if uri.startswith(_SQL_PREFIXES) and "type" not in props:
            from pyiceberg.catalog.sql import SqlCatalog

            sql_uri = _sql_uri(uri)
            try:
                return SqlCatalog(name, **{**props, "uri": sql_uri, "warehouse": location})
            except Exception as exc:       # another process created the catalog's tables between check and create
                if "already exists" not in str(exc):
                    raise
                return SqlCatalog(name, **{**props, "uri": sql_uri, "warehouse": location})
        from pyiceberg.catalog import load_catalog

        return load_catalog(name, **{**props, "uri": uri, "warehouse": location})
    except StoreError:
        raise
    except ImportError as exc:
        raise StoreError(f"cannot open the Iceberg catalog at {_redact(uri)}: a driver is missing ({exc}); "
                         "for PostgreSQL install quasar[postgres]") from exc
    except Exception as exc:  # pyiceberg and SQLAlchemy raise many unrelated types here
        raise StoreError(f"cannot open the Iceberg catalog at {_redact(uri)}: "
                         f"{type(exc).__name__}: {_first_line(exc)}") from exc


def _redact(uri: str) -> str:
    """The URI without its password, fit for an error message."""
    parsed = urlparse(uri)
    if parsed.password:
        return uri.replace(f":{parsed.password}@", ":***@", 1)
    return uri


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)
