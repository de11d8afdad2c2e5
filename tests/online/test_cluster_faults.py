"""Fault trials of the online store against a single Redis and a real three-master Redis Cluster
(``online_backend``, tests/fixtures/redis_cluster.py): a frozen node (SIGSTOP: unavailable after one
timeout, only its own connections lost, every master pinged by the health checks), a restarted master
(stale pooled connections tried again) and a resharding under running stores (MOVED followed). The same
behaviours without faults are in test_cluster_behaviour.py."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pyarrow as pa
import pytest
import redis

from fixtures.cluster_suite import P, async_store_of, same_rows, store_of
from fixtures.feature_service import PROJECT, LiveServer, resolve
from fixtures.online import NOW, ol_short, random_rows
from fixtures.redis_cluster import OnlineBackend, RedisClusterNodes
from fixtures.redis_server import RedisServer
from quasar.online.keys import entity_keys
from quasar.online.redis_store import RedisOnlineStore
from quasar.online.store import OnlineColumns
from quasar.signals.errors import OnlineUnavailableError

# --- a frozen node --------------------------------------------------------------------------------------------


@contextmanager
def frozen(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """The redis-server ``proc`` stopped (SIGSTOP): it accepts connections but answers nothing."""
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)


def test_a_frozen_node_answers_unavailable_and_costs_only_its_own_connections(
        online_backend: OnlineBackend, request: pytest.FixtureRequest) -> None:
    """Under a frozen Redis (a frozen master of the cluster) ``ping`` (the services' health check) and a read of
    its keys raise OnlineUnavailableError after one read timeout, never retried; keys of the other masters still
    read, over the connections already open (a cluster client must not drop every node's connections because
    one timed out); after SIGCONT the same store reads everything again."""
    keys = list(range(60))
    rows = random_rows(ol_short, keys, times=[NOW] * 60, seed=11)
    with store_of(online_backend) as s:
        s.write(ol_short, 1, rows)
    if online_backend.cluster:
        nodes: RedisClusterNodes = request.getfixturevalue("redis_cluster")
        key_port = node_ports(online_backend, P, keys)
        victim = key_port[0]
        proc = nodes.procs[nodes.ports.index(victim)]
        healthy_ports = [p for p in nodes.ports if p != victim]
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        assert server.proc is not None
        proc, victim, healthy_ports = server.proc, server.port, []
        key_port = dict.fromkeys(keys, victim)
    elsewhere = [k for k in keys if key_port[k] != victim]
    watchers = {p: redis.Redis(port=p) for p in healthy_ports}

    def connections() -> dict[int, int]:
        return {p: int(c.info("stats")["total_connections_received"]) for p, c in watchers.items()}

    async def main() -> dict[str, Any]:
        a = async_store_of(online_backend, socket_timeout=1.0)   # a loaded machine: no spurious timeout
        out: dict[str, Any] = {}
        try:
            await a.read([(ol_short, 1)], keys)                  # every node's connection is open
            out["before"] = connections()
            with frozen(proc):
                t = time.monotonic()
                with pytest.raises(OnlineUnavailableError):
                    await a.read([(ol_short, 1)], keys)
                out["read_s"] = time.monotonic() - t
                if elsewhere:
                    out["elsewhere"] = await a.read([(ol_short, 1)], elsewhere)
            out["after"] = await a.read([(ol_short, 1)], keys)
            out["end"] = connections()
            await a.ping()
            with frozen(proc), pytest.raises(OnlineUnavailableError):
                await a.ping()                                   # the health check sees the frozen master
            await a.ping()
        finally:
            await a.close()
        return out

    try:
        out = asyncio.run(main())
    finally:
        for c in watchers.values():
            c.close()
    print(f"{online_backend.name}: a read under a frozen node failed after {out['read_s']:.2f}s")
    (after,) = out["after"]
    same_rows(after, rows)
    if elsewhere:
        (got,) = out["elsewhere"]
        same_rows(got, rows.take(pa.array(elsewhere)))
    assert out["end"] == out["before"]            # the healthy masters: not one new connection


def test_a_synchronous_read_under_a_frozen_master_fails_after_a_few_tries(online_backend: OnlineBackend,
                                                                         request: pytest.FixtureRequest) -> None:
    """The synchronous store (batch work: materialization, consistency, delete) tries a round trip three times
    in all under a frozen Redis (a frozen cluster master), not once per key it holds: redis-py's cluster
    pipeline resent each failed command alone with its own retries (300 keys: 164 s, a new connection each)."""
    keys = list(range(300))
    rows = random_rows(ol_short, keys, times=[NOW] * 300, seed=17)
    if online_backend.cluster:
        nodes: RedisClusterNodes = request.getfixturevalue("redis_cluster")
        ports = node_ports(online_backend, P, keys)
        victim = ports[0]
        proc = nodes.procs[nodes.ports.index(victim)]
        keys = [k for k in keys if ports[k] != victim][:50] + [k for k in keys if ports[k] == victim][:6]
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        assert server.proc is not None
        proc, victim = server.proc, server.port
    watcher = redis.Redis(port=victim)
    try:
        with RedisOnlineStore(online_backend.url, project=P, cluster=online_backend.cluster,
                              socket_timeout=0.3) as s:
            s.write(ol_short, 1, rows)
            s.read([(ol_short, 1)], keys)
            before = int(watcher.info("stats")["total_connections_received"])
            with frozen(proc), pytest.raises(OnlineUnavailableError):
                s.read([(ol_short, 1)], keys)
            connections = int(watcher.info("stats")["total_connections_received"]) - before
            (got,) = s.read([(ol_short, 1)], keys)
    finally:
        watcher.close()
    same_rows(got, rows.take(pa.array(keys)))
    assert connections <= 3           # one fresh connection per try at most, whatever the keys it holds


def test_the_synchronous_ping_sees_a_frozen_master(online_backend: OnlineBackend,
                                                   request: pytest.FixtureRequest) -> None:
    """``RedisOnlineStore.ping`` asks every master: on a cluster, freeze one its client would not ask."""
    with RedisOnlineStore(online_backend.url, project=P, cluster=online_backend.cluster, socket_timeout=0.5) as s:
        s.ping()
        if online_backend.cluster:
            nodes: RedisClusterNodes = request.getfixturevalue("redis_cluster")
            default = s.client.get_default_node().port
            proc = next(p for port, p in zip(nodes.ports, nodes.procs, strict=True) if port != default)
        else:
            proc = request.getfixturevalue("redis_server").proc
        with frozen(proc), pytest.raises(OnlineUnavailableError):
            s.ping()
        s.ping()


def online_backend_node_port(backend: OnlineBackend, project: str, key: Any) -> int:
    """The port of the cluster master serving the hash of ``key`` (user entity)."""
    return node_ports(backend, project, [key])[key]


def node_ports(backend: OnlineBackend, project: str, keys: list[Any]) -> dict[Any, int]:
    """The port of the cluster master serving each ``key``'s hash (user entity), as the cluster says now."""
    client = backend.client()
    try:
        hashes = entity_keys(project, ol_short.entity, keys)
        return {k: int(client.get_node_from_key(h).port) for k, h in zip(keys, hashes, strict=True)}
    finally:
        client.close()


def test_the_same_async_store_rides_out_a_restart(online_backend: OnlineBackend,
                                                  request: pytest.FixtureRequest) -> None:
    """After Redis (a cluster master) restarts, every pooled connection to it is stale; the next read and write
    of the same store must still succeed (a connection error is tried once more, on fresh connections)."""
    keys = list(range(60))
    rows = random_rows(ol_short, keys, times=[NOW] * 60, seed=12)
    if online_backend.cluster:
        nodes: RedisClusterNodes = request.getfixturevalue("redis_cluster")
        victim = online_backend_node_port(online_backend, P, 0)

        def restart() -> None:
            nodes.restart(victim)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")

        def restart() -> None:
            server.stop()
            server.start()

    async def main() -> tuple[int, list[OnlineColumns]]:
        a = async_store_of(online_backend, socket_timeout=2.0)
        try:
            await a.write(ol_short, 1, rows)
            await asyncio.gather(*(a.read([(ol_short, 1)], keys) for _ in range(4)))    # several connections
            await a.ping()
            await asyncio.to_thread(restart)
            written = await a.write(ol_short, 1, rows)        # the restarted node lost its keys and the script
            return written, await a.read([(ol_short, 1)], keys)
        finally:
            await a.close()

    with store_of(online_backend) as sync:
        sync.read([(ol_short, 1)], keys)                      # the synchronous store's connections, then
        written, (got,) = asyncio.run(main())                 # the restart
        assert written == 60
        same_rows(got, rows)
        (again,) = sync.read([(ol_short, 1)], keys)           # stale connections: tried again, fresh
        same_rows(again, rows)
        assert sync.write(ol_short, 1, rows) == 60


def test_both_services_health_checks_see_a_frozen_master(online_backend: OnlineBackend, scoring_world: Any,
                                                        request: pytest.FixtureRequest) -> None:
    """``/healthz`` of the feature service and of the scorer: 200, then 503 while Redis is frozen (on a cluster:
    a master neither service's client sends its unkeyed commands to), then 200 again."""
    from quasar.online.service.app import create_app
    from quasar.serving_adapters.models import ModelRegistry
    from quasar.serving_adapters.service import create_scoring_app

    stores = [async_store_of(online_backend, project) for project in (PROJECT, P)]
    features = create_app(store=stores[0], resolve=resolve, close_store=True)
    scorer = create_scoring_app(models=ModelRegistry(scoring_world.models, scoring_world.resolver),
                                store=stores[1], device="cpu", close_store=True)
    with LiveServer(features) as one, LiveServer(scorer) as two, httpx.Client(timeout=30) as client:
        urls = [f"{one.url}/healthz", f"{two.url}/healthz"]
        before = [client.get(u) for u in urls]
        if online_backend.cluster:
            nodes: RedisClusterNodes = request.getfixturevalue("redis_cluster")
            defaults = {s.client.get_default_node().port for s in stores}
            proc = next(p for port, p in zip(nodes.ports, nodes.procs, strict=True) if port not in defaults)
        else:
            proc = request.getfixturevalue("redis_server").proc
        with frozen(proc):
            during = [client.get(u) for u in urls]
        after = [client.get(u) for u in urls]
    assert [r.status_code for r in before] == [200, 200], [r.text for r in before]
    assert [r.status_code for r in during] == [503, 503], [r.text for r in during]
    assert [r.status_code for r in after] == [200, 200], [r.text for r in after]


def test_a_resharding_under_running_stores_is_followed(redis_cluster: RedisClusterNodes) -> None:
    """``redis-cli --cluster reshard`` moves slots (and their keys) from one master to another while a synchronous
    and an async store hold the old slot map: their reads and writes follow the MOVED redirections, values and
    newer-wins intact."""
    redis_cluster.flush()
    backend = OnlineBackend("cluster", redis_cluster.url, cluster=True)
    keys = list(range(2000))
    rows = random_rows(ol_short, keys, times=[NOW] * 2000, seed=14)
    newer = random_rows(ol_short, keys, times=[NOW + timedelta(seconds=1)] * 2000, seed=15)
    newest = random_rows(ol_short, keys, times=[NOW + timedelta(seconds=2)] * 2000, seed=16)
    before = node_ports(backend, P, keys)
    src, dst = redis_cluster.ports[0], redis_cluster.ports[1]
    loop = asyncio.new_event_loop()
    try:
        a = async_store_of(backend, socket_timeout=2.0)
        with store_of(backend) as s:
            s.write(ol_short, 1, rows)
            loop.run_until_complete(a.read([(ol_short, 1)], keys))        # both hold the slot map now
            redis_cluster.reshard(src, dst, slots=60)
            now = node_ports(backend, P, keys)
            moved = [k for k, port in before.items() if port == src and now[k] == dst]
            assert moved                                                   # the keys of some moved slots
            (got,) = loop.run_until_complete(a.read([(ol_short, 1)], keys))
            same_rows(got, rows)
            assert s.write(ol_short, 1, newer) == 2000
            assert s.write(ol_short, 1, rows) == 0                         # older: loses on the new master too
            assert loop.run_until_complete(a.write(ol_short, 1, newest)) == 2000
            (got,) = s.read([(ol_short, 1)], keys)
            same_rows(got, newest)
        loop.run_until_complete(a.close())
    finally:
        loop.close()
