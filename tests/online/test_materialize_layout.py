"""Materialization reads a key bucket's partitions together: each entity is written once per run, whatever the
number of days it has rows in or the batch size, and the result equals a full rebuild."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from fixtures.fault_project import make_fault_project


def test_a_first_materialize_writes_each_entity_once(tmp_path: Path, redis_url: str) -> None:
    project = make_fault_project(tmp_path / "p", redis_url=redis_url)
    with project.platform() as p:
        p.backfill("clicks", "2026-01-01", "2026-01-11")
        rows = p.offline.read(p.registry.signal("clicks", 1).signal, 1)
        entities = pa.compute.count_distinct(rows.column("user_id")).as_py()
        first = p.materialize(batch_rows=10)[0]       # small batches: many writes per bucket, still one per entity
        assert first.rows_written == entities == 40
        keys = {"user_id": list(range(1, 41))}
        served = p.online_features(keys, ["clicks:clicked", "clicks:item"])
        assert p.materialize(full=True)[0].rows_written == entities
        assert p.online_features(keys, ["clicks:clicked", "clicks:item"]) == served
        assert p.offline.bucket_count("clicks", 1) == 4          # several buckets, ten days each
