"""Runs hold a lease: a run whose process died (or could not record its end) reads as abandoned, never as
running for ever, and the next run of its signal marks it so in the database (issue 14, item 5)."""

from __future__ import annotations

import os
import signal as signals_
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url

from fixtures.fault_project import REPO, wait_for
from fixtures.registry_db import example_module, write_module
from quasar.registry import Registry
from quasar.registry import models as m
from quasar.registry.db import normalize_url
from quasar.signals.errors import QuasarError

CHILD = textwrap.dedent("""\
    import sys, time
    from quasar.registry import Registry
    reg = Registry.open(sys.argv[1], run_lease=float(sys.argv[2]))
    print(reg.start_run(signal="user_clicks", version=1, kind="backfill", params={"start": "2026-01-01"}), flush=True)
    time.sleep(600)
""")


@pytest.fixture
def module(registry_url: str, tmp_path: Path) -> Path:
    path = write_module(tmp_path / "engagement.py", example_module())
    with Registry.open(registry_url) as reg:
        reg.register(path)
    return path


def stored(url: str, run_id: int) -> Any:
    """The run's row as the database holds it (not as the registry reads it)."""
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return conn.execute(select(m.runs).where(m.runs.c.id == run_id)).one()
    finally:
        engine.dispose()


def status(reg: Registry, run_id: int) -> str:
    return next(r.status for r in reg.runs("user_clicks") if r.id == run_id)


def test_a_killed_run_reads_abandoned_and_the_next_run_marks_it(registry_url: str, module: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, registry_url, "3"], stdout=subprocess.PIPE, text=True,
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout is not None
        run_id = int(child.stdout.readline())
        with Registry.open(registry_url, run_lease=3) as reg:
            wait_for(lambda: stored(registry_url, run_id).heartbeat_at > stored(registry_url, run_id).started_at,
                     "the child's first heartbeat")
            assert status(reg, run_id) == "running"          # alive: its heartbeat keeps the lease
            beat = stored(registry_url, run_id).heartbeat_at
            os.kill(child.pid, signals_.SIGKILL)
            child.wait(timeout=30)
            wait_for(lambda: status(reg, run_id) == "abandoned", "the killed run to read as abandoned", timeout=30)
            assert stored(registry_url, run_id).status == "running"     # nobody wrote it: read as abandoned
            record = next(r for r in reg.runs("user_clicks") if r.id == run_id)
            assert record.finished_at is None and record.heartbeat_at is not None and record.heartbeat_at >= beat

            nxt = reg.start_run(signal="user_clicks", version=1, kind="backfill")
            row = stored(registry_url, run_id)
            assert row.status == "abandoned" and row.finished_at == row.heartbeat_at
            assert "lease" in row.details["error"] and f"run {nxt}" in row.details["error"]
            assert status(reg, nxt) == "running"
            reg.finish_run(nxt, status="succeeded", rows=1)
            assert [r.status for r in reg.runs("user_clicks")] == ["succeeded", "abandoned"]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@contextmanager
def unwritable(url: str) -> Iterator[None]:
    """Make the registry database refuse writes, even to root: SQLite cannot create its rollback journal (a
    folder sits in its place, which fails its reads too); PostgreSQL's database turns read-only."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        journal = Path(f"{parsed.database}-journal")
        journal.mkdir()
        try:
            yield
        finally:
            journal.rmdir()
        return
    admin = create_engine(normalize_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = parsed.database

    def switch(on: bool) -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if on else "off"}')
            conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
    try:
        switch(True)
        yield
    finally:
        switch(False)
        admin.dispose()


def test_a_run_whose_end_cannot_be_recorded_ends_abandoned(registry_url: str, module: Path) -> None:
    with Registry.open(registry_url, run_lease=2) as reg:
        run_id = reg.start_run(signal="user_clicks", version=1, kind="backfill")
        with unwritable(registry_url), pytest.raises(QuasarError, match="registry database"):
            reg.finish_run(run_id, status="failed", details={"error": "disk full"})
        # the registry writes again, but nothing renews the lease of a run whose end could not be recorded
        wait_for(lambda: status(reg, run_id) == "abandoned", "the unrecorded run to read as abandoned", timeout=30)
        assert stored(registry_url, run_id).status == "running"
        reg.start_run(signal="user_clicks", version=1, kind="backfill")
        assert stored(registry_url, run_id).status == "abandoned"


FROZEN = textwrap.dedent("""\
    import sys
    from quasar.registry import Registry
    reg = Registry.open(sys.argv[1], run_lease=float(sys.argv[2]))
    print(reg.start_run(signal="user_clicks", version=1, kind="backfill"), flush=True)
    run_id = int(sys.stdin.readline())
    reg.finish_run(run_id, status="succeeded", rows=5)
    print("finished", flush=True)
""")


def test_a_frozen_run_marked_abandoned_still_records_its_real_end(registry_url: str, module: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", FROZEN, registry_url, "2"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.stdin is not None and child.stdout is not None
    try:
        slow = int(child.stdout.readline())
        os.kill(child.pid, signals_.SIGSTOP)                 # frozen: no heartbeat, the lease runs out
        with Registry.open(registry_url, run_lease=2) as reg:
            wait_for(lambda: status(reg, slow) == "abandoned", "the frozen run's lease to run out", timeout=30)
            reg.start_run(signal="user_clicks", version=1, kind="materialize")
            assert stored(registry_url, slow).status == "abandoned"
            os.kill(child.pid, signals_.SIGCONT)
            child.stdin.write(f"{slow}\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "finished"   # it was alive after all: the truth wins
            assert status(reg, slow) == "succeeded" and stored(registry_url, slow).rows == 5
    finally:
        if child.poll() is None:
            os.kill(child.pid, signals_.SIGCONT)
            child.kill()
        child.wait()


def test_a_lease_must_be_positive(registry_url: str) -> None:
    with pytest.raises(QuasarError, match="run lease"):
        Registry.open(registry_url, run_lease=0)


def test_a_run_table_from_before_leases_gets_them_and_its_stuck_runs_read_abandoned(registry_url: str,
                                                                                    module: Path) -> None:
    engine = create_engine(normalize_url(registry_url))
    with engine.begin() as conn:                               # the run table as it was before leases
        conn.exec_driver_sql("ALTER TABLE quasar_runs DROP COLUMN heartbeat_at")
        conn.exec_driver_sql("ALTER TABLE quasar_runs DROP COLUMN lease_s")
        conn.exec_driver_sql("INSERT INTO quasar_runs (signal_name, version, kind, status, started_at, params, details) "
                             "VALUES ('user_clicks', 1, 'backfill', 'running', '2026-01-01 00:00:00', '{}', '{}')")
    engine.dispose()
    with Registry.open(registry_url) as reg:
        stuck = reg.runs("user_clicks")[0]
        assert stuck.status == "abandoned" and stuck.heartbeat_at is None
        fresh = reg.start_run(signal="user_clicks", version=1, kind="backfill")
        assert stored(registry_url, stuck.id).status == "abandoned" and status(reg, fresh) == "running"
