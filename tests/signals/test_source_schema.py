"""Declared source schemas and reading options: typed, frozen, round-tripping, and in the version only where they
change what is read (issue 14, item 3)."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest

from quasar.signals import Entity, Int64, Source, signal
from quasar.signals.errors import DefinitionError
from quasar.signals.source_schema import SourceSchema, logical_type, parse_type

user = Entity(name="user", join_key="user_id")


def _signal(source: Source):  # type: ignore[no-untyped-def]
    @signal(entity=user, source=source, features={"clicked": Int64()})
    def clicks(batch: pa.Table) -> pa.Table:
        return batch
    return clicks


def test_logical_types_join_encodings_of_one_kind_of_value() -> None:
    assert {logical_type(t) for t in (pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string()))} \
        == {"string"}
    assert {logical_type(pa.timestamp(u, tz)) for u in ("s", "ms", "us", "ns") for tz in (None, "UTC")} \
        == {"timestamp"}
    assert logical_type(pa.large_list(pa.int64())) == logical_type(pa.list_(pa.int64())) == "list<int64>"
    assert logical_type(pa.int32()) != logical_type(pa.int64())           # another width is another type
    assert logical_type(pa.float32()) == "float32" and logical_type(pa.float64()) == "float64"


def test_declared_types_by_name_alias_or_arrow_type() -> None:
    assert parse_type("int64", "t") == "int64"
    assert parse_type("double", "t") == "float64"
    assert parse_type("large_string", "t") == "string"
    assert parse_type("timestamp[ms]", "t") == "timestamp"
    assert parse_type("list<float32>", "t") == "list<float32>"
    assert parse_type(pa.timestamp("us", tz="UTC"), "t") == "timestamp"
    assert parse_type(pa.decimal128(10, 2), "t") == "decimal(10,2)"
    with pytest.raises(DefinitionError, match="source 'x' column 'c': unknown column type 'integer'"):
        Source.parquet(name="x", path="p", timestamp="ts", schema={"c": "integer"})


def test_a_declared_schema_round_trips_and_includes_the_timestamp() -> None:
    src = Source.parquet(name="clicks", path="data/clicks", timestamp="ts", recursive=True,
                         schema={"user_id": "int64", "clicked": pa.int64()}, null_timestamps="drop")
    assert src.schema == SourceSchema((("user_id", "int64"), ("clicked", "int64"), ("ts", "timestamp")))
    data = src.to_dict()
    assert data["schema"] == {"user_id": "int64", "clicked": "int64", "ts": "timestamp"}
    assert data["recursive"] is True and data["null_timestamps"] == "drop"
    assert Source.from_dict(data) == src
    assert Source.from_dict(Source.parquet(name="h", path="d", timestamp="ts", partitioning="hive").to_dict()) \
        .partitioning == "hive"
    with pytest.raises(dataclasses.FrozenInstanceError):
        src.recursive = False  # type: ignore[misc]


def test_options_at_their_defaults_keep_old_identities() -> None:
    """A source written before these options has the same identity and dict, so no signal gets a new version."""
    plain = Source.parquet(name="clicks", path="data/clicks", timestamp="ts")
    assert plain.identity() == {"name": "clicks", "kind": "parquet", "timestamp": "ts", "path": "data/clicks",
                                "table": None, "upstream": None}
    assert set(plain.to_dict()) == {"name", "kind", "timestamp", "path", "table", "upstream", "description"}


def test_what_changes_the_rows_read_changes_the_version() -> None:
    plain = _signal(Source.parquet(name="clicks", path="data/clicks", timestamp="ts"))
    typed = _signal(Source.parquet(name="clicks", path="data/clicks", timestamp="ts", schema={"clicked": "int64"}))
    retyped = _signal(Source.parquet(name="clicks", path="data/clicks", timestamp="ts", schema={"clicked": "int32"}))
    deep = _signal(Source.parquet(name="clicks", path="data/clicks", timestamp="ts", recursive=True))
    hive = _signal(Source.parquet(name="clicks", path="data/clicks", timestamp="ts", partitioning="hive"))
    dropping = _signal(Source.parquet(name="clicks", path="data/clicks", timestamp="ts", null_timestamps="drop"))
    prints = [s.definition_fingerprint for s in (plain, typed, retyped, deep, hive)]
    assert len(set(prints)) == 5
    assert dropping.definition_fingerprint == plain.definition_fingerprint   # a policy, not what is computed
    reordered = _signal(Source.parquet(name="clicks", path="data/clicks", timestamp="ts",
                                       schema={"ts": "timestamp", "clicked": "int64"}))
    assert reordered.definition_fingerprint == typed.definition_fingerprint  # column order is not meaning


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"schema": {"ts": "int64"}}, "the timestamp column 'ts' must be declared as 'timestamp', not 'int64'"),
    ({"schema": {}}, "schema must map column names to types"),
    ({"partitioning": "directory"}, "partitioning must be 'hive' or None"),
    ({"null_timestamps": "keep"}, "null_timestamps must be 'refuse' or 'drop'"),
    ({"recursive": "yes"}, "recursive must be True or False"),
])
def test_bad_options_are_definition_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        Source.parquet(name="clicks", path="data/clicks", timestamp="ts", **kwargs)  # type: ignore[arg-type]


def test_options_only_where_they_apply() -> None:
    with pytest.raises(DefinitionError, match="recursive= and partitioning= are for Parquet folders"):
        Source(name="t", kind="iceberg", table="raw.t", timestamp="ts", recursive=True)
    with pytest.raises(DefinitionError, match="a signal source reads another signal's table"):
        Source(name="s", kind="signal", upstream="up", timestamp="event_timestamp", schema={"a": "int64"})  # type: ignore[arg-type]
    typed = Source.iceberg(name="t", table="raw.t", timestamp="ts", schema={"user_id": "int64"})
    assert Source.from_dict(typed.to_dict()) == typed
