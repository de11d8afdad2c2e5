"""The catalog's web app: FastAPI routes answering server-rendered HTML (Jinja2 templates shipped in
``quasar/ui/templates``, inline CSS, inline SVG, no script and nothing fetched from elsewhere, so it works
offline). Read-only: every route is a GET; the only thing a page load may write is the statistics cache.

Pages: ``/`` (everything registered; ``?q=`` searches), ``/signals/NAME``, ``/signals/NAME/runs/ID``,
``/requests/NAME``, ``/services/NAME``, ``/entities/NAME``, ``/sources/NAME``; ``/healthz`` answers JSON.
Auth: ``quasar.ui.auth`` with the project's ``[online] auth_tokens``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from quasar.signals.errors import NotFoundError, QuasarError
from quasar.ui import catalog
from quasar.ui.auth import CatalogAuthMiddleware

if TYPE_CHECKING:
    from quasar.platform import Platform

TEMPLATES = Path(__file__).parent / "templates"
PROJECT_ENV = "QUASAR_PROJECT"
DEFAULT_PORT = 6570
SECTIONS = (("signals", "Signals"), ("requests", "Request-time signals"), ("services", "Feature services"),
            ("entities", "Entities"), ("sources", "Sources"))


def templates() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v: "-" if v is None else f"{v:.1%}"
    env.filters["num"] = _num
    env.filters["when"] = lambda v: "-" if not v else str(v).replace("T", " ")[:19]
    env.filters["mib"] = lambda v: f"{v / 2**20:.1f} MiB"
    return env


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def create_app(platform: Platform, *, tokens: Sequence[str] | None = None,
               close: Callable[[], None] | None = None) -> FastAPI:
    """The catalog of ``platform``'s project. ``tokens`` default to its ``[online] auth_tokens`` (none: open).
    ``close`` runs when the app shuts down (``app_from_env`` closes the platform it opened)."""
    env = templates()
    lock = threading.Lock()                 # one page at a time reads the platform (its rooms are opened lazily)
    project = platform.config.project.name

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if close is not None:
            close()

    app = FastAPI(title=f"quasar catalog: {project}", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.add_middleware(CatalogAuthMiddleware, tokens=tuple(platform.config.online.auth_tokens
                                                            if tokens is None else tokens))

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(template).render(project=project, now=datetime.now(UTC).isoformat(timespec="seconds"),
                                                 q=context.pop("q", ""), **context)
        return HTMLResponse(html, status_code=status)

    def guarded(template: str, build: Callable[[], dict[str, Any]]) -> HTMLResponse:
        try:
            with lock:
                data = build()
        except NotFoundError as exc:
            return page("error.html", 404, title="not found", message=str(exc))
        except QuasarError as exc:
            return page("error.html", 500, title="error", message=str(exc))
        return page(template, **data)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "project": project})

    @app.get("/", response_class=HTMLResponse)
    def home(q: str = "") -> HTMLResponse:
        def build() -> dict[str, Any]:
            everything = catalog.index(platform, datetime.now(UTC))
            shown = catalog.search(everything, q)
            return {"title": f"search: {q}" if q.strip() else "catalog", "q": q, "sections": SECTIONS,
                    "rows": shown, "total": sum(len(v) for v in everything.values()),
                    "found": sum(len(v) for v in shown.values())}
        return guarded("index.html", build)

    @app.get("/signals/{name}", response_class=HTMLResponse)
    def signal(name: str) -> HTMLResponse:
        return guarded("signal.html", lambda: {"title": name, "s": catalog.signal_page(platform, name,
                                                                                       datetime.now(UTC))})

    @app.get("/signals/{name}/runs/{run_id}", response_class=HTMLResponse)
    def run(name: str, run_id: int) -> HTMLResponse:
        return guarded("run.html", lambda: {"title": f"{name} run #{run_id}",
                                            "r": catalog.run_page(platform, name, run_id)})

    @app.get("/requests/{name}", response_class=HTMLResponse)
    def request_signal(name: str) -> HTMLResponse:
        return guarded("request.html", lambda: {"title": name, "r": catalog.request_page(platform, name)})

    @app.get("/services/{name}", response_class=HTMLResponse)
    def service(name: str) -> HTMLResponse:
        return guarded("service.html", lambda: {"title": name, "s": catalog.service_page(platform, name)})

    @app.get("/entities/{name}", response_class=HTMLResponse)
    def entity(name: str) -> HTMLResponse:
        return guarded("entity.html", lambda: {"title": name, "e": catalog.entity_page(platform, name)})

    @app.get("/sources/{name}", response_class=HTMLResponse)
    def source(name: str) -> HTMLResponse:
        return guarded("source.html", lambda: {"title": name, "s": catalog.source_page(platform, name)})

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> HTMLResponse:
        return page("error.html", 404, title="not found", message=f"no page at {request.url.path}")

    return app


def app_from_env() -> FastAPI:
    """The catalog of the project in ``$QUASAR_PROJECT`` (default: the current folder), for uvicorn."""
    from quasar.platform import Platform
    p = Platform.open(os.environ.get(PROJECT_ENV, "."))
    return create_app(p, close=p.close)


def serve_catalog(root: Path, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                  echo: Callable[[str], None] = print) -> None:
    """``quasar ui``: the catalog of the project at ``root`` on ``host:port`` until stopped (one process)."""
    import uvicorn

    from quasar.config import load_config
    from quasar.platform import Platform
    p = Platform(load_config(root))
    url = f"http://{host}:{port}/"
    tokens = p.config.online.auth_tokens
    echo(f"the catalog of {root} is at {url}" + (" (open it once with ?token=<one of [online] auth_tokens>)"
                                                 if tokens else ""))
    try:
        uvicorn.run(create_app(p), host=host, port=port, log_level="warning", access_log=False)
    finally:
        p.close()
