"""The Redis online store (redis-py with hiredis), synchronous and asyncio, over one shared plan.

Writes: rows become UFR records and go through the newer-wins script (``quasar.online.lua``) in EVALSHA calls of up
to ``KEYS_PER_CALL`` keys, several calls per pipelined round trip. In cluster mode the keys of one call
share a hash slot (grouped client-side). Reads (``read_records``): one round trip for every key of a request,
whatever its entities (``quasar.online.redis_read``: one ``HMGET`` for one key, a server-side script for
more); ``read`` then decodes each signal's records in one batch (``quasar.online.store.columns_from_records``).

Both clients translate Redis failures at the boundary: unreachable -> ``OnlineUnavailableError``, anything
else -> ``OnlineStoreError``, naming ``host:port`` and never the password.

Connections and timeouts: reads (and pings) and writes use two pools, so a read waits at most
``socket_timeout`` (default 0.5 s: a frozen Redis answers 503 quickly) while a write round trip (up to
16 script calls of 1000 keys) gets ``write_timeout``; connecting gets ``connect_timeout``. After a Redis
restart every pooled connection is stale and its next use fails at once ("Connection closed by server"):
such a connection error is retried on a fresh connection (the asyncio store: once, at once, but never a
timeout, which would only double the wait; the synchronous store, for batch work: twice, with a short
backoff), so a store recovers by itself as soon as Redis answers again. Every call is idempotent (reads;
newer-wins writes), so a retry is safe. On a cluster the stores keep these rules themselves (``_stale_once``,
``_cluster_pipeline``): redis-py's cluster client retries timeouts too, and resends failed pipeline commands one
by one. ``ping`` asks every master.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlparse

import pyarrow as pa
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.cluster
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.retry import Retry

from quasar.online.keys import check_project, column_keys, entity_keys, field_name, key_prefix
from quasar.online.lua import ANY, NEWER, NEWER_WINS, NEWER_WINS_SHA
from quasar.online.redis_read import (
    READ_MANY,
    ReadPlan,
    Records,
    decode_records,
    finish_read,  # noqa: F401  (re-exported: callers import it from here)
    plan_read,
    read_commands,
    split_replies,
)
from quasar.online.store import AsyncOnlineStore, OnlineColumns, OnlineStore
from quasar.signals.errors import OnlineStoreError, OnlineUnavailableError, QuasarError
from quasar.signals.ordering import created_us, rank_bytes
from quasar.signals.signal import Signal
from quasar.signals.ufr.codec import encode
from quasar.signals.ufr.codec_arrow import event_times_us, find_column
from quasar.signals.ufr.schema import CREATED_TIMESTAMP, EVENT_TIMESTAMP

#: Keys per EVALSHA call of the newer-wins script, and EVALSHA calls per pipelined round trip (as keys: in
#: cluster mode a call holds the keys of one slot, often a single key, so a round trip packs more calls).
KEYS_PER_CALL = 1000
CALLS_PER_ROUND_TRIP = 16
KEYS_PER_ROUND_TRIP = KEYS_PER_CALL * CALLS_PER_ROUND_TRIP
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, ClusterDownError, TryAgainError, RedisClusterException)


# --- the plan both clients share ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteCall:
    """One EVALSHA of the newer-wins script: its keys, their records and their floors (``quasar.online.lua``)."""

    keys: list[str]
    records: list[bytes]
    floors: list[bytes]


@dataclass(frozen=True)
class WritePlan:
    field: str
    ttl_ms: int                  # 0: the signal has no TTL
    calls: list[WriteCall]
    reset: bool = False          # re-apply expiry to every key (a TTL change)

    def args(self, call: WriteCall) -> tuple[Any, ...]:
        """The EVALSHA command of ``call``."""
        pairs = [part for pair in zip(call.records, call.floors, strict=True) for part in pair]
        return ("EVALSHA", NEWER_WINS_SHA, len(call.keys), *call.keys, self.field, self.ttl_ms,
                "r" if self.reset else "", *pairs)

    def round_trips(self) -> Iterator[list[WriteCall]]:
        """The calls, in order, in round trips of up to ``KEYS_PER_ROUND_TRIP`` keys."""
        chunk: list[WriteCall] = []
        keys = 0
        for call in self.calls:
            if chunk and keys + len(call.keys) > KEYS_PER_ROUND_TRIP:
                yield chunk
                chunk, keys = [], 0
            chunk.append(call)
            keys += len(call.keys)
        if chunk:
            yield chunk


def _ttl_ms(signal: Signal) -> int:
    return int(signal.ttl.total_seconds() * 1000) if signal.ttl is not None else 0


def _plan(signal: Signal, version: int, keys: list[str], records: list[bytes], floors: list[bytes], *,
          cluster: bool, reset: bool = False) -> WritePlan:
    """Split per-key (record, floor) pairs into script calls (in cluster mode, each call's keys share a slot)."""
    plan = WritePlan(field=field_name(signal.name, version), ttl_ms=_ttl_ms(signal), calls=[], reset=reset)
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
            plan.calls.append(WriteCall([keys[i] for i in part], [records[i] for i in part],
                                        [floors[i] for i in part]))
    return plan


def plan_write(project: str, signal: Signal, version: int, rows: pa.Table, *, cluster: bool) -> WritePlan:
    """Encode ``rows`` and plan their newer-wins writes."""
    if rows.num_rows == 0:
        return WritePlan(field=field_name(signal.name, version), ttl_ms=_ttl_ms(signal), calls=[])
    keys = column_keys(project, signal.entity, find_column(rows, signal.entity.join_key, "join key"))
    return _plan(signal, version, keys, encode(signal.schema, rows), [NEWER] * len(keys), cluster=cluster)


def plan_mirror(project: str, signal: Signal, version: int, rows: pa.Table, absent: Sequence[Any],
                floors: pa.Table | None, *, cluster: bool, reset: bool) -> WritePlan:
    """Plan ``OnlineStore.mirror``: each row's record and each absent key's deletion, with their floors."""
    join_key = signal.entity.join_key
    keys = column_keys(project, signal.entity, find_column(rows, join_key, "join key")) if rows.num_rows else []
    records = encode(signal.schema, rows) if rows.num_rows else []
    gone = entity_keys(project, signal.entity, list(absent))
    if floors is None:
        floor_of: dict[str, bytes] = {}
        default = ANY
    else:
        floor_keys = column_keys(project, signal.entity, find_column(floors, join_key, "join key"))
        events = event_times_us(floors, EVENT_TIMESTAMP)
        made = created_us(floors.column(CREATED_TIMESTAMP) if CREATED_TIMESTAMP in floors.column_names else None,
                          floors.num_rows)
        floor_of = {k: rank_bytes(e, c) for k, e, c in zip(floor_keys, events.tolist(), made.tolist(), strict=True)}
        default = NEWER
    every = keys + gone
    return _plan(signal, version, every, records + [b""] * len(gone), [floor_of.get(k, default) for k in every],
                 cluster=cluster, reset=reset)


def _counts(replies: Sequence[Any]) -> tuple[int, int]:
    """(records written, fields deleted) summed over the script's replies."""
    return sum(int(r[0]) for r in replies), sum(int(r[1]) for r in replies)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def join_keys(keys: Sequence[bytes | str], prefix: str, signal: Signal) -> list[Any]:
    """The join key values of hash keys ``<prefix><key>`` (int64 entities: those that read as integers)."""
    out: list[Any] = []
    for raw in keys:
        key = raw.decode() if isinstance(raw, bytes) else raw
        value = key[len(prefix):]
        if signal.entity.join_key_type == "string":
            out.append(value)
        elif value.lstrip("-").isdigit() and str(int(value)) == value:
            out.append(int(value))
    return out


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


#: Default seconds to wait for a read or ping reply, for a write round trip, and for a connection.
READ_TIMEOUT_S = 0.5       # asyncio measures the loop's own delays too: a cold burst of 50 requests waited 0.2 s
WRITE_TIMEOUT_S = 2.0
# asyncio counts the loop's stalls in a connect too: 0.25 s once timed out in a busy suite. A stopped Redis is
# refused at once and a frozen one still accepts, so this bounds only an unreachable host.
CONNECT_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class StoreTimeouts:
    """A store's timeouts, in seconds: a read or ping reply, a write round trip, a connection."""

    read: float
    write: float
    connect: float


def _not_a_timeout(error: Exception) -> bool:
    return not isinstance(error, redis.TimeoutError)


class _RetryStaleConnection(redis.asyncio.retry.Retry):
    """redis.asyncio's Retry (the synchronous one is silently ignored by asyncio clients), retrying a
    connection error (a stale pooled connection, a refused connect) but never a timeout."""

    async def call_with_retry(self, do: Any, fail: Any, is_retryable: Any = None,
                              with_failure_count: bool = False) -> Any:
        def retryable(error: Exception) -> bool:
            return _not_a_timeout(error) and (is_retryable is None or is_retryable(error))

        return await super().call_with_retry(do, fail, is_retryable=retryable, with_failure_count=with_failure_count)


def _options(timeout: float, connect_timeout: float, *, asyncio: bool) -> dict[str, Any]:
    """redis-py client options: one retry on a fresh connection (asyncio), or two with backoff (sync)."""
    retry: Any
    if asyncio:
        retry = _RetryStaleConnection(NoBackoff(), retries=1, supported_errors=(redis.ConnectionError,))
    else:
        retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2,
                      supported_errors=(redis.ConnectionError, redis.TimeoutError))
    return {"socket_timeout": timeout, "socket_connect_timeout": connect_timeout, "retry": retry}


