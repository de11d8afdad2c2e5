"""Point-in-time dataset benchmark: quasar's DuckDB join against Feast 0.67 and raw DuckDB, same data, one run.

    python -m bench pit [--size small|medium|large] [--repeat 3] [--feast-timeout 600] [--no-feast] [--no-write]

Sizes (spine rows x feature rows, 8 float32 features): small 10k x 100k, medium (default) 100k x 1M,
large 1M x 10M. The feature rows (one key in 20 distinct, about 20 rows per key over 30 days, 1% null
values, no two rows of one key at one time, so every exact answer is unique) are written once, seeded, as
one Parquet file per day, the way the offline store partitions a signal. The spine draws keys from the
entities (2% unknown) and times over the 30 days plus one more (where the 2-day TTL empties some answers);
2% of its rows repeat another row's key and time with another label, as the several candidates of one request
do. Timed, interleaved, best of ``--repeat`` after a warm-up:

* raw DuckDB: one ``ASOF LEFT JOIN`` of the spine onto ``read_parquet`` of the files, TTL applied, ordered
  by spine row. The limit: no tie handling, no type restoration.
* quasar ``point_in_time_duckdb`` over the same files: the engine call ``training_dataset`` makes.
* quasar ``build_training_dataset``: the whole dataset path (spine checks, chunking, output assembly).
* Feast 0.67 ``get_historical_features`` with ``offline_store: type: file`` over the same files (a temp repo
  made in code and applied), in a subprocess with a time budget, timed once inside it.

Every result is compared value by value with the raw ASOF result, keyed by spine row: mismatching cells,
and spine rows dropped (missing from the output) or repeated.
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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import (
    TS_TYPE,
    FeatureData,
    machine_line,
    markdown_table,
    ratio,
    timed,
    write_feature_parquet,
    write_results,
)
from quasar.signals import Entity, Float32, Signal, Source, signal
from quasar.store.dataset import build_training_dataset
from quasar.store.engines.base import FeatureRequest
from quasar.store.engines.local import LocalEngine
from quasar.store.pit_local import point_in_time_duckdb

SECTION = "## Point-in-time datasets (bench/pit.py)"
SIZES = {"small": (10_000, 100_000), "medium": (100_000, 1_000_000), "large": (1_000_000, 10_000_000)}
FEATURES = 8
DAYS = 30
TTL = timedelta(days=2)
ROWS_PER_KEY = 20
SEED = 7

user = Entity(name="user", join_key="user_id")
_events = Source.parquet(name="bench_events", path="unused/", timestamp="event_timestamp")


@signal(entity=user, source=_events, ttl=TTL, features={f"f{i}": Float32() for i in range(FEATURES)})
def user_features(batch: pa.Table) -> pa.Table:
    """Eight float32 features of a user (the benchmark's data is written directly, never computed)."""
    return batch


# --- data --------------------------------------------------------------------------------------------------------

def make_spine(data: FeatureData, n: int, seed: int, duplicate_fraction: float = 0.02) -> pa.Table:
    """``spine_row``, ``user_id``, ``event_timestamp``, ``label``: see the module docstring."""
    rng = np.random.default_rng(seed)
    known = rng.integers(0, data.entities, n, dtype=np.int64)
    unknown = data.entities + rng.integers(0, data.entities, n, dtype=np.int64)
    keys = np.where(rng.random(n) < 0.02, unknown, known)
    start_us = (data.start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    times = start_us + rng.integers(0, (data.days + 1) * 86_400 * 10**6, n, dtype=np.int64)
    dup = np.flatnonzero(rng.random(n) < duplicate_fraction)
    dup = dup[dup > 0]
    source = rng.integers(0, dup, dtype=np.int64) if len(dup) else dup
    keys[dup], times[dup] = keys[source], times[source]
    return pa.table({"spine_row": pa.array(np.arange(n, dtype=np.int64)), "user_id": pa.array(keys),
                     "event_timestamp": pa.array(times, TS_TYPE),
                     "label": pa.array(rng.integers(0, 2, n, dtype=np.int64))})


# --- the contenders ----------------------------------------------------------------------------------------------

def raw_duckdb(con: Any, spine: pa.Table, files: Sequence[str], features: Sequence[str]) -> pa.Table:
    """The limit: one ASOF LEFT JOIN onto the Parquet files, TTL applied, in spine order."""
    ttl_us = TTL // timedelta(microseconds=1)
    fresh = f"epoch_us(s.event_timestamp) - epoch_us(f.event_timestamp) <= {ttl_us}"
    cols = ", ".join(f"CASE WHEN {fresh} THEN f.{c} END AS {c}" for c in features)
    listing = "[" + ", ".join(f"'{f}'" for f in files) + "]"
    con.register("bench_spine", spine.select(["spine_row", "user_id", "event_timestamp"]))
    try:
        return con.sql(f"SELECT s.spine_row, {cols} FROM bench_spine s ASOF LEFT JOIN read_parquet({listing}) f "
                       "ON s.user_id = f.user_id AND s.event_timestamp >= f.event_timestamp "
                       "ORDER BY s.spine_row").to_arrow_table()
    finally:
        con.unregister("bench_spine")


def quasar_request(files: Sequence[str]) -> FeatureRequest:
    return FeatureRequest(signal=user_features.name, version=1, join_keys=("user_id",),
                          features=tuple((n, n) for n in user_features.schema.names), schema=user_features.schema,
                          ttl=TTL, files=tuple(files))


def quasar_dataset(engine: LocalEngine, spine: pa.Table, files: Sequence[str]) -> pa.Table:
    def resolve(name: str, version: int | None) -> tuple[Signal, int]:
        return user_features, 1

    def store_files(name: str, version: int, start: Any, end: Any) -> tuple[list[str], int | None]:
        return list(files), None

    return build_training_dataset(spine, [user_features.name], resolve=resolve, store_files=store_files,
                                  engine=engine).table


TABLE_PATH = "quasar build_training_dataset on the Iceberg table, chosen layout (the user's path)"
OLD_TABLE_PATH = "the same on the table in 16 key buckets (the layout before issue 17; what compact rewrites)"


def iceberg_table(folder: Path, data: Any, buckets: int | None = None) -> tuple[Any, list[str]]:
    """The same rows written as a backfill writes them: one Iceberg table, day x bucket(N, user_id) partitions,
    through the offline store (N chosen from the data as a backfill chooses it, or ``buckets``); its data files."""
    import pyarrow.parquet as pq

    from quasar.store.catalog import open_catalog
    from quasar.store.tables import OfflineStore

    folder.mkdir(parents=True, exist_ok=True)
    offline = OfflineStore(open_catalog(uri=f"sqlite:///{folder / 'catalog.db'}", warehouse=str(folder / "wh")),
                           namespace="signals", buckets=buckets)
    rows = pq.read_table(data.files).select(["user_id", "event_timestamp", "created_timestamp",
                                             *user_features.schema.names])
    offline.replace_window(user_features, 1, rows, data.start, data.start + timedelta(days=data.days + 1))
    return offline, offline.plan_files(user_features.name, 1)


def table_dataset(engine: LocalEngine, spine: pa.Table, offline: Any) -> pa.Table:
    """``build_training_dataset`` as ``Platform.training_dataset`` calls it: files planned from the table's
    current snapshot for the spine's time range, the table's bucket count for the join."""
    def resolve(name: str, version: int | None) -> tuple[Signal, int]:
        return user_features, 1

    def store_files(name: str, version: int, start: Any, end: Any) -> tuple[list[str], int | None, int | None]:
        snapshot = offline.current_snapshot_id(name, version)
        return (offline.plan_files(name, version, start=start, end=end, snapshot_id=snapshot), snapshot,
                offline.bucket_count(name, version))

    return build_training_dataset(spine, [user_features.name], resolve=resolve, store_files=store_files,
                                  engine=engine).table


FEATURE_STORE_YAML = """project: quasar_bench
registry: {registry}
provider: local
offline_store:
    type: file
online_store:
    type: sqlite
    path: {online}
entity_key_serialization_version: 3
"""


def feast_worker(folder: Path) -> None:
    """In a subprocess: a Feast repo over the Parquet folder, applied; time get_historical_features once."""
    import pandas as pd
    from feast import Entity as FeastEntity
    from feast import FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32 as FeastFloat32

    repo = folder / "feast_repo"
    repo.mkdir(exist_ok=True)
    (repo / "feature_store.yaml").write_text(FEATURE_STORE_YAML.format(registry=repo / "registry.db",
                                                                       online=repo / "online.db"))
    entity = FeastEntity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    source = FileSource(name="user_features_source", path=str(folder / "features"),
                        timestamp_field="event_timestamp", created_timestamp_column="created_timestamp")
    view = FeatureView(name="user_features", entities=[entity], ttl=TTL, source=source, online=False,
                       schema=[Field(name=f"f{i}", dtype=FeastFloat32) for i in range(FEATURES)])
    store = FeatureStore(repo_path=str(repo))
    store.apply([entity, view])
    entity_df = pd.read_parquet(folder / "spine.parquet")
    refs = [f"user_features:f{i}" for i in range(FEATURES)]
    start = time.perf_counter()
    frame = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
    seconds = time.perf_counter() - start
    out = frame[["spine_row", *[f"f{i}" for i in range(FEATURES)]]]
    pq.write_table(pa.Table.from_pandas(out, preserve_index=False), folder / "feast_result.parquet")
    (folder / "feast_time.json").write_text(json.dumps({"seconds": seconds}))


@dataclass
class FeastRun:
    seconds: float | None
    result: pa.Table | None
    note: str


def run_feast(folder: Path, spine: pa.Table, budget: float) -> FeastRun:
    """Feast in a subprocess (its own process group, killed when the budget runs out)."""
    pq.write_table(spine, folder / "spine.parquet")
    cmd = [sys.executable, "-m", "bench.pit", "--feast-worker", str(folder)]
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signals_os.SIGKILL)
        proc.communicate()
        return FeastRun(None, None, f"timed out after {budget:.0f} s")
    if proc.returncode != 0:
        tail = output.strip().splitlines()[-3:]
        return FeastRun(None, None, "failed: " + " / ".join(tail))
    seconds = json.loads((folder / "feast_time.json").read_text())["seconds"]
    return FeastRun(seconds, pq.read_table(folder / "feast_result.parquet"), "")


# --- comparison --------------------------------------------------------------------------------------------------

@dataclass
class Check:
    mismatches: int
    dropped: int
    repeated: int
    dropped_rows: np.ndarray


def compare(reference: pa.Table, other: pa.Table, features: Sequence[str]) -> Check:
    """Cells that differ from ``reference`` (rows 0..n-1 by ``spine_row``) and spine rows missing or repeated."""
    n = reference.num_rows
    rows = other.column("spine_row").to_numpy()
    counts = np.bincount(rows, minlength=n)
    dropped, repeated = int((counts == 0).sum()), int((counts > 1).sum())
    _, first = np.unique(rows, return_index=True)
    present = np.zeros(n, dtype=bool)
    present[rows[first]] = True
    mismatches = 0
    for name in features:
        want = _values(reference.column(name))
        got = np.full(n, np.nan)
        got[rows[first]] = _values(other.column(name))[first]
        same = (np.isnan(want) & np.isnan(got)) | (want == got)
        mismatches += int((~same & present).sum())
    return Check(mismatches, dropped, repeated, np.flatnonzero(counts == 0))


def _values(column: pa.ChunkedArray) -> np.ndarray:
    """float64 values with NaN for nulls (Feast gives NaN where a value is missing)."""
    return column.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)


