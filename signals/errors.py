"""The one error root of quasar and its tree.

Every error quasar raises on purpose is a ``QuasarError``. Adapters translate third-party
errors at the boundary (``raise ... from exc``); the CLI prints them as one line and the
HTTP layers map them to status codes from one table (see ``quasar/errors.py``)::

    QuasarError
    ├── ConfigError                  bad quasar.toml / environment
    ├── DependencyMissingError       an optional extra is not installed
    ├── DefinitionError              an Entity / Source / signal / feature type is invalid
    │   └── RegistrationError        a module failed to import or validate (names file, line, definition)
    ├── NotFoundError                unknown signal, feature, entity, version, model, run
    ├── SchemaError                  data does not match a declared schema
    │   └── SchemaMismatchError      a UFR record written under another schema fingerprint
    ├── StoreError                   offline store (Iceberg) failures
    │   ├── BackfillError            a backfill failed; the previous snapshot stays
    │   └── DatasetError             a point-in-time request is invalid (collisions, bad spine)
    ├── ValidationFailedError        a data-quality gate rejected a batch
    ├── OnlineStoreError             online store (Redis) failures
    │   └── OnlineUnavailableError   the online store cannot be reached
    ├── ServingError                 scorer failures (bundles, batching)
    │   ├── BundleError              a model bundle is invalid or does not match the registry
    │   └── ModelImportError         a bundle's model class cannot be imported where the scorer runs
    └── RequestError                 a request is malformed (HTTP 4xx)
        └── TooManyEntitiesError     more entities than the configured limit
"""

from __future__ import annotations

from typing import Any


class QuasarError(Exception):
    """Root of every error quasar raises on purpose."""


class ConfigError(QuasarError):
    """The configuration (quasar.toml or an environment override) is invalid."""


class DependencyMissingError(QuasarError):
    """An optional dependency is not installed; the message says which extra to install."""

    def __init__(self, package: str, extra: str, purpose: str = "") -> None:
        what = f" for {purpose}" if purpose else ""
        super().__init__(
            f"{package} is needed{what} but is not installed: pip install 'quasar[{extra}]'"
        )
        self.package = package
        self.extra = extra


class DefinitionError(QuasarError):
    """A user definition (entity, source, signal, feature type) is invalid."""


class RegistrationError(DefinitionError):
    """Registering a module failed; nothing was written to the registry."""


class NotFoundError(QuasarError, LookupError):
    """Something named does not exist (signal, feature, entity, version, model, run)."""


class ModelNotFoundError(NotFoundError):
    """No model bundle of that name (the scoring service answers 404)."""


class SchemaError(QuasarError):
    """Data does not match a declared schema."""


class SchemaMismatchError(SchemaError):
    """A UFR record was written under another schema than the reader expects."""


class StoreError(QuasarError):
    """The offline store failed."""


class BackfillError(StoreError):
    """A backfill failed; the signal's table keeps its previous snapshot."""


class DatasetError(StoreError):
    """A point-in-time dataset request is invalid."""


class ValidationFailedError(QuasarError):
    """A data-quality gate rejected a batch; ``details`` holds what failed (JSON-safe, as the run log keeps it)."""

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = dict(details or {})


class OnlineStoreError(QuasarError):
    """The online store failed."""


class OnlineUnavailableError(OnlineStoreError):
    """The online store cannot be reached."""


class ServingError(QuasarError):
    """The scorer failed."""


class BundleError(ServingError):
    """A model bundle is invalid or does not match the registry."""


class ModelImportError(ServingError):
    """A bundle's model class (``module:Class``) cannot be imported where the scorer runs (the service answers
    503 for that model: the scorer cannot run it until the module is there)."""


class RequestError(QuasarError, ValueError):
    """A request is malformed."""


class TooManyEntitiesError(RequestError):
    """A request names more entities than the configured limit."""
