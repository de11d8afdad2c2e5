"""``quasar.serving``: a bundle from any torch model and feature references, pinned to the serving versions, its
spec from the signals' schemas, and refused with a clear error (nothing written) when score-serve could not
rebuild it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import quasar
from fixtures.own_model import FEATURES, SIGNALS_MODULE, Shop, make_shop
from quasar.serving import input_spec, pin_features, save_bundle
from quasar.serving_adapters.bundle import load_bundle
from quasar.signals import Float32, Float64, IdList, Int64, Vector
from quasar.signals.errors import BundleError, NotFoundError


@pytest.fixture
def shop(tmp_path: Path, project_env: str, monkeypatch: pytest.MonkeyPatch) -> Shop:
    made = make_shop(tmp_path, tokens=())
    monkeypatch.syspath_prepend(str(made.root))
    for name in [m for m in sys.modules if m.startswith(("shop_model", "sub_models", "scorer_mod"))]:
        monkeypatch.delitem(sys.modules, name)
    return made


def shop_model(dense_dim: int = 3, **kwargs: Any) -> nn.Module:
    from shop_model import ShopScorer  # type: ignore[import-not-found]  # the project's own module
    torch.manual_seed(0)
    return ShopScorer(dense_dim=dense_dim, **kwargs)      # type: ignore[no-any-return]


def test_unpinned_references_are_pinned_to_the_serving_version_not_the_newest(shop: Shop) -> None:
    module = shop.root / "signals" / "shop.py"
    module.write_text(SIGNALS_MODULE.replace('"price": batch["price"]', '"price": batch["price"].cast(pa.float64())'))
    with quasar.Platform.open(shop.root) as p:
        p.register("signals")
        assert p.registry.signal("product_stats").version == 2           # newest, never backfilled
        assert pin_features(["product_stats", "customer_stats:spend"], project=p) == [
            "product_stats@1:price", "product_stats@1:embedding", "customer_stats@1:spend"]
        path = save_bundle(shop_model(), features=FEATURES, name="shop", project=p, candidate="product",
                           model_kwargs={"dense_dim": 3})
        assert [c.ref for c in load_bundle(path.parent, "shop").spec.inputs if c.role == "candidate"] == [
            "product_stats@1:price", "product_stats@1:embedding"]
        p.promote("product_stats", 2)                                      # what serving reads, the bundle reads
        assert pin_features(["product_stats:price"], project=p) == ["product_stats@2:price"]
        assert pin_features(["product_stats@1:price"], project=p) == ["product_stats@1:price"]   # pinned: kept


def test_the_input_spec_comes_from_the_signals_schemas(shop: Shop) -> None:
    spec = input_spec(FEATURES, project=shop.root)
    assert spec.features == (("customer_stats__orders", Int64()), ("customer_stats__spend", Float32()),
                             ("customer_stats__taste", Vector(4)), ("customer_stats__viewed", IdList()),
                             ("product_stats__price", Float64()), ("product_stats__embedding", Vector(4, "float16")))
    assert spec.dense_columns == ("customer_stats__orders", "customer_stats__spend", "product_stats__price")
    short = input_spec(["customer_stats:spend", "product_stats:price"], project=shop.root, full_names=False,
                       dense=["price"])
    assert short.names == ["spend", "price"] and short.dense_columns == ("price",)
    with quasar.Platform.open(shop.root) as p:                   # the loader's spec is the bundle's spec
        import pyarrow as pa
        spine = pa.table({"customer_id": [0], "product_id": [1],
                          "event_timestamp": pa.array([shop.now], pa.timestamp("us", "UTC")), "label": [1]})
        (batch,) = list(p.loader(spine, FEATURES, batch_size=4))
    assert batch.features.dense_names == list(spec.dense_columns)
    assert sorted(batch.features.masks) == sorted(spec.names)


def test_a_model_of_the_candidates_alone_needs_no_request_entity(shop: Shop) -> None:
    class_file = shop.root / "scorer_mod.py"
    class_file.write_text("import torch\nfrom torch import nn\n\n\nclass PriceOnly(nn.Module):\n"
                          "    def __init__(self) -> None:\n        super().__init__()\n"
                          "        self.w = nn.Parameter(torch.tensor([0.5]))\n\n"
                          "    def forward(self, batch):\n        return batch.dense[:, 0] * self.w\n")
    from scorer_mod import PriceOnly  # type: ignore[import-not-found]
    path = save_bundle(PriceOnly(), features=["product_stats:price"], name="price_only", project=shop.root)
    spec = json.loads((path / "bundle.json").read_text())
    assert (spec["request_key"], spec["candidate_key"], spec["model_kwargs"]) == ("", "product_id", {})
    assert spec["model_class"] == "scorer_mod:PriceOnly"


def refused(shop: Shop, match: str, model: nn.Module, **options: Any) -> None:
    """save_bundle raises BundleError matching ``match`` and writes nothing."""
    options.setdefault("features", FEATURES)
    options.setdefault("name", "shop")
    options.setdefault("candidate", "product")
    with pytest.raises(BundleError, match=match):
        save_bundle(model, project=shop.root, **options)
    assert not (shop.root / "models" / options["name"]).exists()


class Unimportable(nn.Module):
    def forward(self, batch: Any) -> torch.Tensor:
        return batch.dense.sum(dim=1)


def test_a_class_score_serve_could_not_import_is_refused(shop: Shop) -> None:
    main_class = type("Notebook", (Unimportable,), {"__module__": "__main__"})
    refused(shop, r"model class 'Notebook' is defined in __main__ \(a script or a notebook\), which score-serve "
                  r"cannot import: move it to a module of the project", main_class())

    def local() -> nn.Module:
        class Inner(Unimportable):
            pass
        return Inner()

    refused(shop, r"is not defined at the top level of its module", local())
    refused(shop, r"the model must be a torch.nn.Module", "not a model")      # type: ignore[arg-type]

    sub = shop.root / "sub_models"
    sub.mkdir()
    (sub / "scorer_mod.py").write_text("from torch import nn\n\n\nclass Sub(nn.Module):\n"
                                       "    def forward(self, batch):\n        return batch.dense.sum(dim=1)\n")
    sys.path.insert(0, str(sub))                       # a script run in sub_models/ imports it as scorer_mod
    try:
        from scorer_mod import Sub  # type: ignore[import-not-found]
        refused(shop, r"imported as module 'scorer_mod'; score-serve imports from the project root .* where that "
                      r"file is module 'sub_models\.scorer_mod': import it as `from sub_models\.scorer_mod import "
                      r"Sub`", Sub())
    finally:
        sys.path.remove(str(sub))


def test_features_the_scorer_cannot_read_are_refused(shop: Shop) -> None:
    model = shop_model()
    kwargs = {"model_kwargs": {"dense_dim": 3}}
    refused(shop, r"signal\(s\) customer_history are not online: the scorer reads a model's features from the "
                  r"online store", model, features=[*FEATURES, "customer_history:lifetime"], **kwargs)
    refused(shop, r"the features describe 2 entities, customer \(customer_id\), product \(product_id\): say which "
                  r"one the candidates are, e\.g\. candidate='product'", model, candidate=None, **kwargs)
    refused(shop, r"candidate='pin': no feature describes that entity; the features describe customer "
                  r"\(customer_id\), product \(product_id\)", model, candidate="pin", **kwargs)
    refused(shop, r"features='customer_stats' names a signal, not a feature service: give a list of feature "
                  r"references, e\.g\. \['customer_stats'\]", model, features="customer_stats", **kwargs)
    refused(shop, r"feature reference 'customer_stats::x' is invalid", model, features=["customer_stats::x"],
            **kwargs)
    with pytest.raises(NotFoundError, match=r"signal 'product_stats' v1 has no feature 'colour'"):
        save_bundle(model, features=["product_stats:colour"], name="shop", project=shop.root, **kwargs)
    refused(shop, r"bundle name '\.\./up'", model, name="../up", **kwargs)


def test_a_model_the_scorer_would_rebuild_differently_is_refused(shop: Shop) -> None:
    refused(shop, r"ShopScorer takes arguments \(dense_dim\): pass model_kwargs=\{'dense_dim': \.\.\.\}, which the "
                  r"scorer rebuilds it with as ShopScorer\(\*\*model_kwargs\)", shop_model())
    refused(shop, r"(?s)the weights do not fit ShopScorer\(\*\*\{'dense_dim': 3\}\), as the scorer rebuilds the "
                  r"model.*size mismatch for bag\.weight", shop_model(buckets=32), model_kwargs={"dense_dim": 3})
    refused(shop, r"the scorer rebuilds the model as ShopScorer\(\*\*\{'dense_dim': 3, 'colour': 'red'\}\), which "
                  r"fails: TypeError", shop_model(), model_kwargs={"dense_dim": 3, "colour": "red"})
    refused(shop, r"model_kwargs must be JSON values", shop_model(), model_kwargs={"dense_dim": 3, "at": object()})
    changed = shop_model()
    changed.buckets = 5                                  # type: ignore[assignment]  # set after construction
    refused(shop, r"the model rebuilt as ShopScorer\(\*\*\{'dense_dim': 3\}\) with its weights scores a probe batch "
                  r".*, the model itself .*: state outside its parameters and buffers", changed,
            model_kwargs={"dense_dim": 3})
    refused(shop, r"the model failed on a probe batch of 3 rows \(one with every feature missing, as the scorer "
                  r"sends for an unknown entity\): KeyError", shop_model(), model_kwargs={"dense_dim": 3},
            features=["customer_stats:orders", "product_stats"])


def test_a_model_returning_the_wrong_shape_is_refused(shop: Shop) -> None:
    (shop.root / "scorer_mod.py").write_text("import torch\nfrom torch import nn\n\n\nclass Wide(nn.Module):\n"
                                             "    def forward(self, batch):\n        return batch.dense\n")
    from scorer_mod import Wide  # type: ignore[import-not-found]
    refused(shop, r"the model returned \(3, 3\) for 3 rows; a scorer model must return one score per row", Wide())


def test_a_model_on_the_gpu_or_in_training_mode_is_saved_from_a_cpu_copy(shop: Shop) -> None:
    model = shop_model()
    model.train()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    path = save_bundle(model, features=FEATURES, name="shop", project=shop.root, candidate="product",
                       model_kwargs={"dense_dim": 3})
    assert model.training and next(model.parameters()).device.type == device     # the caller's model untouched
    state = torch.load(path / "model.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in state.values())
    assert not list(path.glob(".*partial"))


def test_a_compiled_or_data_parallel_model_is_saved_as_its_own_module(shop: Shop) -> None:
    model = shop_model()
    for i, wrapped in enumerate((torch.compile(model), nn.DataParallel(model), nn.DataParallel(torch.compile(model)))):
        path = save_bundle(wrapped, features=FEATURES, name=f"shop{i}", project=shop.root, candidate="product",
                           model_kwargs={"dense_dim": 3})
        spec = json.loads((path / "bundle.json").read_text())
        assert spec["model_class"] == "shop_model:ShopScorer"
        assert sorted(torch.load(path / "model.pt", weights_only=True)) == sorted(model.state_dict())
