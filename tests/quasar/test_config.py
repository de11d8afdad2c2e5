"""quasar.toml: defaults, file values, environment overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from quasar.config import DEFAULT_TOML, load_config
from quasar.errors import ConfigError, NotFoundError, OnlineUnavailableError, QuasarError, http_status


def test_no_file_gives_embedded_defaults(tmp_path: Path) -> None:
    cfg = load_config(tmp_path, env={})
    assert cfg.registry.url == "sqlite:///.quasar/registry.db"
    assert cfg.sql_url(cfg.registry.url) == f"sqlite:///{tmp_path.resolve()}/.quasar/registry.db"
    assert cfg.warehouse == str(tmp_path.resolve() / ".quasar/warehouse")
    assert cfg.online.redis_url == "redis://127.0.0.1:6379/0"
    assert cfg.engine.default == "local" and cfg.spark.master == "local[*]"


def test_default_toml_parses_to_the_defaults(tmp_path: Path) -> None:
    (tmp_path / "quasar.toml").write_text(DEFAULT_TOML.format(name="p"))
    cfg = load_config(tmp_path, env={})
    assert cfg == load_config(tmp_path, env={})
    assert cfg.project.name == "p" and cfg.offline.namespace == "signals"


def test_file_values_and_environment_overrides(tmp_path: Path) -> None:
    (tmp_path / "quasar.toml").write_text('[online]\nredis_url = "redis://h:1/2"\n[engine]\ndefault = "spark"\n'
                                          '[offline]\nwarehouse = "/abs/wh"\n')
    cfg = load_config(tmp_path, env={})
    assert cfg.online.redis_url == "redis://h:1/2" and cfg.engine.default == "spark" and cfg.warehouse == "/abs/wh"
    env = {"QUASAR_REDIS_URL": "redis://env:3/0", "QUASAR_REGISTRY_URL": "postgresql+psycopg://x/y",
           "QUASAR_CATALOG_URI": "sqlite:////tmp/c.db", "QUASAR_WAREHOUSE": "s3://b/w"}
    cfg = load_config(tmp_path, env=env)
    assert cfg.online.redis_url == "redis://env:3/0"
    assert cfg.registry.url == "postgresql+psycopg://x/y"
    assert cfg.offline.catalog_uri == "sqlite:////tmp/c.db" and cfg.warehouse == "s3://b/w"


@pytest.mark.parametrize(("text", "needle"), [
    ("[online\n", "invalid TOML"),
    ("[nope]\n", "unknown section(s) nope"),
    ("[online]\nredis = 1\n", "unknown key(s) redis in [online]"),
    ("[offline]\nbuckets = 'many'\n", "[offline] buckets must be int"),
])
def test_bad_config_names_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "quasar.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, env={})
    assert needle in str(info.value)


def test_errors_share_one_root_and_map_to_status_codes() -> None:
    assert issubclass(ConfigError, QuasarError)
    assert http_status(NotFoundError("x")) == 422
    assert http_status(OnlineUnavailableError("x")) == 503
    assert http_status(QuasarError("x")) == 500
