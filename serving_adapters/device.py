"""Where the scorer runs its models: ``cuda`` when there is a GPU, else ``cpu``, unless told otherwise."""

from __future__ import annotations

import torch

from quasar.signals.errors import ServingError


def choose_device(device: str | torch.device | None = None) -> torch.device:
    """The device to score on: ``device`` if given (checked), else ``cuda`` when available, else ``cpu``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ServingError(f"device {device!r} is not a torch device: {exc}") from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ServingError(f"device {device!r} was asked for but CUDA is not available on this machine")
    if chosen.type not in ("cpu", "cuda"):
        raise ServingError(f"device {device!r} is not supported: use 'cpu' or 'cuda[:N]'")
    return chosen


def device_name(device: torch.device) -> str:
    """A human name for ``device``: the GPU's model for CUDA, ``cpu`` otherwise."""
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    return "cpu"
