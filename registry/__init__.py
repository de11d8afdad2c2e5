"""The registry: entities, sources, versioned signals, lineage, the run log and small state, in SQL."""

from quasar.registry.records import RegistrationReport, RunRecord, SignalVersion
from quasar.registry.registry import Registry

__all__ = ["RegistrationReport", "Registry", "RunRecord", "SignalVersion"]
