"""Item feature tables on disk and in memory.

On-disk contract of one modality folder (``features/<dataset>/image/`` or ``.../text/``):
``features.npy`` float32 [n_items + 1, dim] with row 0 (padding) all zeros, ``mask.npy`` bool
[n_items + 1] (True = the item has this modality; row 0 False), ``features.json`` sidecar
(encoder, weights source, dims, normalisation, input checksums, count of masked items), and
``unreadable.tsv`` (item, path, error of every input that could not be read; header only when none).
While an extraction runs, finished chunks live in the sibling ``<folder>.partial/`` (see
:class:`ResumeChunks`); the folder itself appears atomically, complete, at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bivrec.checksums import file_sha256
from bivrec.atomic import atomic_path
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

    def centred(self) -> "ItemFeatures":
        """Each modality minus its mean over the items that have it, scaled to a mean row norm of 1.

        Pretrained encoders put every item near one common direction (mean cosine ~0.6 between
        MobileNetV2 image features of the synthetic items); projected as they are, items differ by a
        sliver and the feature views' softmax training diverges at the default learning rate.
        Rows of items without the modality stay 0.
        """
        def centre(table, mask):
            if table is None:
                return None
            known = mask.clone()
            known[0] = False
            if not known.any():
                return table
            table = (table - table[known].mean(0)) * known.unsqueeze(1)
            return table / table[known].norm(dim=1).mean().clamp_min(1e-12)

        return ItemFeatures(centre(self.image, self.image_mask), centre(self.text, self.text_mask), self.image_mask, self.text_mask)


def load_modality(folder: str | Path, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Load and check one modality folder; returns (features [n_items+1, D], mask [n_items+1])."""
    folder = Path(folder)
    feat_path, mask_path = folder / "features.npy", folder / "mask.npy"
    for path in (feat_path, mask_path):
        if not path.exists():
            raise DataError(f"{path}: file not found (run the feature extraction stage first)")
    try:
        feats = np.load(feat_path, allow_pickle=False)
        mask = np.load(mask_path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"{folder}: features.npy / mask.npy are not readable .npy arrays ({error}); "
                        "rerun the feature extraction stage") from error
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


# ---------------------------------------------------------------------------------------------
# Writing side: the final modality folder, the resume folder of an interrupted run, and the import
# of feature files a dataset ships ready-made.

UNREADABLE_REPORT = "unreadable.tsv"  # items whose input could not be read/decoded: item, path, error


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_modality(
    out_dir: str | Path,
    features: np.ndarray,
    mask: np.ndarray,
    sidecar: dict,
    unreadable: list[tuple[int, str, str]] = (),
) -> dict:
    """Atomically write one modality folder (layout in the module docstring); returns the sidecar.

    ``features`` [n_items + 1, D] must have a zero row 0 and zero rows wherever ``mask`` is False.
    ``unreadable`` rows (item, path, error) go to the report file, written even when empty so the
    folder layout never depends on the data.
    """
    if features.ndim != 2 or mask.shape != (features.shape[0],):
        raise ValueError(f"features {features.shape} and mask {mask.shape} do not describe the same items")
    if mask[0] or np.any(features[~mask]):
        raise ValueError("padding row 0 and masked rows must be all zeros and masked")
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or inf")
    sidecar = {**sidecar, "n_items": int(features.shape[0] - 1), "dim": int(features.shape[1]), "dtype": "float32"}
    lines = ["item\tpath\terror"] + [f"{item}\t{path}\t{' '.join(error.split())}" for item, path, error in unreadable]
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        np.save(tmp / "features.npy", features.astype(np.float32, copy=False))
        np.save(tmp / "mask.npy", mask.astype(bool, copy=False))
        (tmp / UNREADABLE_REPORT).write_text("\n".join(lines) + "\n")
        (tmp / "features.json").write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return sidecar


