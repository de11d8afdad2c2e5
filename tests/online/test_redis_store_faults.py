"""Faults of the online store: Redis stopped and started again, a password that must never show."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fixtures.online import ONLINE_PROJECT, ol_short, random_rows
from fixtures.redis_server import RedisServer, free_port
from quasar.online.redis_store import AsyncRedisOnlineStore, RedisOnlineStore
from quasar.signals.errors import OnlineUnavailableError

SECRET = "s3cret-Pa55"


def test_stopped_redis_is_unavailable_and_the_same_store_recovers(redis_server: RedisServer, redis_url: str) -> None:
    store = RedisOnlineStore(redis_url, project=ONLINE_PROJECT, socket_timeout=1.0)
    rows = random_rows(ol_short, [1, 2], null_fraction=0.0)
    store.write(ol_short, 1, rows)
    redis_server.stop()
    try:
        where = f"online store at 127.0.0.1:{redis_server.port} is unreachable"
        with pytest.raises(OnlineUnavailableError, match=where):
            store.read([(ol_short, 1)], [1])
        with pytest.raises(OnlineUnavailableError, match=where):
            store.write(ol_short, 1, rows)
        with pytest.raises(OnlineUnavailableError, match=where):
            store.ping()
    finally:
        redis_server.start()
    # a fresh, empty server (and script cache): the same store object works again
    store.ping()
    assert store.read([(ol_short, 1)], [1])[0].status["count"].tolist() == [1]
    assert store.write(ol_short, 1, rows) == 2
    assert store.read([(ol_short, 1)], [1, 2])[0].table.column("count").to_pylist() == rows.column("count").to_pylist()
    store.close()


def test_the_async_store_recovers_too(redis_server: RedisServer, redis_url: str) -> None:
    rows = random_rows(ol_short, [1, 2], null_fraction=0.0)
    where = f"online store at 127.0.0.1:{redis_server.port} is unreachable"

    async def main() -> None:
        store = AsyncRedisOnlineStore(redis_url, project=ONLINE_PROJECT, socket_timeout=1.0)
        try:
            assert await store.write(ol_short, 1, rows) == 2
            redis_server.stop()
            try:
                with pytest.raises(OnlineUnavailableError, match=where):
                    await store.read([(ol_short, 1)], [1])
                with pytest.raises(OnlineUnavailableError, match=where):
                    await store.write(ol_short, 1, rows)
                with pytest.raises(OnlineUnavailableError, match=where):
                    await store.ping()
            finally:
                redis_server.start()
            await store.ping()
            assert await store.write(ol_short, 1, rows) == 2
            (got,) = await store.read([(ol_short, 1)], [1, 2])
            assert got.table.column("count").to_pylist() == rows.column("count").to_pylist()
        finally:
            await store.close()

    asyncio.run(main())


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A redis-server that requires the password ``SECRET``."""
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                             "127.0.0.1", "--save", "", "--appendonly", "no", "--requirepass", SECRET,
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=SECRET, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.terminate()
                raise RuntimeError("the password redis-server did not start") from None
            time.sleep(0.05)
    yield port, proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=10)


def test_password_comes_from_the_url_and_never_shows(password_redis: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, proc = password_redis
    store = RedisOnlineStore(f"redis://:{SECRET}@127.0.0.1:{port}/0", project=ONLINE_PROJECT, socket_timeout=1.0)
    rows = random_rows(ol_short, [1], null_fraction=0.0)
    assert store.write(ol_short, 1, rows) == 1
    assert store.read([(ol_short, 1)], [1])[0].table.column("count").to_pylist() == rows.column("count").to_pylist()
    assert SECRET not in repr(store)
    wrong = RedisOnlineStore(f"redis://:wrong-{SECRET}@127.0.0.1:{port}/0", project=ONLINE_PROJECT)
    with pytest.raises(OnlineUnavailableError) as refused:
        wrong.ping()
    assert f"127.0.0.1:{port}" in str(refused.value) and SECRET not in str(refused.value)
    proc.terminate()
    proc.wait(timeout=10)
    with pytest.raises(OnlineUnavailableError) as down:
        store.read([(ol_short, 1)], [1])
    assert f"online store at 127.0.0.1:{port} is unreachable" in str(down.value)
    assert SECRET not in str(down.value)
