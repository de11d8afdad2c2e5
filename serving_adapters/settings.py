"""The scorer's options from ``[serving]`` and ``quasar score-serve``'s flags: the candidate cache and the model host.

``[serving]`` keys (``quasar.config.ServingConfig``)::

    cache = false                # the in-process candidate cache (quasar.serving_adapters.cache)
    cache_max_entries = 100000   # its bound
    cache_ttl_s = 2.0            # how long a read candidate record is served from it
    model_host = ""              # where the model runs: "" in each worker (a thread), "process" a model host
                                 # process per worker, "shared" one model host process that every worker of
                                 # this score-serve feeds, "HOST:PORT" a model host elsewhere
                                 # (python -m quasar.serving_adapters.model_host, the key in
                                 # $QUASAR_MODEL_HOST_KEY; the device it names is [serving] device,
                                 # by default cuda when this machine has one)

``quasar score-serve --cache/--no-cache --model-host WHERE`` override them. Worker processes are spawned by
uvicorn and build their own app from the project, so the flags reach them in the environment
(``flag_environment``: ``$QUASAR_SCORER_CACHE``, ``$QUASAR_SCORER_MODEL_HOST``), read by ``scorer_options``.
A "shared" model host is started once, by ``shared_model_host`` around the server, on a free local port
with a fresh key; the workers find it in the environment as a ``HOST:PORT`` host.

Bad values are a ``ConfigError`` naming the key or flag, raised before any worker starts.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import socket
import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from quasar.serving_adapters.cache import CacheConfig
from quasar.signals.errors import ConfigError, QuasarError

CACHE_ENV = "QUASAR_SCORER_CACHE"
MODEL_HOST_ENV = "QUASAR_SCORER_MODEL_HOST"
#: what ``model_host`` takes besides ``HOST:PORT``
IN_PROCESS, PER_WORKER, SHARED = "", "process", "shared"


class ServingKeys(Protocol):
    """What this module reads of ``[serving]`` (``quasar.config.ServingConfig``, frozen: read-only here)."""

    @property
    def device(self) -> str: ...
    @property
    def cache(self) -> bool: ...
    @property
    def cache_max_entries(self) -> int: ...
    @property
    def cache_ttl_s(self) -> float: ...
    @property
    def model_host(self) -> str: ...


@dataclass(frozen=True)
class ScorerSettings:
    """The effective cache and model host of a scorer (config, then flags)."""

    cache: CacheConfig
    model_host: str               # IN_PROCESS, PER_WORKER, SHARED or "HOST:PORT"


def parse_address(value: str, where: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ConfigError naming ``where`` otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: {value!r} is not '', 'process', 'shared' or HOST:PORT of a model host")
    return host, int(port)


def check_model_host(value: str, where: str) -> str:
    if value not in (IN_PROCESS, PER_WORKER, SHARED):
        parse_address(value, where)
    return value


def flag_environment(*, cache: bool | None, model_host: str | None) -> dict[str, str]:
    """The environment that carries ``quasar score-serve``'s flags to its workers (only the flags given)."""
    env: dict[str, str] = {}
    if cache is not None:
        env[CACHE_ENV] = "1" if cache else "0"
    if model_host is not None:
        env[MODEL_HOST_ENV] = check_model_host(model_host, "--model-host")
    return env


def scorer_settings(serving: ServingKeys, environ: Mapping[str, str] | None = None) -> ScorerSettings:
    """``[serving]``'s cache and model host, with the flags in ``environ`` (default: ``os.environ``) on top."""
    env = os.environ if environ is None else environ
    enabled = serving.cache
    flag = env.get(CACHE_ENV)
    if flag is not None:
        if flag not in ("0", "1"):
            raise ConfigError(f"${CACHE_ENV} must be 0 or 1, got {flag!r}")
        enabled = flag == "1"
    try:
        cache = CacheConfig(enabled=enabled, max_entries=serving.cache_max_entries, ttl_s=serving.cache_ttl_s)
    except QuasarError as exc:
        raise ConfigError(f"[serving] {exc}") from exc
    host = env.get(MODEL_HOST_ENV)
    model_host = check_model_host(host, f"${MODEL_HOST_ENV}") if host is not None else \
        check_model_host(serving.model_host, "[serving] model_host")
    return ScorerSettings(cache, model_host)


def scorer_options(serving: ServingKeys, models_folder: str | Path,
                   environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``create_scoring_app``'s ``cache`` and ``backend`` for this worker (a model host started or reached now)."""
    from quasar.serving_adapters.device import choose_device
    from quasar.serving_adapters.model_host import KEY_ENV, RemoteBackend
    env = os.environ if environ is None else environ
    settings = scorer_settings(serving, env)
    backend: Any = None
    if settings.model_host == PER_WORKER:
        backend = RemoteBackend.spawn(models_folder, device=serving.device or None)
    elif settings.model_host == SHARED:
        raise ConfigError("model_host 'shared' is started by quasar score-serve around its workers; an app built "
                          "alone takes '', 'process' or HOST:PORT")
    elif settings.model_host:
        key = env.get(KEY_ENV, "")
        if not key:
            raise ConfigError(f"model_host {settings.model_host!r}: set ${KEY_ENV} to the model host's key")
        backend = RemoteBackend.connect(parse_address(settings.model_host, "model_host"), authkey=key.encode(),
                                        device=serving.device or str(choose_device(None)))
    return {"cache": settings.cache, "backend": backend}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def shared_model_host(serving: ServingKeys, models_folder: str | Path,
                      environ: MutableMapping[str, str] | None = None, *, ready_s: float = 60.0) -> Iterator[str]:
    """When the effective ``model_host`` is "shared": one model host process on a free local port with a fresh
    key, named to the workers in ``environ`` (default ``os.environ``) as a ``HOST:PORT`` host, stopped on
    exit. Yields the model host setting the workers see ('' etc. unchanged when not "shared")."""
    from quasar.serving_adapters.model_host import KEY_ENV, serve_listening
    env = os.environ if environ is None else environ
    settings = scorer_settings(serving, env)
    if settings.model_host != SHARED:
        yield settings.model_host
        return
    port, key = _free_port(), secrets.token_hex(16)
    ctx = multiprocessing.get_context("spawn")
    process = ctx.Process(target=serve_listening, args=(("127.0.0.1", port), key.encode(), str(models_folder),
                                                        serving.device or None, None),
                          name="quasar-model-host", daemon=True)
    process.start()
    deadline = time.monotonic() + ready_s
    while True:                               # answering before any worker connects
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if not process.is_alive() or time.monotonic() > deadline:
                process.kill()
                raise ConfigError(f"the shared model host did not start (exit code {process.exitcode})") from None
            time.sleep(0.05)
    saved = {k: env.get(k) for k in (MODEL_HOST_ENV, KEY_ENV)}
    address = f"127.0.0.1:{port}"
    env[MODEL_HOST_ENV], env[KEY_ENV] = address, key
    try:
        yield address
    finally:
        for k, v in saved.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        process.terminate()
        process.join(5)
        if process.is_alive():
            process.kill()
