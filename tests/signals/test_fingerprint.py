"""Versions by meaning: a signal's fingerprint covers what it computes (the transform's normalised code, the
module-level helpers and constants it uses, its features, entity and source identity, its aggregations),
and nothing it merely says about itself (comments, docstrings, formatting, descriptions, owner)."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from types import ModuleType

import pyarrow as pa
import pytest

from quasar.signals import Entity, Float64, Int64, Signal, Source, aggregate, count, mean, signal
from quasar.signals.signal import transform_code

_COUNTER = itertools.count()

MODULE = '''\
"""A signal module: a transform that uses a helper, which uses a constant and another helper."""

import pyarrow as pa
import pyarrow.compute as pc

from quasar.signals import Entity, Float64, Source, signal

user = Entity(name="user", join_key="user_id", description="@ENTITY_DESC@")
events = Source.parquet(name="events", path="data/events", timestamp="ts", description="@SOURCE_DESC@")
FACTOR = @FACTOR@
UNUSED = @UNUSED@
WEIGHTS = {"a": 1, "b": (2, 3)}


def offset():
    return @OFFSET@


def scale(column):
    """Scale a column by FACTOR and shift it."""
    return pc.add(pc.multiply(column, FACTOR), offset() + WEIGHTS["a"])


@signal(entity=user, source=events, owner="@OWNER@", features={"dwell": Float64()})
def user_dwell(batch: pa.Table) -> pa.Table:
    """@DOC@"""
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"], "dwell": scale(batch["dwell_s"])})
'''

REFORMATTED = '''\
"""The same module, reformatted: comments, blank lines, other docstrings, wrapped lines, no annotations."""

import pyarrow as pa
import pyarrow.compute as pc

from quasar.signals import Entity, Float64, Source, signal

user = Entity(name="user", join_key="user_id", description="@ENTITY_DESC@")
events = Source.parquet(name="events", path="data/events", timestamp="ts", description="@SOURCE_DESC@")
FACTOR = @FACTOR@   # how much dwell counts
UNUSED = @UNUSED@
WEIGHTS = {"a": 1, "b": (2, 3)}


def offset():
    # a comment
    return (@OFFSET@)


def scale(column):
    """Another docstring,
    over two lines."""

    return pc.add(pc.multiply(column,
                              FACTOR),      # trailing comment
                  offset() + WEIGHTS['a'])


@signal(entity=user, source=events, owner="@OWNER@",
        features={"dwell": Float64()})
def user_dwell(batch):
    """@DOC@"""
    # build the output
    return pa.table({
        "user_id": batch["user_id"],
        "event_timestamp": batch["ts"],
        "dwell": scale(batch["dwell_s"]),
    })
'''

DEFAULTS = {"ENTITY_DESC": "A person.", "SOURCE_DESC": "Raw events.", "FACTOR": "1.5", "UNUSED": "7",
            "OFFSET": "1", "OWNER": "growth", "DOC": "Dwell, scaled."}


def load(tmp_path: Path, template: str = MODULE, **changes: str) -> ModuleType:
    """Write the module with ``changes`` to its placeholders and import it under a fresh name."""
    text = template
    for key, value in {**DEFAULTS, **changes}.items():
        text = text.replace(f"@{key}@", value)
    name = f"fp_module_{next(_COUNTER)}"
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dwell(tmp_path: Path, template: str = MODULE, **changes: str) -> Signal:
    sig = load(tmp_path, template, **changes).user_dwell
    assert isinstance(sig, Signal)
    return sig


def test_comments_whitespace_docstrings_and_annotations_keep_the_version(tmp_path: Path) -> None:
    base = dwell(tmp_path)
    again = dwell(tmp_path, REFORMATTED, DOC="Another description entirely.")
    assert again.description == "Another description entirely."
    assert again.code == base.code
    assert again.code_fingerprint == base.code_fingerprint
    assert again.definition_fingerprint == base.definition_fingerprint


def test_a_changed_module_constant_makes_a_new_version(tmp_path: Path) -> None:
    base = dwell(tmp_path)
    changed = dwell(tmp_path, FACTOR="2.5")
    assert changed.code_fingerprint != base.code_fingerprint
    assert changed.definition_fingerprint != base.definition_fingerprint
    assert "FACTOR = 2.5" in changed.code


def test_a_changed_helper_function_makes_a_new_version_transitively(tmp_path: Path) -> None:
    base = dwell(tmp_path)
    changed = dwell(tmp_path, OFFSET="2")               # offset() is used by scale(), used by the transform
    assert changed.definition_fingerprint != base.definition_fingerprint
    assert "def offset" in changed.code and "def scale" in changed.code


def test_names_the_transform_does_not_use_are_not_part_of_it(tmp_path: Path) -> None:
    base = dwell(tmp_path)
    assert dwell(tmp_path, UNUSED="8").definition_fingerprint == base.definition_fingerprint
    assert "UNUSED" not in base.code


def test_imported_modules_count_by_name(tmp_path: Path) -> None:
    code = dwell(tmp_path).code
    assert "pyarrow.compute" in code and "import pyarrow as pa" in code


def test_descriptions_and_owner_are_metadata_not_version(tmp_path: Path) -> None:
    base = dwell(tmp_path)
    other = dwell(tmp_path, ENTITY_DESC="Someone who uses the app.", SOURCE_DESC="Click events.", OWNER="ranking")
    assert other.entity.description == "Someone who uses the app." and other.owner == "ranking"
    assert other.definition_fingerprint == base.definition_fingerprint


def test_the_stored_code_gives_the_same_fingerprint_after_a_round_trip(tmp_path: Path) -> None:
    sig = dwell(tmp_path)
    again = Signal.from_dict(sig.to_dict())
    assert again.code == sig.code and again.definition_fingerprint == sig.definition_fingerprint


def test_entity_and_source_identity_still_make_a_new_version() -> None:
    ev = Source.parquet(name="events", path="data/events", timestamp="ts")

    def f(batch: pa.Table) -> pa.Table:
        return batch

    def make(entity: Entity, source: Source) -> Signal:
        return signal(entity=entity, source=source, name="s", features={"x": Int64()})(f)

    base = make(Entity(name="user", join_key="user_id"), ev)
    assert make(Entity(name="user", join_key="uid"), ev).definition_fingerprint != base.definition_fingerprint
    moved = Source.parquet(name="events", path="data/other", timestamp="ts")
    assert make(Entity(name="user", join_key="user_id"), moved).definition_fingerprint != base.definition_fingerprint


def test_aggregation_versions_follow_their_definitions_not_descriptions() -> None:
    ev = Source.parquet(name="events", path="data/events", timestamp="ts", description="one")

    def make(entity_desc: str = "", source: Source = ev, window: str = "7d", desc: str = "") -> Signal:
        return aggregate(name="a", entity=Entity(name="user", join_key="user_id", description=entity_desc),
                         source=source, step="1d", description=desc,
                         aggregations=[count("1d"), mean("dwell", window)])

    base = make()
    same = make("someone", Source.parquet(name="events", path="data/events", timestamp="ts", description="two"),
                desc="another")
    assert same.definition_fingerprint == base.definition_fingerprint
    assert make(window="14d").definition_fingerprint != base.definition_fingerprint


def test_closure_values_are_part_of_the_code() -> None:
    def make(factor: float) -> Signal:
        def f(batch: pa.Table) -> pa.Table:
            return batch.append_column("y", pa.array([factor] * batch.num_rows))
        return signal(entity=Entity(name="user", join_key="user_id"), name="s", features={"y": Float64()},
                      source=Source.parquet(name="events", path="data/events", timestamp="ts"))(f)

    assert make(1.0).definition_fingerprint == make(1.0).definition_fingerprint
    assert make(1.0).definition_fingerprint != make(2.0).definition_fingerprint


@pytest.mark.parametrize("value", ["{1, 2, 3}", "frozenset({'a', 'b', 'c'})", "('x', None, True, 1e-3)",
                                   "[1, [2, 3]]", "{'k': [1, 2]}"])
def test_constant_containers_are_deterministic_values(tmp_path: Path, value: str) -> None:
    a, b = dwell(tmp_path, FACTOR=value), dwell(tmp_path, FACTOR=value)
    assert a.code == b.code and "FACTOR = " in a.code


def test_transform_code_reads_a_helper_defined_after_the_signal(tmp_path: Path) -> None:
    """A helper defined below the signal is in the module by the time the module is registered: refreshing
    the code (what registration does) picks it up."""
    template = MODULE.replace('def offset():\n    return @OFFSET@\n', '') + '\n\ndef offset():\n    return @OFFSET@\n'
    module = load(tmp_path, template)
    fresh = transform_code(module.user_dwell.transform)
    assert "def offset" in fresh
    module2 = load(tmp_path, template, OFFSET="3")
    assert transform_code(module2.user_dwell.transform) != fresh
