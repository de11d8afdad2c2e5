"""Issue 18 item 3, the Iceberg half on the local engine: ``training_dataset(..., out="iceberg:ns.table")`` and
``quasar dataset --out iceberg:ns.table`` write the dataset into an Iceberg table of the project's (SQLite)
catalog in one commit, with the in-memory dataset's columns, types and values; ``make_loader`` reads the table;
an earlier dataset table is replaced as an earlier output folder is, any other table is refused, and a failure
leaves no table or the previous one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import quasar
from fixtures.project import init_project
from quasar.signals.errors import DatasetError, StoreError
from quasar.store.dataset_out import IcebergOut, parse_out
from quasar.training_adapters import iceberg_source, make_loader

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TS = pa.timestamp("us", "UTC")
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")

MODULE = """
import pyarrow as pa
from quasar.signals import Entity, Source, Float32, IdList, Int64, String, Vector, signal

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")

@signal(entity=user, source=events, ttl="2d",
        features={"clicks": Int64(), "dwell": Float32(), "tag": String(), "pins": IdList(), "taste": Vector(4)})
def user_activity(batch: pa.Table) -> pa.Table:
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"], "clicks": batch["clicks"],
                     "dwell": batch["dwell"], "tag": batch["tag"], "pins": batch["pins"],
                     "taste": batch["taste"]})
"""


def _events(n: int = 400, users: int = 30) -> pa.Table:
    rng = np.random.default_rng(18)
    micros = (T0 + timedelta(hours=1) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    times = np.sort(micros + rng.integers(0, 5 * 86_400 * 10**6, n))
    return pa.table({
        "user_id": rng.integers(0, users, n), "ts": pa.array(times, TS),
        "clicks": pa.array(rng.integers(0, 9, n), mask=rng.random(n) < 0.1),
        "dwell": pa.array(rng.random(n, dtype=np.float32)), "tag": [f"t{v}" for v in rng.integers(0, 5, n)],
        "pins": [list(map(int, rng.integers(0, 100, k))) for k in rng.integers(0, 4, n)],
        "taste": pa.array([list(map(float, rng.random(4))) for _ in range(n)], pa.list_(pa.float32())),
    })


def _spine(n: int = 200, users: int = 34, ordered: bool = True) -> pa.Table:
    rng = np.random.default_rng(3)
    micros = (T0 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    times = micros + rng.integers(0, 7 * 86_400 * 10**6, n)
    return pa.table({"user_id": rng.integers(0, users, n),      # a few keys without rows
                     "event_timestamp": pa.array(np.sort(times) if ordered else times, TS),
                     "label": rng.integers(0, 2, n), "n": np.arange(n)})


@pytest.fixture
def project(tmp_path: Path, project_env: str) -> Path:
    root = init_project(tmp_path / "p", "icebergout")
    (root / "signals.py").write_text(MODULE)
    (root / "data" / "events").mkdir(parents=True)
    pq.write_table(_events(), root / "data" / "events" / "e.parquet")
    with quasar.Platform.open(root) as p:
        p.register("signals.py")
        p.backfill("user_activity", "2026-01-01", "2026-01-08")
    return root


def _read(table: object) -> pa.Table:
    """Every row of a dataset table in plan order, in the dataset's own types (what make_loader reads)."""
    source = iceberg_source(table)
    return pa.concat_tables([source.read(piece, source.schema.names) for piece in source.pieces()])


def _data_files(root: Path) -> set[Path]:
    return {f for f in root.rglob("*.parquet") if "/data/" in str(f) and "/datasets/" in str(f)}


def test_out_an_iceberg_table_equals_the_in_memory_dataset(project: Path) -> None:
    spine = _spine()
    with quasar.Platform.open(project) as p:
        expected = p.dataset(spine, ["user_activity"])
        table = p.training_dataset(spine, ["user_activity"], out="iceberg:datasets.train")
        streamed = p.dataset(spine, ["user_activity"], chunk_rows=70, out="iceberg:datasets.chunked")
        shuffled = _spine(ordered=False)
        loose = p.dataset(shuffled, ["user_activity"], chunk_rows=70, out="iceberg:datasets.loose")
        loose_expected = p.dataset(shuffled, ["user_activity"]).table
    want = expected.table
    assert want.num_rows == 200 and want.column("clicks").null_count > 0
    assert pa.types.is_fixed_size_list(want.schema.field("taste").type)       # a Vector: not an Iceberg type
    assert table.properties["quasar.features"] and table.properties["quasar.sources"]
    assert [f.name for f in table.schema().fields] == want.schema.names
    assert [(f.transform.__class__.__name__, f.name) for f in table.spec().fields] == \
        [("DayTransform", "event_timestamp_day")]
    for got in (_read(table), _read(streamed.iceberg)):          # a spine in time order reads back in spine order
        assert got.schema.equals(want.schema, check_metadata=False)
        assert got.replace_schema_metadata(None).equals(want.replace_schema_metadata(None))   # cell by cell
    assert streamed.num_rows == 200 and streamed.table.schema.equals(want.schema, check_metadata=True)
    assert streamed.sources == expected.sources and streamed.features == expected.features
    # a spine out of time order: each chunk's rows a day at a time, every row and value the same
    got = _read(loose.iceberg).sort_by("n").replace_schema_metadata(None)
    assert got.equals(loose_expected.sort_by("n").replace_schema_metadata(None))
    for task in table.scan().plan_files():                        # the offline writer's files: Iceberg field ids
        schema = pq.read_schema(task.file.file_path.removeprefix("file://"))
        assert [int(schema.field(n).metadata[b"PARQUET:field_id"]) for n in ("user_id", "taste")] == \
            [table.schema().find_field(n).field_id for n in ("user_id", "taste")]


