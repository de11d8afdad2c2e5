"""Serving versions end to end, through the CLI and the facade on a real project (Iceberg tables, a throwaway
Redis, the HTTP feature service): registering a new version never takes features away from a running service;
unpinned references move to it once it is backfilled and materialized, and back on ``quasar promote``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import quasar
from fixtures.project import init_project
from quasar.cli import main

MODULE = '''\
import pyarrow as pa
import pyarrow.compute as pc

from quasar.signals import Entity, Float64, Source, signal

user = Entity(name="user", join_key="user_id", description="@DESC@")
events = Source.parquet(name="events", path="data/events", timestamp="ts")


@signal(entity=user, source=events, ttl="30d", online=True, features={"score": Float64()})
def user_score(batch: pa.Table) -> pa.Table:
    """A user's score: the event's value, scaled."""
    @COMMENT@
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["ts"], "score": scaled(batch["value"])})


def scaled(values):
    return pc.multiply(pc.cast(values, pa.float64()), FACTOR)


FACTOR = @FACTOR@
'''

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
START, END = TODAY - timedelta(days=3), TODAY + timedelta(days=1)
USERS = [1, 2, 3]
VALUES = [10, 20, 30]


def write_signals(root: Path, *, factor: str = "1.5", desc: str = "A person.", comment: str = "# one row per event") -> None:
    text = MODULE.replace("@FACTOR@", factor).replace("@DESC@", desc).replace("@COMMENT@", comment)
    (root / "signals").mkdir(exist_ok=True)
    (root / "signals" / "scores.py").write_text(text)


@pytest.fixture
def project(tmp_path: Path, project_env: str) -> Iterator[Path]:
    init_project(tmp_path, "serving")
    (tmp_path / "data" / "events").mkdir(parents=True)
    ts = pa.array([START + timedelta(hours=5 + i) for i in range(len(USERS))], pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.table({"user_id": pa.array(USERS, pa.int64()), "ts": ts, "value": pa.array(VALUES, pa.int64())}),
                   tmp_path / "data" / "events" / "part-0.parquet")
    write_signals(tmp_path)
    yield tmp_path


def cli(project: Path, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, ["-C", str(project), *args])
    assert result.exit_code == code, result.output
    return result.output


def offline(p: quasar.Platform, ref: str = "user_score:score") -> list[Any]:
    spine = pa.table({"user_id": pa.array(USERS, pa.int64()),
                      "event_timestamp": pa.array([TODAY] * len(USERS), pa.timestamp("us", tz="UTC"))})
    return p.training_dataset(spine, [ref]).column("score").to_pylist()


def online(p: quasar.Platform, ref: str = "user_score:score") -> list[Any]:
    answer = p.online_features({"user_id": USERS}, [ref])
    return answer["results"][1]["values"]  # type: ignore[no-any-return]


def http(project: Path, monkeypatch: pytest.MonkeyPatch, ref: str = "user_score:score") -> list[Any]:
    """The values the HTTP feature service answers (a fresh app: its resolve cache starts empty)."""
    from quasar.services import PROJECT_ENV, feature_app
    monkeypatch.setenv(PROJECT_ENV, str(project))
    app = feature_app()

    async def ask() -> httpx.Response:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.post("/v1/features", json={"entities": {"user_id": USERS}, "features": [ref]})

    response = asyncio.run(ask())
    assert response.status_code == 200, response.text
    return response.json()["results"][1]["values"]  # type: ignore[no-any-return]


def scores(factor: float) -> list[float]:
    return [v * factor for v in VALUES]


def test_a_new_version_serves_only_once_backfilled_and_materialized(project: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    out = cli(project, "register", "signals")
    assert "user_score v1: new; needs backfill, materialize" in out
    cli(project, "backfill", "user_score", "--start", f"{START:%Y-%m-%d}", "--end", f"{END:%Y-%m-%d}")
    cli(project, "materialize")
    with quasar.Platform.open(project) as p:
        assert offline(p) == online(p) == scores(1.5)

    write_signals(project, factor="2.0")                      # what it computes changed: a new version
    out = cli(project, "register", "signals")
    assert ("user_score v2: new version; needs backfill, materialize before it serves (serving stays v1 until "
            "then, or `quasar promote user_score@2`)") in out
    with quasar.Platform.open(project) as p:
        assert offline(p) == online(p) == scores(1.5)         # unpinned: still v1, offline and online
        assert p.describe("user_score")["serving"] == {
            "version": 1, "reason": "newest version with backfill and materialize completed", "promoted": False}
    assert http(project, monkeypatch) == scores(1.5)
    listing = json.loads(cli(project, "ls", "--json"))
    assert [(r["name"], r["version"], r["serving"]) for r in listing] == [("user_score", 2, 1)]
    assert cli(project, "ls").splitlines()[1].split()[:3] == ["user_score", "v2", "v1"]
    assert "serving:     v1 (newest version with backfill and materialize completed)" in cli(
        project, "describe", "user_score")

    cli(project, "backfill", "user_score", "--start", f"{START:%Y-%m-%d}", "--end", f"{END:%Y-%m-%d}")
    with quasar.Platform.open(project) as p:
        assert offline(p) == scores(1.5)                      # v2 is online: it needs a materialize too
        assert offline(p, "user_score@2:score") == scores(2.0)
    out = cli(project, "materialize")
    assert "materialized user_score v2" in out
    with quasar.Platform.open(project) as p:
        assert offline(p) == online(p) == scores(2.0)
        assert online(p, "user_score@1:score") == scores(1.5)  # a pinned reference is unchanged
    assert http(project, monkeypatch) == scores(2.0)

    assert "user_score serves v1 (promoted)" in cli(project, "promote", "user_score@v1")   # Feast's syntax too
    with quasar.Platform.open(project) as p:
        assert offline(p) == online(p) == scores(1.5)
    assert http(project, monkeypatch) == scores(1.5)
    bad = cli(project, "promote", "user_score@7", code=1)
    assert bad.startswith("error:") and "has no version 7; it has v1, v2" in bad
    assert "user_score serves v2 (newest version with backfill and materialize completed)" in cli(
        project, "promote", "user_score", "--auto")
    with quasar.Platform.open(project) as p:
        assert p.promote("user_score", 1).version == 1 and offline(p) == scores(1.5)
    assert "user_score serves v2 (promoted)" in cli(project, "promote", "user_score@2")
    assert "give SIGNAL@VERSION" in cli(project, "promote", "user_score", code=2)          # no version, no --auto
    assert "give SIGNAL@VERSION" in cli(project, "promote", "user_score@2:score", code=2)
    assert cli(project, "promote", "user_score@x", code=1).startswith("error: feature reference 'user_score@x'")


def test_register_says_unchanged_and_metadata_updated(project: Path) -> None:
    cli(project, "register", "signals")
    write_signals(project, comment="# a different comment")
    out = cli(project, "register", "signals")
    assert "user_score v1: unchanged" in out
    write_signals(project, comment="# a different comment", desc="Someone who uses the app.")
    out = cli(project, "register", "signals")
    assert "user_score v1: metadata updated (entity description)" in out
    with quasar.Platform.open(project) as p:
        assert [sv.version for sv in p.registry.versions("user_score")] == [1]
        assert p.registry.entity("user").description == "Someone who uses the app."


def test_materialize_keeps_the_serving_version_fresh_while_a_new_one_waits(project: Path) -> None:
    """After v2 is registered (not backfilled), a default materialize still writes v1, the serving version."""
    cli(project, "register", "signals")
    cli(project, "backfill", "user_score", "--start", f"{START:%Y-%m-%d}", "--end", f"{END:%Y-%m-%d}")
    write_signals(project, factor="2.0")
    cli(project, "register", "signals")
    out = cli(project, "materialize")
    assert "materialized user_score v1" in out
    with quasar.Platform.open(project) as p:
        assert online(p) == scores(1.5) and p.registry.serving("user_score").version == 1
