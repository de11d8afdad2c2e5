"""Request-time signals as definitions: their version identity is their code (both forms, the helpers and
constants they use), owner and description are metadata, and a malformed one is refused where it is defined."""

from __future__ import annotations

from pathlib import Path

import pytest

from quasar.registry.loader import collect_files
from quasar.signals import Int64, on_demand
from quasar.signals.errors import DefinitionError, RegistrationError
from quasar.signals.request import RequestSignal

BASE = '''
import pyarrow.compute as pc

from quasar.signals import Float64, Int64, on_demand

DECAY = 0.5


def discount(position):
    return DECAY ** position


@on_demand(inputs=["user_stats:ctr"], request={"position": Int64()}, features={"boost": Float64()}, owner="ads")
def boost(row):
    """CTR by slot."""
    return {"boost": None if row["ctr"] is None else row["ctr"] * discount(row["position"])}


@boost.batch
def boost(table):
    return {"boost": pc.multiply(table["ctr"], pc.power(DECAY, table["position"]))}
'''


def loaded(tmp_path: Path, text: str, name: str = "boost") -> RequestSignal:
    """The request-time signal ``name`` of ``text`` as registration collects it (fresh import, fresh code)."""
    folder = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    (folder / "mod.py").write_text(text)
    found = [f.obj for f in collect_files("mod", [folder / "mod.py"]).found]
    return next(o for o in found if isinstance(o, RequestSignal) and o.name == name)


def test_comments_formatting_and_docstrings_keep_the_version(tmp_path: Path) -> None:
    base = loaded(tmp_path, BASE)
    edited = BASE.replace('    """CTR by slot."""\n', '    """The CTR, discounted by the slot."""\n    # a comment\n')
    edited = edited.replace("row[\"ctr\"] * discount(row[\"position\"])",
                            "row[\"ctr\"]  *  discount( row[\"position\"] )")
    again = loaded(tmp_path, edited)
    assert again.code == base.code
    assert again.definition_fingerprint == base.definition_fingerprint
    assert again.description != base.description                 # metadata, seen but not identity


@pytest.mark.parametrize("change", [
    ("DECAY = 0.5", "DECAY = 0.25"),                                                    # a constant both forms use
    ("return DECAY ** position", "return DECAY ** (position + 1)"),                     # a helper of the row form
    ('pc.power(DECAY, table["position"])', 'pc.power(DECAY, pc.add(table["position"], 0))'),   # the batch form only
    ('return {"boost": None if', 'return {"boost": 0.0 if'),                            # the row form only
])
def test_a_changed_function_helper_or_constant_is_a_new_version(tmp_path: Path, change: tuple[str, str]) -> None:
    base = loaded(tmp_path, BASE)
    assert change[0] in BASE
    changed = loaded(tmp_path, BASE.replace(*change))
    assert changed.definition_fingerprint != base.definition_fingerprint


def test_owner_and_description_are_metadata(tmp_path: Path) -> None:
    base = loaded(tmp_path, BASE)
    other = loaded(tmp_path, BASE.replace('owner="ads"', 'owner="search"').replace("CTR by slot.", "Other words."))
    assert (other.owner, other.description) == ("search", "Other words.")
    assert other.definition_fingerprint == base.definition_fingerprint
    assert other.to_dict() != base.to_dict()


def test_the_forms_it_has_are_part_of_it(tmp_path: Path) -> None:
    both = loaded(tmp_path, BASE)
    row_only = loaded(tmp_path, BASE[:BASE.index("@boost.batch")])
    assert both.modes == ["row", "batch"] and row_only.modes == ["row"]
    assert row_only.definition_fingerprint != both.definition_fingerprint
    vectorised = loaded(tmp_path, BASE[:BASE.index("@boost.batch")].replace(
        'features={"boost": Float64()}, owner="ads")', 'features={"boost": Float64()}, owner="ads", vectorized=True)'))
    assert vectorised.modes == ["batch"]
    assert vectorised.definition_fingerprint != row_only.definition_fingerprint
    # as the registry hands it back (no functions attached), it still says which forms it has
    assert RequestSignal.from_dict(both.to_dict()).modes == ["row", "batch"]
    assert RequestSignal.from_dict(both.to_dict()) == both


def test_inputs_and_request_fields_are_part_of_it() -> None:
    def fn(row: dict[str, object]) -> dict[str, object]:
        return {"n": 1}

    plain = on_demand(inputs=["user_stats:clicks"], features={"n": Int64()})(fn)
    other_input = on_demand(inputs=["user_stats@2:clicks"], features={"n": Int64()})(fn)
    with_field = on_demand(inputs=["user_stats:clicks"], request={"position": Int64()}, features={"n": Int64()})(fn)
    assert len({plain.definition_fingerprint, other_input.definition_fingerprint,
                with_field.definition_fingerprint}) == 3


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"inputs": {"ctr": "user_stats:ctr"}, "request": {"ctr": Int64()}}, "'ctr' names two inputs"),
    ({"inputs": ["user_stats:clicks", "pin_stats:clicks"]}, "'clicks' names two inputs"),
    ({}, "give it inputs or request fields"),
    ({"inputs": ["user_stats"]}, "must name one feature"),
    ({"inputs": ["itself:n"]}, "cannot read its own features"),
])
def test_a_malformed_request_time_signal_is_refused_where_it_is_defined(kwargs: dict[str, object],
                                                                         problem: str) -> None:
    def itself(row: dict[str, object]) -> dict[str, object]:
        return {"n": 1}

    with pytest.raises(DefinitionError, match=problem) as caught:
        on_demand(features={"n": Int64()}, **kwargs)(itself)        # type: ignore[arg-type]
    assert "request-time signal 'itself'" in str(caught.value)


def test_registering_a_malformed_one_names_the_file_and_line(tmp_path: Path) -> None:
    bad = BASE.replace('inputs=["user_stats:ctr"]', 'inputs={"position": "user_stats:ctr"}')
    (tmp_path / "bad.py").write_text(bad)
    with pytest.raises(RegistrationError, match=r"bad\.py:\d+: .*'position' names two inputs"):
        collect_files("bad", [tmp_path / "bad.py"])