def test_make_loader_reads_the_iceberg_table(project: Path) -> None:
    spine = _spine()
    with quasar.Platform.open(project) as p:
        in_memory = p.training_dataset(spine, ["user_activity"])
        table = p.training_dataset(spine, ["user_activity"], out="iceberg:datasets.train")
        result = p.dataset(spine, ["user_activity"], out="iceberg:datasets.again", chunk_rows=90)
    with pytest.raises(StoreError, match="a table name needs its catalog; pass the table itself"):
        make_loader("iceberg:datasets.train")
    want = list(make_loader(in_memory, labels=["label"], batch_size=64))
    for data in (table, result):                                  # the pyiceberg table, or the DatasetResult
        got = list(make_loader(data, labels=["label"], batch_size=64))
        assert len(got) == len(want) == 4
        for a, b in zip(got, want, strict=True):
            assert a.features.dense_names == b.features.dense_names
            assert np.array_equal(a.features.dense.numpy(), b.features.dense.numpy(), equal_nan=True)
            assert a.labels["label"].tolist() == b.labels["label"].tolist()


def test_an_earlier_dataset_table_is_replaced_and_a_failure_leaves_it(project: Path) -> None:
    spine = _spine()
    bad = spine.set_column(1, "event_timestamp", pa.array([None] * 50 + spine.column(1).to_pylist()[50:], TS))
    with quasar.Platform.open(project) as p:
        p.training_dataset(spine, ["user_activity"], out="iceberg:datasets.train")
        first = p.training_dataset(spine.slice(0, 30), ["user_activity:clicks"], out="iceberg:datasets.train")
        assert [f.name for f in first.schema().fields] == ["user_id", "event_timestamp", "label", "n", "clicks"]
        before, files = _read(first), _data_files(project)
        assert before.num_rows == 30
        reader = pa.RecordBatchReader.from_batches(bad.schema, [*spine.slice(0, 100).to_batches(),
                                                                *bad.to_batches()])
        with pytest.raises(DatasetError, match="null value"):     # the second chunk fails, after the first's files
            p.training_dataset(reader, ["user_activity"], chunk_rows=100, out="iceberg:datasets.train")
        after = p.catalog.load_table("datasets.train")
        assert after.metadata.current_snapshot_id == first.metadata.current_snapshot_id   # the previous table
        assert _read(after).equals(before) and _data_files(project) == files             # and no new files
        reader = pa.RecordBatchReader.from_batches(bad.schema, [*spine.slice(0, 100).to_batches(),
                                                                *bad.to_batches()])
        with pytest.raises(DatasetError, match="null value"):
            p.training_dataset(reader, ["user_activity"], chunk_rows=100, out="iceberg:datasets.fresh")
        assert not p.catalog.table_exists("datasets.fresh") and _data_files(project) == files   # no table
        p.catalog.create_table("datasets.mine", schema=pa.schema([("x", pa.int64())]))
        with pytest.raises(DatasetError, match="not a dataset's"):                   # not ours: refused
            p.training_dataset(spine, ["user_activity"], out="iceberg:datasets.mine")
        assert p.catalog.load_table("datasets.mine").metadata.current_snapshot_id is None
        with pytest.raises(DatasetError, match=r"iceberg:train: name an Iceberg table as"):    # a bad name
            p.training_dataset(spine, ["user_activity"], out="iceberg:train")


@pytest.mark.parametrize("out", ["iceberg:", "iceberg:train", "iceberg:ns..train", "iceberg:ns.tr-ain",
                                 "iceberg:1ns.train", "iceberg:ns.train "])
def test_a_bad_table_name_is_a_dataset_error(out: str) -> None:
    with pytest.raises(DatasetError, match=r"name an Iceberg table as 'iceberg:namespace\.table'"):
        parse_out(out, catalog="a catalog")


def test_parse_out_is_the_one_rule() -> None:
    assert parse_out(None) is None and parse_out("train") == Path("train") and parse_out(Path("a.parquet")) == \
        Path("a.parquet")
    assert parse_out("iceberg:ns.t", catalog="cat") == IcebergOut("ns.t") and parse_out("iceberg:ns.t", "c").catalog == "c"
    with pytest.raises(DatasetError, match="no catalog was given"):
        parse_out("iceberg:ns.t")
    with pytest.raises(DatasetError, match="give a path"):
        parse_out(3)  # type: ignore[arg-type]


