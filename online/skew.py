"""Training/serving skew measured from feature logs: the continuous version of ``quasar consistency``.

``skew_report`` takes a service's logged rows (``quasar.online.feature_log``), builds a training spine from
their join keys, request fields and ``event_timestamp`` (the serving time), computes the point-in-time dataset
of the service version each row was served by (``<service>@<version>``, one dataset per version), and compares
every logged feature with its offline value, bit for bit (floats by their bits, so ``-0.0 != 0.0`` and a NaN
equals only the same NaN). Per feature it counts, over the logged rows that hold the feature:

* ``mismatches``: both sides have a value and they differ;
* ``missing_online``: offline has a value, the log does not (status not PRESENT, or a null value);
* ``missing_offline``: the log has a value, offline does not;

with rates over the rows compared and a few examples (keys, time, request id, both values). Request-time
features are compared like stored ones: one computed from a changed stored input differs too, as it should.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quasar.online.feature_log_tables import REQUEST_ID, SERVICE_VERSION, STATUS_SUFFIX, LogTables
from quasar.signals.errors import StoreError
from quasar.signals.ufr.schema import EVENT_TIMESTAMP
from quasar.signals.ufr.types import feature_type_from_dict
from quasar.store.arrow_types import storage_type

KINDS = ("mismatch", "missing_online", "missing_offline")
#: ``dataset(spine, "<service>@<version>", full_names)``: the offline point-in-time values of the spine's rows.
Dataset = Callable[[pa.Table, str, bool], pa.Table]
_FLOAT_BITS = {16: np.uint16, 32: np.uint32, 64: np.uint64}


@dataclass
class FeatureSkew:
    """One logged feature: how many logged rows were compared and how they differ from offline."""

    feature: str
    rows: int = 0
    mismatch: int = 0
    missing_online: int = 0
    missing_offline: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def rate(self, kind: str) -> float:
        return getattr(self, kind) / self.rows if self.rows else 0.0

    @property
    def skewed(self) -> bool:
        return any(getattr(self, k) for k in KINDS)

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "rows": self.rows, **{k: getattr(self, k) for k in KINDS},
                **{f"{k}_rate": self.rate(k) for k in KINDS}, "examples": self.examples}


@dataclass
class SkewReport:
    """Skew of one service over the logged rows of ``[start, end)``."""

    service: str
    start: datetime | None
    end: datetime | None
    rows: int
    versions: list[int]
    features: list[FeatureSkew]

    @property
    def consistent(self) -> bool:
        """No feature differs: no mismatch and nothing missing on either side."""
        return not any(f.skewed for f in self.features)

    def feature(self, name: str) -> FeatureSkew:
        for f in self.features:
            if f.feature == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "start": self.start.isoformat() if self.start else None,
                "end": self.end.isoformat() if self.end else None, "rows": self.rows, "versions": self.versions,
                "consistent": self.consistent, "features": [f.to_dict() for f in self.features]}


def sample_rows(rows: pa.Table, sample: int | None, seed: int | None = None) -> pa.Table:
    """At most ``sample`` rows of ``rows``, drawn at random (in their order), or all of them."""
    if sample is None or rows.num_rows <= sample:
        return rows
    chosen = np.sort(np.random.default_rng(seed).choice(rows.num_rows, size=sample, replace=False))
    return rows.take(pa.array(chosen))


def skew_report(service: str, rows: pa.Table, layouts: Mapping[int, dict[str, Any]], dataset: Dataset, *,
                start: datetime | None = None, end: datetime | None = None, examples: int = 3) -> SkewReport:
    """Compare logged ``rows`` (``LogTables.read``) with the offline values as of their serving times, per
    service version (``layouts`` says which columns each version logged)."""
    by_feature: dict[str, FeatureSkew] = {}
    versions = sorted(set(rows.column(SERVICE_VERSION).to_pylist())) if rows.num_rows else []
    for version in versions:
        layout = layouts.get(version)
        if layout is None:
            raise StoreError(f"the feature log of {service!r} holds rows of v{version} without their layout "
                             f"(table property quasar.log.v{version}); was it written by quasar?")
        group = rows.filter(pc.equal(rows.column(SERVICE_VERSION), version))
        _compare_version(service, version, group, layout, dataset, by_feature, examples)
    return SkewReport(service=service, start=start, end=end, rows=rows.num_rows, versions=versions,
                      features=list(by_feature.values()))


def _compare_version(service: str, version: int, group: pa.Table, layout: dict[str, Any], dataset: Dataset,
                     out: dict[str, FeatureSkew], examples: int) -> None:
    keys, fields, features = layout["join_keys"], layout["request_fields"], layout["features"]
    spine = group.select([*keys, *fields, EVENT_TIMESTAMP])
    ref = f"{service}@{version}"
    offline = dataset(spine, ref, False)
    if any(f not in offline.column_names for f in features):      # served with full feature names
        offline = dataset(spine, ref, True)
    missing = [f for f in features if f not in offline.column_names]
    if missing:
        raise StoreError(f"feature service {ref} no longer answers the logged feature(s) {', '.join(missing)}")
    types = {n: feature_type_from_dict(t) for n, t in layout["types"].items()}
    for name in features:
        stype = storage_type(types[name])
        logged = _plain(group.column(name)).cast(stype)
        other = _plain(offline.column(name)).cast(stype)
        status = _plain(group.column(name + STATUS_SUFFIX))
        online_has = np.asarray(pc.and_(pc.equal(status, "PRESENT").fill_null(False), logged.is_valid()))
        offline_has = np.asarray(other.is_valid())
        both = online_has & offline_has
        differ = both & ~_equal(logged, other)
        kinds = {"mismatch": differ, "missing_online": offline_has & ~online_has,
                 "missing_offline": online_has & ~offline_has}
        skew = out.setdefault(name, FeatureSkew(name))
        skew.rows += group.num_rows
        for kind, mask in kinds.items():
            setattr(skew, kind, getattr(skew, kind) + int(mask.sum()))
        for kind, mask in kinds.items():
            for i in np.flatnonzero(mask)[:max(0, examples - len(skew.examples))].tolist():
                skew.examples.append(_example(kind, version, group, keys, i, logged, other, status))


def _plain(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _equal(a: pa.Array, b: pa.Array) -> np.ndarray:
    """Row by row: do ``a`` and ``b`` hold the same value, bit for bit (only meaningful where both are valid)."""
    dtype = a.type
    if pa.types.is_floating(dtype):
        bits = _FLOAT_BITS[dtype.bit_width]
        left = np.asarray(a.fill_null(0).to_numpy(zero_copy_only=False)).view(bits)
        right = np.asarray(b.fill_null(0).to_numpy(zero_copy_only=False)).view(bits)
        return np.asarray(left == right)
    if not pa.types.is_nested(dtype):
        return np.asarray(pc.equal(a, b).fill_null(False))
    return np.array([_bits(x) == _bits(y) for x, y in zip(a.to_pylist(), b.to_pylist(), strict=True)], dtype=bool)


def _bits(value: Any) -> Any:
    """A nested value with every float replaced by its IEEE bits, so equality is bit for bit."""
    if isinstance(value, float):
        return ("f", np.float64(value).view(np.uint64).item())
    if isinstance(value, list):
        return [_bits(v) for v in value]
    if isinstance(value, dict):
        return {k: _bits(v) for k, v in value.items()}
    return value


def _example(kind: str, version: int, group: pa.Table, keys: Sequence[str], i: int, logged: pa.Array,
             offline: pa.Array, status: pa.Array) -> dict[str, Any]:
    served = group.column(EVENT_TIMESTAMP)[i].as_py()
    return {"kind": kind, "service_version": version, "request_id": group.column(REQUEST_ID)[i].as_py(),
            "keys": {k: group.column(k)[i].as_py() for k in keys}, "served_at": served.isoformat(),
            "online": _json_ready(logged[i].as_py()), "online_status": status[i].as_py(),
            "offline": _json_ready(offline[i].as_py())}


def _json_ready(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def format_skew(report: SkewReport) -> list[str]:
    """``quasar skew``: one row per feature with its counts and rates, then a few examples."""
    window = f"[{report.start.isoformat() if report.start else '-inf'}, {report.end.isoformat() if report.end else '+inf'})"
    versions = ", ".join(f"v{v}" for v in report.versions) or "none"
    lines = [f"skew of {report.service} over {report.rows:,} logged row(s) in {window} (service {versions}): "
             + ("online equals offline" if report.consistent else "online differs from offline")]
    if not report.features:
        return lines
    width = max([len("FEATURE"), *(len(f.feature) for f in report.features)])
    lines.append(f"  {'FEATURE':<{width}}  {'ROWS':>8}  {'MISMATCH':>9}  {'MISS_ONLINE':>11}  {'MISS_OFFLINE':>12}")
    for f in report.features:
        lines.append(f"  {f.feature:<{width}}  {f.rows:>8}  {f.rate('mismatch'):>9.2%}  "
                     f"{f.rate('missing_online'):>11.2%}  {f.rate('missing_offline'):>12.2%}")
    for f in report.features:
        for e in f.examples:
            keys = ", ".join(f"{k}={v!r}" for k, v in e["keys"].items())
            lines.append(f"  e.g. {f.feature} of {keys} served {e['served_at']} ({e['request_id']}): {e['kind']}: "
                         f"online {e['online']!r} ({e['online_status']}), offline {e['offline']!r}")
    return lines


def report_json(report: SkewReport) -> str:
    return json.dumps(report.to_dict(), indent=2, default=str)


# --- what the facade calls -------------------------------------------------------------------------------------


def _window(start: Any, end: Any) -> tuple[datetime | None, datetime | None]:
    from quasar.signals.errors import ConfigError
    from quasar.signals.times import parse_time

    lo = None if start is None else parse_time(start, "start", ConfigError)
    hi = None if end is None else parse_time(end, "end", ConfigError)
    if lo is not None and hi is not None and hi <= lo:
        raise ConfigError(f"the window end {hi.isoformat()} is not after its start {lo.isoformat()}")
    return lo, hi


def read_feature_log(catalog: Any, namespace: str, service: str, start: Any = None, end: Any = None, *,
                     features: bool = False) -> pa.Table:
    """The logged rows of ``service`` in ``[start, end)``. Without ``features``, a training spine: the log's
    own columns, ``event_timestamp``, join keys and request fields (the served values would clash with the
    dataset's feature columns); with it, also every served ``<feature>`` and ``<feature>__status``."""

    lo, hi = _window(start, end)
    tables = LogTables(catalog, namespace)
    rows = tables.read(service, lo, hi)
    if features:
        return rows
    served = {c for layout in tables.layouts(service).values() for f in layout["features"]
              for c in (f, f + STATUS_SUFFIX)}
    return rows.drop_columns([c for c in rows.column_names if c in served])


def measure_skew(catalog: Any, namespace: str, service: str, dataset: Dataset, *, start: Any = None,
                 end: Any = None, sample: int | None = None, seed: int | None = None) -> SkewReport:
    """``skew_report`` over the logged rows of ``[start, end)`` (a random ``sample`` of them when given)."""

    lo, hi = _window(start, end)
    tables = LogTables(catalog, namespace)
    rows = sample_rows(tables.read(service, lo, hi), sample, seed)
    return skew_report(service, rows, tables.layouts(service), dataset, start=lo, end=hi)
