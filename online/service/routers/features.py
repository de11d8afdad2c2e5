"""``POST /v1/features``: feature columns for entity rows, stored and request-time, by list or by feature service
(Feast's ``/get-online-features`` is in ``routers.feast`` and reads through the same ``read_features``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from quasar.online.response import OnlinePlan, aread_online_features
from quasar.online.service.context import Prepared, ServiceContext
from quasar.online.service.errors import JSONResponse
from quasar.online.service.models import ErrorResponse, FeaturesRequest, FeaturesResponse
from quasar.online.service.request_id import request_id_of
from quasar.online.service.served_log import log_served
from quasar.signals.errors import RequestError

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 413, 422, 502, 503)}


def features_or_service(features: Sequence[str] | None, service: str | None) -> tuple[list[str], str | None]:
    """Exactly one of a feature list and a feature service, as a RequestError naming both fields otherwise."""
    if features is not None and service is not None:
        raise RequestError("give features or feature_service, not both")
    if service is not None:
        return [], service
    if features is None:
        raise RequestError("features: give a list of 'signal:feature' references, or a feature_service")
    return list(features), None


def check_join_keys(plan: OnlinePlan) -> None:
    """Every join key value an int64 or a string (request fields among the entities are any JSON)."""
    for key, values in plan.join_keys.items():
        for i, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise RequestError(f"entities.{key}.{i}: {value!r} is not a join key: give an integer or a string")


async def read_features(ctx: ServiceContext, entities: Mapping[str, Sequence[Any]], features: Sequence[str],
                        full_feature_names: bool, *, service: str | None = None,
                        request_data: Mapping[str, Sequence[Any]] | None = None,
                        check_keys: Callable[[OnlinePlan], None] | None = None) -> tuple[Prepared, OnlinePlan, dict[str, Any]]:
    """Plan (feature lists, services and signals resolved in a worker thread, then cached), check the plan's
    join keys (``check_keys``, by default ``check_join_keys``), read every entity's signals, run the
    request-time signals; the prepared list, the plan and Feast's shape."""
    prepared, plan = await ctx.planner.plan(entities, features, service, full_feature_names=full_feature_names,
                                            max_entities=ctx.max_entities, request_data=request_data)
    (check_keys or check_join_keys)(plan)
    body = await aread_online_features(ctx.store, plan)
    ctx.metrics.entity_rows.inc(plan.rows)
    return prepared, plan, body


def features_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(tags=["features"])

    @router.post("/v1/features", response_model=FeaturesResponse, responses=ERRORS)  # type: ignore[misc]
    async def get_features(body: FeaturesRequest, request: Request) -> Response:
        """Features of entity rows, one column per feature over the rows in request order, join keys first.

        ``features`` or ``feature_service`` (a registered service's pinned features); request-time signals
        read their fields from ``request_data`` or from ``entities``. Statuses: PRESENT, NOT_FOUND (no record
        for the key), NULL_VALUE (the record holds a null, or a request-time feature is null), OUTSIDE_MAX_AGE
        (the record is older than the signal's TTL; its value is null). NaN and ±inf are null.
        """
        return await answer_features(ctx, body, request_id_of(request))

    return router


async def answer_features(ctx: ServiceContext, body: FeaturesRequest, request_id: str) -> Response:
    """The answer of ``POST /v1/features`` to a valid body (the route's, and ``fast_path``'s)."""
    features, service = features_or_service(body.features, body.feature_service)
    prepared, plan, answer = await read_features(ctx, body.entities, features, body.full_feature_names,
                                                 service=service, request_data=body.request_data)
    log_served(ctx, prepared, plan, answer, request_id)
    return JSONResponse(answer)
