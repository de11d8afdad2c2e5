"""A ``TrainingBatch`` packed into one byte buffer, to cross from a DataLoader worker to the main process cheaply.

A batch holds about two dozen small tensors (dense block and mask, per-feature scalars and masks, vectors,
id values and offsets, labels). Sent as tensors, torch moves each one's storage to shared memory and passes
its file descriptor over a socket with its own handshake, which made worker loading 11-14x slower than one
process. Packed, the batch is one contiguous numpy ``uint8`` buffer plus a small table of (field, dtype,
shape, byte offset): it pickles through the worker's pipe as one block of bytes, and the main process
rebuilds the tensors as views of that buffer. ``pin_memory`` pins the one buffer, so every rebuilt tensor
is pinned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from quasar.signals.ufr.tensors import FeatureBatch, IdListTensor

__all__ = ["PackedBatch", "pack_batch", "unpack_batch"]

_ALIGN = 64      # every field starts on a 64-byte boundary, so any dtype's view of it is aligned
_PADS = [np.zeros(k, np.uint8) for k in range(_ALIGN)]

# The key of each packed tensor: ("dense",), ("dense_mask",), (group, name) for scalars / vectors / masks /
# labels, and ("id_lists", name, part) with part "values", "offsets" or "weights".
Key = tuple[str, ...]
Entry = tuple[Key, np.dtype[Any], tuple[int, ...], int, int]     # key, dtype, shape, byte offset, byte count


def _accelerator_available() -> bool:
    """As ``FeatureBatch.pin_memory`` decides: pinning needs an accelerator."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return bool(accelerator.is_available())
    return bool(torch.cuda.is_available())


@dataclass
class PackedBatch:
    """A ``TrainingBatch``'s tensors in one buffer (numpy while crossing processes; a torch tensor once pinned)."""

    size: int
    dense_names: list[str]
    entries: list[Entry]
    buffer: np.ndarray | torch.Tensor            # uint8, 1-D
    strings: dict[str, list[str | None]] = field(default_factory=dict)
    id_lists_weighted: dict[str, bool] = field(default_factory=dict)   # id list name -> has weights

    def pin_memory(self) -> PackedBatch:
        """The buffer in page-locked memory (one pin per batch); unchanged where no accelerator exists."""
        if not _accelerator_available():
            return self
        buffer = self.buffer if isinstance(self.buffer, torch.Tensor) else torch.from_numpy(self.buffer)
        return PackedBatch(self.size, self.dense_names, self.entries, buffer.pin_memory(), self.strings,
                           self.id_lists_weighted)


def _keyed_tensors(features: FeatureBatch, labels: dict[str, torch.Tensor]) -> Iterable[tuple[Key, torch.Tensor]]:
    yield ("dense",), features.dense
    yield ("dense_mask",), features.dense_mask
    for group in ("scalars", "vectors", "masks"):
        for name, tensor in getattr(features, group).items():
            yield (group, name), tensor
    for name, bags in features.id_lists.items():
        yield ("id_lists", name, "values"), bags.values
        yield ("id_lists", name, "offsets"), bags.offsets
        if bags.weights is not None:
            yield ("id_lists", name, "weights"), bags.weights
    for name, tensor in labels.items():
        yield ("labels", name), tensor


def pack_batch(features: FeatureBatch, labels: dict[str, torch.Tensor]) -> PackedBatch:
    """One buffer holding every tensor of the batch (CPU tensors, as ``build_feature_batch`` makes them)."""
    parts: list[np.ndarray] = []
    entries: list[Entry] = []
    offset = 0
    for key, tensor in _keyed_tensors(features, labels):
        array = np.ascontiguousarray(tensor.detach().numpy())
        nbytes = array.nbytes
        entries.append((key, array.dtype, array.shape, offset, nbytes))
        parts.append(array.reshape(-1).view(np.uint8))
        pad = -nbytes % _ALIGN
        if pad:
            parts.append(_PADS[pad])
        offset += nbytes + pad
    buffer = np.concatenate(parts) if parts else np.empty(0, np.uint8)
    return PackedBatch(size=features.size, dense_names=list(features.dense_names), entries=entries, buffer=buffer,
                       strings={k: list(v) for k, v in features.strings.items()},
                       id_lists_weighted={k: v.weights is not None for k, v in features.id_lists.items()})


def unpack_batch(packed: PackedBatch) -> tuple[FeatureBatch, dict[str, torch.Tensor]]:
    """The batch's ``FeatureBatch`` and labels again: each tensor a view of the (writable) buffer."""
    # numpy views are several times cheaper to cut than torch ones; ``from_numpy`` shares their memory, so a
    # pinned buffer gives pinned tensors
    buffer = packed.buffer.numpy() if isinstance(packed.buffer, torch.Tensor) else packed.buffer
    tensors = {key: torch.from_numpy(buffer[start:start + nbytes].view(dtype).reshape(shape))
               for key, dtype, shape, start, nbytes in packed.entries}
    id_lists = {name: IdListTensor(values=tensors[("id_lists", name, "values")],
                                   offsets=tensors[("id_lists", name, "offsets")],
                                   weights=tensors[("id_lists", name, "weights")] if weighted else None)
                for name, weighted in packed.id_lists_weighted.items()}
    groups: dict[str, dict[str, torch.Tensor]] = {"scalars": {}, "vectors": {}, "masks": {}, "labels": {}}
    for key, tensor in tensors.items():
        if key[0] in groups:
            groups[key[0]][key[1]] = tensor
    features = FeatureBatch(size=packed.size, dense=tensors[("dense",)], dense_names=list(packed.dense_names),
                            dense_mask=tensors[("dense_mask",)], scalars=groups["scalars"], vectors=groups["vectors"],
                            id_lists=id_lists, strings=packed.strings, masks=groups["masks"])
    return features, groups["labels"]

