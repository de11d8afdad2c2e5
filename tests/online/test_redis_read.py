"""Reads in one round trip (``quasar.online.redis_read``): one HMGET for one key, the READ_MANY script for more,
several entities in one pipeline; the same records as an HMGET per key, a flushed script cache refilled, a
refused script answered as HMGETs with their own error, and cluster mode by HMGETs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from fixtures.online import ONLINE_PROJECT, ol_accounts, ol_all_types, ol_short, random_rows
from quasar.online.redis_read import plan_read, read_commands
from quasar.online.redis_store import AsyncRedisOnlineStore, RedisOnlineStore
from quasar.online.response import plan_request, read_online_features
from quasar.signals.errors import OnlineStoreError


def expected(url: str, plan: Any) -> list[list[Any]]:
    """The plan's records by field then key, one HMGET per key."""
    client = redis.Redis.from_url(url)
    rows = [client.hmget(key, plan.fields) for key in plan.keys]
    return [[row[j] for row in rows] for j in range(len(plan.fields))]


@pytest.fixture
def filled(online_store: RedisOnlineStore) -> RedisOnlineStore:
    online_store.write(ol_all_types, 1, random_rows(ol_all_types, list(range(0, 40, 2)), seed=1))
    online_store.write(ol_short, 1, random_rows(ol_short, list(range(0, 40, 3)), seed=2))
    online_store.write(ol_accounts, 1, random_rows(ol_accounts, ["a", "b", "c"], seed=3))
    return online_store


@pytest.mark.parametrize("keys", [[], [4], [7], list(range(40)), [5, 5, 6]])
def test_read_records_equals_an_hmget_per_key(filled: RedisOnlineStore, redis_url: str, keys: list[int]) -> None:
    users = plan_read(ONLINE_PROJECT, [(ol_all_types, 1), (ol_short, 1)], keys)
    accounts = plan_read(ONLINE_PROJECT, [(ol_accounts, 1)], ["a", "zz", "c"])
    got = filled.read_records([users, accounts])
    assert got == [expected(redis_url, users), expected(redis_url, accounts)]
    (alone,) = filled.read_records([users])
    assert alone == expected(redis_url, users)


def test_commands_one_hmget_for_one_key_a_script_call_per_entity_hmgets_in_a_cluster() -> None:
    one = plan_read(ONLINE_PROJECT, [(ol_all_types, 1)], [1])
    many = plan_read(ONLINE_PROJECT, [(ol_all_types, 1), (ol_short, 1)], [1, 2, 3])
    accounts = plan_read(ONLINE_PROJECT, [(ol_accounts, 1)], ["a"])
    assert read_commands([one], cluster=False) == ("hmget", [("HMGET", "octest:user:1", "ol_all_types@1")])
    how, commands = read_commands([many, accounts], cluster=False)
    assert how == "script" and [c[0] for c in commands] == ["EVALSHA", "EVALSHA"]
    assert commands[0][2:] == (3, "octest:user:1", "octest:user:2", "octest:user:3", "ol_all_types@1", "ol_short@1")
    how, commands = read_commands([many, accounts], cluster=True)
    assert how == "hmget" and len(commands) == 4


def test_a_request_of_two_entities_is_one_round_trip(filled: RedisOnlineStore, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[int] = []
    send = filled._send

    def spy(commands: list[Any]) -> list[Any]:
        sent.append(len(commands))
        return send(commands)

    monkeypatch.setattr(filled, "_send", spy)
    signals = {"ol_all_types": ol_all_types, "ol_short": ol_short, "ol_accounts": ol_accounts}
    plan = plan_request({"user_id": [2, 3, 4], "account_id": ["a", "b", "c"]},
                        ["ol_all_types:ctr", "ol_short:count", "ol_accounts:balance"],
                        lambda name, v: (signals[name], 1))
    body = read_online_features(filled, plan)
    assert sent == [2]                                    # one pipeline: a script call per entity
    assert body["metadata"]["feature_names"] == ["user_id", "account_id", "ctr", "count", "balance"]


def test_a_flushed_script_cache_is_refilled(filled: RedisOnlineStore, redis_url: str) -> None:
    plan = plan_read(ONLINE_PROJECT, [(ol_all_types, 1)], list(range(10)))
    redis.Redis.from_url(redis_url).script_flush()
    assert filled.read_records([plan]) == [expected(redis_url, plan)]


@pytest.mark.parametrize("keys", [[1], [0, 1, 2]])
def test_a_key_of_another_type_fails_as_the_hmget_fails(filled: RedisOnlineStore, redis_url: str,
                                                         keys: list[int]) -> None:
    redis.Redis.from_url(redis_url).set(f"{ONLINE_PROJECT}:user:1", b"not a hash")
    with pytest.raises(OnlineStoreError, match="WRONGTYPE Operation against a key holding the wrong kind"):
        filled.read([(ol_all_types, 1)], keys)

    async def main() -> None:
        store = AsyncRedisOnlineStore(redis_url, project=ONLINE_PROJECT)
        try:
            with pytest.raises(OnlineStoreError, match="WRONGTYPE Operation against a key holding the wrong kind"):
                await store.read([(ol_all_types, 1)], keys)
        finally:
            await store.close()

    asyncio.run(main())


def test_the_async_store_reads_the_same_records(filled: RedisOnlineStore, redis_url: str) -> None:
    users = plan_read(ONLINE_PROJECT, [(ol_all_types, 1), (ol_short, 1)], list(range(12)))
    accounts = plan_read(ONLINE_PROJECT, [(ol_accounts, 1)], ["b"])

    async def main() -> Any:
        store = AsyncRedisOnlineStore(redis_url, project=ONLINE_PROJECT)
        try:
            redis.Redis.from_url(redis_url).script_flush()
            return await store.read_records([users, accounts]), await store.read_records([accounts])
        finally:
            await store.close()

    both, alone = asyncio.run(main())
    assert both == [expected(redis_url, users), expected(redis_url, accounts)]
    assert alone == [expected(redis_url, accounts)]


def test_cluster_reads_by_hmgets(redis_cluster_url: str) -> None:
    with RedisOnlineStore(redis_cluster_url, project=ONLINE_PROJECT, cluster=True) as store:
        store.write(ol_all_types, 1, random_rows(ol_all_types, list(range(20)), seed=4))
        plan = plan_read(ONLINE_PROJECT, [(ol_all_types, 1)], list(range(25)))
        (got,) = store.read_records([plan])
        assert [r is None for r in got[0]] == [False] * 20 + [True] * 5
        assert got == [[store.client.hget(k, "ol_all_types@1") for k in plan.keys]]
