"""The model side of the scorer in a process (or on a host) of its own: CPU feature hosts feed a model host.

The scoring service (HTTP, feature fetch, FeatureBatch: the CPU side) sends each batched model call to a
model host and waits for its scores; the model host runs the bundle on its device with the ``ModelRunner``
and nothing else, so its device is never held up by the feature host's Python (one event loop, one GIL), and
one device can serve several feature-host processes or machines.

* ``RemoteBackend.spawn(models_folder, device=...)``: a model host in a child process on this machine (over a
  pipe), started now, stopped with the scorer (``Scorer.close``) or ``close()``; ``ModelRunner``'s arguments (device, CPU threads)
  apply there.
* ``RemoteBackend.connect((host, port), authkey=...)``: a model host running elsewhere, started with
  ``python -m quasar.serving_adapters.model_host --listen HOST:PORT --models FOLDER [--device cuda]`` and
  the key in ``$QUASAR_MODEL_HOST_KEY`` (connections without it are refused). Both sides must hold the same
  bundle folder (the host loads the bundle the feature host names, and refuses another version of it).

A call is one message each way (``multiprocessing.connection``, pickled: feature and model hosts trust each
other, as the key makes them prove); a model host runs one call at a time, in arrival order, and counts the
seconds its device was busy (``busy_s`` in each answer, summed by ``RemoteBackend.busy_s``). A model host
that dies (or answers nothing within ``call_timeout_s``) fails the call in flight with ServingError, and the
next call starts a new one (spawned) or connects again.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

import torch

from quasar.serving_adapters.bundle import load_bundle
from quasar.serving_adapters.device import choose_device
from quasar.serving_adapters.models import LoadedModel
from quasar.serving_adapters.runner import ModelRunner, ScorerBackend
from quasar.signals.errors import ServingError
from quasar.signals.ufr.tensors import FeatureBatch, IdListTensor

KEY_ENV = "QUASAR_MODEL_HOST_KEY"


def to_wire(batch: FeatureBatch) -> tuple[Any, ...]:
    """A CPU FeatureBatch as numpy arrays and lists (what crosses to the model host): numpy arrays pickle as
    one copy of their bytes, torch tensors through torch's storage machinery (5-10x slower at 800 rows)."""
    def arrays(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {k: v.numpy() for k, v in tensors.items()}

    bags = {k: (v.values.numpy(), v.offsets.numpy(), None if v.weights is None else v.weights.numpy())
            for k, v in batch.id_lists.items()}
    return (batch.size, batch.dense.numpy(), list(batch.dense_names), batch.dense_mask.numpy(),
            arrays(batch.scalars), arrays(batch.vectors), bags, batch.strings, arrays(batch.masks))


def from_wire(wired: tuple[Any, ...]) -> FeatureBatch:
    """``to_wire``'s FeatureBatch again (the tensors share the unpickled arrays' memory)."""
    size, dense, names, dense_mask, scalars, vectors, bags, strings, masks = wired

    def tensors(arrays: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v) for k, v in arrays.items()}

    id_lists = {k: IdListTensor(values=torch.from_numpy(v), offsets=torch.from_numpy(o),
                                weights=None if w is None else torch.from_numpy(w)) for k, (v, o, w) in bags.items()}
    return FeatureBatch(size=size, dense=torch.from_numpy(dense), dense_names=names,
                        dense_mask=torch.from_numpy(dense_mask), scalars=tensors(scalars), vectors=tensors(vectors),
                        id_lists=id_lists, strings=strings, masks=tensors(masks))


class _Host:
    """The model host's state: its runner, its bundles (by name and creation time), its busy seconds."""

    def __init__(self, models_folder: str | Path, device: str | None, cpu_threads: int | None) -> None:
        self.folder = Path(models_folder)
        self.runner = ModelRunner(choose_device(device), cpu_threads=cpu_threads)
        self.models: dict[tuple[str, str], LoadedModel] = {}
        self.lock = threading.Lock()         # one call at a time on the device, whoever sent it

    def model(self, name: str, created_at: str) -> LoadedModel:
        found = self.models.get((name, created_at))
        if found is None:
            bundle = load_bundle(self.folder, name)
            if bundle.spec.created_at != created_at:
                raise ServingError(f"the model host holds bundle {name!r} created at {bundle.spec.created_at}, "
                                   f"not the one created at {created_at} that the feature host serves")
            found = self.models[(name, created_at)] = LoadedModel(name, bundle, (), (), None, None)
        return found

    def call(self, message: bytes) -> bytes:
        try:
            name, created_at, wired = pickle.loads(message)
            batches = [from_wire(w) for w in wired]
            with self.lock:
                model = self.model(name, created_at)
                started = time.perf_counter()
                scores = self.runner(model, batches)
                busy = time.perf_counter() - started
            return pickle.dumps(("ok", [s.numpy() for s in scores], busy), protocol=5)
        except Exception as exc:             # the feature host raises it as a ServingError
            return pickle.dumps(("error", type(exc).__name__, str(exc)), protocol=5)

    def serve(self, conn: Connection) -> None:
        """Answer ``conn``'s calls until it closes."""
        with conn:
            while True:
                try:
                    message = conn.recv_bytes()
                except (EOFError, OSError):
                    return
                conn.send_bytes(self.call(message))


