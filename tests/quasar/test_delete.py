"""``quasar delete SIGNAL[@VERSION]``: after a confirmation, the version's registry rows, its Iceberg tables (and
their files) and its online fields go; other versions, other signals and other projects' keys stay."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from click.testing import CliRunner

import quasar
from fixtures.project import init_project
from quasar.cli import main
from quasar.online.keys import field_name

MODULE = """
from quasar.signals import Entity, Source, Float64, aggregate, count, signal
import pyarrow as pa
import pyarrow.compute as pc

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")
daily = aggregate(name="daily", entity=user, source=events, step="1d", ttl="30d", online=True,
                  aggregations=[count("1d", name="n_1d")@EXTRA@])
"""
DERIVED = """

@signal(entity=user, source=Source.signal("daily"), ttl="30d", online=True, features={"half": Float64()})
def derived(batch: pa.Table) -> pa.Table:
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["event_timestamp"],
                     "half": pc.divide(pc.cast(batch["n_1d"], pa.float64()), 2.0)})
"""
START, END = "2026-01-01", "2026-01-04"


def run(project: Path, *args: str, code: int = 0, answer: str | None = None) -> str:
    result = CliRunner().invoke(main, ["-C", str(project), *args], input=answer)
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture
def project(tmp_path: Path, project_env: str) -> Path:
    root = init_project(tmp_path / "p", "del")
    (root / "data" / "events").mkdir(parents=True)
    ts = [datetime(2026, 1, d, h, tzinfo=UTC) for d in (1, 2, 3) for h in (3, 9)]
    pq.write_table(pa.table({"user_id": [1, 2] * 3, "ts": pa.array(ts, pa.timestamp("us", "UTC"))}),
                   root / "data" / "events" / "e.parquet")
    (root / "signals.py").write_text(MODULE.replace("@EXTRA@", ""))
    run(root, "register", "signals.py")
    run(root, "backfill", "daily", "--start", START, "--end", END)
    run(root, "materialize")                                          # v1 online
    (root / "signals.py").write_text(MODULE.replace("@EXTRA@", ', count("2d", name="n_2d")'))
    run(root, "register", "signals.py")                               # daily v2
    run(root, "backfill", "daily", "--start", START, "--end", END)
    run(root, "materialize")                                          # v2 online too
    return root


def _fields(url: str) -> set[str]:
    client = redis.Redis.from_url(url)
    return {f.decode() for key in client.scan_iter(match="del:*") for f in client.hkeys(key)}


def _tables(p: quasar.Platform) -> set[str]:
    return {name for _, name in p.catalog.list_tables(p.offline.namespace)}


def _files(root: Path, table: str) -> list[Path]:
    return [f for f in (root / ".quasar" / "warehouse").rglob("*") if f.is_file() and table in str(f)]


def test_delete_one_version_after_confirmation(project: Path, project_env: str) -> None:
    assert _fields(project_env) == {field_name("daily", 1), field_name("daily", 2)}
    assert _files(project, "daily__v1")
    out = run(project, "delete", "daily@1", answer="n\n", code=1)          # declined: nothing changes
    assert "daily v1" in out and "signals.daily__v1" in out and "2 online record(s)" in out and "Aborted" in out
    with quasar.Platform.open(project) as p:
        assert [v.version for v in p.registry.versions("daily")] == [1, 2]
        assert _tables(p) == {"daily__v1", "daily__v2"}
    assert _fields(project_env) == {field_name("daily", 1), field_name("daily", 2)}

    out = run(project, "delete", "daily@1", answer="y\n")
    assert "deleted daily v1" in out, out
    with quasar.Platform.open(project) as p:
        assert [v.version for v in p.registry.versions("daily")] == [2]
        assert {r.version for r in p.runs("daily")} == {2}                 # v1's runs went with it
        assert p.registry.serving("daily").version == 2
        assert _tables(p) == {"daily__v2"}
        v2 = p.registry.signal("daily", 2).signal                          # v2's records still answer
        at = int(datetime(2026, 1, 4, tzinfo=UTC).timestamp() * 1_000_000)
        (read,) = p.online_store.read([(v2, 2)], [1], now_us=at)           # type: ignore[call-arg]
        assert read.table.column("n_1d").to_pylist() == [1]
    assert _fields(project_env) == {field_name("daily", 2)}
    assert not _files(project, "daily__v1") and _files(project, "daily__v2")


def test_delete_refuses_what_other_signals_read(project: Path, project_env: str) -> None:
    (project / "signals.py").write_text(MODULE.replace("@EXTRA@", ', count("2d", name="n_2d")') + DERIVED)
    run(project, "register", "signals.py")
    run(project, "backfill", "derived", "--start", START, "--end", END)
    out = run(project, "delete", "daily", "--yes", code=1)
    assert "derived" in out and "delete it first" in out, out
    out = run(project, "delete", "daily@2", "--yes", code=1)              # the latest: what derived reads
    assert "derived" in out
    with quasar.Platform.open(project) as p:
        assert [v.version for v in p.registry.versions("daily")] == [1, 2]

    assert "deleted derived v1" in run(project, "delete", "derived", "--yes")
    assert "deleted daily v1, v2" in run(project, "delete", "daily", "--yes")
    assert run(project, "ls").startswith("no signals registered")
    assert _fields(project_env) == set()
    with quasar.Platform.open(project) as p:
        assert _tables(p) == set()
        assert p.registry.runs() == []
    assert not _files(project, "daily__v") and not _files(project, "derived__v")

    # registering again starts afresh: v1, a new table, nothing of the old one
    (project / "signals.py").write_text(MODULE.replace("@EXTRA@", ""))
    assert "daily v1: new" in run(project, "register", "signals.py")
    run(project, "backfill", "daily", "--start", START, "--end", "2026-01-03")
    with quasar.Platform.open(project) as p:
        table = p.offline.read(p.registry.signal("daily").signal, 1)
        assert table.column("n_1d").to_pylist() == [1, 1] and _tables(p) == {"daily__v1"}


def test_delete_names_what_does_not_exist(project: Path) -> None:
    assert "no signal named 'nope'" in run(project, "delete", "nope", "--yes", code=1)
    assert "has no version 7" in run(project, "delete", "daily@7", "--yes", code=1)
    assert "SIGNAL or SIGNAL@VERSION" in run(project, "delete", "daily:n_1d", "--yes", code=2)


def test_delete_removes_the_runner_and_catalog_state_of_what_it_deletes(project: Path) -> None:
    """A deleted version's runner state, catalog statistics and consistency report go with it: left behind, a
    signal registered again under the same name would start with the old one's computed days and checks."""
    from quasar.runner_state import SignalState
    from quasar.ui.catalog import last_report, report_key
    from quasar.ui.stats import feature_stats
    from quasar.ui.stats import state_key as stats_key

    def keys(p: quasar.Platform, version: int) -> dict[str, bool]:
        return {k: p.registry.get_state(k) is not None
                for k in (SignalState.key("daily", version), stats_key("daily", version))}

    with quasar.Platform.open(project) as p:
        p.run(once=True, now=datetime(2026, 1, 4, 6, tzinfo=UTC))         # records runner:daily@2 (checked)
        for version in (1, 2):
            feature_stats(p, p.registry.signal("daily", version))       # the catalog's statistics of each
        p.registry.set_state(SignalState.key("daily", 1), SignalState().to_json())  # v1 as an older runner saw it
        p.consistency("daily", sample=10, seed=1)                        # recorded for the catalog (of v2)
        assert all(keys(p, 1).values()) and all(keys(p, 2).values()), (keys(p, 1), keys(p, 2))
        assert (last_report(p.registry, "consistency", "daily") or {}).get("version") == 2
    run(project, "delete", "daily@1", "--yes")
    with quasar.Platform.open(project) as p:
        assert not any(keys(p, 1).values()) and all(keys(p, 2).values())
        assert p.registry.get_state(report_key("consistency", "daily")) is not None   # of v2: it stays
    run(project, "delete", "daily", "--yes")
    with quasar.Platform.open(project) as p:
        assert not any(keys(p, 2).values())
        assert p.registry.get_state(report_key("consistency", "daily")) is None
