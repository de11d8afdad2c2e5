"""The JSON error body every error answer uses, ``{"error": {"type": "NotFoundError", "message": "no signal
named 'x'; ..."}}``, with the status from the one table in ``quasar.online.service.status``, and the handlers.

Feast's routes (``/get-online-features``, ``/write-to-online-store``, ``/push``) answer errors in Feast's own
shape instead, so Feast's SDK raises its typed exceptions: the body is a JSON *string* holding the document
``{"module": "feast.errors", "class": "FeatureViewNotFoundException", "message": "..."}`` (what Feast's
``FeastError.to_error_detail`` writes and ``from_error_detail`` reads back), with the same status as ours.

Nothing answers 500 on purpose: 500 is left to errors nobody expected, logged with their traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Scope

from quasar.online.service.status import HTTP_STATUS, http_status
from quasar.signals.errors import NotFoundError, OnlineStoreError, QuasarError

__all__ = ["HTTP_STATUS", "JSONResponse", "as_feast", "error_response", "feast_error_response",
           "http_error_response", "http_status", "quasar_error_response", "scoped_error_response"]

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


def note_quasar_error(request: Request, exc: QuasarError) -> int:
    """Count a Redis error in the metrics, log a 5xx; returns the status."""
    if isinstance(exc, OnlineStoreError):
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.redis_errors.labels(type(exc).__name__).inc()
    status = http_status(exc)
    if status >= 500:
        log.warning("%s %s answered %d: %s", request.method, request.url.path, status, exc)
    return status


async def handle_quasar_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QuasarError)
    note_quasar_error(request, exc)
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


# --- Feast's error shape --------------------------------------------------------------------------------------

FEAST_ERRORS_MODULE = "feast.errors"
#: Feast's routes (``routers.feast``): their errors answer in Feast's shape, the middlewares' too.
FEAST_PATHS = frozenset({"/get-online-features", "/write-to-online-store", "/push"})
FEAST_CLASS = "feast_class"        # the attribute ``as_feast`` sets on an error: the Feast class it answers as
E = TypeVar("E", bound=QuasarError)


def as_feast(exc: E, feast_class: str) -> E:
    """``exc``, marked to answer as ``feast.errors.<feast_class>`` on Feast's routes (its status is still ours)."""
    setattr(exc, FEAST_CLASS, feast_class)
    return exc


def feast_class_of(exc: QuasarError) -> str:
    """The Feast exception class an error answers as: the one ``as_feast`` gave it; an unknown signal is an
    unknown feature view; everything else is Feast's root, ``FeastError``."""
    marked = getattr(exc, FEAST_CLASS, None)
    if isinstance(marked, str):
        return marked
    return "FeatureViewNotFoundException" if isinstance(exc, NotFoundError) else "FeastError"


def feast_error_response(status: int, feast_class: str, message: str,
                         headers: dict[str, str] | None = None) -> JSONResponse:
    """Feast's error answer: a JSON string holding ``{"module", "class", "message"}``, as its server writes it."""
    detail = json.dumps({"module": FEAST_ERRORS_MODULE, "class": feast_class, "message": message})
    return JSONResponse(detail, status_code=status, headers=headers)


def scoped_error_response(scope: Scope, status: int, error_type: str, message: str,
                          headers: dict[str, str] | None = None) -> JSONResponse:
    """A middleware's own answer (401, 413): ``error_response``, or Feast's shape on Feast's routes."""
    if scope.get("path") in FEAST_PATHS:
        return feast_error_response(status, "FeastError", message, headers)
    return error_response(status, error_type, message, headers)


def feast_answer_to(request: Request, exc: Exception) -> JSONResponse | None:
    """The Feast-shaped answer to an error on a Feast route (quasar errors, invalid bodies, HTTP errors such as
    a body over the limit); None for anything unexpected (the app's 500 handler takes it)."""
    if isinstance(exc, QuasarError):
        return feast_error_response(note_quasar_error(request, exc), feast_class_of(exc), str(exc))
    if isinstance(exc, RequestValidationError):
        return feast_error_response(422, "FeastError", validation_message(exc))
    if isinstance(exc, StarletteHTTPException):
        return feast_error_response(exc.status_code, "FeastError", str(exc.detail), headers=dict(exc.headers or {}))
    return None
