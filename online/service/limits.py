"""The request-body size limit of both services, as pure ASGI middleware in front of everything that parses.

A body whose ``Content-Length`` is over the limit is answered 413 at once, before a byte of it is read; a
body without one (chunked) is counted as it streams in, and answered 413 as soon as it passes the limit, so
an oversized request costs neither the time nor the memory of parsing it. The answer is the platform's JSON
error, ``RequestTooLarge`` (Feast's error document on Feast's routes).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quasar.online.service.errors import scoped_error_response
from quasar.signals.errors import ConfigError

#: The default limit of both services: a 10,000-row push of a few features fits several times over.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024

#: Called with the scope and the status of an answer a middleware gives by itself (for metrics).
OnAnswer = Callable[[Scope, int], None]


class BodyTooLargeError(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit. An HTTPException, so FastAPI's body
    reader lets it through to the app's HTTP error handler (one JSON answer, counted like any other)."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


def check_limit(max_body_bytes: int) -> int:
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ConfigError(f"max_body_bytes must be a positive number of bytes, got {max_body_bytes!r}")
    return max_body_bytes


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    """Answers 413 for a request body over ``max_body_bytes``, before the app parses it."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 on_answer: OnAnswer | None = None) -> None:
        self.app = app
        self.max_body_bytes = check_limit(max_body_bytes)
        self.on_answer = on_answer

    def message(self, size: str) -> str:
        return (f"request body {size} is over the limit of {self.max_body_bytes} bytes; send fewer rows, "
                "entities or candidates per request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            await self._refuse(scope, receive, send, self.message(f"(Content-Length {length})"))
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLargeError(self.message(f"(chunked, {received} bytes so far)"))
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLargeError as exc:        # read outside the app's handlers (e.g. by a middleware)
            if started:
                raise
            await self._refuse(scope, receive, send, str(exc.detail))

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, message: str) -> None:
        if self.on_answer is not None:
            self.on_answer(scope, 413)
        response = scoped_error_response(scope, 413, "RequestTooLarge", message, headers={"Connection": "close"})
        await response(scope, receive, send)
