"""Request-time features and feature logging: what they cost, against the same request without them and
against Feast 0.67's on-demand feature views, in one run.

    python -m bench request_time [--rounds 3] [--http-seconds 8] [--connections 8] [--no-feast] [--no-http]
                                 [--no-write]

10,000 users have one stored signal (``user_engagement``: ctr_7d float32, clicks int64, dwell float64) in a
throwaway ``redis-server``. Two request-time signals read it: ``ctr_at_position`` (the ctr discounted by a
request field, the slot the item is shown in) and ``dwell_per_click``, each with a row form and a vectorised
form, registered from a module like a user's. Then:

* in process, 1 and 100 entities per call: ``Platform``'s path (plan, ``RedisOnlineStore.read``, build) for
  the stored features alone, and with the two request-time features (row mode for 1 entity, Arrow mode for
  100, as chosen by batch size); Feast ``get_online_features`` of the feature view alone and with an
  on-demand feature view computing the same two features (``mode="python"`` and ``mode="pandas"``); values
  compared;
* over HTTP (``quasar serve``, 1 worker, ``--connections`` keep-alive connections): a feature service of the
  same features without logging against the same service logging every served vector (sample rate 1.0)
  into its Iceberg table; requests/s and the rows that reached the log.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from bench._http import free_port, measure
from bench.common import machine_line, markdown_table, ratio, write_results
from bench.online import PROJECT, ROOT, key_sets, start_redis, time_calls

SECTION = "## Request-time features and feature logging (bench/request_time.py)"
USERS = 10_000
SEED = 11
SIZES = (1, 100)

MODULE = '''
import pyarrow as pa
import pyarrow.compute as pc

from quasar.signals import (Entity, FeatureLogging, FeatureService, Float32, Float64, Int64, Source, on_demand,
                            signal)

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="bench_events", path="data/events/", timestamp="ts")


@signal(entity=user, source=events, online=True, features={"ctr_7d": Float32(), "clicks": Int64(),
                                                           "dwell": Float64()})
def user_engagement(batch: pa.Table) -> pa.Table:
    """Engagement counters."""
    return batch


@on_demand(inputs=["user_engagement:ctr_7d"], request={"position": Int64()}, features={"ctr_at_position": Float64()})
def ctr_at_position(row):
    """The ctr discounted by the slot the item is shown in."""
    ctr = row["ctr_7d"]
    return {"ctr_at_position": None if ctr is None else ctr * 0.5 ** row["position"]}


@ctr_at_position.batch
def ctr_at_position(table):
    factor = pc.power(pa.scalar(0.5), pc.cast(table["position"], pa.float64()))
    return {"ctr_at_position": pc.multiply(pc.cast(table["ctr_7d"], pa.float64()), factor)}


@on_demand(inputs=["user_engagement:dwell", "user_engagement:clicks"], features={"dwell_per_click": Float64()})
def dwell_per_click(row):
    """Dwell time per click."""
    if row["dwell"] is None or row["clicks"] is None:
        return {"dwell_per_click": None}
    return {"dwell_per_click": row["dwell"] / (row["clicks"] + 1)}


@dwell_per_click.batch
def dwell_per_click(table):
    return {"dwell_per_click": pc.divide(table["dwell"], pc.add(pc.cast(table["clicks"], pa.float64()), 1.0))}


FEATURES = ["user_engagement", "ctr_at_position", "dwell_per_click"]
plain = FeatureService(name="plain", features=FEATURES)
logged = FeatureService(name="logged", features=FEATURES, logging=FeatureLogging(sample_rate=1.0))
'''

STORED = ["user_engagement"]
WITH_REQUEST = ["user_engagement", "ctr_at_position", "dwell_per_click"]


# --- Feast's on-demand feature views (the peer) -----------------------------------------------------------


def feast_views(mode: str) -> Any:
    from feast import Field, RequestSource
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.types import Float64, Int64

    request = RequestSource(name=f"slot_{mode}", schema=[Field(name="position", dtype=Int64)])
    fv = feast_views.fv                                                   # type: ignore[attr-defined]
    schema = [Field(name="ctr_at_position", dtype=Float64), Field(name="dwell_per_click", dtype=Float64)]
    if mode == "python":
        def transform_python(inputs: dict[str, Any]) -> dict[str, Any]:
            return {"ctr_at_position": [c * 0.5 ** p for c, p in zip(inputs["ctr_7d"], inputs["position"],
                                                                        strict=True)],
                    "dwell_per_click": [d / (k + 1) for d, k in zip(inputs["dwell"], inputs["clicks"], strict=True)]}
        return on_demand_feature_view(name="rt_python", sources=[fv, request], schema=schema,
                                      mode="python")(transform_python)

    def transform_pandas(inputs: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame()
        out["ctr_at_position"] = inputs["ctr_7d"].astype("float64") * 0.5 ** inputs["position"].astype("float64")
        out["dwell_per_click"] = inputs["dwell"] / (inputs["clicks"].astype("float64") + 1)
        return out
    return on_demand_feature_view(name="rt_pandas", sources=[fv, request], schema=schema,
                                  mode="pandas")(transform_pandas)


def feast_store(folder: Path, port: int, rows: pa.Table) -> Any:
    import pyarrow.parquet as pq
    from feast import Entity as FeastEntity
    from feast import FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32, Float64, Int64

    from bench.online import FEATURE_STORE_YAML

    repo = folder / "feast_rt"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(FEATURE_STORE_YAML.format(project="benchrt", repo=repo, port=port))
    pq.write_table(rows, repo / "user_engagement.parquet")
    entity = FeastEntity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    source = FileSource(name="ue_source", path=str(repo / "user_engagement.parquet"),
                        timestamp_field="event_timestamp", created_timestamp_column="created_timestamp")
    fv = FeatureView(name="user_engagement", entities=[entity], ttl=timedelta(0), source=source, online=True,
                     schema=[Field(name="ctr_7d", dtype=Float32), Field(name="clicks", dtype=Int64),
                             Field(name="dwell", dtype=Float64)])
    feast_views.fv = fv                                                   # type: ignore[attr-defined]
    store = FeatureStore(repo_path=str(repo))
    store.apply([entity, fv, feast_views("python"), feast_views("pandas")])
    store.write_to_online_store("user_engagement", rows.to_pandas())
    return store


# --- data and project -------------------------------------------------------------------------------------


def make_rows(seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    now_us = int(time.time() // 60 * 60 * 10**6)
    stamps = pa.array(now_us - rng.integers(0, 86_400 * 10**6, USERS), pa.timestamp("us", tz="UTC"))
    return pa.table({"user_id": pa.array(np.arange(USERS, dtype=np.int64)), "event_timestamp": stamps,
                     "created_timestamp": stamps, "ctr_7d": pa.array(rng.random(USERS, dtype=np.float32)),
                     "clicks": pa.array(rng.integers(0, 10_000, USERS)),
                     "dwell": pa.array(rng.random(USERS) * 100)})


def project(folder: Path, port: int) -> tuple[Any, dict[str, str]]:
    """A quasar project in ``folder`` (the module above registered, the rows written online); the platform and
    the environment a ``quasar serve`` of it needs."""
    import quasar
    from quasar.config import load_config

    (folder / "quasar.toml").write_text(f'[project]\nname = "{PROJECT}"\n')
    (folder / "rt_signals.py").write_text(MODULE)
    env = {"QUASAR_REDIS_URL": f"redis://127.0.0.1:{port}/0", "QUASAR_REGISTRY_URL": f"sqlite:///{folder}/reg.db",
           "QUASAR_CATALOG_URI": f"sqlite:///{folder}/catalog.db", "QUASAR_WAREHOUSE": str(folder / "warehouse"),
           "QUASAR_PROJECT": PROJECT}
    import os
    os.environ.update(env)
    p = quasar.Platform(load_config(folder))
    p.register(folder / "rt_signals.py")
    sv = p.registry.signal("user_engagement")
    p.online_store.write(sv.signal, sv.version, make_rows(SEED))
    return p, env


# --- in process -------------------------------------------------------------------------------------------


def exact(values: Sequence[Any]) -> list[Any]:
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values]


def in_process(p: Any, feast: Any, rounds: int) -> tuple[list[list[Any]], list[str]]:
    rng = np.random.default_rng(SEED)
    slots = {size: rng.integers(0, 10, size).tolist() for size in SIZES}     # drawn once: not timed

    def positions(n: int) -> list[int]:
        return slots[n] if n in slots else rng.integers(0, 10, n).tolist()

    def quasar_plain(keys: list[int]) -> Any:
        return p.online_features({"user_id": keys}, STORED)

    def quasar_rt(keys: list[int]) -> Any:
        return p.online_features({"user_id": keys, "position": positions(len(keys))}, WITH_REQUEST)

    def feast_plain(keys: list[int]) -> Any:
        return feast.get_online_features(features=["user_engagement:ctr_7d", "user_engagement:clicks",
                                                   "user_engagement:dwell"], entity_rows={"user_id": keys}).to_dict()

    def feast_odfv(mode: str) -> Callable[[list[int]], Any]:
        refs = ["user_engagement:ctr_7d", "user_engagement:clicks", "user_engagement:dwell",
                f"rt_{mode}:ctr_at_position", f"rt_{mode}:dwell_per_click"]

        def call(keys: list[int]) -> Any:
            rows = [{"user_id": k, "position": pos} for k, pos in zip(keys, positions(len(keys)), strict=True)]
            return feast.get_online_features(features=refs, entity_rows=rows).to_dict()
        return call

    contenders: dict[str, Callable[[list[int]], Any]] = {"q_plain": quasar_plain, "q_rt": quasar_rt}
    if feast is not None:
        contenders |= {"f_plain": feast_plain, "f_python": feast_odfv("python"), "f_pandas": feast_odfv("pandas")}
    rows, notes = [], []
    for size in SIZES:
        calls = 300 if size == 1 else 60
        sets = key_sets(size, calls * (rounds + 1), SEED)
        lat: dict[str, list[float]] = {k: [] for k in contenders}
        for rnd in range(rounds + 1):
            chunk = sets[rnd * calls:(rnd + 1) * calls]
            for name, fn in contenders.items():
                time_calls(fn, chunk, lat[name] if rnd else [])
        p50 = {k: float(np.percentile(v, 50)) for k, v in lat.items()}
        mode = "row (dict)" if size <= 8 else "vectorised (Arrow)"
        rows.append([size, "quasar: 3 stored features", f"{p50['q_plain'] * 1e6:,.0f}", "1.00x", "-"])
        rows.append([size, f"quasar: + 2 request-time features, {mode} mode", f"{p50['q_rt'] * 1e6:,.0f}",
                     ratio(p50["q_rt"], p50["q_plain"]), ratio(p50.get("f_python"), p50["q_rt"], 1)])
        if feast is not None:
            rows.append([size, "Feast 0.67: 3 feature-view features", f"{p50['f_plain'] * 1e6:,.0f}", "1.00x", "-"])
            for m in ("python", "pandas"):
                rows.append([size, f"Feast 0.67: + on-demand feature view, mode={m}", f"{p50[f'f_{m}'] * 1e6:,.0f}",
                             ratio(p50[f"f_{m}"], p50["f_plain"]), "-"])
            sample = sets[0]
            pos = [3] * len(sample)
            ours = p.online_features({"user_id": sample, "position": pos}, WITH_REQUEST)
            ours_cols = dict(zip(ours["metadata"]["feature_names"], (r["values"] for r in ours["results"]),
                                 strict=True))
            theirs = feast.get_online_features(
                features=["rt_python:ctr_at_position", "rt_python:dwell_per_click"],
                entity_rows=[{"user_id": k, "position": 3} for k in sample]).to_dict()
            same = all(exact(ours_cols[n]) == exact(theirs[n]) for n in ("ctr_at_position", "dwell_per_click"))
            notes.append(f"{size} entities: quasar's and Feast's request-time values "
                         f"{'identical' if same else 'DIFFER'}")
        for m in ("row", "batch"):
            keys = sets[1]
            pos = [2] * len(keys)
            got = p.online_features({"user_id": keys, "position": pos}, WITH_REQUEST, mode=m)
            if m == "row":
                row_answer = got
            elif got != row_answer:
                notes.append(f"{size} entities: row and batch modes DIFFER")
    return rows, notes


# --- HTTP: logging ----------------------------------------------------------------------------------------


def http_logging(folder: Path, env: dict[str, str], p: Any, args: argparse.Namespace) -> tuple[list[list[Any]], str]:
    q_port = free_port()
    code = ("from quasar.online.service.runner import run_service; "
            f"run_service('quasar.services:feature_app', port={q_port}, workers=1)")
    results = {}
    for service in ("plain", "logged"):
        bodies = [json.dumps({"entities": {"user_id": k, "position": [i % 10 for i in range(len(k))]},
                              "feature_service": service}).encode() for k in key_sets(1, 256, SEED + 1)]
        ((results[service], _),) = measure([sys.executable, "-c", code],
                                           {**env, "PYTHONPATH": str(ROOT), "QUASAR_PROJECT": str(folder)}, folder,
                                           q_port, "/v1/features", [bodies], args.connections, args.http_seconds)
        print(f"  HTTP {service}: {results[service].rps:,.0f} req/s", file=sys.stderr)
    logged_rows = 0
    try:
        logged_rows = p.feature_log("logged").num_rows
    except Exception as exc:                               # reported, not hidden
        print(f"  reading the log failed: {exc}", file=sys.stderr)
    base = results["plain"]
    rows = []
    for service, label in (("plain", "feature service, no logging"), ("logged", "same service, logging 100 %")):
        got = results[service]
        rows.append([label, f"{got.rps:,.0f}", f"{np.percentile(got.latencies, 50) * 1e3:.2f}",
                     f"{np.percentile(got.latencies, 99) * 1e3:.2f}", got.errors, ratio(got.rps, base.rps)])
    served = results["logged"].requests
    note = (f"{logged_rows:,} log rows in Iceberg after shutdown for {served:,} measured requests (plus the "
            "warm-up's); a full queue drops rows, counted in /metrics")
    return rows, note


# --- main -------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench request_time", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds in process (default 3)")
    parser.add_argument("--http-seconds", type=float, default=8.0, help="load per service (default 8)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections (default 8)")
    parser.add_argument("--no-feast", action="store_true", help="skip Feast")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP logging run")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update bench/RESULTS.md")
    args = parser.parse_args(list(argv) if argv is not None else None)
    warnings.filterwarnings("ignore")
    command = "python -m bench request_time" + (" " + " ".join(argv) if argv else "")
    with tempfile.TemporaryDirectory(prefix="quasar-bench-rt-") as tmp:
        folder = Path(tmp)
        redis_proc, port = start_redis(folder)
        try:
            p, env = project(folder, port)
            feast = None if args.no_feast else feast_store(folder, port, make_rows(SEED))
            read_rows, notes = in_process(p, feast, args.rounds)
            blocks = ["### In process: 1 and 100 entities, with and without two request-time features", "",
                      f"p50 latency per call in µs over {args.rounds} rounds after a warm-up round (300 calls per "
                      "round for 1 entity, 60 for 100). 'vs plain' is the cost of the request-time features on "
                      "the same request; 'speed-up vs Feast' compares quasar's request with them to Feast's with "
                      "its python-mode on-demand feature view.", "",
                      markdown_table(["entities", "path", "p50 µs", "vs plain", "speed-up vs Feast"], read_rows), ""]
            if notes:
                blocks += ["Values: " + "; ".join(notes) + ".", ""]
            if not args.no_http:
                http_rows, note = http_logging(folder, env, p, args)
                blocks += [f"### HTTP: feature logging at a 100 % sample rate, 1 entity, {args.connections} "
                           f"connections for {args.http_seconds:g} s, 1 worker", "",
                           markdown_table(["service", "requests/s", "p50 ms", "p99 ms", "errors", "vs no logging"],
                                          http_rows), "", note + ".", ""]
            p.close()
        finally:
            redis_proc.terminate()
            redis_proc.wait()
    stamp = f"Command: `{command}` ({datetime.now(UTC):%Y-%m-%d}; {machine_line()})."
    block = "\n".join([SECTION, "", stamp, "", *blocks])
    print(block)
    if not args.no_write:
        write_results(SECTION, block)
        print(f"wrote the '{SECTION[3:]}' section of bench/RESULTS.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
