"""Spark past the driver's memory (issue 18): a Spark backfill and a Spark dataset over several times the data the
driver may hold, checked against the local engine on a sample.

    python -m bench spark_capped [--data-gb 3.0] [--driver-memory 512m] [--master local-cluster[2,1,2048]]
                                 [--executor-memory 2g] [--conf spark.memory.fraction=0.3] [--features 64] [--buckets 8] [--spine-rows 2000000]
                                 [--chunk-rows 250000] [--sample-users 500] [--sample-rows 5000] [--no-write]

The project is a real quasar project (``quasar.toml``, ``signals.py``) with ``[engine] default = "spark"``,
``[spark] master`` and ``spark.driver.memory`` / ``spark.executor.memory`` in ``[spark.conf]``. The master is
``local-cluster[N,cores,MB]``: Spark's own test cluster on one machine, whose executors are separate JVMs (and
their Python workers separate processes), so the driver's heap is the driver's alone; in ``local[*]`` the
executors share the driver's JVM and a small driver heap caps them too.

Data, made in code the way a product's sources are (``bench.common.write_feature_parquet``: one Parquet file per
day, sorted by time, ``--features`` float32 features, 1% nulls): ``--data-gb`` GiB of source rows, about 20 rows
per user over 30 days. The signal ``user_wide`` is a transform (default ``entity`` scope) that gives each row the
count of its user's earlier rows in the call (source order) and doubles every feature, so its table is about
as large as its source; one expectation gates it. Timed, in this order:

1. ``Platform.backfill("user_wide", ...)`` over the 30 days on the Spark engine, with its stages
   (``quasar.store.engines.spark_backfill.LAST_STAGES``);
2. ``Platform.training_dataset(spine_folder, ["user_wide@1"], out=folder)`` on the Spark engine: a
   ``--spine-rows`` spine as a folder of Parquet files, read by executors, result written by executors.

Checked against the local engine on a sample: the backfill, by a second project (``[engine] default = "local"``)
whose source holds the rows of ``--sample-users`` random users only, in the same files and order, backfilled
by the local engine: its table must equal the Spark table's rows of those users (``created_timestamp``
aside). The dataset, by the local engine's ``training_dataset`` in the Spark project (reading the table Spark
wrote) for the spine rows of those users plus ``--sample-rows`` random spine rows: cell for cell equal to the
Spark output's rows. Peak resident memory of the driver's JVM, each executor's JVM and this Python process is
read from ``/proc`` (``VmHWM``) while it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from bench.common import (
    EPOCH,
    TS_TYPE,
    FeatureData,
    machine_line,
    markdown_table,
    write_feature_parquet,
    write_results,
)

SECTION = "## Spark past the driver's memory (issue 18)"
SIGNAL = "user_wide"
DAYS = 30
START = datetime(2026, 1, 1, tzinfo=UTC)
ROWS_PER_USER = 20
SEED = 1818
PROJECT_VARS = ("QUASAR_REGISTRY_URL", "QUASAR_CATALOG_URI", "QUASAR_WAREHOUSE", "QUASAR_PROJECT")

MODULE = '''
import great_expectations as gx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quasar.signals import Entity, Float32, Int64, Source, signal

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="wide_events", path="data/events", timestamp="event_timestamp")
FEATURES = [f"f{{i}}" for i in range({features})]


@signal(entity=user, source=events, ttl="2d", features={{"n_seen": Int64(), **{{f: Float32() for f in FEATURES}}}},
        expectations=[gx.expectations.ExpectColumnValuesToBeBetween(column="n_seen", min_value=0)])
def user_wide(batch: pa.Table) -> pa.Table:
    """Per row: how many rows of its user came before it in the call (source order); every feature doubled."""
    keys = batch["user_id"].to_numpy()
    order = np.argsort(keys, kind="stable")
    ranked = keys[order]
    index = np.arange(len(keys))
    first = np.maximum.accumulate(np.where(np.r_[True, ranked[1:] != ranked[:-1]], index, 0))
    seen = np.empty(len(keys), dtype=np.int64)
    seen[order] = index - first
    two = pa.scalar(2.0, pa.float32())
    return pa.table({{"user_id": batch["user_id"], "event_timestamp": batch["event_timestamp"],
                     "n_seen": pa.array(seen), **{{f: pc.multiply(batch[f], two) for f in FEATURES}}}})
'''

TOML = """[registry]
url = "sqlite:///{root}/registry.db"

