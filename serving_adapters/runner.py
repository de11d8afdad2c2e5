"""Running a model on a batch: collate, move to the device, forward under inference mode, split back.

This is what the batcher calls in its single worker thread. On CUDA, inputs go through pinned memory
with ``non_blocking=True`` copies; the scores come back to the CPU as one float32 tensor per request.
"""

from __future__ import annotations

import copy
import os
import weakref
from abc import ABC, abstractmethod

import torch

from quasar.serving_adapters.models import LoadedModel
from quasar.signals.errors import ServingError
from quasar.signals.ufr.tensors import FeatureBatch, collate_feature_batches


class ScorerBackend(ABC):
    """The plug-in point for running models: called in the batcher's worker thread with one model's
    batches, it returns each batch's scores, in order, as CPU float32 tensors of its rows."""

    device: torch.device

    @abstractmethod
    def __call__(self, model: LoadedModel, batches: list[FeatureBatch]) -> list[torch.Tensor]: ...


class ModelRunner(ScorerBackend):
    """The torch backend: eager modules on one device (a device copy per model, cached).

    On the CPU, torch's intra-op threads are set (from the worker thread, on its first call) to
    ``cpu_threads``, by default one less than the cores: the event loop needs a core for the feature fetch,
    and an OpenMP team with more threads than free cores stalls at its barriers (a 0.7 ms forward took
    5-15 ms on a busy 2-core machine). Note that torch applies this to threads started later, too.
    """

    def __init__(self, device: torch.device, *, cpu_threads: int | None = None) -> None:
        self.device = device
        if cpu_threads is None and device.type == "cpu":
            cpu_threads = max(1, (os.cpu_count() or 1) - 1)
        if cpu_threads is not None and cpu_threads < 1:
            raise ServingError(f"cpu_threads must be at least 1, got {cpu_threads}")
        self.cpu_threads = cpu_threads if device.type == "cpu" else None
        self._configured = False
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
        if not self._configured:
            if self.cpu_threads is not None:
                torch.set_num_threads(self.cpu_threads)
            self._configured = True
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
