"""Which row wins for an entity: the one ordering rule of offline joins, materialization and the online store.

Of an entity's candidate rows, the winner is the row with

1. the latest ``event_timestamp``, then
2. the latest ``created_timestamp``, where a null created time is the oldest of all, then
3. the later row: later in the offline files' plan order (later file, then later row in the file), or, online,
   the later write.

A batch written without a created time was created when it was written (``stamp_created``): a backfill's rows
get its run time, a push's rows their arrival time, so of two writes of one event time the later one wins (as
pushes do in Feast and Tecton); a created time given is kept as it is, its nulls included.

Times compare as exact int64 microseconds, never as floats. A null created time is ``NULL_CREATED_US``
(int64 min), so the rule is the lexicographic order of ``(event us, created us, position)``; no time a
``datetime`` can hold comes near that sentinel (year 1 is about -6.2e16 µs, int64 min about -9.2e18).

Who applies it: the point-in-time join (``quasar.store.pit_local``, and the Spark join through it), materialization
(``latest_per_entity`` below) and the Redis newer-wins script (``quasar.online.lua``), which reads the same two
times from the UFR record header (``quasar.signals.ufr.codec``) and lets a write win only when its rank is not
lower than the stored one's (an exact tie goes to the later write). ``tests/online/test_ordering_rule.py``
checks the script against ``winner`` on a real Redis.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quasar.signals.errors import SchemaError

#: The created time of a row whose ``created_timestamp`` is null: older than any real created time.
NULL_CREATED_US = -(2**63)
_RANK = struct.Struct("<qq")

Rank = tuple[int, int]


def rank(event_us: int, created_us: int | None) -> Rank:
    """A row's rank: (event us, created us), a null created time as ``NULL_CREATED_US``. Higher ranks win."""
    return int(event_us), NULL_CREATED_US if created_us is None else int(created_us)


def wins(new: Rank, stored: Rank | None) -> bool:
    """Whether a row of rank ``new`` that comes later replaces one of rank ``stored`` (None: nothing yet).

    A tie goes to the later row, so a re-written identical rank replaces what was there.
    """
    return stored is None or new >= stored


def winner(ranks: Sequence[Rank]) -> int | None:
    """The index of the winning row among ``ranks`` given in row order (None when there is none)."""
    best: int | None = None
    for i, r in enumerate(ranks):
        if wins(r, None if best is None else ranks[best]):
            best = i
    return best


def rank_bytes(event_us: int, created_us: int | None) -> bytes:
    """A rank as 16 bytes, event then created time, each int64 little-endian, as UFR record headers hold them."""
    return _RANK.pack(*rank(event_us, created_us))


def created_us(column: pa.Array | pa.ChunkedArray | None, n: int) -> np.ndarray:
    """A ``created_timestamp`` column (None: absent) as int64 µs, ``NULL_CREATED_US`` where null."""
    if column is None:
        return np.full(n, NULL_CREATED_US, dtype=np.int64)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    t = column.type
    if pa.types.is_null(t):
        return np.full(n, NULL_CREATED_US, dtype=np.int64)
    if pa.types.is_timestamp(t):
        column = column.cast(pa.timestamp("us", tz=t.tz), safe=True)
    elif not pa.types.is_integer(t):
        raise SchemaError(f"created time column has Arrow type {t}; give timestamp[us, UTC] or int64 microseconds")
    values = pc.fill_null(column.cast(pa.int64(), safe=True), NULL_CREATED_US)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.int64)


def stamp_created(rows: pa.Table, at_us: int, *, event: str = "event_timestamp",
                  created: str = "created_timestamp") -> pa.Table:
    """``rows`` as written at ``at_us`` (µs): without a ``created`` column every row gets ``at_us`` (the column
    goes right after ``event``, or last); a ``created`` column given is kept as it is, nulls included."""
    if created in rows.column_names:
        return rows
    column = pa.array(np.full(rows.num_rows, at_us, dtype=np.int64)).cast(pa.timestamp("us", tz="UTC"))
    at = rows.column_names.index(event) + 1 if event in rows.column_names else rows.num_columns
    return rows.add_column(at, created, column)


def latest_per_entity(rows: pa.Table, join_key: str, *, event: str = "event_timestamp",
                      created: str = "created_timestamp", position: str | None = None) -> pa.Table:
    """One row per join key value: the winner by the rule above.

    ``position`` names an int64 column giving each row's place in plan order; without it the table's own
    row order is the plan order. A missing ``created`` column counts as all null. Rows come back ordered by key.
    """
    n = rows.num_rows
    if n <= 1:
        return rows
    made = created_us(rows.column(created) if created in rows.column_names else None, n)
    ranks = pa.table({"k": rows.column(join_key),
                      "e": rows.column(event).cast(pa.int64()),
                      "c": pa.array(made, pa.int64()),
                      "p": rows.column(position) if position else pa.array(np.arange(n, dtype=np.int64))})
    order = pc.sort_indices(ranks, sort_keys=[("k", "ascending"), ("e", "descending"), ("c", "descending"),
                                              ("p", "descending")])
    keys = ranks.column("k").take(order).combine_chunks()
    first = np.ones(len(keys), dtype=bool)
    first[1:] = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1)).to_numpy(zero_copy_only=False)
    return rows.take(order.filter(pa.array(first)))
