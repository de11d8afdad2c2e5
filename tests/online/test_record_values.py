"""The fast decode (``quasar.online.record_values``) against the codec's columns it stands for: the same values
bit for bit, statuses and event times, on generated records of every UFR type with nulls, missing and stale
records; a damaged record is refused, and the read raises the codec's own error."""

from __future__ import annotations

import struct
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.online import NOW, ol_accounts, ol_all_types, ol_no_ttl, ol_short, random_rows
from quasar.online.record_values import decode_values, reader_of
from quasar.online.redis_read import ReadPlan
from quasar.online.response import (
    OnlinePlan,
    build_response,
    column_values,
    plan_request,
    response_from_records,
    status_names,
)
from quasar.online.store import columns_from_records
from quasar.signals.errors import SchemaError, SchemaMismatchError
from quasar.signals.signal import Signal
from quasar.signals.ufr.codec import encode

SIGNALS = [ol_all_types, ol_short, ol_no_ttl, ol_accounts]
NOW_US = int(NOW.timestamp() * 1_000_000)


def exact(value: Any) -> Any:
    """Values made comparable bit for bit: floats by their bytes (NaN, -0.0), at any depth."""
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    if isinstance(value, list):
        return [exact(v) for v in value]
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    return value


def codec_answer(signal: Signal, records: list[bytes | None], features: list[str], now: int) -> Any:
    got = columns_from_records(signal, 1, records, now=now)
    return ({f: exact(column_values(got.table.column(f))) for f in features},
            {f: status_names(got.status[f]) for f in features}, got.event_time_us.tolist())


def fast_answer(signal: Signal, records: list[bytes | None], features: list[str], now: int) -> Any:
    got = decode_values(reader_of(signal.schema), records, features, ttl=signal.ttl, now_us=now)
    assert got is not None
    return ({f: exact(got.values[f]) for f in features}, {f: got.statuses[f] for f in features}, got.event_time_us)


def make_records(signal: Signal, n: int, seed: int, nulls: float, missing: list[bool], ages_us: list[int]) -> list[Any]:
    keys = list(range(n)) if signal.entity.join_key_type == "int64" else [f"k{i}" for i in range(n)]
    times = [NOW - timedelta(microseconds=a) for a in ages_us]
    records: list[Any] = encode(signal.schema, random_rows(signal, keys, seed=seed, times=times, null_fraction=nulls))
    return [None if gone else r for r, gone in zip(records, missing, strict=True)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), which=st.integers(0, len(SIGNALS) - 1), n=st.integers(0, 40), seed=st.integers(0, 2**31),
       nulls=st.sampled_from([0.0, 0.0, 0.0, 0.1, 0.5, 1.0]))
def test_the_fast_decode_equals_the_codec_columns(data: st.DataObject, which: int, n: int,
                                                                        seed: int, nulls: float) -> None:
    """The drift check between the two decodes: every batch the codec decodes (records absent, stale, holding
    nulls) is decoded here with the same values, statuses and event times; a batch with a damaged record is
    refused here and the codec raises."""
    signal = SIGNALS[which]
    missing = data.draw(st.lists(st.sampled_from([False] * 6 + [True]), min_size=n, max_size=n))
    ttl = (signal.ttl or timedelta(days=1)) // timedelta(microseconds=1)
    ages = data.draw(st.lists(st.sampled_from([0, 60_000_000, ttl - 1, ttl] * 3 + [ttl + 1, 3 * ttl]),
                              min_size=n, max_size=n))
    records = make_records(signal, n, seed, nulls, missing, ages)
    present = [i for i, r in enumerate(records) if r is not None]
    if present and data.draw(st.booleans()):
        at = data.draw(st.sampled_from(present))
        kind = data.draw(st.sampled_from(sorted(damaged(records[at]))))
        records[at] = damaged(records[at])[kind]
    names = list(signal.schema.names)
    features = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
    fast = decode_values(reader_of(signal.schema), records, features, ttl=signal.ttl, now_us=NOW_US)
    try:
        codec = codec_answer(signal, records, features, NOW_US)
    except (SchemaError, SchemaMismatchError):
        assert fast is None                   # a damaged record: refused here, the codec raises
        return
    assert fast is not None, "the fast decode refused a batch the codec decodes"
    assert fast_answer(signal, records, features, NOW_US) == codec


