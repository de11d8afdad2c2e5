"""Running a model on a batch: collate, move to the device, forward under inference mode, split back.

This is what the batcher calls in its single worker thread. On CUDA, inputs go through pinned memory
with ``non_blocking=True`` copies; the scores come back to the CPU as one float32 tensor per request.
"""

from __future__ import annotations

import copy
import weakref
from abc import ABC, abstractmethod

import torch
from signals.ufr.tensors import FeatureBatch, collate_feature_batches

from serving_adapters.models import LoadedModel
from signals.errors import ServingError


class ScorerBackend(ABC):
    """The plug-in point for running models: called in the batcher's worker thread with one model's
    batches, it returns each batch's scores, in order, as CPU float32 tensors of its rows."""

    device: torch.device

    @abstractmethod
    def __call__(self, model: LoadedModel, batches: list[FeatureBatch]) -> list[torch.Tensor]: ...


class ModelRunner(ScorerBackend):
    """The torch backend: eager modules on one device (a device copy per model, cached)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._modules: weakref.WeakKeyDictionary[LoadedModel, torch.nn.Module] = weakref.WeakKeyDictionary()

    def module(self, model: LoadedModel) -> torch.nn.Module:
        """The model's module on this runner's device (the bundle's own module on the CPU, a copy elsewhere)."""
        module = self._modules.get(model)
        if module is None:
            source = model.bundle.model
            on_device = next(source.parameters(), torch.empty(0)).device
            module = source if on_device == self.device else copy.deepcopy(source).to(self.device)
            module.eval()
            self._modules[model] = module
        return module

    def __call__(self, model: LoadedModel, batches: list[FeatureBatch]) -> list[torch.Tensor]:
        """Scores of each batch, in order, as CPU float32 tensors of its rows."""
        sizes = [b.size for b in batches]
        batch = batches[0] if len(batches) == 1 else collate_feature_batches(batches)
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        elif self.device != torch.device("cpu"):
            batch = batch.to(self.device)
        module = self.module(model)
        with torch.inference_mode():
            out = module(batch)
        if not isinstance(out, torch.Tensor) or out.numel() != sum(sizes) or out.dim() not in (1, 2):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ServingError(f"model {model.name!r} returned {shape} for {sum(sizes)} rows; "
                               "a scorer model must return one score per row ([B] or [B, 1])")
        scores = out.reshape(-1).to(device="cpu", dtype=torch.float32)
        return list(torch.split(scores, sizes))
