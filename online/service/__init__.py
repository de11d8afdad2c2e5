"""The HTTP feature service (``quasar serve``): ``create_app`` builds it, ``run_service`` runs it.

Names are loaded on first use, so ``quasar.online.service.status`` (the error -> HTTP status table) can be
imported without FastAPI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"create_app": "quasar.online.service.app", "app_from_env": "quasar.online.service.app",
            "run_service": "quasar.online.service.runner", "HTTP_STATUS": "quasar.online.service.status",
            "http_status": "quasar.online.service.status"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'quasar.online.service' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
