"""The catalog shows the last consistency and skew reports as ``quasar consistency`` and ``quasar skew`` left them
(``Platform.consistency`` and ``Platform.skew`` record theirs): on the request world, a service whose served
vectors were logged through the product's online read path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from fastapi.testclient import TestClient

from fixtures.request_world import build_world
from quasar.cli import main
from quasar.online.feature_log import FeatureLogger, served_vectors_from
from quasar.online.response import plan_request, read_online_features
from quasar.ui.app import create_app


def _report_rows(page: str, section: str) -> list[str]:
    """The feature names of the report table under the heading with id ``section``."""
    part = page.split(f'id="{section}"', 1)[1]
    table = re.search(r'<table class="report">(.*?)</table>', part, flags=re.S)
    assert table is not None, part[:500]
    return re.findall(r"<tr><td><code>([^<]+)</code>", table.group(1))


def test_the_last_consistency_and_skew_reports_show_in_the_catalog(tmp_path: Path, project_env: str) -> None:
    world = build_world(tmp_path)
    p = world.platform
    client = TestClient(create_app(p))
    assert "no skew report recorded" in client.get("/services/ranker").text
    assert "no consistency report recorded" in client.get("/signals/user_stats").text

    def resolve(name: str, version: int | None) -> tuple[Any, int]:
        sv = p.registry.resolve(name, version)
        return sv.signal, sv.version

    expanded = p.feature_lists.expand("ranker", resolve)
    assert expanded.service is not None
    with FeatureLogger(lambda: p.catalog, p.config.offline.namespace) as logger:
        for _ in range(3):
            request = world.request(5)
            plan = plan_request({k: request[k] for k in ("user_id", "pin_id")}, expanded.refs, expanded.resolve,
                                lookup=expanded.lookup, request_data={k: request[k] for k in ("position", "query")})
            served = read_online_features(p.online_store, plan)
            assert logger.submit(served_vectors_from(plan, served, service=expanded.service.name,
                                                     service_version=expanded.service.version, sample_rate=1.0))

    skew = CliRunner().invoke(main, ["-C", str(tmp_path), "skew", "ranker"])
    assert skew.exit_code == 0 and "online equals offline" in skew.output, skew.output
    page = client.get("/services/ranker").text
    assert "no skew report recorded" not in page and "15 logged rows" in page and "online equals offline" in page
    assert _report_rows(page, "skew") == ["clicks", "boost", "long_query", "score"]

    checked = CliRunner().invoke(main, ["-C", str(tmp_path), "consistency", "user_stats", "--sample", "20"])
    assert checked.exit_code == 0, checked.output
    sampled = re.search(r"\d+ of 60 entities sampled", checked.output)          # offline and online samples
    page = client.get("/signals/user_stats").text
    assert sampled is not None and "no consistency report recorded" not in page and sampled.group(0) in page
    assert _report_rows(page, "consistency") == ["clicks", "ctr", "country"]
