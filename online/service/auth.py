"""Optional bearer-token auth for every route but ``/healthz`` (probes stay open), as ASGI middleware so it
also covers ``/metrics``, ``/docs`` and ``/openapi.json``; both services use it. Tokens are compared in
constant time. ``/healthz`` is open, but it learns whether its caller is authorized (``is_authorized``), so
it can leave out what only an authorized caller may see."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from quasar.online.service.errors import scoped_error_response

OPEN_PATHS = frozenset({"/healthz", "/health"})          # /health: Feast's probe, open as in feast serve
AUTHORIZED_KEY = "quasar.authorized"       # set in the ASGI scope of every request that reaches the app


def token_matches(header: str, tokens: Sequence[bytes]) -> bool:
    """Whether an ``Authorization`` header is ``Bearer <one of tokens>``; every token is compared, so the
    time taken says nothing about which one (or how much of one) matched."""
    scheme, _, token = header.partition(" ")
    given = token.strip().encode()
    ok = False
    for candidate in tokens:
        ok |= hmac.compare_digest(given, candidate)
    return ok and scheme.lower() == "bearer"


def is_authorized(scope: Scope) -> bool:
    """Whether the request carried a valid token, or the service has none (True outside the middleware)."""
    return bool(scope.get(AUTHORIZED_KEY, True))


class BearerAuthMiddleware:
    """Answers 401 (JSON, ``WWW-Authenticate: Bearer``) unless the request carries a configured token.
    ``on_answer(scope, 401)`` is called for each refusal (the scorer counts them in its metrics)."""

    def __init__(self, app: ASGIApp, tokens: Sequence[str],
                 on_answer: Callable[[Scope, int], None] | None = None) -> None:
        self.app = app
        self.tokens = [t.encode() for t in tokens if t]
        self.on_answer = on_answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.tokens:
            await self.app(scope, receive, send)
            return
        header = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        authorized = token_matches(header, self.tokens)
        scope[AUTHORIZED_KEY] = authorized
        if authorized or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.on_answer is not None:
            self.on_answer(scope, 401)
        reason = "invalid bearer token" if header else "missing bearer token: send 'Authorization: Bearer <token>'"
        response = scoped_error_response(scope, 401, "Unauthorized", reason, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)
