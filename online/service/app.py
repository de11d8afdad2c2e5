"""The feature service's app factory (``quasar serve``): routers, error handlers, metrics and auth.

``create_app`` wires what it is given (a resolver, an async online store); ``app_from_env`` builds one from
environment variables, for ``run_service`` workers (uvicorn imports the factory in every worker process).
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse as StarletteJSONResponse

from quasar.online.response import Resolve
from quasar.online.service.auth import BearerAuthMiddleware
from quasar.online.service.context import OfflinePush, RequestPlanner, ResolveCache, ServiceContext
from quasar.online.service.errors import (
    JSONResponse,
    handle_http_error,
    handle_quasar_error,
    handle_unexpected,
    handle_validation_error,
)
from quasar.online.service.fast_path import FastReads
from quasar.online.service.limits import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware, check_limit
from quasar.online.service.metrics import MetricsMiddleware, ServiceMetrics
from quasar.online.service.request_id import RequestIdMiddleware
from quasar.online.service.routers.feast import feast_router
from quasar.online.service.routers.features import features_router
from quasar.online.service.routers.health import health_router
from quasar.online.service.routers.push import push_router
from quasar.online.service.served_log import LoggerFactory, ServedLog
from quasar.online.store import AsyncOnlineStore
from quasar.signals.errors import ConfigError, QuasarError
from quasar.signals.signal import Signal

if TYPE_CHECKING:
    from quasar.registry.feature_lists import FeatureLists

DESCRIPTION = """Online features from the quasar online store, in the response shape Feast clients read.

