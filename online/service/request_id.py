"""A request id for every HTTP request: the caller's ``X-Request-ID`` when it is a sensible token, else a fresh
``uuid4`` hex; kept in the ASGI scope for the routes (feature logging records it) and echoed in the answer's
``X-Request-ID`` header, errors included, so a caller can find its request in the feature log."""

from __future__ import annotations

import re
import uuid

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
SCOPE_KEY = "quasar.request_id"
#: What a caller's id may be: up to 128 printable ASCII characters without spaces (anything else is replaced).
_TOKEN = re.compile(r"[!-~]{1,128}")


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_of(request: Request) -> str:
    """The id ``RequestIdMiddleware`` gave this request (a fresh one when the app runs without it)."""
    found = request.scope.get(SCOPE_KEY)
    return found if isinstance(found, str) else new_request_id()


class RequestIdMiddleware:
    """Pure ASGI: picks the request's id and adds it to the response headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k == HEADER.encode()), b"").decode("latin-1")
        rid = given if _TOKEN.fullmatch(given) else new_request_id()
        scope[SCOPE_KEY] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != HEADER.encode()]
                message = {**message, "headers": [*headers, (HEADER.encode(), rid.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_id)
