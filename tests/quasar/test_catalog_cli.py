"""What the registry holds, shown: ``quasar ls --entities`` / ``--sources``, ``describe`` of an entity, a source
and an aggregation's definitions, and ``quasar plan`` (what ``register`` would change, writing nothing)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import quasar
from fixtures.project import init_project
from quasar.cli import main
from quasar.demo import EXAMPLE_SIGNALS


@pytest.fixture
def project(tmp_path: Path, project_env: str) -> Path:
    root = init_project(tmp_path / "p", "cat")
    shutil.copytree(EXAMPLE_SIGNALS, root / "signals", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def run(project: Path, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, ["-C", str(project), *args])
    assert result.exit_code == code, result.output
    return result.output


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_ls_entities_and_sources(project: Path) -> None:
    run(project, "register", "signals")
    entities = json.loads(run(project, "ls", "--entities", "--json"))
    assert entities == [
        {"name": "pin", "join_key": "pin_id", "join_key_type": "int64", "signals": ["pin_profile", "pin_stats"],
         "description": "An image with a description."},
        {"name": "user", "join_key": "user_id", "join_key_type": "int64",
         "signals": ["user_affinity", "user_engagement", "user_profile", "user_recent_pins"],
         "description": "A person using the app."}]
    text = run(project, "ls", "--entities").splitlines()
    assert text[0].split() == ["ENTITY", "JOIN_KEY", "TYPE", "SIGNALS", "DESCRIPTION"]
    assert text[1].split()[:4] == ["pin", "pin_id", "int64", "2"]
    sources = {s["name"]: s for s in json.loads(run(project, "ls", "--sources", "--json"))}
    assert sorted(sources) == ["events", "pins", "user_engagement_output", "users"]
    assert sources["events"]["kind"] == "parquet" and sources["events"]["location"] == "data/events"
    assert sources["events"]["signals"] == ["pin_stats", "user_engagement", "user_recent_pins"]
    assert sources["user_engagement_output"]["location"] == "signal user_engagement"
    text = run(project, "ls", "--sources").splitlines()
    assert text[0].split() == ["SOURCE", "KIND", "LOCATION", "TIMESTAMP", "SIGNALS", "DESCRIPTION"]
    out = run(project, "ls", "--entities", "--sources", code=2)
    assert "one of --entities, --sources" in out


def test_describe_an_entity_a_source_and_aggregations(project: Path) -> None:
    run(project, "register", "signals")
    entity = json.loads(run(project, "describe", "user", "--json"))
    assert entity["what"] == "entity" and entity["join_key"] == "user_id"
    assert entity["signals"] == ["user_affinity", "user_engagement", "user_profile", "user_recent_pins"]
    assert entity["sources"] == ["events", "user_engagement_output", "users"]
    text = run(project, "describe", "user")
    assert text.startswith("entity user (join key user_id: int64)") and "signals:     user_affinity" in text

    source = json.loads(run(project, "describe", "events", "--json"))
    assert source["what"] == "source" and source["kind"] == "parquet" and source["path"] == "data/events"
    assert source["signals"] == ["pin_stats", "user_engagement", "user_recent_pins"]
    assert source["schema"] is None                       # declared none, and no backfill recorded one yet
    text = run(project, "describe", "--source", "events")
    assert text.startswith("source events (parquet: data/events, timestamp ts)")
    assert "schema:      not declared; recorded at the first backfill" in text

    agg = json.loads(run(project, "describe", "user_engagement", "--json"))
    assert agg["aggregations"] == [
        {"name": "impressions_1d", "function": "count", "column": None, "window": "1d", "dtype": "int64"},
        {"name": "clicks_7d", "function": "sum", "column": "clicked", "window": "7d", "dtype": "int64"},
        {"name": "ctr_7d", "function": "mean", "column": "clicked", "window": "7d", "dtype": "float64"},
        {"name": "dwell_1d", "function": "mean", "column": "dwell_s", "window": "1d", "dtype": "float64"}]
    text = run(project, "describe", "user_engagement")
    assert "aggregations (step 1d: the row stamped T aggregates [T - window, T)):" in text
    assert "ctr_7d          mean(clicked) over 7d -> float64" in text
    assert "impressions_1d  count(*) over 1d -> int64" in text
    assert "aggregations" not in run(project, "describe", "user_profile")      # a transform has none

    out = run(project, "describe", "--entity", "events", code=1)
    assert "no entity named 'events'" in out
    out = run(project, "describe", "nothing", code=1)
    assert "no signal, entity or source named 'nothing'" in out


def test_plan_says_what_register_would_change_and_writes_nothing(project: Path) -> None:
    out = run(project, "plan", "signals")
    assert "user_engagement v1: new; needs backfill, materialize" in out
    assert "would create  entity user" in out
    assert "nothing written: `quasar register" in out
    assert run(project, "ls").startswith("no signals registered")          # the plan wrote nothing
    run(project, "register", "signals")
    _edit(project / "signals" / "engagement.py", 'count("1d", name="impressions_1d"),',
          'count("1d", name="impressions_1d"), count("7d", name="impressions_7d"),')
    _edit(project / "signals" / "entities.py", '"A person using the app."', '"A person who uses the app."')
    with quasar.Platform.open(project) as p:
        report = p.plan("signals")
    summaries = {c.name: c.summary for c in report.signals}
    assert summaries["user_engagement"].startswith("user_engagement v2: new version")
    assert summaries["user_profile"] == "user_profile v1: metadata updated (entity description)"
    assert summaries["pin_stats"] == "pin_stats v1: unchanged"
    out = run(project, "plan", "signals")
    assert "would update  entity user" in out and "user_engagement v2: new version" in out
    listing = {r["name"]: r["version"] for r in json.loads(run(project, "ls", "--json"))}
    assert listing["user_engagement"] == 1                                   # still: plan wrote nothing
    with quasar.Platform.open(project) as p:
        assert p.registry.entity("user").description == "A person using the app."
    out = run(project, "register", "signals")                               # and register does what it said
    assert "user_engagement v2: new version" in out


def test_plan_reports_the_same_errors_as_register(project: Path) -> None:
    (project / "broken.py").write_text("from quasar.signals import Entity\nuser = Entity(name='user', join_key=)\n")
    out = run(project, "plan", "broken.py", code=1)
    assert out.startswith("error: ") and "broken.py:2: syntax error" in out
