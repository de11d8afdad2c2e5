"""Training loader benchmark: rows/s through quasar's loader, a naive per-row Dataset and a raw pyarrow read.

    python -m bench loader [--rows 1000000] [--batch-size 1024] [--workers 0,1,2] [--naive-rows 100000]
                           [--repeat 2] [--no-write]

Data (seeded, in a temp folder, pyarrow's default types): 8 Parquet files in row groups of 65,536 rows of
8 float32 features ``f0..f7``, a vector ``emb`` (``fixed_size_list<float32>[16]``), an id list ``ids``
(``list<int64>``, 0 to 20 ids) and an int64 ``label``. Timed in one run, interleaved, best of ``--repeat``
rounds after a warm-up round:

* raw pyarrow -> numpy -> torch (the limit, issue 17's "raw Parquet -> tensor read"): ``pq.read_table`` of
  the columns, then the arrays a batch holds for all rows at once: dense [N, 8] float32, vector [N, 16], id
  values and bag starts, labels, each made a tensor with ``torch.from_numpy`` (zero-copy). Also shown without
  the torch step (raw pyarrow -> numpy). No presence masks: the data has no nulls, and a raw read would skip
  them; quasar's batches carry them (one per feature and the dense block's).
* quasar's row-group reads alone: the loader's ``ParquetSource`` reading every row group, no tensors (where
  the loader's time goes: the rest of its epoch is cutting batches and building tensors).
* quasar ``make_loader``: one epoch of ``TrainingBatch``, without and with shuffling (default shuffle buffer),
  for each count of ``--workers`` (workers send each batch packed in one buffer, rebuilt in the main process);
  pinned memory off, as in the raw read.
* naive map-style ``Dataset``: one tensor per field per row from ``to_pylist()`` lists, default DataLoader
  batching, a small collate making id values + offsets. Slow, so timed once on the first ``--naive-rows``
  rows, reading them included.

The warm-up round also checks each variant against the raw arrays: row count and float64 sums of every
tensor for every variant, the exact arrays in order for the unshuffled single-process epoch. The timed rounds
do no checking on either side: a loader epoch iterates every batch and counts its rows, as the raw read makes
its tensors and returns them, so neither side pays for the check.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset

from bench.common import machine_line, markdown_table, ratio, timed, write_results
from quasar.training_adapters import ParquetSource, make_loader

SECTION = "## Training loader (bench/loader.py)"
DENSE = [f"f{i}" for i in range(8)]
FEATURES = [*DENSE, "emb", "ids"]
COLUMNS = [*FEATURES, "label"]
DIM, MAX_IDS, FILES, ROW_GROUP, SEED = 16, 20, 8, 65_536, 11
ISSUE_GOAL, GOALS = 0.5, {False: 1 / 3, True: 1 / 6}  # fraction of the raw limit: issue 17 (no shuffle, 0
#                                                         workers); earlier goals without / with shuffling


# --- data --------------------------------------------------------------------------------------------------------

def write_dataset(folder: Path, rows: int) -> list[str]:
    """``FILES`` Parquet files of seeded rows (see the module docstring)."""
    rng = np.random.default_rng(SEED)
    files = []
    for k, n in enumerate(np.diff(np.linspace(0, rows, FILES + 1).astype(np.int64))):
        lengths = rng.integers(0, MAX_IDS + 1, n)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        cols: dict[str, pa.Array] = {f: pa.array(rng.random(n, dtype=np.float32)) for f in DENSE}
        cols["emb"] = pa.FixedSizeListArray.from_arrays(pa.array(rng.standard_normal(n * DIM, np.float32)), DIM)
        cols["ids"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(rng.integers(0, 10**6, offsets[-1])))
        cols["label"] = pa.array(rng.integers(0, 2, n))
        path = folder / f"part-{k:02d}.parquet"
        pq.write_table(pa.table(cols), path, row_group_size=ROW_GROUP)
        files.append(str(path))
    return files


@dataclass
class Arrays:
    """What a model consumes, as numpy: dense [N, 8], vector [N, 16], id values, bag starts, labels."""

    dense: np.ndarray
    vector: np.ndarray
    ids: np.ndarray
    starts: np.ndarray
    labels: np.ndarray


def raw_read(files: Sequence[str]) -> Arrays:
    """The limit: one multithreaded Arrow read, then each column into one contiguous numpy array."""
    table = pq.read_table(list(files), columns=COLUMNS)
    dense = np.empty((table.num_rows, len(DENSE)), np.float32)
    for j, name in enumerate(DENSE):
        dense[:, j] = table.column(name).to_numpy()
    vector = table.column("emb").combine_chunks().flatten().to_numpy().reshape(-1, DIM)
    ids = table.column("ids").combine_chunks()
    ends = ids.offsets.to_numpy().astype(np.int64)
    return Arrays(dense, vector, ids.flatten().to_numpy(), ends[:-1] - ends[0], table.column("label").to_numpy())


def raw_tensors(files: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """The limit: ``raw_read``, then each array as a tensor sharing its memory (``torch.from_numpy``; the
    read-only warning for Arrow-owned memory is silenced, as zero-copy is the fastest a raw read can do)."""
    a = raw_read(files)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return tuple(torch.from_numpy(x) for x in (a.dense, a.vector, a.ids, a.starts, a.labels))


# --- checking ----------------------------------------------------------------------------------------------------

@dataclass
class Sums:
    """Order-free totals of an epoch: exact integer counts and float64 sums of every tensor."""

    rows: int = 0
    ids: int = 0
    id_sum: int = 0
    labels: int = 0
    dense: np.ndarray = field(default_factory=lambda: np.zeros(len(DENSE)))
    vector: float = 0.0

    def add(self, dense: np.ndarray, vector: np.ndarray, ids: np.ndarray, labels: np.ndarray) -> None:
        self.rows += len(labels)
        self.ids += len(ids)
        self.id_sum += int(ids.sum())
        self.labels += int(labels.sum())
        self.dense += dense.sum(axis=0, dtype=np.float64)
        self.vector += float(vector.sum(dtype=np.float64))

    def differences(self, other: Sums) -> list[str]:
        ints = [k for k in ("rows", "ids", "id_sum", "labels") if getattr(self, k) != getattr(other, k)]
        close = np.allclose(self.dense, other.dense, rtol=1e-9) and np.isclose(self.vector, other.vector, rtol=1e-9)
        return ints + ([] if close else ["float sums"])


def sums_of(a: Arrays, rows: int | None = None) -> Sums:
    n = len(a.labels) if rows is None else rows
    end = int(a.starts[n]) if n < len(a.starts) else len(a.ids)
    s = Sums()
    s.add(a.dense[:n], a.vector[:n], a.ids[:end], a.labels[:n])
    return s


def exact_differences(kept: Arrays, raw: Arrays) -> list[str]:
    pairs = {"dense": (kept.dense, raw.dense), "vector": (kept.vector, raw.vector), "ids": (kept.ids, raw.ids),
             "bag starts": (kept.starts, raw.starts), "labels": (kept.labels, raw.labels)}
    return [k for k, (a, b) in pairs.items() if a.shape != b.shape or not np.array_equal(a, b)]


# --- the contenders ----------------------------------------------------------------------------------------------

@dataclass
class Epoch:
    sums: Sums
    kept: Arrays | None
    first_labels: np.ndarray


def consume(batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
            keep: bool) -> Epoch:
    """Touch every batch (sums of each tensor); keep the arrays when asked (exact check, one process only)."""
    sums, parts, first = Sums(), [], np.empty(0)
    for dense, vector, ids, offsets, labels in batches:
        d, v, i, o, y = (t.numpy() for t in (dense, vector, ids, offsets, labels))
        sums.add(d, v, i, y)
        if not len(first):
            first = y.copy()
        if keep:
            parts.append((d, v, i, o, y))
    if not keep:
        return Epoch(sums, None, first)
    shifts = np.cumsum([0] + [len(p[2]) for p in parts[:-1]])
    kept = Arrays(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                  np.concatenate([p[2] for p in parts]),
                  np.concatenate([p[3] + s for p, s in zip(parts, shifts, strict=True)]),
                  np.concatenate([p[4] for p in parts]))
    return Epoch(sums, kept, first)


def source_reads(files: Sequence[str]) -> None:
    """What the loader's epoch spends reading: every row group of the files through its ``ParquetSource``."""
    source = ParquetSource(list(files))
    for piece in source.pieces():
        source.read(piece, COLUMNS)


