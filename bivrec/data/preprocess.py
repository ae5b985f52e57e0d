"""raw/<dataset>/ -> data/<dataset>/: parse, validate, filter, remap ids, order, split, write.

Every dataset kind has a reader that turns its raw files into a :class:`RawData` (interactions with
original ids in file order, item metadata); the steps after that are shared. The output layout is the
contract documented in :mod:`bivrec.data.dataset`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bivrec.atomic import atomic_path
from bivrec.config import ParamsError
from bivrec.data.dataset import DataError
from bivrec.data.split import TRAIN, assign_user_fold, assign_users, split_counts, split_tables, write_split
from bivrec.data.validate import (
    handle_duplicates,
    note,
    reading,
    require_columns,
    require_no_missing,
    require_numeric_ids,
    require_users_left,
)

ITEM_TEXT_COLUMNS = ("title", "description", "categories")


@dataclass
class RawData:
    """A dataset as its reader found it, before filtering."""

    interactions: pd.DataFrame  # user_id, item_id, timestamp (+ rating); rows in file order
    items: pd.DataFrame  # item_id, title, description, categories, image ("" = none), relative to raw dir
    source: str  # the file the interactions came from, for error messages
    #: original user id -> split code (0 train, 1 valid, 2 test) when the split is imported, not drawn
    imported_split: pd.Series | None = None
    #: modality -> [rows, dim] float32 features, row i belonging to ``feature_item_ids[i]``
    features: dict[str, np.ndarray] = field(default_factory=dict)
    feature_item_ids: np.ndarray | None = None


def read_synthetic(raw_dir: Path, cfg: dict) -> RawData:
    inter_path, items_path = raw_dir / "interactions.csv", raw_dir / "items.jsonl"
    for path in (inter_path, items_path):
        if not path.exists():
            raise DataError(f"{path}: file not found (run the download stage first)")
    with reading(inter_path):
        interactions = pd.read_csv(inter_path, dtype={"user_id": str, "item_id": str})
    require_columns(interactions, ["user_id", "item_id", "timestamp"], inter_path)
    try:
        items = pd.read_json(items_path, lines=True, dtype={"item_id": str})
    except ValueError as error:
        raise DataError(f"{items_path}: not JSON lines ({error})") from error
    require_columns(items, ["item_id", *ITEM_TEXT_COLUMNS, "image"], items_path)
    return RawData(interactions, items, str(inter_path))


def _reader(kind: str) -> Callable[[Path, dict], RawData]:
    if kind == "synthetic":
        return read_synthetic
    if kind == "amazon2014":
        from bivrec.data.amazon import read_amazon2014

        return read_amazon2014
    if kind in ("movielens100k", "movielens1m", "movielens25m"):
        from bivrec.data import movielens

        return getattr(movielens, f"read_{kind}")
    if kind in ("mmrec", "bivrec_split"):
        from bivrec.data import mmrec

        return getattr(mmrec, f"read_{kind}")
    raise ParamsError(f"unknown dataset kind {kind!r}")


def k_core(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """Boolean mask of the rows kept by iterated user/item count filtering, run to its fixed point."""
    keep = np.ones(users.size, bool)
    user_codes, item_codes = pd.factorize(users)[0], pd.factorize(items)[0]
    while True:
        user_count = np.bincount(user_codes[keep], minlength=user_codes.max(initial=-1) + 1)
        item_count = np.bincount(item_codes[keep], minlength=item_codes.max(initial=-1) + 1)
        new_keep = keep & (user_count[user_codes] >= min_user) & (item_count[item_codes] >= min_item)
        if (new_keep == keep).all():
            return keep
        keep = new_keep


def _sorted_ids(values: pd.Series) -> np.ndarray:
    """Unique original ids in a deterministic order: numeric order when they are all integers."""
    unique = pd.unique(values)
    numeric = pd.to_numeric(pd.Series(unique), errors="coerce")
    if numeric.notna().all() and (numeric == np.floor(numeric)).all():
        return unique[np.argsort(numeric.to_numpy(), kind="stable")]
    return np.sort(unique.astype(str))


def _clean_interactions(raw: RawData, cfg: dict, min_sequence_length: int) -> pd.DataFrame:
    frame = raw.interactions
    require_columns(frame, ["user_id", "item_id", "timestamp"], raw.source)
    require_no_missing(frame, ["user_id", "item_id", "timestamp"], raw.source)
    frame = frame.assign(file_order=np.arange(len(frame)))
    frame = require_numeric_ids(frame, ["timestamp"], raw.source)
    frame = handle_duplicates(frame, ["user_id", "item_id", "timestamp"], raw.source, cfg.get("duplicates", "drop"))
    if cfg.get("min_rating") is not None:
        require_columns(frame, ["rating"], raw.source)
        frame = frame.loc[frame["rating"].to_numpy() >= cfg["min_rating"]]
    if raw.imported_split is None:  # an imported split is taken exactly as published
        k = int(cfg.get("k_core", 0))
        keep = k_core(frame["user_id"].to_numpy(), frame["item_id"].to_numpy(), max(k, min_sequence_length), max(k, 1))
        dropped = int((~keep).sum())
        if dropped:
            note(f"{raw.source}: {dropped} interaction(s) removed by k-core {k} / min sequence length {min_sequence_length}")
        frame = frame.loc[keep]
    require_users_left(
        frame["user_id"].nunique(), raw.source, f"k_core={cfg.get('k_core', 0)}, min_sequence_length={min_sequence_length}"
    )
    return frame


def _item_table(raw: RawData, item_ids: np.ndarray, raw_dir: Path) -> pd.DataFrame:
    meta = raw.items.drop_duplicates("item_id").copy()
    meta["item_id"] = meta["item_id"].astype(str)
    meta = meta.set_index("item_id").reindex(item_ids.astype(str))
    items = pd.DataFrame({"item": np.arange(1, item_ids.size + 1, dtype=np.int64), "original_id": item_ids.astype(str)})
    for column in (*ITEM_TEXT_COLUMNS, "image"):
        values = meta[column] if column in meta else pd.Series("", index=meta.index)
        items[column] = values.fillna("").astype(str).to_numpy()
    # an image that is not on disk (failed download, no poster) means no image: a mask, not a crash
    has_file = np.array([bool(p) and (raw_dir / p).is_file() for p in items["image"]], dtype=bool)
    missing = int(((items["image"] != "").to_numpy() & ~has_file).sum())
    if missing:
        note(f"{raw_dir}: {missing} item image file(s) listed but not found; those items get no image")
    items.loc[~has_file, "image"] = ""
    return items


def _write_imported_features(raw: RawData, item_ids: np.ndarray, folder: Path) -> dict:
    """MMRec feature rows re-ordered to the item index (row 0 = padding zeros)."""
    written = {}
    for modality, rows in raw.features.items():
        position = pd.Index(raw.feature_item_ids.astype(str)).get_indexer(item_ids.astype(str))
        if (position < 0).any():
            raise DataError(f"{raw.source}: {modality} features have no row for item {item_ids[position < 0][0]!r}")
        table = np.zeros((item_ids.size + 1, rows.shape[1]), np.float32)
        table[1:] = rows[position]
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{modality}.npy", table)
        written[modality] = int(rows.shape[1])
    return written


def _parquet(frame: pd.DataFrame, path: Path) -> None:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, compression="zstd")


def preprocess(dataset: str, dataset_cfg: dict, split_cfg: dict, raw_dir: Path, out_dir: Path) -> dict:
    """Build ``data/<dataset>/`` from ``raw/<dataset>/``; returns the statistics written to stats.json."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir}: raw dataset folder not found (run the download stage first)")
    raw = _reader(dataset_cfg["kind"])(raw_dir, dataset_cfg)
    min_length = int(split_cfg.get("min_sequence_length", 2))
    frame = _clean_interactions(raw, dataset_cfg, min_length)

    user_ids, item_ids = _sorted_ids(frame["user_id"]), _sorted_ids(frame["item_id"])
    users = pd.Index(user_ids).get_indexer(frame["user_id"]).astype(np.int64)
    items = pd.Index(item_ids).get_indexer(frame["item_id"]).astype(np.int64) + 1  # 0 is padding
    timestamps = frame["timestamp"].to_numpy(np.int64)
    # chronological per user; equal timestamps keep their order in the source file
    order = np.lexsort((frame["file_order"].to_numpy(), timestamps, users))
    interactions = pd.DataFrame({"user": users[order], "item": items[order], "timestamp": timestamps[order]})
    if "rating" in frame:
        interactions["rating"] = frame["rating"].to_numpy(np.float32)[order]

    fold = dataset_cfg.get("user_fold")
    if raw.imported_split is not None and fold is not None:
        raise DataError(f"{raw.source}: the dataset ships its own user split; user_fold cannot apply")
    if fold is not None:
        split_code = assign_user_fold(user_ids.size, split_cfg["valid_ratio"], fold["index"], fold["of"], split_cfg["seed"])
    elif raw.imported_split is None:
        split_code = assign_users(user_ids.size, split_cfg["valid_ratio"], split_cfg["test_ratio"], split_cfg["seed"])
    else:
        split_code = raw.imported_split.reindex(pd.Index(user_ids).astype(raw.imported_split.index.dtype)).to_numpy()
        if pd.isna(split_code).any():
            raise DataError(f"{raw.source}: some users have no split assignment")
        split_code = split_code.astype(np.int8)
    tables = split_tables(interactions["user"].to_numpy(), interactions["item"].to_numpy(), split_code, split_cfg["history_ratio"])
    for name in ("valid", "test"):
        ratio = split_cfg[f"{name}_ratio"]
        if tables[name].num_rows == 0 and (ratio > 0 or raw.imported_split is not None or fold is not None):
            raise DataError(f"{raw.source}: the {name} split is empty (split.{name}_ratio={ratio}, {user_ids.size} users)")

    item_table = _item_table(raw, item_ids, raw_dir)
    n_users, n_items, n_inter = int(user_ids.size), int(item_ids.size), int(len(interactions))
    stats = {
        "users": n_users,
        "items": n_items,
        "interactions": n_inter,
        "avg_length": round(n_inter / n_users, 4),
        "density": round(n_inter / (n_users * n_items), 8),
        **split_counts(tables),
        "train_interactions": int((split_code[interactions["user"].to_numpy()] == TRAIN).sum()),
        "items_with_image": int((item_table["image"] != "").sum()),
        "items_with_text": int((item_table[list(ITEM_TEXT_COLUMNS)] != "").any(axis=1).sum()),
    }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        _parquet(item_table, tmp / "items.parquet")
        _parquet(interactions, tmp / "interactions.parquet")
        write_split(tables, tmp / "split")
        imported = _write_imported_features(raw, item_ids, tmp / "imported_features") if raw.features else {}
        stats.update({f"imported_{modality}_dim": dim for modality, dim in imported.items()})
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return stats
