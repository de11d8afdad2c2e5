"""Bounded kill trials of the offline write path, for the fault figures (issue 14): SIGKILL ``quasar backfill`` at
random points, then check old-or-new table, an abandoned run, the next run's clean-up and no lost row.

    .venv/bin/python scripts/kill_trials.py --trials 12 --seed 1

Each trial picks a random window of the fault project (tests/fixtures/fault_project.py: 10 days, 4 buckets,
lease 2 s, orphan grace 1 s) and a random point: mid-compute, at the N-th data file, after the new metadata file,
or after the catalog commit. It kills the child there, checks the table reads exactly as before the run (or,
killed after the commit, exactly as after it), waits for the run to read abandoned, re-runs the backfill and checks
that no file is left unreferenced and the table equals the source events of every window backfilled. It prints
one line per trial and a summary.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests"))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import quasar.platform  # noqa: E402, F401  (the facade before the test fixtures)
from fixtures.fault_project import FaultProject, kill, make_fault_project, wait_for  # noqa: E402
from quasar.store.gc import referenced_files  # noqa: E402


def truth(project: FaultProject, days: set[int]) -> pa.Table:
    """The rows the table must hold: every source event on a backfilled day, as the signal writes it."""
    events = pq.read_table(project.root / "data" / "events")
    day = pc.cast(pc.divide(pc.cast(events["ts"], pa.int64()), 86_400_000_000), pa.int64())
    first = 20454                                              # 2026-01-01 in days since the epoch
    kept = events.filter(pc.is_in(pc.subtract(day, first), pa.array(sorted(days), pa.int64())))
    rows = pa.table({"user_id": kept["user_id"], "event_timestamp": kept["ts"], "created_timestamp": kept["ts"],
                     "clicked": kept["clicked"], "item": kept["item_id"]})
    return rows.sort_by([(c, "ascending") for c in rows.column_names])


def same(table: pa.Table, rows: pa.Table) -> bool:
    table = table.select(rows.column_names)
    return table.num_rows == rows.num_rows and all(
        table.column(c).cast(rows.schema.field(c).type).equals(rows.column(c)) for c in rows.column_names)


def orphans(project: FaultProject) -> set[str]:
    with project.platform() as p:
        table = p.offline.table("clicks", 1)
        refs = {r.removeprefix(f"{table.location()}/") for r in referenced_files(table)}
    return project.files() - refs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        project = make_fault_project(work / "project")
        with project.platform() as p:
            p.backfill("clicks", "2026-01-01", "2026-01-04")
        days = {0, 1, 2}
        figures = {"kills": 0, "not_killed": 0, "old": 0, "new": 0, "orphans_left": 0, "orphans_after": 0,
                   "abandoned": 0, "lost_rows": 0, "wrong_tables": 0}
        began = time.monotonic()
        for trial in range(args.trials):
            lo = rng.randrange(0, 9)
            hi = rng.randrange(lo + 1, 11)
            start, end = f"2026-01-{lo + 1:02d}", f"2026-01-{hi + 1:02d}"
            point = rng.choice(["compute", "data", "metadata", "committed"])
            if point == "data":
                point = f"data:{rng.randrange(1, 4 * (hi - lo) + 1)}"
            before = project.rows()
            marker = work / f"marker-{trial}"
            if point == "compute":
                gate = work / f"gate-{trial}"
                child = project.backfill(start, end, QUASAR_TEST_GATE=str(gate))
                wait_for(lambda g=gate: any(work.glob(f"{g.name}.*.waiting")), "the transform", procs=[child])
            else:
                child = project.kill_child(start, end, point, marker)
                wait_for(lambda m=marker, c=child: m.exists() or c.poll() is not None, f"the child at {point}")
            if child.poll() is not None:
                figures["not_killed"] += 1                     # the write needed fewer files than N
                days |= set(range(lo, hi))
                continue
            kill(child)
            figures["kills"] += 1
            after = truth(project, days | set(range(lo, hi)))
            now = project.rows()
            old, new = now.equals(before), same(now, after)
            state = "old=new" if old and new else "old" if old else "new" if new else "WRONG"
            figures["wrong_tables" if state == "WRONG" else "old" if old else "new"] += 1
            left = orphans(project)
            figures["orphans_left"] += len(left)
            with project.platform() as p:
                wait_for(lambda pl=p: pl.runs("clicks")[0].status == "abandoned", "the abandoned run")
                figures["abandoned"] += 1
                p.backfill("clicks", start, end)
            days |= set(range(lo, hi))
            expect = truth(project, days)
            got = project.rows()
            lost = max(0, expect.num_rows - got.num_rows)
            figures["lost_rows"] += lost
            figures["wrong_tables"] += 0 if same(got, expect) else 1
            remaining = orphans(project)
            figures["orphans_after"] += len(remaining)
            print(f"trial {trial:2d}: [{start}, {end}) killed at {point:<9} table {state:<7}, {len(left):3d} orphan(s) "
                  f"left, after the next run {len(remaining)} orphan(s), {lost} row(s) lost", flush=True)
        print(f"{args.trials} trials in {time.monotonic() - began:.0f}s: " +
              ", ".join(f"{k} {v}" for k, v in figures.items()) + " (old counts a table equal to before the run, new one equal to "
              "after it; old=new when the window's days were backfilled already)")


if __name__ == "__main__":
    main()
