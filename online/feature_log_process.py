"""The feature logger of the HTTP services: the same ``FeatureLogger``, run in a child process.

Writing logs is Python work (building Arrow columns, pyiceberg commits). In the serving process it competes
with the event loop for the GIL, and a CPU-bound thread next to an I/O-bound one costs the I/O thread far more
than its share (each time the loop releases the GIL for a socket call it may wait a whole switch interval):
measured on the HTTP bench, 20-35 % of throughput at a 100 % sample rate. So the service only samples and
pickles a request (``quasar.online.feature_log.pack``) and hands the bytes to a sender thread that writes
them into a pipe; a child process (a fresh interpreter) unpickles them and runs a ``FeatureLogger`` that appends to
Iceberg. The bound holds end to end: ``max_queue`` counts every entity row submitted and not yet written or
failed, wherever it is (queue, pipe, child); past it rows are dropped and counted. Counts come back from the
child and reach ``stats`` and ``observe``. ``flush`` and ``close`` wait for the child; a child that dies is
counted as failed rows and never fails a request.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from quasar.online.feature_log import (
    FeatureLogger,
    LogStats,
    ServedVectors,
    layout_id,
    pack,
    sampled,
    tell,
    unpack,
)

log = logging.getLogger("quasar.feature_log")

_STOP = "stop"
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
#: How often the sender thread hands queued requests to the writer process.
SEND_EVERY_S = 0.05


def child_main(inbox_fd: int, outbox_fd: int) -> None:
    """The writer process (``python -c "...child_main(r, w)"``): its settings come first on ``inbox``, then
    requests; it logs them and reports counts on ``outbox``. It ignores SIGTERM and SIGINT, which reach the
    service's whole process group (a terminal's Ctrl-C, a supervisor's stop): it ends when the service says
    stop or goes away (its pipe closes), after writing what it holds."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)     # blocked since the start: pending ones drop
    inbox = Connection(inbox_fd, writable=False)
    outbox = Connection(outbox_fd, readable=False)
    catalog_factory, namespace, batch_rows, flush_interval_s = inbox.recv()
    lock = threading.Lock()

    def observe(event: str, rows: int) -> None:
        with lock:
            outbox.send(("count", event, rows))

    logger = FeatureLogger(catalog_factory, namespace, max_queue=2**62, batch_rows=batch_rows,
                           flush_interval_s=flush_interval_s, observe=observe)
    layouts: dict[int, ServedVectors] = {}
    try:
        while True:
            try:
                message = inbox.recv()
            except (EOFError, OSError):
                break                                   # the service is gone: write what we have
            if _handle(message[1], layouts, logger, lock, outbox):
                break
    finally:
        logger.close()
        with lock:
            outbox.send(("closed",))


def _handle(messages: list[tuple[Any, ...]], layouts: dict[int, ServedVectors], logger: FeatureLogger,
            lock: threading.Lock, outbox: Any) -> bool:
    """Apply one batch of messages in the child; True on the stop message."""
    for message in messages:
        kind = message[0]
        if kind == "layout":                    # sampled in the service already: the child logs all it gets
            layouts[message[1]] = dataclasses.replace(message[2], sample_rate=1.0)
        elif kind == "v":
            logger.submit(unpack(layouts[message[1]], message[2]))
        elif kind == "flush":
            logger.flush()
            with lock:
                outbox.send(("flushed", message[1]))
        elif kind == _STOP:
            return True
    return False


