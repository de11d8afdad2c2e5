"""Expectations on signals: GX objects become plain dicts that round-trip through to_dict/from_dict and the
registry; changing them (or the policy) updates the registered version in place; bad ones fail at definition."""

from __future__ import annotations

from pathlib import Path

import great_expectations as gx
import pyarrow as pa
import pytest

from quasar.registry import Registry
from quasar.signals import Entity, Int64, Source, aggregate, count, signal
from quasar.signals.errors import DefinitionError
from quasar.signals.signal import Signal

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")


def clicks(expectations: list[object], policy: str = "strict") -> Signal:
    @signal(entity=user, source=events, features={"clicks": Int64()}, expectations=expectations, policy=policy)
    def user_clicks(batch: pa.Table) -> pa.Table:
        return batch

    return user_clicks


def test_gx_objects_become_plain_dicts_that_round_trip() -> None:
    sig = clicks([gx.expectations.ExpectColumnValuesToBeBetween(column="clicks", min_value=0, max_value=10,
                                                                 mostly=0.9, meta={"why": "sanity"}),
                  gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "event_timestamp"]),
                  {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}])
    assert sig.expectations == (
        {"type": "expect_column_values_to_be_between",
         "kwargs": {"column": "clicks", "min_value": 0.0, "max_value": 10.0, "mostly": 0.9}, "meta": {"why": "sanity"}},
        {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": ["user_id", "event_timestamp"]}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}},
    )
    again = Signal.from_dict(sig.to_dict())
    assert again == sig and again.expectations == sig.expectations
    # the version identity ignores expectations and policy
    assert clicks([], policy="warn").definition_fingerprint == sig.definition_fingerprint
    agg = aggregate(name="activity", entity=user, source=events, step="1d", aggregations=[count("1d")],
                    expectations=[gx.expectations.ExpectColumnValuesToNotBeNull(column="count_1d")], policy="warn")
    assert Signal.from_dict(agg.to_dict()) == agg and agg.policy == "warn"


@pytest.mark.parametrize(("expectations", "message"), [
    ([gx.expectations.ExpectColumnValuesToNotBeNull(column="clickz")],
     "expectation expect_column_values_to_not_be_null names column 'clickz', which is not a column of the signal "
     r"\(user_id, event_timestamp, created_timestamp, clicks\)"),
    ([gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "ts"])], "names column 'ts'"),
    (["not null please"], "is not a great-expectations Expectation"),
    ([{"type": "check_it", "kwargs": {}}], "an expectation needs a 'type' such as"),
    (gx.expectations.ExpectColumnValuesToNotBeNull(column="clicks"), "expectations must be a list"),
])
def test_bad_expectations_fail_at_definition(expectations: object, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        clicks(expectations)  # type: ignore[arg-type]


def test_bad_policy_fails_at_definition() -> None:
    with pytest.raises(DefinitionError, match="policy must be 'strict' or 'warn', got 'lenient'"):
        clicks([], policy="lenient")


def test_changed_expectations_update_the_version_in_place(tmp_path: Path) -> None:
    first = clicks([gx.expectations.ExpectColumnValuesToNotBeNull(column="clicks")])
    second = clicks([gx.expectations.ExpectColumnValuesToBeBetween(column="clicks", min_value=0, max_value=5)],
                    policy="warn")
    with Registry.open(f"sqlite:///{tmp_path / 'registry.db'}") as registry:
        assert registry.register_definitions([user], [events], [first], module="m").created[-1] == "signal user_clicks v1"
        stored = registry.signal("user_clicks")
        assert stored.signal.expectations == first.expectations and stored.signal.policy == "strict"
        report = registry.register_definitions([user], [events], [second], module="m")
        assert report.updated == ["signal user_clicks v1"] and not report.created
        stored = registry.signal("user_clicks")
        assert stored.version == 1 and [v.version for v in registry.versions("user_clicks")] == [1]
        assert stored.signal.expectations == second.expectations and stored.signal.policy == "warn"
