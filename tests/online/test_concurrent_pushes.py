"""Fault suite (issue 14): concurrent pushers over HTTP, random event and created times on a few keys.

``PUSHERS`` threads each send ``PUSHES`` requests to one live service (uvicorn on a socket, real Redis), every
request 1-3 rows of ``KEYS`` keys with event times from a small set (so ties are common) and, per request,
created times given (from a small set, some null) or left out (the arrival time). About one request in twenty
also holds a row stamped 9999-12-31: it must be refused whole (422), none of its rows written.

At the end each key's record must be the winner by ``quasar.signals.ordering`` over every row of the accepted
requests: the latest event time, then the latest created time (null the oldest). A row without a created
time was stamped on arrival, some instant between its request's send and its answer, so where such rows
decide, the check is exact up to that window: the stored row is one of them, its stamp inside its request's
window, and no other such row's request was sent after that stamp. Exact ties (same key, event and created
time, written by different threads) may go either way; the stored row must be one of the tied ones.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import redis

from fixtures.feature_service import PROJECT, LiveServer, column, iso, live_app
from quasar.signals.ordering import rank
from quasar.signals.times import micros
from quasar.signals.ufr.codec import record_created_time_us, record_event_time_us

PUSHERS, PUSHES, KEYS = 4, 200, 5
FIELD = "user_engagement@2"


@dataclass
class Sent:
    """One request: its rows (key, event us, created us or None when given as null, clicks), whether created
    times were given, its answer and the clock (µs) just before sending and just after the answer."""

    rows: list[tuple[int, int, int | None, int]]
    given: bool
    poisoned: bool
    status: int = 0
    sent_us: int = 0
    answered_us: int = 0
    written: int = 0
    body: dict[str, Any] = field(default_factory=dict)


def _pusher(url: str, seed: int, now: datetime, out: list[Sent], barrier: threading.Barrier) -> None:
    rnd = random.Random(seed)
    events = [now - timedelta(minutes=m) for m in range(8)]
    created = [now - timedelta(minutes=m) for m in range(1, 5)]
    with httpx.Client(base_url=url, timeout=30) as client:
        barrier.wait()
        for n in range(PUSHES):
            given = rnd.random() < 0.6
            rows, payload = [], []
            for r in range(rnd.randint(1, 3)):
                key = rnd.randrange(KEYS)
                event = rnd.choice(events)
                made = rnd.choice([*created, None]) if given else None
                clicks = seed * 1_000_000 + n * 10 + r
                rows.append((key, micros(event), None if made is None else micros(made), clicks))
                row: dict[str, Any] = {"user_id": key, "event_timestamp": iso(event), "ctr_7d": 0.5,
                                       "clicks": clicks, "dwell": 1.0}
                if given:
                    row["created_timestamp"] = None if made is None else iso(made)
                payload.append(row)
            poisoned = rnd.random() < 0.05
            if poisoned:
                payload.append({**payload[0], "event_timestamp": "9999-12-31T00:00:00Z", "clicks": -1})
            sent = Sent(rows, given, poisoned, sent_us=time.time_ns() // 1000)
            answer = client.post("/v1/push", json={"signal": "user_engagement", "rows": payload})
            sent.answered_us = time.time_ns() // 1000
            sent.status, sent.body = answer.status_code, answer.json()
            sent.written = sent.body.get("written", 0)
            out.append(sent)


def _check_key(key: int, stored: tuple[int, int | None, int], sent: list[Sent]) -> str | None:
    """None when the stored (event us, created us, clicks) is a winner by the rule; else what is wrong."""
    candidates = [(s, row) for s in sent if s.status == 200 for row in s.rows if row[0] == key]
    if not candidates:
        return "stored, though nothing was accepted" if stored else None
    event = max(row[1] for _, row in candidates)
    at_event = [(s, row) for s, row in candidates if row[1] == event]
    s_event, s_created, s_clicks = stored
    if s_event != event:
        return f"event {s_event}, expected {event}"
    arrivals = [(s, row) for s, row in at_event if not s.given]
    if arrivals:                                         # stamped on arrival: later than every given created time
        mine = [(s, row) for s, row in arrivals if row[3] == s_clicks]
        if len(mine) != 1 or s_created is None:
            return f"clicks {s_clicks} is not a row created on arrival at the latest event time"
        s, _ = mine[0]
        if not s.sent_us <= s_created <= s.answered_us:
            return f"created {s_created} outside its request's window [{s.sent_us}, {s.answered_us}]"
        later = [o for o, row in arrivals if o.sent_us > s_created]
        return f"{len(later)} row(s) sent after the stored row's arrival lost" if later else None
    best = max(rank(row[1], row[2]) for _, row in at_event)
    if rank(s_event, s_created) != best:
        return f"rank {(s_event, s_created)}, expected {best}"
    tied = {row[3] for _, row in at_event if rank(row[1], row[2]) == best}
    return None if s_clicks in tied else f"clicks {s_clicks} not among the rows of the winning rank {sorted(tied)}"


def test_concurrent_pushes_keep_the_winner_by_the_ordering_rule(redis_url: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    results: list[list[Sent]] = [[] for _ in range(PUSHERS)]
    barrier = threading.Barrier(PUSHERS)
    with LiveServer(live_app(redis_url)) as server:
        threads = [threading.Thread(target=_pusher, args=(server.url, i + 1, now, results[i], barrier))
                   for i in range(PUSHERS)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        elapsed = time.monotonic() - started
        with httpx.Client(base_url=server.url, timeout=30) as client:
            body = client.post("/v1/features", json={"entities": {"user_id": list(range(KEYS))},
                                                     "features": ["user_engagement:clicks"]}).json()
    sent = [s for batch in results for s in batch]
    assert len(sent) == PUSHERS * PUSHES
    statuses = {(s.poisoned, s.status) for s in sent}
    assert statuses <= {(False, 200), (True, 422)}, statuses       # every poisoned request refused, no other
    store = redis.Redis.from_url(redis_url)
    wrong = {}
    for key in range(KEYS):
        record = store.hget(f"{PROJECT}:user:{key}", FIELD)
        assert isinstance(record, bytes), key
        clicks = column(body, "clicks")["values"][key]
        assert clicks != -1                                         # no row of a refused request was written
        made = record_created_time_us(record)
        problem = _check_key(key, (record_event_time_us(record), made, clicks), sent)
        if problem:
            wrong[key] = problem
    store.close()
    accepted = [s for s in sent if s.status == 200]
    rows = sum(len(s.rows) for s in accepted)
    given = sum(len(s.rows) for s in accepted if s.given)
    print(f"\nconcurrent pushes: {PUSHERS} pushers x {PUSHES} requests = {len(sent)} in {elapsed:.1f}s; "
          f"{len(accepted)} accepted ({rows} rows: {given} with created times given, some null, "
          f"{rows - given} stamped on arrival), {len(sent) - len(accepted)} refused (a year-9999 row); "
          f"{sum(s.written for s in accepted)} rows written; {KEYS} keys, {len(wrong)} wrong: {wrong}")
    assert wrong == {}
