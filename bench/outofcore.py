"""Out of core (issue 18): a training dataset over more data than the process may hold, on the local engine.

    python -m bench outofcore [--data-gb 5.6] [--cap-gb 1.5] [--duckdb-limit 256MB] [--threads 1]
                              [--spine-rows 100000] [--chunk-rows 100000] [--sample 10000] [--feast-timeout 300]
                              [--no-feast] [--no-write]

The data is made in code the way the product stores it: one signal of ``--features`` float32 features registered
in a project, its Iceberg table written a day at a time through the offline store (``OfflineStore.replace_window``,
the call a backfill ends with: the one writer's day x bucket layout), ``--data-gb`` of rows in Arrow (the
Parquet files on disk come out about 0.85x that: random floats hardly compress; both at least 3x the cap). Then, in a child process capped by the OS (``resource.setrlimit(RLIMIT_AS)``:
the process's whole address space, set before Python starts; the cgroup here is read-only) and with
``[engine] memory_limit`` set for DuckDB below it (DuckDB spills past it to ``[engine] temp_directory``), the
project builds the dataset with ``Platform.training_dataset(spine, ..., out=FOLDER)``, streamed to Parquet.

Checked: a random sample of spine rows is built again by an uncapped project over the same registry and
catalog (the in-memory ``training_dataset``) and by raw DuckDB (one ``ASOF JOIN``, no cap); the streamed rows must
equal both, cell for cell. Then Feast 0.67 ``get_historical_features`` (``offline_store: type: file``, over the
same Parquet files) runs under the same OS cap and its outcome is recorded: time, or how it failed. Both
children run with ``MALLOC_ARENA_MAX=2`` and ``ARROW_DEFAULT_MEMORY_POOL=system``: glibc reserves 64 MiB of
address space per thread arena, and mimalloc (Arrow's default pool) 1 GiB at its first allocation, all of which
RLIMIT_AS counts although little of it is ever touched.

Why one DuckDB thread: DuckDB reads a whole row group at a time (the writer's are one per file, 85-100 MB),
per thread, and its allocator keeps address space it has used; with two threads the address space peaked at
2.7 GiB while resident memory stayed under 0.7 GiB. Each spine chunk joins against the whole table (its sort spills), so a
chunk costs about one pass over the data: the spine is one chunk here; the tests cover several.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal as signals_os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import EPOCH, TS_TYPE, machine_line, markdown_table, write_results

SECTION = "## Out of core (issue 18)"
SIGNAL = "user_wide"
DAYS = 30
TTL = timedelta(days=2)
ROWS_PER_KEY = 20
START = datetime(2026, 1, 1, tzinfo=UTC)
SEED = 18
ROOT = Path(__file__).resolve().parent.parent

MODULE = """
import pyarrow as pa
from quasar.signals import Entity, Float32, Source, signal

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="wide_events", path="data/events", timestamp="event_timestamp")

@signal(entity=user, source=events, ttl="2d", features={{f"f{{i}}": Float32() for i in range({features})}})
def user_wide(batch: pa.Table) -> pa.Table:
    \"\"\"{features} float32 features of a user (the bench writes its table directly).\"\"\"
    return batch
"""

TOML = """[registry]
url = "sqlite:///{state}/registry.db"

[offline]
catalog_uri = "sqlite:///{state}/catalog.db"
warehouse = "{state}/warehouse"

