"""The command line on request-time signals and feature services, in a project built as a user would:
``quasar ls`` lists them, ``quasar describe`` shows their inputs, pins and versions and who uses each signal
version (services, and bundles in the models folder), ``quasar register``/``plan`` say what changed, and
``quasar dataset --service`` builds exactly a service's features."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from fixtures.request_world import END, NOW, START, World, build_world, spine_of
from quasar.cli import main


@pytest.fixture
def world(tmp_path: Path, project_env: str) -> World:
    return build_world(tmp_path / "proj")


def cli(w: World, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, ["-C", str(w.root), *args])
    assert result.exit_code == code, result.output
    return result.output


def test_ls_lists_request_time_signals_and_services(world: World) -> None:
    text = cli(world, "ls")
    signals, requests, services = text.split("\n\n")
    assert signals.splitlines()[0].split()[0] == "SIGNAL"
    assert [line.split()[0] for line in signals.splitlines()[1:]] == ["pin_stats", "user_stats"]
    header, *rows = requests.splitlines()
    assert header.startswith("REQUEST-TIME SIGNAL")
    assert rows[0].split()[:2] == ["ctr_boost", "v1"]
    assert "user_stats:ctr, user_stats:clicks" in rows[0] and "position, query" in rows[0] and "row, batch" in rows[0]
    assert rows[1].split()[:2] == ["pin_score", "v1"] and "pin_stats:quality, ctr_boost:boost" in rows[1]
    header, row = services.strip().splitlines()
    assert header.split()[:2] == ["FEATURE", "SERVICE"]
    assert row.split()[:3] == ["ranker", "v1", "3"]
    assert "ctr_boost@1, pin_score@1, pin_stats@1, user_stats@1" in row and row.split()[-1] == "1"

    listed = json.loads(cli(world, "ls", "--json"))
    assert [(r["name"], r["kind"]) for r in listed] == [
        ("pin_stats", "transform"), ("user_stats", "transform"), ("ctr_boost", "request"), ("pin_score", "request"),
        ("ranker", "service")]
    only = json.loads(cli(world, "ls", "--services", "--json"))
    assert only == [{"name": "ranker", "version": 1, "kind": "service", "features": 3, "logging": 1.0, "owner": "",
                     "pins": {"ctr_boost": 1, "pin_score": 1, "pin_stats": 1, "user_stats": 1}}]
    assert [r["modes"] for r in json.loads(cli(world, "ls", "--requests", "--json"))] == [["row", "batch"], ["row"]]
    assert "give one of" in cli(world, "ls", "--services", "--entities", code=2)


def test_describe_a_request_time_signal(world: World) -> None:
    text = cli(world, "describe", "ctr_boost")
    assert text.startswith("request-time signal ctr_boost v1\n")
    assert "  modes:       row, batch (batches of up to 8 rows run the row form, larger ones the vectorised form)" \
        in text.splitlines()
    for line in ("  description: CTR discounted by the slot the item is shown in.",
                 "    ctr         user_stats:ctr", "    clicks      user_stats:clicks",
                 "    position    int64", "    query       string", "    boost       float64",
                 "    long_query  int64", "  versions:    v1", "  upstream:    user_stats",
                 "  read by request-time signals: pin_score", "    v1: feature service ranker@1 (latest)"):
        assert line in text.splitlines(), (line, text)
    d = json.loads(cli(world, "describe", "pin_score", "--json"))
    assert d["what"] == "request" and d["modes"] == ["row"] and d["request"] == []
    assert d["inputs"] == [{"name": "quality", "ref": "pin_stats:quality"}, {"name": "boost", "ref": "ctr_boost:boost"}]
    assert d["upstream"] == ["ctr_boost", "pin_stats"]
    assert d["used_by"] == [{"version": 1, "services": [{"name": "ranker", "version": 1, "latest": True}],
                             "bundles": []}]

    source = world.root / "signals.py"
    source.write_text(source.read_text().replace("DECAY = 0.5", "DECAY = 0.25"))
    out = cli(world, "register", "signals.py").splitlines()
    assert ("  request-time signal ctr_boost v2: new version (code); reads user_stats:ctr, user_stats:clicks; "
            "request fields position, query; modes row, batch") in out
    assert "  feature service ranker v2: new version (pins); pins ctr_boost@2, pin_score@1, pin_stats@1, " \
           "user_stats@1 (moved: ctr_boost@1 -> @2)" in out
    text = cli(world, "describe", "ctr_boost", "--request").splitlines()
    assert "  versions:    v1, v2" in text
    assert "    v1: feature service ranker@1" in text and "    v2: feature service ranker@2 (latest)" in text


def test_describe_a_service_and_who_uses_each_signal_version(world: World) -> None:
    p = world.platform
    edit = world.root / "signals.py"
    edit.write_text(edit.read_text().replace('"""Source rows as they are."""\n    return batch.rename_columns(',
                                             '"""Source rows."""\n    return batch.select(batch.column_names)'
                                             '.rename_columns(', 1))
    out = cli(world, "register", "signals.py")
    assert "  user_stats v2: new version" in out
    assert "  request-time signal ctr_boost v1: unchanged" in out.splitlines()
    assert ("  feature service ranker v1: unchanged; pins ctr_boost@1, pin_score@1, pin_stats@1, user_stats@1"
            in out.splitlines())
    assert "created    feature service" not in out
    p.backfill("user_stats", START, END)
    p.materialize()
    planned = cli(world, "plan", "signals.py")
    assert ("  feature service ranker v2: new version (pins); pins ctr_boost@1, pin_score@1, pin_stats@1, "
            "user_stats@2 (moved: user_stats@1 -> @2)") in planned.splitlines()
    assert cli(world, "register", "signals.py").count("feature service ranker v2: new version (pins)") == 1

    # a model bundle of ranker@1, as save_bundle writes its manifest (only the JSON is read)
    bundle = world.root / "models" / "taste"
    bundle.mkdir(parents=True)
    bundle.joinpath("bundle.json").write_text(json.dumps({
        "name": "taste", "service": {"name": "ranker", "version": 1, "full_names": True},
        "inputs": [{"column": "clicks", "ref": "user_stats@1:clicks", "role": "request"},
                   {"column": "boost", "ref": "ctr_boost@1:boost", "role": "candidate"}]}))

    text = cli(world, "describe", "ranker")
    assert text.startswith("feature service ranker v2\n")
    for line in ("  logging:     sample rate 1 into ranker__log",
                 "    user_stats:clicks  -> user_stats@2:clicks", "    ctr_boost          -> ctr_boost@1",
                 "    pin_score:score    -> pin_score@1:score",
                 "  pins:        ctr_boost@1, pin_score@1, pin_stats@1, user_stats@2",
                 "    v1: pins ctr_boost@1, pin_score@1, pin_stats@1, user_stats@1; model bundle taste",
                 "    v2 (latest): pins ctr_boost@1, pin_score@1, pin_stats@1, user_stats@2"):
        assert line in text.splitlines(), (line, text)
    d = json.loads(cli(world, "describe", "ranker", "--json"))
    assert d["reads"] == {"ctr_boost": [1], "pin_score": [1], "pin_stats": [1], "user_stats": [2]}

    signal = cli(world, "describe", "user_stats")
    assert "  versions:    v1, v2" in signal.splitlines()
    assert "    v1: feature service ranker@1; model bundle taste" in signal.splitlines()
    assert "    v2: feature service ranker@2 (latest)" in signal.splitlines()
    assert "  read by request-time signals: ctr_boost" in signal.splitlines()
    d = json.loads(cli(world, "describe", "user_stats", "--json"))
    assert d["used_by"] == [
        {"version": 1, "services": [{"name": "ranker", "version": 1, "latest": False}], "bundles": ["taste"]},
        {"version": 2, "services": [{"name": "ranker", "version": 2, "latest": True}], "bundles": []}]
    assert "    v1: feature service ranker@1, ranker@2 (latest); model bundle taste" in cli(
        world, "describe", "ctr_boost").splitlines()
    assert "    v1: feature service ranker@1, ranker@2 (latest)" in cli(world, "describe", "pin_stats").splitlines()


def test_dataset_of_a_service(world: World, tmp_path: Path) -> None:
    spine = spine_of(world.request(30), NOW)
    pq.write_table(spine, tmp_path / "spine.parquet")
    out = cli(world, "dataset", "--spine", str(tmp_path / "spine.parquet"), "--service", "ranker",
              "--out", str(tmp_path / "ranker.parquet"))
    assert "wrote 30 rows x 9 columns" in out
    assert ("  feature service ranker@1: user_stats@1:clicks, ctr_boost@1:boost, ctr_boost@1:long_query, "
            "pin_score@1:score") in out.splitlines()
    written = pq.read_table(tmp_path / "ranker.parquet")
    expected = world.platform.training_dataset(spine, "ranker")
    assert written.replace_schema_metadata(None).equals(expected.replace_schema_metadata(None))

    out = cli(world, "dataset", "--spine", str(tmp_path / "spine.parquet"), "--features", "user_stats:clicks,ctr_boost",
              "--out", str(tmp_path / "list.parquet"))
    assert "wrote 30 rows x 8 columns" in out
    assert pq.read_table(tmp_path / "list.parquet")["boost"].equals(expected["boost"])

    for args in ([], ["--service", "ranker", "--features", "user_stats:clicks"]):
        usage = cli(world, "dataset", "--spine", str(tmp_path / "spine.parquet"), "--out", "x.parquet", *args, code=2)
        assert "exactly one of --features and --service" in usage
    missing = cli(world, "dataset", "--spine", str(tmp_path / "spine.parquet"), "--service", "user_stats",
                  "--out", "x.parquet", code=1)
    assert "no feature service named 'user_stats'; registered: ranker" in missing
