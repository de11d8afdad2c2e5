"""Issue 18, the local engine out of core: DuckDB's memory limit and spill folder from ``[engine]`` on the local
engine's connection, and ``training_dataset(..., out=PATH)`` / ``quasar dataset --out`` streaming the dataset to
Parquet chunk by chunk, with the rows and values of the in-memory result, read back by ``make_loader``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import quasar
from fixtures.project import init_project
from quasar.config import load_config
from quasar.signals.errors import ConfigError, DatasetError
from quasar.training_adapters import make_loader

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


def _events(n: int = 600, users: int = 40) -> pa.Table:
    rng = np.random.default_rng(18)
    ts = T0 + timedelta(hours=1)
    micros = (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    times = np.sort(micros + rng.integers(0, 5 * 86_400 * 10**6, n))
    clicks = pa.array(rng.integers(0, 9, n), mask=rng.random(n) < 0.1)
    return pa.table({
        "user_id": rng.integers(0, users, n), "ts": pa.array(times, TS), "clicks": clicks,
        "dwell": pa.array(rng.random(n, dtype=np.float32)), "tag": [f"t{v}" for v in rng.integers(0, 5, n)],
        "pins": [list(map(int, rng.integers(0, 100, k))) for k in rng.integers(0, 4, n)],
        "taste": pa.array([list(map(float, rng.random(4))) for _ in range(n)], pa.list_(pa.float32())),
    })


def _spine(n: int = 250, users: int = 45) -> pa.Table:
    rng = np.random.default_rng(3)
    micros = (T0 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return pa.table({"user_id": rng.integers(0, users, n),      # a few keys without rows
                     "event_timestamp": pa.array(micros + rng.integers(0, 7 * 86_400 * 10**6, n), TS),
                     "label": rng.integers(0, 2, n)})


@pytest.fixture
def project(tmp_path: Path, project_env: str) -> Path:
    """A project with one signal backfilled into its Iceberg table, DuckDB capped at 256MB spilling to spill/."""
    root = init_project(tmp_path / "p", "outofcore")
    text = (root / "quasar.toml").read_text()
    (root / "quasar.toml").write_text(text.replace('[engine]\n', '[engine]\nmemory_limit = "256MB"\n'
                                                                 'temp_directory = "spill"\n', 1))
    (root / "signals.py").write_text(MODULE)
    (root / "data" / "events").mkdir(parents=True)
    pq.write_table(_events(), root / "data" / "events" / "e.parquet", row_group_size=100)
    with quasar.Platform.open(root) as p:
        p.register("signals.py")
        p.backfill("user_activity", "2026-01-01", "2026-01-08")
    return root


@pytest.mark.parametrize("value", ["-1GB", "0GB", "lots", "2", "2 gigabytes"])
def test_a_memory_limit_duckdb_would_misread_is_a_config_error(tmp_path: Path, value: str) -> None:
    (tmp_path / "quasar.toml").write_text(f'[engine]\nmemory_limit = "{value}"\n')
    with pytest.raises(ConfigError, match=r"memory_limit must be a positive size.*" + repr(value).replace("'", ".")):
        load_config(tmp_path, env={})


def test_memory_limit_and_temp_directory_reach_the_engines_connection(tmp_path: Path) -> None:
    (tmp_path / "quasar.toml").write_text('[engine]\nmemory_limit = "1.5GiB"\ntemp_directory = "spill"\n')
    assert load_config(tmp_path, env={}).engine.memory_limit == "1.5GiB"
    with quasar.Platform.open(tmp_path) as p:
        con = p.engine("local").connection
        (limit, temp), = con.execute("SELECT current_setting('memory_limit'), "
                                     "current_setting('temp_directory')").fetchall()
    assert limit == "1.5 GiB" and Path(temp) == tmp_path.resolve() / "spill"
    (tmp_path / "quasar.toml").write_text("")
    with quasar.Platform.open(tmp_path) as p:           # unset: DuckDB's defaults, as before
        (limit,), = p.engine("local").connection.execute("SELECT current_setting('memory_limit')").fetchall()
    assert limit != "1.5 GiB"


def test_out_streams_the_same_rows_and_values_as_the_in_memory_result(project: Path) -> None:
    spine = _spine()
    with quasar.Platform.open(project) as p:
        expected = p.dataset(spine, ["user_activity"])
        assert p.training_dataset(spine, ["user_activity"], out=project / "one.parquet") == project / "one.parquet"
        # several chunks (a part file each), the spine read batch by batch as a reader
        reader = pa.RecordBatchReader.from_batches(spine.schema, spine.to_batches(max_chunksize=60))
        folder = p.dataset(reader, ["user_activity"], chunk_rows=100, out=project / "train")
        (limit,), = p.engine().connection.execute("SELECT current_setting('memory_limit')").fetchall()
    assert limit == "244.1 MiB"                                        # the project's cap, on the join's connection
    assert expected.table.num_rows == 250 and 0 < expected.table.column("clicks").null_count < 200
    assert folder.path == project / "train" and folder.num_rows == 250 and folder.table.num_rows == 0
    assert sorted(f.name for f in folder.path.iterdir()) == ["part-00000.parquet", "part-00001.parquet",
                                                             "part-00002.parquet"]
    assert folder.table.schema.equals(expected.table.schema, check_metadata=True)
    for written in (pq.read_table(project / "one.parquet"), pq.read_table(project / "train")):
        assert written.equals(expected.table)                         # rows, order, types, values
    for file in [project / "one.parquet", *folder.path.iterdir()]:    # each file records sources and features
        assert pq.read_schema(file).metadata == expected.table.schema.metadata
    assert folder.sources == expected.sources and folder.features == expected.features


def test_make_loader_reads_the_out_folder(project: Path) -> None:
    spine = _spine()
    with quasar.Platform.open(project) as p:
        table = p.training_dataset(spine, ["user_activity"])
        folder = p.training_dataset(spine, ["user_activity"], out=project / "train")
        streamed = p.dataset(spine, ["user_activity"], out=project / "again", chunk_rows=100)
    from_folder = list(make_loader(folder, labels=["label"], batch_size=64))
    from_result = list(make_loader(streamed, labels=["label"], batch_size=64))     # the DatasetResult itself
    in_memory = list(make_loader(table, labels=["label"], batch_size=64))
    assert len(from_folder) == len(from_result) == len(in_memory) == 4
    for a, b in [*zip(from_folder, in_memory, strict=True), *zip(from_result, in_memory, strict=True)]:
        assert a.features.dense_names == b.features.dense_names == ["clicks", "dwell"]
        assert np.array_equal(a.features.dense.numpy(), b.features.dense.numpy(), equal_nan=True)
        assert a.labels["label"].tolist() == b.labels["label"].tolist()


def test_a_failure_midway_leaves_nothing_half_written(project: Path) -> None:
    spine = _spine()
    bad = spine.set_column(1, "event_timestamp", pa.array([None] * 50 + spine.column(1).to_pylist()[50:], TS))
    reader = pa.RecordBatchReader.from_batches(bad.schema, [*spine.slice(0, 100).to_batches(), *bad.to_batches()])
    with quasar.Platform.open(project) as p:
        p.training_dataset(spine.slice(0, 10), ["user_activity"], out=project / "train")
        before = pq.read_table(project / "train")
        with pytest.raises(DatasetError, match="null value"):          # the second chunk fails, after the first
            p.training_dataset(reader, ["user_activity"], chunk_rows=100, out=project / "train")
        (project / "other").mkdir()
        (project / "other" / "notes.txt").write_text("mine")
        with pytest.raises(DatasetError, match="not a dataset's parts"):
            p.training_dataset(spine, ["user_activity"], out=project / "other")
    assert pq.read_table(project / "train").equals(before)              # the earlier output is untouched
    assert not [f for f in project.iterdir() if f.name.startswith(".train.") or f.name.startswith(".other.")]
    assert [f.name for f in (project / "other").iterdir()] == ["notes.txt"]


def test_the_cli_writes_a_folder_with_out(project: Path) -> None:
    from quasar.cli import main

    pq.write_table(_spine(), project / "spine.parquet")
    result = CliRunner().invoke(main, ["-C", str(project), "dataset", "--spine", str(project / "spine.parquet"),
                                       "--features", "user_activity", "--out", str(project / "train")])
    assert result.exit_code == 0, result.output
    assert f"wrote 250 rows x 8 columns to {project / 'train'}" in result.output
    assert pq.read_table(project / "train").num_rows == 250


def test_negative_threads_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "quasar.toml").write_text("[engine]\nthreads = -2\n")
    with pytest.raises(ConfigError, match=r"\[engine\] threads must be 0 .* got -2"):
        load_config(tmp_path, env={})
