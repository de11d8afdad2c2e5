"""quasar's errors: the tree lives in ``signals.errors`` (the lowest room, so every room can raise them);
this module re-exports it for users and maps errors to HTTP status codes from one table."""

from __future__ import annotations

from signals.errors import (
    BackfillError,
    BundleError,
    ConfigError,
    DatasetError,
    DefinitionError,
    DependencyMissingError,
    NotFoundError,
    OnlineStoreError,
    OnlineUnavailableError,
    QuasarError,
    RegistrationError,
    RequestError,
    SchemaError,
    SchemaMismatchError,
    ServingError,
    StoreError,
    TooManyEntitiesError,
    ValidationFailedError,
)

__all__ = [
    "HTTP_STATUS", "BackfillError", "BundleError", "ConfigError", "DatasetError", "DefinitionError",
    "DependencyMissingError", "NotFoundError", "OnlineStoreError", "OnlineUnavailableError", "QuasarError",
    "RegistrationError", "RequestError", "SchemaError", "SchemaMismatchError", "ServingError", "StoreError",
    "TooManyEntitiesError", "ValidationFailedError", "http_status",
]

#: Most specific first; the first class an error is an instance of gives its status.
HTTP_STATUS: tuple[tuple[type[QuasarError], int], ...] = (
    (TooManyEntitiesError, 413),
    (OnlineUnavailableError, 503),
    (NotFoundError, 422),
    (RequestError, 422),
    (SchemaError, 422),
    (DefinitionError, 422),
    (ValidationFailedError, 422),
    (QuasarError, 500),
)


def http_status(error: QuasarError) -> int:
    """The HTTP status code for an error, from ``HTTP_STATUS``."""
    for cls, status in HTTP_STATUS:
        if isinstance(error, cls):
            return status
    return 500
