"""Source drift is refused, never read silently (issue 14, item 3 and the source errors of item 10).

A real project on disk: the signal module as an author writes it, Parquet files under ``data/clicks``,
``quasar register`` and ``quasar backfill`` through the CLI (or ``Platform.backfill``) into Iceberg. Each bad
file makes the backfill exit non-zero with one line naming the file, the column and both types, and the
offline table keeps the snapshot it had.
"""

from __future__ import annotations

import shutil
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

import quasar
from fixtures.project import OVERRIDES, init_project
from quasar.cli import main

T0 = datetime(2026, 1, 1, tzinfo=UTC)
UTC_US = pa.timestamp("us", tz="UTC")

MODULE = textwrap.dedent("""
    from quasar.signals import Entity, Int64, Source, aggregate, count, signal, sum_

    user = Entity(name="user", join_key="user_id")
    clicks = Source.parquet(name="clicks", path="data/clicks", timestamp="ts"{options})

    daily = aggregate(name="daily", entity=user, source=clicks, step="1d",
                      aggregations=[sum_("clicked", "1d", name="clicks_1d", dtype=Int64()),
                                    count("1d", name="events_1d")])


    @signal(entity=user, source=clicks, features={{"clicked": Int64()}})
    def raw(batch):
        \"\"\"Every source row as it is: a transform reads every column of the source.\"\"\"
        return batch.select(["user_id", "ts", "clicked"]).rename_columns(["user_id", "event_timestamp", "clicked"])
""")


def events(day: int, users: int = 4, **replace: Any) -> pa.Table:
    """One row per user on ``day`` (hour = user id), ``clicked`` 1; ``replace`` swaps (or with None drops) a column."""
    cols: dict[str, Any] = {
        "user_id": pa.array(range(users), pa.int64()),
        "ts": pa.array([T0 + timedelta(days=day, hours=u) for u in range(users)], UTC_US),
        "clicked": pa.array([1] * users, pa.int64()),
    }
    cols.update(replace)
    return pa.table({k: v for k, v in cols.items() if v is not None})


class Project:
    """A quasar project folder with the module above; ``cli`` runs the quasar CLI inside it."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, options: str = "") -> None:
        for var in OVERRIDES:                               # no Redis needed: nothing is materialized
            monkeypatch.delenv(var, raising=False)
        self.root = init_project(root, "drift")
        monkeypatch.chdir(root)
        (root / "signals").mkdir(exist_ok=True)
        self.folder = root / "data" / "clicks"
        self.folder.mkdir(parents=True)
        self.define(options)

    def define(self, options: str) -> None:
        (self.root / "signals" / "clicks.py").write_text(MODULE.format(options=options))

    def write(self, table: pa.Table, name: str) -> Path:
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return path

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(main, list(args))

    def register(self) -> None:
        result = self.cli("register", "signals")
        assert result.exit_code == 0, result.output

    def backfill(self, signal: str = "daily", start: str = "2026-01-01", end: str = "2026-01-04") -> Result:
        return self.cli("backfill", signal, "--start", start, "--end", end)

    def snapshot(self, signal: str = "daily") -> int | None:
        with quasar.Platform.open(self.root) as p:
            sv = p.registry.signal(signal)
            return p.offline.current_snapshot_id(sv.signal.name, sv.version)

    def rows(self, signal: str = "daily") -> list[dict[str, Any]]:
        with quasar.Platform.open(self.root) as p:
            sv = p.registry.signal(signal)
            table = p.offline.read(sv.signal, sv.version).drop_columns(["created_timestamp"])
        return sorted(table.to_pylist(), key=lambda r: (r["event_timestamp"], r["user_id"]))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    return Project(tmp_path / "proj", monkeypatch)


def refused(project: Project, before: int | None, *needles: str, signal: str = "daily") -> str:
    """Backfill ``signal``: it must fail with one line holding every needle, and leave the table as it was."""
    result = project.backfill(signal)
    assert result.exit_code != 0, result.output
    message = result.output.strip()
    assert "\n" not in message and message.startswith("error: "), message
    for needle in needles:
        assert needle in message, (needle, message)
    assert project.snapshot(signal) == before
    return message


def backfilled(project: Project, signal: str = "daily") -> int:
    result = project.backfill(signal)
    assert result.exit_code == 0, result.output
    snapshot = project.snapshot(signal)
    assert snapshot is not None
    return snapshot


# --- item 3: drift after the first backfill (the schema recorded then) --------------------------------------
def test_a_new_file_without_a_column_is_refused(project: Project) -> None:
    """Today the new file's ``clicked`` read as nulls: the day summed to 0 and the backfill exited 0."""
    project.write(events(0), "day-0.parquet")
    project.register()
    before = backfilled(project)
    project.write(events(1, clicked=None), "day-1.parquet")
    refused(project, before, "file data/clicks/day-1.parquet lacks column 'clicked' (int64",
            "first read (from file data/clicks/day-0.parquet)")
    with quasar.Platform.open(project.root) as p:
        recorded = p.registry.source_schema(p.registry.source("clicks"))
    assert recorded is not None
    assert recorded.schema.to_dict() == {"user_id": "int64", "ts": "timestamp", "clicked": "int64"}
    assert recorded.origin == "file data/clicks/day-0.parquet"


