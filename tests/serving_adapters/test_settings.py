"""``[serving]`` and ``quasar score-serve``'s flags reach the scorer: the candidate cache, the model host (one
shared by several feature hosts), and the worker count defaulting to the machine's cores."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from fixtures.project import init_project
from fixtures.serving import ScoringWorld
from quasar.config import ServingConfig, load_config
from quasar.online.redis_store import AsyncRedisOnlineStore
from quasar.serving_adapters.features import check_keys
from quasar.serving_adapters.model_host import KEY_ENV, RemoteBackend
from quasar.serving_adapters.models import ModelRegistry
from quasar.serving_adapters.runner import ModelRunner
from quasar.serving_adapters.scorer import Scorer
from quasar.serving_adapters.settings import (
    CACHE_ENV,
    MODEL_HOST_ENV,
    flag_environment,
    scorer_options,
    scorer_settings,
    shared_model_host,
)
from quasar.signals.errors import ConfigError

FLAG_VARS = (CACHE_ENV, MODEL_HOST_ENV, KEY_ENV)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No flag in the environment now, and none left behind by the CLI (it sets them for its workers)."""
    from quasar.services import PROJECT_ENV
    for var in (*FLAG_VARS, PROJECT_ENV):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    return monkeypatch


def _project(tmp_path: Path, serving: str) -> Path:
    root = init_project(tmp_path / "svc", "svc")
    toml = root / "quasar.toml"
    toml.write_text(toml.read_text().replace("[serving]\n", "[serving]\n" + serving.lstrip(), 1))
    return root


def test_the_serving_section_sets_the_cache_and_the_model_host(tmp_path: Path, clean_env: Any) -> None:
    root = _project(tmp_path, "cache = true\ncache_max_entries = 50\ncache_ttl_s = 5\nmodel_host = \"10.0.0.7:7000\"\n")
    serving = load_config(root).serving
    settings = scorer_settings(serving, {})
    assert (settings.cache.enabled, settings.cache.max_entries, settings.cache.ttl_s) == (True, 50, 5.0)
    assert settings.model_host == "10.0.0.7:7000"
    assert scorer_settings(ServingConfig(), {}).cache.enabled is False             # off by default
    assert scorer_settings(ServingConfig(), {}).model_host == ""                   # the model in each worker
    # the flags' environment wins over the file
    env = flag_environment(cache=False, model_host="process")
    assert env == {CACHE_ENV: "0", MODEL_HOST_ENV: "process"}
    settings = scorer_settings(serving, env)
    assert (settings.cache.enabled, settings.model_host) == (False, "process")
    assert flag_environment(cache=None, model_host=None) == {}


@pytest.mark.parametrize("serving, text", [
    ("model_host = \"nowhere\"\n", "[serving] model_host: 'nowhere' is not"),
    ("model_host = \"host:99999\"\n", "[serving] model_host"),
    ("cache_ttl_s = -1\n", "[serving] cache ttl_s must be positive"),
    ("cache_max_entries = 0\n", "[serving] cache max_entries must be a positive integer"),
    ("cache = \"yes\"\n", "[serving] cache must be bool"),
])
def test_bad_serving_values_are_config_errors(tmp_path: Path, clean_env: Any, serving: str, text: str) -> None:
    root = _project(tmp_path, serving)
    with pytest.raises(ConfigError) as got:
        scorer_settings(load_config(root).serving, {})
    assert text in str(got.value)
    # quasar score-serve says so before any worker starts
    from quasar.cli import main
    result = CliRunner().invoke(main, ["-C", str(root), "score-serve"])
    assert result.exit_code == 1 and text in result.output, result.output


def test_a_bad_flag_is_refused(tmp_path: Path, clean_env: Any) -> None:
    with pytest.raises(ConfigError, match="--model-host: 'a:b' is not"):
        flag_environment(cache=None, model_host="a:b")
    with pytest.raises(ConfigError, match="QUASAR_SCORER_CACHE must be 0 or 1"):
        scorer_settings(ServingConfig(), {CACHE_ENV: "on"})
    with pytest.raises(ConfigError, match="QUASAR_MODEL_HOST_KEY"):
        scorer_options(ServingConfig(model_host="127.0.0.1:9"), tmp_path, {})


