"""build_training_dataset: the dataset contract against the Python reference, naming, errors, provenance."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fixtures.pit_data import SIGNALS, US, PitWorld, reference_pit
from quasar.signals import Entity, Int64, Signal, Source, signal
from quasar.signals.errors import DatasetError, NotFoundError
from quasar.store.dataset import DatasetResult, FeatureRef, build_training_dataset, parse_feature_ref
from quasar.store.engines.base import Engine

ALL_REFS = ["user_stats", "pin_stats:saves", "pin_stats@1:emb", "user_extra:score"]


class Catalogue:
    """What the facade wires in: signal versions from a registry, data files and snapshots from the store."""

    def __init__(self, worlds: dict[int, PitWorld]) -> None:
        self.worlds = worlds                      # version -> world; every signal exists in every version
        self.calls: list[tuple[str, int, datetime | None, datetime | None]] = []

    def resolve(self, name: str, version: int | None) -> tuple[Signal, int]:
        if name not in SIGNALS:
            raise NotFoundError(f"signal {name!r} is not registered; registered: {', '.join(sorted(SIGNALS))}")
        version = max(self.worlds) if version is None else version
        if version not in self.worlds:
            raise NotFoundError(f"signal {name!r} has no version {version}")
        return SIGNALS[name], version

    def store_files(self, name: str, version: int, start: datetime | None,
                    end: datetime | None) -> tuple[list[str], int | None]:
        self.calls.append((name, version, start, end))
        return list(self.worlds[version].data[name].files), 1000 * version + len(name)

    def build(self, spine: Any, refs: list[str], engine: Engine, **kw: Any) -> DatasetResult:
        return build_training_dataset(spine, refs, resolve=self.resolve, store_files=self.store_files,
                                      engine=engine, **kw)


def _expected(spine: pa.Table, world: PitWorld, wanted: list[tuple[str, str, str]]) -> dict[str, list[Any]]:
    """(signal, feature, output column) -> the reference's values for every spine row."""
    out: dict[str, list[Any]] = {}
    for sig, feature, column in wanted:
        out.update(reference_pit(spine, world.data[sig], [(feature, column)]))
    return out


def _all_columns() -> list[tuple[str, str, str]]:
    user = [("user_stats", f, f) for f in SIGNALS["user_stats"].schema.names]
    return [*user, ("pin_stats", "saves", "saves"), ("pin_stats", "emb", "emb"), ("user_extra", "score", "score")]


@pytest.mark.parametrize("seed", range(6))
def test_matches_reference_chunked_or_not(seed: int, pit_world: Any, pit_engine: Engine) -> None:
    world = pit_world(seed)
    cat = Catalogue({1: world})
    spine = world.spine(random.Random(seed), 70)
    whole = cat.build(spine, ALL_REFS, pit_engine)
    chunked = cat.build(spine, ALL_REFS, pit_engine, chunk_rows=9)
    assert whole.table.column_names == [*spine.column_names, *(c for _, _, c in _all_columns())]
    assert whole.table.select(spine.column_names).equals(spine)           # spine columns first, unchanged
    for column, values in _expected(spine, world, _all_columns()).items():
        assert whole.table.column(column).to_pylist() == values, column
    assert chunked.table.equals(whole.table)
    assert chunked.sources == whole.sources


def test_full_names_and_clashing_names(pit_world: Any, pit_engine: Engine) -> None:
    world = pit_world(1)
    cat = Catalogue({1: world})
    spine = world.spine(random.Random(1), 40)
    with pytest.raises(DatasetError, match="'user_stats:clicks' and 'user_extra:clicks' would both be named 'clicks'"):
        cat.build(spine, ["user_stats:clicks", "user_extra:clicks"], pit_engine)
    result = cat.build(spine, ["user_stats:clicks", "user_extra:clicks", "pin_stats"], pit_engine, full_names=True)
    names = ["user_stats__clicks", "user_extra__clicks", "pin_stats__saves", "pin_stats__title", "pin_stats__emb"]
    assert result.table.column_names == [*spine.column_names, *names]
    wanted = [(n.split("__")[0], n.split("__")[1], n) for n in names]
    for column, values in _expected(spine, world, wanted).items():
        assert result.table.column(column).to_pylist() == values, column


