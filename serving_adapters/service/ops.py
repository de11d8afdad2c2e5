"""``GET /healthz`` (device, loaded models, online store reachability) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from quasar.online.service.auth import is_authorized
from quasar.serving_adapters.scorer import Scorer
from quasar.serving_adapters.service.errors import JSONResponse
from quasar.serving_adapters.service.schemas import HealthResponse
from quasar.signals.errors import QuasarError

HEALTH_TIMEOUT_S = 2.0


async def store_health(store: Any) -> str:
    """``"ok"`` when the online store answers a ping, else why not."""
    ping = getattr(store, "ping", None)
    if ping is None:
        return "ok"
    try:
        await asyncio.wait_for(ping(), HEALTH_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {HEALTH_TIMEOUT_S:g}s"
    except (QuasarError, OSError) as exc:
        return str(exc) or type(exc).__name__
    return "ok"


def ops_router(scorer: Scorer) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", response_model=HealthResponse, responses={503: {"model": HealthResponse}})  # type: ignore[misc]
    async def healthz(request: Request) -> Response:
        """200 when the online store answers; 503 (same body) when it does not. Every bundle's state (loaded,
        failed with its error, unloaded) is listed only to an authorized caller (with tokens, only with one):
        it names models and feature references; anyone sees how many are in each state."""
        store = await store_health(scorer.store)
        states = scorer.models.states()
        models = [s.describe() for s in states] if is_authorized(request.scope) else []
        counts: dict[str, int] = {}
        for s in states:
            counts[s.state] = counts.get(s.state, 0) + 1
        body = {"status": "ok" if store == "ok" else "unavailable", "online_store": store,
                "device": str(scorer.device), "device_name": scorer.device_name,
                "batching": scorer.batcher.enabled, "models": models, "model_states": counts}
        return JSONResponse(body, status_code=200 if store == "ok" else 503)

    @router.get("/metrics", response_class=Response,  # type: ignore[misc]
                responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}})
    async def metrics() -> Response:
        """Prometheus metrics of this service."""
        return Response(scorer.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
