"""The scorer's metrics in prometheus_client's multiprocess mode, as ``quasar score-serve --workers N`` runs
them (the runner sets ``PROMETHEUS_MULTIPROC_DIR`` before spawning its workers): whichever worker a scrape
reaches, it answers every worker's counts summed, so they never go backwards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

WORKER = """
import sys
from quasar.serving_adapters.metrics import ScorerMetrics
metrics = ScorerMetrics()
metrics.requests.labels("ranker", "200").inc(int(sys.argv[1]))
metrics.model_time.labels("ranker").observe(0.01)
sys.stdout.write(metrics.render().decode())
"""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_each_worker_answers_the_sum_of_all_workers(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    scrapes = [samples(subprocess.run([sys.executable, "-c", WORKER, str(n)], env=env, check=True,
                                      capture_output=True, text=True).stdout) for n in (3, 4, 5)]
    served = ("quasar_scorer_requests_total", (("model", "ranker"), ("status", "200")))
    timed = ("quasar_scorer_model_seconds_count", (("model", "ranker"),))
    assert [s[served] for s in scrapes] == [3, 7, 12]
    assert [s[timed] for s in scrapes] == [1, 2, 3]
