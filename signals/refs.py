"""Feature references and how a request's references become output columns, written once.

A reference is ``signal`` (all of its features), ``signal:feature``, or either pinned to a version,
``signal@3`` / ``signal@3:feature`` (Feast's ``signal@v3:feature`` is the same). An unpinned reference means
the signal's serving version (the ``resolve`` callback decides). Planning turns the references of one request
into output columns in request order: the same feature asked twice is one column, and two features that
would get one output name are an error naming both. Training datasets (``quasar.store.dataset``) and online reads
(``quasar.online.response``) both plan through ``plan_refs``, so a name means the same column offline and online.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from quasar.signals.errors import QuasarError
from quasar.signals.signal import Signal

Resolve = Callable[[str, int | None], tuple[Signal, int]]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_REF = re.compile(rf"^(?P<signal>{_NAME})(?:@v?(?P<version>[0-9]+))?(?::(?P<feature>{_NAME}))?$")
FORMS = "'signal', 'signal:feature', 'signal@3' or 'signal@3:feature'"


@dataclass(frozen=True, kw_only=True)
class FeatureRef:
    """``signal``, ``signal:feature``, ``signal@3`` or ``signal@3:feature``; None means serving version / all."""

    signal: str
    version: int | None = None
    feature: str | None = None

    def __str__(self) -> str:
        version = f"@{self.version}" if self.version is not None else ""
        feature = f":{self.feature}" if self.feature is not None else ""
        return f"{self.signal}{version}{feature}"


def parse_feature_ref(ref: str, error: type[QuasarError] = QuasarError) -> FeatureRef:
    """Parse one feature reference; bad syntax raises ``error`` showing the accepted forms."""
    if not isinstance(ref, str):
        raise error(f"a feature reference must be a string, got {ref!r}")
    m = _REF.match(ref.strip())
    if not m or (m["version"] is not None and int(m["version"]) < 1):
        raise error(f"feature reference {ref!r} is invalid: use {FORMS} (versions start at 1)")
    version = int(m["version"]) if m["version"] is not None else None
    return FeatureRef(signal=m["signal"], version=version, feature=m["feature"])


@dataclass(frozen=True)
class PlannedFeature:
    """One output column of a request: the reference it came from, the signal version and feature it reads."""

    ref: str
    signal: Signal
    version: int
    feature: str
    output: str


@dataclass(frozen=True)
class PlanErrors:
    """How a room reports planning mistakes: its error types and how it names the full-names switch."""

    syntax: type[QuasarError]
    missing: type[QuasarError]
    full_names_hint: str


class OutputNames:
    """The output names of one request, claimed in request order: ``<feature>``, or ``<signal>__<feature>`` with
    full names; a name claimed by two references is an error naming both (stored and request-time features
    alike: ``quasar.signals.request_plan`` claims through the same object)."""

    def __init__(self, *, full_names: bool, errors: PlanErrors) -> None:
        self.full_names = full_names
        self.errors = errors
        self.taken: dict[str, str] = {}

    def name(self, signal: str, feature: str) -> str:
        return f"{signal}__{feature}" if self.full_names else feature

    def claim(self, output: str, raw: str) -> str:
        if output in self.taken:
            hint = "ask for one version of the signal" if self.full_names else self.errors.full_names_hint
            raise self.errors.syntax(f"features {self.taken[output]!r} and {raw!r} would both be named {output!r}: "
                                     f"{hint}")
        self.taken[output] = raw
        return output


def plan_refs(refs: Sequence[str], resolve: Resolve, *, full_names: bool, errors: PlanErrors) -> list[PlannedFeature]:
    """The output columns of ``refs`` in request order, each signal resolved once; output names are
    ``<feature>`` (``<signal>__<feature>`` with ``full_names``) and must not clash."""
    resolved: dict[tuple[str, int | None], tuple[Signal, int]] = {}
    planned: list[PlannedFeature] = []
    seen: set[tuple[str, int, str]] = set()
    naming = OutputNames(full_names=full_names, errors=errors)
    for raw in refs:
        ref = parse_feature_ref(raw, errors.syntax)
        key = (ref.signal, ref.version)
        if key not in resolved:
            resolved[key] = resolve(ref.signal, ref.version)
        sig, version = resolved[key]
        names = sig.schema.names
        if ref.feature is not None and ref.feature not in names:
            raise errors.missing(f"signal {sig.name!r} v{version} has no feature {ref.feature!r}; "
                                 f"its features: {', '.join(names)}")
        for feature in [ref.feature] if ref.feature is not None else names:
            if (sig.name, version, feature) in seen:
                continue                                  # asked twice (e.g. 'sig' and 'sig:f'): one column
            output = naming.claim(naming.name(sig.name, feature), raw)
            seen.add((sig.name, version, feature))
            planned.append(PlannedFeature(raw, sig, version, feature, output))
    return planned