def test_a_feature_named_like_a_spine_column_is_refused(pit_world: Any, pit_engine: Engine) -> None:
    world = pit_world(2)
    cat = Catalogue({1: world})
    spine = world.spine(random.Random(2), 10).append_column("score", pa.array([1.0] * 11))
    with pytest.raises(DatasetError, match="'user_extra:score' would be named 'score', which is already a spine"):
        cat.build(spine, ["user_extra:score"], pit_engine)
    ok = cat.build(spine, ["user_extra:score"], pit_engine, full_names=True)
    assert ok.table.column_names[-2:] == ["score", "user_extra__score"]


def test_unknown_signals_and_features_are_not_found(pit_world: Any, pit_engine: Engine) -> None:
    world = pit_world(3)
    cat = Catalogue({1: world})
    spine = world.spine(random.Random(3), 5)
    with pytest.raises(NotFoundError, match="'nope' is not registered; registered: pin_stats, user_extra"):
        cat.build(spine, ["nope:x"], pit_engine)
    with pytest.raises(NotFoundError, match="'pin_stats' v1 has no feature 'likes'; its features: saves, title, emb"):
        cat.build(spine, ["pin_stats:likes"], pit_engine)
    with pytest.raises(DatasetError, match="no features requested"):
        cat.build(spine, [], pit_engine)


def test_repeated_features_give_one_column(pit_world: Any, pit_engine: Engine) -> None:
    world = pit_world(4)
    result = Catalogue({1: world}).build(world.spine(random.Random(4), 10), ["pin_stats:emb", "pin_stats"],
                                         pit_engine)
    assert result.table.column_names[-3:] == ["emb", "saves", "title"]


@pytest.mark.parametrize("ref, expected", [
    ("user_stats", FeatureRef(signal="user_stats")),
    ("user_stats:ctr", FeatureRef(signal="user_stats", feature="ctr")),
    (" user_stats@3:ctr ", FeatureRef(signal="user_stats", version=3, feature="ctr")),
    ("user_stats@12", FeatureRef(signal="user_stats", version=12)),
])
def test_parse_feature_refs(ref: str, expected: FeatureRef) -> None:
    assert parse_feature_ref(ref) == expected
    assert str(parse_feature_ref(ref)) == ref.strip()


def test_feast_version_syntax_is_the_same_reference() -> None:
    assert parse_feature_ref("user_stats@v2:ctr") == FeatureRef(signal="user_stats", version=2, feature="ctr")


@pytest.mark.parametrize("ref", ["", "user stats", "user_stats:", "user_stats@:x", "user_stats@0", "user_stats@v0",
                                 "user_stats:a:b", "1user", "user_stats@2@3", ":ctr"])
def test_bad_feature_refs_are_dataset_errors(ref: str) -> None:
    with pytest.raises(DatasetError, match="is invalid: use 'signal', 'signal:feature'"):
        parse_feature_ref(ref)


def test_pandas_spine_with_naive_times_and_a_reader_spine(pit_world: Any, pit_engine: Engine) -> None:
    world = pit_world(5)
    cat = Catalogue({1: world})
    spine = world.spine(random.Random(5), 60)
    arrow = cat.build(spine, ALL_REFS, pit_engine).table
    frame = spine.to_pandas()
    frame["event_timestamp"] = frame["event_timestamp"].dt.tz_localize(None)     # naive: taken as UTC
    from_pandas = cat.build(frame, ALL_REFS, pit_engine, chunk_rows=16).table
    assert from_pandas.equals(arrow)
    reader = pa.RecordBatchReader.from_batches(spine.schema, spine.to_batches(max_chunksize=7))
    from_reader = cat.build(reader, ALL_REFS, pit_engine, chunk_rows=10).table
    assert from_reader.equals(arrow)
    assert all(call[2] is None and call[3] is None for call in cat.calls[-3:])   # a reader's range is unknown


def test_store_files_get_the_spine_window_and_sources_are_recorded(pit_world: Any, pit_engine: Engine) -> None:
    world = pit_world(6)
    cat = Catalogue({1: world, 2: pit_world(7)})
    spine = world.spine(random.Random(6), 30)
    times = spine.column("event_timestamp").to_pylist()
    result = cat.build(spine, ["user_stats@1:clicks", "pin_stats", "user_stats:ctr"], pit_engine)
    lo, hi = min(times), max(times)
    assert cat.calls == [("user_stats", 1, lo - timedelta(seconds=20), hi + US), ("pin_stats", 2, None, hi + US),
                         ("user_stats", 2, lo - timedelta(seconds=20), hi + US)]
    assert result.sources == {"user_stats@1": {"version": 1, "snapshot_id": 1010},
                              "pin_stats": {"version": 2, "snapshot_id": 2009},
                              "user_stats@2": {"version": 2, "snapshot_id": 2010}}
    assert result.features["ctr"] == "user_stats@2:ctr"
    v1 = reference_pit(spine, world.data["user_stats"], [("clicks", "clicks")])["clicks"]
    v2 = reference_pit(spine, cat.worlds[2].data["user_stats"], [("ctr", "ctr")])["ctr"]
    assert result.table.column("clicks").to_pylist() == v1
    assert result.table.column("ctr").to_pylist() == v2


