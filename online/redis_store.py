"""The Redis online store (redis-py with hiredis), synchronous and asyncio, over one shared plan.

Writes: rows become UFR records and go through the newer-wins script (``online.lua``) in EVALSHA calls of up
to ``KEYS_PER_CALL`` keys, several calls per pipelined round trip. In cluster mode the keys of one call
share a hash slot (grouped client-side). Reads: one pipeline of ``HMGET <hash> <field>...`` per entity key,
one round trip for everything, then one batch decode per signal (``online.store.columns_from_records``).

Both clients translate Redis failures at the boundary: unreachable -> ``OnlineUnavailableError``, anything
else -> ``OnlineStoreError``, naming ``host:port`` and never the password. Connections are re-made by
redis-py's pool and retry on the next call, so a store object recovers by itself once Redis is back.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.backoff import ExponentialWithJitterBackoff
from redis.crc import key_slot
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.retry import Retry

from online.keys import check_project, column_keys, entity_keys, field_name
from online.lua import NEWER_WINS, NEWER_WINS_SHA
from online.store import AsyncOnlineStore, OnlineColumns, OnlineStore, columns_from_records
from signals.errors import OnlineStoreError, OnlineUnavailableError, QuasarError, RequestError
from signals.signal import Signal
from signals.ufr.codec import encode
from signals.ufr.codec_arrow import find_column

#: Keys per EVALSHA call of the newer-wins script, and EVALSHA calls per pipelined round trip.
KEYS_PER_CALL = 1000
CALLS_PER_ROUND_TRIP = 16
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, ClusterDownError, TryAgainError, RedisClusterException)


# --- the plan both clients share ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteCall:
    """One EVALSHA of the newer-wins script: its keys and their records."""

    keys: list[str]
    records: list[bytes]


@dataclass(frozen=True)
class WritePlan:
    field: str
    ttl_ms: int                  # 0: the signal has no TTL
    calls: list[WriteCall]

    def args(self, call: WriteCall) -> tuple[Any, ...]:
        """The EVALSHA command of ``call``."""
        return ("EVALSHA", NEWER_WINS_SHA, len(call.keys), *call.keys, self.field, self.ttl_ms, *call.records)

    def round_trips(self) -> Iterator[list[WriteCall]]:
        it = iter(self.calls)
        while chunk := list(itertools.islice(it, CALLS_PER_ROUND_TRIP)):
            yield chunk


def plan_write(project: str, signal: Signal, version: int, rows: pa.Table, *, cluster: bool) -> WritePlan:
    """Encode ``rows`` and split them into script calls (in cluster mode, each call's keys share one slot)."""
    ttl_ms = int(signal.ttl.total_seconds() * 1000) if signal.ttl is not None else 0
    plan = WritePlan(field=field_name(signal.name, version), ttl_ms=ttl_ms, calls=[])
    if rows.num_rows == 0:
        return plan
    keys = column_keys(project, signal.entity, find_column(rows, signal.entity.join_key, "join key"))
    records = encode(signal.schema, rows)
    if not cluster:
        order: list[int] | range = range(len(keys))
        groups = [order]
    else:                        # stable by slot, so rows of one key keep their order
        slots = [key_slot(k.encode()) for k in keys]
        order = sorted(range(len(keys)), key=slots.__getitem__)
        groups = [list(g) for _, g in itertools.groupby(order, key=slots.__getitem__)]
    for group in groups:
        for lo in range(0, len(group), KEYS_PER_CALL):
            part = group[lo:lo + KEYS_PER_CALL]
            plan.calls.append(WriteCall([keys[i] for i in part], [records[i] for i in part]))
    return plan


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


# --- connections and errors -----------------------------------------------------------------------------------


def describe_url(url: str) -> str:
    """``host:port`` of a Redis URL (the socket path for ``unix://``), without user or password."""
    parsed = urlparse(url)
    if parsed.scheme == "unix":
        return parsed.path
    try:
        port = parsed.port or 6379
    except ValueError:
        port = 6379
    return f"{parsed.hostname or 'localhost'}:{port}"


def _options(socket_timeout: float) -> dict[str, Any]:
    return {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout,
            "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2),
            "retry_on_error": [redis.ConnectionError, redis.TimeoutError]}


class _Target:
    """Where a store connects, for messages that never show the password."""

    def __init__(self, url: str, project: str, socket_timeout: float) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise QuasarError(f"online store URL {url!r} is invalid: use redis://[:password@]host:port/db, "
                              "rediss:// for TLS")
        if socket_timeout <= 0:
            raise QuasarError(f"online store socket timeout must be positive, got {socket_timeout!r}")
        self.url = url
        self.project = check_project(project)
        self.where = describe_url(url)
        self.secret = urlparse(url).password or ""

    def error(self, exc: BaseException) -> QuasarError:
        reason = f"{type(exc).__name__}: {exc}"
        if self.secret:
            reason = reason.replace(self.secret, "***")
        if isinstance(exc, _UNREACHABLE):
            return OnlineUnavailableError(f"online store at {self.where} is unreachable: {reason}")
        return OnlineStoreError(f"online store at {self.where} failed: {reason}")


def _sync_client(url: str, cluster: bool, options: dict[str, Any]) -> Any:
    if cluster:
        return redis.cluster.RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)


def _async_client(url: str, cluster: bool, options: dict[str, Any]) -> Any:
    if cluster:
        return redis.asyncio.cluster.RedisCluster.from_url(url, **options)
    return redis.asyncio.Redis.from_url(url, **options)


