"""quasar: a signal platform and feature store. ``quasar.Platform.open(".")`` is the front door."""

from quasar.config import Config, load_config
from quasar.errors import QuasarError
from quasar.platform import Platform

__all__ = ["Config", "Platform", "QuasarError", "load_config"]
__version__ = "0.1.0"
