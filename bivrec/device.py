"""Where computation runs: the one place that turns a params `device` value into a torch device."""

from __future__ import annotations

import torch


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` = CUDA when present, else CPU; asking for CUDA without one is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested in params.yaml but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)
