"""The Redis online store against a real redis-server: exact round trips of every UFR type, statuses, the key
layout, newer-wins and expiry, the asyncio twin, and a one-node cluster."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import redis

from fixtures.online import (
    NOW,
    ONLINE_PROJECT,
    ol_accounts,
    ol_all_types,
    ol_no_ttl,
    ol_short,
    plain,
    random_rows,
)
from quasar.online.keys import field_name
from quasar.online.redis_store import KEYS_PER_CALL, AsyncRedisOnlineStore, RedisOnlineStore
from quasar.online.store import FeatureStatus, OnlineColumns, load_online_store
from quasar.signals.errors import QuasarError, RequestError, SchemaError, SchemaMismatchError
from quasar.signals.ufr.codec import encode
from quasar.signals.ufr.schema import EVENT_TIMESTAMP
from quasar.signals.ufr.types import TIMESTAMP_ARROW

P, N, NULL, STALE = (FeatureStatus.PRESENT, FeatureStatus.NOT_FOUND, FeatureStatus.NULL_VALUE,
                     FeatureStatus.OUTSIDE_MAX_AGE)
DAY_MS = 86_400_000


def _us(t: Any) -> int:
    return int(pa.scalar(t, TIMESTAMP_ARROW).cast(pa.int64()).as_py())


def assert_same_rows(got: OnlineColumns, rows: pa.Table, signal: Any) -> None:
    """``got`` holds exactly ``rows``' features, bit for bit (floats by their bytes, through the codec)."""
    schema = signal.schema
    assert got.table.schema.equals(schema.arrow_schema())
    assert plain(got.table.to_pylist()) == plain(rows.select(schema.names).to_pylist())
    stamped = got.table.append_column(EVENT_TIMESTAMP, pa.array(got.event_time_us, pa.int64()))
    assert encode(schema, stamped) == encode(schema, rows)
    assert got.event_time_us.tolist() == rows.column(EVENT_TIMESTAMP).cast(pa.int64()).to_pylist()


def test_every_ufr_type_round_trips_exactly(online_store: RedisOnlineStore) -> None:
    keys = list(range(300))
    rows = random_rows(ol_all_types, keys, seed=1)
    assert online_store.write(ol_all_types, 1, rows) == 300
    (got,) = online_store.read([(ol_all_types, 1)], keys)
    assert (got.signal, got.version) == ("ol_all_types", 1)
    assert_same_rows(got, rows, ol_all_types)
    for name in ol_all_types.schema.names:       # every null is NULL_VALUE, every value PRESENT
        nulls = rows.column(name).is_null().to_numpy(zero_copy_only=False)
        assert got.status[name].tolist() == np.where(nulls, NULL, P).tolist()
    # keys asked in another order (with a repeat) come back in that order
    order = [7, 3, 3, 299, 0]
    (again,) = online_store.read([(ol_all_types, 1)], order)
    assert_same_rows(again, rows.take(pa.array(order)), ol_all_types)


def test_statuses_and_stale_values_are_nulled(online_store: RedisOnlineStore) -> None:
    times = [NOW - timedelta(days=1), NOW - timedelta(days=8), NOW - timedelta(hours=1)]
    rows = random_rows(ol_all_types, [1, 2, 3], times=times, seed=2, null_fraction=0.0)
    rows = rows.set_column(rows.schema.get_field_index("clicks"), "clicks", pa.array([5, 6, None], pa.int64()))
    online_store.write(ol_all_types, 1, rows)
    (got,) = online_store.read([(ol_all_types, 1)], [1, 2, 3, 4])
    assert got.status["clicks"].tolist() == [P, STALE, NULL, N]
    assert got.status["taste"].tolist() == [P, STALE, P, N]
    assert got.table.column("clicks").to_pylist() == [5, None, None, None]
    for name in ol_all_types.schema.names:           # the stale row and the missing one are null everywhere
        assert got.table.column(name).to_pylist()[1] is None
        assert got.table.column(name).to_pylist()[3] is None
    assert got.table.column("taste").to_pylist()[0] == rows.column("taste").to_pylist()[0]
    assert got.event_time_us.tolist() == [_us(times[0]), _us(times[1]), _us(times[2]), 0]


def test_ttl_boundary_is_measured_from_the_records_event_time(online_store: RedisOnlineStore) -> None:
    rows = random_rows(ol_short, [1], times=[NOW], null_fraction=0.0)
    online_store.write(ol_short, 1, rows)
    day_us = 86_400_000_000
    (exact,) = online_store.read([(ol_short, 1)], [1], now_us=_us(NOW) + day_us)
    (past,) = online_store.read([(ol_short, 1)], [1], now_us=_us(NOW) + day_us + 1)
    assert exact.status["count"].tolist() == [P]
    assert past.status["count"].tolist() == [STALE]
    assert past.table.column("count").to_pylist() == [None]


