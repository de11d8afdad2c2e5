"""``quasar.toml``: every field has a default, so an empty file (or none) works on one machine.

Environment variables ``QUASAR_REDIS_URL``, ``QUASAR_REGISTRY_URL``, ``QUASAR_CATALOG_URI`` and
``QUASAR_WAREHOUSE`` override the file. Relative SQLite and warehouse paths resolve against the project root.

``[engine]`` ``memory_limit`` and ``temp_directory`` are the local engine's DuckDB settings: past the limit
DuckDB spills to the folder (relative to the project root), so datasets and backfills larger than memory run.

``[time]`` holds the bounds of the event and created times every write path accepts (``quasar.signals.bounds``):
``earliest`` (an ISO-8601 time, default ``"1970-01-01T00:00:00Z"``) and ``max_future`` (how far ahead of the
clock, default ``"1d"``).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from quasar.signals.bounds import TimeBounds
from quasar.signals.errors import ConfigError

_MEMORY = re.compile(r"(?:0*[1-9]\d*(?:\.\d+)?|0*\.\d*[1-9]\d*)\s*(?:[KMGT]i?B|B|%)", re.IGNORECASE)

CONFIG_FILE = "quasar.toml"
ENV_OVERRIDES = {
    "QUASAR_REDIS_URL": ("online", "redis_url"),
    "QUASAR_REGISTRY_URL": ("registry", "url"),
    "QUASAR_CATALOG_URI": ("offline", "catalog_uri"),
    "QUASAR_WAREHOUSE": ("offline", "warehouse"),
}


@dataclass(frozen=True, kw_only=True)
class ProjectConfig:
    name: str = "quasar"                                   # prefix of every online key


@dataclass(frozen=True, kw_only=True)
class RegistryConfig:
    url: str = "sqlite:///.quasar/registry.db"
    run_lease: str = "60s"                                 # a run not heard from for this long is abandoned


@dataclass(frozen=True, kw_only=True)
class OfflineConfig:
    catalog_uri: str = "sqlite:///.quasar/catalog.db"
    warehouse: str = ".quasar/warehouse"
    namespace: str = "signals"
    buckets: int = 0                                       # key buckets per day; 0: chosen from the data
    target_file_mb: int = 128                              # data file size the layout and compaction aim at
    properties: dict[str, str] = field(default_factory=dict)   # extra pyiceberg catalog properties
    snapshot_retention: str = "7d"                         # quasar gc expires older snapshots (see README)
    orphan_grace: str = "1h"                               # unreferenced files younger than this are never removed


@dataclass(frozen=True, kw_only=True)
class OnlineConfig:
    redis_url: str = "redis://127.0.0.1:6379/0"
    cluster: bool = False
    max_entities: int = 1000                               # per request; more -> 413
    auth_tokens: tuple[str, ...] = ()                      # bearer tokens; empty -> no auth
    read_timeout: float = 0.5                              # seconds a read waits for Redis, then 503
    write_timeout: float = 2.0                             # seconds a write round trip (push) waits for Redis
    connect_timeout: float = 1.0                           # seconds to connect to Redis
    max_body_bytes: int = 4 * 1024 * 1024                  # request bodies of both services; more -> 413


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    default: str = "local"
    threads: int = 0                                       # DuckDB threads; 0 -> DuckDB's default
    memory_limit: str = ""                                 # DuckDB's cap ("2GB", "50%"); past it, it spills
    temp_directory: str = ""                               # where DuckDB spills; empty -> DuckDB's default

    def check(self) -> None:
        """ConfigError for a memory limit DuckDB would misread (it takes ``-1GB`` as no limit at all)."""
        if self.threads < 0:
            raise ConfigError(f"[engine] threads must be 0 (DuckDB's default) or more, got {self.threads}")
        if self.memory_limit and not _MEMORY.fullmatch(self.memory_limit.strip()):
            raise ConfigError(f"[engine] memory_limit must be a positive size such as \"2GB\", \"512MiB\" or "
                              f"\"50%\" (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), got {self.memory_limit!r}")


@dataclass(frozen=True, kw_only=True)
class SparkConfig:
    master: str = "local[*]"
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ServingConfig:
    models: str = "models"                                 # folder of model bundles
    max_batch_rows: int = 4096
    max_wait_ms: float = 2.0
    batching: bool = True                                  # coalesce concurrent requests into one model call
    device: str = ""                                       # "cuda", "cpu"; empty -> cuda when available
    cache: bool = False                                    # the in-process candidate cache (quasar.serving_adapters.cache)
    cache_max_entries: int = 100_000
    cache_ttl_s: float = 2.0
    model_host: str = ""                                   # "", "process", "shared" or HOST:PORT (serving_adapters.settings)


@dataclass(frozen=True, kw_only=True)
class LoggingConfig:
    """Feature logging of serve and score-serve (services that declare ``logging``)."""

    max_queue_rows: int = 200_000                          # entity rows waiting to be written; more are dropped
    batch_rows: int = 50_000                               # rows per Iceberg commit at most
    flush_interval_s: float = 10.0                         # and at least one commit this often while rows wait


@dataclass(frozen=True, kw_only=True)
class TimeConfig:
    earliest: str = "1970-01-01T00:00:00Z"                 # no event time before this is written
    max_future: str = "1d"                                 # nor an event or created time this far after now

    def bounds(self) -> TimeBounds:
        """The bounds as ``quasar.signals.bounds`` checks them; ConfigError for a value that does not parse."""
        return TimeBounds.parse(self.earliest, self.max_future, error=ConfigError)


@dataclass(frozen=True, kw_only=True)
class Config:
    root: Path
    project: ProjectConfig = ProjectConfig()
    registry: RegistryConfig = RegistryConfig()
    offline: OfflineConfig = OfflineConfig()
    online: OnlineConfig = OnlineConfig()
    engine: EngineConfig = EngineConfig()
    spark: SparkConfig = SparkConfig()
    serving: ServingConfig = ServingConfig()
    time: TimeConfig = TimeConfig()
    logging: LoggingConfig = LoggingConfig()

    def path(self, value: str) -> Path:
        """A path from the config, resolved against the project root."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.root / p

    def sql_url(self, url: str) -> str:
        """A SQLAlchemy URL with a relative ``sqlite:///`` path resolved against the root."""
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
            return prefix + str(self.path(url[len(prefix):]))
        return url

    @property
    def time_bounds(self) -> TimeBounds:
        """The event and created times every write path accepts (``[time]``)."""
        return self.time.bounds()

    @property
    def warehouse(self) -> str:
        w = self.offline.warehouse
        return w if "://" in w else str(self.path(w))


