"""Signals: named, typed, versioned features of one entity, computed from one source.

Two forms share one object:

* a transform signal, ``@signal(...)`` on a function ``pa.Table -> pa.Table``;
* a declarative windowed aggregation, ``aggregate(...)`` (see ``quasar.signals.aggregation``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import pyarrow as pa

from quasar.signals.aggregation import Aggregation
from quasar.signals.durations import format_duration, parse_duration
from quasar.signals.entity import Entity
from quasar.signals.errors import DefinitionError
from quasar.signals.expectations import check_expectations
from quasar.signals.fingerprint import transform_code
from quasar.signals.schedule import (
    Schedule,
    check_freshness,
    check_schedule,
    default_freshness,
    effective_schedule,
    format_schedule,
)
from quasar.signals.source import Source
from quasar.signals.ufr.schema import CREATED_TIMESTAMP, EVENT_TIMESTAMP, FeatureSchema, check_name

Transform = Callable[[pa.Table], pa.Table]
SignalKind = Literal["transform", "aggregation"]
POLICIES = ("strict", "warn")
SCOPES = ("entity", "window")       # what one call of a transform sees: one entity group's rows, or the window's


def _hash(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True, eq=False)
class Signal:
    """A signal definition. Build it with ``@signal`` or ``aggregate``, not directly."""

    name: str
    kind: SignalKind
    entity: Entity
    source: Source
    schema: FeatureSchema
    ttl: timedelta | None = None
    online: bool = False
    owner: str = ""
    description: str = ""
    code: str = ""                                  # canonical code (quasar.signals.fingerprint), or aggregation spec
    aggregations: tuple[Aggregation, ...] = ()
    step: timedelta | None = None
    expectations: tuple[dict[str, Any], ...] = ()   # great-expectations Expectations, plain (quasar.signals.expectations)
    policy: str = "strict"
    transform: Transform | None = field(default=None, repr=False)
    module: str = ""                                # where it was defined: file path or module name
    scope: str = "entity"                           # a transform's call: per entity (default) or the whole window
    schedule: Schedule | None = None                # as declared (quasar.signals.schedule); None: the default
    freshness: timedelta | None = None              # as declared; None: the default for the schedule

    def __post_init__(self) -> None:
        check_name(self.name, "signal")
        if not isinstance(self.entity, Entity):
            raise DefinitionError(f"signal {self.name!r}: entity must be an Entity, got {self.entity!r}")
        if not isinstance(self.source, Source):
            raise DefinitionError(f"signal {self.name!r}: source must be a Source, got {self.source!r}")
        if self.policy not in POLICIES:
            raise DefinitionError(f"signal {self.name!r}: policy must be 'strict' or 'warn', got {self.policy!r}")
        if self.scope not in SCOPES:
            raise DefinitionError(f"signal {self.name!r}: scope must be 'entity' or 'window', got {self.scope!r}")
        if self.kind == "aggregation" and self.scope != "entity":
            raise DefinitionError(f"signal {self.name!r}: an aggregation is per entity by definition; scope is "
                                  "for transforms")
        clash = {self.entity.join_key} & set(self.schema.names)
        if clash:
            raise DefinitionError(f"signal {self.name!r}: feature {clash.pop()!r} clashes with the join key")
        if self.kind == "aggregation" and (not self.aggregations or self.step is None):
            raise DefinitionError(f"signal {self.name!r}: an aggregation needs aggregations and a step")
        where = f"signal {self.name!r}"
        object.__setattr__(self, "schedule", check_schedule(self.schedule, where))
        object.__setattr__(self, "freshness", check_freshness(self.freshness, self.run_schedule, where))
        columns = [self.entity.join_key, EVENT_TIMESTAMP, CREATED_TIMESTAMP, *self.schema.names]
        object.__setattr__(self, "expectations",
                           check_expectations(self.expectations, columns, f"signal {self.name!r}"))

    # --- identity -------------------------------------------------------------------------------
    @property
    def features(self) -> dict[str, Any]:
        return self.schema.as_dict()

    @property
    def upstream(self) -> list[str]:
        """Names of the signals this one is computed from."""
        return [self.source.upstream] if self.source.kind == "signal" and self.source.upstream else []

    @property
    def code_fingerprint(self) -> str:
        return _hash(self.code)

    @property
    def definition_fingerprint(self) -> str:
        """What makes a new version, i.e. what the signal computes: its features (schema), its code (the
        transform's normalised code with the helpers and constants it uses, or the aggregation spec), the
        identity of its entity and source, its step and scope. Owner, TTL, online, descriptions,
        expectations, schedule and freshness are metadata: they change in place."""
        return _hash(self.schema.fingerprint_hex, self.code_fingerprint, self.entity.identity(),
                     self.source.identity(), format_duration(self.step) if self.step else None,
                     *(() if self.scope == "entity" else (("scope", self.scope),)))  # default: versions kept

    def with_fresh_code(self) -> Signal:
        """This signal with its code read again from its transform: registration calls it once the module has
        run, so helpers and constants defined below the signal count too."""
        if self.kind != "transform" or self.transform is None:
            return self
        code = transform_code(self.transform)
        return self if code == self.code else dataclasses.replace(self, code=code)

    @property
    def run_schedule(self) -> timedelta | None:
        """How often ``quasar run`` computes it: the declared schedule, else an aggregation's step, else a day;
        None for ``schedule="manual"`` (``quasar.signals.schedule``)."""
        return effective_schedule(self.schedule, self.step)

    @property
    def freshness_target(self) -> timedelta | None:
        """The most its newest computed day may lag behind now: declared, else the schedule's default (None for
        a manual signal that declares none)."""
        return self.freshness if self.freshness is not None else default_freshness(self.run_schedule)

    @property
    def max_window(self) -> timedelta | None:
        return max((a.window for a in self.aggregations), default=None)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.transform is None:
            raise DefinitionError(f"signal {self.name!r} has no Python transform to call")
        return self.transform(batch)

    # --- serialization --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "entity": self.entity.to_dict(),
            "source": self.source.to_dict(), "schema": self.schema.to_dict(),
            "ttl": format_duration(self.ttl) if self.ttl else None, "online": self.online,
            "owner": self.owner, "description": self.description, "code": self.code,
            "aggregations": [a.to_dict() for a in self.aggregations],
            "step": format_duration(self.step) if self.step else None,
            "expectations": [json.loads(json.dumps(e)) for e in self.expectations],
            "policy": self.policy, "module": self.module, "scope": self.scope,
            **({"schedule": format_schedule(self.schedule)} if self.schedule is not None else {}),  # declared only:
            **({"freshness": format_duration(self.freshness)} if self.freshness else {}),  # rows stay as they were
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], transform: Transform | None = None) -> Signal:
        return cls(
            name=data["name"], kind=data["kind"], entity=Entity.from_dict(data["entity"]),
            source=Source.from_dict(data["source"]), schema=FeatureSchema.from_dict(data["schema"]),
            ttl=parse_duration(data.get("ttl"), "ttl"), online=bool(data.get("online", False)),
            owner=data.get("owner", ""), description=data.get("description", ""), code=data.get("code", ""),
            aggregations=tuple(Aggregation.from_dict(a) for a in data.get("aggregations", [])),
            step=parse_duration(data.get("step"), "step"),
            expectations=tuple(data.get("expectations", [])),
            policy=data.get("policy", "strict"), transform=transform, module=data.get("module", ""),
            scope=data.get("scope", "entity"), schedule=data.get("schedule"),
            freshness=parse_duration(data.get("freshness"), "freshness"),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Signal) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.name, self.definition_fingerprint))


def _common(name: str, entity: Entity, source: Source, ttl: str | timedelta | None, online: bool,
            owner: str, expectations: Sequence[Any], policy: str, schedule: str | timedelta | None,
            freshness: str | timedelta | None) -> dict[str, Any]:
    check_name(name, "signal")
    return {"name": name, "entity": entity, "source": source, "ttl": parse_duration(ttl, f"signal {name!r} ttl"),
            "online": bool(online), "owner": owner, "expectations": expectations, "policy": policy,
            "schedule": schedule, "freshness": freshness}


def signal(*, entity: Entity, source: Source, features: Mapping[str, Any], ttl: str | timedelta | None = None,
           online: bool = False, owner: str = "", name: str | None = None, description: str | None = None,
           expectations: Sequence[Any] = (), policy: str = "strict", scope: str = "entity",
           schedule: str | timedelta | None = None,
           freshness: str | timedelta | None = None) -> Callable[[Transform], Signal]:
    """Decorate ``fn(batch: pa.Table) -> pa.Table`` as a transform signal.

    The function gets source rows of the backfill window and returns rows of the entity's join key,
    ``event_timestamp`` and the declared features (``created_timestamp`` optional). With ``scope="entity"``
    (the default) each call gets all rows of some entity keys, in source order, and must not look across
    entities; ``scope="window"`` gets the whole window in one call (a share of the day's total, a rank). Both
    engines call it over the same groups, so its values never depend on the engine.

    ``schedule`` (default ``"1d"``; ``"manual"``: never by ``quasar run``) and ``freshness`` (default: the
    schedule's, ``"26h"`` for a day) say how often ``quasar run`` computes it and how stale it may get
    (``quasar.signals.schedule``); they are metadata, not part of its version.
    """

    def wrap(fn: Transform) -> Signal:
        if not callable(fn):
            raise DefinitionError(f"@signal decorates a function, got {fn!r}")
        sig_name = name or fn.__name__
        doc = description if description is not None else inspect.getdoc(fn) or ""
        return Signal(kind="transform", schema=FeatureSchema.of(features, f"signal {sig_name!r} features"),
                      description=doc.strip().splitlines()[0] if doc.strip() else "",
                      code=transform_code(fn), transform=fn, module=getattr(fn, "__module__", ""), scope=scope,
                      **_common(sig_name, entity, source, ttl, online, owner, expectations, policy, schedule,
                                freshness))

    return wrap


def aggregate(*, name: str, entity: Entity, source: Source, aggregations: Sequence[Aggregation],
              step: str | timedelta, ttl: str | timedelta | None = None, online: bool = False, owner: str = "",
              description: str = "", expectations: Sequence[Any] = (), policy: str = "strict",
              schedule: str | timedelta | None = None, freshness: str | timedelta | None = None) -> Signal:
    """A declarative windowed aggregation signal, e.g. counts and means over 1d and 7d, every day; ``quasar run``
    computes it every ``step`` unless ``schedule`` says otherwise (``quasar.signals.schedule``)."""
    aggs = tuple(aggregations)
    if not aggs or not all(isinstance(a, Aggregation) for a in aggs):
        raise DefinitionError(f"signal {name!r}: aggregations must be a non-empty list of Aggregation")
    names = [a.name for a in aggs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DefinitionError(f"signal {name!r}: duplicate aggregation names {dupes}")
    step_td = parse_duration(step, f"signal {name!r} step")
    features = {a.name: a.dtype for a in aggs}
    spec = {"step": format_duration(step_td) if step_td else None, "aggregations": [a.to_dict() for a in aggs]}
    return Signal(kind="aggregation", schema=FeatureSchema.of(features, f"signal {name!r}"),
                  description=description, code=json.dumps(spec, sort_keys=True), aggregations=aggs, step=step_td,
                  **_common(name, entity, source, ttl, online, owner, expectations, policy, schedule, freshness))
