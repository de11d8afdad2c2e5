"""The JSON error body every error answer uses, ``{"error": {"type": "NotFoundError", "message": "no signal
named 'x'; ..."}}``, with the status from the one table in ``quasar.online.service.status``, and the handlers.

Nothing answers 500 on purpose: 500 is left to errors nobody expected, logged with their traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from quasar.online.service.status import HTTP_STATUS, http_status
from quasar.signals.errors import OnlineStoreError, QuasarError

__all__ = ["HTTP_STATUS", "JSONResponse", "error_response", "http_error_response", "http_status",
           "quasar_error_response"]

log = logging.getLogger("quasar.service")

# orjson: NaN and ±inf become null; datetimes become ISO-8601 with "Z"; numpy arrays are written natively
ORJSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class JSONResponse(Response):
    """A JSON response rendered by orjson (see ``ORJSON_OPTIONS``)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=ORJSON_OPTIONS)


HTTP_ERROR_NAMES = {401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed", 413: "RequestTooLarge"}


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message}}


def error_response(status: int, error_type: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(error_type, message), status_code=status, headers=headers)


def quasar_error_response(exc: QuasarError) -> JSONResponse:
    """The answer to a quasar error: its status from the table, its class and message."""
    return error_response(http_status(exc), type(exc).__name__, str(exc))


def json_error_message(error: dict[str, Any], document: Any) -> str:
    """``body is not valid JSON: Expecting ',' delimiter at line 1 column 28``, from FastAPI's ``json_invalid``
    error (its position is a character offset into the body)."""
    loc = error.get("loc", ())
    pos = loc[-1] if loc and isinstance(loc[-1], int) else None
    reason = str((error.get("ctx") or {}).get("error") or "cannot be parsed")
    if pos is None:
        return f"body is not valid JSON: {reason}"
    text = document if isinstance(document, str) else ""
    line = text.count("\n", 0, pos) + 1
    column = pos - text.rfind("\n", 0, pos)
    return f"body is not valid JSON: {reason} at line {line} column {column}"


def validation_message(exc: RequestValidationError) -> str:
    """The first few validation problems, each with where it is (``entities.user_id.1: ...``); a body that
    is not JSON at all is one line naming the position and what is wrong there."""
    errors = exc.errors()
    if errors and errors[0].get("type") == "json_invalid":
        return json_error_message(errors[0], exc.body)
    parts = []
    for err in errors[:3]:
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] == "body":
            loc = loc[1:]
        if len(loc) > 1 and loc[-1] in ("int", "str"):     # the branch of a ``StrictInt | StrictStr`` union
            loc = loc[:-1]
        where = ".".join(loc)
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(dict.fromkeys(parts))


async def handle_quasar_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QuasarError)
    if isinstance(exc, OnlineStoreError):
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.redis_errors.labels(type(exc).__name__).inc()
    status = http_status(exc)
    if status >= 500:
        log.warning("%s %s answered %d: %s", request.method, request.url.path, status, exc)
    return quasar_error_response(exc)


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "RequestError", validation_message(exc))


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return http_error_response(exc)


def http_error_response(exc: StarletteHTTPException) -> JSONResponse:
    """The JSON answer to a Starlette HTTP error (401, 404, 405, 413 for a body over the limit)."""
    name = HTTP_ERROR_NAMES.get(exc.status_code, "HTTPError")
    return error_response(exc.status_code, name, str(exc.detail), headers=dict(exc.headers or {}))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """Anything nobody expected: logged with its traceback, answered 500 with a JSON body."""
    log.error("%s %s failed unexpectedly", request.method, request.url.path, exc_info=exc)
    return error_response(500, "InternalError", f"unexpected {type(exc).__name__}; the service log has the details")
