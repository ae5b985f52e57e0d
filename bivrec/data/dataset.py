"""The processed dataset as tensors: what training and evaluation consume.

On-disk contract of ``data/<dataset>/`` (written by ``bivrec.data.preprocess``):

- ``items.parquet``: ``item`` (int, contiguous 1..N; 0 is padding everywhere), ``original_id`` (str),
  ``title``, ``description``, ``categories`` (str), ``image`` (path of the item's image file relative
  to the raw dataset folder, "" when the item has none).
- ``interactions.parquet``: ``user`` (int 0..U-1), ``item``, ``timestamp`` sorted by user then time.
- ``split/train.parquet``: ``user``, ``items`` (list of item ids, chronological).
- ``split/valid.parquet``, ``split/test.parquet``: ``user``, ``history`` (first 80 %), ``targets``
  (the rest), both lists of item ids.
- ``stats.json``: users, items, interactions, average length, density.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bivrec.errors import DataError  # noqa: F401  (raised here, imported from here by most modules)



@dataclass
class EvalSplit:
    users: torch.Tensor  # [U] original user index
    history: torch.Tensor  # [U, max_len] last items of the history, right-aligned, 0 = padding
    targets: torch.Tensor  # [U, T] ground-truth items, 0-padded on the right

    def __len__(self) -> int:
        return int(self.users.numel())

    def to(self, device) -> "EvalSplit":
        return EvalSplit(self.users.to(device), self.history.to(device), self.targets.to(device))

    def subset(self, keep: torch.Tensor) -> "EvalSplit":
        return EvalSplit(self.users[keep], self.history[keep], self.targets[keep])


@dataclass
class SequenceData:
    n_items: int  # real items are 1..n_items; tables have n_items + 1 rows
    train_items: torch.Tensor  # [U_train, T] chronological, right-padded with 0
    train_lengths: torch.Tensor  # [U_train]
    valid: EvalSplit
    test: EvalSplit
    item_counts: torch.Tensor  # [n_items + 1] interactions per item in the training users

    def to(self, device) -> "SequenceData":
        return SequenceData(
            self.n_items,
            self.train_items.to(device),
            self.train_lengths.to(device),
            self.valid.to(device),
            self.test.to(device),
            self.item_counts.to(device),
        )


def pad_right(sequences: list, width: int | None = None) -> torch.Tensor:
    """Stack variable-length id lists into a 0-padded [len(sequences), width] tensor."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    width = int(lengths.max(initial=1)) if width is None else width
    out = np.zeros((len(sequences), width), dtype=np.int64)
    if len(sequences):
        flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
        rows = np.repeat(np.arange(len(sequences)), lengths)
        cols = np.arange(flat.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[rows, cols] = flat
    return torch.from_numpy(out)


def last_window(sequences: list, max_len: int) -> torch.Tensor:
    """The last ``max_len`` items of each sequence, right-aligned and left-padded with 0."""
    return pad_right([np.asarray(s, dtype=np.int64)[-max_len:][::-1] for s in sequences], max_len).flip(1)


def _read_parquet(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{path}: file not found (run the preprocess stage first)")
    frame = pd.read_parquet(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
    return frame


def _eval_split(path: Path, max_len: int, n_items: int) -> EvalSplit:
    frame = _read_parquet(path, ["user", "history", "targets"])
    _check_ids(path, frame["history"], n_items)
    _check_ids(path, frame["targets"], n_items)
    return EvalSplit(
        torch.tensor(frame["user"].to_numpy(np.int64)),
        last_window(list(frame["history"]), max_len),
        pad_right(list(frame["targets"])),
    )


def _check_ids(path: Path, column: pd.Series, n_items: int) -> None:
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in column]) if len(column) else np.zeros(0)
    if flat.size and (flat.min() < 1 or flat.max() > n_items):
        raise DataError(f"{path}: column {column.name!r} has item ids outside 1..{n_items}")


def load_dataset(data_dir: str | Path, max_len: int) -> SequenceData:
    data_dir = Path(data_dir)
    stats_path = data_dir / "stats.json"
    if not stats_path.exists():
        raise DataError(f"{stats_path}: file not found (run the preprocess stage first)")
    n_items = int(json.loads(stats_path.read_text())["items"])
    train = _read_parquet(data_dir / "split" / "train.parquet", ["user", "items"])
    _check_ids(data_dir / "split" / "train.parquet", train["items"], n_items)
    train_items = pad_right(list(train["items"]))
    train_lengths = (train_items > 0).sum(1)
    counts = torch.bincount(train_items.flatten(), minlength=n_items + 1)
    counts[0] = 0
    return SequenceData(
        n_items=n_items,
        train_items=train_items,
        train_lengths=train_lengths,
        valid=_eval_split(data_dir / "split" / "valid.parquet", max_len, n_items),
        test=_eval_split(data_dir / "split" / "test.parquet", max_len, n_items),
        item_counts=counts,
    )
