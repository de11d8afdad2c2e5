"""Fingerprint schemes: how a stored version's ``definition_fingerprint`` was computed, so a registry written by
an older quasar keeps its versions.

* Scheme 1 (before versions by meaning): the transform's raw text from its ``def`` line, without its
  docstring; entity and source compared with their descriptions.
* Scheme 2 (``SCHEME``): ``Signal.definition_fingerprint`` (``quasar.signals.fingerprint``): normalised code plus the
  helpers and constants it uses; entity and source by identity.

A stored definition says its scheme (``fingerprint_scheme``; absent means 1). A scheme-1 version is compared
the old way, with the stored descriptions standing in for the new ones (descriptions never made versions
meaningfully); when it matches, the registration re-stamps the row in place with scheme 2, so the next
registration compares by meaning. What scheme 1 never saw (a helper's or constant's value) cannot be compared:
the first scheme-2 registration takes the code as it is then.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import textwrap
from collections.abc import Callable
from typing import Any

from quasar.signals.durations import format_duration
from quasar.signals.signal import Signal

SCHEME = 2
SCHEME_KEY = "fingerprint_scheme"


def scheme_of(definition: dict[str, Any]) -> int:
    return int(definition.get(SCHEME_KEY, 1))


def stamp(definition: dict[str, Any]) -> dict[str, Any]:
    """A signal definition (``Signal.to_dict``) as stored: with the scheme its fingerprint was computed by."""
    return {**definition, SCHEME_KEY: SCHEME}


def same_meaning(definition: dict[str, Any], fingerprint: str, sig: Signal) -> bool:
    """Whether ``sig`` computes what the stored version (its ``definition`` and ``definition_fingerprint``)
    computes, under the scheme that version was stored with."""
    if scheme_of(definition) >= SCHEME:
        return fingerprint == sig.definition_fingerprint
    legacy = legacy_fingerprint(sig, Signal.from_dict(definition))
    return legacy is not None and legacy == fingerprint


def legacy_fingerprint(sig: Signal, recorded: Signal) -> str | None:
    """``sig``'s fingerprint as scheme 1 computed it, with ``recorded``'s entity and source descriptions where
    their identities match; None when it cannot be computed (a transform signal without its function)."""
    if sig.kind == "transform":
        if sig.transform is None:
            return None
        code = legacy_transform_code(sig.transform)
    else:
        code = sig.code
    entity = recorded.entity.to_dict() if recorded.entity.identity() == sig.entity.identity() else sig.entity.to_dict()
    source = recorded.source.to_dict() if recorded.source.identity() == sig.source.identity() else sig.source.to_dict()
    scope = getattr(sig, "scope", "entity")
    return _hash(sig.schema.fingerprint_hex, _hash(code), entity, source,
                 format_duration(sig.step) if sig.step else None, *(() if scope == "entity" else (("scope", scope),)))


def _hash(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def legacy_transform_code(fn: Callable[..., Any]) -> str:
    """Scheme 1's code of a transform: its text from the ``def`` line on, without decorators and docstring."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return ""
    try:
        node = ast.parse(source).body[0]
    except (SyntaxError, IndexError):
        return source
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return source
    lines = source.splitlines()
    keep = range(node.lineno - 1, node.end_lineno or len(lines))
    doc = node.body[0] if ast.get_docstring(node, clean=False) is not None else None
    if doc is not None and doc.lineno == node.lineno:
        doc = None
    drop = range(doc.lineno - 1, doc.end_lineno or doc.lineno) if doc is not None else range(0)
    return "\n".join(lines[i] for i in keep if i not in drop) + "\n"