def quasar_epoch(files: Sequence[str], batch_size: int, shuffle: bool, workers: int, check: bool) -> Epoch | int:
    """One epoch: checked (sums, and the arrays kept when unshuffled in one process), or just its row count."""
    loader = make_loader(list(files), features=FEATURES, labels=["label"], batch_size=batch_size, shuffle=shuffle,
                         num_workers=workers, pin_memory=False)
    if not check:
        return sum(b.features.size for b in loader)
    batches = ((b.features.dense, b.features.vectors["emb"], b.features.id_lists["ids"].values,
                b.features.id_lists["ids"].offsets, b.labels["label"]) for b in loader)
    return consume(batches, keep=not shuffle and not workers)


class NaiveDataset(Dataset):  # type: ignore[type-arg]
    """The common pattern: rows as Python lists, one tensor per field per row."""

    def __init__(self, table: pa.Table) -> None:
        self.columns = {name: table.column(name).to_pylist() for name in COLUMNS}
        self.rows = table.num_rows

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        c = self.columns
        return {"dense": torch.tensor([c[f][i] for f in DENSE], dtype=torch.float32),
                "emb": torch.tensor(c["emb"][i], dtype=torch.float32),
                "ids": torch.tensor(c["ids"][i], dtype=torch.int64),
                "label": torch.tensor(c["label"][i], dtype=torch.int64)}