def test_the_cli_writes_an_iceberg_table_with_out(project: Path) -> None:
    from quasar.cli import main

    pq.write_table(_spine(), project / "spine.parquet")
    result = CliRunner().invoke(main, ["-C", str(project), "dataset", "--spine", str(project / "spine.parquet"),
                                       "--features", "user_activity", "--out", "iceberg:datasets.cli"])
    assert result.exit_code == 0, result.output
    assert "wrote 200 rows x 9 columns to iceberg:datasets.cli" in result.output
    with quasar.Platform.open(project) as p:
        assert _read(p.catalog.load_table("datasets.cli")).num_rows == 200


def test_an_empty_dataset_is_an_empty_table_and_can_be_replaced(project: Path) -> None:
    spine = _spine()
    with quasar.Platform.open(project) as p:
        empty = p.dataset(spine.slice(0, 0), ["user_activity"], out="iceberg:datasets.train")
        assert empty.num_rows == 0 and empty.iceberg.scan().to_arrow().num_rows == 0
        assert [f.name for f in empty.iceberg.schema().fields] == empty.table.schema.names
        full = p.training_dataset(spine, ["user_activity"], out="iceberg:datasets.train")   # a table without rows
        want = p.training_dataset(spine, ["user_activity"])
    assert _read(full).replace_schema_metadata(None).equals(want.replace_schema_metadata(None))


def _fail_data_file(monkeypatch: pytest.MonkeyPatch, number: int) -> None:
    """Make the ``number``-th data file written from now on fail (a FileIO fault: a full disk, a lost bucket)."""
    from pyiceberg.io.pyarrow import PyArrowFileIO

    new_output, seen = PyArrowFileIO.new_output, []

    def failing(self: PyArrowFileIO, location: str) -> object:
        if "/data/" in location:
            seen.append(location)
            if len(seen) == number:
                raise OSError(f"injected failure writing data file {number}")
        return new_output(self, location)

    monkeypatch.setattr(PyArrowFileIO, "new_output", failing)


@pytest.mark.parametrize("fail_at", [1, 2])
def test_write_iceberg_replaces_in_one_commit_and_a_failure_leaves_the_previous_table(
        project: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int) -> None:
    """``DatasetResult.write_iceberg`` is ``out="iceberg:..."``'s writer: a failure midway (the first data file,
    or the second, after one was written) leaves the previous table, its rows and files, as they were."""
    spine = _spine()
    with quasar.Platform.open(project) as p:
        old = p.dataset(spine.slice(0, 30), ["user_activity:clicks"])
        first = old.write_iceberg(p.catalog, "datasets.train")
        assert type(first.io) is __import__("pyiceberg.io.pyarrow", fromlist=["PyArrowFileIO"]).PyArrowFileIO
        before, files = _read(first), _data_files(project)
        assert before.num_rows == 30
        new = p.dataset(spine, ["user_activity"])
        with pytest.raises(DatasetError, match="already exists: pass overwrite=True"):
            new.write_iceberg(p.catalog, "datasets.train")
        with monkeypatch.context() as faults:
            _fail_data_file(faults, fail_at)
            with pytest.raises(StoreError, match=f"injected failure writing data file {fail_at}"):
                new.write_iceberg(p.catalog, "datasets.train", overwrite=True)
        after = p.catalog.load_table("datasets.train")
        assert after.metadata.current_snapshot_id == first.metadata.current_snapshot_id   # the previous table
        assert _read(after).equals(before) and _data_files(project) == files             # and no new files
        with monkeypatch.context() as faults:
            _fail_data_file(faults, fail_at)
            with pytest.raises(StoreError, match="injected failure"):
                new.write_iceberg(p.catalog, "datasets.fresh")
        assert not p.catalog.table_exists("datasets.fresh") and _data_files(project) == files   # no table
        table = new.write_iceberg(p.catalog, "datasets.train", overwrite=True)
        via_out = p.training_dataset(spine, ["user_activity"], out="iceberg:datasets.via_out")
        p.catalog.create_table("datasets.mine", schema=pa.schema([("x", pa.int64())]))
        with pytest.raises(DatasetError, match="not a dataset's"):                   # not ours: refused
            new.write_iceberg(p.catalog, "datasets.mine", overwrite=True)
        assert p.catalog.load_table("datasets.mine").metadata.current_snapshot_id is None
    assert _read(table).replace_schema_metadata(None).equals(new.table.replace_schema_metadata(None))
    def shape(t: Any) -> tuple[object, ...]:          # field ids aside: a replaced table's come after the old ones
        return ([(f.name, str(f.field_type), f.required) for f in t.schema().fields],
                [(f.name, str(f.transform)) for f in t.spec().fields])

    assert shape(table) == shape(via_out)                                  # the same table as out= makes
    assert {k: v for k, v in table.properties.items() if k.startswith("quasar.")} == \
        {k: v for k, v in via_out.properties.items() if k.startswith("quasar.")}
