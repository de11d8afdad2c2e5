"""The services' feature logger writes in a child process (``quasar.online.feature_log_process``): rows land
with the served values, the bound holds end to end (queue, pipe and child), a stop of the whole process group
(SIGTERM, as a supervisor or Ctrl-C sends it) still writes what was queued, and a writer that dies is counted,
never raised into a request."""

from __future__ import annotations

import functools
import math
import os
import signal
import time
from pathlib import Path

import pytest

from fixtures.feature_log_vectors import log_rows, served
from quasar.online.feature_log_process import ProcessFeatureLogger
from quasar.store.catalog import open_catalog


def _logger(root: Path, **options: object) -> ProcessFeatureLogger:
    catalog = functools.partial(open_catalog, uri=f"sqlite:///{root}/catalog.db", warehouse=str(root / "warehouse"))
    return ProcessFeatureLogger(catalog, "signals", **options)  # type: ignore[arg-type]


def test_rows_land_with_the_served_values_and_nan_stays_nan(tmp_path: Path) -> None:
    logger = _logger(tmp_path)
    sent = [served(i, nan=i == 3) for i in range(20)]
    assert all(logger.submit(v) for v in sent)
    logger.close()
    assert logger.stats.logged_rows == 100 and logger.stats.dropped_rows == logger.stats.failed_rows == 0
    got = log_rows(tmp_path).sort_by([("__request_id", "ascending"), ("user_id", "ascending")]).to_pylist()
    want = sorted(((v.request_id, k, c) for v in sent
                   for k, c in zip(v.join_keys["user_id"], v.response["results"][1]["values"], strict=True)))
    assert [(r["__request_id"], r["user_id"]) for r in got] == [(a, b) for a, b, _ in want]
    for row, (_, _, ctr) in zip(got, want, strict=True):
        if ctr is not None and math.isnan(ctr):
            assert row["ctr"] is not None and math.isnan(row["ctr"])       # NaN is a value, not a null
        else:
            assert row["ctr"] == ctr


def test_the_bound_holds_end_to_end_and_every_row_is_accounted_for(tmp_path: Path) -> None:
    logger = _logger(tmp_path, max_queue=50, flush_interval_s=30.0, batch_rows=10_000)
    accepted = sum(logger.submit(served(i)) for i in range(2_000))       # 5 rows each, far faster than writes
    assert logger.stats.peak_queued_rows <= 50
    assert 10 <= accepted < 2_000
    logger.close()                                                         # writes the queued rows
    stats = logger.stats
    assert stats.logged_rows == accepted * 5
    assert stats.dropped_rows == (2_000 - accepted) * 5
    assert log_rows(tmp_path).num_rows == accepted * 5


def test_a_stop_of_the_process_group_while_the_writer_starts_loses_nothing(tmp_path: Path) -> None:
    logger = _logger(tmp_path)
    for i in range(4):
        logger.submit(served(i))
    deadline = time.monotonic() + 30
    while logger._process is None and time.monotonic() < deadline:        # the sender starts the child
        time.sleep(0.01)
    assert logger._process is not None
    os.kill(logger._process.pid, signal.SIGTERM)                           # what killpg sends the child too
    os.kill(logger._process.pid, signal.SIGINT)
    logger.close()
    assert logger.stats.logged_rows == 20
    assert log_rows(tmp_path).num_rows == 20


def test_a_writer_that_dies_is_counted_and_never_raised(tmp_path: Path) -> None:
    logger = _logger(tmp_path, flush_interval_s=30.0)
    logger.submit(served(0))
    deadline = time.monotonic() + 30
    while logger._process is None and time.monotonic() < deadline:
        time.sleep(0.01)
    logger._process.kill()
    logger._process.wait()
    deadline = time.monotonic() + 30
    while logger.stats.failed_rows == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert logger.stats.failed_rows == 5                                  # the rows it held
    assert logger.submit(served(1)) is False                              # later requests: dropped, no error
    assert logger.stats.dropped_rows == 5
    logger.close()


@pytest.mark.parametrize("rate", [0.25])
def test_sampling_happens_before_anything_is_sent(tmp_path: Path, rate: float) -> None:
    logger = _logger(tmp_path, seed=3)
    accepted = sum(logger.submit(served(i, rate=rate)) for i in range(400))
    logger.close()
    assert logger.stats.sampled_out == (400 - accepted) * 5
    assert 60 <= accepted <= 140 and logger.stats.logged_rows == accepted * 5
