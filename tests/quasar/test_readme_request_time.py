"""README "Tour: request-time features", "Tour: feature services" and "Tour: feature logging", run as a
reader runs them.

The project is the example project (``examples/signals``) over data that ends today, so the served values are
fresh; the tour's module is saved where its first line says. Its blocks run in order: register and describe,
``quasar serve`` in the background and the curl of the service, the Python session (the service's dataset and
online answer, then the log as a spine once serve has written it), ``quasar skew``. What is
checked: the curl, ``Platform.online_features``, the training dataset of the same rows and the dataset built
on the feature log all give the same ``expected_ctr``, bit for bit, and equal the README's formula; skew
finds nothing to report.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fixtures.project import init_project
from fixtures.readme import Command, Shell, commands, find_block, readme_blocks, run_python, shell_env
from quasar.demo import EXAMPLE_SIGNALS
from quasar.examples.data import World, generate
from quasar.platform import Platform

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
WORLD = World(users=30, pins=40, days=8, events_per_day=400, start=TODAY - timedelta(days=7))


def block(lang: str, marker: str) -> Any:
    return find_block(readme_blocks(), lang, marker)


def bits(values: list[Any]) -> list[Any]:
    return [None if v is None else struct.pack("<d", v) for v in values]


def column(answer: dict[str, Any], name: str) -> list[Any]:
    names = answer["metadata"]["feature_names"]
    return list(answer["results"][names.index(name)]["values"])


def test_the_request_time_tour_runs(tmp_path: Path, project_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    root = init_project(tmp_path / "myproject", "myproject")
    shutil.copytree(EXAMPLE_SIGNALS, root / "signals", ignore=shutil.ignore_patterns("__pycache__"))
    generate(root, WORLD)
    with Platform.open(root) as p:
        p.register("signals")
        for name in ("user_engagement", "pin_stats"):
            p.backfill(name, WORLD.start, TODAY + timedelta(days=1))
        p.materialize(["user_engagement", "pin_stats"])
    module = block("python", "# signals/ranking.py")
    target = re.match(r"# (\S+\.py)\n", module.text)
    assert target, "the module's first line names its file"
    (root / target.group(1)).write_text(module.text)

    shell = Shell(root, shell_env(project_env), tmp_path / "logs")
    monkeypatch.chdir(root)
    try:
        cmds = commands(block("bash", "quasar describe ranker_v3"))
        for cmd in cmds:
            shell.run(cmd)
            check(cmd)
        curl = next(c for c in cmds if c.text.startswith("curl"))
        answer = json.loads(curl.output)
        body = json.loads(re.search(r"-d '(.*)'", curl.text).group(1))      # type: ignore[union-attr]
        assert answer["metadata"]["feature_names"] == ["user_id", "pin_id", "ctr_7d", "impressions_7d",
                                                       "expected_ctr"]
        p = Platform.open(root)
        session = {"p": p, "pd": pd}
        run_python(block("python", 'offline = p.training_dataset(spine, "ranker_v3")'), session)
        deadline = time.monotonic() + 60                   # the log is written within [logging] flush_interval_s
        while True:
            try:
                if p.feature_log("ranker_v3").num_rows >= 2:
                    break
            except LookupError:
                pass
            assert time.monotonic() < deadline, "serve wrote no feature log within 60 s"
            time.sleep(0.5)
        run_python(block("python", 'p.feature_log("ranker_v3")'), session)
        served_ctr = column(answer, "expected_ctr")
        assert bits(session["offline"].column("expected_ctr").to_pylist()) == bits(served_ctr)
        assert bits(column(session["online"], "expected_ctr")) == bits(served_ctr)
        assert any(v is not None for v in served_ctr), "fresh data: the feature has values"
        for user_ctr, pin_ctr, position, got in zip(column(answer, "ctr_7d"), pin_ctrs(p, body), [0, 3],
                                                    served_ctr, strict=True):
            want = None if pin_ctr is None else (pin_ctr + (pin_ctr if user_ctr is None else user_ctr)) / 2 \
                * 0.8 ** position
            assert got == want                                                   # the README's formula
        served = session["served"].to_pandas()
        assert len(served) >= 2
        by_request = served.sort_values(["__request_id", "user_id"])
        assert set(by_request["position"]) <= {0, 3}
        assert all(c in served.columns for c in ("ctr_7d", "impressions_7d", "expected_ctr"))
        for cmd in commands(block("bash", "quasar skew ranker_v3")):
            shell.run(cmd)                                  # --fail-on-mismatch: exit 3 on any skew
            assert "expected_ctr" in cmd.output, cmd.output
        p.close()
    finally:
        shell.close()


def pin_ctrs(p: Platform, body: dict[str, Any]) -> list[Any]:
    """The pins' ``ctr_7d`` as served now (the request-time signal's hidden input)."""
    got = p.online_features({"pin_id": body["entities"]["pin_id"]}, ["pin_stats:ctr_7d"])
    return column(got, "ctr_7d")


def check(cmd: Command) -> None:
    if cmd.text.startswith("quasar register"):
        assert "request-time signal slot_ctr v1: new" in cmd.output, cmd.output
        assert "feature service ranker_v3 v1: new" in cmd.output, cmd.output
    elif cmd.text.startswith("quasar describe"):
        assert "ranker_v3" in cmd.output and "user_engagement@1" in cmd.output, cmd.output
        assert "slot_ctr@1" in cmd.output, cmd.output
