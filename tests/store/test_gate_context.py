"""The data-quality gate keeps one GX context per thread for pandas batches: each verdict is the batch's own
(a failing batch after a passing one fails, then a passing one passes again, in any thread), and no batch stays
referenced once its validation is done."""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any

import great_expectations as gx
import pandas as pd

from quasar.signals.expectations import expectation_to_dict
from quasar.store.gates import validate_frame

EXPECTATIONS = [expectation_to_dict(e, "test") for e in (
    gx.expectations.ExpectColumnValuesToBeBetween(column="clicks", min_value=0, max_value=2),
    gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "t"]),
    gx.expectations.ExpectTableRowCountToBeBetween(min_value=1, max_value=1000),
)]


def frame(rows: int, bad_clicks: int = 0) -> pd.DataFrame:
    clicks = [i % 3 for i in range(rows)]
    for i in range(bad_clicks):
        clicks[i] = 7
    return pd.DataFrame({"user_id": list(range(rows)), "t": [0] * rows, "clicks": clicks})


def verdicts(df: pd.DataFrame) -> list[Any]:
    outcomes = validate_frame(df, EXPECTATIONS, name="test", index_columns=["user_id", "t"])
    return [(o.success, o.unexpected_count, o.observed_value) for o in outcomes]


def test_each_batch_gets_its_own_verdict_in_every_thread() -> None:
    first = verdicts(frame(50))
    assert [ok for ok, _, _ in first] == [True, True, True]
    failing = verdicts(frame(2000, bad_clicks=3))
    assert [ok for ok, _, _ in failing] == [False, True, False]
    assert failing[0][1] == 3 and failing[2][2] == 2000
    assert verdicts(frame(50)) == first

    seen: dict[str, list[Any]] = {}

    def run(name: str, df: pd.DataFrame) -> None:
        seen[name] = verdicts(df)

    threads = [threading.Thread(target=run, args=(f"t{i}", frame(40 + i, bad_clicks=i))) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert seen[f"t{i}"][0][:2] == (i == 0, i)
        assert seen[f"t{i}"][2][2] == 40 + i


def test_no_batch_stays_referenced_after_its_validation() -> None:
    df = frame(500, bad_clicks=1)
    verdicts(df)
    ref = weakref.ref(df)
    del df
    gc.collect()
    assert ref() is None