[engine]
{limits}"""


# --- the data ----------------------------------------------------------------------------------------------------

def make_projects(folder: Path, features: int, duckdb_limit: str, threads: int) -> tuple[Path, Path]:
    """Two projects over one registry and catalog: ``capped`` (DuckDB memory limit, spill folder, ``threads``)
    and ``free`` (DuckDB's defaults, a thread per core)."""
    state = folder / "state"
    state.mkdir(parents=True, exist_ok=True)
    roots = []
    for name, limits in (("capped", f'threads = {threads}\nmemory_limit = "{duckdb_limit}"\n'
                                    f'temp_directory = "{folder / "spill"}"\n'), ("free", "")):
        root = folder / name
        root.mkdir(exist_ok=True)
        (root / "quasar.toml").write_text(TOML.format(state=state, limits=limits))
        (root / "signals.py").write_text(MODULE.format(features=features))
        roots.append(root)
    return roots[0], roots[1]


@dataclass
class Data:
    rows: int
    entities: int
    arrow_bytes: int
    parquet_bytes: int
    files: list[str]
    seconds: float


def write_table(root: Path, *, target_bytes: int, features: int, seed: int) -> Data:
    """The signal's Iceberg table, a day at a time through the offline store, sized to ``target_bytes`` of Parquet."""
    import quasar

    rng = np.random.default_rng(seed)
    row_bytes = 4 * features + 8 * 3                    # float32 features; key, event and created times
    rows_per_day = max(1, int(target_bytes * 1.03 / row_bytes / DAYS))
    entities = max(1, rows_per_day * DAYS // ROWS_PER_KEY)
    day_us = 86_400 * 10**6
    base = (START - EPOCH) // timedelta(microseconds=1)
    names = [f"f{i}" for i in range(features)]
    rows = arrow_bytes = 0
    start = time.perf_counter()
    with quasar.Platform.open(root) as p:
        p.register("signals.py")
        sv = p.registry.signal(SIGNAL)
        for day in range(DAYS):
            keys = rng.integers(0, entities, rows_per_day, dtype=np.int64)
            times = base + day * day_us + rng.integers(0, day_us, rows_per_day, dtype=np.int64)
            _, first = np.unique(keys * day_us + (times - base - day * day_us), return_index=True)
            keys, times = keys[np.sort(first)], times[np.sort(first)]    # no two rows of a key at one time
            order = np.argsort(times, kind="stable")
            keys, times = keys[order], times[order]
            m = len(keys)
            cols: dict[str, Any] = {
                "user_id": pa.array(keys), "event_timestamp": pa.array(times, TS_TYPE),
                "created_timestamp": pa.array(times + rng.integers(0, 3_600 * 10**6, m, dtype=np.int64), TS_TYPE)}
            for name in names:
                cols[name] = pa.array(rng.random(m, dtype=np.float32), pa.float32(), mask=rng.random(m) < 0.01)
            table = pa.table(cols)
            arrow_bytes += table.nbytes
            rows += m
            day_start = START + timedelta(days=day)
            p.offline.replace_window(sv.signal, sv.version, table, day_start, day_start + timedelta(days=1))
            del table, cols
            print(f"  day {day + 1}/{DAYS}: {rows:,} rows", file=sys.stderr, end="\r")
        files = p.offline.plan_files(SIGNAL, sv.version)
    print(file=sys.stderr)
    size = sum(os.path.getsize(f.removeprefix("file://")) for f in files)
    return Data(rows, entities, arrow_bytes, size, [f.removeprefix("file://") for f in files],
                time.perf_counter() - start)


def make_spine(n: int, entities: int, seed: int) -> pa.Table:
    """``spine_row``, ``user_id`` (2% unknown), ``event_timestamp`` over the days plus one, ``label``."""
    rng = np.random.default_rng(seed)
    keys = np.where(rng.random(n) < 0.02, entities + rng.integers(0, entities, n), rng.integers(0, entities, n))
    start_us = (START - EPOCH) // timedelta(microseconds=1)
    times = start_us + rng.integers(0, (DAYS + 1) * 86_400 * 10**6, n, dtype=np.int64)
    return pa.table({"spine_row": pa.array(np.arange(n, dtype=np.int64)), "user_id": pa.array(keys.astype(np.int64)),
                     "event_timestamp": pa.array(times, TS_TYPE),
                     "label": pa.array(rng.integers(0, 2, n, dtype=np.int64))})


# --- the capped children -----------------------------------------------------------------------------------------

def quasar_child(folder: Path, chunk_rows: int) -> None:
    """In the capped process: the streamed dataset, timed; what DuckDB was set to."""
    import quasar

    spine = pq.read_table(folder / "spine.parquet")
    with quasar.Platform.open(folder / "capped") as p:
        (limit, temp), = p.engine("local").connection.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchall()
        start = time.perf_counter()
        path = p.training_dataset(spine, [f"{SIGNAL}@1"], out=folder / "out", chunk_rows=chunk_rows)
        seconds = time.perf_counter() - start
    (folder / "quasar.json").write_text(json.dumps({"seconds": seconds, "path": str(path), "duckdb_limit": limit,
                                                    "temp_directory": temp, "vm_peak": _vm_peak()}))


def _vm_peak() -> int:
    """This process's peak address space in bytes (what RLIMIT_AS caps)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) * 1024
    return 0


FEAST_YAML = """project: quasar_outofcore
registry: {repo}/registry.db
provider: local
offline_store:
    type: file
online_store:
    type: sqlite
    path: {repo}/online.db
entity_key_serialization_version: 3
"""


def feast_child(folder: Path, features: int) -> None:
    """In the capped process: Feast 0.67 over the same Parquet files (hard links in one folder), timed."""
    import pandas as pd
    from feast import Entity as FeastEntity
    from feast import FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32 as FeastFloat32

    repo = folder / "feast_repo"
    repo.mkdir(exist_ok=True)
    (repo / "feature_store.yaml").write_text(FEAST_YAML.format(repo=repo))
    entity = FeastEntity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    source = FileSource(name="user_wide_source", path=str(folder / "feast_data"), timestamp_field="event_timestamp",
                        created_timestamp_column="created_timestamp")
    view = FeatureView(name=SIGNAL, entities=[entity], ttl=TTL, source=source, online=False,
                       schema=[Field(name=f"f{i}", dtype=FeastFloat32) for i in range(features)])
    store = FeatureStore(repo_path=str(repo))
    store.apply([entity, view])
    entity_df = pd.read_parquet(folder / "spine.parquet")
    start = time.perf_counter()
    frame = store.get_historical_features(entity_df=entity_df,
                                          features=[f"{SIGNAL}:f{i}" for i in range(features)]).to_df()
    seconds = time.perf_counter() - start
    (folder / "feast.json").write_text(json.dumps({"seconds": seconds, "rows": len(frame), "vm_peak": _vm_peak()}))


@dataclass
class Child:
    returncode: int | None
    seconds: float                  # wall time of the whole process
    max_rss: int                    # bytes, from wait4's rusage
    peak_spill: int                 # bytes in the spill folder at the most
    note: str


def run_capped(args: list[str], cap: int, budget: float, spill: Path | None = None) -> Child:
    """``python -m bench.outofcore ARGS`` with RLIMIT_AS = ``cap`` from before Python starts, killed after ``budget``."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "ARROW_DEFAULT_MEMORY_POOL": "system"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "bench.outofcore", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=limit,
                            start_new_session=True)
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.25):
            if spill is not None and spill.exists():
                size = 0
                for dirpath, _, names in os.walk(spill):
                    for name in names:
                        with contextlib.suppress(OSError):
                            size += os.path.getsize(os.path.join(dirpath, name))
                peak[0] = max(peak[0], size)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    timer = threading.Timer(budget, lambda: os.killpg(proc.pid, signals_os.SIGKILL))
    timer.start()
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    timer.cancel()
    done.set()
    watcher.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    code = proc.returncode
    lines = [line for line in output.strip().splitlines() if line.strip()]
    if code == 0:
        note = "completed"
    elif code < 0 and seconds >= budget:
        note = f"killed after the {budget:.0f} s budget"
    elif code < 0:
        note = f"killed by signal {signals_os.Signals(-code).name}"
    else:
        errors = [line for line in lines if "Error" in line or "error" in line]
        note = "failed: " + (errors[-1] if errors else (lines[-1] if lines else f"exit {code}"))[:300]
    return Child(code, seconds, usage.ru_maxrss * 1024, peak[0], note)


