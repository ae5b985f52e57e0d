"""Item feature tables on disk and in memory.

On-disk contract of one modality folder (``features/<dataset>/image/`` or ``.../text/``):
``features.npy`` float32 [n_items + 1, dim] with row 0 (padding) all zeros, ``mask.npy`` bool
[n_items + 1] (True = the item has this modality; row 0 False), ``features.json`` sidecar
(encoder, weights source, dims, normalisation, input checksums, count of masked items).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bivrec.data.dataset import DataError


@dataclass
class ItemFeatures:
    """Frozen multimodal item features; a missing modality is ``None``."""

    image: torch.Tensor | None  # [n_items + 1, D_img]
    text: torch.Tensor | None  # [n_items + 1, D_txt]
    image_mask: torch.Tensor | None  # [n_items + 1] bool
    text_mask: torch.Tensor | None

    def to(self, device) -> "ItemFeatures":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return ItemFeatures(move(self.image), move(self.text), move(self.image_mask), move(self.text_mask))


def load_modality(folder: str | Path, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Load and check one modality folder; returns (features [n_items+1, D], mask [n_items+1])."""
    folder = Path(folder)
    feat_path, mask_path = folder / "features.npy", folder / "mask.npy"
    for path in (feat_path, mask_path):
        if not path.exists():
            raise DataError(f"{path}: file not found (run the feature extraction stage first)")
    feats = np.load(feat_path)
    mask = np.load(mask_path)
    if feats.ndim != 2 or feats.shape[0] != n_items + 1:
        raise DataError(f"{feat_path}: expected shape [{n_items + 1}, dim], got {list(feats.shape)}")
    if mask.shape != (n_items + 1,):
        raise DataError(f"{mask_path}: expected shape [{n_items + 1}], got {list(mask.shape)}")
    if not np.isfinite(feats).all():
        raise DataError(f"{feat_path}: contains NaN or inf")
    return torch.from_numpy(feats.astype(np.float32, copy=False)), torch.from_numpy(mask.astype(bool))


def load_features(image_dir: str | Path | None, text_dir: str | Path | None, n_items: int) -> ItemFeatures:
    image, image_mask = load_modality(image_dir, n_items) if image_dir else (None, None)
    text, text_mask = load_modality(text_dir, n_items) if text_dir else (None, None)
    return ItemFeatures(image, text, image_mask, text_mask)


def read_sidecar(folder: str | Path) -> dict:
    return json.loads((Path(folder) / "features.json").read_text())
