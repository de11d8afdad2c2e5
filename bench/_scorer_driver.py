"""The scorer benchmark's load: the load generators, one timed setting in process, and the same setting over
several scoring processes (workers) that feed their own models or one shared model host (``bench/scorer.py``)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import torch

from bench._scorer_world import CANDIDATES, PINS, PROJECT, SIGNALS, USERS
from quasar.config import ServingConfig
from quasar.online.redis_store import AsyncRedisOnlineStore
from quasar.serving_adapters.cache import CacheConfig
from quasar.serving_adapters.features import check_keys
from quasar.serving_adapters.model_host import KEY_ENV, RemoteBackend
from quasar.serving_adapters.models import ModelRegistry, static_resolver
from quasar.serving_adapters.service import create_scoring_app
from quasar.serving_adapters.settings import MODEL_HOST_ENV, shared_model_host

IN_PROCESS, HOST_PROCESS, SHARED_HOST = "in process", "host process", "shared host"


@dataclass(frozen=True)
class Setting:
    """One row of the table but for the client count."""

    batching: bool
    cache: bool
    host: str            # IN_PROCESS, HOST_PROCESS (RemoteBackend.spawn per worker) or SHARED_HOST
    load: str            # "httpx" or "asgi"
    workers: int = 1


@dataclass
class Run:
    clients: int
    batching: bool
    cache: bool
    seconds: float
    latency_ms: list[float]
    fetch_ms: list[float]
    queue_ms: list[float]
    model_ms: list[float]
    per_call: list[int]
    errors: int
    host: str = "in process"     # where the model runs: in process, a host process per worker, one shared host
    workers: int = 1             # scoring processes (each its own app, event loop and share of the clients)
    load: str = "httpx"          # the load generator: httpx's ASGITransport, or bare ASGI calls
    busy_s: float = 0.0          # model-call seconds within the measured window
    cpu_s: float = 0.0           # this process's CPU seconds within it
    hits: float = 0.0            # candidate cache look-ups within it
    misses: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)     # the errors by "status type" (``failure``)
    examples: dict[str, str] = field(default_factory=dict)     # the first error message of each

    def failed(self, status: int, content: bytes) -> None:
        """Count one answer that was not a 200 with every score, by its status and error type."""
        self.errors += 1
        kind, message = failure(status, content)
        self.failures[kind] = self.failures.get(kind, 0) + 1
        self.examples.setdefault(kind, message)

    def merge_failures(self, other: Run) -> None:
        for kind, count in other.failures.items():
            self.failures[kind] = self.failures.get(kind, 0) + count
            self.examples.setdefault(kind, other.examples.get(kind, ""))

    @property
    def requests(self) -> int:
        return len(self.latency_ms)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def failure(status: int, content: bytes) -> tuple[str, str]:
    """``("<status> <error type>", message)`` of an answer that was not a 200 with every score."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return f"{status} (not JSON)", content[:200].decode("utf-8", "replace")
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return f"{status} {error.get('type', '?')}", str(error.get("message", ""))[:300]
    if status == 200:
        return "200 (wrong number of scores)", f"{len(body.get('scores', ()))} scores for {CANDIDATES} candidates"
    return f"{status}", content[:200].decode("utf-8", "replace")


