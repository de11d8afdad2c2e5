"""Prometheus metrics with several worker processes: each scrape reaches one worker, so per-process counters
went backwards from one scrape to the next. The runner puts the workers in prometheus_client's multiprocess
mode (a fresh folder per run, removed on exit), and every scrape sums all workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from fixtures.feature_service import PROJECT, item_stats, user_engagement, user_profile, write_world
from fixtures.redis_server import free_port
from quasar.registry.registry import Registry

READ = {"entities": {"user_id": [1, 2]}, "features": ["user_engagement:clicks"]}


def served(text: str) -> float:
    """The scraped count of /v1/features requests answered 200."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "quasar_feature_requests_total" and sample.labels == {"route": "/v1/features",
                                                                                      "status": "200"}:
                return float(sample.value)
    return 0.0


def wait_healthy(url: str, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert child.poll() is None, child.stdout.read().decode() if child.stdout else ""
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.2)


def test_counters_never_go_backwards_across_two_workers(redis_url: str, tmp_path: Path) -> None:
    registry_url = f"sqlite:///{tmp_path / 'registry.db'}"
    with Registry.open(registry_url) as registry:
        registry.register_definitions([user_profile.entity, item_stats.entity],
                                      [user_profile.source, item_stats.source],
                                      [user_profile, user_engagement, item_stats], module="tests.feature_service")
    write_world(redis_url)
    child_tmp = tmp_path / "tmp"
    child_tmp.mkdir()
    port = free_port()
    env = {**os.environ, "QUASAR_REGISTRY_URL": registry_url, "QUASAR_REDIS_URL": redis_url,
           "QUASAR_PROJECT": PROJECT, "TMPDIR": str(child_tmp)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    code = f"from quasar.online.service.runner import run_service; run_service(port={port}, workers=2)"
    child = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    seen: list[tuple[int, float]] = []
    try:
        wait_healthy(url, child)
        made = [p.name for p in child_tmp.iterdir()]
        sent = 0
        for _ in range(12):
            for _ in range(4):        # a fresh connection each time, so the kernel spreads them over the workers
                assert httpx.post(f"{url}/v1/features", json=READ, timeout=10).status_code == 200
                sent += 1
            text = httpx.get(f"{url}/metrics", timeout=10).text
            seen.append((sent, served(text)))
        deadline = time.monotonic() + 30
        while (final := served(httpx.get(f"{url}/metrics", timeout=10).text)) < sent:
            assert time.monotonic() < deadline, f"the last scrape counts {final} of {sent} requests"
            time.sleep(0.1)
    finally:
        child.terminate()
        child.wait(timeout=30)
    counts = [count for _, count in seen]
    assert counts == sorted(counts), f"a counter went backwards between scrapes: {seen}"
    # a request is counted just after its answer is sent, so a scrape may not see the very last one yet
    assert all(count >= sent - 1 for sent, count in seen), f"a scrape missed another worker's requests: {seen}"
    assert final == 48
    assert made, "the runner made its metrics folder under TMPDIR"
    assert list(child_tmp.iterdir()) == [], "the metrics folder is removed when the service stops"