# --- the run -----------------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench pit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="medium", help="data size (default medium)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of the DuckDB paths (default 3)")
    parser.add_argument("--feast-timeout", type=float, default=600.0, help="Feast's time budget in s (default 600)")
    parser.add_argument("--no-feast", action="store_true", help="skip Feast")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update bench/RESULTS.md")
    parser.add_argument("--feast-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.feast_worker:
        feast_worker(args.feast_worker)
        return 0
    spine_rows, feature_rows = SIZES[args.size]
    command = "python -m bench pit" + (" " + " ".join(argv) if argv else "")
    names = user_features.schema.names
    with tempfile.TemporaryDirectory(prefix="quasar-bench-pit-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        data = write_feature_parquet(folder / "features", rows=feature_rows, entities=feature_rows // ROWS_PER_KEY,
                                     features=FEATURES, days=DAYS, seed=SEED)
        spine = make_spine(data, spine_rows, SEED + 1)
        size_mb = sum(os.path.getsize(f) for f in data.files) / 2**20
        gen_s = time.perf_counter() - start
        print(f"data: {data.rows:,} feature rows in {len(data.files)} files ({size_mb:.0f} MiB), "
              f"{spine.num_rows:,} spine rows, written in {gen_s:.1f} s", file=sys.stderr)
        engine = LocalEngine()
        import duckdb
        raw_con = duckdb.connect()
        request = quasar_request(data.files)
        keys = spine.select(["user_id", "event_timestamp"])
        offline, table_files = iceberg_table(folder / "chosen", data)
        old, old_files = iceberg_table(folder / "fixed16", data, buckets=16)
        for what, files_of, store in (("chosen layout", table_files, offline), ("16 buckets", old_files, old)):
            print(f"  the Iceberg table a backfill writes, {what}: {len(files_of):,} data files "
                  f"({sum(os.path.getsize(f.removeprefix('file://')) for f in files_of) / 2**20:.0f} MiB), "
                  f"{store.bucket_count(user_features.name, 1)} key bucket(s)", file=sys.stderr)
        contenders = {
            "raw DuckDB ASOF JOIN (the limit)": lambda: raw_duckdb(raw_con, spine, data.files, names),
            "quasar point_in_time_duckdb": lambda: point_in_time_duckdb(engine.connection, keys, [request]),
            "quasar build_training_dataset": lambda: quasar_dataset(engine, spine, data.files),
            TABLE_PATH: lambda: table_dataset(engine, spine, offline),
            OLD_TABLE_PATH: lambda: table_dataset(engine, spine, old),
        }
        timings: dict[str, list[float]] = {k: [] for k in contenders}
        results: dict[str, pa.Table] = {}
        for rep in range(args.repeat + 1):            # the first round warms caches and is not counted
            for label, fn in contenders.items():
                t = timed(fn)
                results[label] = t.result
                if rep:
                    timings[label].append(t.best)
            print(f"  round {rep}: " + ", ".join(f"{v[-1]:.2f} s" for v in timings.values() if v), file=sys.stderr)
        feast = FeastRun(None, None, "not run (--no-feast)")
        if not args.no_feast:
            print(f"  Feast (budget {args.feast_timeout:.0f} s) ...", file=sys.stderr)
            feast = run_feast(folder, spine, args.feast_timeout)
            print(f"  Feast: {feast.seconds if feast.seconds is not None else feast.note}", file=sys.stderr)
        engine.close()
        raw_con.close()
        shutil.rmtree(folder / "feast_repo", ignore_errors=True)

    reference = results["raw DuckDB ASOF JOIN (the limit)"]
    rows_index = pa.array(np.arange(spine.num_rows, dtype=np.int64))
    outputs = {
        "quasar point_in_time_duckdb": results["quasar point_in_time_duckdb"].append_column("spine_row", rows_index),
        "quasar build_training_dataset": results["quasar build_training_dataset"],
        TABLE_PATH: results[TABLE_PATH],
        OLD_TABLE_PATH: results[OLD_TABLE_PATH],
    }
    raw_best = min(timings["raw DuckDB ASOF JOIN (the limit)"])
    table_rows = []
    for label in contenders:
        best = min(timings[label])
        check = None if label.startswith("raw") else compare(reference, outputs[label], names)
        table_rows.append(_row(label, best, spine.num_rows, raw_best, feast.seconds, check))
    if feast.seconds is not None and feast.result is not None:
        table_rows.append(_row("Feast 0.67 get_historical_features (file offline store)", feast.seconds,
                               spine.num_rows, raw_best, feast.seconds, compare(reference, feast.result, names)))
    else:
        table_rows.append(["Feast 0.67 get_historical_features (file offline store)", feast.note, "-", "-", "-",
                           "-", "-"])
    table = markdown_table(["path", "seconds", "spine rows/s", "vs raw DuckDB", "speed-up vs Feast",
                            "mismatching cells", "spine rows dropped / repeated"], table_rows)
    notes = []
    if feast.seconds is not None and feast.result is not None:
        notes.append(_dropped_note(compare(reference, feast.result, names), reference, spine, names))
    block = "\n".join([
        f"### size {args.size}: {spine.num_rows:,} spine rows x {data.rows:,} feature rows", "",
        f"Command: `{command}` ({datetime.now(UTC):%Y-%m-%d}; {machine_line()}; DuckDB threads = cores).",
        "",
        f"{data.entities:,} users, {FEATURES} float32 features, {len(data.files)} Parquet files of {size_mb:.0f} MiB, "
        f"TTL {TTL.days} days. DuckDB paths: best of {args.repeat} interleaved runs after a warm-up; Feast: one "
        f"run, timed inside its process (budget for the whole process {args.feast_timeout:.0f} s). Mismatches are counted cell by cell "
        f"against the raw ASOF result, keyed by spine row ({spine.num_rows * FEATURES:,} cells).",
        "", table, "", *notes,
    ])
    print(block)
    if not args.no_write:
        write_results(SECTION, section_with(block, args.size))
        print(f"wrote the '{SECTION[3:]}' section of bench/RESULTS.md", file=sys.stderr)
    return 0


INTRO = """Point-in-time correct training datasets: every spine row with 8 features as of its time. The same
seeded Parquet data (one file per day, as the offline store partitions a signal) is read by all paths in one
run: raw DuckDB `ASOF LEFT JOIN` (the limit: no tie handling, no type restoration), quasar's
`point_in_time_duckdb` (the engine call `training_dataset` makes), quasar's `build_training_dataset` (the
whole dataset path: spine checks, chunking, output assembly), the same path on the Iceberg table a backfill
writes of the same rows (day x bucket(N) partitions, N chosen from the data as a backfill chooses it: one file
per day at these sizes; files planned from its snapshot, as `Platform.training_dataset` does: the user's
path), the same on a table in 16 key buckets (the fixed layout before: hundreds of small files, what `quasar
compact` rewrites) and Feast 0.67 `get_historical_features` with
`offline_store: type: file` (Dask) over a temp repo made and applied in code. 2% of the spine rows repeat
another row's key and time (several candidates of one request); the spine's last day lies past the data, and
the 2-day TTL leaves many answers empty. The 2-core machine was shared with other jobs during these runs:
single timings moved by up to about 30%, which is why the DuckDB rows show the best of several runs."""


def section_with(block: str, size: str) -> str:
    """The whole section with this size's block replaced or added (sizes kept in small/medium/large order)."""
    from bench.common import RESULTS
    old = RESULTS.read_text() if RESULTS.exists() else ""
    start = old.find(SECTION)
    blocks: dict[str, str] = {}
    if start >= 0:
        end = old.find("\n## ", start + len(SECTION))
        body = old[start:end if end >= 0 else len(old)]
        for part in body.split("\n### ")[1:]:
            blocks[part.split()[1].rstrip(":")] = "### " + part.strip("\n")
    blocks[size] = block.strip("\n")
    ordered = [blocks[k] for k in sorted(blocks, key=lambda k: list(SIZES).index(k) if k in SIZES else 99)]
    return "\n\n".join([SECTION, INTRO, *ordered]) + "\n"


def _dropped_note(check: Check, reference: pa.Table, spine: pa.Table, names: Sequence[str]) -> str:
    """Why Feast's output lacks spine rows: empty answers, and repeated (key, time) pairs."""
    if not check.dropped:
        return "Feast returned every spine row."
    empty = np.ones(reference.num_rows, dtype=bool)
    for name in names:
        empty &= np.isnan(_values(reference.column(name)))
    keys = spine.column("user_id").to_numpy()
    times = spine.column("event_timestamp").cast(pa.int64()).to_numpy()
    pairs = np.stack([keys, times], axis=1)
    _, inverse, counts = np.unique(pairs, axis=0, return_inverse=True, return_counts=True)
    repeated = counts[inverse.ravel()] > 1
    rows = check.dropped_rows
    n_empty = int(empty[rows].sum())
    n_repeat = int((repeated[rows] & ~empty[rows]).sum())
    return (f"Feast left out {check.dropped:,} spine rows: {n_empty:,} whose answer is empty (no row of the key "
            f"at or before the time within the TTL; Dask's TTL filter removes the entity row itself), "
            f"{n_repeat:,} that repeat another row's key and time (it keeps one row per key and time), and "
            f"{check.dropped - n_empty - n_repeat:,} others. Every cell it did return matches.")


def _row(label: str, seconds: float, n: int, raw: float, feast: float | None, check: Check | None) -> list[Any]:
    found = ["(reference)", "(reference)"] if check is None else [
        f"{check.mismatches:,}", f"{check.dropped:,} / {check.repeated:,}"]
    return [label, f"{seconds:.3f}", f"{n / seconds:,.0f}", ratio(seconds, raw), ratio(feast, seconds, 1), *found]


if __name__ == "__main__":
    raise SystemExit(main())
