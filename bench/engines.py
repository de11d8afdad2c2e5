"""Engines benchmark: quasar's local engine (DuckDB) against the Spark engine (PySpark ``local[*]``) on the
same backfill and the same point-in-time dataset, at several data sizes, in one run.

    python -m bench engines [--sizes small,medium,large] [--no-warmup] [--no-write]

Sizes (source events over 20 days; users and pins scale with them; spine rows): small 100k events, 2k users,
4k pins, 20k spine rows; medium 400k, 8k, 16k, 80k; large 1.6M, 32k, 64k, 320k. Per size, one seeded example
world (``quasar.examples.data``) is written into two project folders, one per engine, so their tables never meet.
Each engine backfills the six example signals over the whole window in dependency order (``user_engagement``,
``user_affinity``, ``pin_stats``, ``user_recent_pins``, ``pin_profile``, ``user_profile``: source read,
compute, output check, data-quality gate, Iceberg write), then builds one training dataset of all six
signals for the same spine (impressions of the last 7 days). Each is timed once, local first.

The Spark session is started once, before everything, and its start-up is reported on its own; a tiny
warm-up world (5k events) then runs through both engines untimed, so Spark's Python workers, JVM code
generation and DuckDB's first queries are warm (its figures are reported in the text). The projects set
``spark.driver.memory`` (default 4g) in ``[spark.conf]``: with Spark's default 1g heap the large size's
aggregation ran the driver out of Java heap. Per-size times therefore exclude start-up and first use.

Checks: the two datasets must be equal (``Table.equals``), and each backfilled table, read back, must be equal
to the other engine's once ``created_timestamp`` is dropped and rows are sorted by join key and time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
from click.testing import CliRunner

import quasar.cli
from bench.common import machine_line, markdown_table, ratio, timed, write_results
from quasar.demo import ALL_FEATURES, EXAMPLE_SIGNALS
from quasar.examples.data import World, generate, make_spine
from quasar.platform import Platform

SECTION = "## Spark off the driver (issue 18)"
ENGINES = ("local", "spark")
DAYS = 20
START = datetime(2026, 1, 1, tzinfo=UTC)
SIZES = {"small": (100_000, 20_000), "medium": (400_000, 80_000), "large": (1_600_000, 320_000)}
WARMUP = (5_000, 1_000)
ORDER = ["user_engagement", "user_affinity", "pin_stats", "user_recent_pins", "pin_profile", "user_profile"]
DRIVER_MEMORY = "4g"             # Spark's default 1g driver heap runs out on the large size's source rows
PROJECT_VARS = ("QUASAR_REGISTRY_URL", "QUASAR_CATALOG_URI", "QUASAR_WAREHOUSE", "QUASAR_PROJECT")


def world_for(events: int) -> World:
    """A world of ``events`` impressions over ``DAYS`` days, one user per 50 events and one pin per 25."""
    return World(users=events // 50, pins=events // 25, days=DAYS, events_per_day=events // DAYS, start=START)


# --- one engine on one project -----------------------------------------------------------------------------------

@dataclass
class EngineRun:
    """What one engine did on one size: seconds per signal's backfill, the dataset, and what they produced."""

    engine: str
    backfill_s: dict[str, float] = field(default_factory=dict)
    rows_written: int = 0
    dataset_s: float = 0.0
    dataset: pa.Table | None = None
    tables: dict[str, pa.Table] = field(default_factory=dict)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)   # Spark: seconds per stage per signal
    loads: dict[str, int] = field(default_factory=dict)                 # catalog table loads per signal
    cpu_s: dict[str, float] = field(default_factory=dict)               # CPU seconds per signal's backfill

    @property
    def backfill_total(self) -> float:
        return sum(self.backfill_s.values())