# --- the check ---------------------------------------------------------------------------------------------------

def check_sample(folder: Path, spine: pa.Table, sample: int, features: int, files: Sequence[str]) -> dict[str, int]:
    """The streamed rows of a random sample of the spine against the uncapped in-memory dataset and raw DuckDB."""
    import duckdb
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    import quasar

    rng = np.random.default_rng(SEED + 1)
    rows = np.sort(rng.choice(spine.num_rows, size=min(sample, spine.num_rows), replace=False))
    subset = spine.take(pa.array(rows))
    written = pads.dataset(folder / "out", format="parquet")
    streamed = written.to_table(filter=pc.field("spine_row").isin(pa.array(rows))).sort_by("spine_row")
    with quasar.Platform.open(folder / "free") as p:
        (limit,), = p.engine("local").connection.execute("SELECT current_setting('memory_limit')").fetchall()
        memory = p.training_dataset(subset, [f"{SIGNAL}@1"])
    names = [f"f{i}" for i in range(features)]
    ttl_us = TTL // timedelta(microseconds=1)
    fresh = f"epoch_us(s.event_timestamp) - epoch_us(f.event_timestamp) <= {ttl_us}"
    cols = ", ".join(f"CASE WHEN {fresh} THEN f.{c} END AS {c}" for c in names)
    listing = "[" + ", ".join(f"'{f}'" for f in files) + "]"
    con = duckdb.connect()
    con.register("sample_spine", subset.select(["spine_row", "user_id", "event_timestamp"]))
    raw = con.sql(f"SELECT s.spine_row, {cols} FROM sample_spine s ASOF LEFT JOIN read_parquet({listing}) f "
                  "ON s.user_id = f.user_id AND s.event_timestamp >= f.event_timestamp "
                  "ORDER BY s.spine_row").to_arrow_table()
    con.close()
    mismatch_memory = 0 if streamed.equals(memory.select(streamed.column_names)) else _cells(streamed, memory, names)
    return {"rows": len(rows), "streamed_rows": streamed.num_rows, "vs_in_memory": mismatch_memory,
            "vs_raw_duckdb": _cells(streamed, raw, names), "non_null": int(sum(
                streamed.num_rows - streamed.column(n).null_count for n in names)), "uncapped_limit": limit}


