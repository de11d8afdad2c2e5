"""``quasar serve`` and ``quasar score-serve`` take their limits from ``[online]`` in ``quasar.toml``: the Redis
timeouts of their stores, the request-body limit, and the bearer tokens of the one auth rule."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from fixtures.project import init_project
from quasar.config import load_config

SETTINGS = """
[online]
read_timeout = 0.75
write_timeout = 3
connect_timeout = 0.125
max_body_bytes = 2048
auth_tokens = ["s3cret"]
"""


@pytest.fixture
def project(tmp_path: Path, project_env: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    from quasar.services import PROJECT_ENV
    root = init_project(tmp_path / "svc", "svc")
    toml = root / "quasar.toml"
    assert "[online]\n" in toml.read_text()
    toml.write_text(toml.read_text().replace("[online]\n", SETTINGS.lstrip(), 1))
    monkeypatch.setenv(PROJECT_ENV, str(root))
    return root


def test_the_defaults_are_well_under_a_second_for_reads(tmp_path: Path) -> None:
    online = load_config(tmp_path, env={}).online
    assert (online.read_timeout, online.write_timeout, online.connect_timeout) == (0.5, 2.0, 1.0)
    assert online.max_body_bytes == 4 * 1024 * 1024


def test_both_services_take_their_limits_from_the_config(project: Path) -> None:
    from quasar.services import feature_app, scoring_app
    config = load_config(project)
    assert (config.online.read_timeout, config.online.max_body_bytes) == (0.75, 2048)
    big = b" " * 4096
    good = {"Authorization": "Bearer s3cret", "content-type": "application/json"}

    async def ask(app, path: str) -> tuple[httpx.Response, httpx.Response]:  # type: ignore[no-untyped-def]
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return (await client.post(path, content=big, headers=good),
                    await client.get("/metrics"))

    features, scorer = feature_app(), scoring_app()
    store = features.state.context.store
    assert (store.timeouts.read, store.timeouts.write, store.timeouts.connect) == (0.75, 3.0, 0.125)
    assert scorer.state.scorer.store.timeouts.read == 0.75
    for app, path in ((features, "/v1/features"), (scorer, "/v1/score")):
        too_big, metrics = asyncio.run(ask(app, path))
        assert too_big.status_code == 413 and "over the limit of 2048 bytes" in too_big.json()["error"]["message"]
        assert metrics.status_code == 401                # every endpoint but /healthz needs the token
