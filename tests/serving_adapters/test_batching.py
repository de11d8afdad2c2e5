"""The dynamic batcher on its own: coalescing, row caps, order, errors, the single worker thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

from quasar.serving_adapters.batching import DynamicBatcher
from quasar.signals.errors import ServingError


class Recorder:
    """A run function that doubles every number and records each call's items and thread."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[list[list[int]]] = []
        self.threads: set[str] = set()
        self.gate = gate

    def __call__(self, key: str, items: list[list[int]]) -> list[list[int]]:
        if self.gate is not None:
            assert self.gate.wait(10), "the event loop never released the gate: it was blocked"
        self.calls.append(items)
        self.threads.add(threading.current_thread().name)
        return [[2 * x for x in item] for item in items]


def run_many(batcher: DynamicBatcher, items: list[list[int]], key: str = "m") -> list[list[int]]:
    async def main() -> list[list[int]]:
        try:
            got = await asyncio.gather(*(batcher.submit(key, item, len(item)) for item in items))
            return [result for result, _ in got]
        finally:
            await batcher.close()

    return asyncio.run(main())


def test_concurrent_submissions_share_calls_and_get_their_own_results() -> None:
    rec = Recorder()
    batcher = DynamicBatcher(rec, max_batch_rows=1000, max_wait_ms=50)
    items = [[i, i + 1, i + 2] for i in range(0, 150, 3)]
    assert run_many(batcher, items) == [[2 * x for x in item] for item in items]
    assert len(rec.calls) < len(items)
    assert max(len(c) for c in rec.calls) > 1
    assert [item for call in rec.calls for item in call] == items   # submission order kept
    assert len(rec.threads) == 1 and next(iter(rec.threads)).startswith("quasar-scorer")


def test_row_cap_splits_batches_and_an_oversized_item_runs_alone() -> None:
    rec = Recorder()
    batcher = DynamicBatcher(rec, max_batch_rows=10, max_wait_ms=50)
    items = [[1] * 4 for _ in range(6)] + [[7] * 25] + [[3] * 4 for _ in range(3)]
    assert run_many(batcher, items) == [[2 * x for x in item] for item in items]
    for call in rec.calls:
        rows = sum(len(i) for i in call)
        assert rows <= 10 or len(call) == 1
    assert [[7] * 25] in rec.calls


def test_disabled_batching_runs_every_submission_alone() -> None:
    rec = Recorder()
    batcher = DynamicBatcher(rec, max_batch_rows=1000, max_wait_ms=50, enabled=False)
    items = [[i] for i in range(20)]
    assert run_many(batcher, items) == [[2 * i] for i in range(20)]
    assert all(len(call) == 1 for call in rec.calls) and len(rec.calls) == 20


def test_keys_never_share_a_call() -> None:
    rec = Recorder()
    batcher = DynamicBatcher(rec, max_batch_rows=1000, max_wait_ms=20)

    async def main() -> list[tuple[list[int], object]]:
        subs = [batcher.submit(k, [i], 1) for i in range(10) for k in ("a", "b")]
        try:
            return await asyncio.gather(*subs)
        finally:
            await batcher.close()

    got = asyncio.run(main())
    assert [r for r, _ in got] == [[2 * i] for i in range(10) for _ in ("a", "b")]
    assert len(rec.calls) >= 2


def test_call_info_reports_the_batch_it_rode_in() -> None:
    batcher = DynamicBatcher(Recorder(), max_batch_rows=1000, max_wait_ms=30)
    seen = []
    batcher.on_call = lambda key, info: seen.append(info)

    async def main() -> list:
        try:
            return await asyncio.gather(*(batcher.submit("m", [1, 2], 2) for _ in range(8)))
        finally:
            await batcher.close()

    infos = [info for _, info in asyncio.run(main())]
    assert sum(i.batch_items for i in seen) == 8
    assert {i.batch_items for i in infos} == {i.batch_items for i in seen}
    assert all(i.batch_rows == 2 * i.batch_items and i.queue_s >= 0 and i.call_s >= 0 for i in infos)


def test_a_failing_call_fails_every_request_in_it_and_the_lane_keeps_serving() -> None:
    def run(key: str, items: list[list[int]]) -> list[list[int]]:
        if any(-1 in item for item in items):
            raise ServingError("boom")
        return items

    batcher = DynamicBatcher(run, max_batch_rows=1000, max_wait_ms=20)

    async def main() -> tuple[list, list[int]]:
        try:
            bad = await asyncio.gather(batcher.submit("m", [-1], 1), batcher.submit("m", [5], 1),
                                       return_exceptions=True)
            good, _ = await batcher.submit("m", [6], 1)
            return bad, good
        finally:
            await batcher.close()

    bad, good = asyncio.run(main())
    assert all(isinstance(b, ServingError) for b in bad)
    assert good == [6]


def test_a_wrong_number_of_results_is_a_serving_error() -> None:
    batcher = DynamicBatcher(lambda key, items: [], max_batch_rows=10, max_wait_ms=0)
    with pytest.raises(ServingError, match="returned 0 results for 1"):
        run_many(batcher, [[1]])


def test_the_event_loop_stays_free_while_the_model_runs() -> None:
    gate = threading.Event()
    rec = Recorder(gate)
    batcher = DynamicBatcher(rec, max_batch_rows=10, max_wait_ms=0)

    async def main() -> list[int]:
        try:
            task = asyncio.ensure_future(batcher.submit("m", [4], 1))
            await asyncio.sleep(0.05)       # the call is now blocked in the worker thread on the gate
            gate.set()                      # only possible if the loop is not blocked by that call
            result, _ = await task
            return result
        finally:
            await batcher.close()

    assert asyncio.run(main()) == [8]


def test_a_caller_that_goes_away_does_not_disturb_the_others() -> None:
    batcher = DynamicBatcher(Recorder(), max_batch_rows=100, max_wait_ms=30)

    async def main() -> list[int]:
        try:
            doomed = asyncio.ensure_future(batcher.submit("m", [1], 1))
            kept = asyncio.ensure_future(batcher.submit("m", [2], 1))
            await asyncio.sleep(0)
            doomed.cancel()
            result, _ = await kept
            return result
        finally:
            await batcher.close()

    assert asyncio.run(main()) == [4]


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ServingError, match="max_batch_rows"):
        DynamicBatcher(Recorder(), max_batch_rows=0)
    with pytest.raises(ServingError, match="max_wait_ms"):
        DynamicBatcher(Recorder(), max_wait_ms=-1)


def test_the_batcher_waits_only_while_more_is_coming() -> None:
    """With ``more_coming``, a lone submission runs at once however long ``max_wait_ms`` is; while more is
    coming it waits for them and they share the call."""
    rec = Recorder()
    coming = {"m": False}
    batcher = DynamicBatcher(rec, max_batch_rows=1000, max_wait_ms=600_000, more_coming=lambda key: coming[key])

    async def main() -> None:
        try:
            assert (await asyncio.wait_for(batcher.submit("m", [1], 1), 30))[0] == [2]   # not 10 minutes
            coming["m"] = True
            first = asyncio.ensure_future(batcher.submit("m", [2], 1))
            await asyncio.sleep(0.05)
            assert not first.done()                     # waiting: more is on its way
            coming["m"] = False
            second = await asyncio.wait_for(batcher.submit("m", [3], 1), 30)
            assert second[0] == [6] and (await first)[0] == [4]
        finally:
            await batcher.close()

    asyncio.run(main())
    assert rec.calls == [[[1]], [[2], [3]]]