def _cells(a: pa.Table, b: pa.Table, names: Sequence[str]) -> int:
    if a.num_rows != b.num_rows or a.column("spine_row") != b.column("spine_row"):
        return max(a.num_rows, b.num_rows) * len(names)
    bad = 0
    for n in names:
        x = a.column(n).cast(pa.float64()).to_numpy(zero_copy_only=False)
        y = b.column(n).cast(pa.float64()).to_numpy(zero_copy_only=False)
        bad += int((~((np.isnan(x) & np.isnan(y)) | (x == y))).sum())
    return bad


# --- the run -----------------------------------------------------------------------------------------------------

def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench outofcore", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-gb", type=float, default=5.6, help="GiB of the signal's rows in Arrow (default 5.6)")
    parser.add_argument("--cap-gb", type=float, default=1.5, help="RLIMIT_AS of the children in GiB (default 1.5)")
    parser.add_argument("--duckdb-limit", default="256MB", help="[engine] memory_limit of the capped project")
    parser.add_argument("--threads", type=int, default=1, help="[engine] threads of the capped project (default 1)")
    parser.add_argument("--features", type=int, default=64, help="float32 features of the signal (default 64)")
    parser.add_argument("--spine-rows", type=int, default=100_000, help="spine rows (default 100,000)")
    parser.add_argument("--chunk-rows", type=int, default=100_000, help="spine rows joined at a time")
    parser.add_argument("--sample", type=int, default=10_000, help="spine rows checked against uncapped runs")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds the capped quasar child may take")
    parser.add_argument("--feast-timeout", type=float, default=300.0, help="seconds Feast may take (default 300)")
    parser.add_argument("--no-feast", action="store_true", help="skip Feast")
    parser.add_argument("--no-write", action="store_true", help="print the results, leave RESULTS.md alone")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp folder, removed)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, folder = args.child[0], Path(args.child[1])
        quasar_child(folder, args.chunk_rows) if kind == "quasar" else feast_child(folder, args.features)
        return 0
    cap = int(args.cap_gb * 2**30)
    folder = args.dir or Path(tempfile.mkdtemp(prefix="quasar-outofcore-"))
    free_disk = shutil.disk_usage(folder).free
    if free_disk < 3 * args.data_gb * 2**30:
        print(f"need about {3 * args.data_gb:.1f} GiB free in {folder}, have {_gib(free_disk)}", file=sys.stderr)
        return 1
    try:
        capped, _free = make_projects(folder, args.features, args.duckdb_limit, args.threads)
        print(f"writing {args.data_gb} GiB of Parquet through the offline store ...", file=sys.stderr)
        data = write_table(capped, target_bytes=int(args.data_gb * 2**30), features=args.features, seed=SEED)
        print(f"  {data.rows:,} rows, {_gib(data.parquet_bytes)} Parquet ({_gib(data.arrow_bytes)} in Arrow), "
              f"{len(data.files)} files, {data.seconds:.0f} s", file=sys.stderr)
        spine = make_spine(args.spine_rows, data.entities, SEED + 2)
        pq.write_table(spine, folder / "spine.parquet")
        print(f"quasar under RLIMIT_AS {_gib(cap)}, DuckDB memory_limit {args.duckdb_limit} ...", file=sys.stderr)
        ours = run_capped(["--child", "quasar", str(folder), "--chunk-rows", str(args.chunk_rows)], cap,
                          args.budget, spill=folder / "spill")
        print(f"  {ours.note}: {ours.seconds:.1f} s, max RSS {_gib(ours.max_rss)}, peak spill "
              f"{_gib(ours.peak_spill)}", file=sys.stderr)
        inside = json.loads((folder / "quasar.json").read_text()) if ours.returncode == 0 else {}
        check: dict[str, Any] = {}
        out_bytes = out_files = 0
        if ours.returncode == 0:
            parts = sorted((folder / "out").glob("*.parquet"))
            out_files, out_bytes = len(parts), sum(f.stat().st_size for f in parts)
            check = check_sample(folder, spine, args.sample, args.features, data.files)
            print(f"  sample check: {check}", file=sys.stderr)
        feast = Child(None, 0.0, 0, 0, "not run (--no-feast)")
        if not args.no_feast:
            for f in data.files:                                   # the same files, flat, for Feast's FileSource
                target = folder / "feast_data" / (Path(f).parent.name + "-" + Path(f).name)
                target.parent.mkdir(exist_ok=True)
                os.link(f, target)
            print(f"Feast 0.67 under RLIMIT_AS {_gib(cap)} (budget {args.feast_timeout:.0f} s) ...", file=sys.stderr)
            feast = run_capped(["--child", "feast", str(folder), "--features", str(args.features)], cap,
                               args.feast_timeout)
            if feast.returncode == 0:
                done = json.loads((folder / "feast.json").read_text())
                feast.note = f"completed: {done['rows']:,} rows, get_historical_features {done['seconds']:.1f} s"
            print(f"  {feast.note}: {feast.seconds:.1f} s, max RSS {_gib(feast.max_rss)}", file=sys.stderr)
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    ok = ours.returncode == 0 and check.get("vs_in_memory") == 0 and check.get("vs_raw_duckdb") == 0 \
        and check.get("streamed_rows") == check.get("rows")
    text = report(args, cap, data, spine, ours, inside, check, out_files, out_bytes, feast, ok)
    print(text)
    if not args.no_write:
        write_results(SECTION, text)
    return 0 if ok else 1