def _serve_pipe(conn: Connection, models_folder: str, device: str | None, cpu_threads: int | None) -> None:
    """A spawned model host's main: one pipe, until the feature host closes it."""
    _Host(models_folder, device, cpu_threads).serve(conn)


class RemoteBackend(ScorerBackend):
    """A ``ScorerBackend`` that runs every model call on a model host (see the module doc)."""

    def __init__(self, connect: Any, device: torch.device, *, call_timeout_s: float = 60.0) -> None:
        self._connect = connect          # () -> (Connection, process or None)
        self.device = device
        self.call_timeout_s = call_timeout_s
        self.busy_s = 0.0                # device-busy seconds the model host reported
        self._conn: Connection | None = None
        self._process: Any = None
        self._lock = threading.Lock()
        self._open()

    @classmethod
    def spawn(cls, models_folder: str | Path, *, device: str | None = None,
              cpu_threads: int | None = None) -> RemoteBackend:
        """A model host in a child process of this machine, on ``device`` (default: cuda when available)."""
        chosen = choose_device(device)
        ctx = multiprocessing.get_context("spawn")

        def connect() -> tuple[Connection, Any]:
            mine, theirs = ctx.Pipe()
            process = ctx.Process(target=_serve_pipe, args=(theirs, str(models_folder), str(chosen), cpu_threads),
                                  name="quasar-model-host", daemon=True)
            process.start()
            theirs.close()
            return mine, process

        return cls(connect, chosen)

    @classmethod
    def connect(cls, address: tuple[str, int], *, authkey: bytes, device: str = "cuda") -> RemoteBackend:
        """A model host listening at ``address`` (``python -m quasar.serving_adapters.model_host``)."""
        def connect() -> tuple[Connection, Any]:
            try:
                return Client(address, authkey=authkey), None
            except (OSError, EOFError, multiprocessing.AuthenticationError) as exc:
                raise ServingError(f"the model host at {address[0]}:{address[1]} cannot be reached: "
                                   f"{type(exc).__name__}: {exc}") from exc

        return cls(connect, torch.device(device))

    @property
    def connected(self) -> bool:
        """Whether a model host is attached now (the next call starts or reaches one otherwise)."""
        return self._conn is not None

    def _open(self) -> Connection:
        if self._conn is None:
            self._conn, self._process = self._connect()
        return self._conn

    def __call__(self, model: LoadedModel, batches: list[FeatureBatch]) -> list[torch.Tensor]:
        message = pickle.dumps((model.name, model.spec.created_at, [to_wire(b) for b in batches]), protocol=5)
        with self._lock:
            conn = self._open()
            try:
                conn.send_bytes(message)
                if not conn.poll(self.call_timeout_s):
                    raise TimeoutError(f"no answer within {self.call_timeout_s:g} s")
                answer = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError) as exc:      # the host is gone (or stuck): the next call starts afresh
                self._drop()
                raise ServingError(f"the model host went away during a call of model {model.name!r}: "
                                   f"{type(exc).__name__}: {exc}") from exc
        if answer[0] != "ok":
            raise ServingError(f"the model host failed model {model.name!r}: {answer[1]}: {answer[2]}")
        self.busy_s += answer[2]
        return [torch.from_numpy(s) for s in answer[1]]

    def _drop(self) -> None:
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if conn is not None:
            conn.close()
        if process is not None:
            process.join(5)
            if process.is_alive():
                process.kill()

    def close(self) -> None:
        """Stop the model host (a spawned one exits when its pipe closes)."""
        with self._lock:
            self._drop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quasar.serving_adapters.model_host", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept feature hosts on")
    parser.add_argument("--models", required=True, help="the bundle folder (the feature hosts' [serving] models)")
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    parser.add_argument("--cpu-threads", type=int, default=None, help="torch intra-op threads on the CPU")
    args = parser.parse_args(argv)
    key = os.environ.get(KEY_ENV, "")
    if not key:
        parser.error(f"set ${KEY_ENV}: feature hosts prove they hold it before anything is unpickled")
    host_name, _, port = args.listen.rpartition(":")
    serve_listening((host_name or "127.0.0.1", int(port)), key.encode(), args.models, args.device, args.cpu_threads,
                    announce=True)
    return 0


def serve_listening(address: tuple[str, int], authkey: bytes, models_folder: str, device: str | None,
                    cpu_threads: int | None, *, announce: bool = False) -> None:
    """A model host accepting feature hosts at ``address`` (each connection its own thread, one call at a time
    on the device), until the process ends: ``main``'s loop, and the one ``quasar score-serve``'s workers share
    (``quasar.serving_adapters.settings.shared_model_host``)."""
    host = _Host(models_folder, device, cpu_threads)
    with Listener(address, authkey=authkey) as listener:
        if announce:
            print(f"model host on {host.runner.device}, listening on {address[0]}:{address[1]}", flush=True)
        while True:
            try:
                conn = listener.accept()
            except (OSError, EOFError, multiprocessing.AuthenticationError):   # without the key: refused
                continue
            threading.Thread(target=host.serve, args=(conn,), daemon=True, name="quasar-model-host-conn").start()


if __name__ == "__main__":
    raise SystemExit(main())