class ResumeChunks:
    """Finished chunks of an extraction, kept in ``<out_dir>.partial/`` until the final folder exists.

    A chunk is stored under a key that hashes the encoder description together with the ids and
    input digests of its items, so a changed model, image or text can never reuse a stale chunk:
    it simply is not found, and :meth:`prune` deletes it. When the extraction ends, its chunks move
    to a shared cache (:func:`feature_cache_dir`), where another dataset with the same items and
    inputs (e.g. a user fold of the same catalogue) finds them instead of encoding again.
    """

    def __init__(self, out_dir: str | Path):
        self.folder = Path(f"{Path(out_dir)}.partial")
        self.cache = feature_cache_dir()

    @staticmethod
    def key(encoder_key: str, items: np.ndarray, digests: list[str]) -> str:
        digest = hashlib.sha256(encoder_key.encode())
        for item, item_digest in zip(items.tolist(), digests):
            digest.update(f"\n{item}:{item_digest}".encode())
        return digest.hexdigest()[:32]

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        for folder in (self.folder, self.cache):
            path = folder / f"{key}.npz" if folder is not None else None
            if path is not None and path.exists():
                with np.load(path, allow_pickle=False) as chunk:
                    return {name: chunk[name] for name in chunk.files}
        return None

    def save(self, key: str, **arrays: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / f"{key}.npz") as tmp:
            with open(tmp, "wb") as handle:  # a handle, so numpy does not append ".npz" to the name
                np.savez(handle, **arrays)

    def prune(self, keep: set[str]) -> None:
        """Delete chunks that no current key refers to (left by another model or changed inputs)."""
        if self.folder.is_dir():
            for path in self.folder.glob("*.npz"):
                if path.stem not in keep:
                    path.unlink()

    def retire(self) -> None:
        """The extraction is complete: hand its chunks to the shared cache, then drop the folder."""
        if self.cache is not None and self.folder.is_dir():
            self.cache.mkdir(parents=True, exist_ok=True)
            for path in self.folder.glob("*.npz"):
                os.replace(path, self.cache / path.name)  # same file system: atomic, no copy
        shutil.rmtree(self.folder, ignore_errors=True)


#: environment variable naming the shared chunk cache; "off" disables it
FEATURE_CACHE_ENV = "BIVREC_FEATURE_CACHE"


def feature_cache_dir() -> Path | None:
    """Shared cache of encoded chunks (default ``.bivrec/feature_cache`` under the working directory)."""
    setting = os.environ.get(FEATURE_CACHE_ENV, ".bivrec/feature_cache")
    return None if setting.strip().lower() in ("", "off", "0", "false") else Path(setting)


def import_precomputed(
    path: Path,
    n_items: int,
    out_dir: Path,
    row_offset: int,
    *,
    source_rows: np.ndarray | None = None,
) -> dict:
    """Validate a ready-made feature file (e.g. MMRec's ``image_feat.npy``) and write a modality folder.

    Row ``r`` of the file holds item ``r + row_offset``: MMRec files (item ids from 0, no padding
    row) use ``row_offset=1`` and must have ``n_items`` rows; a file that already has a padding row 0
    uses ``row_offset=0`` and ``n_items + 1`` rows. ``source_rows`` [n_items] instead gives, for item
    1..n_items in order, its row in the file (when preprocessing dropped or reordered items).
    An all-zero row means the item has no such feature and is masked. Values are passed on as-is.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        table = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise DataError(f"{path}: not a readable .npy array ({error})") from error
    if not isinstance(table, np.ndarray) or table.ndim != 2 or table.shape[1] == 0:
        raise DataError(f"{path}: expected a 2-D array [rows, dim], got shape {list(np.shape(table))}")
    if not np.issubdtype(table.dtype, np.floating):
        raise DataError(f"{path}: expected floating-point features, got dtype {table.dtype}")
    if source_rows is None:
        expected_rows = n_items + 1 - row_offset
        if row_offset not in (0, 1) or table.shape[0] != expected_rows:
            raise DataError(
                f"{path}: has {table.shape[0]} rows; with row_offset={row_offset} the dataset's "
                f"{n_items} items need {expected_rows} rows (row_offset must be 0 or 1)"
            )
        source_rows = np.arange(1, n_items + 1) - row_offset
    else:
        source_rows = np.asarray(source_rows, dtype=np.int64)
        if source_rows.shape != (n_items,) or source_rows.min() < 0 or source_rows.max() >= table.shape[0]:
            raise DataError(f"{path}: source_rows must give one row in 0..{table.shape[0] - 1} per item 1..{n_items}")
    picked = table[source_rows]
    if not np.isfinite(picked).all():
        bad = int((~np.isfinite(picked).all(1)).sum())
        raise DataError(f"{path}: {bad} item row(s) contain NaN or inf")
    features = np.zeros((n_items + 1, table.shape[1]), dtype=np.float32)
    features[1:] = picked
    mask = np.zeros(n_items + 1, dtype=bool)
    mask[1:] = np.any(picked != 0, axis=1)
    sidecar = {
        "encoder": {"family": "precomputed", "source": str(path), "source_dtype": str(table.dtype)},
        "inputs": {"source_sha256": file_sha256(path)},
        "normalize": False,
        "masked": {"total": int(n_items - mask.sum()), "no_input": int(n_items - mask.sum()), "unreadable": 0},
    }
    return write_modality(out_dir, features, mask, sidecar)
