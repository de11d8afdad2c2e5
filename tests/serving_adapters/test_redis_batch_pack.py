"""The scorer's round trip packs HMGETs as RESP exactly, for ASCII keys (one encode) and any other key."""

from __future__ import annotations

import asyncio

import redis

from quasar.online.redis_store import AsyncRedisOnlineStore
from quasar.serving_adapters.redis_batch import HmgetRoundTrip


def test_packed_hmgets_are_resp_for_ascii_and_other_keys(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    keys = ["p:1", "p:ü2", "p:日本", "p:3"]
    for i, key in enumerate(keys):
        client.hset(key, mapping={"a@1": f"va{i}", "b@1": f"vb{i}".encode() + b"\x00\xff"})
    client.close()

    async def main() -> list[list[list[bytes | None]]]:
        store = AsyncRedisOnlineStore(redis_url, project="packtest")
        try:
            trip = HmgetRoundTrip(store)
            payload, count = trip.pack([(keys[:1] + keys[3:], ["a@1", "b@1"]), (keys, ["b@1", "nope@1"])])
            assert count == 6 and payload.startswith(b"*4\r\n$5\r\nHMGET\r\n$3\r\np:1\r\n$3\r\na@1\r\n")
            assert b"$5\r\np:\xc3\xbc2\r\n" in payload and "$8\r\np:日本\r\n".encode() in payload
            return await trip([(keys[:1] + keys[3:], ["a@1", "b@1"]), (keys, ["b@1", "nope@1"])])
        finally:
            await store.aclose()

    first, second = asyncio.run(main())
    assert first == [[b"va0", b"vb0\x00\xff"], [b"va3", b"vb3\x00\xff"]]
    assert second == [[f"vb{i}".encode() + b"\x00\xff", None] for i in range(4)]
