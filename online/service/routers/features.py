"""``POST /v1/features`` and Feast's ``POST /get-online-features``: feature columns for entity rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from quasar.online.response import aread_online_features, parse_refs, plan_request
from quasar.online.service.context import ServiceContext
from quasar.online.service.errors import JSONResponse
from quasar.online.service.models import (
    ErrorResponse,
    FeastFeaturesRequest,
    FeaturesRequest,
    FeaturesResponse,
)
from quasar.signals.errors import RequestError

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 413, 422, 502, 503)}


async def online_features(ctx: ServiceContext, entities: Mapping[str, Sequence[Any]], features: Sequence[str],
                          full_feature_names: bool) -> Response:
    """Plan (resolving signals through the cache), read every entity's signals, answer Feast's shape."""
    await ctx.resolver.prefetch([(name, version) for _, (name, version, _) in parse_refs(features)])
    plan = plan_request(entities, features, ctx.resolver.get, full_feature_names=full_feature_names,
                        max_entities=ctx.max_entities)
    body = await aread_online_features(ctx.store, plan)
    ctx.metrics.entity_rows.inc(plan.rows)
    return JSONResponse(body)


def features_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(tags=["features"])

    @router.post("/v1/features", response_model=FeaturesResponse, responses=ERRORS)  # type: ignore[misc]
    async def get_features(body: FeaturesRequest) -> Response:
        """Features of entity rows, one column per feature over the rows in request order, join keys first.

        Statuses: PRESENT, NOT_FOUND (no record for the key), NULL_VALUE (the record holds a null),
        OUTSIDE_MAX_AGE (the record is older than the signal's TTL; its value is null). NaN and ±inf are null.
        """
        return await online_features(ctx, body.entities, body.features, body.full_feature_names)

    @router.post("/get-online-features", response_model=FeaturesResponse, responses=ERRORS)  # type: ignore[misc]
    async def get_online_features(body: FeastFeaturesRequest) -> Response:
        """Feast's feature-server endpoint: the same answer as ``/v1/features``, for Feast clients."""
        if body.feature_service is not None:
            raise RequestError(f"feature_service {body.feature_service!r}: quasar has no feature services; "
                               "list the features as 'signal:feature'")
        return await online_features(ctx, body.entities, body.features, body.full_feature_names)

    return router
