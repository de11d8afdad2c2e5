"""Train the example ranker for an epoch on a point-in-time dataset and save a model bundle.

    python -m quasar.examples.train_ranker --project DIR [--models DIR] [--epochs 1]

It pins the features to the versions serving reads, builds the labeled dataset from the demo's spine
(users x pins x time x clicked), streams it into PyTorch with quasar's loader, trains on the GPU when there is
one, and saves a bundle with ``quasar.serving.save_bundle`` (the model class, its weights and the exact UFR
input spec), for ``quasar score-serve`` to load.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

import quasar
import quasar.serving
from quasar.examples.data import World, make_spine
from quasar.examples.ranker import Ranker
from quasar.training_adapters import make_loader

REQUEST = ["user_engagement:impressions_1d", "user_engagement:clicks_7d", "user_engagement:ctr_7d",
           "user_engagement:dwell_1d", "user_affinity:engagement_score", "user_recent_pins:recent_pins",
           "user_profile:taste"]
CANDIDATE = ["pin_stats:impressions_7d", "pin_stats:ctr_7d", "pin_profile:embedding"]


def train(project: Path, models: Path, *, epochs: int = 1, spine: pa.Table | None = None, seed: int = 0,
          name: str = "ranker") -> Path:
    torch.manual_seed(seed)
    with quasar.Platform.open(project) as p:
        refs = quasar.serving.pin_features(REQUEST + CANDIDATE, project=p)    # the versions serving reads now
        spec = quasar.serving.input_spec(refs, project=p)                      # the columns the bundle records
        if spine is None:
            world = World()
            spine = make_spine(project, world.end - timedelta(days=14), world.end, rows=40_000, seed=seed)
        table = p.training_dataset(spine, refs, full_names=True)
        model_kwargs: dict[str, Any] = {"dense_dim": len(spec.dense_columns),
                                        "vector_pair": ["user_profile__taste", "pin_profile__embedding"],
                                        "id_list": "user_recent_pins__recent_pins"}
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
        return quasar.serving.save_bundle(model, features=refs, name=name, project=p, candidate="pin",
                                          model_kwargs=model_kwargs, models=models,
                                          metrics={"train_loss": loss_sum / max(seen, 1), "rows": seen})


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
