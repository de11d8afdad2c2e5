"""Online serving benchmark: quasar against Feast 0.67 and a raw Redis pipeline, same data, one run.

    python -m bench online [--http-seconds 10] [--http-rounds 4] [--connections 8] [--workers 1,cores]
                           [--materialize-rows 1000000]
                           [--no-feast] [--no-http] [--no-materialize] [--no-write]

One throwaway ``redis-server`` on a free port holds everything. 10,000 users have three signals (13
features: float32, int64, float64, string, a 16-dim vector, an id list), written with
``RedisOnlineStore.write`` for quasar and ``FeatureStore.write_to_online_store`` into a Feast repo made in code
(file offline store, Redis online store on the same server). Then:

* in process, 1 and 100 entities x 3 signals per call: quasar's ``Platform.online_features`` (the user's call),
  its parts (``plan_request`` + ``read_online_features``; ``RedisOnlineStore.read`` alone), a raw redis-py
  pipeline of ``HGETALL`` on the same hashes (the limit: no decoding at all), and Feast
  ``get_online_features(...).to_dict()``; latency percentiles over interleaved rounds, and the answers
  compared value by value;
* over HTTP, the quasar service (``run_service``, ``app_from_env`` on a SQLite registry) against
  ``feast serve`` with the same number of workers (one run per count, default 1 and the machine's cores): a
  bounded asyncio load
  generator (keep-alive HTTP/1.1, ``--connections`` connections, ``--http-seconds`` each in ``--http-rounds``
  interleaved rounds) reports requests/s and p50/p99;
* materialization of ``--materialize-rows`` rows of 100,000 users (8 float32 features): quasar's ``materialize``
  from an Iceberg table against Feast's ``materialize`` from the same rows in Parquet (in a subprocess with a
  time budget), and a sample of the written values compared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal as signals_os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from bench._http import Load, Server, free_port, measure_interleaved
from bench._online_goals import PROFILED_SERVER, categorize, goal_lines, profile_line, stage_line, stages
from bench.common import machine_line, markdown_table, ratio, write_feature_parquet, write_results
from quasar.online.materialize import materialize
from quasar.online.redis_store import RedisOnlineStore
from quasar.online.response import plan_request, read_online_features
from quasar.registry.registry import Registry
from quasar.signals import Entity, Float32, Float64, IdList, Int64, Signal, Source, String, Vector, signal
from quasar.signals.request_plan import PlanCache

SECTION = "## Online serving (bench/online.py)"
ROOT = Path(__file__).resolve().parent.parent
PROJECT = "bench"
USERS = 10_000
SEED = 7
SIZES = (1, 100)

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="bench_events", path="data/events/", timestamp="ts")


@signal(entity=user, source=events, online=True, owner="bench",
        features={"ctr_7d": Float32(), "clicks": Int64(), "dwell": Float64(),
                  **{f"e{i}": Float32() for i in range(5)}})
def user_engagement(batch: pa.Table) -> pa.Table:
    """Engagement counters."""
    return batch


@signal(entity=user, source=events, online=True, owner="bench",
        features={"country": String(), "age": Int64(), "taste": Vector(16)})
def user_profile(batch: pa.Table) -> pa.Table:
    """Profile and taste embedding."""
    return batch


@signal(entity=user, source=events, online=True, owner="bench",
        features={"recent_pins": IdList(), "score": Float32()})
def user_recent(batch: pa.Table) -> pa.Table:
    """Recently seen pins."""
    return batch


@signal(entity=user, source=events, online=True, owner="bench", features={f"f{i}": Float32() for i in range(8)})
def user_stats(batch: pa.Table) -> pa.Table:
    """Eight float32 features, for the materialization run."""
    return batch


SIGNALS = {s.name: s for s in (user_engagement, user_profile, user_recent)}
QUASAR_REFS = list(SIGNALS)
FEAST_REFS = [f"{s.name}:{n}" for s in SIGNALS.values() for n in s.schema.names]


# --- data ---------------------------------------------------------------------------------------------------


def make_rows(seed: int) -> dict[str, pa.Table]:
    """The three signals' rows for ``USERS`` users (one row each, event times in the last day, no nulls)."""
    rng = np.random.default_rng(seed)
    keys = pa.array(np.arange(USERS, dtype=np.int64))
    now_us = int(time.time() // 60 * 60 * 10**6)
    stamps = pa.array(now_us - rng.integers(0, 86_400 * 10**6, USERS), pa.timestamp("us", tz="UTC"))
    base = {"user_id": keys, "event_timestamp": stamps, "created_timestamp": stamps}
    engagement = {**base, "ctr_7d": pa.array(rng.random(USERS, dtype=np.float32)),
                  "clicks": pa.array(rng.integers(0, 10_000, USERS)), "dwell": pa.array(rng.random(USERS) * 100),
                  **{f"e{i}": pa.array(rng.random(USERS, dtype=np.float32)) for i in range(5)}}
    taste = rng.standard_normal(USERS * 16).astype(np.float32)
    profile = {**base, "country": pa.array(rng.choice(["US", "DE", "FR", "BR", "JP", "IN"], USERS)),
               "age": pa.array(rng.integers(13, 90, USERS)),
               "taste": pa.FixedSizeListArray.from_arrays(pa.array(taste), 16)}
    lengths = rng.integers(0, 21, USERS)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    pins = pa.ListArray.from_arrays(pa.array(offsets), pa.array(rng.integers(0, 10**9, int(lengths.sum()))))
    recent = {**base, "recent_pins": pins, "score": pa.array(rng.random(USERS, dtype=np.float32))}
    return {"user_engagement": pa.table(engagement), "user_profile": pa.table(profile),
            "user_recent": pa.table(recent)}


def key_sets(size: int, count: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed + size)
    return [rng.integers(0, USERS, size).tolist() for _ in range(count)]


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A throwaway redis-server on a free port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return proc, port
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


# --- Feast --------------------------------------------------------------------------------------------------

FEATURE_STORE_YAML = """project: {project}
registry: {repo}/registry.db
provider: local
offline_store:
  type: file
online_store:
  type: redis
  connection_string: "127.0.0.1:{port}"
entity_key_serialization_version: 3
"""


def feast_repo(repo: Path, port: int, project: str, views: dict[str, pa.Table], feast_types: dict[str, Any]) -> Any:
    """A Feast repo in ``repo`` with one FeatureView per table (Parquet sources, no TTL), applied."""
    from feast import Entity as FeastEntity
    from feast import FeatureStore, FeatureView, Field, FileSource, ValueType

    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(FEATURE_STORE_YAML.format(project=project, repo=repo, port=port))
    entity = FeastEntity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    objects: list[Any] = [entity]
    for name, table in views.items():
        path = repo / f"{name}.parquet"
        if not path.exists():
            pq.write_table(table, path)
        source = FileSource(name=f"{name}_source", path=str(path), timestamp_field="event_timestamp",
                            created_timestamp_column="created_timestamp")
        fields = [Field(name=n, dtype=feast_types[n]) for n in table.column_names
                  if n not in ("user_id", "event_timestamp", "created_timestamp")]
        objects.append(FeatureView(name=name, entities=[entity], ttl=timedelta(0), source=source, online=True,
                                   schema=fields))
    store = FeatureStore(repo_path=str(repo))
    store.apply(objects)
    return store


def feast_types() -> dict[str, Any]:
    import feast.types as ft

    out: dict[str, Any] = {"ctr_7d": ft.Float32, "clicks": ft.Int64, "dwell": ft.Float64, "country": ft.String,
                           "age": ft.Int64, "taste": ft.Array(ft.Float32), "recent_pins": ft.Array(ft.Int64),
                           "score": ft.Float32}
    return out | {f"e{i}": ft.Float32 for i in range(5)} | {f"f{i}": ft.Float32 for i in range(8)}


# --- in-process reads ---------------------------------------------------------------------------------------


def resolve(name: str, version: int | None) -> tuple[Signal, int]:
    return SIGNALS[name], 1


def time_calls(fn: Callable[[list[int]], Any], keys: Sequence[list[int]], out: list[float]) -> None:
    for k in keys:
        start = time.perf_counter()
        fn(k)
        out.append(time.perf_counter() - start)


def time_in_turn(contenders: dict[str, Callable[[list[int]], Any]], keys: Sequence[list[int]],
                 out: dict[str, list[float]] | None) -> None:
    """Every contender called once per key set, in an order that rotates from one set to the next: none runs
    in a tight loop of its own (which keeps Redis and the scheduler hot for it alone)."""
    names = list(contenders)
    for i, k in enumerate(keys):
        for name in names[i % len(names):] + names[:i % len(names)]:
            start = time.perf_counter()
            contenders[name](k)
            if out is not None:
                out[name].append(time.perf_counter() - start)


def normalized(values: Sequence[Any]) -> list[Any]:
    """Values with every float as float32 (both sides widen float32; float64 features compare at float32)."""
    def one(v: Any) -> Any:
        if isinstance(v, float):
            return float(np.float32(v))
        if isinstance(v, list):
            return [one(x) for x in v]
        return v
    return [one(v) for v in values]


def quasar_columns(body: dict[str, Any]) -> dict[str, list[Any]]:
    return {n: normalized(r["values"]) for n, r in zip(body["metadata"]["feature_names"], body["results"],
                                                        strict=True)}


def in_process(store: RedisOnlineStore, raw: redis.Redis, feast: Any, rounds: int,
               platform: Any = None) -> tuple[list[list[Any]], str, dict[tuple[int, str], float]]:
    """Latency of the read paths per request size; returns table rows, the equality note and the p50s (µs)."""
    plans = PlanCache(ttl_s=float("inf"))

    def quasar(keys: list[int]) -> Any:
        return read_online_features(store, plan_request({"user_id": keys}, QUASAR_REFS, resolve, plans=plans))

    def quasar_platform(keys: list[int]) -> Any:
        return platform.online_features({"user_id": keys}, QUASAR_REFS)

    versions = [(s, 1) for s in SIGNALS.values()]

    def quasar_read(keys: list[int]) -> Any:
        return store.read(versions, keys)

    def raw_pipeline(keys: list[int]) -> Any:
        pipe = raw.pipeline(transaction=False)
        for k in keys:
            pipe.hgetall(f"{PROJECT}:user:{k}")
        return pipe.execute()

    def feast_read(keys: list[int]) -> Any:
        return feast.get_online_features(features=FEAST_REFS, entity_rows={"user_id": keys}).to_dict()

    contenders: dict[str, Callable[[list[int]], Any]] = {"raw": raw_pipeline, "read": quasar_read, "quasar": quasar}
    if platform is not None:
        contenders["platform"] = quasar_platform
    if feast is not None:
        contenders["feast"] = feast_read
    rows, notes = [], []
    p50s: dict[tuple[int, str], float] = {}
    for size in SIZES:
        calls = 300 if size == 1 else 60
        sets = key_sets(size, calls * (rounds + 1), SEED)
        lat: dict[str, list[float]] = {k: [] for k in [*contenders, "raw loop"]}
        for rnd in range(rounds + 1):                       # round 0 warms up and is not counted
            chunk = sets[rnd * calls:(rnd + 1) * calls]
            time_in_turn(contenders, chunk, lat if rnd else None)
            time_calls(raw_pipeline, chunk, lat["raw loop"] if rnd else [])
        if feast is not None:
            sample = sets[0]
            ours = quasar_columns(quasar(sample))
            theirs = {n: normalized(v) for n, v in feast_read(sample).items()}
            same = all(ours[n] == theirs[n] for n in theirs)
            notes.append(f"{size} entities: quasar's and Feast's values {'identical' if same else 'DIFFER'} "
                         f"({len(theirs)} columns)")
        raw_p50 = float(np.percentile(lat["raw"], 50))
        for name, label in (("raw", "raw redis-py pipeline HGETALL (the limit)"),
                            ("raw loop", "raw pipeline, called back to back (a hot loop, for reference)"),
                            ("read", "quasar RedisOnlineStore.read alone (fetch + decode to Arrow columns)"),
                            ("quasar", "quasar plan_request (cached) + read_online_features (fetch, decode into the response)"),
                            ("platform", "quasar Platform.online_features (the user's call: registry, plan, read)"),
                            ("feast", "Feast 0.67 get_online_features().to_dict()")):
            if name not in lat:
                rows.append([f"{size}", label, "not run", "-", "-", "-", "-"])
                continue
            p50, p99 = (float(np.percentile(lat[name], q)) for q in (50, 99))
            p50s[(size, name)] = p50 * 1e6
            feast_p50 = float(np.percentile(lat["feast"], 50)) if "feast" in lat else None
            rows.append([f"{size}", label, f"{p50 * 1e6:,.0f}", f"{p99 * 1e6:,.0f}",
                         f"{1 / np.mean(lat[name]):,.0f}", ratio(p50, raw_p50), ratio(feast_p50, p50, 1)])
    return rows, "; ".join(notes), p50s


# --- HTTP ---------------------------------------------------------------------------------------------------


def http_bench(folder: Path, port: int, registry_url: str, feast_repo_path: Path | None, args: argparse.Namespace,
               workers: int) -> tuple[list[list[Any]], str, dict[tuple[str, int], Load]]:
    """quasar's service and ``feast serve`` with the same workers under the same load, in interleaved rounds."""
    servers: dict[str, Server] = {}
    q_port = free_port()
    code = f"from quasar.online.service.runner import run_service; run_service(port={q_port}, workers={workers})"
    servers["quasar"] = Server([sys.executable, "-c", code], {"QUASAR_REGISTRY_URL": registry_url,
                               "PYTHONPATH": str(ROOT), "QUASAR_REDIS_URL": f"redis://127.0.0.1:{port}/0",
                               "QUASAR_PROJECT": PROJECT, "QUASAR_MAX_ENTITIES": "1000"}, q_port, "/v1/features")
    if feast_repo_path is not None:
        f_port = free_port()
        feast_bin = str(Path(sys.executable).parent / "feast")
        servers["feast"] = Server([feast_bin, "-c", str(feast_repo_path), "serve", "-p", str(f_port), "-w",
                                   str(workers), "--no-access-log", "--max-requests", "100000000", "-r", "600"],
                                  {}, f_port, "/get-online-features")
    bodies = {name: [[json.dumps({"entities": {"user_id": k},
                                  "features": QUASAR_REFS if name == "quasar" else FEAST_REFS}).encode()
                      for k in key_sets(size, 256, SEED + 1)] for size in SIZES] for name in servers}
    runs = measure_interleaved(servers, folder, bodies, args.connections, args.http_seconds, args.http_rounds)
    results: dict[tuple[str, int], Load] = {}
    answers: dict[tuple[str, int], dict[str, Any]] = {}
    for name, measured_runs in runs.items():
        for size, (measured, answer) in zip(SIZES, measured_runs, strict=True):
            results[(name, size)], answers[(name, size)] = measured, answer
            print(f"  HTTP {name} {size}: {measured.rps:,.0f} req/s", file=sys.stderr)
    rows, notes = [], []
    for size in SIZES:
        for name, label in (("quasar", "quasar service (uvicorn)"), ("feast", "feast serve (gunicorn + uvicorn)")):
            got = results.get((name, size))
            if got is None:
                rows.append([f"{size}", label, "not run", "-", "-", "-", "-", "-", "-"])
                continue
            other = results.get(("feast", size))
            rows.append([f"{size}", label, f"{got.rps:,.0f}", f"{np.percentile(got.latencies, 50) * 1e3:.2f}",
                         f"{np.percentile(got.latencies, 99) * 1e3:.2f}", f"{got.errors}",
                         f"{got.cpu_per_request_ms:.2f}", ratio(got.rps, other.rps if other else None, 1),
                         ratio(other.cpu_per_request_ms if other else None, got.cpu_per_request_ms, 1)])
        if ("feast", size) in answers:
            ours = quasar_columns(answers[("quasar", size)])
            theirs = quasar_columns(answers[("feast", size)])
            same = all(ours[n] == theirs[n] for n in theirs)
            notes.append(f"{size} entities: the two services' answers {'agree' if same else 'DIFFER'}")
    return rows, "; ".join(notes), results


# --- materialization ----------------------------------------------------------------------------------------


SAMPLE_KEYS = list(range(0, 100_000, 1000))


def feast_materialize_worker(folder: Path) -> None:
    """In a subprocess: a Feast repo over the Parquet days, materialized into Redis once, timed; a sample read."""
    warnings.filterwarnings("ignore")
    params = json.loads((folder / "params.json").read_text())
    data = pq.read_table(folder / "features")
    store = feast_repo(folder / "feast_mat", params["port"], "benchmat", {"user_stats": data}, feast_types())
    start = datetime.fromisoformat(params["start"])
    began = time.perf_counter()
    store.materialize(start, start + timedelta(days=params["days"] + 1))
    seconds = time.perf_counter() - began
    sample = store.get_online_features(features=[f"user_stats:f{i}" for i in range(8)],
                                       entity_rows={"user_id": SAMPLE_KEYS}).to_dict()
    (folder / "feast_mat.json").write_text(json.dumps({"seconds": seconds, "sample": sample}))


def materialize_bench(folder: Path, port: int, registry: Registry, rows: int, with_feast: bool,
                      budget: float) -> tuple[list[list[Any]], str]:
    from quasar.store.catalog import open_catalog
    from quasar.store.tables import OfflineStore

    data = write_feature_parquet(folder / "features", rows=rows, entities=100_000, features=8, days=30, seed=SEED)
    table = pq.read_table(folder / "features").select(["user_id", "event_timestamp", "created_timestamp",
                                                       *data.features])
    offline = OfflineStore(open_catalog(uri=f"sqlite:///{folder / 'catalog.db'}", warehouse=str(folder / "wh")),
                           namespace="signals", buckets=16)
    offline.replace_window(user_stats, 1, table, data.start, data.start + timedelta(days=data.days))
    print(f"  materialize: {data.rows:,} rows in Iceberg", file=sys.stderr)
    with RedisOnlineStore(f"redis://127.0.0.1:{port}/0", project="benchmat") as online:
        began = time.perf_counter()
        result = materialize(signal=user_stats, version=1, offline=offline, online=online, state=registry)
        quasar_s = time.perf_counter() - began
        ours = read_online_features(online, plan_request({"user_id": SAMPLE_KEYS}, ["user_stats"],
                                                         lambda n, v: (user_stats, 1)))
    print(f"  quasar materialize: {quasar_s:.1f} s", file=sys.stderr)
    feast_s, note = None, "Feast not run"
    if with_feast:
        (folder / "params.json").write_text(json.dumps({"port": port, "start": data.start.isoformat(),
                                                        "days": data.days}))
        proc = subprocess.Popen([sys.executable, "-m", "bench.online", "--feast-materialize-worker", str(folder)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=budget)
            if proc.returncode == 0:
                got = json.loads((folder / "feast_mat.json").read_text())
                feast_s = got["seconds"]
                theirs = {n: normalized(v) for n, v in got["sample"].items()}
                same = all(quasar_columns(ours)[n] == theirs[n] for n in theirs)
                note = f"a sample of {len(SAMPLE_KEYS)} users: values {'identical' if same else 'DIFFER'}"
            else:
                note = "Feast failed: " + " / ".join(output.decode(errors="replace").strip().splitlines()[-3:])
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signals_os.SIGKILL)
            proc.communicate()
            note = f"Feast timed out after {budget:.0f} s"
        print(f"  Feast materialize: {feast_s if feast_s is not None else note}", file=sys.stderr)
    rows_out = [["quasar materialize (Iceberg -> Redis)", f"{quasar_s:.1f}", f"{data.rows / quasar_s:,.0f}",
                 f"{result.entities:,}", ratio(feast_s, quasar_s, 1)],
                ["Feast 0.67 materialize (Parquet -> Redis)", f"{feast_s:.1f}" if feast_s else "-",
                 f"{data.rows / feast_s:,.0f}" if feast_s else "-", "-", "1.0x" if feast_s else "-"]]
    return rows_out, note


# --- main ---------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench online", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--http-seconds", type=float, default=10.0, help="load per server and size (default 10)")
    parser.add_argument("--http-rounds", type=int, default=4, help="interleaved rounds they are split in (default 4)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections (default 8)")
    parser.add_argument("--workers", default="1,cores",
                        help="worker processes of each service, a comma list, 'cores' for the machine's cores "
                             "(default 1,cores: one HTTP run each)")
    parser.add_argument("--no-profile-http", dest="profile_http", action="store_false",
                        help="skip the profile of the quasar service's time by package")
    parser.add_argument("--profile-seconds", type=float, default=5.0, help="profiled load per size (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of the in-process reads (default 3)")
    parser.add_argument("--materialize-rows", type=int, default=1_000_000, help="rows to materialize (default 1M)")
    parser.add_argument("--feast-timeout", type=float, default=240.0, help="Feast materialize budget in s")
    parser.add_argument("--no-feast", action="store_true", help="skip Feast")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP load")
    parser.add_argument("--no-materialize", action="store_true", help="skip materialization")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update bench/RESULTS.md")
    parser.add_argument("--feast-materialize-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.feast_materialize_worker:
        feast_materialize_worker(args.feast_materialize_worker)
        return 0
    warnings.filterwarnings("ignore")
    command = "python -m bench online" + (" " + " ".join(argv) if argv else "")
    started_load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="quasar-bench-online-") as tmp:
        folder = Path(tmp)
        redis_proc, port = start_redis(folder)
        try:
            blocks = run_all(folder, port, args)
        finally:
            redis_proc.terminate()
            redis_proc.wait()
    loads = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    stamp = (f"Command: `{command}` ({datetime.now(UTC):%Y-%m-%d}; {machine_line()}). Load average at the start "
             f"{started_load}, at the end {loads} (1/5/15 min): the machine is shared with other sessions' work, "
             "so quasar and its peers are always measured side by side in interleaved rounds.")
    block = "\n".join([SECTION, "", INTRO, "", stamp, "", *blocks])
    print(block)
    if not args.no_write:
        write_results(SECTION, block)
        print(f"wrote the '{SECTION[3:]}' section of bench/RESULTS.md", file=sys.stderr)
    return 0


def run_all(folder: Path, port: int, args: argparse.Namespace) -> list[str]:
    registry_url = f"sqlite:///{folder / 'registry.db'}"
    registry = Registry.open(registry_url)
    registry.register_definitions([user], [events], [*SIGNALS.values(), user_stats], module="bench.online")
    rows = make_rows(SEED)
    with RedisOnlineStore(f"redis://127.0.0.1:{port}/0", project=PROJECT) as store:
        for name, table in rows.items():
            store.write(SIGNALS[name], 1, table)
        feast = None
        if not args.no_feast:
            feast = feast_repo(folder / "feast_repo", port, PROJECT, rows, feast_types())
            for name, table in rows.items():
                feast.write_to_online_store(name, table.to_pandas())
        print(f"  wrote {USERS:,} users x {len(rows)} signals (quasar{' and Feast' if feast else ''})", file=sys.stderr)
        platform = bench_platform(folder, registry_url, port)
        read_rows, read_note, p50s = in_process(store, redis.Redis(port=port), feast, args.rounds, platform)
        breakdown = {size: stages(platform, redis.Redis(port=port), PROJECT, QUASAR_REFS,
                                  key_sets(size, 600 if size == 1 else 120, SEED + 2)) for size in SIZES}
        platform.close()
    blocks = [f"### In-process reads: {len(FEAST_REFS)} features of 3 signals per entity", "",
              f"Latency per call in µs over {args.rounds} rounds after a warm-up round (300 key sets per round for 1 "
              "entity, 60 for 100; keys drawn at random from the 10,000 users), the contenders called in turn on "
              "each key set in a rotating order, so that none runs in a tight loop of its own; the raw pipeline "
              "is also timed back to back, for reference.", "",
              markdown_table(["entities", "path", "p50 µs", "p99 µs", "calls/s", "p50 vs raw", "speed-up vs Feast"],
                             read_rows), ""]
    if read_note:
        blocks += [f"Answers compared value by value (floats at float32): {read_note}.", ""]
    blocks += ["Where `Platform.online_features` spends its time, median µs per call of each stage timed alone "
               "(plan: feature list and plan from the caches; keys: hash keys; fetch: the one round trip; decode + "
               "response: records to the answer's lists):", "",
               *(stage_line(size, got) for size, got in breakdown.items()), ""]
    http_results: dict[int, dict[tuple[str, int], Load]] = {}
    for workers in ([] if args.no_http else worker_counts(args.workers)):
        http_rows, http_note, http_results[workers] = http_bench(
            folder, port, registry_url, None if args.no_feast else folder / "feast_repo", args, workers)
        blocks += [f"### HTTP: {args.connections} connections for {args.http_seconds:g} s per server and size, "
                   f"{workers} worker(s) each", "",
                   "An asyncio load generator in the bench process (keep-alive HTTP/1.1, pre-built requests over 256 "
                   f"key sets) shares the {os.cpu_count()} cores with the servers and Redis, so these are figures of "
                   f"the whole machine, the same for both servers: both run at once and are loaded in "
                   f"{args.http_rounds} interleaved rounds (order alternating), figures pooled over the rounds.", "",
                   "Server CPU is the user + system time of the server's processes (workers included) during its "
                   "rounds, per answered request: what the machine spends per request, whatever else shares it.", "",
                   markdown_table(["entities", "server", "requests/s", "p50 ms", "p99 ms", "errors",
                                   "server CPU ms/request", "rps vs Feast", "CPU/request vs Feast"], http_rows), ""]
        if http_note:
            blocks += [f"Answers compared value by value (floats at float32): {http_note}.", ""]
    if not args.no_http and args.profile_http:
        blocks += ["Where the quasar service's CPU goes, its own time by package (cProfile of one worker, 8 "
                   f"connections, {args.profile_seconds:g} s per size; the profiler slows Python code more than "
                   "the C parts, so Python's shares are upper bounds):", "",
                   *profile_http(folder, port, registry_url, args), ""]
    blocks += goal_lines(p50s, http_results, args.connections)
    if not args.no_materialize:
        mat_rows, mat_note = materialize_bench(folder, port, registry, args.materialize_rows, not args.no_feast,
                                               args.feast_timeout)
        blocks += [f"### Materialization: {args.materialize_rows:,} rows of 100,000 users, 8 float32 features", "",
                   "The latest row per user written to Redis; quasar from an Iceberg table (16 key buckets, one "
                   "partition per day), Feast from the same rows in daily Parquet files, each timed once.", "",
                   markdown_table(["path", "seconds", "rows/s", "entities written", "speed-up vs Feast"], mat_rows),
                   "", f"{mat_note}.", ""]
    registry.close()
    return blocks


def profile_http(folder: Path, port: int, registry_url: str, args: argparse.Namespace) -> list[str]:
    """The quasar service (one worker) under cProfile and the bench's load, its time by package per size."""
    q_port = free_port()
    stats = folder / "service.prof"
    server = Server([sys.executable, "-c", PROFILED_SERVER.format(port=q_port, stats=str(stats))],
                    {"QUASAR_REGISTRY_URL": registry_url, "PYTHONPATH": str(ROOT),
                     "QUASAR_REDIS_URL": f"redis://127.0.0.1:{port}/0", "QUASAR_PROJECT": PROJECT,
                     "QUASAR_MAX_ENTITIES": "1000"}, q_port, "/v1/features")
    lines = []
    for size in SIZES:
        bodies = {"quasar": [[json.dumps({"entities": {"user_id": k}, "features": QUASAR_REFS}).encode()
                              for k in key_sets(size, 256, SEED + 1)]]}
        stats.unlink(missing_ok=True)
        ((measured, _),) = measure_interleaved({"quasar": server}, folder, bodies, args.connections,
                                               args.profile_seconds, 1)["quasar"]
        lines.append(profile_line(size, categorize(str(stats)), measured.rps))
    return lines


def worker_counts(spec: str) -> list[int]:
    """``--workers``: ``1,cores`` -> [1, 2] on two cores (each count once)."""
    counts = [os.cpu_count() or 1 if part.strip() == "cores" else int(part) for part in spec.split(",") if part.strip()]
    return list(dict.fromkeys(counts))


def bench_platform(folder: Path, registry_url: str, port: int) -> Any:
    """A ``quasar.Platform`` over the bench's registry and Redis (a quasar.toml in ``folder``)."""
    from quasar.config import load_config
    from quasar.platform import Platform

    (folder / "quasar.toml").write_text(f'[project]\nname = "{PROJECT}"\n[registry]\nurl = "{registry_url}"\n'
                                        f'[online]\nredis_url = "redis://127.0.0.1:{port}/0"\n')
    return Platform(load_config(folder, env={}))


INTRO = """quasar's online path against Feast 0.67 on the same data in the same run, and against a raw redis-py
pipeline (the limit: the same hashes fetched, nothing decoded). One throwaway `redis-server` holds both
stores. Feast uses its Redis online store (`connection_string` to the same server), filled with
`write_to_online_store` (reads) and `materialize` (materialization). quasar reads one hash per entity with
one field per signal (a binary UFR record), one round trip for all entities and signals of a request (one
HMGET for one key, a server-side script returning every key's fields for more), decoded straight into the
response's lists."""


if __name__ == "__main__":
    raise SystemExit(main())
