"""The scoring service's error answers: the platform's one status table (``online.service.status``) and its
one JSON error body, ``{"error": {"type": ..., "message": ...}}``, plus the scorer's request metrics."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from online.service.errors import JSONResponse, error_response, quasar_error_response, validation_message
from online.service.status import http_status
from signals.errors import QuasarError

__all__ = ["JSONResponse", "error_response", "handle_http_error", "handle_quasar_error", "handle_validation_error",
           "http_status", "quasar_error_response"]


def _count(request: Request, status: int) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None and request.url.path.endswith("/score"):
        metrics.requests.labels("unknown", str(status)).inc()


async def handle_quasar_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QuasarError)
    return quasar_error_response(exc)


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    _count(request, exc.status_code)
    name = {401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
    return error_response(exc.status_code, name, str(exc.detail), headers=dict(exc.headers or {}))


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    _count(request, 422)
    return error_response(422, "RequestError", validation_message(exc))
