"""Registering modules: what gets recorded, versioning, idempotence, lineage, on SQLite and PostgreSQL."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from fixtures.registry_db import dump_tables, example_module, write_module
from quasar.describe import describe_signal
from quasar.registry import Registry
from quasar.registry.db import normalize_url
from quasar.registry.models import signal_versions
from quasar.signals import Entity, Float64, Int64, Source, signal
from quasar.signals.errors import NotFoundError

EVERYTHING = ["entity user", "source events", "source user_activity_output", "signal user_activity v1",
              "signal user_clicks v1", "signal user_score v1"]


@pytest.fixture
def registry(registry_url: str) -> Iterator[Registry]:
    reg = Registry.open(registry_url)
    yield reg
    reg.close()


def test_register_a_module_records_entities_sources_and_signals(registry: Registry, tmp_path: Path) -> None:
    path = write_module(tmp_path / "proj" / "engagement.py", example_module())
    report = registry.register(path)
    assert report.module == str(path)
    assert sorted(report.created) == sorted(EVERYTHING)
    assert report.updated == [] and report.unchanged == []

    assert [e.name for e in registry.entities()] == ["user"]
    assert registry.entity("user") == Entity(name="user", join_key="user_id", description="A person using the app.")
    assert [s.name for s in registry.sources()] == ["events", "user_activity_output"]
    assert registry.source("events") == Source.parquet(name="events", path="data/events", timestamp="ts")
    assert registry.source("user_activity_output").upstream == "user_activity"

    listed = registry.signals()
    assert [(sv.name, sv.version, sv.is_latest) for sv in listed] == [
        ("user_activity", 1, True), ("user_clicks", 1, True), ("user_score", 1, True)]
    clicks = registry.signal("user_clicks")
    sig = clicks.signal
    assert sig.kind == "transform" and sig.owner == "growth" and sig.online is True
    assert sig.ttl == timedelta(days=7) and sig.module == str(path)
    assert sig.description == "Clicks and scaled dwell per event."
    assert sig.schema.names == ["clicks", "dwell"] and sig.transform is None
    assert "pc.multiply(batch['dwell_s'], 1.0)" in sig.code          # normalised code: quotes as ast.unparse writes them
    activity = registry.signal("user_activity").signal
    assert activity.kind == "aggregation" and activity.step == timedelta(days=1)
    assert [a.name for a in activity.aggregations] == ["events_1d", "dwell_7d"]
    assert clicks.created_at.tzinfo is not None


def test_a_version_row_keeps_definition_schema_fingerprints_and_lineage_fields(registry: Registry,
                                                                              registry_url: str,
                                                                              tmp_path: Path) -> None:
    registry.register(write_module(tmp_path / "engagement.py", example_module()))
    sig = registry.signal("user_score").signal
    engine = create_engine(normalize_url(registry_url))
    with engine.connect() as conn:
        row = conn.execute(select(signal_versions).where(signal_versions.c.signal_name == "user_score")).one()
    engine.dispose()
    assert row.version == 1 and row.kind == "transform"
    assert row.definition == {**sig.to_dict(), "fingerprint_scheme": 2}     # quasar.registry.schemes.SCHEME
    assert row.schema == sig.schema.to_dict()
    assert row.schema_fingerprint == sig.schema.fingerprint_hex
    assert row.code_fingerprint == sig.code_fingerprint
    assert row.definition_fingerprint == sig.definition_fingerprint
    assert row.owner == "" and row.ttl_seconds == 2 * 86400 and row.online is False
    assert row.upstream == ["user_activity"] and row.module == str(tmp_path / "engagement.py")
    assert row.entity_name == "user" and row.source_name == "user_activity_output"


def test_describe_shows_schema_versions_lineage_and_runs(registry: Registry, tmp_path: Path) -> None:
    registry.register(write_module(tmp_path / "engagement.py", example_module()))
    run = registry.start_run(signal="user_score", version=1, kind="backfill")
    registry.finish_run(run, status="succeeded", rows=10, snapshot_id=77)
    d = describe_signal(registry, "user_score")
    assert d["name"] == "user_score" and d["version"] == 1 and d["kind"] == "transform"
    assert d["schema"] == [{"name": "score", "type": str(Float64())}]
    assert d["upstream"] == ["user_activity"] and d["downstream"] == []
    assert [v["version"] for v in d["versions"]] == [1]
    assert [(r["id"], r["status"], r["rows"], r["snapshot_id"]) for r in d["runs"]] == [(run, "succeeded", 10, 77)]


def test_register_a_folder_with_sibling_imports(registry: Registry, tmp_path: Path) -> None:
    folder = tmp_path / "project"
    write_module(folder / "entities.py", 'from quasar.signals import Entity, Source\n'
                 'user = Entity(name="user", join_key="user_id")\n'
                 'events = Source.parquet(name="events", path="data/events", timestamp="ts")\n')
    stats = write_module(folder / "stats.py", 'from entities import events, user\n'
                         'from quasar.signals import aggregate, count\n'
                         'user_count = aggregate(name="user_count", entity=user, source=events, step="1d",\n'
                         '                       aggregations=[count("1d", name="n_1d")])\n')
    write_module(folder / "_private.py", "raise RuntimeError('underscore files are not registered')\n")
    report = registry.register("project", root=tmp_path)
    assert report.module == str(folder.resolve())
    assert sorted(report.created) == ["entity user", "signal user_count v1", "source events"]
    assert registry.signal("user_count").signal.module == str(stats)
    assert registry.register(folder).created == []


def test_a_signal_imported_from_a_sibling_keeps_its_own_file(registry: Registry, tmp_path: Path) -> None:
    base = write_module(tmp_path / "p" / "base.py", example_module())
    write_module(tmp_path / "p" / "more.py", "from base import user, events, user_clicks, user_activity\n")
    report = registry.register(tmp_path / "p")
    assert sorted(report.created) == sorted(EVERYTHING)
    assert registry.signal("user_clicks").signal.module == str(base)
    assert registry.signal("user_activity").signal.module == str(base)
    assert registry.load_signal("user_clicks").signal.transform is not None


def test_register_by_module_name(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(tmp_path / "mods" / "quasar_example_mod.py", example_module())
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    report = registry.register("quasar_example_mod", root=tmp_path)
    assert report.module == "quasar_example_mod" and sorted(report.created) == sorted(EVERYTHING)
    assert registry.signal("user_clicks").signal.module == "quasar_example_mod"
    assert registry.load_signal("user_clicks").signal.transform is not None
    assert registry.register("quasar_example_mod").created == []


def test_changed_code_makes_a_new_version_and_the_old_one_stays_readable(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)   # same-size edits below: no stale .pyc
    path = write_module(tmp_path / "engagement.py", example_module())
    registry.register(path)
    v1 = registry.signal("user_clicks").signal

    write_module(path, example_module(factor="2.0"))
    report = registry.register(path)
    assert report.created == ["signal user_clicks v2"] and report.updated == []
    assert sorted(report.unchanged) == sorted(set(EVERYTHING) - {"signal user_clicks v1"})
    v2 = registry.signal("user_clicks")
    assert v2.version == 2 and v2.is_latest and v2.signal.schema == v1.schema
    assert v2.signal.code_fingerprint != v1.code_fingerprint

    write_module(path, example_module(factor="2.0", extra_feature=True))
    assert registry.register(path).created == ["signal user_clicks v3"]
    assert registry.signal("user_clicks").signal.schema.names == ["clicks", "dwell", "seen"]

    old = registry.signal("user_clicks", version=1)
    assert old.version == 1 and not old.is_latest
    assert old.signal.schema.names == ["clicks", "dwell"] and old.signal.schema.fingerprint == v1.schema.fingerprint
    assert "1.0" in old.signal.code and old.signal.definition_fingerprint == v1.definition_fingerprint
    assert [(v.version, v.is_latest) for v in registry.versions("user_clicks")] == [(1, False), (2, False), (3, True)]
    assert [sv.version for sv in registry.signals() if sv.name == "user_clicks"] == [3]


def test_an_owner_change_updates_the_latest_version_in_place(registry: Registry, tmp_path: Path) -> None:
    path = write_module(tmp_path / "engagement.py", example_module())
    registry.register(path)
    before = registry.signal("user_clicks")
    write_module(path, example_module(owner="ranking"))
    report = registry.register(path)
    assert report.updated == ["signal user_clicks v1"] and report.created == []
    after = registry.signal("user_clicks")
    assert after.version == 1 and after.signal.owner == "ranking" and after.created_at == before.created_at
    assert after.signal.definition_fingerprint == before.signal.definition_fingerprint
    assert len(registry.versions("user_clicks")) == 1


def test_registering_the_same_module_twice_changes_no_row(registry: Registry, registry_url: str,
                                                          tmp_path: Path) -> None:
    path = write_module(tmp_path / "engagement.py", example_module())
    registry.register(path)
    before = dump_tables(registry_url)
    report = registry.register(path)
    assert report.created == [] and report.updated == []
    assert sorted(report.unchanged) == sorted(EVERYTHING)
    assert dump_tables(registry_url) == before


def test_lineage_upstream_and_downstream(registry: Registry, tmp_path: Path) -> None:
    registry.register(write_module(tmp_path / "engagement.py", example_module()))
    assert registry.upstream("user_score") == ["user_activity"]
    assert registry.downstream("user_activity") == ["user_score"]
    assert registry.upstream("user_clicks") == [] and registry.downstream("user_clicks") == []
    with pytest.raises(NotFoundError, match="no signal named 'nope'"):
        registry.downstream("nope")


def test_unknown_names_say_what_exists(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no signals are registered"):
        registry.signal("user_clicks")
    registry.register(write_module(tmp_path / "engagement.py", example_module()))
    with pytest.raises(NotFoundError, match="registered signals: user_activity, user_clicks, user_score"):
        registry.signal("user_click")
    with pytest.raises(NotFoundError, match="signal 'user_clicks' has no version 4; it has v1"):
        registry.signal("user_clicks", version=4)
    with pytest.raises(NotFoundError, match="no entity named 'pin'; registered entities: user"):
        registry.entity("pin")
    with pytest.raises(NotFoundError, match="no source named 'x'; registered sources: events, user_activity_output"):
        registry.source("x")


def test_register_definitions_takes_built_objects(registry: Registry) -> None:
    user = Entity(name="user", join_key="user_id")
    events = Source.parquet(name="events", path="data/events", timestamp="ts")

    @signal(entity=user, source=events, features={"clicks": Int64()})
    def clicks(batch):  # type: ignore[no-untyped-def]
        return batch

    report = registry.register_definitions([user], [events], [clicks], module="notebook")
    assert report.module == "notebook"
    assert sorted(report.created) == ["entity user", "signal clicks v1", "source events"]
    assert registry.register_definitions([user], [events], [clicks], module="notebook").created == []


def test_racing_registrations_make_one_version(registry_url: str, tmp_path: Path) -> None:
    path = write_module(tmp_path / "engagement.py", example_module())
    with Registry.open(registry_url) as first:
        first.register(path)
    write_module(path, example_module(factor="3.0"))
    registries = [Registry.open(registry_url) for _ in range(4)]
    barrier = threading.Barrier(len(registries))
    reports, errors = [], []

    def go(reg: Registry) -> None:
        barrier.wait()
        try:
            reports.append(reg.register(path))
        except Exception as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(r,)) for r in registries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in registries:
        r.close()
    assert errors == []
    assert sum(rep.created == ["signal user_clicks v2"] for rep in reports) == 1
    with Registry.open(registry_url) as check:
        assert [v.version for v in check.versions("user_clicks")] == [1, 2]


def test_open_creates_the_folder_of_a_relative_sqlite_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    reg = Registry.open("sqlite:///rel/deeper/registry.db")
    reg.set_state("k", {"v": 1})
    reg.close()
    assert (tmp_path / "rel" / "deeper" / "registry.db").is_file()
    with Registry.open("sqlite:///rel/deeper/registry.db") as again:
        assert again.get_state("k") == {"v": 1}


def test_an_edited_sibling_is_imported_fresh(registry: Registry, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)   # a cached .pyc must not be served stale
    folder = tmp_path / "fresh"
    entities = ('from quasar.signals import Entity, Source\n'
                'user = Entity(name="user", join_key="user_id", description="@DESC@")\n'
                'events = Source.parquet(name="events", path="data/events", timestamp="ts")\n')
    write_module(folder / "entities.py", entities.replace("@DESC@", "A person."))
    stats = write_module(folder / "stats.py", 'from entities import events, user\n'
                         'from quasar.signals import aggregate, count\n'
                         'n = aggregate(name="n", entity=user, source=events, step="1d",\n'
                         '              aggregations=[count("1d", name="n_1d")])\n')
    registry.register(stats)
    assert "entities" not in sys.modules
    write_module(folder / "entities.py", entities.replace("@DESC@", "A People."))   # same size, same second
    report = registry.register(stats)
    assert report.updated == ["entity user", "signal n v1"] and report.created == []   # a description: metadata
    assert registry.entity("user").description == "A People."
    assert registry.signal("n").signal.entity.description == "A People."