def tree_cpu_s() -> float:
    """CPU seconds (user and system) used so far by this process and its descendants, live ones included: the
    Spark JVM and its Python workers, which outlive a job (Linux ``/proc``; 0.0 elsewhere). On a shared machine
    wall seconds measure the neighbours too; these measure the work."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    children: dict[int, list[tuple[int, int]]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0.0
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        used = sum(int(f) for f in fields[11:15])         # utime, stime, and the reaped children's
        children.setdefault(int(fields[1]), []).append((int(name), used))
    me = os.getpid()
    total, todo = 0, [me]
    try:
        with open(f"/proc/{me}/stat") as stat:
            total = sum(int(f) for f in stat.read().rsplit(")", 1)[1].split()[11:15])
    except OSError:
        return 0.0
    while todo:
        for pid, used in children.get(todo.pop(), []):
            total += used
            todo.append(pid)
    return total / tick


def make_project(root: Path, world: World, driver_memory: str, data_from: Path | None = None) -> None:
    """``quasar init`` with the Spark driver's heap in ``[spark.conf]``, the example signals, and the world's
    Parquet data (copied when already written)."""
    result = CliRunner().invoke(quasar.cli.main, ["init", str(root), "--name", "bench", "--minimal"])
    if result.exit_code != 0:
        raise RuntimeError(f"quasar init failed: {result.output}")
    with (root / "quasar.toml").open("a") as toml:
        toml.write(f'\n[spark.conf]\n"spark.driver.memory" = "{driver_memory}"\n')
    shutil.copytree(EXAMPLE_SIGNALS, root / "signals", ignore=shutil.ignore_patterns("__pycache__"))
    if data_from is None:
        generate(root, world)
    else:
        shutil.copytree(data_from / "data", root / "data")


def run_engine(root: Path, engine: str, world: World, spine: pa.Table) -> EngineRun:
    """Register, backfill every signal in order, build the dataset, read the tables back sorted."""
    run = EngineRun(engine)
    with Platform.open(root) as p:
        p.register("signals")
        catalog = p.offline.catalog
        load_table = catalog.load_table
        loads = [0]

        def counted(*args: Any, **kwargs: Any) -> Any:
            loads[0] += 1
            return load_table(*args, **kwargs)

        catalog.load_table = counted
        for name in ORDER:
            loads[0] = 0
            cpu = tree_cpu_s()
            t = timed(partial(p.backfill, name, world.start, world.end, engine=engine, with_upstream=False))
            run.cpu_s[name] = tree_cpu_s() - cpu
            run.backfill_s[name] = t.best
            run.loads[name] = loads[0]
            if engine == "spark":
                from quasar.store.engines.spark_backfill import LAST_STAGES
                run.stages[name] = dict(LAST_STAGES)
            run.rows_written += sum(r.rows for r in t.result)
        t = timed(lambda: p.training_dataset(spine, ALL_FEATURES, engine=engine, full_names=True))
        run.dataset_s, run.dataset = t.best, t.result
        for name in ORDER:
            sv = p.registry.signal(name)
            table = p.offline.read(sv.signal, sv.version).drop_columns(["created_timestamp"])
            run.tables[name] = table.sort_by([(sv.signal.entity.join_key, "ascending"),
                                              ("event_timestamp", "ascending")])
    return run


@dataclass
class SizeRun:
    size: str
    events: int
    spine_rows: int
    runs: dict[str, EngineRun]
    differences: list[str]

    @property
    def identical(self) -> bool:
        return not self.differences


def run_size(size: str, events: int, spine_rows: int, folder: Path, driver_memory: str) -> SizeRun:
    """Both engines on one world, each in its own project; the outputs compared."""
    world = world_for(events)
    start = time.perf_counter()
    make_project(folder / "local", world, driver_memory)
    make_project(folder / "spark", world, driver_memory, data_from=folder / "local")
    spine = make_spine(folder / "local", world.end - timedelta(days=7), world.end, rows=spine_rows)
    print(f"  {size}: {world.events_per_day * world.days:,} events, {world.users:,} users, {world.pins:,} pins, "
          f"{spine.num_rows:,} spine rows, written in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    runs = {}
    for engine in ENGINES:
        runs[engine] = run_engine(folder / engine, engine, world, spine)
        r = runs[engine]
        print(f"    {engine}: backfill {r.backfill_total:.1f} s (" +
              ", ".join(f"{n} {s:.1f}" for n, s in r.backfill_s.items()) + f"), dataset {r.dataset_s:.1f} s",
              file=sys.stderr)
    local, spark = runs["local"], runs["spark"]
    differences = [f"table {n}" for n in ORDER if not local.tables[n].equals(spark.tables[n])]
    if local.dataset is None or spark.dataset is None or not local.dataset.equals(spark.dataset):
        differences.append("dataset")
    for run in runs.values():                   # keep only the figures
        run.tables.clear()
        run.dataset = None
    return SizeRun(size, world.events_per_day * world.days, spine.num_rows, runs, differences)


# --- the run -----------------------------------------------------------------------------------------------------

def start_spark(root: Path) -> tuple[Any, float]:
    """The shared Spark session with the project's ``[spark]`` settings, and the seconds it took to start."""
    from quasar.store.engines.spark_session import build_session
    with Platform.open(root) as p:
        master, conf = p.config.spark.master, dict(p.config.spark.conf)
    start = time.perf_counter()
    session, _ = build_session(master, conf)
    session.range(1).count()                    # the JVM and the first job, not just the builder
    return session, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench engines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="small,medium,large", help="comma-separated sizes (default all three)")
    parser.add_argument("--driver-memory", default=DRIVER_MEMORY,
                        help=f"spark.driver.memory in the projects' [spark.conf] (default {DRIVER_MEMORY})")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up world")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update bench/RESULTS.md")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; known: {', '.join(SIZES)}")
    command = "python -m bench engines" + (" " + " ".join(argv) if argv else "")
    for var in PROJECT_VARS:                    # each bench project uses its own registry and catalog
        os.environ.pop(var, None)
    load_before = os.getloadavg()[0]
    results: list[SizeRun] = []
    with tempfile.TemporaryDirectory(prefix="quasar-bench-engines-") as tmp:
        folder = Path(tmp)
        make_project(folder / "settings", world_for(WARMUP[0]), args.driver_memory)
        session, startup_s = start_spark(folder / "settings")
        heap = session.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory() / 2**30
        print(f"  Spark session started in {startup_s:.1f} s (driver heap {heap:.1f} GiB)", file=sys.stderr)
        warm: SizeRun | None = None
        try:
            if not args.no_warmup:
                (folder / "warmup").mkdir()
                warm = run_size("warm-up", *WARMUP, folder / "warmup", args.driver_memory)
                if not warm.identical:
                    print(f"  warm-up: engines differ: {', '.join(warm.differences)}", file=sys.stderr)
            for size in sizes:
                (folder / size).mkdir()
                results.append(run_size(size, *SIZES[size], folder / size, args.driver_memory))
                shutil.rmtree(folder / size, ignore_errors=True)
        finally:
            session.stop()
    load_after = os.getloadavg()[0]
    block = report(results, command, startup_s, warm, args.driver_memory, load_before, load_after)
    print(block)
    if not args.no_write:
        write_results(SECTION, block)
        print(f"wrote the '{SECTION[3:]}' section of bench/RESULTS.md", file=sys.stderr)
    return 0 if all(r.identical for r in results) else 1