def naive_collate(rows: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    """Stack the fixed-size fields; id lists become flat values + the start of each bag."""
    lengths = torch.tensor([len(r["ids"]) for r in rows], dtype=torch.int64)
    offsets = torch.cumsum(lengths, 0) - lengths
    return (torch.stack([r["dense"] for r in rows]), torch.stack([r["emb"] for r in rows]),
            torch.cat([r["ids"] for r in rows]), offsets, torch.stack([r["label"] for r in rows]))


def naive_epoch(files: Sequence[str], rows: int, batch_size: int) -> Epoch:
    tables, held = [], 0
    for f in files:                                  # read only the files the subset needs
        if held >= rows:
            break
        tables.append(pq.read_table(f, columns=COLUMNS))
        held += tables[-1].num_rows
    dataset = NaiveDataset(pa.concat_tables(tables).slice(0, rows))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=naive_collate)
    return consume(loader, keep=False)


# --- the run -----------------------------------------------------------------------------------------------------

@dataclass
class Variant:
    label: str
    rows: int
    shuffle: bool | None                         # None: not a quasar loader (no goal)
    workers: int = 0
    seconds: float = 0.0
    epoch: Epoch | None = None                   # the checked epoch; None: a raw read
    counted: list[int] = field(default_factory=list)  # rows of each timed epoch
    times: list[float] = field(default_factory=list)  # seconds of each timed round
    reference: bool = False                      # the limit the fractions are of


def goal_of(v: Variant) -> float | None:
    if v.shuffle is None:
        return None
    return ISSUE_GOAL if not v.shuffle and not v.workers else GOALS[v.shuffle]


def check(v: Variant, raw: Arrays) -> list[str]:
    """What differs from the raw arrays: sums, the exact arrays when kept, and order when shuffling."""
    if v.epoch is None:
        return [] if len(raw.labels) == v.rows else [f"raw read has {len(raw.labels):,} rows"]
    bad = v.epoch.sums.differences(sums_of(raw, v.rows))
    bad += [f"a timed epoch gave {n:,} rows" for n in v.counted if n != v.rows]
    if v.epoch.kept is not None:
        bad += [f"{d} (exact)" for d in exact_differences(v.epoch.kept, raw)]
    first = v.epoch.first_labels
    if v.shuffle and np.array_equal(first, raw.labels[:len(first)]):
        bad.append("not shuffled")
    return bad


def paired_fraction(v: Variant, limit: Variant) -> float:
    """The median over timed rounds of the variant's rows/s over the limit's in the same round (less swayed by
    one lucky round on a shared machine than the ratio of the bests)."""
    return float(np.median([(v.rows / t) / (limit.rows / r) for t, r in zip(v.times, limit.times, strict=True)]))


