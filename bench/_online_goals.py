"""Issue 17's online rows for ``python -m bench online``: each goal met or not from the run's own figures, and
where the time of ``Platform.online_features`` goes (its stages timed one by one, next to the raw pipeline on
the same keys)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import redis

from bench._http import Load

#: (entities, the most Platform.online_features may take against the raw pipeline).
IN_PROCESS_GOALS = {1: 2.0, 100: 1.5}
#: (entities, the least requests/s against ``feast serve`` with the same workers).
HTTP_GOALS = {1: 3.0, 100: 10.0}
HTTP_P99_MS = 10.0                       # for 1 entity


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def goal_lines(p50: dict[tuple[int, str], float], http: dict[int, dict[tuple[str, int], Load]],
               connections: int = 8) -> list[str]:
    """One line per goal of issue 17's online rows (the HTTP ones per worker count), from the run's p50s (µs,
    by (entities, path)) and loads (by workers, then (server, entities))."""
    lines = ["Issue 17, online rows (this run):", ""]
    for size, limit in IN_PROCESS_GOALS.items():
        ours, raw, feast = p50.get((size, "platform")), p50.get((size, "raw")), p50.get((size, "feast"))
        if ours is None or raw is None:
            continue
        ok = ours <= limit * raw and (size != 1 or feast is None or ours < feast)
        extra = " and faster than Feast" if size == 1 else ""
        versus = f", Feast {feast:,.0f} µs" if feast is not None else ""
        lines.append(f"- `Platform.online_features`, {size} entit{'y' if size == 1 else 'ies'}, vs the raw pipelined "
                     f"HGETALL, <= {limit:g}x{extra}: p50 {ours:,.0f} µs = {ours / raw:.2f}x raw ({raw:,.0f} µs)"
                     f"{versus}: {verdict(ok)}")
    for workers, loads in http.items():
        for size, least in HTTP_GOALS.items():
            ours_load, feast_load = loads.get(("quasar", size)), loads.get(("feast", size))
            if ours_load is None or feast_load is None:
                continue
            times = ours_load.rps / feast_load.rps
            p99 = float(np.percentile(ours_load.latencies, 99)) * 1e3
            ok = times >= least and (size != 1 or p99 <= HTTP_P99_MS)
            cond = f">= {least:g}x rps" + (f", p99 <= {HTTP_P99_MS:g} ms" if size == 1 else "")
            ours_cpu, feast_cpu = ours_load.cpu_per_request_ms, feast_load.cpu_per_request_ms
            line = (f"- HTTP, {size} entit{'y' if size == 1 else 'ies'}, 8 connections, vs `feast serve`, "
                    f"{workers} worker(s) each, {cond}: {ours_load.rps:,.0f} vs {feast_load.rps:,.0f} rps = "
                    f"{times:.1f}x, p99 {p99:.1f} ms; server CPU per request {ours_cpu:.2f} vs {feast_cpu:.2f} ms: "
                    f"{verdict(ok)}")
            if not ok:
                line += why_not(times, least, p99 if size == 1 else None, ours_cpu, feast_cpu, connections)
            lines.append(line)
    return [*lines, ""]


def why_not(times: float, least: float, p99: float | None, ours_cpu: float, feast_cpu: float,
            connections: int) -> str:
    """What the figures say about a missed HTTP goal: whether the server's own work explains it."""
    notes = []
    if times < least and feast_cpu and ours_cpu and feast_cpu / ours_cpu >= least:
        notes.append(f"the server spends {feast_cpu / ours_cpu:.1f}x less CPU per request than Feast's, so the "
                     "requests/s shortfall is time waiting for a CPU, not work in the server")
    if p99 is not None and p99 > HTTP_P99_MS and p99 > connections * ours_cpu:
        notes.append(f"p99 is more than the {connections * ours_cpu:.1f} ms that {connections} requests queued in the "
                     "server take on average, so the tail is not the server's work but waiting (for a CPU of the "
                     "shared machine, or a pause)")
    return (" (" + "; ".join(notes) + ")") if notes else ""


