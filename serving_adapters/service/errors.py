"""The scoring service's error answers: the platform's one status table (``quasar.online.service.status``) and its
one JSON error body, ``{"error": {"type": ..., "message": ...}}``, plus the scorer's request metrics.
Nothing answers a plain-text 500: an error nobody expected is logged with its traceback and answered with a
JSON ``InternalError``."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from quasar.online.service.errors import (
    JSONResponse,
    error_response,
    http_error_response,
    quasar_error_response,
    validation_message,
)
from quasar.online.service.status import http_status
from quasar.signals.errors import QuasarError

__all__ = ["JSONResponse", "error_response", "handle_http_error", "handle_quasar_error", "handle_unexpected",
           "handle_validation_error", "http_status", "quasar_error_response", "unexpected_response"]

log = logging.getLogger("quasar.scorer")


def _count(request: Request, status: int) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None and request.url.path.endswith("/score"):
        metrics.requests.labels("unknown", str(status)).inc()


def unexpected_response(where: str, exc: BaseException) -> JSONResponse:
    """The answer to an error nobody expected in ``where`` (``"POST /v1/score"``): logged with its traceback,
    a JSON 500 without its details."""
    log.error("%s failed unexpectedly", where, exc_info=exc)
    return error_response(500, "InternalError", f"unexpected {type(exc).__name__}; the service log has the details")


async def handle_quasar_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QuasarError)
    return quasar_error_response(exc)


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    _count(request, exc.status_code)
    return http_error_response(exc)


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    _count(request, 422)
    return error_response(422, "RequestError", validation_message(exc))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """The last resort (outside the score route, which answers and counts its own): JSON, counted."""
    _count(request, 500)
    return unexpected_response(f"{request.method} {request.url.path}", exc)
