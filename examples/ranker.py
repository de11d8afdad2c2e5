"""A small ranking model over UFR inputs: a dense block, a pair of vectors, and an id list bag."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from quasar.signals.ufr.tensors import FeatureBatch


class Ranker(nn.Module):
    """logit = MLP([signed log of dense, dense presence, taste . embedding, EmbeddingBag(recent pins)]).

    Dense inputs are counts and rates of very different scales; ``sign(x) * log1p(|x|)`` brings them to one
    range inside the model, so training and serving apply exactly the same transform.
    """

    def __init__(self, *, dense_dim: int, vector_pair: Sequence[str], id_list: str, buckets: int = 4096,
                 emb_dim: int = 8, hidden: int = 32) -> None:
        super().__init__()
        self.vector_pair = tuple(vector_pair)
        self.id_list = id_list
        self.buckets = buckets
        self.bag = nn.EmbeddingBag(buckets, emb_dim, mode="mean")
        self.mlp = nn.Sequential(nn.Linear(2 * dense_dim + 2 + emb_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, batch: FeatureBatch) -> torch.Tensor:
        a, b = (batch.vectors[n].float() for n in self.vector_pair)
        both = (batch.masks[self.vector_pair[0]] & batch.masks[self.vector_pair[1]]).float()
        affinity = (a * b).sum(dim=1) / a.shape[1] ** 0.5 * both
        ids = batch.id_lists[self.id_list]
        bag = self.bag(ids.values % self.buckets, ids.offsets)
        dense = torch.sign(batch.dense) * torch.log1p(batch.dense.abs())
        x = torch.cat([dense, batch.dense_mask.float(), affinity[:, None], both[:, None], bag], dim=1)
        return self.mlp(x).squeeze(1)
