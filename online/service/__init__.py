"""The HTTP feature service (``quasar serve``): ``create_app`` builds it, ``run_service`` runs it.

Names are loaded on first use, so ``online.service.status`` (the error -> HTTP status table) can be
imported without FastAPI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"create_app": "online.service.app", "app_from_env": "online.service.app",
            "run_service": "online.service.runner", "HTTP_STATUS": "online.service.status",
            "http_status": "online.service.status"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'online.service' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
