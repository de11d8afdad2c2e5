"""A transform that raises points at the user's own file and line (the innermost frame in their module or a
helper beside it), in one line; ``quasar --debug`` prints the whole traceback as well."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import quasar
from fixtures.project import init_project
from quasar.cli import main
from quasar.signals.errors import BackfillError

MODULE = """\
import pyarrow as pa
from helpers import scale
from quasar.signals import Entity, Source, Float64, signal

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")


@signal(entity=user, source=events, ttl="30d", features={"x": Float64()})
def typo(batch: pa.Table) -> pa.Table:
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"],
                     "x": batch["clickz"]})


@signal(entity=user, source=events, ttl="30d", features={"x": Float64()})
def deep(batch: pa.Table) -> pa.Table:
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"], "x": scale(batch)})
"""
HELPERS = """\
def scale(batch):
    factor = 0
    return [1 / factor for _ in range(batch.num_rows)]
"""


@pytest.fixture
def project(tmp_path: Path, project_env: str) -> Path:
    root = init_project(tmp_path / "p", "terr")
    (root / "signals").mkdir()
    (root / "signals" / "engagement.py").write_text(MODULE)
    (root / "signals" / "helpers.py").write_text(HELPERS)
    (root / "data" / "events").mkdir(parents=True)
    pq.write_table(pa.table({"user_id": [1], "clicked": [1],
                             "ts": pa.array([datetime(2026, 1, 1, 5, tzinfo=UTC)], pa.timestamp("us", "UTC"))}),
                   root / "data" / "events" / "e.parquet")
    assert CliRunner().invoke(main, ["-C", str(root), "register", "signals"]).exit_code == 0
    return root


def backfill(root: Path, name: str, *options: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*options, "-C", str(root), "backfill", name, "--start", "2026-01-01",
                                       "--end", "2026-01-02"])
    return result.exit_code, result.output


def test_the_error_names_the_users_file_and_line(project: Path) -> None:
    module = project / "signals" / "engagement.py"
    code, out = backfill(project, "typo")
    assert code == 1 and len(out.strip().splitlines()) == 1 and "Traceback" not in out, out
    assert f"{module.resolve()}:12" in out and "KeyError" in out and "clickz" in out, out   # the line of the typo
    assert "in typo" in out

    code, out = backfill(project, "deep")                    # the innermost frame of the user's code: the helper
    assert code == 1 and len(out.strip().splitlines()) == 1, out
    assert f"{(project / 'signals' / 'helpers.py').resolve()}:3" in out and "ZeroDivisionError" in out, out


def test_debug_shows_the_traceback(project: Path) -> None:
    code, out = backfill(project, "deep", "--debug")
    assert code == 1
    assert "Traceback (most recent call last)" in out and "return [1 / factor" in out, out
    assert out.strip().splitlines()[-1].startswith("error: ") and "helpers.py:3" in out


def test_the_facade_raises_a_backfill_error_caused_by_the_users_exception(project: Path) -> None:
    with quasar.Platform.open(project) as p, pytest.raises(BackfillError) as caught:
        p.backfill("deep", "2026-01-01", "2026-01-02")
    assert "helpers.py:3" in str(caught.value)
    cause = caught.value.__cause__
    while cause is not None and not isinstance(cause, ZeroDivisionError):
        cause = cause.__cause__
    assert isinstance(cause, ZeroDivisionError)
    with quasar.Platform.open(project) as p:                 # the run log says where, too
        (run,) = p.runs("deep")
        assert run.status == "failed" and "helpers.py:3" in run.details["error"]