def stages(platform: Any, raw: redis.Redis, project: str, refs: Sequence[str], key_sets: Sequence[list[int]],
           ) -> dict[str, float]:
    """Median µs per call of each stage of ``Platform.online_features`` on ``key_sets`` (what it does, step
    by step), and of the raw pipeline on the same keys, interleaved call by call."""
    from quasar.online.response import plan_request, read_plans, response_from_records
    from quasar.online.store import now_us

    lists, store = platform.feature_lists, platform.online_store
    max_entities = platform.config.online.max_entities
    out: dict[str, list[float]] = {k: [] for k in ("plan", "keys", "fetch", "decode + response", "all", "raw")}

    def raw_pipeline(keys: list[int]) -> Any:
        pipe = raw.pipeline(transaction=False)
        for k in keys:
            pipe.hgetall(f"{project}:user:{k}")
        return pipe.execute()

    clock: Callable[[], float] = time.perf_counter
    for keys in key_sets:
        t0 = clock()
        planned = lists.expand(list(refs), platform._resolve)
        plan = plan_request({"user_id": keys}, planned.refs, planned.resolve, max_entities=max_entities,
                            lookup=planned.lookup, plans=lists.plans, scope=planned.scope)
        t1 = clock()
        plans = read_plans(store, plan)
        t2 = clock()
        records = store.read_records(plans)
        t3 = clock()
        response_from_records(plan, plans, records, now_us())
        t4 = clock()
        raw_pipeline(keys)
        t5 = clock()
        for name, seconds in (("plan", t1 - t0), ("keys", t2 - t1), ("fetch", t3 - t2), ("decode + response", t4 - t3),
                              ("all", t4 - t0), ("raw", t5 - t4)):
            out[name].append(seconds)
    return {k: float(np.median(v)) * 1e6 for k, v in out.items()}


def stage_line(size: int, got: dict[str, float]) -> str:
    parts = ", ".join(f"{k} {got[k]:,.0f}" for k in ("plan", "keys", "fetch", "decode + response"))
    return (f"- {size} entit{'y' if size == 1 else 'ies'}: {parts} (sum {got['all']:,.0f}; the raw pipeline on the "
            f"same keys {got['raw']:,.0f})")


#: Where a profiled function's own time is counted, by the first matching part of its file path (or name).
CATEGORIES = (
    ("socket I/O (send, recv)", ("sendall", "recv", "'send'", "writelines", "'write'", "transport")),
    ("uvicorn, httptools, the event loop", ("uvicorn/", "asyncio/", "uvloop", "httptools")),
    ("redis-py (asyncio client)", ("/redis/",)),
    ("quasar: plan, fetch, decode, response", ("/online/", "/signals/", "record_values")),
    ("starlette, fastapi, pydantic", ("starlette/", "fastapi/", "pydantic")),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("JSON (orjson), numpy", ("orjson", "numpy")),
)

#: The service under cProfile; the stats are written when it stops (uvicorn re-raises the SIGTERM it caught
#: once it has shut down, to the handler installed before it started).
PROFILED_SERVER = """
import cProfile, signal, sys, uvicorn
from quasar.online.service.app import app_from_env
app = app_from_env()
profile = cProfile.Profile()

def dump(*_):
    profile.disable()
    profile.dump_stats({stats!r})
    sys.exit(0)

signal.signal(signal.SIGTERM, dump)
profile.enable()
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning", access_log=False)
dump()
"""


def categorize(stats_path: str) -> list[tuple[str, float]]:
    """Own time (tottime) of a cProfile dump summed by ``CATEGORIES``, as fractions, largest first."""
    import pstats

    totals: dict[str, float] = {}
    stats = pstats.Stats(stats_path).stats  # type: ignore[attr-defined]
    for (path, _, name), (_, _, own, _, _) in stats.items():
        where = f"{path} {name!r}"
        label = next((c for c, needles in CATEGORIES if any(n in where for n in needles)), "other")
        totals[label] = totals.get(label, 0.0) + own
    whole = sum(totals.values()) or 1.0
    return sorted(((k, v / whole) for k, v in totals.items()), key=lambda kv: -kv[1])


def profile_line(size: int, shares: list[tuple[str, float]], rps: float) -> str:
    parts = ", ".join(f"{label} {share:.0%}" for label, share in shares)
    return (f"- {size} entit{'y' if size == 1 else 'ies'} (one worker under cProfile, {rps:,.0f} requests/s while "
            f"profiled): {parts}")
