"""A signal's data-quality expectations in their plain form: what the registry stores and the gates rebuild.

A signal declares great-expectations (GX 1.x) ``Expectation`` objects, e.g.
``ExpectColumnValuesToBeBetween(column="ctr_7d", min_value=0, max_value=1)``. The SDK keeps each one as the
plain dict of its configuration, ``{"type": "expect_...", "kwargs": {...}}`` (with ``meta``, ``notes`` and
``description`` when given), so signals round-trip through JSON; ``quasar.store.gates`` rebuilds the GX objects.
This module reads the objects' ``configuration`` and never imports great-expectations, which is heavy and
belongs to the store room.

Expectations and the policy are not part of a signal's version identity: they judge data, they do not
define it, so changing them updates the registered version in place (its tables and data stay valid).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from quasar.signals.errors import DefinitionError

#: Expectations that judge each row on its own: pushed rows are checked against these before they are written.
ROW_LEVEL = frozenset({
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_not_be_in_set",
})
_COLUMN_KWARGS = ("column", "column_A", "column_B")
_OPTIONAL_KEYS = ("meta", "notes", "description")


def expectation_to_dict(expectation: Any, where: str) -> dict[str, Any]:
    """The plain dict of a GX ``Expectation`` (or of an already plain ``{"type", "kwargs"}`` dict)."""
    if isinstance(expectation, dict):
        raw = expectation
    else:
        config = getattr(expectation, "configuration", None)
        to_json = getattr(config, "to_json_dict", None)
        if not callable(to_json):
            raise DefinitionError(f"{where}: {expectation!r} is not a great-expectations Expectation "
                                  "(e.g. gx.expectations.ExpectColumnValuesToNotBeNull(column=...))")
        raw = to_json()
    kind, kwargs = raw.get("type"), raw.get("kwargs", {})
    if not isinstance(kind, str) or not kind.startswith("expect_"):
        raise DefinitionError(f"{where}: an expectation needs a 'type' such as 'expect_column_values_to_not_be_null'"
                              f", got {kind!r}")
    if not isinstance(kwargs, dict):
        raise DefinitionError(f"{where}: expectation {kind} needs 'kwargs' as a dict, got {kwargs!r}")
    plain: dict[str, Any] = {"type": kind, "kwargs": {k: v for k, v in kwargs.items() if k != "batch_id"}}
    plain.update({k: raw[k] for k in _OPTIONAL_KEYS if raw.get(k)})
    try:                                  # exactly what a JSON column gives back (tuples become lists)
        result: dict[str, Any] = json.loads(json.dumps(plain, sort_keys=True, default=str))
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"{where}: expectation {kind} does not serialize to JSON: {exc}") from exc
    return result


def expectation_columns(expectation: dict[str, Any]) -> list[str]:
    """The columns an expectation names (``column``, ``column_A``/``column_B``, ``column_list``)."""
    kwargs = expectation["kwargs"]
    names = [kwargs[k] for k in _COLUMN_KWARGS if isinstance(kwargs.get(k), str)]
    if isinstance(kwargs.get("column_list"), list):
        names += [c for c in kwargs["column_list"] if isinstance(c, str)]
    return names


def check_expectations(expectations: Iterable[Any], columns: Sequence[str], where: str) -> tuple[dict[str, Any], ...]:
    """Every expectation in plain form; each column it names must be one of ``columns``."""
    if isinstance(expectations, (str, bytes, dict)) or hasattr(expectations, "configuration"):
        raise DefinitionError(f"{where}: expectations must be a list of great-expectations Expectations")
    plain = tuple(expectation_to_dict(e, where) for e in expectations)
    for exp in plain:
        unknown = [c for c in expectation_columns(exp) if c not in columns]
        if unknown:
            raise DefinitionError(f"{where}: expectation {exp['type']} names column {unknown[0]!r}, which is not "
                                  f"a column of the signal ({', '.join(columns)})")
    return plain


def describe_expectation(expectation: dict[str, Any]) -> str:
    """One line: ``expect_column_values_to_be_between(column=ctr, min_value=0.0, max_value=1.0)``."""
    args = ", ".join(f"{k}={v}" for k, v in expectation["kwargs"].items())
    return f"{expectation['type']}({args})"