def table_row(v: Variant, limit: Variant, bad: list[str]) -> list[str]:
    raw_rate = limit.rows / limit.seconds
    rate, target = v.rows / v.seconds, goal_of(v)
    paired = paired_fraction(v, limit) if v.times else None
    reached = target is not None and rate >= target * raw_rate and (paired is None or paired >= target)
    goal = "-" if target is None else f"{'met' if reached else 'NOT met'} (>= {target:.2f}x)"
    ok = ("(reference)" if v.reference else "-") if v.epoch is None else \
        ("ok: " + ("exact, in order" if v.epoch.kept else "count and sums")) if not bad else \
        "MISMATCH: " + ", ".join(bad)
    return [v.label, f"{v.rows:,}", f"{v.seconds:.3f}", f"{rate:,.0f}", ratio(rate, raw_rate),
            "-" if paired is None else f"{paired:.2f}x", goal, ok]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench loader", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the dataset (default 1,000,000)")
    parser.add_argument("--batch-size", type=int, default=1024, help="rows per batch (default 1024)")
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts to measure (default 0,1,2)")
    parser.add_argument("--naive-rows", type=int, default=100_000, help="rows the naive loader reads (default 100k)")
    parser.add_argument("--repeat", type=int, default=2, help="timed rounds after the warm-up (default 2)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update bench/RESULTS.md")
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",") if w]
    command = "python -m bench loader" + (" " + " ".join(argv) if argv else "")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="quasar-bench-loader-") as tmp:
        files = write_dataset(Path(tmp), args.rows)
        size_mb = sum(os.path.getsize(f) for f in files) / 2**20
        print(f"data: {args.rows:,} rows in {len(files)} files ({size_mb:.0f} MiB)", file=sys.stderr)
        raw = raw_read(files)
        runs: list[tuple[Variant, Callable[[bool], Any]]] = [
            (Variant("raw pyarrow -> numpy -> torch (the limit)", args.rows, None, reference=True),
             lambda check: raw_tensors(files)),
            (Variant("raw pyarrow -> numpy", args.rows, None), lambda check: raw_read(files)),
            (Variant("quasar's row-group reads alone (no tensors)", args.rows, None),
             lambda check: source_reads(files))]
        for w, shuffle in ((w, s) for w in workers for s in (False, True)):
            label = f"quasar make_loader, {'shuffle' if shuffle else 'no shuffle'}, {w} worker{'s' * (w != 1)}"
            runs.append((Variant(label, args.rows, shuffle, w),
                         partial(quasar_epoch, files, args.batch_size, shuffle, w)))
        best: dict[str, float] = {}
        for rep in range(args.repeat + 1):          # round 0 checks, and warms the page cache and the allocator
            for v, fn in runs:
                t = timed(partial(fn, rep == 0))
                if isinstance(t.result, Epoch):
                    v.epoch = t.result
                elif isinstance(t.result, int):
                    v.counted.append(t.result)
                if rep:
                    best[v.label] = min(best.get(v.label, t.best), t.best)
                    v.times.append(t.best)
                print(f"  round {rep}{'' if rep else ' (warm-up)'}: {v.label}: {t.best:.2f} s", file=sys.stderr)
        naive_rows = min(args.naive_rows, args.rows)
        t = timed(partial(naive_epoch, files, naive_rows, args.batch_size))
        naive = Variant(f"naive map-style Dataset, first {naive_rows:,} rows", naive_rows, None, 0, t.best,
                        t.result)
        print(f"  naive: {naive.seconds:.2f} s", file=sys.stderr)
    load_after = os.getloadavg()

    variants = [v for v, _ in runs] + [naive]
    for v in variants[:-1]:
        v.seconds = best[v.label]
    problems = {v.label: check(v, raw) for v in variants}
    table = markdown_table(["variant", "rows", "seconds", "rows/s", "fraction of raw", "median paired fraction",
                            "goal", "check"], [table_row(v, variants[0], problems[v.label]) for v in variants])
    body = "\n".join([
        SECTION, "", INTRO, "",
        f"Command: `{command}` ({datetime.now(UTC):%Y-%m-%d}; {machine_line()}; torch {torch.__version__}). "
        f"{args.rows:,} rows in {FILES} Parquet files ({size_mb:.0f} MiB), batch size {args.batch_size}; best of "
        f"{args.repeat} interleaved rounds after a checked warm-up round, the naive loader timed once on its "
        "subset, its check included. 1-minute "
        f"load average {load_before[0]:.2f} before the run and {load_after[0]:.2f} after it, this benchmark "
        "included." + load_note(load_before[0]), "", table, "", *issue_note(variants), HOW_TO_READ,
        *worker_note(variants),
    ])
    print(body)
    for label, bad in problems.items():
        if bad:
            print(f"MISMATCH {label}: {', '.join(bad)}", file=sys.stderr)
    if not args.no_write:
        write_results(SECTION, body)
        print(f"wrote the '{SECTION[3:]}' section of bench/RESULTS.md", file=sys.stderr)
    return 1 if any(problems.values()) else 0


def load_note(before: float) -> str:
    """A warning when other work was running as the benchmark started (the load after includes this run)."""
    if before < (os.cpu_count() or 1) / 2:
        return ""
    return (" Other processes shared the machine during this run, so every figure here, the raw limit included, "
            "is lower and noisier than on an idle machine: compare rows within this table, not with other runs.")


