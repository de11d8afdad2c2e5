"""Compute engines: a tiny plug-in interface and a lazy name -> engine table."""

from quasar.store.engines.base import ENGINES, Engine, FeatureRequest, load_engine

__all__ = ["ENGINES", "Engine", "FeatureRequest", "load_engine"]
