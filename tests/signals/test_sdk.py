"""The authoring SDK: definitions validate, are frozen and keyword-only, and round-trip through dicts."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pyarrow as pa
import pytest

from quasar.signals import (
    Aggregation,
    Bool,
    Entity,
    Float32,
    Float64,
    IdList,
    Int64,
    Signal,
    Source,
    String,
    Timestamp,
    Vector,
    WeightedIdList,
    aggregate,
    count,
    mean,
    signal,
    sum_,
)
from quasar.signals.errors import DefinitionError, QuasarError
from quasar.signals.ufr.schema import FeatureSchema
from quasar.signals.ufr.types import FeatureType, feature_type_from_dict

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events/", timestamp="ts")
ALL_TYPES: list[FeatureType] = [Bool(), Int64(), Float32(), Float64(), String(), Timestamp(), Vector(16),
                                Vector(8, "float16"), IdList(), WeightedIdList()]


@signal(entity=user, source=events, ttl=timedelta(days=7), online=True, owner="growth",
        features={"clicks": Int64(), "dwell": Float32(), "recent_pins": IdList(), "taste": Vector(16)})
def user_engagement(batch: pa.Table) -> pa.Table:
    """Source rows of the backfill window in; rows of user_id, event_timestamp and the features out."""
    return batch


def test_design_example_signal_builds() -> None:
    s = user_engagement
    assert isinstance(s, Signal) and s.kind == "transform" and s.name == "user_engagement"
    assert s.schema.names == ["clicks", "dwell", "recent_pins", "taste"]
    assert s.ttl == timedelta(days=7) and s.online and s.owner == "growth"
    assert s.description.startswith("Source rows of the backfill window in")
    assert "def user_engagement" in s.code
    table = pa.table({"x": [1]})
    assert s(table) is table


@pytest.mark.parametrize("ftype", ALL_TYPES, ids=str)
def test_feature_types_round_trip_and_map_to_arrow_and_iceberg(ftype: FeatureType) -> None:
    assert feature_type_from_dict(ftype.to_dict()) == ftype
    assert isinstance(ftype.arrow_type(), pa.DataType)
    ids = iter(range(100, 200))
    assert ftype.iceberg_type(lambda: next(ids)) is not None


def test_signal_round_trips_through_dict() -> None:
    again = Signal.from_dict(user_engagement.to_dict())
    assert again == user_engagement
    assert again.definition_fingerprint == user_engagement.definition_fingerprint
    assert again.transform is None


def test_user_objects_are_frozen_and_keyword_only() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        user.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Entity("user", "user_id")  # type: ignore[misc]
    assert Entity.from_dict(user.to_dict()) == user
    assert Source.from_dict(events.to_dict()) == events


def test_aggregation_signal_names_types_and_round_trip() -> None:
    s = aggregate(name="stats", entity=user, source=events, step="1d", ttl="2d",
                  aggregations=[count("7d"), sum_("clicked", "1d", dtype=Int64()), mean("dwell", "30d")])
    assert s.kind == "aggregation"
    assert s.schema.names == ["count_7d", "clicked_sum_1d", "dwell_mean_30d"]
    assert [str(t) for _, t in s.schema] == ["int64", "int64", "float64"]
    assert s.max_window == timedelta(days=30) and s.step == timedelta(days=1)
    assert Signal.from_dict(s.to_dict()) == s


def test_schema_fingerprint_tracks_names_order_and_types() -> None:
    a = FeatureSchema.of({"x": Int64(), "y": Float32()})
    assert a.fingerprint == FeatureSchema.of({"x": Int64(), "y": Float32()}).fingerprint
    assert a.fingerprint != FeatureSchema.of({"y": Float32(), "x": Int64()}).fingerprint
    assert a.fingerprint != FeatureSchema.of({"x": Int64(), "y": Float64()}).fingerprint
    assert FeatureSchema.of({"v": Vector(4)}).fingerprint != FeatureSchema.of({"v": Vector(4, "float16")}).fingerprint
    assert len(a.fingerprint) == 8


def test_definition_fingerprint_changes_with_code_not_owner() -> None:
    base = dict(entity=user, source=events, features={"x": Int64()})

    def f(batch: pa.Table) -> pa.Table:
        return batch

    def g(batch: pa.Table) -> pa.Table:
        return batch.slice(1)

    a, b = signal(**base, owner="a", name="s")(f), signal(**base, owner="b", name="s")(f)
    c = signal(**base, name="s")(g)
    assert a.definition_fingerprint == b.definition_fingerprint
    assert a.definition_fingerprint != c.definition_fingerprint


@pytest.mark.parametrize(("make", "needle"), [
    (lambda: Entity(name="1user", join_key="id"), "entity name '1user'"),
    (lambda: Entity(name="user", join_key="id", join_key_type="float"), "join_key_type"),
    (lambda: Entity(name="user", join_key="event_timestamp"), "reserved"),
    (lambda: Source(name="s", kind="csv", timestamp="ts", path="x"), "kind must be"),  # type: ignore[arg-type]
    (lambda: Source.parquet(name="s", path="", timestamp="ts"), "needs path"),
    (lambda: Vector(0), "dim must be a positive int"),
    (lambda: Vector(4, "float64"), "Vector dtype"),
    (lambda: FeatureSchema.of({"x": int}), "not a feature type"),
    (lambda: FeatureSchema.of({"x": Int64}), "must be an instance"),
    (lambda: FeatureSchema.of({}), "non-empty"),
    (lambda: FeatureSchema.of({"a__b": Int64()}), "reserved as a separator"),
    (lambda: FeatureSchema.of({"event_timestamp": Int64()}), "reserved"),
    (lambda: Aggregation(function="median", column="x", window="1d"), "median"),  # type: ignore[arg-type]
    (lambda: Aggregation(function="sum", window="1d"), "needs a column"),  # type: ignore[arg-type]
    (lambda: count("1 fortnight"), "window '1 fortnight' is invalid"),
    (lambda: aggregate(name="a", entity=user, source=events, step="1d", aggregations=[count("1d"), count("1d")]),
     "duplicate aggregation names"),
    (lambda: signal(entity=user, source=events, name="s", features={"user_id": Int64()})(lambda b: b), "join key"),
])
def test_bad_definitions_name_the_problem(make, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DefinitionError) as info:
        make()
    assert needle in str(info.value)
    assert isinstance(info.value, QuasarError)


def test_transform_code_ignores_decorator_arguments_and_docstring() -> None:
    def body(batch: pa.Table) -> pa.Table:
        """One description."""
        return batch

    def body2(batch: pa.Table) -> pa.Table:
        """Another description."""
        return batch

    body2.__name__ = "body"
    a = signal(entity=user, source=events, features={"x": Int64()}, owner="a", ttl="1d", name="s")(body)
    b = signal(entity=user, source=events, features={"x": Int64()}, owner="b", ttl="2d", name="s")(body2)
    assert a.description == "One description." and b.description == "Another description."
    assert "owner" not in a.code and "One description" not in a.code and "return batch" in a.code
    assert a.code_fingerprint != "" and a.definition_fingerprint == Signal.from_dict(a.to_dict()).definition_fingerprint