def test_strings_are_not_cast_to_integers(project: Project) -> None:
    """Today ``user_id`` and ``clicked`` stored as strings were cast to integers, silently."""
    project.write(events(0), "day-0.parquet")
    project.register()
    before = backfilled(project)
    project.write(events(1, user_id=pa.array(["0", "1", "2", "3"]), clicked=pa.array(["1"] * 4)), "day-1.parquet")
    message = refused(project, before, "file data/clicks/day-1.parquet stores column 'user_id' as string",
                      "int64", "(and 1 more problem)")
    assert "schema=" in message                            # what to do: rewrite the file or declare the type


def test_files_that_disagree_at_the_first_read_are_refused(project: Project) -> None:
    """No schema recorded yet: the odd file out is named against a file of the majority, both types given."""
    for day in range(3):
        project.write(events(day), f"day-{day}.parquet")
    project.write(events(1, clicked=pa.array([1.0] * 4)), "late.parquet")
    project.register()
    refused(project, None, "file data/clicks/late.parquet stores column 'clicked' as float64, but "
                           "file data/clicks/day-0.parquet has int64")
    with quasar.Platform.open(project.root) as p:
        assert p.registry.source_schema(p.registry.source("clicks")) is None   # nothing recorded from a refusal


def test_a_stray_copy_in_a_subfolder_is_refused(project: Project) -> None:
    """Today ``data/clicks/sub/x.parquet`` was read too, and the copied day counted twice."""
    project.write(events(0), "day-0.parquet")
    project.write(events(1), "day-1.parquet")
    project.register()
    before = backfilled(project)
    (project.folder / "sub").mkdir()
    shutil.copy(project.folder / "day-0.parquet", project.folder / "sub" / "x.parquet")
    refused(project, before, "data/clicks/sub/x.parquet is in a subfolder of data/clicks", "recursive=True")
    assert {r["clicks_1d"] for r in project.rows()} == {1}                  # nothing counted twice


def test_hidden_files_and_folders_are_skipped(project: Project) -> None:
    """``_SUCCESS`` markers and ``.staging`` folders (what Spark and others leave) are not source files."""
    project.write(events(0), "day-0.parquet")
    (project.folder / "_SUCCESS").write_text("")
    project.write(events(0), ".staging/copy.parquet")
    project.write(events(0), "_temporary/0/copy.parquet")
    project.register()
    backfilled(project, "raw")
    assert [r["user_id"] for r in project.rows("raw")] == [0, 1, 2, 3]       # each row once


def test_recursive_reads_subfolders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = Project(tmp_path / "proj", monkeypatch, options=", recursive=True")
    project.write(events(0), "2026/01/day-0.parquet")
    project.write(events(1), "2026/01/day-1.parquet")
    project.register()
    backfilled(project)
    assert [r["events_1d"] for r in project.rows()] == [1] * 8


