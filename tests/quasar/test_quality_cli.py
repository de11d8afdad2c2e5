"""The data-quality commands end to end in a project: `quasar validate` runs the gate without committing,
`quasar backfill` refuses and quarantines under strict, `quasar runs` and `quasar describe` show the
validations, switching the policy to warn (same version) commits, and Platform.push checks row-level
expectations."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner, Result

import quasar
from fixtures.offline import random_events, write_events
from fixtures.project import init_project
from quasar.cli import main
from quasar.signals.errors import NotFoundError, ValidationFailedError
from quasar.store.quarantine import read_quarantine

MODULE = '''
import great_expectations as gx
import pyarrow as pa
from quasar.signals import Entity, Int64, Source, signal

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")


@signal(entity=user, source=events, online=True, features={"clicks": Int64(), "item": Int64()}, policy="@POLICY@",
        expectations=[gx.expectations.ExpectColumnValuesToBeBetween(column="clicks", min_value=0, max_value=1),
                      gx.expectations.ExpectColumnValuesToNotBeNull(column="item"),
                      gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "event_timestamp"])])
def user_clicks(batch: pa.Table) -> pa.Table:
    """Clicks per event."""
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"], "clicks": batch["clicked"],
                     "item": batch["item_id"]})
'''


@pytest.fixture
def project(tmp_path: Path, project_env: str) -> Path:
    init_project(tmp_path, "quality")
    (tmp_path / "signals.py").write_text(MODULE.replace("@POLICY@", "strict"))
    write_events(random_events(n=300, days=3, seed=5), tmp_path / "data" / "events")
    return tmp_path


def cli(project: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["-C", str(project), *args])


def test_validate_backfill_runs_describe_and_policy(project: Path) -> None:
    assert cli(project, "register", "signals.py").exit_code == 0
    window = ["--start", "2026-01-01", "--end", "2026-01-04"]

    # validate: the gate alone, nothing written
    checked = cli(project, "validate", "user_clicks", *window)
    assert checked.exit_code == 1, checked.output
    lines = checked.output.splitlines()
    assert lines[0].startswith("user_clicks v1 [2026-01-01, 2026-01-04) (run 1): 300 rows, policy strict: FAILED "
                               "1 of 3: a backfill would be refused and its batch quarantined")
    assert lines[1].startswith("  FAIL  expect_column_values_to_be_between(column=clicks, max_value=1.0, "
                               "min_value=0.0): ")
    assert lines[2] == "  ok    expect_column_values_to_not_be_null(column=item): 0 of 300 unexpected (0%)"
    as_json = json.loads(cli(project, "validate", "user_clicks", *window, "--json").output)
    assert as_json["verdict"] == "failed" and as_json["results"][0]["unexpected_count"] > 0
    with quasar.Platform.open(project) as p:
        assert p.offline.current_snapshot_id("user_clicks", 1) is None
        sig = p.registry.signal("user_clicks").signal
        with pytest.raises(NotFoundError, match="no quarantine table"):
            read_quarantine(p.offline, sig, 1)

    # backfill under strict: refused, quarantined, exit 1 with one error line
    refused = cli(project, "backfill", "user_clicks", *window)
    assert refused.exit_code == 1
    assert refused.output.startswith("error: signal user_clicks v1: backfill of [2026-01-01, 2026-01-04) failed at "
                                     "validate: the data-quality gate refused the batch (failed 1 of 3 expectations")
    assert "quarantine table signals.user_clicks__v1__quarantine (run 3)" in refused.output
    assert refused.output.count("\n") == 1

    # runs: newest first, with the validation summaries
    listed = cli(project, "runs", "user_clicks")
    assert listed.exit_code == 0
    text = listed.output.splitlines()
    assert text[0].startswith("#3     backfill    v1   failed    ") and "[2026-01-01, 2026-01-04) rows=-" in text[0]
    assert text[1].startswith("       validation: failed 1 of 3 expectations: expect_column_values_to_be_between")
    assert text[2].startswith("#2     validate    v1   failed    ") and "rows=300" in text[2]
    runs = json.loads(cli(project, "runs", "user_clicks", "--json").output)
    assert [(r["id"], r["kind"], r["status"]) for r in runs] == [(3, "backfill", "failed"), (2, "validate", "failed"),
                                                                 (1, "validate", "failed")]

    # describe: the expectations and the last validation
    described = cli(project, "describe", "user_clicks")
    assert "  expectations (strict):\n    expect_column_values_to_be_between(column=clicks" in described.output
    assert "  last validation: #3 backfill v1 failed at " in described.output
    assert "    quarantined 300 rows in signals.user_clicks__v1__quarantine" in described.output
    d = json.loads(cli(project, "describe", "user_clicks", "--json").output)
    assert d["last_validation"]["run_id"] == 3 and d["last_validation"]["verdict"] == "failed"

    # the same signal under warn: the same version, updated in place; the backfill commits and says so
    (project / "signals.py").write_text(MODULE.replace("@POLICY@", "warn"))
    registered = cli(project, "register", "signals.py")
    assert "user_clicks v1: metadata updated (policy)" in registered.output
    warned = cli(project, "backfill", "user_clicks", *window)
    assert warned.exit_code == 0, warned.output
    assert "  validation: warned 1 of 3 expectations: expect_column_values_to_be_between" in warned.output
    assert cli(project, "validate", "user_clicks", *window).exit_code == 0
    assert cli(project, "materialize").exit_code == 0
    with quasar.Platform.open(project) as p:
        assert [r.kind for r in p.runs("user_clicks", limit=3)] == ["materialize", "validate", "backfill"]
        assert p.runs("user_clicks")[1].details["validation"]["verdict"] == "warned"
        assert p.materialize()[0].rows_written == 0         # materialized already; nothing new


def test_platform_push_checks_row_level_expectations(project: Path) -> None:
    with quasar.Platform.open(project) as p:
        p.register("signals.py")
        now = datetime.now(UTC)
        bad: list[dict[str, Any]] = [{"user_id": 1, "event_timestamp": now, "clicks": 1, "item": None}]
        for to in ("online", "online_and_offline"):
            with pytest.raises(ValidationFailedError, match=r"expect_column_values_to_not_be_null\(column=item\)"):
                p.push("user_clicks", bad, to=to)
        assert p.offline.current_snapshot_id("user_clicks", 1) is None
        assert p.online_features({"user_id": [1]}, ["user_clicks:item"])["results"][1]["statuses"] == ["NOT_FOUND"]
        good = pa.Table.from_pylist([{**bad[0], "item": 7}, {**bad[0], "user_id": 2, "item": 8}])
        assert p.push("user_clicks", good, to="online_and_offline") == 2
        assert p.online_features({"user_id": [1, 2]}, ["user_clicks:item"])["results"][1]["values"] == [7, 8]
