"""``Platform.loader(spine, "ranker")``: a feature service straight to PyTorch, request-time features
included, with the training dataset's values (request fields from spine columns)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from fixtures.request_world import build_world, spine_of


def test_a_service_loads_into_pytorch_with_the_dataset_values(tmp_path: Path, project_env: str) -> None:
    world = build_world(tmp_path)
    p = world.platform
    request = world.request(50)
    spine = spine_of(request, datetime.now(UTC))
    spine = spine.append_column("label", pa.array([i % 2 for i in range(spine.num_rows)], pa.int64()))
    dataset = p.training_dataset(spine, "ranker", full_names=True)
    loader = p.loader(spine, "ranker", labels=["label"], batch_size=64)
    (batch,) = list(loader)
    features = batch.features
    assert features.size == 50
    for name in ("ctr_boost__boost", "pin_score__score", "user_stats__clicks", "ctr_boost__long_query"):
        want = dataset.column(name).to_pylist()
        present = features.masks[name].tolist()
        assert present == [v is not None for v in want], name
        got = features.dense[:, features.dense_names.index(name)].tolist()
        assert [g for g, ok in zip(got, present, strict=True) if ok] == pytest_approx_float32(want), name
    assert batch.labels["label"].tolist() == [i % 2 for i in range(50)]


def pytest_approx_float32(values: list[object]) -> list[float]:
    """The dense block is float32: the dataset's present values as float32."""
    import numpy as np
    return [float(np.float32(v)) for v in values if v is not None]
