"""One table from quasar errors to HTTP status codes: the HTTP contract of the whole platform (the feature
service answers with it; ``quasar.errors`` re-exports it). Imports nothing but the error tree, so the CLI can
use it without loading FastAPI."""

from __future__ import annotations

from quasar.signals.errors import (
    BundleError,
    ConfigError,
    DatasetError,
    DefinitionError,
    DependencyMissingError,
    ModelNotFoundError,
    NotFoundError,
    OnlineStoreError,
    OnlineUnavailableError,
    QuasarError,
    RequestError,
    SchemaError,
    SchemaMismatchError,
    ServingError,
    StoreError,
    TooManyEntitiesError,
    ValidationFailedError,
)

#: Most specific first; the first class an error is an instance of gives its status.
HTTP_STATUS: tuple[tuple[type[QuasarError], int], ...] = (
    (TooManyEntitiesError, 413),     # more entity rows than the service answers per request
    (OnlineUnavailableError, 503),   # Redis cannot be reached: retry later
    (OnlineStoreError, 502),         # Redis answered something unusable
    (ModelNotFoundError, 404),       # no model bundle of that name (scoring service)
    (NotFoundError, 422),            # unknown signal, feature, version or entity in a request
    (RequestError, 422),             # a malformed request: wrong join key, key type, reference syntax
    (SchemaMismatchError, 409),      # a stored record was written under another schema than the registry's
    (SchemaError, 422),              # pushed rows do not match the signal's schema
    (DatasetError, 422),             # a point-in-time request is invalid
    (DefinitionError, 422),          # an invalid definition
    (ValidationFailedError, 422),    # a data-quality gate rejected the rows
    (BundleError, 409),              # a model bundle does not match the registry
    (ServingError, 503),             # the scorer cannot run now
    (StoreError, 502),               # the offline store (Iceberg) failed
    (DependencyMissingError, 501),   # an optional extra is not installed
    (ConfigError, 500),
    (QuasarError, 500),
)


def http_status(error: BaseException) -> int:
    """The HTTP status code of an error, from ``HTTP_STATUS`` (500 for anything else)."""
    for cls, status in HTTP_STATUS:
        if isinstance(error, cls):
            return status
    return 500