def test_an_empty_spine_gives_typed_empty_columns(pit_world: Any, pit_engine: Engine) -> None:
    world = pit_world(8)
    spine = world.spine(random.Random(8), 5).slice(0, 0)
    result = Catalogue({1: world}).build(spine, ALL_REFS, pit_engine)
    assert result.table.num_rows == 0
    assert result.table.schema.field("taste").type == SIGNALS["user_stats"].schema.type_of("taste").arrow_type()


def test_entities_sharing_a_key_name_with_other_types_are_refused(pit_world: Any, pit_engine: Engine) -> None:
    text_user = Entity(name="text_user", join_key="user_id", join_key_type="string")

    @signal(entity=text_user, source=Source.parquet(name="s", path="x/", timestamp="ts"), features={"n": Int64()})
    def text_stats(batch: pa.Table) -> pa.Table:
        return batch

    world = pit_world(9)
    cat = Catalogue({1: world})
    resolve = cat.resolve

    def resolve_more(name: str, version: int | None) -> tuple[Signal, int]:
        return (text_stats, 1) if name == "text_stats" else resolve(name, version)

    with pytest.raises(DatasetError, match="entities 'user' and 'text_user' share the join key 'user_id'"):
        build_training_dataset(world.spine(random.Random(9), 5), ["user_extra", "text_stats"],
                               resolve=resolve_more, store_files=cat.store_files, engine=pit_engine)


def test_write_parquet_keeps_the_sources(pit_world: Any, pit_engine: Engine, tmp_path: Path) -> None:
    world = pit_world(10)
    spine = world.spine(random.Random(10), 20)
    result = Catalogue({1: world}).build(spine, ALL_REFS, pit_engine)
    path = result.write_parquet(tmp_path / "out" / "ds.parquet")
    back = pq.read_table(path)
    assert back.equals(result.table)
    assert json.loads(back.schema.metadata[b"quasar.sources"]) == result.sources
    assert json.loads(back.schema.metadata[b"quasar.features"])["half"] == "user_stats@1:half"
    frame = pd.read_parquet(path)                 # the spine's own pandas metadata must not confuse pandas
    assert list(frame.columns) == result.table.column_names


def test_write_iceberg_stores_vectors_as_lists_and_the_sources(pit_world: Any, pit_engine: Engine,
                                                                 tmp_path: Path) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    world = pit_world(11)
    spine = world.spine(random.Random(11), 20).sort_by("event_timestamp")   # in time order: read back in order
    result = Catalogue({1: world}).build(spine, ALL_REFS, pit_engine)
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path / 'cat.db'}", warehouse=(tmp_path / "wh").as_uri())
    table = result.write_iceberg(catalog, "datasets.train_v1")
    assert json.loads(table.properties["quasar.sources"]) == result.sources
    files = [task.file.file_path.removeprefix("file://") for task in table.scan().plan_files()]
    back = pa.concat_tables(pq.read_table(f) for f in files)      # the data at rest
    taste = back.schema.field("taste").type
    assert pa.types.is_list(taste) and taste.value_type == pa.float32()
    assert back.schema.field("half").type.value_type == pa.float32()
    assert back.num_rows == spine.num_rows
    for name in result.table.column_names:     # nulls stay nulls, weighted id lists included
        assert back.column(name).to_pylist() == result.table.column(name).to_pylist(), name
    assert table.scan().to_arrow().num_rows == spine.num_rows
    with pytest.raises(DatasetError, match="already exists: pass overwrite=True"):
        result.write_iceberg(catalog, "datasets.train_v1")
    again = result.write_iceberg(catalog, "datasets.train_v1", overwrite=True)
    assert again.scan().to_arrow().num_rows == spine.num_rows
    with pytest.raises(DatasetError, match=r"'iceberg:namespace\.table'"):    # the rule out= names tables by
        result.write_iceberg(catalog, "train")
