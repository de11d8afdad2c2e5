"""Optional bearer-token auth for every route but ``/healthz`` (probes stay open), as ASGI middleware so it
also covers ``/metrics``, ``/docs`` and ``/openapi.json``. Tokens are compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from online.service.errors import error_response

OPEN_PATHS = frozenset({"/healthz"})


def token_matches(header: str, tokens: Sequence[bytes]) -> bool:
    """Whether an ``Authorization`` header is ``Bearer <one of tokens>``; every token is compared, so the
    time taken says nothing about which one (or how much of one) matched."""
    scheme, _, token = header.partition(" ")
    given = token.strip().encode()
    ok = False
    for candidate in tokens:
        ok |= hmac.compare_digest(given, candidate)
    return ok and scheme.lower() == "bearer"


class BearerAuthMiddleware:
    """Answers 401 (JSON, ``WWW-Authenticate: Bearer``) unless the request carries a configured token."""

    def __init__(self, app: ASGIApp, tokens: Sequence[str]) -> None:
        self.app = app
        self.tokens = [t.encode() for t in tokens if t]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.tokens or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        if token_matches(header, self.tokens):
            await self.app(scope, receive, send)
            return
        reason = "invalid bearer token" if header else "missing bearer token: send 'Authorization: Bearer <token>'"
        response = error_response(401, "Unauthorized", reason, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)
