"""Transform scope: both engines call a transform over the same groups, so its values cannot depend on the engine.

The default, ``scope="entity"``, calls the transform once per group of entity keys (the Iceberg bucket of the
key, ``quasar.store.engines.groups``): every row of a key in one call, in source order. ``scope="window"`` calls it
once over the whole window, on both engines. A transform that looks across entities (a share of the day's
total) gives identical tables on the local and the Spark engine either way, because the groups are the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fixtures.offline import random_events
from quasar.registry import Registry
from quasar.signals import Entity, Float64, Int64, Signal, Source, signal
from quasar.signals.errors import DefinitionError
from quasar.store.buckets import iceberg_buckets
from quasar.store.engines.groups import TRANSFORM_GROUPS
from quasar.store.engines.local import LocalEngine

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")
START, END = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC)
CALLS: list[pa.Table] = []                        # the batches the local engine called a transform with


def _daily_share(batch: pa.Table) -> pa.Table:
    """Each event's share of its day's clicks over every entity in the batch: it looks across entities."""
    days = pc.floor_temporal(batch["ts"], unit="day")
    totals = pa.table({"day": days, "clicked": batch["clicked"]}).group_by("day").aggregate([("clicked", "sum")])
    index = pc.index_in(days, totals["day"])
    total = pc.take(totals["clicked_sum"], index)
    share = pc.divide(pc.cast(batch["clicked"], pa.float64()), pc.max_element_wise(pc.cast(total, pa.float64()), 1.0))
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"], "share": share,
                     "rank": pc.rank(batch["clicked"], sort_keys="descending", tiebreaker="first")})


@signal(entity=user, source=events, name="day_share", scope="window",
        features={"share": Float64(), "rank": Int64()})
def day_share(batch: pa.Table) -> pa.Table:
    """The share of the day's clicks, over the whole window: declared ``scope="window"``."""
    CALLS.append(batch)
    return _daily_share(batch)


@signal(entity=user, source=events, name="day_share_per_entity", features={"share": Float64(), "rank": Int64()})
def day_share_per_entity(batch: pa.Table) -> pa.Table:
    """The same cross-entity code under the default ``scope="entity"``: it breaks the contract, but the
    engines still agree, because they call it over the same groups."""
    CALLS.append(batch)
    return _daily_share(batch)


@signal(entity=user, source=events, name="running_clicks", features={"running": Int64()})
def running_clicks(batch: pa.Table) -> pa.Table:
    """A well-behaved per-entity transform: each user's running click count, in source order."""
    CALLS.append(batch)
    totals: dict[int, int] = {}
    running = []
    for u, c in zip(batch["user_id"].to_pylist(), batch["clicked"].to_pylist(), strict=True):
        totals[u] = totals.get(u, 0) + c
        running.append(totals[u])
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"],
                     "running": pa.array(running, pa.int64())})


def _source(seed: int = 7, n: int = 600) -> pa.Table:
    return random_events(n=n, days=5, users=40, seed=seed, step_us=60_000_000)


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("user_id", "ascending"), ("event_timestamp", "ascending")])


@pytest.fixture(autouse=True)
def _calls() -> None:
    CALLS.clear()


def test_the_default_scope_calls_the_transform_once_per_entity_group_in_source_order() -> None:
    source = _source()
    with LocalEngine() as local:
        got = local.compute(running_clicks, source, START, END)
    buckets = iceberg_buckets(source["user_id"], TRANSFORM_GROUPS)
    assert len(CALLS) == len(set(buckets.tolist())) > 1
    seen: set[int] = set()
    for batch in CALLS:                                      # one bucket per call, every key's rows together
        users = set(batch["user_id"].to_pylist())
        assert len(set(iceberg_buckets(batch["user_id"], TRANSFORM_GROUPS).tolist())) == 1
        assert not users & seen
        seen |= users
        for u in users:                                      # in source order
            mine = pc.equal(batch["user_id"], u)
            want = source.filter(pc.equal(source["user_id"], u))
            assert batch.filter(mine).equals(want)
    assert seen == set(source["user_id"].to_pylist())
    # a transform that keeps to its entity: the per-group calls give exactly the one-call answer
    assert _sorted(got).equals(_sorted(running_clicks.transform(source)))   # type: ignore[misc]