[offline]
catalog_uri = "sqlite:///{root}/catalog.db"
warehouse = "{root}/warehouse"
buckets = {buckets}

[engine]
default = "{engine}"
memory_limit = "2GB"
temp_directory = "{root}/duckdb-spill"

[spark]
master = "{master}"

[spark.conf]
"spark.driver.memory" = "{driver_memory}"
"spark.executor.memory" = "{executor_memory}"
"spark.sql.shuffle.partitions" = "{shuffle_partitions}"
"spark.local.dir" = "{root}/spark-local"
"""


def make_project(root: Path, *, engine: str, args: argparse.Namespace) -> Path:
    """A fresh project in ``root`` (its state removed; a source folder under ``data/`` is left alone)."""
    for name in ("registry.db", "catalog.db"):
        (root / name).unlink(missing_ok=True)
    for name in ("warehouse", "duckdb-spill", "spark-local"):
        shutil.rmtree(root / name, ignore_errors=True)
    (root / "data").mkdir(parents=True, exist_ok=True)
    extra = "".join(f'"{key}" = "{value}"\n' for key, value in (item.split("=", 1) for item in args.conf))
    (root / "quasar.toml").write_text(TOML.format(root=root, engine=engine, buckets=args.buckets, master=args.master,
                                                  driver_memory=args.driver_memory,
                                                  executor_memory=args.executor_memory,
                                                  shuffle_partitions=args.shuffle_partitions) + extra)
    (root / "signals.py").write_text(MODULE.format(features=args.features))
    return root


# --- memory watch --------------------------------------------------------------------------------------------------

def _hwm(pid: int) -> int:
    """Peak resident bytes of process ``pid`` (``VmHWM``), 0 once it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class JvmWatch:
    """Polls the peak resident memory of this process's Java descendants: the driver JVM (the child pyspark
    starts) and the executor JVMs (``CoarseGrainedExecutorBackend``) it launches."""

    def __init__(self) -> None:
        import psutil

        self._me = psutil.Process()
        self.driver: dict[int, int] = {}
        self.executors: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> JvmWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.poll()
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.poll()

    def poll(self) -> None:
        import psutil

        with contextlib.suppress(psutil.Error):
            for proc in self._me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if proc.name() != "java":
                        continue
                    line = " ".join(proc.cmdline())
                    into = self.executors if "CoarseGrainedExecutorBackend" in line else \
                        self.driver if "SparkSubmit" in line else None
                    if into is not None:
                        into[proc.pid] = max(into.get(proc.pid, 0), _hwm(proc.pid))


def _self_hwm() -> int:
    return _hwm(os.getpid()) or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- data ----------------------------------------------------------------------------------------------------------

def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*.parquet") if f.is_file())


def write_sample_source(source: Path, target: Path, users: np.ndarray) -> int:
    """The rows of ``users`` from every source file, in the same file names and row order."""
    target.mkdir(parents=True, exist_ok=True)
    keep = pa.array(users, pa.int64())
    rows = 0
    for path in sorted(source.glob("*.parquet")):
        table = pq.read_table(path)
        picked = table.filter(pc.is_in(table["user_id"], value_set=keep))
        pq.write_table(picked, target / path.name)
        rows += picked.num_rows
    return rows


