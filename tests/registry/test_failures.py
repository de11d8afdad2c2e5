"""A module that fails to import or validate is refused with a message naming the problem, and the registry
is left exactly as it was (every table dumped before and after)."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.registry_db import dump_tables, example_module, write_module
from quasar.registry import Registry
from quasar.signals.errors import RegistrationError

HEADER = ("import pyarrow as pa\n"
          "from quasar.signals import Entity, Float64, Int64, Source, signal\n"
          "user = Entity(name='user', join_key='user_id')\n"
          "events = Source.parquet(name='events', path='data/events', timestamp='ts')\n")


@pytest.fixture
def registry(registry_url: str, tmp_path: Path) -> Iterator[Registry]:
    """A registry that already holds the example module, so 'unchanged' means something."""
    reg = Registry.open(registry_url)
    reg.register(write_module(tmp_path / "good" / "engagement.py", example_module()))
    yield reg
    reg.close()


def refused(registry: Registry, url: str, target: str | Path, *, root: Path | None = None) -> str:
    """Register ``target``, expect RegistrationError, check nothing changed; returns the message."""
    before = dump_tables(url)
    path_before, modules_before = list(sys.path), set(sys.modules)
    with pytest.raises(RegistrationError) as info:
        registry.register(target, root=root)
    assert dump_tables(url) == before
    assert sys.path == path_before
    assert not {m for m in set(sys.modules) - modules_before if m.startswith("_quasar_signals_")}
    return str(info.value)


def test_a_syntax_error_names_file_and_line(registry: Registry, registry_url: str, tmp_path: Path) -> None:
    path = write_module(tmp_path / "bad_syntax.py", HEADER + "def broken(:\n    pass\n")
    message = refused(registry, registry_url, path)
    assert f"{path}:5" in message and "syntax error" in message


def test_a_python_type_as_feature_type_names_file_line_and_type(registry: Registry, registry_url: str,
                                                               tmp_path: Path) -> None:
    path = write_module(tmp_path / "bad_type.py", HEADER + "\n\n"
                        "@signal(entity=user, source=events, features={'x': int})\n"
                        "def bad(batch):\n    return batch\n")
    message = refused(registry, registry_url, path)
    assert re.search(rf"{re.escape(str(path))}:(7|8)\b", message), message
    assert "signal 'bad' features['x']" in message and "is not a feature type" in message


def test_a_feature_type_class_without_parentheses_is_refused(registry: Registry, registry_url: str,
                                                             tmp_path: Path) -> None:
    path = write_module(tmp_path / "bad_class.py", HEADER +
                        "@signal(entity=user, source=events, features={'n': Int64})\n"
                        "def bad(batch):\n    return batch\n")
    message = refused(registry, registry_url, path)
    assert str(path) in message and "must be an instance, e.g. Int64(), not the class Int64" in message


def test_an_unknown_entity_names_signal_and_entity(registry: Registry, registry_url: str, tmp_path: Path) -> None:
    path = write_module(tmp_path / "ghost.py", HEADER +
                        "@signal(entity=Entity(name='ghost', join_key='ghost_id'), source=events,\n"
                        "        features={'x': Float64()})\n"
                        "def haunted(batch):\n    return batch\n")
    message = refused(registry, registry_url, path)
    assert "signal 'haunted'" in message and "uses entity 'ghost', which is neither defined in" in message


def test_redefining_a_registered_entity_with_another_join_key_is_refused(registry: Registry, registry_url: str,
                                                                        tmp_path: Path) -> None:
    path = write_module(tmp_path / "rekey.py", "from quasar.signals import Entity\n"
                        "user = Entity(name='user', join_key='uid')\n")
    message = refused(registry, registry_url, path)
    assert "entity 'user'" in message and "join_key 'user_id' -> 'uid'" in message


def test_redefining_a_registered_source_path_is_refused(registry: Registry, registry_url: str,
                                                        tmp_path: Path) -> None:
    path = write_module(tmp_path / "moved.py", "from quasar.signals import Source\n"
                        "events = Source.parquet(name='events', path='elsewhere', timestamp='ts')\n")
    message = refused(registry, registry_url, path)
    assert "source 'events'" in message and "path 'data/events' -> 'elsewhere'" in message


def test_a_dependency_cycle_is_listed(registry: Registry, registry_url: str, tmp_path: Path) -> None:
    path = write_module(tmp_path / "cycle.py", HEADER +
                        "@signal(entity=user, source=Source.signal('b'), features={'x': Float64()})\n"
                        "def a(batch):\n    return batch\n\n"
                        "@signal(entity=user, source=Source.signal('a'), features={'y': Float64()})\n"
                        "def b(batch):\n    return batch\n")
    message = refused(registry, registry_url, path)
    assert "dependency cycle: a -> b -> a" in message


def test_a_cycle_through_a_registered_signal_is_listed(registry: Registry, registry_url: str,
                                                       tmp_path: Path) -> None:
    # user_score (registered) reads user_activity; redefining user_activity on user_score closes a loop
    path = write_module(tmp_path / "loop.py", HEADER +
                        "@signal(entity=user, source=Source.signal('user_score'), features={'z': Float64()})\n"
                        "def user_activity(batch):\n    return batch\n")
    message = refused(registry, registry_url, path)
    assert "dependency cycle: user_activity -> user_score -> user_activity" in message


def test_an_unknown_upstream_signal_is_refused(registry: Registry, registry_url: str, tmp_path: Path) -> None:
    path = write_module(tmp_path / "orphan.py", HEADER +
                        "@signal(entity=user, source=Source.signal('nowhere'), features={'x': Float64()})\n"
                        "def orphan(batch):\n    return batch\n")
    message = refused(registry, registry_url, path)
    assert "reads signal 'nowhere', which is neither defined in" in message


def test_two_different_definitions_with_one_name_name_both(registry: Registry, registry_url: str,
                                                          tmp_path: Path) -> None:
    path = write_module(tmp_path / "dupes.py", HEADER +
                        "@signal(entity=user, source=events, name='dup', features={'x': Float64()})\n"
                        "def first(batch):\n    return batch\n\n"
                        "@signal(entity=user, source=events, name='dup', features={'y': Float64()})\n"
                        "def second(batch):\n    return batch\n")
    message = refused(registry, registry_url, path)
    assert "two different signals are named 'dup'" in message
    assert f"variable 'first' in {path}" in message and f"variable 'second' in {path}" in message


def test_an_exception_at_import_names_file_line_and_exception(registry: Registry, registry_url: str,
                                                             tmp_path: Path) -> None:
    path = write_module(tmp_path / "boom.py", HEADER + "\n\ndef helper():\n    raise RuntimeError('boom')\n\n\n"
                        "helper()\n")
    message = refused(registry, registry_url, path)
    assert f"{path}:8: RuntimeError: boom" in message


def test_an_error_in_a_sibling_module_names_the_sibling(registry: Registry, registry_url: str,
                                                       tmp_path: Path) -> None:
    folder = tmp_path / "proj"
    sibling = write_module(folder / "helpers.py", "VALUE = 1\nraise KeyError('missing')\n")
    write_module(folder / "uses.py", "from helpers import VALUE\n")
    message = refused(registry, registry_url, folder)
    assert f"{sibling}:2: KeyError: 'missing'" in message


def test_a_folder_is_all_or_nothing(registry: Registry, registry_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "half"
    write_module(folder / "a_good.py", HEADER +
                 "@signal(entity=user, source=events, features={'x': Float64()})\n"
                 "def fine(batch):\n    return batch\n")
    bad = write_module(folder / "b_bad.py", "x = 1 / 0\n")
    message = refused(registry, registry_url, folder)
    assert f"{bad}:1: ZeroDivisionError" in message


def test_a_missing_target_is_refused(registry: Registry, registry_url: str, tmp_path: Path) -> None:
    message = refused(registry, registry_url, "nothing/here.py", root=tmp_path)
    assert "no such file or folder" in message and str(tmp_path / "nothing" / "here.py") in message
    message = refused(registry, registry_url, "no_such_quasar_module_xyz")
    assert "no file, folder or module" in message