# --- the stores -----------------------------------------------------------------------------------------------


class RedisOnlineStore(OnlineStore):
    """The online store on Redis (or a Redis cluster with ``cluster=True``); password and TLS from the URL."""

    def __init__(self, url: str, *, project: str, cluster: bool = False, socket_timeout: float = 5.0) -> None:
        self._target = _Target(url, project, socket_timeout)
        self.project = self._target.project
        self.cluster = bool(cluster)
        self._options = _options(socket_timeout)
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The redis-py client, made on first use (a cluster client needs a reachable node to start)."""
        if self._client is None:
            try:
                self._client = _sync_client(self._target.url, self.cluster, self._options)
            except (RedisError, RedisClusterException) as exc:
                raise self._target.error(exc) from exc
        return self._client

    @property
    def supports_cluster(self) -> bool:
        return True

    def write(self, signal: Signal, version: int, rows: pa.Table) -> int:
        plan = plan_write(self.project, signal, version, rows, cluster=self.cluster)
        return sum(self._round_trip(plan, calls) for calls in plan.round_trips())

    def _round_trip(self, plan: WritePlan, calls: list[WriteCall]) -> int:
        for attempt in range(2):
            try:
                pipe = self.client.pipeline(transaction=False)
                for call in calls:
                    pipe.execute_command(*plan.args(call))
                return sum(int(n) for n in pipe.execute())
            except NoScriptError as exc:          # a fresh or restarted server: load the script, do it again
                if attempt:
                    raise self._target.error(exc) from exc
                self._load_script()
            except (RedisError, RedisClusterException) as exc:
                raise self._target.error(exc) from exc
        raise AssertionError("unreachable")

    def _load_script(self) -> None:
        try:
            self.client.script_load(NEWER_WINS)
        except (RedisError, RedisClusterException) as exc:
            raise self._target.error(exc) from exc

    def read(self, signal_versions: Sequence[tuple[Signal, int]], keys: Sequence[Any], *,
             now_us: int | None = None) -> list[OnlineColumns]:
        """See ``OnlineStore.read``; ``now_us`` (default: the clock) is the time the TTL is measured at."""
        plan = plan_read(self.project, signal_versions, keys)
        replies: list[Any] = []
        if plan.keys:
            try:
                pipe = self.client.pipeline(transaction=False)
                for key in plan.keys:
                    pipe.hmget(key, plan.fields)
                replies = pipe.execute()
            except (RedisError, RedisClusterException) as exc:
                raise self._target.error(exc) from exc
        return finish_read(plan, replies, now_us)

    def ping(self) -> None:
        try:
            self.client.ping()
        except (RedisError, RedisClusterException) as exc:
            raise self._target.error(exc) from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> RedisOnlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisOnlineStore({self._target.where}, project={self.project!r}, cluster={self.cluster})"


class AsyncRedisOnlineStore(AsyncOnlineStore):
    """The asyncio twin of ``RedisOnlineStore`` (redis.asyncio), for the HTTP services. Use it from one
    event loop: its connections belong to the loop that made them."""

    def __init__(self, url: str, *, project: str, cluster: bool = False, socket_timeout: float = 5.0) -> None:
        self._target = _Target(url, project, socket_timeout)
        self.project = self._target.project
        self.cluster = bool(cluster)
        self._options = _options(socket_timeout)
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = _async_client(self._target.url, self.cluster, self._options)
            except (RedisError, RedisClusterException) as exc:
                raise self._target.error(exc) from exc
        return self._client

    @property
    def supports_cluster(self) -> bool:
        return True

    async def write(self, signal: Signal, version: int, rows: pa.Table) -> int:
        plan = plan_write(self.project, signal, version, rows, cluster=self.cluster)
        written = 0
        for calls in plan.round_trips():
            written += await self._round_trip(plan, calls)
        return written

    async def _round_trip(self, plan: WritePlan, calls: list[WriteCall]) -> int:
        for attempt in range(2):
            try:
                pipe = self.client.pipeline(transaction=False)
                for call in calls:
                    pipe.execute_command(*plan.args(call))
                return sum(int(n) for n in await pipe.execute())
            except NoScriptError as exc:
                if attempt:
                    raise self._target.error(exc) from exc
                await self._load_script()
            except (RedisError, RedisClusterException) as exc:
                raise self._target.error(exc) from exc
        raise AssertionError("unreachable")

    async def _load_script(self) -> None:
        try:
            await self.client.script_load(NEWER_WINS)
        except (RedisError, RedisClusterException) as exc:
            raise self._target.error(exc) from exc

    async def read(self, signal_versions: Sequence[tuple[Signal, int]], keys: Sequence[Any], *,
                   now_us: int | None = None) -> list[OnlineColumns]:
        plan = plan_read(self.project, signal_versions, keys)
        replies: list[Any] = []
        if plan.keys:
            try:
                pipe = self.client.pipeline(transaction=False)
                for key in plan.keys:
                    pipe.hmget(key, plan.fields)
                replies = await pipe.execute()
            except (RedisError, RedisClusterException) as exc:
                raise self._target.error(exc) from exc
        return finish_read(plan, replies, now_us)

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except (RedisError, RedisClusterException) as exc:
            raise self._target.error(exc) from exc

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def aclose(self) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncRedisOnlineStore({self._target.where}, project={self.project!r}, cluster={self.cluster})"
