"""Run the feature service under uvicorn, with several worker processes when asked."""

from __future__ import annotations

import uvicorn

from quasar.signals.errors import ConfigError


def run_service(app_factory: str = "quasar.online.service.app:app_from_env", *, host: str = "127.0.0.1",
                port: int = 6566, workers: int = 1, log_level: str = "warning") -> None:
    """Serve the app that ``app_factory`` (``"module:function"``, called with no arguments) builds.

    A factory string rather than an app object, so each of ``workers`` processes builds its own app (and its
    own Redis connections). Blocks until the server stops. Prometheus metrics are per worker.
    """
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if ":" not in app_factory:
        raise ConfigError(f"app factory {app_factory!r} must be 'module:function'")
    uvicorn.run(app_factory, factory=True, host=host, port=port, workers=workers, log_level=log_level,
                access_log=False)