def test_key_layout_one_hash_per_entity_one_field_per_signal_version(online_store: RedisOnlineStore,
                                                                    redis_url: str) -> None:
    users = random_rows(ol_all_types, [42, -7], seed=3)
    short = random_rows(ol_short, [42], seed=4)
    accounts = random_rows(ol_accounts, ["acme", "a:b c/é"], seed=5)
    online_store.write(ol_all_types, 1, users)
    online_store.write(ol_all_types, 2, users.slice(0, 1))
    online_store.write(ol_short, 3, short)
    online_store.write(ol_accounts, 1, accounts)
    client = redis.Redis.from_url(redis_url)
    assert sorted(client.keys("*")) == sorted(k.encode() for k in [
        "octest:user:42", "octest:user:-7", "octest:account:acme", "octest:account:a:b c/é"])
    assert client.hgetall("octest:user:42") == {
        b"ol_all_types@1": encode(ol_all_types.schema, users)[0],
        b"ol_all_types@2": encode(ol_all_types.schema, users)[0],
        b"ol_short@3": encode(ol_short.schema, short)[0]}
    assert client.hgetall("octest:account:a:b c/é") == {b"ol_accounts@1": encode(ol_accounts.schema, accounts)[1]}
    assert field_name("ol_all_types", 2) == "ol_all_types@2"
    # one read, several signal versions of one entity: one OnlineColumns each, in request order
    got = online_store.read([(ol_short, 3), (ol_all_types, 2), (ol_all_types, 1)], [42, -7])
    assert [(c.signal, c.version) for c in got] == [("ol_short", 3), ("ol_all_types", 2), ("ol_all_types", 1)]
    assert got[0].status["count"].tolist()[1] == N
    assert got[1].status["taste"].tolist()[1] == N
    assert_same_rows(got[2], users, ol_all_types)
    (acct,) = online_store.read([(ol_accounts, 1)], ["a:b c/é", "acme"])
    assert_same_rows(acct, accounts.take(pa.array([1, 0])), ol_accounts)


def test_older_writes_are_rejected_and_equal_times_replace(online_store: RedisOnlineStore) -> None:
    new = random_rows(ol_short, [1, 2], times=[NOW, NOW], seed=1, null_fraction=0.0)
    old = random_rows(ol_short, [1, 2], times=[NOW - timedelta(seconds=1), NOW], seed=2, null_fraction=0.0)
    assert online_store.write(ol_short, 1, new) == 2
    assert online_store.write(ol_short, 1, old) == 1          # key 1 older: rejected; key 2 equal: replaced
    (got,) = online_store.read([(ol_short, 1)], [1, 2])
    assert got.table.column("count").to_pylist() == [new.column("count")[0].as_py(), old.column("count")[1].as_py()]
    # in one write, rows of one key in any order: the newest stays
    t = [NOW + timedelta(seconds=s) for s in (5, 9, 7)]
    burst = random_rows(ol_short, [3, 3, 3], times=t, seed=3, null_fraction=0.0)
    assert online_store.write(ol_short, 1, burst) == 2
    (got,) = online_store.read([(ol_short, 1)], [3])
    assert got.table.column("count").to_pylist() == [burst.column("count")[1].as_py()]
    assert online_store.write(ol_short, 1, burst.slice(0, 0)) == 0


def test_a_stored_value_too_short_to_hold_a_time_is_replaced(online_store: RedisOnlineStore, redis_url: str) -> None:
    redis.Redis.from_url(redis_url).hset("octest:user:1", "ol_short@1", b"junk")
    rows = random_rows(ol_short, [1], times=[NOW - timedelta(hours=2)], null_fraction=0.0)
    assert online_store.write(ol_short, 1, rows) == 1
    (got,) = online_store.read([(ol_short, 1)], [1])
    assert_same_rows(got, rows, ol_short)


