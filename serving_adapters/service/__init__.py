"""The scoring service (``quasar score-serve``): ``create_scoring_app`` builds the FastAPI app."""

from quasar.serving_adapters.service.app import create_scoring_app

__all__ = ["create_scoring_app"]
