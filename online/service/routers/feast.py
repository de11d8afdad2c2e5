"""Feast's feature-server routes, for Feast 0.67's SDK (``online_store: {type: remote, path: <this service>}``)
and any client of ``feast serve``: ``POST /get-online-features``, ``POST /write-to-online-store`` and
``POST /push``, with Feast's request bodies, its answers and its error shape (``errors.feast_answer_to``), so
the SDK raises its own typed exceptions (FeatureViewNotFoundException, FeastError, ...).

A feature view is a signal (``view@v2`` pins a version), and so is a push source. Reads and writes go through
the same planning, push rules and stores as ``/v1/features`` and ``/v1/push``; what Feast's wire format needs
besides is in ``quasar.online.service.feast_wire``. ``feature_service`` names a registered quasar feature
service (its pinned features; an unknown one is Feast's FeatureServiceNotFoundException, 404), and request
data for request-time signals comes among the entities, as Feast's SDK sends it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from quasar.online.push import validate_push_rows
from quasar.online.response import parse_refs
from quasar.online.service.context import Prepared, ServiceContext
from quasar.online.service.errors import JSONResponse, as_feast, feast_answer_to, feast_error_response
from quasar.online.service.feast_wire import coerce_plan_keys, feast_answer, feast_rows
from quasar.online.service.models import (
    FeastFeaturesRequest,
    FeastPushRequest,
    FeastWriteRequest,
    FeaturesResponse,
)
from quasar.online.service.request_id import request_id_of
from quasar.online.service.routers.features import read_features
from quasar.online.service.routers.push import check_push, pushed_signal, rows_from_json, write_pushed
from quasar.online.service.served_log import log_served
from quasar.signals.errors import NotFoundError, QuasarError, RequestError
from quasar.signals.refs import parse_feature_ref

Refs = list[tuple[str, tuple[str, int | None, str | None]]]

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": "Feast's error document, as a JSON string: "
                          '"{\\"module\\": \\"feast.errors\\", \\"class\\": ..., \\"message\\": ...}"',
           "content": {"application/json": {"schema": {"type": "string"}}}}
    for code in (401, 413, 422, 502, 503)}


class FeastRoute(APIRoute):
    """A route whose errors, invalid bodies included, answer in Feast's shape (``errors.feast_answer_to``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def feast_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                answer = feast_answer_to(request, exc)
                if answer is None:
                    raise
                return answer

        return feast_handler


def feast_read_error(ctx: ServiceContext, exc: QuasarError, refs: Refs) -> QuasarError:
    """``exc`` (from planning a read) marked with the Feast class it is: an unknown view or view version, or an
    unknown feature of a known view; other errors stay Feast's root, FeastError."""
    for _, (name, version, feature) in refs:
        try:
            signal, _ = ctx.resolver.get(name, version)
        except NotFoundError:
            if isinstance(exc, NotFoundError):
                return as_feast(exc, "FeatureViewVersionNotFound" if version is not None and _known(ctx, name)
                                else "FeatureViewNotFoundException")
            continue
        except QuasarError:
            continue
        if type(exc) is RequestError and feature is not None and feature not in signal.schema.names:
            return as_feast(exc, "FeastObjectNotFoundException")
    return exc


def _known(ctx: ServiceContext, name: str) -> bool:
    try:
        ctx.resolver.get(name, None)
    except QuasarError:
        return False
    return True


FEATURE_SERVICE_NOT_FOUND = "FeatureServiceNotFoundException"


async def prepare_service(ctx: ServiceContext, name: str) -> Prepared | Response:
    """The feature service ``name`` ready to plan, or Feast's FeatureServiceNotFoundException (404) naming it."""
    try:
        return await ctx.planner.prepare([], name)
    except NotFoundError as exc:
        return feast_error_response(404, FEATURE_SERVICE_NOT_FOUND,
                                    f"feature service {name!r} does not exist: {exc}; or ask for features by "
                                    "reference, features=['view:feature', ...]")


