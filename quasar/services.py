"""App factories for ``quasar serve`` and ``quasar score-serve``, built from a project's configuration.

Each is a zero-argument factory (the project folder comes from ``QUASAR_PROJECT``), so uvicorn can build one
app per worker process, each with its own Redis connections.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quasar.platform import Platform

if TYPE_CHECKING:
    from fastapi import FastAPI

PROJECT_ENV = "QUASAR_PROJECT"
FEATURE_APP = "quasar.services:feature_app"
SCORING_APP = "quasar.services:scoring_app"


def _platform() -> Platform:
    return Platform.open(os.environ.get(PROJECT_ENV, "."))


def _async_store(p: Platform):  # type: ignore[no-untyped-def]
    from quasar.online.redis_store import AsyncRedisOnlineStore
    on = p.config.online
    return AsyncRedisOnlineStore(on.redis_url, project=p.config.project.name, cluster=on.cluster,
                                 socket_timeout=on.read_timeout, write_timeout=on.write_timeout,
                                 connect_timeout=on.connect_timeout)


def _feature_logger(p: Platform) -> Callable[[Callable[[str, int], None]], Any]:
    """The factory of the project's served-feature logger: Iceberg tables ``<namespace>.<service>__log`` in
    the project's catalog, written by a child process (``quasar.online.feature_log_process``: the writing
    never competes with the event loop for the GIL), which opens the catalog on its first write."""
    import functools

    from quasar.online.feature_log_process import ProcessFeatureLogger
    from quasar.store.catalog import open_catalog
    off = p.config.offline
    catalog = functools.partial(open_catalog, uri=p.config.sql_url(off.catalog_uri), warehouse=p.config.warehouse,
                                properties=dict(off.properties))

    settings = p.config.logging

    def build(observe: Callable[[str, int], None]) -> Any:
        return ProcessFeatureLogger(catalog, off.namespace, observe=observe, max_queue=settings.max_queue_rows,
                                    batch_rows=settings.batch_rows, flush_interval_s=settings.flush_interval_s)

    return build


def feature_app() -> FastAPI:
    """The HTTP feature service of the project in ``$QUASAR_PROJECT`` (default: the current folder)."""
    from quasar.online.service.app import create_app
    p = _platform()
    on = p.config.online
    app = create_app(resolve=p._resolve, store=_async_store(p), max_entities=on.max_entities,
                     auth_tokens=on.auth_tokens, offline_push=p.push_offline, close_store=True,
                     max_body_bytes=on.max_body_bytes, feature_lists=p.feature_lists,
                     feature_logger=_feature_logger(p))
    app.state.context.time_bounds = p.config.time_bounds     # what a push accepts: [time] (quasar.signals.bounds)
    return app


def project_importable(root: Path) -> None:
    """Put the project root first on the import path, as ``python`` puts a script's folder: a bundle names its
    model class by module (``shop_model:ShopScorer``), and a user's own module lives in the project."""
    path = str(Path(root).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
        importlib.invalidate_caches()


def scoring_app() -> FastAPI:
    """The scoring service of the project in ``$QUASAR_PROJECT``: every bundle of ``[serving] models``, loaded
    and checked against the registry now, at start-up (``/healthz`` shows each one's state); model classes
    import from the project root and installed packages."""
    from quasar.serving_adapters.models import ModelRegistry, registry_resolver
    from quasar.serving_adapters.service.app import create_scoring_app
    from quasar.serving_adapters.settings import scorer_options
    p = _platform()
    project_importable(p.root)
    sv = p.config.serving
    models = ModelRegistry(p.config.path(sv.models), registry_resolver(p.registry), p.feature_lists)
    models.load_all()
    return create_scoring_app(models=models, store=_async_store(p), auth_tokens=p.config.online.auth_tokens,
                              max_batch_rows=sv.max_batch_rows, max_wait_ms=sv.max_wait_ms,
                              device=sv.device or None, batching=sv.batching,
                              max_body_bytes=p.config.online.max_body_bytes, close_store=True,
                              feature_logger=_feature_logger(p),
                              **scorer_options(sv, p.config.path(sv.models)))      # [serving] cache, model_host
