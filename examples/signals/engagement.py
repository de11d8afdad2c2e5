"""Engagement signals: declarative windowed aggregations, a transform, and a signal built on another."""

from datetime import timedelta

import great_expectations as gx
import pyarrow as pa
import pyarrow.compute as pc
from entities import events, pin, user  # a sibling module: registering a folder puts it on sys.path

from quasar.signals import (
    Float64,
    IdList,
    Int64,
    Source,
    WeightedIdList,
    aggregate,
    count,
    mean,
    signal,
    sum_,
)

user_engagement = aggregate(
    name="user_engagement", entity=user, source=events, step="1d", ttl="2d", online=True, owner="growth",
    description="Daily user engagement over the last day and week.",
    aggregations=[
        count("1d", name="impressions_1d"),
        sum_("clicked", "7d", name="clicks_7d", dtype=Int64()),
        mean("clicked", "7d", name="ctr_7d"),
        mean("dwell_s", "1d", name="dwell_1d"),
    ],
    # data-quality gates: every backfill validates its batch before committing (strict: refuse and quarantine)
    expectations=[
        gx.expectations.ExpectColumnValuesToBeBetween(column="ctr_7d", min_value=0, max_value=1),
        gx.expectations.ExpectColumnValuesToBeBetween(column="impressions_1d", min_value=0),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="clicks_7d"),
        gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "event_timestamp"]),
        gx.expectations.ExpectTableRowCountToBeBetween(min_value=1),
    ],
    policy="strict",
)

pin_stats = aggregate(
    name="pin_stats", entity=pin, source=events, step="1d", ttl="3d", online=True, owner="ranking",
    description="Daily pin popularity.",
    aggregations=[count("7d", name="impressions_7d"), mean("clicked", "7d", name="ctr_7d")],
)


@signal(entity=user, source=events, ttl=timedelta(days=7), online=True, owner="ranking",
        features={"recent_pins": IdList(), "recent_dwell": WeightedIdList(), "clicks_1h": Int64()})
def user_recent_pins(batch: pa.Table) -> pa.Table:
    """Per user and hour: the pins clicked that hour (latest first, at most 20), weighted by dwell."""
    clicked = batch.filter(pc.equal(batch["clicked"], 1))
    hour = pc.floor_temporal(clicked["ts"], unit="hour")
    dwell = pc.fill_null(clicked["dwell_s"], 0.0)
    clicked = clicked.append_column("hour", hour).append_column("dwell", dwell).sort_by([("user_id", "ascending"), ("ts", "descending")])
    groups = clicked.group_by(["user_id", "hour"], use_threads=False).aggregate(
        [("pin_id", "list"), ("dwell", "list"), ("ts", "max"), ("pin_id", "count")])
    pins = [p[:20] for p in groups["pin_id_list"].to_pylist()]
    dwell = [d[:20] for d in groups["dwell_list"].to_pylist()]
    weighted = [[{"id": i, "weight": w} for i, w in zip(p, d, strict=True)] for p, d in zip(pins, dwell, strict=True)]
    return pa.table({
        "user_id": groups["user_id"],
        "event_timestamp": groups["ts_max"],
        "recent_pins": pa.array(pins, pa.list_(pa.int64())),
        "recent_dwell": pa.array(weighted, WeightedIdList().arrow_type()),
        "clicks_1h": groups["pin_id_count"],
    })


@signal(entity=user, source=Source.signal("user_engagement"), ttl="2d", online=True, owner="growth",
        features={"engagement_score": Float64()})
def user_affinity(batch: pa.Table) -> pa.Table:
    """A score built on user_engagement: weekly CTR damped by how little the user was seen that day."""
    seen = pc.cast(batch["impressions_1d"], pa.float64())
    score = pc.multiply(batch["ctr_7d"], pc.divide(seen, pc.add(seen, 5.0)))
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["event_timestamp"],
                     "engagement_score": score})