class ProcessFeatureLogger:
    """``FeatureLogger``'s interface (``submit``, ``flush``, ``close``, ``stats``, ``queued_rows``) with the
    writing in a child process. ``catalog_factory`` must be picklable (e.g. ``functools.partial`` of
    ``quasar.store.catalog.open_catalog``): the child opens the catalog."""

    def __init__(self, catalog_factory: Callable[[], Any], namespace: str, *, max_queue: int = 10_000,
                 batch_rows: int = 5_000, flush_interval_s: float = 1.0, seed: int | None = None,
                 observe: Callable[[str, int], None] | None = None) -> None:
        if max_queue <= 0:
            raise ValueError("max_queue must be positive")
        self.max_queue = max_queue
        self.stats = LogStats()
        self._observe = observe
        self._rng = random.Random(seed)
        self._cond = threading.Condition()
        self._queue: deque[tuple[Any, ...]] = deque()
        self._in_flight = 0                             # rows submitted, not yet logged or failed
        self._layouts: dict[tuple[Any, ...], int] = {}
        self._flushes: dict[int, threading.Event] = {}
        self._closing = False
        self._closed = threading.Event()
        self._spec = (catalog_factory, namespace, batch_rows, flush_interval_s)
        self._process: Any = None                       # started by the sender on the first message
        self._sender = threading.Thread(target=self._send_loop, name="quasar-feature-log-send", daemon=True)
        self._sender.start()

    def _start_child(self) -> None:
        """Start the writer process (in the sender thread, so no request waits for it) and the receiver. A
        fresh interpreter run with ``-c``, not multiprocessing's spawn, which would import the service's
        ``__main__`` again (a console script, a notebook) in the child."""
        inbox_read, inbox_write = os.pipe()
        outbox_read, outbox_write = os.pipe()
        code = (f"from quasar.online.feature_log_process import child_main; "
                f"child_main({inbox_read}, {outbox_write})")
        # The child inherits this thread's signal mask: with SIGTERM and SIGINT blocked from its first
        # instruction, a stop of the process group while it is still importing cannot kill it (it then ignores
        # them). Only this thread blocks them; Python handles signals in the main thread.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            self._process = subprocess.Popen([sys.executable, "-c", code], pass_fds=(inbox_read, outbox_write),
                                             stdin=subprocess.DEVNULL)
        finally:
            os.close(inbox_read)
            os.close(outbox_write)
        self._inbox = Connection(inbox_write, readable=False)
        self._outbox = Connection(outbox_read, writable=False)
        self._inbox.send(self._spec)
        threading.Thread(target=self._receive_loop, name="quasar-feature-log-recv", daemon=True).start()

    @property
    def queued_rows(self) -> int:
        return self._in_flight

    def submit(self, vectors: ServedVectors) -> bool:
        """Sample, pickle and queue a served request; False when not sampled or dropped (counted). Never
        blocks on I/O, never raises."""
        try:
            rows = vectors.rows
            if not sampled(self._rng, vectors):
                self._count("sampled_out", rows)
                return False
            payload = pack(vectors)
            key = layout_id(vectors)
            with self._cond:
                if self._closing or self._in_flight + rows > self.max_queue:
                    accepted = False
                else:
                    wake = not self._queue
                    layout = self._layouts.get(key)
                    if layout is None:
                        layout = self._layouts[key] = len(self._layouts)
                        self._queue.append(("layout", layout, vectors))
                    self._queue.append(("v", layout, payload))
                    self._in_flight += rows
                    self.stats.peak_queued_rows = max(self.stats.peak_queued_rows, self._in_flight)
                    accepted = True
                    if wake:                       # the sender sleeps until there is something to send
                        self._cond.notify()
            if not accepted:
                self._count("dropped", rows)
            return accepted
        except Exception as exc:  # a request must never fail for its log
            log.warning("feature log: a served request could not be queued: %s: %s", type(exc).__name__, exc)
            return False

    def flush(self, timeout_s: float | None = None) -> None:
        """Return once everything submitted so far is written (or failed), or after ``timeout_s``."""
        done = threading.Event()
        with self._cond:
            if self._closing:
                return
            token = len(self._flushes) + 1
            self._flushes[token] = done
            self._queue.append(("flush", token))
            self._cond.notify()
        done.wait(timeout_s)

    def close(self, timeout_s: float | None = 60.0) -> None:
        """Write what is queued, then stop the child; later submits are dropped."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._queue.append((_STOP,))
            self._cond.notify()
        self._closed.wait(timeout_s)
        if self._process is not None:
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> ProcessFeatureLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- threads ----------------------------------------------------------------------------------------
    def _count(self, event: str, rows: int) -> None:
        with self._cond:
            self.stats.add(event, rows)
            if event in ("logged", "failed"):
                self._in_flight = max(0, self._in_flight - rows)
        tell(self._observe, event, rows)

    def _send_loop(self) -> None:
        """Send what is queued in one message every ``SEND_EVERY_S`` (one pickle, one pipe write for many
        requests): a thread woken per request would take the GIL from the event loop a thousand times a
        second."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue))
            time.sleep(SEND_EVERY_S)
            with self._cond:
                messages = list(self._queue)
                self._queue.clear()
            stop = any(m[0] == _STOP for m in messages)
            try:
                if self._process is None:
                    if stop and len(messages) == 1:              # never used: nothing to write
                        self._closed.set()
                        return
                    self._start_child()
                self._inbox.send(("batch", messages))
            except Exception as exc:                              # the child is gone, or never started
                self._lost(exc)
                return
            if stop:
                return

    def _receive_loop(self) -> None:
        try:
            while True:
                message = self._outbox.recv()
                if message[0] == "count":
                    self._count(message[1], message[2])
                elif message[0] == "flushed":
                    self._flushes.pop(message[1], threading.Event()).set()
                elif message[0] == "closed":
                    break
        except (EOFError, OSError) as exc:
            self._lost(exc)
        finally:
            self._closed.set()
            for event in list(self._flushes.values()):
                event.set()

    def _lost(self, exc: BaseException) -> None:
        """The child died: what it held is failed, counted; later submits are dropped."""
        with self._cond:
            lost, self._closing = self._in_flight, True
        if lost:
            log.warning("feature log: the writer process ended (%s); %d row(s) not written", exc, lost)
            self._count("failed", lost)
        self._closed.set()