def _served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace uvicorn by building the app the way a worker does, in process; record what it got."""
    import quasar.online.service.runner as runner
    seen: list[dict[str, Any]] = []

    def run_service(factory: str, *, host: str, port: int, workers: int, log_level: str) -> None:
        module, name = factory.split(":")
        app = getattr(__import__(module, fromlist=[name]), name)()
        scorer = getattr(app.state, "scorer", None)
        seen.append({"factory": factory, "workers": workers, "app": app,
                     "cache": scorer.cache if scorer is not None else None,
                     "runner": scorer.runner if scorer is not None else None,
                     "model_host": os.environ.get(MODEL_HOST_ENV)})

    monkeypatch.setattr(runner, "run_service", run_service)
    return seen


def test_score_serve_flags_reach_the_cache_and_workers_default_to_the_cores(tmp_path: Path, clean_env: Any,
                                                                           project_env: str) -> None:
    from quasar.cli import main
    root = _project(tmp_path, "cache_ttl_s = 3.5\n")
    seen = _served(clean_env)
    result = CliRunner().invoke(main, ["-C", str(root), "score-serve", "--cache"])
    assert result.exit_code == 0, result.output
    assert seen[-1]["workers"] == os.cpu_count()                 # no --workers: one per core
    cache = seen[-1]["cache"]
    assert cache is not None and cache.config.ttl_s == 3.5 and cache.config.enabled
    assert f"({os.cpu_count()} worker" in result.output
    result = CliRunner().invoke(main, ["-C", str(root), "score-serve", "--no-cache", "--workers", "3"])
    assert result.exit_code == 0, result.output
    assert seen[-1]["workers"] == 3 and seen[-1]["cache"] is None
    result = CliRunner().invoke(main, ["-C", str(root), "serve"])
    assert result.exit_code == 0, result.output
    assert seen[-1]["factory"].endswith(":feature_app") and seen[-1]["workers"] == os.cpu_count()


def test_score_serve_shares_one_model_host_between_its_workers(tmp_path: Path, clean_env: Any, project_env: str,
                                                               scoring_world: ScoringWorld) -> None:
    """--model-host shared: one model host process, started around the server; each worker reaches it as a
    HOST:PORT host (its key in the environment); it stops with the server."""
    from quasar.cli import main
    root = _project(tmp_path, "device = \"cpu\"\n")
    seen = _served(clean_env)
    result = CliRunner().invoke(main, ["-C", str(root), "score-serve", "--model-host", "shared"])
    assert result.exit_code == 0, result.output
    runner = seen[-1]["runner"]
    assert isinstance(runner, RemoteBackend) and runner.connected
    assert seen[-1]["model_host"].startswith("127.0.0.1:")
    runner.close()
    assert os.environ.get(MODEL_HOST_ENV) == "shared" and KEY_ENV not in os.environ     # restored after


def test_several_feature_hosts_feed_one_shared_model_host(scoring_world: ScoringWorld, scoring_redis: str,
                                                          clean_env: Any) -> None:
    """Two feature hosts' backends on one shared model host score concurrently what a local runner scores."""
    serving = ServingConfig(model_host="shared", device="cpu")
    env: dict[str, str] = {}
    models = ModelRegistry(scoring_world.models, scoring_world.resolver)
    model = models.get("ranker")

    async def batch() -> Any:
        store = AsyncRedisOnlineStore(scoring_redis, project="scoretest")
        scorer = Scorer(models=models, store=store, device="cpu")
        try:
            keys = check_keys(model, {"user_id": [1]}, {"pin_id": list(range(50))})
            return (await scorer.fetch(model, keys)).group.batch
        finally:
            await scorer.close()
            await store.aclose()

    ready = asyncio.run(batch())
    expected = ModelRunner(torch.device("cpu"))(model, [ready])[0]
    with shared_model_host(serving, scoring_world.models, env) as address:
        assert env[MODEL_HOST_ENV] == address and env[KEY_ENV]
        backends = [scorer_options(serving, scoring_world.models, env)["backend"] for _ in range(2)]
        got: list[Any] = [None, None]

        def call(i: int) -> None:
            got[i] = [backends[i](model, [ready])[0] for _ in range(3)]

        threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for backend in backends:
            backend.close()
    assert MODEL_HOST_ENV not in env and KEY_ENV not in env
    for answers in got:
        assert answers is not None
        for scores in answers:
            torch.testing.assert_close(scores, expected)
    assert all(b.busy_s > 0 for b in backends)


def test_model_host_process_spawns_one_for_this_worker(scoring_world: ScoringWorld, clean_env: Any) -> None:
    options = scorer_options(ServingConfig(model_host="process", device="cpu", cache=True), scoring_world.models, {})
    backend = options["backend"]
    try:
        assert isinstance(backend, RemoteBackend) and backend.connected and backend.device == torch.device("cpu")
        assert options["cache"].enabled
    finally:
        backend.close()
    assert scorer_options(ServingConfig(), scoring_world.models, {})["backend"] is None      # '' : in process
