"""Output names of a request mixing stored and request-time features follow one rule in request order: two
features that would get one name are refused naming both, whichever kind comes first."""

from __future__ import annotations

import pyarrow as pa
import pytest

from quasar.signals import Entity, Float64, Source, signal
from quasar.signals.errors import QuasarError
from quasar.signals.refs import PlanErrors
from quasar.signals.request import RequestSignal
from quasar.signals.request_plan import plan_features
from quasar.signals.ufr.schema import FeatureSchema

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")


@signal(entity=user, source=events, features={"score": Float64(), "ctr": Float64()})
def stats(batch: pa.Table) -> pa.Table:
    return batch


rescored = RequestSignal(name="rescored", inputs=(("ctr", "stats:ctr"),), request=FeatureSchema(()),
                         schema=FeatureSchema.of({"score": Float64()}))
ERRORS = PlanErrors(syntax=QuasarError, missing=QuasarError, full_names_hint="use full names")


def resolve(name: str, version: int | None) -> tuple[object, int]:
    assert name == "stats"
    return stats, 1


def lookup(name: str, version: int | None) -> tuple[RequestSignal, int] | None:
    return (rescored, 1) if name == "rescored" else None


@pytest.mark.parametrize("refs", [["stats:score", "rescored:score"], ["rescored:score", "stats:score"]])
def test_a_stored_and_a_request_time_feature_of_one_name_are_refused_in_either_order(refs: list[str]) -> None:
    with pytest.raises(QuasarError, match=r"features '.+' and '.+' would both be named 'score': use full names"):
        plan_features(refs, resolve, lookup, full_names=False, errors=ERRORS)


def test_full_names_tell_them_apart() -> None:
    plan = plan_features(["rescored:score", "stats:score"], resolve, lookup, full_names=True, errors=ERRORS)
    assert [o.output for o in plan.outputs] == ["rescored__score", "stats__score"]
