"""The catalog's auth: the services' bearer tokens (``[online] auth_tokens``), for a browser too.

With no tokens configured every page is open. With tokens, a request is let in when it carries one as
``Authorization: Bearer <token>`` (as the services take it), or in the ``quasar_token`` cookie. A browser gets
the cookie by opening any page once with ``?token=<token>``: the answer is a redirect to the same page without
the token in its address, setting the cookie (HttpOnly, SameSite=Strict, for the browser's session). Anything
else is answered 401 (an HTML page for a browser, JSON otherwise). ``/healthz`` stays open for probes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import urlencode

from starlette.requests import HTTPConnection
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from quasar.online.service.auth import token_matches

COOKIE = "quasar_token"
QUERY = "token"
OPEN_PATHS = frozenset({"/healthz"})

REFUSED_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>quasar catalog: sign in</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;color:#0f172a}
code{background:#f1f5f9;padding:0 .3rem;border-radius:4px}</style></head><body>
<h1>This catalog needs a token</h1>
<p>%s. Open this page once with <code>?token=&lt;one of [online] auth_tokens&gt;</code> added to its address:
the browser keeps it in a cookie for the session. Scripts send <code>Authorization: Bearer &lt;token&gt;</code>.</p>
</body></html>"""


class CatalogAuthMiddleware:
    """Lets a request in with a configured token in the bearer header or the cookie; trades ``?token=`` for
    the cookie; answers 401 otherwise (see the module doc)."""

    def __init__(self, app: ASGIApp, tokens: Sequence[str]) -> None:
        self.app = app
        self.tokens = [t.encode() for t in tokens if t]

    def _ok(self, token: str | None) -> bool:
        return bool(token) and token_matches(f"Bearer {token}", self.tokens)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.tokens or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        header = conn.headers.get("authorization", "")
        if header and token_matches(header, self.tokens):
            await self.app(scope, receive, send)
            return
        given = conn.query_params.get(QUERY)
        if given is not None:
            response = self._trade(conn, given)
        elif self._ok(conn.cookies.get(COOKIE)):
            await self.app(scope, receive, send)
            return
        else:
            response = _refuse(conn, "invalid bearer token" if header else "no token given")
        await response(scope, receive, send)

    def _trade(self, conn: HTTPConnection, given: str) -> Response:
        """``?token=``: a redirect to the page without it, setting the cookie (or 401 for a wrong token)."""
        if not self._ok(given):
            return _refuse(conn, "the token in the address is not one of the configured tokens")
        rest = [(k, v) for k, v in conn.query_params.multi_items() if k != QUERY]
        target = conn.url.path + (f"?{urlencode(rest)}" if rest else "")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, given, httponly=True, samesite="strict", path="/")
        return response


def _refuse(conn: HTTPConnection, reason: str) -> Response:
    headers = {"WWW-Authenticate": "Bearer"}
    if "text/html" in conn.headers.get("accept", ""):
        return HTMLResponse(REFUSED_PAGE % reason.capitalize(), status_code=401, headers=headers)
    return Response(json.dumps({"detail": f"Unauthorized: {reason}"}), status_code=401, headers=headers,
                    media_type="application/json")
