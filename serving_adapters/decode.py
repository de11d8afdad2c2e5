"""The scorer's decode of online records: only the features a model reads, one numpy pass per signal.

``quasar.online.store.columns_from_records`` decodes every feature of a signal; a model often reads a few
(the ranker reads a pin's embedding, not its category string or topic ids), and the scorer decodes hundreds
of candidate records per group. ``decode_read`` gives the same ``OnlineColumns`` restricted to the features
one ``SignalRead`` names: the same values, nulls, event times and statuses (PRESENT, NOT_FOUND, NULL_VALUE,
OUTSIDE_MAX_AGE past the signal's TTL, the stale row's values nulled), its table holding those features only
(in schema order). Variable-length payloads of the features it skips are never gathered; only their counts
are read, to check each record's length.

It checks every record as the UFR codec does (magic, format version, schema fingerprint, lengths, a null
with a non-zero count) and, on any doubt, hands the whole batch to the codec's own decoder, so that a damaged
or mismatched record fails with exactly the codec's error. A request's worth of records (at most
``quasar.signals.ufr.codec.SMALL_BATCH``) takes the codec's small-batch path and is then projected. Each
feature's column is built by the codec's own slot decoder (``quasar.signals.ufr.codec``), so the rules of
the format stay written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import pyarrow as pa

from quasar.online.store import FeatureStatus, OnlineColumns, columns_from_records
from quasar.signals.signal import Signal
from quasar.signals.ufr.codec import SMALL_BATCH, decode, decode_slot
from quasar.signals.ufr.codec_layout import (
    CREATED_TIME_OFFSET,
    EVENT_TIME_OFFSET,
    FINGERPRINT_OFFSET,
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    Layout,
    Slot,
    layout_of,
)

_PRESENT, _NOT_FOUND, _NULL_VALUE, _OUTSIDE_MAX_AGE = (np.uint8(s) for s in (
    FeatureStatus.PRESENT, FeatureStatus.NOT_FOUND, FeatureStatus.NULL_VALUE, FeatureStatus.OUTSIDE_MAX_AGE))


def _project(columns: OnlineColumns, features: Sequence[str]) -> OnlineColumns:
    wanted = set(features)
    names = [n for n in columns.table.column_names if n in wanted]
    return OnlineColumns(columns.signal, columns.version, columns.table.select(names), columns.event_time_us,
                         {n: columns.status[n] for n in names})


def decode_read(signal: Signal, version: int, features: Sequence[str], records: Sequence[bytes | None], *,
                now: int) -> OnlineColumns:
    """``records`` of ``signal@version`` (None: not stored) as ``OnlineColumns`` of ``features`` only, with
    statuses as of ``now`` (µs); see the module."""
    layout = layout_of(signal.schema)
    n = len(records)
    if n <= SMALL_BATCH:
        return _project(columns_from_records(signal, version, records, now=now), features)
    fast = _fast(layout, signal, version, features, records, now)
    if fast is None:        # something is off with a record: the codec says what (and raises)
        decode(signal.schema, records, signal=signal.name)
        return _project(columns_from_records(signal, version, records, now=now), features)
    return fast


def _fast(layout: Layout, signal: Signal, version: int, features: Sequence[str], records: Sequence[bytes | None],
          now: int) -> OnlineColumns | None:
    n = len(records)
    if None in records:
        found = np.fromiter((r is not None for r in records), dtype=bool, count=n)
        present: Sequence[bytes] = [r for r in records if r is not None]
    else:
        found = np.ones(n, dtype=bool)
        present = records  # type: ignore[assignment]
    rows = np.flatnonzero(found)
    size = layout.fixed_size
    lengths = np.zeros(n, dtype=np.int64)
    lengths[rows] = np.fromiter(map(len, present), dtype=np.int64, count=len(present))
    if rows.size and int(lengths[rows].min()) < size:
        return None
    joined = b"".join(present)
    buf = np.frombuffer(joined, dtype=np.uint8)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    if rows.size and int(lengths[rows].max()) == size:               # no payloads: the records are the matrix
        head = buf.reshape(rows.size, size)
    else:                   # each record's fixed part by bytes slicing (cheaper than a numpy gather of them all)
        head = np.frombuffer(b"".join([r[:size] for r in present]), dtype=np.uint8).reshape(rows.size, size)
    if rows.size == n:
        fixed = head
    else:
        fixed = np.zeros((n, size), dtype=np.uint8)
        fixed[rows] = head
    if rows.size:
        expected_print = np.frombuffer(layout.fingerprint, dtype=np.uint8)
        if ((head[:, 0] != MAGIC).any() or (head[:, 1] != FORMAT_VERSION).any()
                or (head[:, FINGERPRINT_OFFSET:EVENT_TIME_OFFSET] != expected_print).any()):
            return None
    valid = np.unpackbits(fixed[:, HEADER_SIZE:HEADER_SIZE + layout.bitmap_size], axis=1,
                          count=layout.n_features, bitorder="little").astype(bool)
    # every variable payload's count (to check lengths and to find the wanted payloads), in record order
    counts: dict[int, np.ndarray] = {}
    expected = np.full(n, size, dtype=np.int64)
    for slot in layout.slots:
        if not slot.segments:
            continue
        count = np.ascontiguousarray(fixed[:, slot.offset:slot.offset + 4]).view("<u4").reshape(n).astype(np.int64)
        if (~valid[:, slot.index] & (count != 0)).any():
            return None
        counts[slot.index] = count
        expected += count * sum(slot.segments)
    if (found & (expected != lengths)).any():
        return None
    wanted = set(features)
    slots: list[Slot] = [s for s in layout.slots if s.name in wanted]
    cursors: dict[int, np.ndarray] = {}
    cursor = starts + size
    for slot in layout.slots:
        if slot.segments:
            cursors[slot.index] = cursor
            cursor = cursor + counts[slot.index] * sum(slot.segments)
    columns = [decode_slot(s, fixed, valid[:, s.index], counts.get(s.index), buf, cursors.get(s.index, starts),
                            signal.name)[0] for s in slots]
    table = pa.Table.from_arrays(columns, schema=pa.schema([layout.arrow_schema.field(s.index) for s in slots]))
    times = np.ascontiguousarray(fixed[:, EVENT_TIME_OFFSET:CREATED_TIME_OFFSET]).view("<i8").reshape(n).astype(
        np.int64)
    codes = np.where(found, _PRESENT, _NOT_FOUND)
    fresh = found
    if signal.ttl is not None and rows.size:
        stale = found & (now - times > signal.ttl // timedelta(microseconds=1))
        if stale.any():              # null stale rows: take with a null index gives a null of any type
            table = table.take(pa.array(np.arange(n, dtype=np.int64), mask=stale))
            codes[stale] = _OUTSIDE_MAX_AGE
            fresh = found & ~stale
    status: dict[str, np.ndarray] = {}
    for slot in slots:
        column = codes.copy()
        column[fresh & ~valid[:, slot.index]] = _NULL_VALUE
        status[slot.name] = column
    return OnlineColumns(signal=signal.name, version=version, table=table, event_time_us=times, status=status)
