"""Train the example ranker for an epoch on a point-in-time dataset and save a model bundle.

    python -m quasar.examples.train_ranker --project DIR [--models DIR] [--epochs 1]

It builds the labeled dataset from the demo's spine (users x pins x time x clicked), streams it into
PyTorch with quasar's loader, trains on the GPU when there is one, and writes a bundle that records the
model and the exact UFR input spec, for the scorer to load.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

import quasar
from quasar.examples.data import World, make_spine
from quasar.examples.ranker import Ranker
from quasar.serving_adapters.bundle import BundleSpec, InputColumn, save_bundle
from quasar.signals.ufr.tensors import InputSpec
from quasar.training_adapters import make_loader

REQUEST = ["user_engagement:impressions_1d", "user_engagement:clicks_7d", "user_engagement:ctr_7d",
           "user_engagement:dwell_1d", "user_affinity:engagement_score", "user_recent_pins:recent_pins",
           "user_profile:taste"]
CANDIDATE = ["pin_stats:impressions_7d", "pin_stats:ctr_7d", "pin_profile:embedding"]


def pinned_refs(p: quasar.Platform, refs: list[str]) -> list[str]:
    """``signal:feature`` -> ``signal@<serving version>:feature``, so the bundle records exact versions."""
    out = []
    for ref in refs:
        name, feature = ref.split(":")
        out.append(f"{name}@{p.registry.resolve(name).version}:{feature}")
    return out


def column_name(ref: str) -> str:
    name, feature = ref.split(":")
    return f"{name.split('@')[0]}__{feature}"


def train(project: Path, models: Path, *, epochs: int = 1, spine: pa.Table | None = None, seed: int = 0,
          name: str = "ranker") -> Path:
    torch.manual_seed(seed)
    with quasar.Platform.open(project) as p:
        refs_req, refs_cand = pinned_refs(p, REQUEST), pinned_refs(p, CANDIDATE)
        if spine is None:
            world = World()
            spine = make_spine(project, world.end - timedelta(days=14), world.end, rows=40_000, seed=seed)
        table = p.training_dataset(spine, refs_req + refs_cand, full_names=True)
    columns = [column_name(r) for r in refs_req + refs_cand]
    spec = InputSpec(features=tuple((c, _ufr_type(table, c)) for c in columns))
    vector_pair = ("user_profile__taste", "pin_profile__embedding")
    dense = [c for c, t in spec.features if t.is_scalar]
    model_kwargs: dict[str, Any] = {"dense_dim": len(dense), "vector_pair": list(vector_pair), "id_list": "user_recent_pins__recent_pins"}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = Ranker(**model_kwargs).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    loss_sum = seen = 0.0
    for epoch in range(epochs):
        loader = make_loader(table, spec=spec, labels=["label"], batch_size=512, shuffle=True, seed=seed,
                             epoch=epoch, num_workers=0)
        for batch in loader:
            batch = batch.to(device, non_blocking=True)
            logits = model(batch.features)
            loss = loss_fn(logits, batch.labels["label"].float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * batch.features.size
            seen += batch.features.size
    inputs = tuple(InputColumn(column=column_name(r), ref=r, role="request") for r in refs_req) + tuple(
        InputColumn(column=column_name(r), ref=r, role="candidate") for r in refs_cand)
    bundle = BundleSpec(name=name, model_class="quasar.examples.ranker:Ranker", model_kwargs=model_kwargs, spec=spec,
                        inputs=inputs, request_key="user_id", candidate_key="pin_id",
                        metrics={"train_loss": loss_sum / max(seen, 1), "rows": seen})
    return save_bundle(models, bundle, model.cpu())


def _ufr_type(table: pa.Table, column: str):  # type: ignore[no-untyped-def]
    from quasar.signals.ufr.infer import infer_feature_type
    return infer_feature_type(table.schema.field(column).type, column)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--models", type=Path, default=None, help="default: <project>/models")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    path = train(args.project, args.models or args.project / "models", epochs=args.epochs)
    print(f"saved model bundle to {path}")


if __name__ == "__main__":
    main()
