"""Registering by meaning: what a registration reports per signal (unchanged, metadata updated, new version N and
what it needs before it serves), descriptions updated in place, serving versions and promotion, and registries
written before versions by meaning (fingerprint scheme 1)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, update

from fixtures.registry_db import write_module
from quasar.registry import Registry
from quasar.registry.db import normalize_url
from quasar.registry.models import signal_versions
from quasar.signals.errors import NotFoundError

MODULE = '''\
import pyarrow as pa
import pyarrow.compute as pc

from quasar.signals import Entity, Float64, Source, signal

user = Entity(name="user", join_key="user_id", description="@ENTITY_DESC@")
events = Source.parquet(name="events", path="data/events", timestamp="ts", description="@SOURCE_DESC@")


@signal(entity=user, source=events, ttl="7d", online=True, owner="@OWNER@", features={"dwell": Float64()})
def user_dwell(batch: pa.Table) -> pa.Table:
    """@DOC@"""
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"], "dwell": scale(batch["dwell_s"])})


@signal(entity=user, source=events, features={"n": Float64()})
def user_offline(batch: pa.Table) -> pa.Table:
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"], "n": batch["dwell_s"]})


def scale(column):  # defined below the signal that uses it: registration still sees it
    @COMMENT@
    return pc.multiply(column, FACTOR)


FACTOR = @FACTOR@
'''

DEFAULTS = {"ENTITY_DESC": "A person.", "SOURCE_DESC": "Raw events.", "OWNER": "growth", "DOC": "Dwell.",
            "COMMENT": "# scale dwell", "FACTOR": "1.5"}


def module(tmp_path: Path, **changes: str) -> Path:
    text = MODULE
    for key, value in {**DEFAULTS, **changes}.items():
        text = text.replace(f"@{key}@", value)
    return write_module(tmp_path / "signals" / "dwell.py", text)


@pytest.fixture
def registry(registry_url: str) -> Iterator[Registry]:
    """A registry on SQLite and on PostgreSQL (fixtures.registry_db)."""
    reg = Registry.open(registry_url)
    yield reg
    reg.close()


def change(report, name: str):  # type: ignore[no-untyped-def]
    [found] = [c for c in report.signals if c.name == name]
    return found


def test_a_first_registration_says_what_each_signal_needs(registry: Registry, tmp_path: Path) -> None:
    report = registry.register(module(tmp_path))
    dwell, offline = change(report, "user_dwell"), change(report, "user_offline")
    assert (dwell.status, dwell.version, dwell.needs) == ("new", 1, ["backfill", "materialize"])
    assert (offline.status, offline.version, offline.needs) == ("new", 1, ["backfill"])
    assert "user_dwell v1: new; needs backfill, materialize" in dwell.summary


def test_comments_docstrings_and_formatting_change_nothing(registry: Registry, tmp_path: Path) -> None:
    registry.register(module(tmp_path))
    report = registry.register(module(tmp_path, COMMENT="# another comment\n    # and one more"))
    assert (change(report, "user_dwell").status, change(report, "user_dwell").version) == ("unchanged", 1)
    assert [v.version for v in registry.versions("user_dwell")] == [1]


def test_a_docstring_change_is_metadata_updated_in_place(registry: Registry, tmp_path: Path) -> None:
    registry.register(module(tmp_path))
    report = registry.register(module(tmp_path, DOC="Dwell, in seconds.", OWNER="ranking"))
    dwell = change(report, "user_dwell")
    assert (dwell.status, dwell.version, dwell.needs) == ("metadata updated", 1, [])
    assert dwell.changed == ["description", "owner"]
    sv = registry.signal("user_dwell")
    assert sv.version == 1 and sv.signal.description == "Dwell, in seconds." and sv.signal.owner == "ranking"


def test_a_changed_helper_constant_defined_below_the_signal_is_a_new_version(registry: Registry,
                                                                                tmp_path: Path) -> None:
    registry.register(module(tmp_path))
    report = registry.register(module(tmp_path, FACTOR="2.0"))
    dwell = change(report, "user_dwell")
    assert (dwell.status, dwell.version, dwell.needs) == ("new version", 2, ["backfill", "materialize"])
    assert change(report, "user_offline").status == "unchanged"
    assert "FACTOR = 2.0" in registry.signal("user_dwell").signal.code
    assert "FACTOR = 1.5" in registry.signal("user_dwell", 1).signal.code
    assert "serving stays v1" in dwell.summary


def test_entity_and_source_descriptions_update_metadata_not_versions(registry: Registry, tmp_path: Path) -> None:
    registry.register(module(tmp_path))
    report = registry.register(module(tmp_path, ENTITY_DESC="Someone who uses the app.",
                                      SOURCE_DESC="Click and view events."))
    assert "entity user" in report.updated and "source events" in report.updated
    for name in ("user_dwell", "user_offline"):
        c = change(report, name)
        assert (c.status, c.version) == ("metadata updated", 1)
        assert c.changed == ["entity description", "source description"]
    assert registry.entity("user").description == "Someone who uses the app."
    sv = registry.signal("user_dwell")
    assert sv.version == 1 and sv.signal.entity.description == "Someone who uses the app."
    assert sv.signal.source.description == "Click and view events."
    assert registry.load_signal("user_dwell").signal.transform is not None


def _finish(registry: Registry, name: str, version: int, kind: str, status: str = "succeeded") -> None:
    run = registry.start_run(signal=name, version=version, kind=kind)
    registry.finish_run(run, status=status)


def test_serving_version_is_the_newest_completed_or_the_promoted_one(registry: Registry, tmp_path: Path) -> None:
    registry.register(module(tmp_path))
    assert registry.serving("user_dwell").version == 1            # nothing completed: the newest
    assert registry.serving("user_dwell").reason == "newest version (none has completed backfill and materialize)"
    registry.register(module(tmp_path, FACTOR="2.0"))
    assert registry.serving("user_dwell").version == 2
    _finish(registry, "user_dwell", 1, "backfill")
    assert registry.serving("user_dwell").reason == "newest version with a backfill completed (materialize pending)"
    assert registry.serving("user_dwell").version == 1            # offline data beats none
    _finish(registry, "user_dwell", 1, "materialize")
    serving = registry.serving("user_dwell")
    assert (serving.version, serving.reason) == (1, "newest version with backfill and materialize completed")
    assert registry.resolve("user_dwell").version == 1 and registry.resolve("user_dwell", 2).version == 2
    _finish(registry, "user_dwell", 2, "backfill")
    assert registry.serving("user_dwell").version == 1            # v2 is online: it needs a materialize too
    _finish(registry, "user_dwell", 2, "materialize", status="failed")
    assert registry.serving("user_dwell").version == 1            # a failed run completes nothing
    _finish(registry, "user_dwell", 2, "materialize")
    assert registry.serving("user_dwell").version == 2
    promoted = registry.promote("user_dwell", 1)
    assert (promoted.version, promoted.reason, promoted.promoted) == (1, "promoted", True)
    assert registry.resolve("user_dwell").version == 1
    registry.register(module(tmp_path, FACTOR="3.0"))
    _finish(registry, "user_dwell", 3, "backfill")
    _finish(registry, "user_dwell", 3, "materialize")
    assert registry.serving("user_dwell").version == 1            # a promotion holds until the next one
    assert registry.promote("user_dwell", None).version == 3      # back to automatic
    assert registry.serving_versions()["user_dwell"].version == 3


def test_an_offline_signal_serves_once_backfilled(registry: Registry, tmp_path: Path) -> None:
    registry.register(module(tmp_path))
    _finish(registry, "user_offline", 1, "backfill")
    assert registry.serving("user_offline").reason == "newest version with backfill completed"


def test_promoting_a_version_that_does_not_exist_names_what_does(registry: Registry, tmp_path: Path) -> None:
    registry.register(module(tmp_path))
    with pytest.raises(NotFoundError, match="signal 'user_dwell' has no version 4; it has v1"):
        registry.promote("user_dwell", 4)
    with pytest.raises(NotFoundError, match="no signal named 'nope'"):
        registry.promote("nope", 1)


# --- registries written before versions by meaning ----------------------------------------------------------
def _legacy_hash(*parts: object) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _make_legacy(url: str, name: str, raw_code: str) -> None:
    """Rewrite the latest row of ``name`` as the previous quasar wrote it: the transform's raw text as code, no
    fingerprint scheme, and the fingerprint hashed over the full entity and source dicts."""
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        row = conn.execute(select(signal_versions).where(signal_versions.c.signal_name == name)).one()
        definition = {k: v for k, v in row.definition.items() if k not in ("fingerprint_scheme", "scope")}
        definition["code"] = raw_code
        code_fp = _legacy_hash(raw_code)
        fp = _legacy_hash(row.schema_fingerprint, code_fp, definition["entity"], definition["source"], None)
        conn.execute(update(signal_versions).where(signal_versions.c.id == row.id).values(
            definition=definition, code_fingerprint=code_fp, definition_fingerprint=fp))
    engine.dispose()


LEGACY_CODE = '''def user_dwell(batch: pa.Table) -> pa.Table:
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"], "dwell": scale(batch["dwell_s"])})
'''


def test_a_legacy_row_is_restamped_in_place_when_nothing_changed(registry: Registry, tmp_path: Path) -> None:
    registry.register(module(tmp_path))
    _make_legacy(registry.url, "user_dwell", LEGACY_CODE)
    assert registry.load_signal("user_dwell").signal.transform is not None      # still loads before re-stamping
    report = registry.register(module(tmp_path, ENTITY_DESC="Another description."))
    dwell = change(report, "user_dwell")
    assert (dwell.status, dwell.version, dwell.changed) == ("metadata updated", 1, ["entity description"])
    assert dwell.summary == "user_dwell v1: metadata updated (entity description); re-stamped with fingerprint scheme 2"
    assert "FACTOR = 1.5" in registry.signal("user_dwell").signal.code
    again = change(registry.register(module(tmp_path, ENTITY_DESC="Another description.")), "user_dwell")
    assert again.status == "unchanged"


def test_a_legacy_row_still_gets_a_new_version_when_the_transform_changed(registry: Registry,
                                                                           tmp_path: Path) -> None:
    registry.register(module(tmp_path))
    _make_legacy(registry.url, "user_dwell", LEGACY_CODE.replace('batch["ts"]', 'batch["other_ts"]'))
    dwell = change(registry.register(module(tmp_path)), "user_dwell")
    assert (dwell.status, dwell.version) == ("new version", 2)


SIBLING_SIGNAL = '''\
import pyarrow as pa

import helpers
from helpers import shift
from quasar.signals import Entity, Float64, Source, signal

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")


@signal(entity=user, source=events, features={"a": Float64(), "b": Float64()})
def user_helped(batch: pa.Table) -> pa.Table:
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"],
                     "a": helpers.scale(batch["dwell_s"]), "b": shift(batch["dwell_s"])})
'''

HELPERS = '''\
import pyarrow.compute as pc

SCALE = @SCALE@
SHIFT = @SHIFT@


def scale(column):
    return pc.multiply(column, SCALE)


def shift(column):
    return pc.add(column, SHIFT)
'''


@pytest.mark.parametrize("changed", ["SCALE", "SHIFT"])
def test_helpers_in_a_sibling_module_are_part_of_the_version(registry: Registry, tmp_path: Path,
                                                             changed: str) -> None:
    """``import helpers; helpers.scale(...)`` and ``from helpers import shift`` alike: the sibling's code and
    constants count, as the transform's own module's do."""
    folder = tmp_path / "sibling"
    target = write_module(folder / "helped.py", SIBLING_SIGNAL)

    def helpers(scale: str = "2", shift: str = "1") -> None:
        write_module(folder / "helpers.py", HELPERS.replace("@SCALE@", scale).replace("@SHIFT@", shift))

    helpers()
    registry.register(target)
    assert change(registry.register(target), "user_helped").status == "unchanged"
    helpers(**{changed.lower(): "5"})
    assert (change(registry.register(target), "user_helped").status, registry.signal("user_helped").version) == (
        "new version", 2)


def test_turning_a_signal_online_is_metadata_that_needs_a_materialize(registry: Registry, tmp_path: Path) -> None:
    path = module(tmp_path)
    registry.register(path)
    path.write_text(path.read_text().replace('features={"n": Float64()}', 'online=True, features={"n": Float64()}'))
    offline = change(registry.register(path), "user_offline")
    assert (offline.status, offline.version, offline.changed, offline.needs) == (
        "metadata updated", 1, ["online"], ["materialize"])
