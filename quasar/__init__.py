"""quasar: a signal platform and feature store. ``quasar.Platform.open(".")`` is the front door.

The names below are imported on first use (PEP 562), so ``import quasar.cli`` (``quasar --help``) does not pay
for pyarrow, DuckDB, pyiceberg or torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quasar.config import Config, load_config
    from quasar.platform import Platform
    from quasar.signals.errors import QuasarError

__all__ = ["Config", "Platform", "QuasarError", "load_config"]
__version__ = "0.1.0"

_LAZY = {"Config": "quasar.config", "load_config": "quasar.config", "Platform": "quasar.platform",
         "QuasarError": "quasar.signals.errors"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    try:                                          # ``import quasar; quasar.signals.Entity`` as before
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module 'quasar' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