def test_hive_partitioning_reads_key_value_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``partitioning="hive"``: ``day=N`` folders give a column; a file outside a key=value folder is refused."""
    project = Project(tmp_path / "proj", monkeypatch, options=", partitioning='hive'")
    project.write(events(0), "day=0/part.parquet")
    project.write(events(1), "day=1/part.parquet")
    project.register()
    before = backfilled(project)
    with quasar.Platform.open(project.root) as p:
        recorded = p.registry.source_schema(p.registry.source("clicks"))
    assert recorded is not None and recorded.schema.get("day") == "int32"
    project.write(events(2), "part.parquet")
    refused(project, before, "data/clicks/part.parquet is not inside a key=value folder")
    (project.folder / "part.parquet").unlink()
    project.write(events(2), "copy/part.parquet")
    refused(project, before, "is in a folder 'copy' that is not key=value")


# --- item 3: null event times ------------------------------------------------------------------------------
def test_null_event_times_are_refused_with_their_count(project: Project) -> None:
    """Today rows with a null ``ts`` were dropped by the window filter, silently."""
    project.write(events(0), "day-0.parquet")
    project.write(events(1, ts=pa.array([None, None, T0 + timedelta(days=1), None], UTC_US)), "day-1.parquet")
    project.register()
    refused(project, None, "file data/clicks/day-1.parquet has 3 rows with a null event time in 'ts'",
            "null_timestamps='drop'")


def test_null_event_times_dropped_on_request_are_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = Project(tmp_path / "proj", monkeypatch, options=", null_timestamps='drop'")
    project.write(events(0), "day-0.parquet")
    project.write(events(1, ts=pa.array([None, None, T0 + timedelta(days=1), None], UTC_US)), "day-1.parquet")
    project.register()
    backfilled(project, "raw")
    assert [r["user_id"] for r in project.rows("raw")] == [0, 1, 2, 3, 2]
    with quasar.Platform.open(project.root) as p:
        details = p.runs("raw")[0].details
    assert details["source_null_timestamps_dropped"] == 3
    assert details["source_files"] == 2


# --- item 10: the source errors name the file and the column ----------------------------------------------
def test_an_int64_timestamp_in_one_file_names_the_file(project: Project) -> None:
    """Today: a raw Arrow kernel error naming no file or column (or, when another file came first, an int64 cast
    to microseconds since 1970 and the rows silently out of every window)."""
    project.write(events(0), "a.parquet")
    project.write(events(1, ts=pa.array([1_767_300_000_000_000 + u for u in range(4)], pa.int64())), "b.parquet")
    project.register()
    refused(project, None, "file data/clicks/b.parquet stores the timestamp column 'ts' as int64, "
                           "but it must be a timestamp")


def test_a_renamed_key_column_names_the_file(project: Project) -> None:
    """Today: "4 null join keys" without the file (a transform), or the renamed rows silently dropped."""
    project.write(events(0), "day-0.parquet")
    renamed = events(1).rename_columns(["uid", "ts", "clicked"])
    project.write(renamed, "day-1.parquet")
    project.register()
    for signal in ("daily", "raw"):
        refused(project, None, "file data/clicks/day-1.parquet lacks column 'user_id' (int64",
                "file data/clicks/day-0.parquet", signal=signal)


def test_an_empty_folder_says_so(project: Project) -> None:
    """Today: "timestamp column 'ts' is not in its files (columns: )"."""
    project.register()
    (project.folder / "_SUCCESS").write_text("")
    refused(project, None, "the folder data/clicks holds no Parquet files")


def test_a_file_that_is_not_parquet_names_the_file(project: Project) -> None:
    project.write(events(0), "day-0.parquet")
    (project.folder / "notes.txt").write_text("not parquet")
    project.register()
    refused(project, None, "file data/clicks/notes.txt cannot be read as Parquet")
    (project.folder / "a-notes.txt").write_text("not parquet either")          # the first file, this time
    refused(project, None, "file data/clicks/a-notes.txt cannot be read as Parquet")


# --- declared schemas ----------------------------------------------------------------------------------------
DECLARED = ', schema={"user_id": "int64", "clicked": "int64"}'


def test_a_declared_schema_refuses_another_type_at_the_first_read(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    project = Project(tmp_path / "proj", monkeypatch, options=DECLARED)
    project.write(events(0, clicked=pa.array([True] * 4)), "day-0.parquet")
    project.register()
    refused(project, None, "file data/clicks/day-0.parquet stores column 'clicked' as bool, but the source's "
                           "schema= declares int64")


def test_a_declared_schema_reads_only_its_columns_and_counts_in_the_version(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Extra columns are not read; a declared type change makes a new version (what is computed changed); the
    declaration stores and loads as it was written."""
    project = Project(tmp_path / "proj", monkeypatch, options=DECLARED)
    project.write(events(0).append_column("extra", pa.array(["x"] * 4)), "day-0.parquet")
    project.write(events(1), "day-1.parquet")          # no "extra": not a column of the source
    project.register()
    backfilled(project, "raw")
    assert [r["clicked"] for r in project.rows("raw")] == [1] * 8
    with quasar.Platform.open(project.root) as p:
        source = p.registry.source("clicks")
        assert source.schema is not None
        assert source.schema.to_dict() == {"user_id": "int64", "clicked": "int64", "ts": "timestamp"}
        assert p.registry.source_schema(source) is None       # declared: nothing inferred or recorded
        assert p.registry.signal("raw").version == 1
    project.define(', schema={"user_id": "int64", "clicked": "int32"}')
    project.register()
    with quasar.Platform.open(project.root) as p:
        assert p.registry.signal("raw").version == 2
    refused(project, None, "stores column 'clicked' as int64, but the source's schema= declares int32",
            signal="raw")
