"""Serve your own model: a user's project with its own signals and its own model class (a file at the project
root), a bundle saved with ``quasar.serving.save_bundle``, and ``quasar score-serve`` started as a user starts it
(a subprocess, from another folder, no PYTHONPATH), so importing the model class from the project is real."""

from __future__ import annotations

import json
import math
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from fixtures.own_model import FEATURES, TOKEN, Shop, get_json, make_shop, score_serve
from quasar.platform import Platform
from quasar.serving_adapters.bundle import load_bundle
from quasar.signals.ufr.tensors import build_feature_batch


@pytest.fixture
def shop(tmp_path: Path, project_env: str, monkeypatch: pytest.MonkeyPatch) -> Shop:
    made = make_shop(tmp_path)
    monkeypatch.syspath_prepend(str(made.root))           # the user's session runs at the project root
    for name in ("shop_model", "gone_model"):
        sys.modules.pop(name, None)
    return made


def in_process_scores(shop: Shop, model: torch.nn.Module, customer: int, products: list[int]) -> list[float]:
    """The model called here on the FeatureBatch of the same rows, built from the offline tables as of now
    (the point-in-time dataset: offline equals online) with the bundle's own input spec."""
    spec = load_bundle(shop.root / "models", "shop").spec.spec
    now = datetime.now(UTC)
    spine = pa.table({"customer_id": pa.array([customer] * len(products), pa.int64()),
                      "product_id": pa.array(products, pa.int64()),
                      "event_timestamp": pa.array([now] * len(products), pa.timestamp("us", "UTC"))})
    with Platform.open(shop.root) as p:
        table = p.training_dataset(spine, FEATURES, full_names=True)
    model.eval()
    with torch.inference_mode():
        return [float(s) for s in model(build_feature_batch(table, spec)).to(torch.float32)]


def test_a_users_own_model_saved_with_the_public_api_is_served_by_score_serve(shop: Shop, project_env: str,
                                                                               tmp_path: Path) -> None:
    from shop_model import ShopScorer  # type: ignore[import-not-found]  # the user's own module

    from quasar.serving import save_bundle

    torch.manual_seed(0)
    model = ShopScorer(dense_dim=3)
    path = save_bundle(model, features=FEATURES, name="shop", project=shop.root, candidate="product",
                       model_kwargs={"dense_dim": 3})
    assert path == shop.root / "models" / "shop"
    recorded = json.loads((path / "bundle.json").read_text())
    assert recorded["model_class"] == "shop_model:ShopScorer"
    assert recorded["request_key"] == "customer_id" and recorded["candidate_key"] == "product_id"
    assert [(c["ref"], c["role"]) for c in recorded["inputs"]] == [    # every reference pinned to v1, the serving one
        ("customer_stats@1:orders", "request"), ("customer_stats@1:spend", "request"),
        ("customer_stats@1:taste", "request"), ("customer_stats@1:viewed", "request"),
        ("product_stats@1:price", "candidate"), ("product_stats@1:embedding", "candidate")]
    assert [(f["name"], f["type"]) for f in recorded["spec"]["features"]] == [
        ("customer_stats__orders", "int64"), ("customer_stats__spend", "float32"),
        ("customer_stats__taste", "vector"), ("customer_stats__viewed", "id_list"),
        ("product_stats__price", "float64"), ("product_stats__embedding", "vector")]

    # a second bundle whose model class is gone by the time the service starts
    (shop.root / "gone_model.py").write_text("from shop_model import ShopScorer\n\n\nclass GoneScorer(ShopScorer):\n"
                                             "    pass\n")
    from gone_model import GoneScorer  # type: ignore[import-not-found]
    save_bundle(GoneScorer(dense_dim=3), features=FEATURES, name="gone", project=shop.root, candidate="product",
                model_kwargs={"dense_dim": 3})
    (shop.root / "gone_model.py").unlink()
    shutil.rmtree(shop.root / "__pycache__", ignore_errors=True)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with score_serve(shop.root, project_env, cwd=elsewhere, logs=tmp_path / "logs") as server:
        # loaded at start-up, before any request: each model's state, to a caller with the token
        status, health = get_json(f"{server.url}/healthz", token=TOKEN)
        assert status == 200, health
        states = {m["name"]: m for m in health["models"]}
        assert sorted(states) == ["gone", "shop"]
        assert states["shop"]["state"] == "loaded" and states["shop"]["model_class"] == "shop_model:ShopScorer"
        assert "customer_stats@1:taste" in states["shop"]["inputs"]
        assert states["gone"]["state"] == "failed"
        assert states["gone"]["error"]["type"] == "ModelImportError"
        assert "gone_model:GoneScorer" in states["gone"]["error"]["message"]
        assert health["model_states"] == {"loaded": 1, "failed": 1}
        # without the token: the states' counts, but no model and no feature reference
        for token in (None, "wrong"):
            status, open_health = get_json(f"{server.url}/healthz", token=token)
            assert status == 200 and open_health["models"] == [], open_health
            assert open_health["model_states"] == {"loaded": 1, "failed": 1}
            text = json.dumps(open_health)
            assert "customer_stats" not in text and "shop" not in text and "gone" not in text

        products = [0, 5, 7, shop.products - 1, 3]              # the last one was never written
        for customer in (0, 4, shop.customers - 1):             # the last one was never written
            status, scored = get_json(f"{server.url}/v1/score", token=TOKEN, body={
                "model": "shop", "entities": {"customer_id": [customer]}, "candidates": {"product_id": products}})
            assert status == 200, scored
            assert len(scored["scores"]) == len(products) and all(math.isfinite(s) for s in scored["scores"])
            assert scored["scores"] == in_process_scores(shop, model, customer, products)

        status, refused = get_json(f"{server.url}/v1/score", token=TOKEN, body={
            "model": "gone", "entities": {"customer_id": [0]}, "candidates": {"product_id": [1]}})
        assert status == 503, refused
        assert refused["error"]["type"] == "ModelImportError"
        message = refused["error"]["message"]
        assert "model 'gone'" in message and "gone_model:GoneScorer" in message
        assert "project root" in message                        # where score-serve looks, and so the fix
        assert "failed to load" in server.output() and "gone_model:GoneScorer" in server.output()


def test_scores_are_the_models_own_on_random_requests(shop: Shop, project_env: str, tmp_path: Path) -> None:
    """Random customers and products (some never written, repeats allowed): each answer equals the model."""
    from shop_model import ShopScorer  # type: ignore[import-not-found]

    from quasar.serving import save_bundle

    torch.manual_seed(1)
    model = ShopScorer(dense_dim=3, buckets=16)
    save_bundle(model, features=FEATURES, name="shop", project=shop.root, candidate="product",
                model_kwargs={"dense_dim": 3, "buckets": 16})
    rng = np.random.default_rng(2)
    with score_serve(shop.root, project_env, cwd=tmp_path, logs=tmp_path / "logs") as server:
        for _ in range(8):
            customer = int(rng.integers(0, shop.customers))
            products = [int(x) for x in rng.integers(0, shop.products, int(rng.integers(1, 12)))]
            status, scored = get_json(f"{server.url}/v1/score", token=TOKEN, body={
                "model": "shop", "entities": {"customer_id": [customer]}, "candidates": {"product_id": products}})
            assert status == 200, scored
            assert scored["scores"] == in_process_scores(shop, model, customer, products)
