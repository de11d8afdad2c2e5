"""The one rule for keys given in the other JSON type (``quasar.signals.keys``): taken only when exact."""

from __future__ import annotations

from typing import Any

import pytest

from quasar.signals.errors import RequestError
from quasar.signals.keys import coerce_key


@pytest.mark.parametrize(("value", "key_type", "expected"), [
    (7, "int64", 7), ("7", "int64", 7), ("-7", "int64", -7), ("007", "int64", 7), (7.0, "int64", 7),
    (-(2**63), "int64", -(2**63)), (str(2**63 - 1), "int64", 2**63 - 1), (float(2**53), "int64", 2**53),
    ("a", "string", "a"), ("", "string", ""), (7, "string", "7"), (-(2**70), "string", str(-(2**70))),
])
def test_exact_conversions_are_taken(value: Any, key_type: str, expected: Any) -> None:
    got = coerce_key(value, key_type, "entities.k[0]")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(("value", "key_type", "why"), [
    (7.5, "int64", "without loss"), (True, "int64", "without loss"), (None, "int64", "without loss"),
    ("x", "int64", "without loss"), ("1e3", "int64", "without loss"), ("+7", "int64", "without loss"),
    (" 7", "int64", "without loss"), ("7_0", "int64", "without loss"), ("٧", "int64", "without loss"),
    (float(2**53 + 2), "int64", "without loss"), (float("nan"), "int64", "without loss"), ([7], "int64", "without loss"),
    (2**63, "int64", "does not fit"), (str(-(2**63) - 1), "int64", "does not fit"),
    (7.0, "string", "not a string key"), (False, "string", "not a string key"), (None, "string", "not a string key"),
])
def test_lossy_conversions_are_refused_naming_the_key(value: Any, key_type: str, why: str) -> None:
    with pytest.raises(RequestError, match=why) as info:
        coerce_key(value, key_type, "entities.user_id[3]")
    assert str(info.value).startswith(f"entities.user_id[3]: key {value!r} ")
