"""``POST /v1/features``: feature columns for entity rows (Feast's ``/get-online-features`` is in
``routers.feast`` and reads through the same ``read_features``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from quasar.online.response import OnlinePlan, aread_online_features, parse_refs, plan_request
from quasar.online.service.context import ServiceContext
from quasar.online.service.errors import JSONResponse
from quasar.online.service.models import ErrorResponse, FeaturesRequest, FeaturesResponse

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 413, 422, 502, 503)}


async def read_features(ctx: ServiceContext, entities: Mapping[str, Sequence[Any]], features: Sequence[str],
                        full_feature_names: bool) -> tuple[OnlinePlan, dict[str, Any]]:
    """Plan (resolving signals through the cache), read every entity's signals; the plan and Feast's shape."""
    await ctx.resolver.prefetch([(name, version) for _, (name, version, _) in parse_refs(features)])
    plan = plan_request(entities, features, ctx.resolver.get, full_feature_names=full_feature_names,
                        max_entities=ctx.max_entities)
    body = await aread_online_features(ctx.store, plan)
    ctx.metrics.entity_rows.inc(plan.rows)
    return plan, body


def features_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(tags=["features"])

    @router.post("/v1/features", response_model=FeaturesResponse, responses=ERRORS)  # type: ignore[misc]
    async def get_features(body: FeaturesRequest) -> Response:
        """Features of entity rows, one column per feature over the rows in request order, join keys first.

        Statuses: PRESENT, NOT_FOUND (no record for the key), NULL_VALUE (the record holds a null),
        OUTSIDE_MAX_AGE (the record is older than the signal's TTL; its value is null). NaN and ±inf are null.
        """
        _, answer = await read_features(ctx, body.entities, body.features, body.full_feature_names)
        return JSONResponse(answer)

    return router
