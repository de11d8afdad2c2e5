"""Join key values as clients send them, read without loss: the one rule for taking a key given in the other
JSON type.

Feast clients send a key in whatever type they hold, ``"7"`` for an int64 id or ``7`` for a string one, and
Feast coerces with ``int()`` and ``str()``, so ``7.5`` becomes the id 7. quasar takes a key of the other type
only when the conversion is exact: for an int64 key an integer, an integral float within 2**53 (larger floats
may already have been rounded by the client's JSON) or a string of decimal digits, in range; for a string
key a string or an integer (its decimal form). Anything else, booleans included, is a RequestError naming the
key, its value and why.
"""

from __future__ import annotations

import re
from typing import Any

from quasar.signals.errors import RequestError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EXACT_FLOAT_INT = 2**53                  # every integer up to here has an exact float64
_DIGITS = re.compile(r"-?[0-9]+")        # ASCII digits, an optional minus: no '+', spaces, '_' or exponent


def coerce_key(value: Any, key_type: str, where: str) -> int | str:
    """``value`` as a key of ``key_type`` (``"int64"`` or ``"string"``, as ``Entity.join_key_type``), when the
    conversion loses nothing; ``where`` names the key in the error (``entities.user_id[2]``)."""
    if key_type == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise RequestError(f"{where}: key {value!r} is not a string key: give a string (or an integer, read as "
                           "its decimal form)")
    number = _exact_int(value)
    if number is None:
        raise RequestError(f"{where}: key {value!r} is not an int64 key without loss: give an integer, e.g. 7 "
                           'or "7"')
    if not INT64_MIN <= number <= INT64_MAX:
        raise RequestError(f"{where}: key {value!r} does not fit in an int64")
    return number


def _exact_int(value: Any) -> int | None:
    """The integer ``value`` is exactly, if any (never for a bool)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    exact_float = isinstance(value, float) and value.is_integer() and abs(value) <= EXACT_FLOAT_INT
    if exact_float or (isinstance(value, str) and _DIGITS.fullmatch(value)):
        return int(value)
    return None
