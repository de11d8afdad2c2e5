"""quasar's errors: the tree lives in ``quasar.signals.errors`` (the lowest room, so every room can raise them);
this module re-exports it for users, with the one table from errors to HTTP status codes that both services
answer with (``quasar.online.service.status``)."""

from __future__ import annotations

from quasar.online.service.status import HTTP_STATUS, http_status
from quasar.signals.errors import (
    BackfillError,
    BundleError,
    ConfigError,
    DatasetError,
    DefinitionError,
    DependencyMissingError,
    ModelImportError,
    ModelNotFoundError,
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
    "DependencyMissingError", "ModelImportError", "ModelNotFoundError", "NotFoundError", "OnlineStoreError", "OnlineUnavailableError", "QuasarError",
    "RegistrationError", "RequestError", "SchemaError", "SchemaMismatchError", "ServingError", "StoreError",
    "TooManyEntitiesError", "ValidationFailedError", "http_status",
]
