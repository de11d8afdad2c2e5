"""The read side of the Redis online store, shared by the synchronous and asyncio clients: which hashes and
fields a read asks for (``plan_read``), the commands that fetch them in one round trip (``read_commands``),
their replies as records by field (``split_replies``), and the records decoded (``decode_records``).

One ``HMGET <hash> <field>...`` fetches one key. More keys go through the ``READ_MANY`` script: one command
and one reply for all the keys of an entity (redis-py parses one reply instead of one per key), several
entities being one pipeline of script calls. In cluster mode the keys of one script call would have to
share a slot, so there it is one pipelined ``HMGET`` per key.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from quasar.online.keys import entity_keys, field_name
from quasar.online.store import OnlineColumns, columns_from_records
from quasar.signals.errors import OnlineStoreError, RequestError
from quasar.signals.signal import Signal


@dataclass(frozen=True)
class ReadPlan:
    signal_versions: list[tuple[Signal, int]]
    fields: list[str]
    keys: list[str]


def plan_read(project: str, signal_versions: Sequence[tuple[Signal, int]], keys: Sequence[Any]) -> ReadPlan:
    """The hash keys and fields of a read; RequestError when the signals are not all of one entity."""
    pairs = [(s, int(v)) for s, v in signal_versions]
    if not pairs:
        raise RequestError("an online read needs at least one signal")
    entity = pairs[0][0].entity
    for s, _ in pairs[1:]:
        if s.entity.name != entity.name:
            raise RequestError(f"one online read is for one entity: signal {s.name!r} is about {s.entity.name!r}, "
                               f"signal {pairs[0][0].name!r} about {entity.name!r}")
    if isinstance(keys, (str, bytes)):
        raise RequestError(f"{entity.join_key}: give a list of keys, not one string")
    return ReadPlan(pairs, [field_name(s.name, v) for s, v in pairs], entity_keys(project, entity, keys))


def finish_read(plan: ReadPlan, replies: Sequence[Sequence[bytes | None]], now_us: int | None) -> list[OnlineColumns]:
    """Decode the HMGET replies (one per key, one record per field) into one OnlineColumns per signal."""
    if len(replies) != len(plan.keys):
        raise OnlineStoreError(f"the online store answered {len(replies)} rows for {len(plan.keys)} keys")
    return [columns_from_records(signal, version, [row[j] for row in replies], now=now_us)
            for j, (signal, version) in enumerate(plan.signal_versions)]


#: The read of several keys in one command: KEYS the entity hashes, ARGV the fields; the reply is every key's
#: HMGET, flat (key-major: the fields of KEYS[1], then of KEYS[2], ...), a missing field nil.
READ_MANY = """
local fields = #ARGV
local out = {}
local n = 0
for _, key in ipairs(KEYS) do
  local got = redis.call('HMGET', key, unpack(ARGV))
  for j = 1, fields do out[n + j] = got[j] end
  n = n + fields
end
return out
"""
READ_MANY_SHA = hashlib.sha1(READ_MANY.encode()).hexdigest()

#: ``records[j][i]``: the record of field j for key i (None where not stored), for one ``ReadPlan``.
Records = list[list[bytes | None]]


def read_commands(plans: Sequence[ReadPlan], *, cluster: bool) -> tuple[str, list[tuple[Any, ...]]]:
    """How ``read_records`` asks for ``plans``' records: ``"hmget"`` (one command per key, in plan order) or
    ``"script"`` (one ``READ_MANY`` call per plan with keys), and the commands."""
    todo = [p for p in plans if p.keys]
    if cluster or (len(todo) == 1 and len(todo[0].keys) == 1):
        return "hmget", [("HMGET", key, *p.fields) for p in todo for key in p.keys]
    return "script", [("EVALSHA", READ_MANY_SHA, len(p.keys), *p.keys, *p.fields) for p in todo]


def split_replies(plans: Sequence[ReadPlan], how: str, replies: Sequence[Any]) -> list[Records]:
    """The replies of ``read_commands`` as each plan's records by field, then key."""
    out: list[Records] = []
    it = iter(replies)
    for plan in plans:
        m = len(plan.fields)
        if not plan.keys:
            out.append([[] for _ in range(m)])
            continue
        if how == "script":
            flat = next(it)
            if len(flat) != m * len(plan.keys):
                raise OnlineStoreError(f"the online store answered {len(flat)} records for {len(plan.keys)} keys "
                                       f"x {m} fields")
            out.append([flat[j::m] for j in range(m)])
        else:
            rows = list(itertools.islice(it, len(plan.keys)))
            if len(rows) != len(plan.keys):
                raise OnlineStoreError(f"the online store answered {len(rows)} rows for {len(plan.keys)} keys")
            out.append([[row[j] for row in rows] for j in range(m)])
    return out


def decode_records(plan: ReadPlan, records: Records, now_us: int | None) -> list[OnlineColumns]:
    """One plan's records (``split_replies``) as one OnlineColumns per signal."""
    return [columns_from_records(signal, version, records[j], now=now_us)
            for j, (signal, version) in enumerate(plan.signal_versions)]
