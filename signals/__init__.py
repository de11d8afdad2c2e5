"""The signal authoring SDK: entities, sources, signals, aggregations and the UFR feature types."""

from quasar.signals.aggregation import AGG_FUNCTIONS, Aggregation, count, last, max_, mean, min_, sum_
from quasar.signals.entity import Entity
from quasar.signals.errors import QuasarError
from quasar.signals.request import RequestSignal, on_demand
from quasar.signals.service import FeatureLogging, FeatureService
from quasar.signals.signal import Signal, aggregate, signal
from quasar.signals.source import Source
from quasar.signals.ufr.schema import CREATED_TIMESTAMP, EVENT_TIMESTAMP, FeatureSchema
from quasar.signals.ufr.types import (
    Bool,
    FeatureType,
    Float32,
    Float64,
    IdList,
    Int64,
    String,
    Timestamp,
    Vector,
    WeightedIdList,
)

__all__ = [
    "AGG_FUNCTIONS", "CREATED_TIMESTAMP", "EVENT_TIMESTAMP", "Aggregation", "Bool", "Entity", "FeatureLogging",
    "FeatureSchema", "FeatureService", "FeatureType", "Float32", "Float64", "IdList", "Int64", "QuasarError",
    "RequestSignal", "Signal", "Source", "String", "Timestamp", "Vector", "WeightedIdList", "aggregate", "count",
    "last", "max_", "mean", "min_", "on_demand", "signal", "sum_",
]