def write_spine(folder: Path, rows: int, entities: int, seed: int, per_file: int = 250_000) -> None:
    """``spine_row``, ``user_id`` (2% unknown), ``event_timestamp`` over the 30 days and one more, ``label``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    start_us = (START - EPOCH) // timedelta(microseconds=1)
    for i, lo in enumerate(range(0, rows, per_file)):
        n = min(per_file, rows - lo)
        keys = np.where(rng.random(n) < 0.02, entities + rng.integers(0, entities, n), rng.integers(0, entities, n))
        times = start_us + rng.integers(0, (DAYS + 1) * 86_400 * 10**6, n, dtype=np.int64)
        pq.write_table(pa.table({"spine_row": pa.array(np.arange(lo, lo + n, dtype=np.int64)),
                                 "user_id": pa.array(keys.astype(np.int64)),
                                 "event_timestamp": pa.array(times, TS_TYPE),
                                 "label": pa.array(rng.integers(0, 2, n, dtype=np.int64))}),
                       folder / f"spine-{i:04d}.parquet")


# --- checks --------------------------------------------------------------------------------------------------------

def mismatched_cells(a: pa.Table, b: pa.Table) -> int:
    """Cells that differ between two tables of the same columns and rows (NaN equals NaN, null equals null)."""
    if a.num_rows != b.num_rows or a.column_names != b.column_names:
        return max(a.num_rows, b.num_rows) * max(a.num_columns, b.num_columns)
    bad = 0
    for name in a.column_names:
        x, y = a.column(name), b.column(name)
        if x.type != y.type:
            bad += a.num_rows
            continue
        same = pc.equal(x, y)
        both_null = pc.and_(pc.is_null(x), pc.is_null(y))
        if pa.types.is_floating(x.type):
            both_null = pc.or_(both_null, pc.and_(pc.is_nan(x), pc.is_nan(y)))
        ok = pc.or_(pc.fill_null(same, False), pc.fill_null(both_null, False))
        bad += a.num_rows - pc.sum(ok).as_py() if a.num_rows else 0
    return bad


def stored_rows(files: Sequence[str], users: np.ndarray | None = None) -> pa.Table:
    """A signal table's rows (of ``users`` only), ``created_timestamp`` dropped, sorted by user and time."""
    dataset = pads.dataset([f.removeprefix("file://") for f in files], format="parquet")
    filt = None if users is None else pc.field("user_id").isin(pa.array(users, pa.int64()))
    table = dataset.to_table(filter=filt)
    table = table.drop_columns([c for c in ("created_timestamp",) if c in table.column_names])
    return table.sort_by([("user_id", "ascending"), ("event_timestamp", "ascending")]).replace_schema_metadata(None)


def _equal(a: pa.Table, b: pa.Table) -> tuple[bool, int]:
    b = b.select(a.column_names) if set(a.column_names) == set(b.column_names) else b
    a, b = a.combine_chunks().replace_schema_metadata(None), b.combine_chunks().replace_schema_metadata(None)
    if a.schema.equals(b.schema) and a.equals(b):
        return True, 0
    return False, mismatched_cells(a, b)


# --- the run -------------------------------------------------------------------------------------------------------

def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


@contextlib.contextmanager
def _own_project_vars() -> Iterator[None]:
    saved = {v: os.environ.pop(v) for v in PROJECT_VARS if v in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench spark_capped", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-gb", type=float, default=3.0,
                        help="GiB of source rows in Arrow (default 3.0; the Parquet files come out larger: "
                             "write_feature_parquet dictionary-encodes the random floats)")
    parser.add_argument("--driver-memory", default="512m", help="spark.driver.memory (default 512m)")
    parser.add_argument("--executor-memory", default="2g", help="spark.executor.memory (default 2g)")
    parser.add_argument("--master", default="local-cluster[2,1,2048]",
                        help="[spark] master (default local-cluster[2,1,2048]: 2 executor JVMs, 1 core, 2048 MB)")
    parser.add_argument("--shuffle-partitions", type=int, default=64,
                        help="spark.sql.shuffle.partitions (default 64: a persisted partition Spark reads back "
                             "from disk is allocated whole on the executor's heap)")
    parser.add_argument("--conf", action="append", default=None, metavar="KEY=VALUE",
                        help="another [spark.conf] setting of the project (repeatable; default "
                             "spark.memory.fraction=0.3: at Spark's 0.6 the executors ran out of heap, see RESULTS.md)")
    parser.add_argument("--features", type=int, default=64, help="float32 features of the source (default 64)")
    parser.add_argument("--buckets", type=int, default=8, help="[offline] buckets: key buckets per day (default 8)")
    parser.add_argument("--spine-rows", type=int, default=2_000_000, help="spine rows (default 2,000,000)")
    parser.add_argument("--chunk-rows", type=int, default=250_000, help="spine rows per join group")
    parser.add_argument("--sample-users", type=int, default=500, help="users whose rows are checked (default 500)")
    parser.add_argument("--sample-rows", type=int, default=5_000, help="random spine rows checked as well")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp folder, removed)")
    parser.add_argument("--reuse-data", action="store_true",
                        help="with --dir: keep the source files an earlier run made there (same options, same seed)")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {SECTION!r} of bench/RESULTS.md")
    args = parser.parse_args(argv)
    args.conf = ["spark.memory.fraction=0.3"] if args.conf is None else args.conf
    folder = args.dir or Path(tempfile.mkdtemp(prefix="quasar-spark-capped-"))
    need = 6 * args.data_gb * 2**30
    if shutil.disk_usage(folder).free < need:
        print(f"need about {_gib(need)} free in {folder}", file=sys.stderr)
        return 1
    try:
        with _own_project_vars():
            return run(args, folder.resolve(), argv)
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


