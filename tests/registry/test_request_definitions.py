"""Request-time signals and feature services in the registry: versioned by their code, validated at
registration (a refused registration writes nothing), and a service pinned at registration keeps a model's
inputs when a signal gets a new version, until it is re-registered after the new version serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from fixtures.request_world import END, NOW, START, World, build_world, spine_of
from quasar.registry.records import RegistrationReport
from quasar.signals.errors import RegistrationError

RANKER_PINS = {"ctr_boost": 1, "pin_score": 1, "pin_stats": 1, "user_stats": 1}


@pytest.fixture
def world(tmp_path: Path, project_env: str) -> World:
    return build_world(tmp_path)


def edit(w: World, old: str, new: str) -> None:
    path = w.root / "signals.py"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def change(report: RegistrationReport, name: str) -> tuple[str, int]:
    found = [c for c in report.signals if c.name == name]
    assert len(found) == 1, report.signals
    return found[0].status, found[0].version


def snapshot(w: World) -> Any:
    """Everything a registration can write, as plain data."""
    r = w.platform.registry
    return ([(e.name, e.to_dict()) for e in r.entities()], [s.name for s in r.sources()],
            [(sv.name, sv.version) for sv in r.signals()],
            [(rv.name, rv.version, rv.signal.to_dict()) for rv in r.request_signals()],
            [(sv.name, v.version, v.service.to_dict()) for sv in r.services() for v in r.service_versions(sv.name)])


# --- 1. versioned by code -----------------------------------------------------------------------------------
def test_a_request_time_signal_is_versioned_by_its_code(world: World) -> None:
    p = world.platform
    edit(world, '    """CTR discounted by the slot the item is shown in."""\n    ctr = row["ctr"]',
         '    """CTR discounted by the slot the item is shown in."""\n    # comment\n    ctr = row[ "ctr" ]')
    report = p.register(world.root / "signals.py")
    assert change(report, "ctr_boost") == ("unchanged", 1)
    assert change(report, "ranker") == ("unchanged", 1)

    edit(world, "@on_demand(inputs=[\"user_stats:ctr\", \"user_stats:clicks\"],",
         "@on_demand(owner=\"ads\", inputs=[\"user_stats:ctr\", \"user_stats:clicks\"],")
    report = p.register(world.root / "signals.py")
    assert change(report, "ctr_boost") == ("metadata updated", 1)
    assert [c.changed for c in report.signals if c.name == "ctr_boost"] == [["owner"]]
    assert p.registry.request_signal("ctr_boost").signal.owner == "ads"

    edit(world, "DECAY = 0.5", "DECAY = 0.25")                  # a constant of the module, used by both forms
    report = p.register(world.root / "signals.py")
    assert change(report, "ctr_boost") == ("new version", 2)
    assert [c.changed for c in report.signals if c.name == "ctr_boost"] == [["code"]]
    assert change(report, "pin_score") == ("unchanged", 1)
    assert change(report, "ranker") == ("new version", 2)       # a service reads the newest request-time version
    assert p.registry.service("ranker").service.pins["ctr_boost"] == 2
    assert p.registry.service("ranker", 1).service.pins == RANKER_PINS

    edit(world, "long_query = pc.cast(pc.greater(pc.utf8_length(table[\"query\"]), 8)",
         "long_query = pc.cast(pc.greater(pc.utf8_length(table[\"query\"]), 9)")   # the batch form only
    report = p.register(world.root / "signals.py")
    assert change(report, "ctr_boost") == ("new version", 3)
    assert [rv.version for rv in [p.registry.request_signal("ctr_boost", v) for v in (1, 2, 3)]] == [1, 2, 3]
    assert p.registry.request_signal("ctr_boost", 3).signal.modes == ["row", "batch"]


# --- 2. validation ------------------------------------------------------------------------------------------
HEADER = '''
from quasar.signals import Entity, FeatureService, Float64, Int64, Source, String, on_demand, signal

shop = Entity(name="shop", join_key="shop_id")


@on_demand(request={"n": Int64()}, features={"twice": Int64()})
def fine(row):
    return {"twice": row["n"] * 2}
'''

BAD = {
    "unknown signal": ('''
@on_demand(inputs=["nope:x"], features={"y": Float64()})
def reads_nothing(row):
    return {"y": row["x"]}
''', "request-time signal 'reads_nothing' .* reads 'nope:x', but no signal or request-time signal named 'nope'"),
    "unknown feature": ('''
@on_demand(inputs=["user_stats:nope"], features={"y": Float64()})
def reads_nothing(row):
    return {"y": row["nope"]}
''', "reads 'user_stats:nope', but 'user_stats' has no feature 'nope'; its features: clicks, ctr, country"),
    "request named like a signal": ('''
@on_demand(inputs=["pin_stats:quality"], features={"y": Float64()})
def user_stats(row):
    return {"y": row["quality"]}
''', "request-time signal 'user_stats' .* has the name of a signal"),
    "request named like a service": ('''
@on_demand(inputs=["pin_stats:quality"], features={"y": Float64()})
def ranker(row):
    return {"y": row["quality"]}
''', "request-time signal 'ranker' .* has the name of a registered feature service"),
    "signal named like a service": ('''
src = Source.parquet(name="shops", path="data/shops", timestamp="ts")


@signal(entity=shop, source=src, features={"n": Int64()})
def ranker(batch):
    return batch
''', "signal 'ranker' .* has the name of a registered feature service"),
    "service named like a signal": ('''
pin_stats = FeatureService(name="pin_stats", features=["user_stats:clicks"])
''', "feature service 'pin_stats' .* has the name of a signal"),
    "service named like a request-time signal": ('''
bad = FeatureService(name="ctr_boost", features=["user_stats:clicks"])
''', "feature service 'ctr_boost' .* has the name of a request-time signal"),
    "service reading nothing": ('''
bad = FeatureService(name="broken", features=["user_stats:clicks", "nope"])
''', "feature service 'broken' .* reads 'nope', but no signal or request-time signal named 'nope'"),
    "cycle": ('''
@on_demand(inputs=["b:y"], request={"n": Int64()}, features={"x": Float64()})
def a(row):
    return {"x": row["y"]}


@on_demand(inputs=["a:x"], features={"y": Float64()})
def b(row):
    return {"y": row["x"]}
''', "request-time signals read each other in a cycle: a -> b -> a"),
    "request field types disagree": ('''
@on_demand(inputs=["pin_stats:quality"], request={"position": String()}, features={"y": Float64()})
def by_name(row):
    return {"y": row["quality"]}


both = FeatureService(name="both", features=["ctr_boost", "by_name"])
''', "feature service 'both' .* declare request field 'position' as (int64 and string|string and int64)"),
    "duplicate input names": ('''
@on_demand(inputs=["user_stats:clicks"], request={"clicks": Int64()}, features={"y": Float64()})
def twice(row):
    return {"y": row["clicks"]}
''', r"extra\.py:\d+: request-time signal 'twice': 'clicks' names two inputs"),
    "neither inputs nor request fields": ('''
@on_demand(features={"y": Float64()})
def constant(row):
    return {"y": 1.0}
''', r"extra\.py:\d+: request-time signal 'constant': give it inputs or request fields"),
}


def test_a_bad_definition_is_refused_naming_the_problem_and_writes_nothing(world: World) -> None:
    path = world.root / "extra.py"
    before = snapshot(world)
    for case in sorted(BAD):                                   # one world for all: each must leave it as it was
        body, problem = BAD[case]
        path.write_text(HEADER + body)
        with pytest.raises(RegistrationError, match=problem):
            world.platform.register(path)
        with pytest.raises(RegistrationError, match=problem):
            world.platform.plan(path)
        assert snapshot(world) == before, case
    path.write_text(HEADER)                                    # the same module, fixed, registers
    report = world.platform.register(path)
    assert change(report, "fine") == ("new", 1)
    assert snapshot(world) != before


def test_a_cycle_through_a_registered_request_time_signal_is_refused(world: World) -> None:
    p = world.platform
    (world.root / "first.py").write_text('''
from quasar.signals import Float64, on_demand


@on_demand(inputs=["ctr_boost:boost"], features={"z": Float64()})
def upper(row):
    return {"z": row["boost"]}
''')
    p.register(world.root / "first.py")
    edit(world, 'inputs=["user_stats:ctr", "user_stats:clicks"]', 'inputs=["user_stats:ctr", "user_stats:clicks", "upper:z"]')
    before = snapshot(world)
    with pytest.raises(RegistrationError, match="cycle: ctr_boost -> upper -> ctr_boost"):
        p.register(world.root / "signals.py")
    assert snapshot(world) == before


# --- 3. services pin at registration ------------------------------------------------------------------------
def test_a_service_keeps_its_pins_until_it_is_registered_again(world: World) -> None:
    p = world.platform
    request = world.request(60)
    spine = spine_of(request, NOW)
    entities = {k: request[k] for k in ("user_id", "pin_id")}
    fields = {k: request[k] for k in ("position", "query")}
    before = p.dataset(spine, "ranker")
    online_before = p.online_features(entities, "ranker", request_data=fields)
    plain_before = p.dataset(spine, ["user_stats:clicks"])
    assert before.features["clicks"] == "user_stats@1:clicks"
    assert before.features["boost"] == "ctr_boost@1:boost" and before.features["score"] == "pin_score@1:score"
    assert p.registry.service("ranker").service.pins == RANKER_PINS      # pin_stats: an input of pin_score
    assert pc.sum(pc.is_valid(before.table["clicks"])).as_py() > 10

    # a new version of user_stats (its code changed): clicks x 10
    edit(world, '''def user_stats(batch: pa.Table) -> pa.Table:
    """Source rows as they are."""
    return batch.rename_columns(["event_timestamp" if c == "ts" else c for c in batch.column_names])''',
         '''def user_stats(batch: pa.Table) -> pa.Table:
    """Source rows, ten times the clicks."""
    out = batch.rename_columns(["event_timestamp" if c == "ts" else c for c in batch.column_names])
    return out.set_column(out.schema.get_field_index("clicks"), "clicks", pc.multiply(out["clicks"], 10))''')
    report = p.register(world.root / "signals.py")
    assert change(report, "user_stats") == ("new version", 2)
    assert change(report, "ranker") == ("unchanged", 1)
    assert p.dataset(spine, ["user_stats:clicks"]).features == {"clicks": "user_stats@1:clicks"}  # serving: v1

    p.backfill("user_stats", START, END)
    p.materialize()
    plain = p.dataset(spine, ["user_stats:clicks"])
    assert plain.features == {"clicks": "user_stats@2:clicks"}              # unpinned: the new serving version
    assert plain.table["clicks"].to_pylist() == [None if v is None else v * 10
                                                 for v in plain_before.table["clicks"].to_pylist()]
    kept = p.dataset(spine, "ranker")                                        # the service: still v1
    assert kept.features == before.features and kept.table.equals(before.table)
    assert p.training_dataset(spine, "ranker").equals(before.table)
    assert p.online_features(entities, "ranker", request_data=fields) == online_before

    report = p.register(world.root / "signals.py")                           # re-pinned: a new service version
    assert change(report, "ranker") == ("new version", 2)
    assert [c.note for c in report.signals if c.name == "ranker"] == [
        "pins ctr_boost@1, pin_score@1, pin_stats@1, user_stats@2 (moved: user_stats@1 -> @2)"]
    assert p.registry.service("ranker").service.pins == {**RANKER_PINS, "user_stats": 2}
    now = p.dataset(spine, "ranker")
    assert now.features["clicks"] == "user_stats@2:clicks"
    assert now.table["clicks"].equals(plain.table["clicks"])
    assert now.table["boost"] != before.table["boost"]                       # ctr_boost reads user_stats@2 now
    old = p.dataset(spine, "ranker@1")                                       # the old version: the old pins
    assert old.features == before.features and old.table.equals(before.table)
    assert p.online_features(entities, "ranker@1", request_data=fields) == online_before
    assert p.online_features(entities, "ranker", request_data=fields) != online_before


def test_a_service_pins_the_inputs_of_an_older_request_time_version(world: World) -> None:
    p = world.platform
    edit(world, "DECAY = 0.5", "DECAY = 0.25")
    p.register(world.root / "signals.py")                                   # ctr_boost v2
    (world.root / "legacy.py").write_text('''
from quasar.signals import FeatureService

legacy = FeatureService(name="legacy", features=["ctr_boost@1:boost", "pin_stats"])
''')
    report = p.register(world.root / "legacy.py")
    assert change(report, "legacy") == ("new", 1)
    # ctr_boost@1 reads user_stats unpinned: the service pins it, as it pins the inputs of a latest version
    assert p.registry.service("legacy").service.pins == {"pin_stats": 1, "user_stats": 1}