Feature references are `signal`, `signal:feature` or `signal@version:feature`, stored or request-time; a
registered feature service (`"feature_service": "ranker"`) stands for its pinned features. Request-time
signals read their request fields from `request_data` or from `entities` (as Feast sends request data). Every
answer carries an `X-Request-ID` header (the caller's, or a new one), the id feature logging records. JSON values: vectors and id
lists are lists, weighted id lists are lists of `{"id", "weight"}`, timestamps are ISO-8601 UTC strings, and
NaN and ±inf are `null` (JSON has no such numbers; the status stays PRESENT). Errors answer
`{"error": {"type", "message"}}`: 422 for an unknown signal, feature, feature service or join key, a key of the
wrong type, a missing or mistyped request field, or a request-time function that failed (naming the signal),
413 for too many entity rows or a request body over the size limit, 401 without a valid bearer token (when
the service has tokens), 503 while the online store cannot be reached (the service recovers by itself when it
is back)."""

DOCS_ASSETS = "/docs/assets"      # Swagger UI and ReDoc, served from the fastapi-offline package (no CDN)


class ModelJSONResponse(JSONResponse, StarletteJSONResponse):
    """The default response class: rendered by orjson (``JSONResponse``), and a Starlette ``JSONResponse`` as
    far as FastAPI can tell, so the OpenAPI document describes each route's 200 body by its ``response_model``
    (a custom ``Response`` subclass made every body a string there, and generated clients untyped)."""


def create_app(*, resolve: Resolve, store: AsyncOnlineStore, max_entities: int = 1000,
               auth_tokens: Sequence[str] = (), offline_push: OfflinePush | None = None,
               max_push_rows: int = 10_000, resolve_cache_s: float = 5.0, close_store: bool = False,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, feature_lists: FeatureLists | None = None,
               feature_logger: LoggerFactory | None = None) -> FastAPI:
    """A FastAPI feature service reading ``store``, resolving ``signal[@version]`` with ``resolve``.

    ``resolve(name, version)`` returns ``(Signal, version)`` (latest when version is None) or raises
    NotFoundError; answers are cached for ``resolve_cache_s`` seconds. With ``auth_tokens`` every route but
    ``/healthz`` needs ``Authorization: Bearer <token>``. ``offline_push(signal, version, table)`` appends
    pushed rows to the offline store (``"to": "online_and_offline"``). A request body over
    ``max_body_bytes`` is answered 413 before it is parsed. The store belongs to the caller unless
    ``close_store``. ``feature_lists`` (over the registry ``resolve`` reads) adds request-time signals and
    feature services. ``feature_logger(observe)`` builds a ``quasar.online.feature_log.FeatureLogger`` at
    start-up (in each worker, told of its counts by ``observe``) for the services that declare logging; it is
    flushed at shutdown.
    """
    if max_entities < 1 or max_push_rows < 1:
        raise ConfigError(f"max_entities and max_push_rows must be at least 1, got {max_entities}, {max_push_rows}")
    check_limit(max_body_bytes)
    metrics = ServiceMetrics()
    resolver = ResolveCache(resolve, resolve_cache_s)
    ctx = ServiceContext(store=store, resolver=resolver, metrics=metrics, max_entities=max_entities,
                         max_push_rows=max_push_rows, offline_push=offline_push,
                         request_planner=RequestPlanner(resolver, feature_lists, ttl_s=resolve_cache_s))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        served = None
        if feature_logger is not None:
            served = ctx.served_log = await anyio.to_thread.run_sync(ServedLog, feature_logger, metrics)
        gc.freeze()              # what start-up made lives as long as the app: full collections skip it
        try:
            yield
        finally:
            ctx.served_log = None
            if served is not None:
                await anyio.to_thread.run_sync(served.close)      # flush what was served
            if close_store:
                await store.close()

    app = FastAPIOffline(title="quasar feature service", version="1", description=DESCRIPTION, lifespan=lifespan,
                         default_response_class=ModelJSONResponse, static_url=DOCS_ASSETS)
    app.state.context = ctx
    app.state.metrics = metrics
    app.add_exception_handler(QuasarError, handle_quasar_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.add_exception_handler(Exception, handle_unexpected)
    routers = [features_router(ctx), feast_router(ctx), push_router(ctx), health_router(ctx)]
    for router in routers:
        app.include_router(router)
    known = frozenset(getattr(r, "path", "") for r in [*app.routes, *(r for x in routers for r in x.routes)]) - {""}
    app.add_middleware(FastReads, fastapi=app, ctx=ctx, routes=[r for x in routers for r in x.routes])  # innermost
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)  # after auth
    app.add_middleware(BearerAuthMiddleware, tokens=tuple(auth_tokens))      # inner: runs after metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics, known_paths=known)  # outer: sees every answer
    app.add_middleware(RequestIdMiddleware)                                    # outermost: every answer has one
    return app


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError as exc:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from exc


def app_from_env() -> FastAPI:
    """A service from the environment (stored and request-time signals, feature services; no feature
    logging): ``QUASAR_REGISTRY_URL`` (default ``sqlite:///.quasar/registry.db``),
    ``QUASAR_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``), ``QUASAR_PROJECT`` (default ``quasar``),
    ``QUASAR_REDIS_CLUSTER`` (``1`` for a cluster), ``QUASAR_MAX_ENTITIES`` (default 1000),
    ``QUASAR_MAX_BODY_BYTES`` (default 4 MiB) and ``QUASAR_AUTH_TOKENS`` (comma-separated). No offline push."""
    from quasar.online.redis_store import AsyncRedisOnlineStore
    from quasar.registry.feature_lists import FeatureLists
    from quasar.registry.registry import Registry

    registry = Registry.open(os.environ.get("QUASAR_REGISTRY_URL", "sqlite:///.quasar/registry.db"))
    store = AsyncRedisOnlineStore(os.environ.get("QUASAR_REDIS_URL", "redis://127.0.0.1:6379/0"),
                                  project=os.environ.get("QUASAR_PROJECT", "quasar"),
                                  cluster=os.environ.get("QUASAR_REDIS_CLUSTER", "") in ("1", "true", "yes"))

    def resolve(name: str, version: int | None) -> tuple[Signal, int]:
        found = registry.resolve(name, version)       # unpinned: the serving version
        return found.signal, found.version

    tokens = [t.strip() for t in os.environ.get("QUASAR_AUTH_TOKENS", "").split(",") if t.strip()]
    return create_app(resolve=resolve, store=store, max_entities=_int_env("QUASAR_MAX_ENTITIES", 1000),
                      auth_tokens=tokens, close_store=True, feature_lists=FeatureLists(registry),
                      max_body_bytes=_int_env("QUASAR_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))