def _timing(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            out[name] = float(rest[4:])
        elif rest.startswith("desc="):
            out[name] = float(rest.split('"')[1].split()[0])
    return out


def _counters(app: Any) -> tuple[float, float, float, float]:
    """(device-busy seconds, process CPU seconds, cache hits, cache misses) so far: busy is what a model host
    reports, else the model calls' duration."""
    scorer = app.state.scorer
    get = scorer.metrics.registry.get_sample_value
    times = os.times()
    host_busy = getattr(scorer.runner, "busy_s", None)
    busy = host_busy if host_busy is not None else get("quasar_scorer_model_seconds_sum", {"model": "ranker"})
    return (busy or 0.0, times.user + times.system,
            get("quasar_scorer_cache_lookups_total", {"model": "ranker", "result": "hit"}) or 0.0,
            get("quasar_scorer_cache_lookups_total", {"model": "ranker", "result": "miss"}) or 0.0)


class AsgiClient:
    """The leanest load generator: each request is one call of the ASGI app (a JSON body in, the status,
    headers and body out), no HTTP client, so what the process spends is the app's."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def post(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        payload = orjson.dumps(body)
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await asyncio.Event().wait()          # no disconnect while the answer is on its way
            raise AssertionError("unreachable")

        status, headers, chunks = 0, {}, []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", ())}
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/score", "raw_path": b"/v1/score", "query_string": b"",
                 "root_path": "", "client": ("127.0.0.1", 1), "server": ("bench", 80),
                 "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]}
        await self.app(scope, receive, send)
        return status, headers, b"".join(chunks)


class HttpxClient:
    """httpx's in-process transport (``ASGITransport``): a full HTTP client in the same process."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def post(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        response = await self.http.post("/v1/score", json=body)
        return response.status_code, dict(response.headers), response.content


async def drive(app: Any, clients: int, batching: bool, cache: bool, seconds: float, warmup: float,
                seed: int, load: str = "httpx", worker: int = 0) -> Run:
    """``clients`` concurrent loops, each posting one request at a time, for ``seconds`` after a warm-up,
    through ``load`` (``httpx`` or ``asgi``)."""
    run = Run(clients, batching, cache, seconds, [], [], [], [], [], 0, load=load)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
        poster: AsgiClient | HttpxClient = AsgiClient(app) if load == "asgi" else HttpxClient(http)
        start = time.perf_counter()
        measure_from, stop_at = start + warmup, start + warmup + seconds

        async def client(i: int) -> None:
            rng = np.random.default_rng([seed, clients, int(batching), i, worker])
            while (now := time.perf_counter()) < stop_at:
                body = {"model": "ranker", "entities": {"user_id": [int(rng.integers(0, USERS))]},
                        "candidates": {"pin_id": rng.integers(0, PINS, CANDIDATES).tolist()}}
                status, headers, content = await poster.post(body)
                done = time.perf_counter()
                if now < measure_from:
                    continue
                if status != 200 or len(orjson.loads(content)["scores"]) != CANDIDATES:
                    run.failed(status, content)
                    continue
                t = _timing(headers["server-timing"])
                run.latency_ms.append((done - now) * 1e3)
                run.fetch_ms.append(t["fetch"])
                run.queue_ms.append(t["queue"])
                run.model_ms.append(t["model"])
                run.per_call.append(int(t["batch"]))

        async def window() -> None:
            await asyncio.sleep(max(measure_from - time.perf_counter(), 0.0))
            before = _counters(app)
            await asyncio.sleep(max(stop_at - time.perf_counter(), 0.0))
            after = _counters(app)
            run.busy_s, run.cpu_s, run.hits, run.misses = (b - a for a, b in zip(before, after, strict=True))

        await asyncio.gather(window(), *(client(i) for i in range(clients)))
    return run


async def _app_run(url: str, folder: Path, device: torch.device, clients: int, setting: Setting, seconds: float,
                   warmup: float, backend: Any, *, worker: int = 0, barrier: Any = None) -> Run:
    """A fresh app and store; the model answering before the clients start (with ``barrier``, when every
    worker is ready)."""
    store = AsyncRedisOnlineStore(url, project=PROJECT)
    models = ModelRegistry(folder, static_resolver({s.name: {1: s} for s in SIGNALS}))
    app = create_scoring_app(models=models, store=store, device=device, batching=setting.batching, backend=backend,
                             max_batch_rows=4096, max_wait_ms=2.0, cache=CacheConfig(enabled=setting.cache))
    try:
        loaded = models.get("ranker")
        ready = await app.state.scorer.fetch(loaded, check_keys(loaded, {"user_id": [0]}, {"pin_id": [0]}))
        await asyncio.to_thread(app.state.scorer.runner, loaded, [ready.group.batch])
        if barrier is not None:
            await asyncio.to_thread(barrier.wait, 120)
        run = await drive(app, clients, setting.batching, setting.cache, seconds, warmup, seed=0, load=setting.load,
                          worker=worker)
        run.host, run.workers = setting.host, setting.workers
        return run
    finally:
        await app.state.scorer.close()
        await store.aclose()


def _worker(args: tuple[Any, ...], out: Any) -> None:
    """One scoring process of a multi-worker setting: its share of the clients, from ``start_at`` on."""
    url, folder, device, clients, setting, seconds, warmup, worker, barrier, host = args
    backend = None
    if setting.host == SHARED_HOST:
        backend = RemoteBackend.connect(host[0], authkey=host[1], device=device)
    elif setting.host == HOST_PROCESS:
        backend = RemoteBackend.spawn(folder, device=device)
    try:
        out.put(asyncio.run(_app_run(url, Path(folder), torch.device(device), clients, setting, seconds, warmup,
                                     backend, worker=worker, barrier=barrier)))
    except BaseException as exc:            # the parent reports it
        out.put(repr(exc))


@contextmanager
def _shared_host(setting: Setting, folder: Path, device: torch.device) -> Iterator[Any]:
    if setting.host != SHARED_HOST:
        yield None
        return
    env: dict[str, str] = {}
    with shared_model_host(ServingConfig(model_host="shared", device=str(device)), folder, env) as address:
        name, _, port = address.rpartition(":")
        yield (name, int(port)), env[KEY_ENV].encode()
    assert MODEL_HOST_ENV not in env


def run_workers(url: str, folder: Path, device: torch.device, clients: int, setting: Setting, seconds: float,
                warmup: float, *, ready_s: float = 60.0) -> Run:
    """``setting.workers`` spawned scoring processes, ``clients`` split between them, measured over the same
    window; their requests, model seconds and CPU seconds summed (the shared model host's CPU not counted)."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    shares = [clients // setting.workers + (i < clients % setting.workers) for i in range(setting.workers)]
    shares = [n for n in shares if n]
    barrier = ctx.Barrier(len(shares))                # every worker imported, connected and warm: go
    with _shared_host(setting, folder, device) as host:
        procs = [ctx.Process(target=_worker, args=((url, str(folder), str(device), n, setting, seconds, warmup, i,
                                                    barrier, host), out), daemon=True)
                 for i, n in enumerate(shares)]
        for p in procs:
            p.start()
        runs = [out.get(timeout=ready_s + 120 + seconds + warmup) for _ in procs]
        for p in procs:
            p.join(10)
    failed = [r for r in runs if not isinstance(r, Run)]
    if failed:
        raise RuntimeError(f"a scoring worker failed: {failed[0]}")
    merged = Run(clients, setting.batching, setting.cache, seconds, [], [], [], [], [], 0, host=setting.host,
                 load=setting.load, workers=setting.workers)
    for r in runs:
        for name in ("latency_ms", "fetch_ms", "queue_ms", "model_ms", "per_call"):
            getattr(merged, name).extend(getattr(r, name))
        merged.errors += r.errors
        merged.merge_failures(r)
        merged.busy_s += r.busy_s
        merged.cpu_s += r.cpu_s
        merged.hits += r.hits
        merged.misses += r.misses
    return merged


async def one_setting(url: str, folder: Path, device: torch.device, clients: int, setting: Setting,
                      seconds: float, warmup: float) -> Run:
    """One row of the table: in this process, or over ``setting.workers`` processes."""
    if setting.workers > 1 or setting.host == SHARED_HOST:
        return await asyncio.to_thread(run_workers, url, folder, device, clients, setting, seconds, warmup)
    backend = RemoteBackend.spawn(folder, device=str(device)) if setting.host == HOST_PROCESS else None
    return await _app_run(url, folder, device, clients, setting, seconds, warmup, backend)
