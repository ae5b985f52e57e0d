"""The paper's split protocol (ComiRec-style), reproducible byte for byte.

Users (not interactions) are split into disjoint train / valid / test sets by seed. Train users keep
their full chronological sequence; for a valid/test user the first ``history_ratio`` of the sequence
is the history and the rest are the targets. The cut is stored in the files, so evaluation never
recomputes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bivrec.config import ParamsError
from bivrec.data.dataset import DataError

SPLITS = ("train", "valid", "test")
TRAIN, VALID, TEST = 0, 1, 2


def assign_users(n_users: int, valid_ratio: float, test_ratio: float, seed: int) -> np.ndarray:
    """[n_users] split code per user (0 train, 1 valid, 2 test), a seeded permutation cut by ratio."""
    if valid_ratio + test_ratio >= 1:
        raise ParamsError("split: valid_ratio + test_ratio must be below 1")
    order = np.random.default_rng(seed).permutation(n_users)
    n_valid, n_test = int(round(n_users * valid_ratio)), int(round(n_users * test_ratio))
    code = np.full(n_users, TRAIN, dtype=np.int8)
    code[order[:n_valid]] = VALID
    code[order[n_valid : n_valid + n_test]] = TEST
    return code


def assign_user_fold(n_users: int, valid_ratio: float, fold: int, folds: int, seed: int) -> np.ndarray:
    """Split codes for fold ``fold`` of ``folds``: the seeded permutation cut into ``folds`` equal parts,
    part ``fold`` is the test users, ``valid_ratio`` of all users after it (cyclically) validate.

    Over folds 0..folds-1 of one seed every user is a test user exactly once, so per-user metrics pool
    into one paired test over all users while each fold still selects its model on its own validation.
    """
    if not 0 <= fold < folds or folds < 2:
        raise ParamsError(f"user_fold: index must be in [0, of) with of >= 2 (got index {fold}, of {folds})")
    order = np.random.default_rng(seed).permutation(n_users)
    bounds = np.round(np.linspace(0, n_users, folds + 1)).astype(np.int64)
    test = order[bounds[fold] : bounds[fold + 1]]
    rest = np.concatenate([order[bounds[fold + 1] :], order[: bounds[fold]]])
    n_valid = int(round(n_users * valid_ratio))
    if n_valid >= rest.size:
        raise ParamsError(f"user_fold: split.valid_ratio {valid_ratio} leaves no training user")
    code = np.full(n_users, TRAIN, dtype=np.int8)
    code[test] = TEST
    code[rest[:n_valid]] = VALID
    return code


def _list_array(values: np.ndarray, lengths: np.ndarray) -> pa.ListArray:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int64()))


def history_lengths(lengths: np.ndarray, history_ratio: float) -> np.ndarray:
    """Items of history per held-out user: floor(ratio * length), at least 1, leaving at least 1 target."""
    # the small epsilon keeps e.g. 0.8 * 5 from flooring to 3 through float rounding
    return np.clip(np.floor(lengths * history_ratio + 1e-9).astype(np.int64), 1, lengths - 1)


def split_tables(users: np.ndarray, items: np.ndarray, split_code: np.ndarray, history_ratio: float) -> dict[str, pa.Table]:
    """Build the three split tables.

    ``users``/``items``: the interactions, sorted by user then time, users 0..U-1 contiguous;
    ``split_code``: [U] from :func:`assign_users` (or imported).
    """
    n_users = split_code.size
    lengths = np.bincount(users, minlength=n_users)
    if (lengths == 0).any():
        raise DataError(f"split: user {int(np.flatnonzero(lengths == 0)[0])} has no interactions")
    held_out = split_code != TRAIN
    if (lengths[held_out] < 2).any():
        raise DataError("split: a valid/test user has fewer than 2 interactions, nothing to hold out")
    position = np.arange(items.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    n_history = np.where(held_out, history_lengths(np.maximum(lengths, 2), history_ratio), lengths)
    in_history = position < n_history[users]
    code_of_row = split_code[users]

    tables = {}
    train_rows = code_of_row == TRAIN
    train_users = np.flatnonzero(split_code == TRAIN)
    tables["train"] = pa.table(
        {"user": pa.array(train_users, pa.int64()), "items": _list_array(items[train_rows], lengths[train_users])}
    )
    for name, code in (("valid", VALID), ("test", TEST)):
        rows = code_of_row == code
        chosen = np.flatnonzero(split_code == code)
        tables[name] = pa.table(
            {
                "user": pa.array(chosen, pa.int64()),
                "history": _list_array(items[rows & in_history], n_history[chosen]),
                "targets": _list_array(items[rows & ~in_history], lengths[chosen] - n_history[chosen]),
            }
        )
    return tables


def write_split(tables: dict[str, pa.Table], folder: Path) -> None:
    """Write ``split/{train,valid,test}.parquet``; same tables -> byte-identical files."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        pq.write_table(tables[name], folder / f"{name}.parquet", compression="zstd")


def split_counts(tables: dict[str, pa.Table]) -> dict[str, int]:
    return {f"{name}_users": tables[name].num_rows for name in SPLITS}