def run(args: argparse.Namespace, folder: Path, argv: Sequence[str] | None) -> int:
    import quasar
    from quasar.store.engines.spark_backfill import LAST_STAGES

    load_before = os.getloadavg()[0]
    capped = make_project(folder / "capped", engine="spark", args=args)
    sample = make_project(folder / "sample", engine="local", args=args)
    for stale in (sample / "data" / "events", folder / "spine", folder / "train"):
        shutil.rmtree(stale, ignore_errors=True)
    row_bytes = 8 * 3 + 4 * args.features
    rows = int(args.data_gb * 2**30 / row_bytes)
    entities = max(1, rows // ROWS_PER_USER)
    began = time.perf_counter()
    events = capped / "data" / "events"
    if args.reuse_data and len(list(events.glob("*.parquet"))) == DAYS:
        print(f"reusing the source files in {events}", file=sys.stderr)
        made = sum(pq.ParquetFile(f).metadata.num_rows for f in events.glob("*.parquet"))
        data = FeatureData(files=sorted(str(f) for f in events.glob("*.parquet")), rows=made, entities=entities,
                           features=[f"f{i}" for i in range(args.features)], start=START, days=DAYS)
    else:
        print(f"writing {args.data_gb} GiB of source rows ({rows:,} rows) ...", file=sys.stderr)
        data = write_feature_parquet(events, rows=rows, entities=entities, features=args.features, days=DAYS,
                                     seed=SEED, start=START)
    source_bytes = folder_bytes(capped / "data" / "events")
    made_s = time.perf_counter() - began
    rng = np.random.default_rng(SEED + 1)
    users = np.sort(rng.choice(entities, size=min(args.sample_users, entities), replace=False)).astype(np.int64)
    sample_source_rows = write_sample_source(capped / "data" / "events", sample / "data" / "events", users)
    spine_dir = folder / "spine"
    write_spine(spine_dir, args.spine_rows, entities, SEED + 2)
    print(f"  {data.rows:,} rows, {_gib(source_bytes)}, {made_s:.0f} s; sample source {sample_source_rows:,} rows",
          file=sys.stderr)
    python_before = _self_hwm()
    times: dict[str, float] = {}
    end = START + timedelta(days=DAYS)
    with JvmWatch() as watch, quasar.Platform.open(capped) as p:
        p.register("signals.py")
        began = time.perf_counter()
        engine: Any = p.engine()
        session = engine.session
        session.range(1).count()
        times["session"] = time.perf_counter() - began
        sc = session.sparkContext
        conf = {k: sc.getConf().get(k) for k in ("spark.master", "spark.driver.memory", "spark.executor.memory")}
        driver_heap = int(sc._jvm.java.lang.Runtime.getRuntime().maxMemory())
        executors = int(sc._jsc.sc().getExecutorMemoryStatus().size()) - 1           # less the driver's entry
        print(f"  Spark up in {times['session']:.1f} s: {conf}, driver max heap {_mib(driver_heap)}, "
              f"{executors} executors", file=sys.stderr)
        print("Spark backfill ...", file=sys.stderr)
        began = time.perf_counter()
        result, = p.backfill(SIGNAL, START, end)
        times["backfill"] = time.perf_counter() - began
        stages = dict(LAST_STAGES)
        print(f"  {times['backfill']:.1f} s, {stages}", file=sys.stderr)
        files = p.offline.plan_files(SIGNAL, 1)
        table_bytes = sum(os.path.getsize(f.removeprefix("file://")) for f in files)
        print("Spark dataset ...", file=sys.stderr)
        began = time.perf_counter()
        out = p.training_dataset(spine_dir, [f"{SIGNAL}@1"], out=folder / "train", chunk_rows=args.chunk_rows)
        times["dataset"] = time.perf_counter() - began
        watch.poll()
        python_spark = _self_hwm()
        out_rows = pq.ParquetDataset(out).read(columns=["spine_row"]).num_rows
        out_bytes = folder_bytes(Path(out))
        print(f"  {times['dataset']:.1f} s, {out_rows:,} rows, {_gib(out_bytes)}", file=sys.stderr)
        engine.close()
        # the sample checks, on the local engine
        print("local engine on the sample ...", file=sys.stderr)
        spine = pads.dataset(spine_dir, format="parquet").to_table()
        picked = np.union1d(np.flatnonzero(np.isin(spine["user_id"].to_numpy(), users)),
                            rng.choice(spine.num_rows, size=min(args.sample_rows, spine.num_rows), replace=False))
        sample_spine = spine.take(pa.array(picked))
        began = time.perf_counter()
        local_ds = p.training_dataset(sample_spine, [f"{SIGNAL}@1"], engine="local")
        times["local_dataset_sample"] = time.perf_counter() - began
        spark_ds = pads.dataset(out, format="parquet").to_table(
            filter=pc.field("spine_row").isin(sample_spine["spine_row"])).sort_by("spine_row")
        ds_same, ds_bad = _equal(spark_ds, local_ds)
        ds_cells = spark_ds.num_rows * (spark_ds.num_columns - 4)
        ds_non_null = sum(spark_ds.num_rows - spark_ds.column(c).null_count for c in spark_ds.column_names[4:])
        spark_rows = stored_rows(files, users)
        spark_total_rows = sum(pq.ParquetFile(f.removeprefix("file://")).metadata.num_rows for f in files)
    with quasar.Platform.open(sample) as q:
        q.register("signals.py")
        began = time.perf_counter()
        q.backfill(SIGNAL, START, end)
        times["local_backfill_sample"] = time.perf_counter() - began
        local_rows = stored_rows(q.offline.plan_files(SIGNAL, 1))
    bf_same, bf_bad = _equal(spark_rows, local_rows)
    print(f"  backfill sample: {spark_rows.num_rows:,} rows, equal {bf_same} ({bf_bad} cells differ); dataset "
          f"sample: {spark_ds.num_rows:,} rows, equal {ds_same} ({ds_bad} cells differ)", file=sys.stderr)
    ok = bf_same and ds_same and spark_rows.num_rows == sample_source_rows and spark_ds.num_rows == len(picked) \
        and result.rows == data.rows and out_rows == args.spine_rows
    driver_cap = driver_heap
    text = report(args=args, argv=argv, data=data, source_bytes=source_bytes, made_s=made_s, conf=conf,
                  driver_heap=driver_heap, executors=executors, times=times, stages=stages, result=result,
                  files=files, table_bytes=table_bytes, spark_total_rows=spark_total_rows, out_rows=out_rows,
                  out_bytes=out_bytes, watch=watch, python_before=python_before, python_spark=python_spark,
                  users=users, spark_rows=spark_rows, bf=(bf_same, bf_bad), sample_spine=sample_spine,
                  spark_ds=spark_ds, ds=(ds_same, ds_bad), ds_cells=ds_cells, ds_non_null=ds_non_null,
                  ok=ok, load=(load_before, os.getloadavg()[0]), driver_cap=driver_cap)
    print(text)
    if not args.no_write:
        write_results(SECTION, text)
    return 0 if ok else 1


def report(*, args: argparse.Namespace, argv: Sequence[str] | None, data: Any, source_bytes: int, made_s: float,
           conf: dict[str, str], driver_heap: int, executors: int, times: dict[str, float], stages: dict[str, float],
           result: Any, files: Sequence[str], table_bytes: int, spark_total_rows: int, out_rows: int, out_bytes: int,
           watch: JvmWatch, python_before: int, python_spark: int, users: np.ndarray, spark_rows: pa.Table,
           bf: tuple[bool, int], sample_spine: pa.Table, spark_ds: pa.Table, ds: tuple[bool, int], ds_cells: int,
           ds_non_null: int, ok: bool, load: tuple[float, float], driver_cap: int) -> str:
    command = "python -m bench spark_capped" + (" " + " ".join(argv) if argv else "")
    driver_rss = max(watch.driver.values(), default=0)
    executor_rss = ", ".join(_mib(v) for v in watch.executors.values()) or "-"
    stage_rows = [[name, f"{seconds:.1f}"] for name, seconds in stages.items()]
    rows = [["Spark session start (JVMs, executors registered, a first job)", f"{times['session']:.1f}", ""],
            [f"`Platform.backfill(\"{SIGNAL}\", 30 days)`, Spark engine", f"{times['backfill']:.1f}",
             f"{data.rows:,} source rows -> {result.rows:,} rows, {len(files)} files, {_gib(table_bytes)}: "
             f"**{table_bytes / driver_cap:.1f}x the driver's heap**"],
            [f"`Platform.training_dataset(spine/, [\"{SIGNAL}@1\"], out=train/)`, Spark engine",
             f"{times['dataset']:.1f}", f"{args.spine_rows:,}-row spine folder over that table -> {out_rows:,} rows, "
                                        f"{_gib(out_bytes)}"],
            [f"local engine: backfill of the {len(users):,} sample users' source (second project)",
             f"{times['local_backfill_sample']:.1f}", f"{spark_rows.num_rows:,} rows"],
            [f"local engine: `training_dataset` of {sample_spine.num_rows:,} sample spine rows (Spark's table)",
             f"{times['local_dataset_sample']:.1f}", f"{spark_ds.num_rows:,} rows"]]
    verdict = "Both equal." if ok else "NOT EQUAL (or incomplete): see the figures."
    return "\n".join([
        SECTION, "",
        f"Command: `nice {command}` ({datetime.now(UTC):%Y-%m-%d}; {machine_line()}; pyspark "
        f"{_pyspark_version()}). 1-minute load average {load[0]:.2f} before, {load[1]:.2f} after (2 cores shared "
        "with other sessions' jobs).", "",
        f"Spark: master `{conf['spark.master']}` (Spark's one-machine cluster: {executors} executor JVMs of their own, "
        f"1 core each), `spark.driver.memory = {conf['spark.driver.memory']}` (the driver JVM's max heap read back: "
        f"{_mib(driver_heap)}), `spark.executor.memory = {conf['spark.executor.memory']}`, "
        f"`spark.sql.shuffle.partitions = {args.shuffle_partitions}`"
        f"{''.join(f', `{c}`' for c in args.conf)}, all from the project's "
        "`[spark]` and `[spark.conf]`; `[engine] default = \"spark\"`, `[offline] buckets = "
        f"{args.buckets}`. Peak resident memory (`VmHWM`): driver JVM {_mib(driver_rss)} (its heap and the "
        f"in-process master and workers), executor JVMs {executor_rss}, this Python driver process "
        f"{_mib(python_before)} after making the data and {_mib(python_spark)} after both Spark stages.", "",
        f"Data: {data.rows:,} source rows ({data.entities:,} users, {DAYS} days, {args.features} float32 features), "
        f"one Parquet file a day, {'reused from an earlier run (same seed)' if args.reuse_data else f'made in {made_s:.0f} s'}: "
        f"**{_gib(source_bytes)} of source Parquet, "
        f"{source_bytes / driver_cap:.1f}x the driver's heap**; the signal's table as Spark wrote it: "
        f"{_gib(table_bytes)} ({spark_total_rows:,} rows).", "",
        markdown_table(["stage", "seconds", "what"], rows), "",
        "Spark backfill stages (`spark_backfill.LAST_STAGES`; plan and commit on the driver, the rest on the "
        "executors):", "",
        markdown_table(["stage", "seconds"], stage_rows), "",
        f"Sample check. Backfill: the Spark table's rows of {len(users):,} random users ({spark_rows.num_rows:,} "
        f"rows x {spark_rows.num_columns} columns, `created_timestamp` aside) against the local engine's backfill of "
        f"those users' source rows: equal **{bf[0]}** ({bf[1]} cells differ). Dataset: {spark_ds.num_rows:,} spine "
        f"rows (every spine row of those users and {args.sample_rows:,} random ones) of the Spark output against "
        f"the local engine's `training_dataset` of the same rows over the same table: equal **{ds[0]}** "
        f"({ds[1]} of {ds_cells:,} feature cells differ; {ds_non_null:,} non-null). {verdict}", ""])


def _pyspark_version() -> str:
    try:
        import pyspark
    except ImportError:
        return "-"
    return str(pyspark.__version__)


if __name__ == "__main__":
    raise SystemExit(main())