def test_expiry_is_set_from_the_ttl_and_never_shortened(online_store: RedisOnlineStore, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    fresh, stale = NOW - timedelta(days=1), NOW - timedelta(days=10)
    before = int(client.time()[0]) * 1000
    online_store.write(ol_all_types, 1, random_rows(ol_all_types, [1, 2], times=[fresh, stale]))
    after = int(client.time()[0]) * 1000 + 1000
    # event time + 2 * ttl (7d), unless now + ttl is later
    assert client.pexpiretime("octest:user:1") == _us(fresh) // 1000 + 14 * DAY_MS
    assert before + 7 * DAY_MS <= client.pexpiretime("octest:user:2") <= after + 7 * DAY_MS
    # a signal with a shorter TTL writing the same key does not shorten its expiry
    expiry = client.pexpiretime("octest:user:1")
    online_store.write(ol_short, 1, random_rows(ol_short, [1], times=[NOW]))
    assert client.pexpiretime("octest:user:1") == expiry
    # nor does a newer record whose own target is earlier than a longer expiry set by hand
    client.pexpireat("octest:user:1", expiry + 100 * DAY_MS)
    online_store.write(ol_all_types, 1, random_rows(ol_all_types, [1], times=[NOW]))
    assert client.pexpiretime("octest:user:1") == expiry + 100 * DAY_MS
    # a signal without TTL makes its key persistent, and TTL signals never make it expire again
    online_store.write(ol_no_ttl, 1, random_rows(ol_no_ttl, [1, 3], times=[NOW, NOW]))
    assert client.pexpiretime("octest:user:1") == -1
    assert client.pexpiretime("octest:user:3") == -1
    online_store.write(ol_all_types, 1, random_rows(ol_all_types, [1, 3], times=[NOW, NOW]))
    assert client.pexpiretime("octest:user:1") == -1
    assert client.pexpiretime("octest:user:3") == -1


def test_a_restarted_servers_empty_script_cache_is_refilled(online_store: RedisOnlineStore, redis_url: str) -> None:
    online_store.write(ol_short, 1, random_rows(ol_short, [1]))
    redis.Redis.from_url(redis_url).script_flush()
    rows = random_rows(ol_short, [2, 3], seed=9, null_fraction=0.0)
    assert online_store.write(ol_short, 1, rows) == 2
    (got,) = online_store.read([(ol_short, 1)], [2, 3])
    assert_same_rows(got, rows, ol_short)


def test_large_writes_span_several_script_calls(online_store: RedisOnlineStore) -> None:
    keys = list(range(KEYS_PER_CALL * 3 + 17))
    rows = random_rows(ol_short, keys, seed=4)
    assert online_store.write(ol_short, 1, rows) == len(keys)
    (got,) = online_store.read([(ol_short, 1)], keys)
    assert_same_rows(got, rows, ol_short)


def test_bad_requests_name_the_problem(online_store: RedisOnlineStore, redis_url: str) -> None:
    with pytest.raises(RequestError, match=r"one online read is for one entity: signal 'ol_accounts' is about "
                                           r"'account'"):
        online_store.read([(ol_short, 1), (ol_accounts, 1)], [1])
    with pytest.raises(RequestError, match=r"user_id\[1\]: key 'x' must be an int64"):
        online_store.read([(ol_short, 1)], [1, "x"])
    with pytest.raises(RequestError, match=r"user_id\[0\]: key True must be an int64"):
        online_store.read([(ol_short, 1)], [True])
    with pytest.raises(RequestError, match=r"account_id\[0\]: key 5 must be a string"):
        online_store.read([(ol_accounts, 1)], [5])
    with pytest.raises(RequestError, match="at least one signal"):
        online_store.read([], [1])
    assert online_store.read([(ol_short, 1)], [])[0].table.num_rows == 0
    assert online_store.read([(ol_short, 1)], [np.int64(5)])[0].status["count"].tolist() == [N]
    with pytest.raises(SchemaError, match="feature column 'count' is missing"):
        online_store.write(ol_short, 1, random_rows(ol_short, [1]).drop_columns(["count"]))
    with pytest.raises(SchemaError, match="join key column 'user_id' has Arrow type string"):
        online_store.write(ol_short, 1, random_rows(ol_short, [1]).set_column(0, "user_id", pa.array(["1"])))
    # a record written under another schema is refused on read, naming the signal
    foreign = encode(ol_no_ttl.schema, random_rows(ol_no_ttl, [1]))[0]
    redis.Redis.from_url(redis_url).hset("octest:user:1", "ol_short@1", foreign)
    with pytest.raises(SchemaMismatchError, match="signal 'ol_short'"):
        online_store.read([(ol_short, 1)], [1])
    with pytest.raises(QuasarError, match="project name ''"):
        RedisOnlineStore(redis_url, project="")
    with pytest.raises(QuasarError, match="unknown online store 'memcached'"):
        load_online_store("memcached")


def test_loaded_by_type_name(redis_url: str) -> None:
    store = load_online_store("redis", url=redis_url, project=ONLINE_PROJECT)
    assert isinstance(store, RedisOnlineStore) and store.supports_cluster
    store.ping()
    store.close()


def test_async_store_reads_and_writes_like_the_sync_one(online_store: RedisOnlineStore, redis_url: str) -> None:
    rows = random_rows(ol_all_types, list(range(50)), seed=6)
    more = random_rows(ol_all_types, list(range(50, 80)), seed=7)
    online_store.write(ol_all_types, 1, rows)

    async def main() -> tuple[int, list[OnlineColumns]]:
        store = AsyncRedisOnlineStore(redis_url, project=ONLINE_PROJECT)
        try:
            await store.ping()
            written = await store.write(ol_all_types, 1, more)
            return written, await store.read([(ol_all_types, 1), (ol_short, 1)], list(range(80)))
        finally:
            await store.close()

    written, (got, short) = asyncio.run(main())
    assert written == 30
    assert_same_rows(got, pa.concat_tables([rows, more]), ol_all_types)
    assert set(short.status["count"].tolist()) == {N}
    (sync,) = online_store.read([(ol_all_types, 1)], list(range(80)))
    assert sync.table.equals(got.table) or plain(sync.table.to_pylist()) == plain(got.table.to_pylist())


def test_cluster_mode_groups_keys_by_slot(redis_cluster_url: str) -> None:
    store = RedisOnlineStore(redis_cluster_url, project=ONLINE_PROJECT, cluster=True)
    keys = list(range(2500))
    rows = random_rows(ol_all_types, keys, seed=8)
    assert store.write(ol_all_types, 1, rows) == 2500
    older = random_rows(ol_all_types, keys[:100], times=[NOW - timedelta(days=2)] * 100, seed=9)
    assert store.write(ol_all_types, 1, older) == 0
    redis.RedisCluster.from_url(redis_cluster_url).script_flush()          # on every master
    accounts = random_rows(ol_accounts, ["a", "b", "{x}c"], seed=10)
    assert store.write(ol_accounts, 1, accounts) == 3
    (got,) = store.read([(ol_all_types, 1)], keys)
    assert_same_rows(got, rows, ol_all_types)
    store.close()

    async def main() -> list[OnlineColumns]:
        async_store = AsyncRedisOnlineStore(redis_cluster_url, project=ONLINE_PROJECT, cluster=True)
        try:
            return await async_store.read([(ol_accounts, 1)], ["{x}c", "a", "zz"])
        finally:
            await async_store.close()

    (acct,) = asyncio.run(main())
    assert acct.status["balance"].tolist()[2] == N
    assert plain(acct.table.slice(0, 2).to_pylist()) == plain(
        accounts.take(pa.array([2, 0])).select(["balance", "tags"]).to_pylist())


@pytest.mark.parametrize("mode", ["single", "cluster"])
def test_mirror_and_scan(mode: str, request: pytest.FixtureRequest) -> None:
    """``mirror`` replaces, deletes and keeps per its floors; ``scan`` lists the entities holding the field,
    with keys that look like glob patterns, in a single server and across a cluster's slots."""
    url = request.getfixturevalue("redis_url" if mode == "single" else "redis_cluster_url")
    store = RedisOnlineStore(url, project=ONLINE_PROJECT, cluster=mode == "cluster")
    keys = ["a", "b*", "[c]", "{x}d", "e?"]
    rows = random_rows(ol_accounts, keys, seed=20)
    assert store.write(ol_accounts, 1, rows) == 5
    client = redis.Redis.from_url(url) if mode == "single" else redis.RedisCluster.from_url(url)
    client.hset(f"{ONLINE_PROJECT}:account:zz", "other@1", b"x")         # no field of ours: not scanned
    assert sorted(k for batch in store.scan(ol_accounts, 1, count=2) for k in batch) == sorted(keys)
    older = random_rows(ol_accounts, ["a", "b*"], times=[NOW - timedelta(days=3)] * 2, seed=21)
    # exact: "a" goes back in time, "[c]" is deleted
    assert store.mirror(ol_accounts, 1, older.slice(0, 1), absent=["[c]"]) == (1, 1)
    # a floor below the stored record (pushed newer): kept, and not deleted either
    floors = random_rows(ol_accounts, ["b*", "e?"], times=[NOW - timedelta(days=5)] * 2, seed=22)
    assert store.mirror(ol_accounts, 1, older.slice(1, 1), absent=["e?"], floors=floors) == (0, 0)
    (got,) = store.read([(ol_accounts, 1)], keys)
    assert got.event_time_us.tolist()[:3] == [int((NOW - timedelta(days=3)).timestamp() * 1e6),
                                              *[int(t.timestamp() * 1e6) for t in
                                                rows.column("event_timestamp").to_pylist()[1:2]], 0]
    assert sorted(k for batch in store.scan(ol_accounts, 1) for k in batch) == sorted(["a", "b*", "{x}d", "e?"])
    assert client.hget(f"{ONLINE_PROJECT}:account:zz", "other@1") == b"x"
    client.close()
    store.close()
