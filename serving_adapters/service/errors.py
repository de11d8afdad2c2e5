"""One table from quasar errors to HTTP status codes, and the JSON error body every error answer uses."""

from __future__ import annotations

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from signals.errors import (
    BundleError,
    NotFoundError,
    OnlineStoreError,
    OnlineUnavailableError,
    QuasarError,
    RequestError,
    SchemaError,
    ServingError,
)

#: Most specific first; the first class an error is an instance of gives its status.
STATUS_OF: tuple[tuple[type[QuasarError], int], ...] = (
    (NotFoundError, 404),           # unknown model (or a signal it names)
    (RequestError, 422),            # wrong key name, key type, too many candidates
    (BundleError, 409),             # the model's bundle does not match the registry
    (OnlineUnavailableError, 503),  # Redis is down
    (OnlineStoreError, 502),        # Redis answered something unusable
    (SchemaError, 409),             # an online record written under another schema
    (ServingError, 503),            # the scorer cannot run the model (shutting down, bad output)
    (QuasarError, 400),
)


class JSONResponse(Response):
    """A JSON response rendered by orjson."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


def status_of(exc: QuasarError) -> int:
    return next(code for cls, code in STATUS_OF if isinstance(exc, cls))


def error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def quasar_error_response(exc: QuasarError) -> JSONResponse:
    return error_response(status_of(exc), type(exc).__name__, str(exc))


def validation_detail(exc: RequestValidationError) -> str:
    """The first validation problem, with where it is (``candidates.pin_id.1: ...``)."""
    parts = []
    for err in exc.errors()[:3]:
        loc = list(err.get("loc", ()))
        if loc and loc[0] == "body":
            loc = loc[1:]
        if len(loc) > 1 and loc[-1] in ("int", "str"):  # the branch of a ``StrictInt | StrictStr`` union
            loc = loc[:-1]
        where = ".".join(str(p) for p in loc)
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(dict.fromkeys(parts))


async def handle_quasar_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QuasarError)
    return quasar_error_response(exc)


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None and request.url.path.endswith("/score"):
        metrics.requests.labels("unknown", str(exc.status_code)).inc()
    name = {401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
    return error_response(exc.status_code, name, str(exc.detail), headers=dict(exc.headers or {}))


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None and request.url.path.endswith("/score"):
        metrics.requests.labels("unknown", "422").inc()
    return error_response(422, "RequestError", validation_detail(exc))