def issue_note(variants: list[Variant]) -> list[str]:
    """Issue 17's row (no shuffle, 0 workers, >= 0.5x the limit): met or not, and where the epoch's time goes."""
    limit = variants[0]
    row = next((v for v in variants if v.shuffle is False and v.workers == 0), None)
    reads = next((v for v in variants if v.label.startswith("quasar's row-group reads")), None)
    if row is None or reads is None or not row.times:
        return []
    best, paired = limit.seconds / row.seconds, paired_fraction(row, limit)
    verdict = "met" if min(best, paired) >= ISSUE_GOAL else "NOT met"
    return [f"Issue 17, loader vs raw Parquet -> tensors without shuffle on 0 workers, >= {ISSUE_GOAL}x: **{verdict}** "
            f"({best:.2f}x best of rounds, {paired:.2f}x median paired). Where the epoch's time goes (best "
            f"rounds): an epoch takes {row.seconds:.3f} s, and reading its row groups alone {reads.seconds:.3f} s "
            f"(the reads row, {reads.seconds / row.seconds:.0%} of it; in the epoch the next row group is read on a "
            "thread while one's batches are cut); the rest is building tensors and cutting batches: per row group "
            "one `build_feature_batch` and one `split_feature_batch`, then two dozen tensor views per batch.", ""]


def worker_note(variants: list[Variant]) -> list[str]:
    """A paragraph on DataLoader workers: how each worker count compares with one process, and why."""
    rate = {(v.shuffle, v.workers): v.rows / v.seconds for v in variants if v.shuffle is not None}
    counts = sorted({w for _, w in rate if w})
    if not counts or not all((s, 0) in rate for s in (False, True)):
        return []
    parts = []
    for w in counts:
        ratios = [rate[(s, w)] / rate[(s, 0)] for s in (False, True) if (s, w) in rate]
        parts.append(f"{w} worker{'s' * (w != 1)} " + " / ".join(f"{r:.2f}x" for r in ratios))
    faster = all(rate[k] >= rate[(k[0], 0)] for k in rate if k[1])
    verdict = ("at least as fast as one process in every case here" if faster else
               "slower than one process in at least one case here, so `make_loader` defaults to 0 workers")
    return ["", f"Workers: rows/s with DataLoader workers over rows/s in one process: {', '.join(parts)} "
            f"(no shuffle / shuffle); {verdict}. Each batch crosses to the main process packed into one buffer "
            "(`training_adapters/packing.py`: one pickled numpy array and a small table of fields) and is rebuilt "
            "there as tensor views; before that, torch sent each of a batch's ~24 tensors as a shared-memory file "
            "descriptor with its own socket handshake, and 1 worker ran at 57,587-60,655 rows/s (11-14x slower "
            "than one process; commit 9d59ce9). What remains: a worker does all the work the main process would "
            "(read, slice, build tensors) plus packing, pickling and rebuilding, and on 2 cores the workers, "
            "the main process and Arrow's decoding threads share the cores; a loader-only epoch leaves the main "
            "process nothing else to overlap with."]


INTRO = """Rows per second from Parquet into training tensors, one epoch end to end, over the same seeded data in
one run: quasar's `make_loader` without and with its shuffle buffer; a naive map-style `Dataset` making one
tensor per field per row from `to_pylist()` lists (the common pattern), timed on a subset, reading it included;
and a raw `pq.read_table` of the same columns into the same numpy arrays, made tensors by `torch.from_numpy`
(the limit, issue 17's raw Parquet -> tensor read: no batches, no presence masks), also shown without the torch
step. Data: 8 float32 features, a 16-dim float32 vector, a list of 0 to 20 int64 ids and an int64 label per
row, in row groups of 65,536 rows (files of 125,000 rows, so batches straddle row groups and files)."""

HOW_TO_READ = """How to read it: "fraction of raw" is the variant's best rows/s over the limit's best; "median paired
fraction" is the median over the timed rounds of the two rates in the same round, and a goal counts as met only
when both reach it. The goal of issue 17 is 0.5 of the limit without shuffling on 0 workers, the earlier goals 1/3 without shuffling and 1/6 with the shuffle buffer. The
raw read decodes all columns at once with Arrow's threads and makes one array per column. The loader reads
row group by row group (or shuffle-buffer half by half), builds each one's tensors once
(`build_feature_batch`, presence masks included) and cuts batches from them as views (`split_feature_batch`);
a batch straddling two row groups is built from its own rows, and the next row group is read on a thread
while one's batches are cut. "quasar's row-group reads alone" is the reading part of that epoch; the rest of
the loader's time is cutting batches and building tensors. The naive loader's per-row Python work puts it
far below both."""


if __name__ == "__main__":
    raise SystemExit(main())
