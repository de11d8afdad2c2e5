"""Dynamic batching: concurrent submissions for one model become one call, run in one worker thread.

Each model has a lane (a queue and a task on the event loop). The lane takes the oldest waiting
submission, then keeps taking more until ``max_batch_rows`` rows are gathered or ``max_wait_ms`` has
passed since that oldest one arrived (with ``more_coming``, only while ``more_coming(key)`` says more
submissions are on their way: the scorer's fetch of more requests of that model); it then runs
``run(key, items)`` in the single worker thread and hands each submission exactly its own result. While a call runs, new submissions queue up, so under load
batches grow by themselves and at low load a request waits at most ``max_wait_ms``. A submission larger
than ``max_batch_rows`` runs alone. With ``enabled=False`` every submission runs alone (benchmarks).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from quasar.signals.errors import ServingError

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")


@dataclass(frozen=True)
class CallInfo:
    """How one submission was run: its wait, the shared call's duration, and the batch it rode in."""

    queue_s: float         # from submission to the start of the call
    call_s: float          # duration of the call (shared by every submission in the batch)
    batch_items: int       # requests in the call (a submission may stand for several: ``submit(requests=)``)
    batch_rows: int


@dataclass
class _Pending(Generic[I, R]):
    item: I
    rows: int
    requests: int
    future: asyncio.Future[tuple[R, CallInfo]]
    submitted: float


class _Lane(Generic[K, I, R]):
    """The queue of one key and the task that drains it."""

    def __init__(self) -> None:
        self.queue: deque[_Pending[I, R]] = deque()
        self.rows = 0
        self.arrived = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class DynamicBatcher(Generic[K, I, R]):
    """Coalesce ``submit(key, item, rows)`` calls into ``run(key, items) -> results`` calls (same order)."""

    def __init__(self, run: Callable[[K, list[I]], Sequence[R]], *, max_batch_rows: int = 4096,
                 max_wait_ms: float = 2.0, enabled: bool = True,
                 on_call: Callable[[K, CallInfo], None] | None = None,
                 more_coming: Callable[[K], bool] | None = None) -> None:
        if max_batch_rows < 1:
            raise ServingError(f"max_batch_rows must be at least 1, got {max_batch_rows}")
        if max_wait_ms < 0:
            raise ServingError(f"max_wait_ms must not be negative, got {max_wait_ms}")
        self.run = run
        self.max_batch_rows = max_batch_rows
        self.max_wait_s = max_wait_ms / 1000.0
        self.enabled = enabled
        self.on_call = on_call
        self.more_coming = more_coming
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quasar-scorer")
        self._lanes: dict[K, _Lane[K, I, R]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, key: K, item: I, rows: int, requests: int = 1) -> tuple[R, CallInfo]:
        """Queue ``item`` (``rows`` rows, standing for ``requests`` requests) for ``key``'s next call; return its
        result and how it ran."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:      # a new event loop (e.g. a new test): lanes of the old one are gone
            self._loop, self._lanes = loop, {}
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        if lane.task is None or lane.task.done():
            lane.task = loop.create_task(self._drain(key, lane), name=f"quasar-batcher-{key!r}")
        pending: _Pending[I, R] = _Pending(item, rows, requests, loop.create_future(), time.perf_counter())
        lane.queue.append(pending)
        lane.rows += rows
        lane.arrived.set()
        return await pending.future

    async def close(self) -> None:
        """Stop the lanes and the worker thread; waiting submissions fail with ServingError."""
        for lane in self._lanes.values():
            if lane.task is not None:
                lane.task.cancel()
            for pending in lane.queue:
                if not pending.future.done():
                    pending.future.set_exception(ServingError("the scorer is shutting down"))
        self._lanes = {}
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _drain(self, key: K, lane: _Lane[K, I, R]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not lane.queue:
                lane.arrived.clear()
                await lane.arrived.wait()
                continue
            if self.enabled:
                await self._gather(key, lane)
            batch = self._take(lane)
            if not batch:
                continue
            try:
                results, started, call_s = await loop.run_in_executor(self._executor, self._call, key,
                                                                      [p.item for p in batch])
                if len(results) != len(batch):
                    raise ServingError(f"model call for {key!r} returned {len(results)} results for "
                                       f"{len(batch)} requests")
            except asyncio.CancelledError:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(ServingError("the scorer is shutting down"))
                raise
            except Exception as exc:       # every waiter of the batch hears about the failure
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            rows = sum(p.rows for p in batch)
            requests = sum(p.requests for p in batch)
            for p, result in zip(batch, results, strict=True):
                if not p.future.done():
                    p.future.set_result((result, CallInfo(max(started - p.submitted, 0.0), call_s, requests, rows)))
            if self.on_call is not None:
                self.on_call(key, CallInfo(max(started - batch[0].submitted, 0.0), call_s, requests, rows))

    async def _gather(self, key: K, lane: _Lane[K, I, R]) -> None:
        """Wait until the lane holds a full batch, its oldest submission has waited ``max_wait_s``, or nothing
        more is coming."""
        deadline = lane.queue[0].submitted + self.max_wait_s
        while lane.rows < self.max_batch_rows:
            if self.more_coming is not None and not self.more_coming(key):
                return
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            lane.arrived.clear()
            try:
                await asyncio.wait_for(lane.arrived.wait(), left)
            except TimeoutError:
                return

    def _take(self, lane: _Lane[K, I, R]) -> list[_Pending[I, R]]:
        """The next batch: at least one submission, then more while they fit in ``max_batch_rows``."""
        batch: list[_Pending[I, R]] = []
        rows = 0
        while lane.queue:
            head = lane.queue[0]
            if head.future.done():          # the caller went away before its turn
                lane.queue.popleft()
                lane.rows -= head.rows
                continue
            if batch and (not self.enabled or rows + head.rows > self.max_batch_rows):
                break
            lane.queue.popleft()
            lane.rows -= head.rows
            batch.append(head)
            rows += head.rows
        return batch

    def _call(self, key: K, items: list[I]) -> tuple[Sequence[R], float, float]:
        """Runs in the worker thread: the call, with its start time and duration."""
        started = time.perf_counter()
        results = self.run(key, items)
        return results, started, time.perf_counter() - started