async def write_df(ctx: ServiceContext, name: str, df: Mapping[str, Sequence[Any]], *, what: str,
                   missing: str, online: bool = True, offline: str = "") -> None:
    """Check and write a Feast ``df`` to the signal ``name`` (``what`` says which field named it, ``missing``
    the Feast class of an unknown one); ``offline`` is how the request asked for the offline store, if it did."""
    check_push(ctx, max((len(v) for v in df.values()), default=0), offline)
    ref = parse_feature_ref(name, RequestError)
    if ref.feature is not None:
        raise RequestError(f"{what} {name!r}: name a signal ('signal' or 'signal@version'), not a feature")
    try:
        signal, version = await pushed_signal(ctx, ref)
    except NotFoundError as exc:
        raise as_feast(NotFoundError(f"{what} {name!r}: {exc}"), missing) from exc
    table = validate_push_rows(signal, rows_from_json(signal, feast_rows(signal, df)), bounds=ctx.time_bounds)
    await write_pushed(ctx, signal, version, table, online=online, offline=bool(offline))


async def answer_feast_features(ctx: ServiceContext, body: FeastFeaturesRequest, request_id: str) -> Response:
    """The answer of ``POST /get-online-features`` to a valid body (the route's, and ``fast_path``'s); errors
    are raised, for the route's Feast shape (``FeastRoute``)."""
    service = body.feature_service
    if service is not None:                      # as Feast's server: a service wins over a feature list
        prepared = await prepare_service(ctx, service)
        if isinstance(prepared, Response):
            return prepared
        features = prepared.refs
    else:
        features = body.features
    refs = parse_refs(features)
    try:
        prepared, plan, answer = await read_features(ctx, body.entities, [] if service else features,
                                                     body.full_feature_names, service=service,
                                                     check_keys=coerce_plan_keys)
    except (NotFoundError, RequestError) as exc:
        raise await anyio.to_thread.run_sync(feast_read_error, ctx, exc, refs) from None
    log_served(ctx, prepared, plan, answer, request_id)
    return JSONResponse(feast_answer(plan, answer, version_metadata=body.include_feature_view_version_metadata))


def feast_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(tags=["feast"], route_class=FeastRoute)

    @router.post("/get-online-features", response_model=FeaturesResponse, responses=ERRORS)  # type: ignore[misc]
    async def get_online_features(body: FeastFeaturesRequest, request: Request) -> Response:
        """Feast's read: the answer of ``/v1/features`` (join keys first, then the features in request order;
        the TTL is enforced: OUTSIDE_MAX_AGE), with Timestamp features in epoch seconds as Feast answers them.
        Keys in the other JSON type are taken when exact (``"7"`` for an int64 key); errors are Feast's.
        ``feature_service`` reads a quasar feature service (request fields among the entities)."""
        return await answer_feast_features(ctx, body, request_id_of(request))

    @router.post("/write-to-online-store", responses={  # type: ignore[misc]
        200: {"description": "Written; the body is null, as Feast answers",
              "content": {"application/json": {"schema": {"type": "null"}}}}, **ERRORS})
    async def write_to_online_store(body: FeastWriteRequest) -> Response:
        """Feast's write (``FeatureStore.write_to_online_store`` and ``push`` with a remote online store): rows
        of the signal named ``feature_view_name``, checked by the push rules (every feature given, times within
        the bounds); a row older than the stored one for its key is skipped (newer event time wins)."""
        await write_df(ctx, body.feature_view_name, body.df, what="feature view",
                       missing="FeastObjectNotFoundException")
        return JSONResponse(None)

    @router.post("/push", response_class=Response, responses={  # type: ignore[misc]
        200: {"description": "Written; no body, as Feast answers"}, **ERRORS})
    async def push(body: FeastPushRequest) -> Response:
        """Feast's push: rows of the signal named ``push_source_name``, to the online store, the offline store
        or both (``to``); the same rules as ``/write-to-online-store``."""
        offline = f'to: "{body.to}"' if body.to != "online" else ""
        await write_df(ctx, body.push_source_name, body.df, what="push source", missing="PushSourceNotFoundException",
                       online=body.to != "offline", offline=offline)
        return Response(status_code=200)

    return router
