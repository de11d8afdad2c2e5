"""One pipelined round trip of ``HMGET``s on an ``AsyncRedisOnlineStore``'s own connection pool, for the scorer.

redis-py's pipeline packs every command argument by argument and reads every reply under its own asyncio
timeout: for a request of 100 candidates that is most of the fetch (a profile: ~20 µs per command). Here the
commands of a whole round trip are packed once (each distinct field list is packed once, then only the key
changes), sent in one write on one pooled connection, and the replies are read back-to-back under a single
timeout, the store's read timeout, for the whole round trip. With redis-py's hiredis parser (the installed one)
the replies already received are taken straight from its reader, one ``gets()`` each; every socket read and
every other parser goes through the connection's public ``read_response``.

Failures keep the store's rules (``quasar.online.redis_store``): a connection error on a pooled connection
(stale after a Redis restart) is retried once on a fresh connection, a timeout never; unreachable ->
``OnlineUnavailableError``, anything else -> ``OnlineStoreError``, naming ``host:port`` and never the password.
A connection that failed in the middle of a round trip is disconnected before it goes back to the pool, so no
unread reply is ever handed to the next caller.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import RedisError

from quasar.online.redis_store import AsyncRedisOnlineStore

try:                        # redis-py's marker for "the reader holds no complete reply yet"
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _INCOMPLETE
except ImportError:         # pragma: no cover - another redis-py: the public path only
    _INCOMPLETE = None
from quasar.signals.errors import OnlineStoreError, OnlineUnavailableError, QuasarError

Reply = list[bytes | None]            # one HMGET reply: one record (or None) per field


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


class HmgetRoundTrip:
    """``await trip([(hash keys, fields), ...])`` -> for each read, one HMGET reply per key, in order.

    For a standalone store only: a cluster splits keys by slot, which its own ``read`` does."""

    def __init__(self, store: AsyncRedisOnlineStore) -> None:
        self.store = store
        self.timeout_s = store.timeouts.read
        self._packed: dict[tuple[str, ...], tuple[bytes, bytes]] = {}

    def _head_tail(self, fields: Sequence[str]) -> tuple[bytes, bytes]:
        key = tuple(fields)
        packed = self._packed.get(key)
        if packed is None:
            head = b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(key))
            packed = self._packed[key] = (head, b"".join(_bulk(f.encode()) for f in key))
        return packed

    def pack(self, reads: Sequence[tuple[Sequence[str], Sequence[str]]]) -> tuple[bytes, int]:
        """The RESP bytes of every HMGET of ``reads``, and how many commands they hold."""
        parts: list[bytes] = []
        count = 0
        for keys, fields in reads:
            head, tail = self._head_tail(fields)
            h, t = head.decode(), tail.decode()
            text = "".join([f"{h}${len(k)}\r\n{k}\r\n{t}" for k in keys])
            if text.isascii():          # the usual keys: lengths in characters are lengths in bytes, one encode
                parts.append(text.encode())
            else:
                for key in keys:
                    k = key.encode()
                    parts.append(b"%s$%d\r\n%s\r\n%s" % (head, len(k), k, tail))
            count += len(keys)
        return b"".join(parts), count

    async def __call__(self, reads: Sequence[tuple[Sequence[str], Sequence[str]]]) -> list[list[Reply]]:
        payload, count = self.pack(reads)
        if not count:
            return [[] for _ in reads]
        replies = await self._with_retry(payload, count)
        out: list[list[Reply]] = []
        at = 0
        for keys, _ in reads:
            out.append(replies[at:at + len(keys)])
            at += len(keys)
        return out

    async def _with_retry(self, payload: bytes, count: int) -> list[Any]:
        pool = self.store.client.connection_pool
        for attempt in range(2):
            try:
                return await self._once(pool, payload, count)
            except redis.ConnectionError as exc:     # a stale pooled connection (Redis restarted): once more
                if attempt:
                    raise self._error(pool, exc, count) from exc
            except (RedisError, OSError, TimeoutError) as exc:
                raise self._error(pool, exc, count) from exc
        raise AssertionError("unreachable")

    async def _once(self, pool: Any, payload: bytes, count: int) -> list[Any]:
        conn = await pool.get_connection()
        clean = False
        try:
            async with asyncio.timeout(self.timeout_s):
                await conn.send_packed_command(payload, check_health=False)
                replies = await _read_replies(conn, count)
            clean = True
            return replies
        finally:
            if not clean:                   # never pool a connection with replies still in flight
                await conn.disconnect(nowait=True)
            await pool.release(conn)

    def _error(self, pool: Any, exc: BaseException, count: int) -> QuasarError:
        """The store error of a failed round trip; a timeout names the read timeout and the round trip's size
        (one round trip serves a whole coalesced group: every request of it gets this answer)."""
        kwargs = pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else (
            f"no reply within the read timeout ({self.timeout_s:g} s for one round trip of {count} commands; "
            f"{type(exc).__name__})")
        password = kwargs.get("password")
        if password:
            reason = reason.replace(str(password), "***")
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError, TimeoutError)):
            return OnlineUnavailableError(f"online store at {where} is unreachable: {reason}")
        return OnlineStoreError(f"online store at {where} failed: {reason}")


async def _read_replies(conn: Any, count: int) -> list[Any]:
    """``count`` replies of ``conn``, in order (the caller bounds the wait)."""
    read = conn.read_response
    parser = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if _INCOMPLETE is None or reader is None or not hasattr(reader, "gets"):
        return [await read(disable_decoding=True, timeout=math.inf) for _ in range(count)]
    push = getattr(parser, "_hiredis_PushNotificationType", None)       # RESP3 out-of-band messages
    handle_push = getattr(parser, "handle_push_response", None)
    gets = reader.gets
    replies: list[Any] = []
    append = replies.append
    left = count
    while left:
        reply = gets(False)
        if type(reply) is list:             # the common case: an HMGET reply already received
            append(reply)
            left -= 1
            continue
        if reply is _INCOMPLETE:            # wait for more bytes, the public way (it raises what it must)
            reply = await read(disable_decoding=True, timeout=math.inf)
        elif isinstance(reply, Exception):  # an error reply (hiredis hands it over, redis-py would raise it)
            raise reply
        elif push is not None and isinstance(reply, push):    # not a reply: the parser's own handling
            if handle_push is not None:
                await handle_push(reply)
            continue
        append(reply)
        left -= 1
    return replies
