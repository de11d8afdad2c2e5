"""``POST /v1/score``: the scores of a request's candidates, in candidate order."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from quasar.online.service.models import ErrorResponse
from quasar.online.service.request_id import request_id_of
from quasar.serving_adapters.scorer import Scorer
from quasar.serving_adapters.service.errors import JSONResponse, quasar_error_response, unexpected_response
from quasar.serving_adapters.service.schemas import ScoreRequest, ScoreResponse
from quasar.signals.errors import NotFoundError, QuasarError

SCORE_PATH = "/v1/score"
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse}
                                            for code in (401, 404, 409, 413, 422, 500, 503)}


async def answer_score(scorer: Scorer, body: ScoreRequest, request_id: str) -> Response:
    """The answer to a valid score request, errors included (counted in the scorer's request metrics); the
    route's body and the fast path's (``quasar.serving_adapters.service.fast_score``)."""
    # label metrics with the model name only once it is known to exist (bounded label values)
    label = body.model if scorer.models.cached(body.model) is not None else "unknown"
    try:
        result = await scorer.score(body.model, body.entities, body.candidates, body.request_data,
                                    return_features=body.return_features, request_id=request_id)
    except QuasarError as exc:
        response = quasar_error_response(exc)
        if not isinstance(exc, NotFoundError) and scorer.models.cached(body.model) is not None:
            label = body.model
        scorer.metrics.requests.labels(label, str(response.status_code)).inc()
        return response
    except Exception as exc:         # a bug: a JSON 500, counted under the model when it is known
        if scorer.models.cached(body.model) is not None:
            label = body.model
        scorer.metrics.requests.labels(label, "500").inc()
        return unexpected_response(f"POST {SCORE_PATH}", exc)
    scorer.metrics.of(body.model).answered.inc()
    answer: dict[str, Any] = {"model": body.model, "scores": result.scores.tolist()}
    if result.features is not None:
        answer["features"] = result.features
    return JSONResponse(answer, headers={"Server-Timing": result.server_timing()})


def score_router(scorer: Scorer) -> APIRouter:
    router = APIRouter(tags=["scoring"])

    @router.post(SCORE_PATH, response_model=ScoreResponse, responses=_ERRORS)  # type: ignore[misc]
    async def score(body: ScoreRequest, request: Request) -> Response:
        """Read the request entity's and the candidates' features online (and compute its request-time
        features from ``request_data``) and score them with ``model``."""
        return await answer_score(scorer, body, request_id_of(request))

    return router