@pytest.mark.parametrize("signal", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("n", [1, 2, 17])
def test_one_and_many_records_without_nulls(signal: Signal, n: int) -> None:
    records = make_records(signal, n, 3, 0.0, [False] * n, [10_000_000] * n)
    names = list(signal.schema.names)
    assert fast_answer(signal, records, names, NOW_US) == codec_answer(signal, records, names, NOW_US)


def damaged(record: bytes) -> dict[str, bytes]:
    """One record damaged each way the codec refuses (those that apply to its schema)."""
    out = {"truncated": record[:-1], "too long": record + b"\x00", "short header": record[:12],
           "magic": b"\x00" + record[1:], "version": record[:1] + b"\x09" + record[2:],
           "fingerprint": record[:2] + bytes(8) + record[10:]}
    return out


@pytest.mark.parametrize("kind", ["truncated", "too long", "short header", "magic", "version", "fingerprint"])
@pytest.mark.parametrize("n", [1, 3])
def test_a_damaged_record_is_refused_and_the_read_raises_the_codecs_error(kind: str, n: int) -> None:
    signal = ol_all_types
    records: list[Any] = make_records(signal, n, 5, 0.0, [False] * n, [10_000_000] * n)
    records[-1] = damaged(records[-1])[kind]
    names = list(signal.schema.names)
    assert decode_values(reader_of(signal.schema), records, names, ttl=signal.ttl, now_us=NOW_US) is None
    plan = plan_request({"user_id": list(range(n))}, ["ol_all_types"], lambda name, v: (signal, 1))
    read_plan = ReadPlan([(signal, 1)], ["ol_all_types@1"], [f"p:user:{i}" for i in range(n)])
    with pytest.raises((SchemaError, SchemaMismatchError)) as codec:
        columns_from_records(signal, 1, records, now=NOW_US)
    with pytest.raises(type(codec.value)) as fast:
        response_from_records(plan, [read_plan], [[records]], NOW_US)
    assert str(fast.value) == str(codec.value)


def test_a_null_with_a_length_and_bad_utf8_are_refused() -> None:
    signal = ol_no_ttl                                   # tier: String
    (record,) = make_records(signal, 1, 1, 0.0, [False], [10_000_000])
    layout_start = reader_of(signal.schema).fixed_size
    bad_utf8 = record[:layout_start] + b"\xff" * (len(record) - layout_start)
    bitmap_at = 26
    null_with_length = record[:bitmap_at] + b"\x00" + record[bitmap_at + 1:]
    for bad in (bad_utf8, null_with_length):
        assert decode_values(reader_of(signal.schema), [bad], ["tier"], ttl=None, now_us=NOW_US) is None
        with pytest.raises(SchemaError):
            columns_from_records(signal, 1, [bad], now=NOW_US)


def test_the_response_equals_the_codec_paths_response() -> None:
    """``response_from_records`` (what reads answer) is ``build_response`` of the codec's columns, the same
    feature asked twice included (each answer with its own list)."""
    n = 6
    missing = [False, True, False, False, True, False]
    ages = [0, 0, 8 * 86_400_000_000, 60_000_000, 0, 0]   # row 2 is stale (ol_all_types: 7 days)
    records = make_records(ol_all_types, n, 9, 0.3, missing, ages)
    features = ["ol_all_types:ctr", "ol_all_types:name", "ol_all_types:taste", "ol_all_types:weighted",
                "ol_all_types:seen_at", "ol_all_types@1:ctr"]
    plan: OnlinePlan = plan_request({"user_id": list(range(n))}, features, lambda name, v: (ol_all_types, 1),
                                    full_feature_names=True)
    read_plan = ReadPlan([(ol_all_types, 1)], ["ol_all_types@1"], [f"p:user:{i}" for i in range(n)])
    fast = response_from_records(plan, [read_plan], [[records]], NOW_US)
    codec = build_response(plan, [[columns_from_records(ol_all_types, 1, records, now=NOW_US)]])
    assert exact(fast) == exact(codec)
    first, again = fast["results"][1], fast["results"][-1]
    assert first["values"] is not again["values"]


@pytest.mark.parametrize("signal", [s for s in SIGNALS if s.ttl is not None], ids=lambda s: s.name)
@pytest.mark.parametrize("n", [1, 3])
def test_the_ttl_edge_is_the_stores(signal: Signal, n: int) -> None:
    """A record exactly ``ttl`` old is fresh, one a microsecond older is OUTSIDE_MAX_AGE, in both decodes (the
    store's rule, ``oldest_fresh_us``, on both sides)."""
    ttl = signal.ttl // timedelta(microseconds=1)            # type: ignore[operator]
    names = list(signal.schema.names)
    fresh = make_records(signal, n, 2, 0.0, [False] * n, [ttl] * n)
    assert fast_answer(signal, fresh, names, NOW_US) == codec_answer(signal, fresh, names, NOW_US)
    stale = make_records(signal, n, 2, 0.0, [False] * n, [0] * (n - 1) + [ttl + 1])
    codec = codec_answer(signal, stale, names, NOW_US)
    assert codec[1][names[0]][-1] == "OUTSIDE_MAX_AGE"
    assert fast_answer(signal, stale, names, NOW_US) == codec