def report(args: argparse.Namespace, cap: int, data: Data, spine: pa.Table, ours: Child, inside: dict[str, Any],
           check: dict[str, Any], out_files: int, out_bytes: int, feast: Child, ok: bool) -> str:
    ours_time = f"{inside['seconds']:.1f} (process {ours.seconds:.1f})" if inside else f"{ours.seconds:.1f}"
    rows = [["quasar `training_dataset(..., out=)`, local engine", ours.note, ours_time, _gib(ours.max_rss),
             _gib(ours.peak_spill), f"{out_files} files, {_gib(out_bytes)}" if out_files else "-"],
            ["Feast 0.67 `get_historical_features` (file offline store)", feast.note,
             f"{feast.seconds:.1f}" if feast.returncode is not None else "-",
             _gib(feast.max_rss) if feast.returncode is not None else "-", "-", "-"]]
    table = markdown_table(["path", "outcome", "seconds", "max RSS", "peak spill", "output"], rows)
    command = (f"python -m bench outofcore --data-gb {args.data_gb} --cap-gb {args.cap_gb} --duckdb-limit "
               f"{args.duckdb_limit} --threads {args.threads} --features {args.features} --spine-rows {args.spine_rows} --chunk-rows "
               f"{args.chunk_rows}" + (" --no-feast" if args.no_feast else f" --feast-timeout {args.feast_timeout:.0f}"))
    ratio = data.parquet_bytes / cap
    sample = (f"{check['rows']:,} random spine rows of the streamed output against the uncapped in-memory "
              f"`training_dataset` (DuckDB limit {check['uncapped_limit']}) and raw DuckDB `ASOF JOIN`: "
              f"{check['vs_in_memory']} and {check['vs_raw_duckdb']} mismatching cells, {check['non_null']:,} "
              f"non-null cells compared" if check else "not run (the capped build failed)")
    return "\n".join([
        SECTION, "",
        f"Command: `{command}` ({datetime.now(UTC):%Y-%m-%d}; {machine_line()}).", "",
        f"Data: one signal of {args.features} float32 features, {data.rows:,} rows ({data.entities:,} users, "
        f"{DAYS} days), written through the offline store a day at a time in {data.seconds:.0f} s: "
        f"**{_gib(data.parquet_bytes)} of Parquet** in {len(data.files)} files ({_gib(data.arrow_bytes)} in Arrow), "
        f"**{ratio:.1f}x the cap**. Spine: {spine.num_rows:,} rows, joined {args.chunk_rows:,} at a time.", "",
        f"Cap: `resource.setrlimit(RLIMIT_AS, {_gib(cap)})` on each child process, set before Python starts "
        f"(the address space, so stricter than resident memory; the cgroup here is read-only), plus for quasar "
        f"`[engine] threads = {args.threads}`, `memory_limit = \"{args.duckdb_limit}\"` (DuckDB read back "
        f"{inside.get('duckdb_limit', '-')}) and `temp_directory` for its spill; `MALLOC_ARENA_MAX=2` and "
        "`ARROW_DEFAULT_MEMORY_POOL=system` for both (mimalloc reserves 1 GiB of address space up front). "
        f"quasar's peak address space: {_gib(inside.get('vm_peak', 0))}. "
        "Max RSS is the child's peak resident memory (wait4); peak spill the most the spill folder held.", "",
        table, "",
        f"Check: {sample}. {'Equal.' if ok else 'NOT EQUAL or not run.'}", ""])


if __name__ == "__main__":
    raise SystemExit(main())
