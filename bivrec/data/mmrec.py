"""Import datasets already processed by others, to compare on exactly their data.

- ``mmrec``: MMRec's format, ``<name>.inter`` (tab-separated ``userID, itemID, rating, timestamp,
  x_label``) plus optional ``image_feat.npy`` / ``text_feat.npy`` whose row i belongs to itemID i,
  ``i_id_mapping.csv`` (asin <-> itemID) and ``item_image_urls.csv`` (itemID, asin, imUrl).
- ``bivrec_split``: the BiVRec authors' ready-made user split, ``<name>_{train,valid,test}.txt`` with
  lines ``user,item,rating,timestamp,label``; which file a user is in is kept as their split.

Ids stay MMRec's: item ``i`` becomes index ``i + 1`` (0 is padding here), so item 0 is a real,
recommendable item and imported feature rows line up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bivrec.data.dataset import DataError
from bivrec.data.preprocess import RawData
from bivrec.data.sources import source_file
from bivrec.data.split import TEST, TRAIN, VALID
from bivrec.data.validate import check_feature_rows, reading, require_columns, require_numeric_ids

INTER_COLUMNS = ["userID", "itemID", "rating", "timestamp"]
SPLIT_COLUMNS = ["user", "item", "rating", "timestamp", "label"]


def _need(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"{path}: file not found (run the download stage first)")
    return path


def _metadata(raw_dir: Path, cfg: dict, item_ids: np.ndarray) -> pd.DataFrame:
    """Item rows keyed by MMRec itemID; MMRec publishes no item text, and images only as URLs."""
    items = pd.DataFrame({"item_id": item_ids.astype(str), "title": "", "description": "", "categories": ""})
    if cfg.get("images", False):
        urls = pd.read_csv(_need(raw_dir / source_file(cfg, "image_urls")))
        require_columns(urls, ["itemID", "imUrl"], raw_dir / source_file(cfg, "image_urls"))
        has_url = set(urls.loc[urls["imUrl"].notna(), "itemID"].astype(str))
        items["image"] = np.where(items["item_id"].isin(has_url), "images/" + items["item_id"] + ".jpg", "")
    else:
        items["image"] = ""
    return items


def image_urls(path: Path) -> pd.DataFrame:
    """Download jobs (``name, url``) from MMRec's ``item_image_urls.csv``."""
    urls = pd.read_csv(_need(path))
    require_columns(urls, ["itemID", "imUrl"], path)
    urls = urls.dropna(subset=["imUrl"])
    return pd.DataFrame({"name": urls["itemID"].astype(str) + ".jpg", "url": urls["imUrl"]})


def read_mmrec(raw_dir: Path, cfg: dict) -> RawData:
    path = _need(raw_dir / source_file(cfg, "inter"))
    with reading(path):
        frame = pd.read_csv(path, sep="\t")
    require_columns(frame, INTER_COLUMNS, path)
    frame = require_numeric_ids(frame, ["userID", "itemID"], path)
    interactions = frame.rename(columns={"userID": "user_id", "itemID": "item_id"})[
        ["user_id", "item_id", "timestamp", "rating"]
    ]
    n_rows = int(interactions["item_id"].max()) + 1
    features, sources = {}, cfg.get("sources", {})
    for modality in ("image", "text"):
        if f"{modality}_features" in sources:
            feat_path = _need(raw_dir / source_file(cfg, f"{modality}_features"))
            try:
                rows = np.load(feat_path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as error:
                raise DataError(f"{feat_path}: not a readable .npy array ({error})") from error
            check_feature_rows(rows, n_rows, feat_path)
            features[modality] = rows.astype(np.float32, copy=False)
    items = _metadata(raw_dir, cfg, np.arange(n_rows))
    return RawData(interactions, items, str(path), features=features,
                   feature_item_ids=np.arange(n_rows) if features else None)


def read_bivrec_split(raw_dir: Path, cfg: dict) -> RawData:
    parts, split_of_user = [], []
    for name, code in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        path = _need(raw_dir / source_file(cfg, name))
        with reading(path):
            frame = pd.read_csv(path, header=None, names=SPLIT_COLUMNS)
        frame = require_numeric_ids(frame, ["user", "item"], path)
        parts.append(frame)
        split_of_user.append(pd.Series(code, index=pd.unique(frame["user"]), dtype=np.int8))
    assignment = pd.concat(split_of_user)
    if assignment.index.duplicated().any():
        user = assignment.index[assignment.index.duplicated()][0]
        raise DataError(f"{raw_dir}: user {user} appears in more than one of the train/valid/test files")
    frame = pd.concat(parts, ignore_index=True)
    interactions = frame.rename(columns={"user": "user_id", "item": "item_id"})[["user_id", "item_id", "timestamp", "rating"]]
    items = _metadata(raw_dir, cfg, np.sort(pd.unique(interactions["item_id"])))
    return RawData(interactions, items, str(raw_dir / source_file(cfg, "train")), imported_split=assignment)