_SECTIONS: dict[str, type] = {
    "project": ProjectConfig, "registry": RegistryConfig, "offline": OfflineConfig, "online": OnlineConfig,
    "engine": EngineConfig, "spark": SparkConfig, "serving": ServingConfig, "time": TimeConfig,
    "logging": LoggingConfig,
}


def _section(name: str, cls: type, data: Any, source: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)} in [{name}]; known: {', '.join(known)}")
    values: dict[str, Any] = {}
    default = cls()
    for key, value in data.items():
        expected = type(getattr(default, key))
        if expected is tuple and isinstance(value, list):
            value = tuple(value)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"{source}: [{name}] {key} must be {expected.__name__}, got {value!r}")
        values[key] = value
    return cls(**values)


def find_project_root(start: str | Path = ".") -> Path:
    """The nearest folder at or above ``start`` that holds a ``quasar.toml``, like git looks for ``.git``.

    Why: a command run in a subfolder of a project (``myproject/signals/``) must use that project, and one run
    outside any project must say so instead of making a stray one. ConfigError when there is none.
    """
    here = Path(start).expanduser().resolve()
    if here.is_file():
        here = here.parent
    for folder in (here, *here.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder
    raise ConfigError(f"not a quasar project: no {CONFIG_FILE} in {here} or any folder above it (run "
                      f"`quasar init` to create one, or name the project with -C DIR)")


def load_config(root: str | Path = ".", env: dict[str, str] | None = None) -> Config:
    """Read ``<root>/quasar.toml`` (if present), apply environment overrides, return the config."""
    root_path = Path(root).expanduser().resolve()
    if root_path.is_file():
        root_path = root_path.parent
    file = root_path / CONFIG_FILE
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = tomllib.loads(file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: invalid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{file}: unknown section(s) {', '.join(unknown)}; known: {', '.join(_SECTIONS)}")
    config = Config(root=root_path, **{n: _section(n, c, data.get(n, {}), str(file)) for n, c in _SECTIONS.items()})
    environ = os.environ if env is None else env
    for var, (section, key) in ENV_OVERRIDES.items():
        if environ.get(var):
            config = replace(config, **{section: replace(getattr(config, section), **{key: environ[var]})})
    try:
        config.time.bounds()
        config.engine.check()
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from exc
    return config


DEFAULT_TOML = """\
# quasar project configuration. Every field has a default; delete what you do not change.

[project]
name = "{name}"                                   # prefix of online keys: <project>:<entity>:<key>

[registry]
url = "sqlite:///.quasar/registry.db"           # or postgresql+psycopg://user@host/db

[offline]
catalog_uri = "sqlite:///.quasar/catalog.db"    # pyiceberg SqlCatalog; REST/Glue/Hive through [offline.properties]
warehouse = ".quasar/warehouse"                 # or s3://bucket/path
namespace = "signals"

[online]
redis_url = "redis://127.0.0.1:6379/0"          # rediss:// for TLS, redis://:password@host for auth

[engine]
default = "local"                               # or "spark"

[spark]
master = "local[*]"

[serving]
models = "models"                               # folder of model bundles for quasar score-serve
"""