class _Target:
    """Where a store connects, for messages that never show the password."""

    def __init__(self, url: str, project: str, *timeouts: float) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise QuasarError(f"online store URL {url!r} is invalid: use redis://[:password@]host:port/db, "
                              "rediss:// for TLS")
        for timeout in timeouts:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
                raise QuasarError(f"online store timeouts must be positive seconds, got {timeout!r}")
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
    if cluster:     # redis-py's cluster client would retry a timeout too, dropping every node's connections
        no_retry = redis.asyncio.retry.Retry(NoBackoff(), retries=0)
        return redis.asyncio.cluster.RedisCluster.from_url(url, **{**options, "retry": no_retry})
    return redis.asyncio.Redis.from_url(url, **options)


def _ping_args(cluster: bool) -> dict[str, Any]:
    """PING every master of a cluster (redis-py pings one node), so a health check sees a frozen one."""
    return {"target_nodes": redis.cluster.RedisCluster.PRIMARIES} if cluster else {}


def _key_of(command: tuple[Any, ...]) -> Any:
    return command[3] if command[0] == "EVALSHA" else command[1]


def _cluster_pipeline(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """The replies of keyed ``commands`` (``EVALSHA`` of one slot's keys, ``HMGET``, ``HEXISTS``) on a synchronous
    RedisCluster: one plain pipeline per master, replies in order, the first error reply raised.

    redis-py's cluster pipeline resends every command that failed on a connection error or a timeout alone, each
    with its own retries: under a frozen master a read of 300 keys took 164 s. Here a round trip is tried at most
    three times with a short backoff (the standalone store's rule), a connection error first refreshing the slot
    map; a MOVED, ASK or TRYAGAIN (a resharding) hands the round trip to redis-py's pipeline, which follows them."""
    for attempt in range(3):
        nodes: dict[str, tuple[Any, list[int]]] = {}
        for i, command in enumerate(commands):
            node = client.get_node_from_key(_key_of(command))
            nodes.setdefault(node.name, (node, []))[1].append(i)
        replies: list[Any] = [None] * len(commands)
        try:
            for node, positions in nodes.values():
                pipe = client.get_redis_connection(node).pipeline(transaction=False)
                for i in positions:
                    pipe.execute_command(*commands[i])
                for i, reply in zip(positions, pipe.execute(raise_on_error=False), strict=True):
                    replies[i] = reply
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if attempt == 2:
                raise
            if isinstance(exc, redis.ConnectionError):
                client.nodes_manager.initialize()
            time.sleep(0.05 * 4 ** attempt)
            continue
        if any(isinstance(r, (AskError, TryAgainError)) for r in replies):     # MovedError is an AskError
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return list(pipe.execute())
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies
    raise AssertionError("unreachable")


# --- the stores -----------------------------------------------------------------------------------------------


class _RedisClients:
    """What both stores share: the target (URL, project, timeouts), and a read and a write client, each with its
    own pool and timeout, made on first use (a cluster client needs a reachable node to start)."""

    _asyncio: ClassVar[bool] = False

    def __init__(self, url: str, *, project: str, cluster: bool = False, socket_timeout: float = READ_TIMEOUT_S,
                 write_timeout: float = WRITE_TIMEOUT_S, connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        self._target = _Target(url, project, socket_timeout, write_timeout, connect_timeout)
        self.project = self._target.project
        self.cluster = bool(cluster)
        self._options = _options(socket_timeout, connect_timeout, asyncio=self._asyncio)
        self._write_options = _options(write_timeout, connect_timeout, asyncio=self._asyncio)
        self.timeouts = StoreTimeouts(float(socket_timeout), float(write_timeout), float(connect_timeout))
        self._client: Any = None
        self._writer: Any = None

    @property
    def client(self) -> Any:
        """The client for reads (and pings), made on first use."""
        if self._client is None:
            self._client = self._connect(self._options)
        return self._client

    @property
    def writer(self) -> Any:
        """The client for writes (its own pool, with the write timeout), made on first use."""
        if self._writer is None:
            self._writer = self._connect(self._write_options)
        return self._writer

    def _connect(self, options: dict[str, Any]) -> Any:
        make = _async_client if self._asyncio else _sync_client
        try:
            return make(self._target.url, self.cluster, options)
        except (RedisError, RedisClusterException) as exc:
            raise self._target.error(exc) from exc

    @property
    def supports_cluster(self) -> bool:
        return True


class RedisOnlineStore(_RedisClients, OnlineStore):
    """The online store on Redis (or a Redis cluster with ``cluster=True``); password and TLS from the URL."""

    def write(self, signal: Signal, version: int, rows: pa.Table) -> int:
        plan = plan_write(self.project, signal, version, rows, cluster=self.cluster)
        return sum(self._round_trip(plan, calls)[0] for calls in plan.round_trips())

    def mirror(self, signal: Signal, version: int, rows: pa.Table, *, absent: Sequence[Any] = (),
               floors: pa.Table | None = None, reset_expiry: bool = False) -> tuple[int, int]:
        plan = plan_mirror(self.project, signal, version, rows, absent, floors, cluster=self.cluster,
                           reset=reset_expiry)
        written = deleted = 0
        for calls in plan.round_trips():
            w, d = self._round_trip(plan, calls)
            written, deleted = written + w, deleted + d
        return written, deleted

    def scan(self, signal: Signal, version: int, *, count: int = 1000) -> Iterator[list[Any]]:
        prefix = key_prefix(self.project, signal.entity)
        field = field_name(signal.name, version)
        try:
            batch: list[bytes] = []
            for key in self.client.scan_iter(match=_glob_escape(prefix) + "*", count=count):
                batch.append(key)
                if len(batch) >= count:
                    yield self._holding(batch, prefix, field, signal)
                    batch = []
            if batch:
                yield self._holding(batch, prefix, field, signal)
        except (RedisError, RedisClusterException) as exc:
            raise self._target.error(exc) from exc

    def _holding(self, keys: list[bytes], prefix: str, field: str, signal: Signal) -> list[Any]:
        held = self._pipeline(self.client, [("HEXISTS", key, field) for key in keys])
        return join_keys([k for k, has in zip(keys, held, strict=True) if has], prefix, signal)

    def _pipeline(self, client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
        if self.cluster:
            return _cluster_pipeline(client, commands)
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = pipe.execute()
        return replies

    def _round_trip(self, plan: WritePlan, calls: list[WriteCall]) -> tuple[int, int]:
        for attempt in range(2):
            try:
                return _counts(self._pipeline(self.writer, [plan.args(call) for call in calls]))
            except NoScriptError as exc:          # a fresh or restarted server: load the script, do it again
                if attempt:
                    raise self._target.error(exc) from exc
                self._load_script()
            except (RedisError, RedisClusterException) as exc:
                raise self._target.error(exc) from exc
        raise AssertionError("unreachable")

    def _load_script(self) -> None:
        try:
            self.writer.script_load(NEWER_WINS)
        except (RedisError, RedisClusterException) as exc:
            raise self._target.error(exc) from exc

    def read(self, signal_versions: Sequence[tuple[Signal, int]], keys: Sequence[Any], *,
             now_us: int | None = None) -> list[OnlineColumns]:
        """See ``OnlineStore.read``; ``now_us`` (default: the clock) is the time the TTL is measured at."""
        plan = plan_read(self.project, signal_versions, keys)
        return decode_records(plan, self.read_records([plan])[0], now_us)

    def read_records(self, plans: Sequence[ReadPlan]) -> list[Records]:
        """The raw UFR records of every plan (``plan_read``), by field then key, in one round trip."""
        how, commands = read_commands(plans, cluster=self.cluster)
        if not commands:
            return split_replies(plans, how, [])
        try:
            try:
                replies = self._send(commands)
            except NoScriptError:             # a fresh or restarted server: load the script, ask again
                self.client.script_load(READ_MANY)
                replies = self._send(commands)
            except ResponseError:             # refused (no scripting, a key of another type): as HMGETs
                if how != "script":
                    raise
                how, commands = "hmget", [("HMGET", k, *p.fields) for p in plans for k in p.keys]
                replies = self._send(commands)
        except (RedisError, RedisClusterException) as exc:
            raise self._target.error(exc) from exc
        return split_replies(plans, how, replies)

    def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        if len(commands) == 1:
            return [self.client.execute_command(*commands[0])]
        return self._pipeline(self.client, commands)

    def ping(self) -> None:
        try:
            self.client.ping(**_ping_args(self.cluster))
        except (RedisError, RedisClusterException) as exc:
            raise self._target.error(exc) from exc

    def close(self) -> None:
        for client in (self._client, self._writer):
            if client is not None:
                client.close()
        self._client = self._writer = None

    def __enter__(self) -> RedisOnlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisOnlineStore({self._target.where}, project={self.project!r}, cluster={self.cluster})"


class AsyncRedisOnlineStore(_RedisClients, AsyncOnlineStore):
    """The asyncio twin of ``RedisOnlineStore`` (redis.asyncio), for the HTTP services. Use it from one
    event loop: its connections belong to the loop that made them."""

    _asyncio: ClassVar[bool] = True

    async def write(self, signal: Signal, version: int, rows: pa.Table) -> int:
        plan = plan_write(self.project, signal, version, rows, cluster=self.cluster)
        written = 0
        for calls in plan.round_trips():
            written += (await self._round_trip(plan, calls))[0]
        return written

    async def _round_trip(self, plan: WritePlan, calls: list[WriteCall]) -> tuple[int, int]:
        for attempt in range(2):
            try:
                return _counts(await self._stale_once(lambda: self._pipeline(self.writer, [plan.args(c) for c in calls])))
            except NoScriptError as exc:
                if attempt:
                    raise self._target.error(exc) from exc
                await self._load_script()
            except (RedisError, RedisClusterException) as exc:
                raise self._target.error(exc) from exc
        raise AssertionError("unreachable")

    async def _load_script(self) -> None:
        try:
            await self.writer.script_load(NEWER_WINS)
        except (RedisError, RedisClusterException) as exc:
            raise self._target.error(exc) from exc

    async def read(self, signal_versions: Sequence[tuple[Signal, int]], keys: Sequence[Any], *,
                   now_us: int | None = None) -> list[OnlineColumns]:
        plan = plan_read(self.project, signal_versions, keys)
        return decode_records(plan, (await self.read_records([plan]))[0], now_us)

    async def read_records(self, plans: Sequence[ReadPlan]) -> list[Records]:
        """See ``RedisOnlineStore.read_records``."""
        how, commands = read_commands(plans, cluster=self.cluster)
        if not commands:
            return split_replies(plans, how, [])
        try:
            try:
                replies = await self._send(commands)
            except NoScriptError:
                await self.client.script_load(READ_MANY)
                replies = await self._send(commands)
            except ResponseError:
                if how != "script":
                    raise
                how, commands = "hmget", [("HMGET", k, *p.fields) for p in plans for k in p.keys]
                replies = await self._send(commands)
        except (RedisError, RedisClusterException) as exc:
            raise self._target.error(exc) from exc
        return split_replies(plans, how, replies)

    async def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        if len(commands) == 1:
            return [await self._stale_once(lambda: self.client.execute_command(*commands[0]))]
        return await self._stale_once(lambda: self._pipeline(self.client, commands))

    @staticmethod
    async def _pipeline(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute()
        return replies

    async def _stale_once(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """``await call()``; on a cluster, a connection error (pooled connections to a restarted node are stale)
        once more after the free connections are dropped, a timeout never: the rule the standalone client's
        ``_RetryStaleConnection`` keeps per connection, which redis-py's cluster client does not keep."""
        if not self.cluster:
            return await call()
        try:
            return await call()
        except redis.ConnectionError:
            for client in (self._client, self._writer):
                for node in client.get_nodes() if client is not None else ():
                    await node.disconnect_free_connections()
            return await call()

    async def ping(self) -> None:
        try:
            await self._stale_once(lambda: self.client.ping(**_ping_args(self.cluster)))
        except (RedisError, RedisClusterException) as exc:
            raise self._target.error(exc) from exc

    async def close(self) -> None:
        for client in (self._client, self._writer):
            if client is not None:
                await client.aclose()
        self._client = self._writer = None

    async def aclose(self) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncRedisOnlineStore({self._target.where}, project={self.project!r}, cluster={self.cluster})"
