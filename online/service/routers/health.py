"""``GET /healthz`` (is the online store reachable?), Feast's ``GET /health`` (the same, no body) and
``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from quasar.online.service.context import ServiceContext
from quasar.online.service.errors import JSONResponse
from quasar.online.service.models import HealthResponse
from quasar.signals.errors import QuasarError

PING_TIMEOUT_S = 2.0


async def store_health(ctx: ServiceContext) -> str:
    """``"ok"`` when the online store answers a ping within ``PING_TIMEOUT_S``, else why not."""
    try:
        await asyncio.wait_for(ctx.store.ping(), PING_TIMEOUT_S)
    except TimeoutError:
        reason = f"no answer within {PING_TIMEOUT_S:g} s"
    except (QuasarError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
    else:
        return "ok"
    ctx.metrics.redis_errors.labels("health").inc()
    return reason


def health_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", response_model=HealthResponse,  # type: ignore[misc]
                responses={503: {"model": HealthResponse, "description": "The online store cannot be reached"}})
    async def healthz() -> Response:
        """200 when the online store answers; 503 (same body, with the reason) when it does not."""
        reason = await store_health(ctx)
        ok = reason == "ok"
        return JSONResponse({"status": "ok" if ok else "unavailable", "online_store": reason},
                            status_code=200 if ok else 503)

    @router.get("/health", response_class=Response,  # type: ignore[misc]
                responses={200: {"description": "The online store answers (no body)"},
                           503: {"description": "The online store cannot be reached (no body)"}})
    async def feast_health() -> Response:
        """Feast's probe (``feast serve``'s ``/health``): 200 or 503 with no body, open like ``/healthz``."""
        reason = await store_health(ctx)
        return Response(status_code=200 if reason == "ok" else 503)

    @router.get("/metrics", response_class=Response,  # type: ignore[misc]
                responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}})
    async def metrics() -> Response:
        """Request counts and latency histograms by route and status, entity rows read, Redis errors."""
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
