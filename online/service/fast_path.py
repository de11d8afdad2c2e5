"""The feature reads without FastAPI's per-request machinery: ``POST /v1/features`` and
``POST /get-online-features`` answered straight from the ASGI scope, the same answers as the routes.

Routing, dependency solving, the pydantic request models and the exception middleware cost more per request
than reading the features does. This pure-ASGI layer sits inside every middleware of the app (request id,
metrics, auth, the body limit), so those still see every request; it takes only what is certain to be
valid: a POST to one of the two paths with ``Content-Type: application/json`` and a ``Content-Length``, a
body that orjson parses (and without integers orjson would read as floats: the routes parse with
``json``), shaped exactly as the route's request model accepts it. The model is then built without
validation (``model_construct``) and handed to the route's own function (``answer_features``,
``answer_feast_features``); an error is answered by the handler the app would use (the Feast route's shape
on Feast's path). Anything else, a malformed body included, goes to FastAPI with its body replayed, so its
answer (the 422 of an invalid body, say) is what it always was.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quasar.online.service.context import ServiceContext
from quasar.online.service.errors import feast_answer_to
from quasar.online.service.models import FeastFeaturesRequest, FeaturesRequest
from quasar.online.service.request_id import SCOPE_KEY, new_request_id
from quasar.online.service.routers.feast import answer_feast_features
from quasar.online.service.routers.features import answer_features

FEATURES_PATH = "/v1/features"
FEAST_PATH = "/get-online-features"
_FEATURES_FIELDS = frozenset(FeaturesRequest.model_fields)
_FEAST_FIELDS = tuple(FeastFeaturesRequest.model_fields)
#: Integers orjson reads as floats (beyond int64 below zero, beyond uint64 above), and json as ints.
BIG_INT = re.compile(rb"-\d{19}|\d{20}")

Answer = Callable[[ServiceContext, Any, str], Awaitable[Response]]


def _lists(value: Any) -> bool:
    """A ``dict[str, list[Any]]`` as pydantic accepts it from JSON."""
    return type(value) is dict and all(type(v) is list for v in value.values())


def _strings(value: Any) -> bool:
    return type(value) is list and all(type(v) is str for v in value)


def features_body(data: Any) -> FeaturesRequest | None:
    """``data`` as the valid ``FeaturesRequest`` it is, or None when it may not be one (pydantic decides)."""
    if type(data) is not dict or not data.keys() <= _FEATURES_FIELDS or not _lists(data.get("entities")):
        return None
    features, service = data.get("features"), data.get("feature_service")
    request_data, full = data.get("request_data"), data.get("full_feature_names", False)
    if ((features is not None and not _strings(features)) or (service is not None and type(service) is not str)
            or (request_data is not None and not _lists(request_data)) or type(full) is not bool):
        return None
    return FeaturesRequest.model_construct(entities=data["entities"], features=features, feature_service=service,
                                           request_data=request_data, full_feature_names=full)


def feast_body(data: Any) -> FeastFeaturesRequest | None:
    """``data`` as the valid ``FeastFeaturesRequest`` it is (unknown fields ignored, as the model does), or
    None when it may not be one."""
    if type(data) is not dict or not _lists(data.get("entities")):
        return None
    features = data.get("features", [])
    service = data.get("feature_service")
    if not _strings(features) or (service is not None and type(service) is not str):
        return None
    flags = (data.get("full_feature_names", False), data.get("include_feature_view_version_metadata", False))
    if type(flags[0]) is not bool or type(flags[1]) is not bool:
        return None
    return FeastFeaturesRequest.model_construct(**{k: data[k] for k in _FEAST_FIELDS if k in data})


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class FastReads:
    """Answers the two feature reads it is sure of (see the module); everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, fastapi: FastAPI, ctx: ServiceContext, routes: Sequence[Any]) -> None:
        self.app = app
        self.fastapi = fastapi
        self.ctx = ctx
        #: the route objects of the two paths (what the metrics label a request by, from ``scope["route"]``)
        self.routes = {r.path: r for r in routes if getattr(r, "path", None) in (FEATURES_PATH, FEAST_PATH)
                       and "POST" in (getattr(r, "methods", None) or ())}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if (scope["type"] != "http" or scope["method"] != "POST" or path not in (FEATURES_PATH, FEAST_PATH)
                or scope.get("root_path") or header(scope, b"content-type") != b"application/json"
                or header(scope, b"content-length") is None or path not in self.routes):
            await self.app(scope, receive, send)
            return
        body, tail = await read_body(receive)
        body_model: Any = None
        if tail is None and body and not BIG_INT.search(body):
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError:
                data = None
            body_model = features_body(data) if path == FEATURES_PATH else feast_body(data)
        if body_model is None:
            await self.app(scope, replay(body, tail, receive), send)
            return
        scope["route"] = self.routes[path]
        scope.setdefault("path_params", {})
        rid = scope.get(SCOPE_KEY)
        answer: Answer = answer_features if path == FEATURES_PATH else answer_feast_features
        try:
            response = await answer(self.ctx, body_model, rid if isinstance(rid, str) else new_request_id())
        except Exception as exc:
            response = await self._error(scope, receive, exc, feast=path == FEAST_PATH)
        await response(scope, receive, send)

    async def _error(self, scope: Scope, receive: Receive, exc: Exception, *, feast: bool) -> Response:
        """What the app answers to ``exc`` raised by the route: the Feast route's shape on its path, else the
        app's exception handler for it (as Starlette's ExceptionMiddleware looks it up); re-raised when none
        (the app's 500 handler, outside every middleware, answers it)."""
        request = Request(scope, receive)
        if feast:
            answer = feast_answer_to(request, exc)
            if answer is not None:
                return answer
        handlers = self.fastapi.exception_handlers
        handler = (handlers.get(exc.status_code) if isinstance(exc, HTTPException) and exc.status_code != 500
                   else None)
        if handler is None:
            handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers and c is not Exception), None)
        if handler is None:
            raise exc
        response: Response = await handler(request, exc)  # type: ignore[misc]
        return response


async def read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The request body, and the message that ended it early (a disconnect) or None."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), None


def replay(body: bytes, tail: Message | None, receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read again, then what ``receive`` gives."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    if tail is not None:
        pending = [{"type": "http.request", "body": body, "more_body": True}, tail] if body else [tail]

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
