"""The registry's part of source schemas: the schema recorded at a source's first read, tied to the source's
identity, and reading options in registration conflicts (issue 14, item 3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from quasar.registry import Registry
from quasar.signals import Entity, Int64, Source, signal
from quasar.signals.errors import RegistrationError
from quasar.signals.source_schema import SourceSchema

user = Entity(name="user", join_key="user_id")
clicks = Source.parquet(name="clicks", path="data/clicks", timestamp="ts")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}")
    yield reg
    reg.close()


def test_the_first_recorded_schema_holds_until_the_source_changes(registry: Registry) -> None:
    first = SourceSchema.of({"user_id": "int64", "ts": "timestamp"})
    assert registry.source_schema(clicks) is None
    recorded = registry.record_source_schema(clicks, first, origin="file data/clicks/a.parquet")
    assert recorded.schema == first and recorded.origin == "file data/clicks/a.parquet"
    again = registry.record_source_schema(clicks, SourceSchema.of({"user_id": "string", "ts": "timestamp"}),
                                          origin="file data/clicks/b.parquet")
    assert again.schema == first                                   # a later (or concurrent) read does not replace it
    assert registry.source_schema(clicks).schema == first          # type: ignore[union-attr]
    dropping = Source.parquet(name="clicks", path="data/clicks", timestamp="ts", null_timestamps="drop")
    assert registry.source_schema(dropping).schema == first        # type: ignore[union-attr]  # a policy, same rows
    deep = Source.parquet(name="clicks", path="data/clicks", timestamp="ts", recursive=True)
    assert registry.source_schema(deep) is None                    # another layout: recorded afresh
    fresh = SourceSchema.of({"user_id": "int64", "ts": "timestamp", "day": "int32"})
    assert registry.record_source_schema(deep, fresh, origin="file x").schema == fresh
    assert registry.source_schema(clicks) is None


def test_two_definitions_of_one_source_that_differ_in_schema_say_so(registry: Registry) -> None:
    typed = Source.parquet(name="clicks", path="data/clicks", timestamp="ts", schema={"clicked": "int64"})

    @signal(entity=user, source=typed, features={"clicked": Int64()})
    def raw(batch: pa.Table) -> pa.Table:
        return batch

    with pytest.raises(RegistrationError, match=r"uses a source 'clicks' that differs .*: schema None -> "):
        registry.register_definitions([user], [clicks], [raw], module="mod")
