"""Online/offline consistency: for a sample of entities, the online values against the offline values as of now.

The offline side is what a trainer would get for a spine row stamped now (the point-in-time join, TTL
applied); the online side is what the feature service answers now (newer-wins records, TTL applied on
read). Per feature and entity:

* match: both have a value and the values are identical (NaN equals NaN);
* mismatch: both have a value and they differ;
* missing: offline has a value, online has none (never materialized, expired, lost);
* extra: online has a value, offline has none (pushed online only, an entity whose offline rows a backfill
  deleted since the last materialization, a stray record).

Rates are over the sampled entities. Entities are sampled from both sides: the offline table's distinct join
keys, and (``online_sample``) the entities holding a record of the signal version online, found by scanning
the online keys; so an entity that exists online only is compared too, and reported as extra.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quasar.online.store import OnlineStore
from quasar.signals.errors import QuasarError
from quasar.signals.signal import Signal
from quasar.signals.times import micros
from quasar.signals.ufr.schema import EVENT_TIMESTAMP
from quasar.signals.ufr.types import TIMESTAMP_ARROW

EXAMPLES = 5
KINDS = ("mismatch", "missing", "extra")


@dataclass(frozen=True, kw_only=True)
class FeatureConsistency:
    """How one feature's online values compare with its offline values on the sampled entities."""

    feature: str
    compared: int
    matches: int = 0
    both_null: int = 0
    mismatches: int = 0
    missing: int = 0
    extra: int = 0
    examples: tuple[dict[str, Any], ...] = ()       # {"key", "kind", "offline", "online"}

    def rate(self, kind: str) -> float:
        """The share of compared entities that are a ``mismatch``, ``missing`` or ``extra``."""
        count = {"mismatch": self.mismatches, "missing": self.missing, "extra": self.extra}[kind]
        return count / self.compared if self.compared else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "compared": self.compared, "matches": self.matches,
                "both_null": self.both_null, "mismatches": self.mismatches, "missing": self.missing,
                "extra": self.extra, **{f"{k}_rate": self.rate(k) for k in KINDS},
                "examples": [dict(e) for e in self.examples]}


@dataclass(frozen=True, kw_only=True)
class ConsistencyReport:
    """Per-feature consistency of one signal version on ``sampled`` of its ``population`` offline entities."""

    signal: str
    version: int
    as_of: datetime
    population: int
    sampled: int
    features: tuple[FeatureConsistency, ...] = field(default_factory=tuple)
    online_population: int | None = None            # entities holding a record online (None: not scanned)

    @property
    def consistent(self) -> bool:
        return all(f.mismatches == f.missing == f.extra == 0 for f in self.features)

    def feature(self, name: str) -> FeatureConsistency:
        for f in self.features:
            if f.feature == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"signal": self.signal, "version": self.version, "as_of": self.as_of.isoformat(),
                "population": self.population, "online_population": self.online_population,
                "sampled": self.sampled, "consistent": self.consistent,
                "features": [f.to_dict() for f in self.features]}


def sample_keys(keys: pa.Array | pa.ChunkedArray, sample: int, seed: int | None = None) -> list[Any]:
    """Up to ``sample`` distinct keys, drawn uniformly without replacement (all of them when fewer), sorted."""
    if not isinstance(sample, int) or sample <= 0:
        raise QuasarError(f"the sample size must be a positive int, got {sample!r}")
    distinct = pc.unique(keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys).drop_null()
    if len(distinct) > sample:
        chosen = np.random.default_rng(seed).choice(len(distinct), sample, replace=False)
        distinct = distinct.take(pa.array(np.sort(chosen)))
    return sorted(distinct.to_pylist())


def sample_online_keys(online: OnlineStore, signal: Signal, version: int, sample: int,
                       seed: int | None = None) -> tuple[list[Any], int]:
    """Up to ``sample`` entities holding a record of ``signal`` v``version`` online, drawn uniformly (a reservoir
    over one scan of the online keys, so memory stays at ``sample``), sorted; and how many there are."""
    if not isinstance(sample, int) or sample <= 0:
        raise QuasarError(f"the sample size must be a positive int, got {sample!r}")
    rng = np.random.default_rng(seed)
    chosen: list[Any] = []
    seen = 0
    for batch in online.scan(signal, version):
        for key in batch:
            seen += 1
            if len(chosen) < sample:
                chosen.append(key)
            else:
                slot = int(rng.integers(0, seen))
                if slot < sample:
                    chosen[slot] = key
    return sorted(chosen), seen


def check_consistency(*, signal: Signal, version: int, keys: Sequence[Any], population: int,
                      offline_as_of: Callable[[pa.Table], pa.Table], online: OnlineStore,
                      as_of: datetime | None = None, online_sample: int = 0,
                      seed: int | None = None) -> ConsistencyReport:
    """Compare ``online`` with ``offline_as_of(spine)`` (the features of each spine row, in spine order, named
    as in the signal) for ``keys`` at ``as_of`` (default now), and for up to ``online_sample`` entities
    sampled from the online keys (``sample_online_keys``)."""
    now = (as_of or datetime.now(UTC)).astimezone(UTC)
    online_population = None
    if online_sample:
        extra_keys, online_population = sample_online_keys(online, signal, version, online_sample, seed)
        keys = sorted(set(keys) | set(extra_keys))
    join_key = signal.entity.join_key
    spine = pa.table({join_key: pa.array(list(keys), signal.entity.arrow_key_type),
                      EVENT_TIMESTAMP: pa.array([now] * len(keys), TIMESTAMP_ARROW)})
    offline = offline_as_of(spine)
    kwargs: dict[str, Any] = {}
    if "now_us" in inspect.signature(online.read).parameters:      # measure the TTL at the same instant
        kwargs["now_us"] = micros(now)
    (found,) = online.read([(signal, version)], list(keys), **kwargs)
    features = tuple(_compare(name, list(keys), offline.column(name).to_pylist(),
                              found.table.column(name).to_pylist()) for name in signal.schema.names)
    return ConsistencyReport(signal=signal.name, version=version, as_of=now, population=population,
                             sampled=len(keys), features=features, online_population=online_population)


def _compare(name: str, keys: list[Any], offline: list[Any], online: list[Any]) -> FeatureConsistency:
    counts = dict.fromkeys(("matches", "both_null", "mismatches", "missing", "extra"), 0)
    examples: list[dict[str, Any]] = []
    for key, off, on in zip(keys, offline, online, strict=True):
        if off is None and on is None:
            counts["both_null"] += 1
            continue
        if off is not None and on is not None and _same(off, on):
            counts["matches"] += 1
            continue
        kind = "missing" if on is None else "extra" if off is None else "mismatch"
        counts["mismatches" if kind == "mismatch" else kind] += 1
        if len(examples) < EXAMPLES:
            examples.append({"key": key, "kind": kind, "offline": _plain(off), "online": _plain(on)})
    return FeatureConsistency(feature=name, compared=len(keys), examples=tuple(examples), **counts)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
