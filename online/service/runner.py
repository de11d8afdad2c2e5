"""Run the feature service (or the scorer) under uvicorn, with several worker processes when asked."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from quasar.online.service.metrics import MULTIPROC_ENV
from quasar.signals.errors import ConfigError


def default_workers() -> int:
    """The worker processes a service runs when not told: one per core of the machine."""
    return os.cpu_count() or 1


def run_service(app_factory: str = "quasar.online.service.app:app_from_env", *, host: str = "127.0.0.1",
                port: int = 6566, workers: int | None = None, log_level: str = "warning") -> None:
    """Serve the app that ``app_factory`` (``"module:function"``, called with no arguments) builds, on uvicorn
    with uvloop and httptools (``loop``/``http`` "auto" take them, both installed with ``uvicorn[standard]``).

    A factory string rather than an app object, so each of ``workers`` processes (default: one per core,
    ``default_workers``) builds its own app (and its own Redis connections). Blocks until the server stops.
    With several workers, ``/metrics`` sums them all (``worker_metrics``).
    """
    if workers is None:
        workers = default_workers()
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if ":" not in app_factory:
        raise ConfigError(f"app factory {app_factory!r} must be 'module:function'")
    with worker_metrics(workers):
        uvicorn.run(app_factory, factory=True, host=host, port=port, workers=workers, log_level=log_level,
                    access_log=False)


@contextmanager
def worker_metrics(workers: int) -> Iterator[None]:
    """With several workers, a fresh folder for prometheus_client's multiprocess mode, named to them in
    ``PROMETHEUS_MULTIPROC_DIR`` (worker processes are spawned, so they import prometheus_client after it is
    set) and removed when the server stops. A folder the caller already set is used as it is, and kept."""
    if workers < 2 or os.environ.get(MULTIPROC_ENV):
        yield
        return
    folder = tempfile.mkdtemp(prefix="quasar-metrics-")
    os.environ[MULTIPROC_ENV] = folder
    try:
        yield
    finally:
        if os.environ.get(MULTIPROC_ENV) == folder:
            del os.environ[MULTIPROC_ENV]
        shutil.rmtree(folder, ignore_errors=True)
