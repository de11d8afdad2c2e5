"""Optional bearer-token auth: with tokens configured, scoring needs ``Authorization: Bearer <token>``."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence

from fastapi import HTTPException, Request


def bearer_auth(tokens: Sequence[str]) -> Callable[[Request], None]:
    """A FastAPI dependency that answers 401 unless the request carries one of ``tokens`` (constant time)."""
    known = [t.encode() for t in tokens if t]

    def check(request: Request) -> None:
        if not known:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = token.strip().encode()
        ok = False
        for candidate in known:       # compare against every token, so timing says nothing about which
            ok |= hmac.compare_digest(given, candidate)
        if scheme.lower() != "bearer" or not ok:
            raise HTTPException(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})

    return check