# --- reporting ---------------------------------------------------------------------------------------------------

def report(results: Sequence[SizeRun], command: str, startup_s: float, warm: SizeRun | None, driver_memory: str,
           load_before: float, load_after: float) -> str:
    """The RESULTS.md section: what is measured, the command, the table and the per-signal breakdown."""
    base = {e: (results[0].runs[e].backfill_total, results[0].runs[e].dataset_s) for e in ENGINES} if results else {}
    rows = []
    for r in results:
        for engine in ENGINES:
            run, local = r.runs[engine], r.runs["local"]
            rows.append([
                r.size, f"{r.events:,} events / {r.spine_rows:,} spine", engine,
                f"{run.backfill_total:.1f}", f"{r.events / run.backfill_total:,.0f}",
                f"{run.dataset_s:.2f}", f"{r.spine_rows / run.dataset_s:,.0f}",
                ratio(run.backfill_total, local.backfill_total, 1), ratio(run.dataset_s, local.dataset_s, 1),
                f"{ratio(run.backfill_total, base[engine][0], 1)} / {ratio(run.dataset_s, base[engine][1], 1)}",
                "yes" if r.identical else "NO: " + ", ".join(r.differences),
            ])
    table = markdown_table(["size", "rows", "engine", "backfill s", "events/s", "dataset s", "spine rows/s",
                            "backfill vs local", "dataset vs local", f"vs {results[0].size if results else '-'} "
                            "(backfill / dataset)", "identical"], rows)
    per_signal = markdown_table(
        ["size", "engine", *ORDER, "sum"],
        [[r.size, e, *(f"{r.runs[e].backfill_s[n]:.1f} ({r.runs[e].cpu_s.get(n, 0.0):.1f})" for n in ORDER),
          f"{r.runs[e].backfill_total:.1f} ({sum(r.runs[e].cpu_s.values()):.1f})"]
         for r in results for e in ENGINES])
    stage_names = ["plan", "read+compute+check", "validate", "write files", "commit"]
    stages = markdown_table(
        ["size", "signal", *stage_names, "stages sum", "backfill s", "table loads (local / spark)"],
        [[r.size, n, *(f"{r.runs['spark'].stages.get(n, {}).get(k, 0.0):.2f}" for k in stage_names),
          f"{sum(r.runs['spark'].stages.get(n, {}).values()):.2f}", f"{r.runs['spark'].backfill_s[n]:.2f}",
          f"{r.runs['local'].loads.get(n, 0)} / {r.runs['spark'].loads.get(n, 0)}"]
         for r in results for n in ORDER])
    written = ", ".join(f"{r.size} {r.runs['local'].rows_written:,}" for r in results)
    return "\n".join([
        SECTION, "",
        "The same backfill and the same point-in-time dataset on quasar's two engines: local (DuckDB, in "
        "process) and Spark (PySpark `local[*]`, the default `[spark]` settings plus "
        f"`spark.driver.memory = {driver_memory}` in `[spark.conf]`). Per size, one seeded example world "
        "(`quasar.examples.data`, 20 days, one user per 50 events and one pin per 25) is written into two project "
        "folders, one per engine. Each engine backfills the six example signals over the whole window in "
        "dependency order (source read, compute, output check, data-quality gate, Iceberg write; the sum is "
        "shown), then builds one training dataset of all six signals (`training_dataset`, full names) for "
        "the same spine of impressions from the last 7 days. One timed run each, local first.",
        "",
        f"Command: `{command}` ({datetime.now(UTC):%Y-%m-%d}; {machine_line()}; pyspark "
        f"{_pyspark_version()}, Spark master `local[*]` = 2 cores). Spark session start-up (JVM and a first "
        f"job): {startup_s:.1f} s, once, excluded from every row; then {_warm_text(warm)} 1-minute load "
        f"average {load_before:.2f} before the run and {load_after:.2f} after it, this "
        "benchmark included.",
        "",
        table, "",
        "\"identical\": both training datasets equal (`Table.equals`) and all six backfilled tables equal "
        f"once read back, `created_timestamp` dropped, sorted by join key and time. Rows written by each "
        f"backfill: {written}.",
        "",
        "Backfill seconds per signal, wall (CPU: this process and its descendants, the Spark JVM and its Python "
        "workers, from `/proc`; on a shared machine the wall seconds include waiting for the neighbours):", "",
        per_signal, "",
        "Spark backfill stages per signal (seconds, `quasar.store.engines.spark_backfill.LAST_STAGES`): plan = "
        "source planning on the driver; read+compute+check = the executors reading the planned files, the "
        "transform (applyInArrow groups) or aggregation SQL and the output check, until the per-day counts come "
        "back; validate = GX on the Spark DataFrame; write files = executors writing Parquet with field ids; "
        "commit = footers read and one pyiceberg commit. The rest of \"backfill s\" is the platform around it "
        "(registry, run log, table lookups). Table loads: catalog `load_table` calls during the backfill.", "",
        stages, "",
    ])


def _warm_text(warm: SizeRun | None) -> str:
    if warm is None:
        return "no warm-up (--no-warmup): the first size's rows include first use."
    local, spark = warm.runs["local"], warm.runs["spark"]
    return (f"an untimed warm-up world of {warm.events:,} events through both engines (backfill: local "
            f"{local.backfill_total:.1f} s, Spark {spark.backfill_total:.1f} s; dataset: local "
            f"{local.dataset_s:.1f} s, Spark {spark.dataset_s:.1f} s; identical: "
            f"{'yes' if warm.identical else 'NO'}), so the rows exclude first use too.")


def _pyspark_version() -> str:
    try:
        import pyspark
        return str(pyspark.__version__)
    except ImportError:
        return "not installed"


if __name__ == "__main__":
    raise SystemExit(main())
