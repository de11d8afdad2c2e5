"""The registry: entities, sources, versioned signals, lineage, the run log and small state, in SQL."""

from registry.records import RegistrationReport, RunRecord, SignalVersion
from registry.registry import Registry

__all__ = ["RegistrationReport", "Registry", "RunRecord", "SignalVersion"]