def test_window_scope_calls_the_transform_once_over_the_whole_window() -> None:
    source = _source()
    with LocalEngine() as local:
        got = local.compute(day_share, source, START, END)
    assert len(CALLS) == 1 and CALLS[0].equals(source)
    assert got.equals(_daily_share(source))


def test_a_source_without_the_join_key_is_one_group() -> None:
    source = _source().rename_columns(["uid", "ts", "clicked", "dwell_s", "item_id"])

    @signal(entity=user, source=events, name="derived", features={"clicks": Int64()})
    def derived(batch: pa.Table) -> pa.Table:
        CALLS.append(batch)
        return pa.table({"user_id": pc.add(batch["uid"], 1000), "event_timestamp": batch["ts"],
                         "clicks": batch["clicked"]})

    with LocalEngine() as local:
        got = local.compute(derived, source, START, END)
    assert len(CALLS) == 1 and got.equals(derived.transform(source))     # type: ignore[misc]


def test_an_empty_window_still_calls_the_transform_once_for_its_schema() -> None:
    with LocalEngine() as local:
        got = local.compute(running_clicks, _source().slice(0, 0), START, END)
    assert len(CALLS) == 1 and got.num_rows == 0 and got.column_names == ["user_id", "event_timestamp", "running"]


def test_scope_is_validated_round_trips_and_is_part_of_the_version() -> None:
    assert running_clicks.scope == "entity" and day_share.scope == "window"
    again = Signal.from_dict(day_share.to_dict())
    assert again.scope == "window" and again.definition_fingerprint == day_share.definition_fingerprint
    assert Signal.from_dict({k: v for k, v in running_clicks.to_dict().items() if k != "scope"}).scope == "entity"

    def f(batch: pa.Table) -> pa.Table:
        return batch

    base: dict[str, Any] = {"entity": user, "source": events, "features": {"x": Int64()}, "name": "s"}
    assert signal(**base)(f).definition_fingerprint != signal(**base, scope="window")(f).definition_fingerprint
    with pytest.raises(DefinitionError, match=r"scope must be 'entity' or 'window', got 'day'"):
        signal(**base, scope="day")(f)


def test_the_registry_keeps_the_scope(tmp_path: Path) -> None:
    with Registry.open(f"sqlite:///{tmp_path / 'registry.db'}") as registry:
        registry.register_definitions([user], [events], [day_share, running_clicks], module="tests.transform_scope")
        assert registry.signal("day_share").signal.scope == "window"
        assert registry.signal("running_clicks").signal.scope == "entity"


# --- both engines --------------------------------------------------------------------------------------
@pytest.mark.spark
@pytest.mark.parametrize("sig", [day_share, day_share_per_entity, running_clicks], ids=lambda s: s.name)
@pytest.mark.parametrize("seed", [3, 8])
def test_both_engines_give_identical_tables_row_for_row(spark_engine: object, sig: Signal, seed: int) -> None:
    source = _source(seed)
    with LocalEngine() as local:
        want = local.compute(sig, source, START, END)
    got = spark_engine.compute(sig, source, START, END)          # type: ignore[attr-defined]
    assert got.schema == want.schema
    assert got.equals(want)                                      # same groups, same order: no sort needed
    groups = len(set(iceberg_buckets(source["user_id"], TRANSFORM_GROUPS).tolist()))
    assert spark_engine.last_transform_groups == (1 if sig.scope == "window" else groups)  # type: ignore[attr-defined]
    if sig is day_share:                                        # the whole window's share, as one call gives it
        assert got.equals(_daily_share(source))
    if sig is running_clicks:
        assert _sorted(got).equals(_sorted(running_clicks.transform(source)))   # type: ignore[misc]
