"""The pandas gate skips great-expectations' batch fingerprint (an md5 over the whole frame, a marker no outcome
reads): the verdicts are the same with and without it, GX's threshold comes back once the last gate ends, and
gates in several threads at once leave it as it was."""

from __future__ import annotations

import threading
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations.execution_engine import pandas_execution_engine as engine

from quasar.signals.expectations import expectation_to_dict
from quasar.store import gates
from quasar.store.gates import validate_frame

EXPECTATIONS = [expectation_to_dict(e, "test") for e in (
    gx.expectations.ExpectColumnValuesToBeBetween(column="clicks", min_value=0, max_value=1),
    gx.expectations.ExpectColumnValuesToNotBeNull(column="user_id"),
)]


def frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"user_id": list(range(rows)), "clicks": [i % 3 for i in range(rows)]})


def verdicts(df: pd.DataFrame) -> list[Any]:
    return [(o.success, o.unexpected_count, o.observed_value, o.element_count)
            for o in validate_frame(df, EXPECTATIONS, name="test", index_columns=["user_id"])]


def test_the_gate_does_not_fingerprint_the_frame_and_gives_the_same_verdicts(monkeypatch: Any) -> None:
    hashed: list[int] = []
    original = engine.hash_pandas_dataframe
    monkeypatch.setattr(engine, "hash_pandas_dataframe", lambda df: hashed.append(len(df)) or original(df))
    before = engine.HASH_THRESHOLD
    ours = verdicts(frame(300))
    assert hashed == [] and before == engine.HASH_THRESHOLD
    with monkeypatch.context() as m:                  # the gate as it was: GX fingerprints the batch
        m.setattr(gates, "_no_fingerprint", lambda: __import__("contextlib").nullcontext())
        assert verdicts(frame(300)) == ours
    assert hashed and before == engine.HASH_THRESHOLD


def test_gates_in_several_threads_restore_the_threshold() -> None:
    before = engine.HASH_THRESHOLD
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(verdicts(frame(200)))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(r == results[0] for r in results)
    assert before == engine.HASH_THRESHOLD and gates._fingerprint_off == []
